"""mobilesam-ros download: fetch the official MobileSAM weights, verified by sha256."""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from pathlib import Path

from ..cli import CommandError

HELP = "download the official mobile_sam.pt and verify its size and sha256"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..weights import MOBILE_SAM_URL

    parser.add_argument("--out", default="models/mobile_sam.pt", help="where to write it (default: models/mobile_sam.pt)")
    parser.add_argument("--url", default=MOBILE_SAM_URL, help="source URL (default: the MobileSAM GitHub repository)")
    parser.add_argument("--verify-only", action="store_true", help="check an existing file instead of downloading")


def verify(path: Path) -> None:
    """Raise CommandError unless ``path`` is the official file."""
    from ..weights import MOBILE_SAM_SHA256, MOBILE_SAM_SIZE, sha256_file

    size = path.stat().st_size
    if size != MOBILE_SAM_SIZE:
        raise CommandError(f"{path} has {size:,} bytes, the official mobile_sam.pt has {MOBILE_SAM_SIZE:,}")
    digest = sha256_file(path)
    if digest != MOBILE_SAM_SHA256:
        raise CommandError(f"{path} sha256 {digest} does not match the official {MOBILE_SAM_SHA256}")


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
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CommandError(f"download from {url} failed: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.verify_only:
        if not out.is_file():
            raise CommandError(f"{out} not found")
        verify(out)
        print(f"{out}: official mobile_sam.pt (size and sha256 match)")
        return 0
    if out.is_file():
        try:
            verify(out)
            print(f"{out} is already the official file")
            return 0
        except CommandError as exc:
            print(f"replacing {out}: {exc}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {args.url} -> {out}", file=sys.stderr)
    _fetch(args.url, out)
    try:
        verify(out)
    except CommandError:
        out.rename(out.with_suffix(".rejected"))
        raise
    print(f"{out}: verified (sha256 matches)")
    return 0
