"""mobilesam-ros export: checkpoint -> encoder.onnx + decoder.onnx + model.json, validated."""

from __future__ import annotations

import argparse
import sys

from ..cli import CommandError
from ..variants import DEFAULT_VARIANT, VARIANTS

HELP = "export a checkpoint to ONNX (encoder.onnx, decoder.onnx, model.json) and validate it against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="MobileSAM / TinySAM checkpoint (mobile_sam.pt, or one from 'synthetic-checkpoint')")
    parser.add_argument("--decoder-checkpoint", metavar="PT",
                        help="MobileSAMv2: its Prompt_guided_Mask_Decoder.pt, whose prompt encoder and mask decoder "
                             "replace the checkpoint's (the image encoder stays the checkpoint's, e.g. mobile_sam.pt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (created if needed)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17; 17 or newer)")
    parser.add_argument("--single-mask", action="store_true",
                        help="decoder with one output mask (SAM's token 0) instead of 4: less work per prompt, "
                             "no multimask output")
    parser.add_argument("--decoder-graph", choices=("fast", "plain"), default="fast",
                        help="fast: re-associated attention and MatMul upscaling, ~40%% less CPU per prompt, "
                             "same results; plain: the model's graph as written (default: fast)")
    parser.add_argument("--variant", default=DEFAULT_VARIANT, choices=VARIANTS,
                        help="which SAM the checkpoint is, recorded in model.json; every runtime decodes as its "
                             "authors do (tinysam: the three multimask outputs for every prompt) "
                             f"(default: {DEFAULT_VARIANT})")
    parser.add_argument("--decoder-only", action="store_true",
                        help="re-export only the decoder into DIR, keeping its encoder.onnx (e.g. to switch to "
                             "--single-mask)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")


def run(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise CommandError(f"export needs PyTorch and onnx ({exc.name} is missing): pip install 'mobilesam_ros[export]'")
    from ..errors import CheckpointError
    from ..export import ExportError, export_model

    if args.opset < 17:
        raise CommandError(f"--opset {args.opset} is too old: LayerNormalization needs opset 17 or newer")
    log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    try:
        export_model(
            args.checkpoint,
            args.out,
            opset=args.opset,
            single_mask=args.single_mask,
            decoder_graph=args.decoder_graph,
            variant=args.variant,
            decoder_checkpoint=args.decoder_checkpoint,
            encoder=not args.decoder_only,
            log=log,
        )
    except (CheckpointError, ValueError) as exc:
        raise CommandError(str(exc).replace("\n", " | ")) from exc
    except ExportError as exc:
        raise CommandError("export validation FAILED: " + str(exc).replace("\n", " | ")) from exc
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc}") from exc
    return 0
