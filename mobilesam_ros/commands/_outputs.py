"""Output files of the CLI: checked before any model runs, written with one-line errors.

``check_output`` runs right after argument parsing: an output that cannot be written
(an unknown image type, a directory that refuses files, a path that is a directory)
is a usage error (one line, exit 2) before seconds of model work, not a traceback
after it. Missing parent directories are created when the file is written (as
``export --out`` does), and only then: a failed run leaves no empty folders behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import CommandError


def _image_extensions() -> dict[str, str]:
    """Lower-case suffix -> Pillow format, for the formats Pillow can write."""
    from PIL import Image

    Image.init()
    return {ext.lower(): fmt for ext, fmt in Image.registered_extensions().items() if fmt in Image.SAVE}


def _nearest_existing(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path.cwd()


def check_output(path: str | os.PathLike, option: str, image: bool = False) -> Path:
    """Check that ``path`` can be written (``image``: as an image Pillow knows by its
    suffix). Returns it as a Path; raises CommandError with one line otherwise."""
    path = Path(path).expanduser()
    if image:
        known = _image_extensions()
        if path.suffix.lower() not in known:
            common = ", ".join(s for s in (".png", ".jpg", ".webp", ".bmp", ".tif") if s in known)
            raise CommandError(f"{option} {path}: unknown image type '{path.suffix or '(no suffix)'}' "
                               f"(use {common})")
    if path.is_dir():
        raise CommandError(f"{option} {path}: is a directory, give a file name")
    directory = path.parent if path.parent.exists() else _nearest_existing(path)
    if not directory.is_dir():
        raise CommandError(f"{option} {path}: {directory} is not a directory")
    try:  # the only reliable test (root, read-only mounts, /proc): create a file there
        handle, probe = tempfile.mkstemp(prefix=".mobilesam-probe-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise CommandError(f"{option} {path}: cannot write in {directory}: {exc.strerror or exc}") from exc
    return path


def write_image(path: Path, rgb: np.ndarray, option: str = "--overlay") -> Path:
    """Save an RGB image (parent directories created); one-line error on failure."""
    from PIL import Image

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot write {option} {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    return path
