"""Argument and loading helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..cli import CommandError
from ..variants import VARIANTS


def int_at_least(minimum: int):
    """argparse type: an integer >= ``minimum`` (e.g. ``--threads -3`` is refused)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got '{text}'") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def frame_size(text: str) -> tuple[int, int]:
    """argparse type: ``WxH`` (e.g. 640x480) -> (width, height), both >= 1."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WxH, e.g. 640x480, not '{text}'") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"must be WxH with both >= 1, not '{text}'")
    return width, height


frame_size.__name__ = "WxH size"


def float_in(low: float, high: float | None = None):
    """argparse type: a finite number in [low, high] (high None: no upper bound)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got '{text}'") from None
        if not np.isfinite(value) or value < low or (high is not None and value > high):
            bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model/--checkpoint, --backend, --device, --precision, --threads."""
    group = parser.add_argument_group("model")
    source = group.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="PATH", help="checkpoint (.pt/.pth) or a directory written by 'export'")
    source.add_argument("--checkpoint", metavar="CKPT", help="MobileSAM / TinySAM checkpoint (same as --model CKPT)")
    group.add_argument(
        "--backend", default="auto", choices=("auto", "torch", "onnxruntime", "tensorrt"),
        help="engine (default: torch for a checkpoint, onnxruntime or tensorrt for an exported directory)",
    )
    group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    group.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"),
                       help="default: fp32 (bf16: torch backend only)")
    group.add_argument("--threads", type=int_at_least(0), default=0, metavar="N",
                       help="CPU threads (default 0: all cores)")
    group.add_argument("--variant", choices=VARIANTS, default=None,
                       help="which SAM a checkpoint is (default: mobilesam; an exported model's model.json says it): "
                            "tinysam decodes every prompt with its three masks")
    group.add_argument("--decoder-checkpoint", metavar="PT",
                       help="MobileSAMv2's Prompt_guided_Mask_Decoder.pt, combined with the checkpoint's image "
                            "encoder (torch backend; export bakes it into an exported model)")


def open_runtime(args: argparse.Namespace):
    """Create the runtime named by the model arguments, turning failures into one line."""
    from ..errors import CheckpointError
    from ..runtime import RuntimeUnavailable, create_runtime

    model = args.model or args.checkpoint
    try:
        return create_runtime(model, args.backend, device=args.device, precision=args.precision, num_threads=args.threads,
                              variant=getattr(args, "variant", None),
                              decoder_checkpoint=getattr(args, "decoder_checkpoint", None))
    except (FileNotFoundError, ValueError, RuntimeUnavailable, CheckpointError) as exc:
        raise CommandError(str(exc).replace("\n", " | ")) from exc


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
