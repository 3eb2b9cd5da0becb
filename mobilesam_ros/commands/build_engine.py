"""mobilesam-ros build-engine: TensorRT engines from an exported model, with progress."""

from __future__ import annotations

import argparse
import sys
import time

from ..cli import CommandError

HELP = "build (or find cached) TensorRT 10 engines for an exported model directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..runtime.tensorrt_build import BuildOptions

    default = BuildOptions()  # one source for the profile and workspace defaults
    parser.add_argument("--model", required=True, metavar="DIR", help="directory written by 'mobilesam-ros export'")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="default: fp32")
    parser.add_argument("--no-fp32-layernorm", dest="fp32_layernorm", action="store_false",
                        help="fp16: let TensorRT run LayerNorm/softmax in fp16 too (reported to corrupt the TinyViT "
                             "encoder; by default they stay fp32)")
    parser.add_argument("--device", default="cuda", help="cuda or cuda:N (default: cuda)")
    parser.add_argument("--cache-dir", metavar="DIR", help="engine cache (default: MODEL/trt_engines)")
    parser.add_argument("--max-prompts", type=int, default=default.max_prompts, metavar="B",
                        help="decoder profile: most prompts per call (default %(default)s; larger batches are split)")
    parser.add_argument("--max-points", type=int, default=default.max_points, metavar="N",
                        help="decoder profile: most points per prompt, box corners and padding included "
                             "(default %(default)s)")
    parser.add_argument("--opt-prompts", type=int, default=default.opt_prompts, metavar="B",
                        help="decoder profile: tuned batch (default %(default)s)")
    parser.add_argument("--opt-points", type=int, default=default.opt_points, metavar="N",
                        help="decoder profile: tuned points (default %(default)s)")
    parser.add_argument("--workspace-mb", type=int, default=default.workspace_mb,
                        help="builder workspace (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached engine matches")
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def run(args: argparse.Namespace) -> int:
    from ..runtime.base import RuntimeUnavailable
    from ..runtime.onnx_backend import ModelDirError, read_model_info
    from ..runtime.tensorrt_build import BuildOptions, ensure_engines, import_tensorrt, plan_engines

    log = (lambda _m: None) if args.quiet else (lambda m: print(m, file=sys.stderr))
    try:
        read_model_info(args.model)
        options = BuildOptions(args.precision, args.fp32_layernorm, args.max_prompts, args.max_points,
                               args.opt_prompts, args.opt_points, args.workspace_mb)
    except (ModelDirError, ValueError) as exc:
        raise CommandError(str(exc)) from exc
    kind, _, index = args.device.partition(":")
    if kind != "cuda":
        raise CommandError(f"TensorRT engines are built on a GPU: --device must be cuda or cuda:N, not '{args.device}'")
    try:
        trt = import_tensorrt()
        from ..runtime.tensorrt_backend import CudaDriver

        cuda = CudaDriver()
        ordinal = int(index) if index else 0
        if cuda.device_count() <= ordinal:
            raise RuntimeUnavailable(f"no CUDA device {ordinal} (found {cuda.device_count()})")
        device = cuda.device(ordinal)
        gpu = cuda.gpu_info(device)
        ctx = cuda.retain_primary_context(device)
        cuda.set_current(ctx)
    except RuntimeUnavailable as exc:
        raise CommandError(str(exc)) from exc
    log(f"TensorRT {trt.__version__} on {gpu.name} (sm {gpu.compute_capability[0]}{gpu.compute_capability[1]})")
    plan = plan_engines(args.model, options, trt.__version__, gpu, args.cache_dir)
    started = time.perf_counter()
    try:
        paths = ensure_engines(plan, log=log, force=args.force, progress=not args.quiet)
    except RuntimeError as exc:
        raise CommandError(str(exc).replace("\n", " | ")) from exc
    finally:
        cuda.release_primary_context(device)
    for part, path in paths.items():
        print(f"{part}: {path}")
    log(f"done in {time.perf_counter() - started:.0f} s; use it with --backend tensorrt "
        f"--precision {args.precision} (same profile options)")
    return 0
