"""mobilesam-ros everything: segment every object in one image."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..arguments import add_model_arguments, float_in, int_at_least, open_runtime
from ..cli import CommandError
from ._common import load_image, read_boxes_json
from ._npz import COMPRESS_HELP, write_npz
from ._outputs import check_output, write_image

HELP = "segment everything in one image (MobileSAMv2 boxes, SAM grid or TinySAM hierarchical)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="input image (jpg, png, ...)")
    add_model_arguments(parser)
    s = parser.add_argument_group("strategy")
    s.add_argument("--strategy", default="boxes", choices=("boxes", "grid", "hierarchical"),
                   help="boxes: a detector's boxes as prompts (MobileSAMv2, default); grid: SAM's point grid; "
                        "hierarchical: TinySAM's sparse-then-dense grid")
    s.add_argument("--detector", metavar="ONNX",
                   help="object-aware detector in the YOLOv8 ONNX layout (boxes strategy), e.g. MobileSAMv2's "
                        "ObjectAwareModel exported with ultralytics")
    s.add_argument("--boxes-json", metavar="FILE",
                   help="boxes strategy without a detector: a JSON list of [x0, y0, x1, y1] in image pixels "
                        "(or {\"boxes\": [...]})")
    d = parser.add_argument_group("detector (MobileSAMv2 defaults)")
    d.add_argument("--conf", type=float_in(0, 1), default=0.4, help="confidence threshold (default 0.4)")
    d.add_argument("--detector-iou", type=float_in(0, 1), default=0.9, help="detector NMS IoU (default 0.9)")
    d.add_argument("--max-det", type=int_at_least(1), default=300, help="most boxes (default 300)")
    d.add_argument("--imgsz", type=int_at_least(32), default=None, help="detector input size (default: the model's, else 1024)")
    d.add_argument("--border-snap", type=float_in(0), default=20.0,
                   help="snap box edges this close (input pixels) to the image border onto it (default 20)")
    f = parser.add_argument_group(
        "filters (default: what the model records in model.json, the toy-world model's own; else 0.88 / 0.95 for "
        "the grids as SAM, none for boxes as MobileSAMv2)")
    f.add_argument("--pred-iou-thresh", type=float_in(0, 1), default=None, help="drop masks with predicted IoU not above this")
    f.add_argument("--stability-thresh", type=float_in(0, 1), default=None, help="drop masks with stability score below this")
    f.add_argument("--nms", default="box", choices=("box", "mask"), help="duplicate removal by box or mask IoU (default box)")
    f.add_argument("--nms-thresh", type=float_in(0, 1), default=None,
                   help="NMS IoU threshold (1 = off; default: the model's published one: 0.7, off for MobileSAMv2's "
                        "prompt-guided decoder with --strategy boxes, as its script)")
    f.add_argument("--min-area", type=int_at_least(0), default=0, help="drop masks smaller than this many pixels")
    f.add_argument("--remove-small-regions", type=int_at_least(0), default=0, metavar="AREA",
                   help="fill holes and drop islands smaller than AREA pixels (default 0: off)")
    f.add_argument("--exact", action="store_true",
                   help="SAM's post-processing order (stability and boxes on every upsampled mask; slower)")
    g = parser.add_argument_group("grid / decoding")
    g.add_argument("--points-per-side", type=int_at_least(1), default=32, help="grid points per side (default 32)")
    g.add_argument("--points-per-batch", type=int_at_least(1), default=64, help="grid points per decoder call (default 64)")
    g.add_argument("--decoder-chunk", type=int_at_least(1), default=320, help="boxes per decoder call (default 320)")
    o = parser.add_argument_group("output")
    o.add_argument("--save-npz", metavar="OUT.npz",
                   help="masks, iou_predictions, stability_scores, boxes (+ prompt_boxes or points)")
    o.add_argument("--compress", action="store_true", help=COMPRESS_HELP)
    o.add_argument("--overlay", metavar="OUT.png", help="draw the masks over the image")
    o.add_argument("--coco-json", metavar="OUT.json", help="COCO RLE annotations with area, bbox, predicted IoU, stability")


def config_from_args(args: argparse.Namespace):
    from ..everything import EverythingConfig

    try:
        return EverythingConfig(
            strategy=args.strategy,
            detector_conf=args.conf,
            detector_iou=args.detector_iou,
            max_det=args.max_det,
            imgsz=args.imgsz,
            border_snap=args.border_snap,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_thresh,
            nms=args.nms,
            nms_thresh=args.nms_thresh,
            min_area=args.min_area,
            remove_small_regions=args.remove_small_regions,
            points_per_side=args.points_per_side,
            points_per_batch=args.points_per_batch,
            decoder_chunk=args.decoder_chunk,
            exact=args.exact,
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from exc


def open_detector(path: str, config, num_threads: int = 0):
    from ..everything import ObjectDiscovery

    try:
        return ObjectDiscovery(
            path,
            conf=config.detector_conf,
            iou=config.detector_iou,
            max_det=config.max_det,
            imgsz=config.imgsz,
            border_snap=config.border_snap,
            num_threads=num_threads,
        )
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    except Exception as exc:  # onnxruntime raises its own types for bad files
        raise CommandError(f"cannot use detector {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc


class _Progress:
    """Prompts decoded so far, on stderr at most every 2 s (a 32x32 grid takes tens of
    seconds on a CPU), and once when a stage of more than one decoder call completes."""

    def __init__(self, period: float = 2.0) -> None:
        self.period = period
        self.started = self.last = time.monotonic()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if (done < total and now - self.last < self.period) or (done == total and self.last == self.started):
            return  # quiet for short runs: nothing printed before the first period
        self.last = now
        print(f"  {stage}: {done}/{total} prompts decoded ({now - self.started:.1f} s)", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..everything import EverythingSegmenter
    from ..everything.masks import coco_document, write_coco_json
    from ..everything.segmenter import model_defaults
    from ..predictor import SamPredictor
    from ..variants import model_name

    if not (args.save_npz or args.overlay or args.coco_json):
        raise CommandError("nothing to write: give --save-npz, --overlay and/or --coco-json")
    # outputs first: an unwritable path fails now, not after the model ran
    overlay_path = check_output(args.overlay, "--overlay", image=True) if args.overlay else None
    coco_path = check_output(args.coco_json, "--coco-json") if args.coco_json else None
    if args.save_npz:
        check_output(args.save_npz, "--save-npz")
    config = config_from_args(args)
    if config.strategy != "boxes" and (args.detector or args.boxes_json):
        raise CommandError(f"--detector and --boxes-json give boxes for --strategy boxes, not {config.strategy}")
    if config.strategy == "boxes" and not (args.detector or args.boxes_json):
        raise CommandError(
            "--strategy boxes needs boxes: give --detector ONNX (MobileSAMv2's ObjectAwareModel or any YOLOv8 "
            "detector exported to ONNX, see docs/everything.md) or --boxes-json FILE, or use --strategy grid/hierarchical"
        )
    if args.detector and args.boxes_json:
        raise CommandError("give --detector or --boxes-json, not both")
    boxes = read_boxes_json(args.boxes_json) if args.boxes_json else None
    image = load_image(args.image)
    detector = open_detector(args.detector, config, args.threads) if args.detector else None

    runtime = open_runtime(args)
    predictor = SamPredictor(runtime)
    segmenter = EverythingSegmenter(predictor, config, detector, progress=_Progress())
    started = time.perf_counter()
    try:
        result = segmenter.segment(image, boxes=boxes)
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    elapsed = (time.perf_counter() - started) * 1e3
    t = result.timings_ms
    parts = ", ".join(f"{k} {v:.0f} ms" for k, v in t.items() if k != "total")
    print(
        f"{model_name(runtime.variant, runtime.prompt_decoder)}, {runtime.describe()}: {config.strategy}: "
        f"{result.num_prompts} prompt(s), {result.decoder_calls} decoder "
        f"call(s), {len(result)} mask(s); {parts}; total {elapsed:.0f} ms",
        file=sys.stderr,
    )
    recorded = model_defaults(runtime, config.strategy)
    if recorded:  # say which thresholds ran when the model's recorded ones replaced SAM's
        source = {"set": "set", "model": "recorded for this model", "published": "published"}
        used = ", ".join(f"{name} {config.resolved(name, recorded):g} ({source[config.threshold_source(name, recorded)]})"
                         for name in ("pred_iou_thresh", "stability_score_thresh"))
        print(f"thresholds: {used}; --pred-iou-thresh / --stability-thresh override", file=sys.stderr)
    if config.strategy == "boxes" and result.num_prompts == 0:
        why = (f"{args.boxes_json} holds no boxes" if boxes is not None
               else f"the detector found nothing above --conf {config.detector_conf:g}")
        print(f"no boxes to segment ({why})", file=sys.stderr)

    if args.save_npz:
        write_npz(args.save_npz, result.npz_arrays(), compress=args.compress)
        print(f"wrote {args.save_npz}", file=sys.stderr)
    if args.coco_json:
        doc = coco_document(
            result.coco_annotations(), image.shape[0], image.shape[1], Path(args.image).name,
            strategy=config.strategy, decoder_calls=result.decoder_calls, timings_ms=result.timings_ms,
            config=config.to_dict(recorded),
        )
        try:
            coco_path.parent.mkdir(parents=True, exist_ok=True)
            write_coco_json(coco_path, doc)
        except OSError as exc:
            raise CommandError(f"cannot write --coco-json {coco_path}: {exc.strerror or exc}") from exc
        print(f"wrote {coco_path}", file=sys.stderr)
    if args.overlay:
        from ..visualize import draw_overlay

        prompt_boxes = None
        if result.prompt_boxes is not None and result.prompt_index is not None:
            prompt_boxes = result.prompt_boxes[result.prompt_index]
        overlay = draw_overlay(image, result.masks, scores=result.iou_predictions, points=result.points,
                               boxes=prompt_boxes)
        write_image(overlay_path, overlay)
        print(f"wrote {overlay_path}", file=sys.stderr)
    runtime.close()
    return 0
