"""mobilesam-ros export: checkpoint -> encoder.onnx + decoder.onnx + model.json, validated."""

from __future__ import annotations

import argparse
import sys

from ..cli import CommandError
from ..variants import DEFAULT_VARIANT, VARIANTS

HELP = "export a checkpoint to ONNX (encoder.onnx, decoder.onnx, model.json) and validate it against PyTorch"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="MobileSAM / TinySAM checkpoint (mobile_sam.pt, or one from 'synthetic-checkpoint')")
    parser.add_argument("--from-model", metavar="DIR",
                        help="with --quantize: quantise this fp32 model directory (written by export) instead of "
                             "exporting a checkpoint (no PyTorch needed)")
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
    quant = parser.add_argument_group("int8 (see docs/deployment.md, 'int8 models')")
    quant.add_argument("--quantize", choices=("int8",),
                       help="write an int8 model directory (same files; every ONNX Runtime path and TensorRT run it)")
    quant.add_argument("--int8-scheme", choices=("qdq", "dynamic"), default="qdq",
                       help="qdq: static, calibrated, QDQ format (ONNX Runtime and TensorRT); dynamic: activations "
                            "quantised per call, ONNX Runtime only (default: qdq)")
    quant.add_argument("--calibration", choices=("minmax", "entropy", "percentile", "output-mse"),
                       default="output-mse",
                       help="how activation ranges are chosen (qdq): output-mse minimises each layer's output error "
                            "(TinySAM's idea) (default: output-mse)")
    quant.add_argument("--calibration-images", metavar="DIR",
                       help="calibrate on images from this folder (your camera's); default: toy-world scenes")
    quant.add_argument("--calibration-count", type=int, default=4, metavar="N",
                       help="calibration images (default 4; each costs a few seconds per method)")
    parser.add_argument("--quiet", action="store_true", help="print only errors")


def _run_quantize(args: argparse.Namespace, log) -> int:
    from ..errors import CheckpointError
    from ..quantize import QuantizeError, QuantizeOptions, export_int8, quantize_model_dir

    try:
        import onnx  # noqa: F401 - only checked to be importable
        from onnxruntime import quantization  # noqa: F401 - only checked to be importable
    except ImportError as exc:
        raise CommandError(f"--quantize needs onnx and onnxruntime ({exc.name} is missing): pip install onnx onnxruntime")
    try:
        options = QuantizeOptions(scheme=args.int8_scheme, calibration=args.calibration,
                                  calibration_images=args.calibration_images, num_images=args.calibration_count)
        if args.from_model:
            quantize_model_dir(args.from_model, args.out, options, log=log)
        else:
            try:
                import torch  # noqa: F401 - only checked to be importable
            except ImportError:
                raise CommandError("export needs PyTorch (torch is missing): pip install 'mobilesam_ros[export]', or "
                                   "quantise an exported model with --from-model DIR")
            from ..export import ExportError

            try:
                export_int8(args.checkpoint, args.out, options, log=log, opset=args.opset,
                            single_mask=args.single_mask, decoder_graph=args.decoder_graph, variant=args.variant,
                            decoder_checkpoint=args.decoder_checkpoint)
            except ExportError as exc:
                raise CommandError("export validation FAILED: " + str(exc).replace("\n", " | ")) from exc
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        raise CommandError(str(exc).replace("\n", " | ")) from exc
    except QuantizeError as exc:
        raise CommandError(f"int8 quantisation FAILED: {exc}") from exc
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc}") from exc
    return 0


def run(args: argparse.Namespace) -> int:
    if args.quantize is None and (args.from_model or args.calibration_images):
        raise CommandError("--from-model and --calibration-images go with --quantize int8")
    if args.checkpoint and args.from_model:
        raise CommandError("give --checkpoint or --from-model, not both")
    if not args.checkpoint and not args.from_model:
        raise CommandError("--checkpoint CKPT is required (or, with --quantize int8, --from-model DIR)")
    if args.quantize:
        if args.decoder_only:
            raise CommandError("--decoder-only does not go with --quantize")
        log = (lambda _msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
        return _run_quantize(args, log)
    try:
        import onnx  # noqa: F401 - only checked to be importable
        import torch  # noqa: F401 - only checked to be importable
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
