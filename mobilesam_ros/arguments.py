"""Command-line arguments shared by the subcommands (``commands/``) and the benchmarks'
own command lines (``bench/``): argparse types, the model options, and opening the
runtime they name. Below both (``commands/`` imports ``bench/``), so neither reaches into
the other; errors are ``CommandError`` (one line, exit status 2).
"""

from __future__ import annotations

import argparse

import numpy as np

from .errors import CheckpointError, CommandError
from .variants import VARIANTS


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
    from .runtime import RuntimeUnavailable, create_runtime

    model = args.model or args.checkpoint
    try:
        return create_runtime(model, args.backend, device=args.device, precision=args.precision, num_threads=args.threads,
                              variant=getattr(args, "variant", None),
                              decoder_checkpoint=getattr(args, "decoder_checkpoint", None))
    except (FileNotFoundError, ValueError, RuntimeUnavailable, CheckpointError) as exc:
        raise CommandError(str(exc).replace("\n", " | ")) from exc
