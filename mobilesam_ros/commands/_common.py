"""Input helpers shared by the subcommands: images, number lists, box files (the argparse
types and model options they share with the benchmarks are in ``mobilesam_ros/arguments.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import CommandError


def load_image(path: str | Path) -> np.ndarray:
    """An image file -> HxWx3 uint8 RGB, upright per its EXIF orientation."""
    from PIL import UnidentifiedImageError

    from ..transforms import read_rgb

    path = Path(path)
    if not path.is_file():
        raise CommandError(f"image not found: {path}")
    try:
        return read_rgb(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise CommandError(f"cannot read image {path}: {exc}") from exc


def parse_floats(text: str, count: int, what: str) -> list[float]:
    """'1,2,3' -> [1.0, 2.0, 3.0], exactly ``count`` finite numbers."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count or not all(np.isfinite(values)):
        raise CommandError(f"{what} must be {count} comma-separated numbers, got '{text}'")
    return values


def read_boxes_json(path: str) -> np.ndarray:
    """A JSON list of [x0, y0, x1, y1] (or {"boxes": [...]}) -> (K, 4) float32; K may be 0."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise CommandError(f"boxes file not found: {path}") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CommandError(f"cannot read boxes from {path}: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("boxes")
    try:
        boxes = np.asarray(data, np.float32)
        if boxes.size == 0 and boxes.ndim == 1:
            return np.zeros((0, 4), np.float32)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError
    except (TypeError, ValueError) as exc:
        raise CommandError(f"{path} must hold a list of [x0, y0, x1, y1] boxes") from exc
    if not np.isfinite(boxes).all():
        raise CommandError(f"{path}: box coordinates must be finite numbers (NaN/inf found)")
    return boxes
