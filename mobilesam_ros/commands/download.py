"""mobilesam-ros download: fetch official weights, verified before they are used.

``mobile_sam`` (default) is checked against its published size and sha256.
``prompt_guided_decoder`` (MobileSAMv2) has no published size or sha256 that we could
check, so it is verified by its layout instead (it must load safely as the authors'
``{"PromtEncoder": ..., "MaskDecoder": ...}`` with SAM's key names and shapes) and its
sha256 is printed (and recorded in model.json by ``export``).
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from pathlib import Path

from ..cli import CommandError

HELP = "download official weights (mobile_sam.pt, MobileSAMv2's prompt-guided decoder) and verify them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..weights import weights_files

    files = weights_files()
    parser.add_argument("name", nargs="?", default="mobile_sam", choices=tuple(files), metavar="NAME",
                        help="what to fetch: " + "; ".join(f"{f.name}: {f.filename}, {f.description}" for f in
                                                          files.values()) + " (default: mobile_sam)")
    parser.add_argument("--out", help="where to write it (default: models/<file name>)")
    parser.add_argument("--url", help="source URL (default: the MobileSAM GitHub repository)")
    parser.add_argument("--verify-only", action="store_true", help="check an existing file instead of downloading")


def _check_layout(path: Path) -> None:
    """MobileSAMv2's decoder file: loads with weights_only=True and has SAM's prompt
    encoder and mask decoder keys and shapes."""
    try:
        from ..modeling.checkpoint import check_state_dict, read_prompt_guided_decoder
        from ..modeling.sam import Sam
    except ImportError as exc:
        raise CommandError(
            f"{path}: no published sha256 to compare with, and checking its layout needs PyTorch ({exc.name} is "
            "missing): pip install -e '.[export]'"
        ) from exc
    from ..errors import CheckpointError

    try:
        parts = read_prompt_guided_decoder(path)
        sam = Sam()
        for name, state in parts.items():
            check_state_dict(state, getattr(sam, name).state_dict(), source=f"{path} ({name})")
    except CheckpointError as exc:
        raise CommandError(str(exc).replace("\n", " | ")) from exc


def verify(path: Path, name: str = "mobile_sam") -> str:
    """Raise CommandError unless ``path`` is the official file ``name``; returns how it
    was verified (one line)."""
    from ..weights import sha256_file, weights_files

    spec = weights_files()[name]
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        raise CommandError(f"{path} has {size:,} bytes, the official {spec.filename} has {spec.size:,}")
    digest = sha256_file(path)
    if spec.sha256 is not None:
        if digest != spec.sha256:
            raise CommandError(f"{path} sha256 {digest} does not match the official {spec.sha256}")
        return f"official {spec.filename} (size and sha256 match)"
    _check_layout(path)
    return (f"{spec.filename} layout verified (loads safely, every key and shape as expected); no official "
            f"sha256 is published to compare with: this file's is {digest} ({size:,} bytes)")


def _fetch(url: str, dest: Path) -> None:
    partial = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while block := response.read(1 << 20):
                f.write(block)
                done += len(block)
                if total:
                    print(f"\r{done / 1e6:6.1f} / {total / 1e6:.1f} MB", end="", file=sys.stderr, flush=True)
            print(file=sys.stderr)
        os.replace(partial, dest)
    except (OSError, ValueError) as exc:  # ValueError: a malformed URL
        partial.unlink(missing_ok=True)
        raise CommandError(f"download from {url} failed: {exc}") from exc


def _make_parents(path: Path) -> list[Path]:
    """Create ``path``'s missing parent directories; returns them, innermost first."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    return missing


def run(args: argparse.Namespace) -> int:
    from ..weights import weights_files

    spec = weights_files()[args.name]
    out = Path(args.out or Path("models") / spec.filename)
    url = args.url or spec.url
    if args.verify_only:
        if not out.is_file():
            raise CommandError(f"{out} not found")
        print(f"{out}: {verify(out, args.name)}")
        return 0
    if out.is_dir():
        raise CommandError(f"--out {out} is a directory; give the file path (e.g. {out / spec.filename})")
    if out.is_file():
        try:
            how = verify(out, args.name)
            print(f"{out} is already there: {how}")
            return 0
        except CommandError as exc:
            print(f"replacing {out}: {exc}", file=sys.stderr)
    created = _make_parents(out)
    try:
        print(f"downloading {url} -> {out}", file=sys.stderr)
        _fetch(url, out)
        try:
            how = verify(out, args.name)
        except CommandError as exc:
            rejected = out.with_suffix(".rejected")
            out.rename(rejected)  # kept for inspection (an HTML error page, a truncated file, ...)
            raise CommandError(f"{exc} (kept as {rejected})") from exc
    except BaseException:
        for directory in created:  # innermost first; only directories left empty
            try:
                directory.rmdir()
            except OSError:
                break
        raise
    print(f"{out}: verified: {how}")
    return 0
