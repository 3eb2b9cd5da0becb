"""mobilesam-ros bench: encoder and batched-box decoding times, with post-processing."""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

from ..arguments import add_model_arguments, open_runtime
from ..cli import CommandError
from ._common import load_image

HELP = "measure the encoder and the decoder (1, 10, 100 boxes, with full-size masks): median, p90, peak memory"


def _everything_module():
    """The segment-everything benchmark, when this build has it."""
    try:
        from ..bench import everything as everything_bench
    except ImportError:
        return None
    return everything_bench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--image", metavar="FILE",
                        help="measure on this image (default: synthetic 1920x1080 and 640x480 scenes)")
    parser.add_argument("--boxes", default="1,10,100", metavar="N,N,...", help="box counts (default 1,10,100)")
    parser.add_argument("--repeats", type=int, default=5, metavar="R", help="timed runs per measurement (default 5)")
    parser.add_argument("--warmup", type=int, default=1, metavar="W", help="untimed runs first (default 1)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--reference", metavar="CKPT",
                        help="also measure the reference predictor's batched path (PyTorch: embedding repeated "
                             "per box, every mask upsampled with F.interpolate) from this checkpoint, side by side")
    parser.add_argument("--everything", action="store_true",
                        help="also run the segment-everything benchmark (boxes, grid, hierarchical)")
    module = _everything_module()
    if module is not None and hasattr(module, "add_everything_arguments"):
        module.add_everything_arguments(parser)


def _parse_counts(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise CommandError(f"--boxes must be positive integers separated by commas, got '{text}'")
    return counts


def run(args: argparse.Namespace) -> int:
    from ..bench.model import BenchImage, ReferencePredictor, format_table, run_bench, run_reference_bench

    counts = _parse_counts(args.boxes)
    if args.repeats < 1 or args.warmup < 0:
        raise CommandError("--repeats must be at least 1 and --warmup at least 0")
    everything = None
    if args.everything:
        everything = _everything_module()
        if everything is None or not hasattr(everything, "run_everything_bench"):
            raise CommandError("--everything needs mobilesam_ros.bench.everything, which this build does not have")
    images = None
    if args.image:
        images = [BenchImage(Path(args.image).name, load_image(args.image))]
    reference = None
    if args.reference:
        if not Path(args.reference).is_file():
            raise CommandError(f"--reference checkpoint not found: {args.reference}")
        try:
            import torch  # noqa: F401 - only checked to be importable
        except ImportError as exc:
            raise CommandError("--reference runs PyTorch: pip install 'mobilesam_ros[export]'") from exc

    log = partial(print, file=sys.stderr)
    runtime = open_runtime(args)
    try:
        log(f"benchmarking {runtime.describe()}")
        result = run_bench(runtime, images, counts, warmup=args.warmup, repeats=args.repeats, log=log)
        result["model"] = str(args.model or args.checkpoint)
        if everything is not None:
            result["everything"] = everything.run_everything_bench(args, runtime)
    finally:
        runtime.close()
    if args.reference:
        from ..errors import CheckpointError

        try:
            ref_predictor = ReferencePredictor(args.reference, num_threads=args.threads)
        except CheckpointError as exc:
            raise CommandError(str(exc).replace("\n", " | ")) from exc
        log(f"benchmarking {ref_predictor.describe()}")
        reference = run_reference_bench(ref_predictor, images, counts, warmup=args.warmup, repeats=args.repeats, log=log)
        reference["model"] = args.reference
        result["reference"] = reference
        result["speedup"] = {
            "encoder": round(reference["encoder_ms"]["median"] / result["encoder_ms"]["median"], 2),
            "decode": {
                image: {n: round(reference["decode_ms_by_image"][image][n]["median"] / row["median"], 2)
                        for n, row in rows.items()}
                for image, rows in result["decode_ms_by_image"].items()
            },
        }
    print(format_table(result, reference))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {path}")
    return 0
