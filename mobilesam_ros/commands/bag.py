"""mobilesam-ros bag: segment every frame of a recorded rosbag2, offline, without ROS."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from ..arguments import add_model_arguments, open_runtime
from ..cli import CommandError
from ._common import parse_floats

HELP = "segment every frame of a rosbag2 (sqlite3 or MCAP) offline into a new bag and/or a COCO dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT", help="rosbag2 directory (or its .db3 / .mcap file)")
    parser.add_argument("--image-topic", required=True, metavar="TOPIC",
                        help="sensor_msgs/Image or CompressedImage topic (TOPIC/compressed is found too)")
    parser.add_argument("--out", required=True, metavar="OUTPUT", help="the rosbag2 to write (a new directory)")
    add_model_arguments(parser)
    p = parser.add_argument_group("prompts (pixels of the recorded frames, x right, y down)")
    p.add_argument("--prompts-topic", metavar="TOPIC",
                   help="vision_msgs/Detection2DArray recorded from a detector: one object per box, "
                        "paired with the frame of the same stamp (as the node does)")
    p.add_argument("--point", action="append", default=[], metavar="X,Y[,LABEL]",
                   help="a point applied from the first frame on; LABEL 1 foreground (default), 0 background; "
                        "repeat for one object made of several points")
    p.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="a box applied from the first frame on (repeat: one object per box)")
    p.add_argument("--persistence", default="sticky", choices=("sticky", "once"),
                   help="sticky (default): prompts apply to later frames until replaced; once: their frame only")
    p.add_argument("--min-score", type=float, default=0.0, help="drop objects with a lower predicted IoU")
    t = parser.add_argument_group("tracking (as the node's tracking.*: prompts start objects, the tracker follows them)")
    t.add_argument("--no-tracking", action="store_true",
                   help="segment every frame on its own: --point/--box apply unchanged to every frame, "
                        "recorded detections to their frames, ids are 1..K per frame")
    t.add_argument("--motion", choices=("flow", "velocity", "none"), default=None,
                   help="how a followed object's next box is predicted (default flow)")
    t.add_argument("--max-lost-frames", type=int, default=None, metavar="N",
                   help="frames a lost object is looked for before its track ends (default 15)")
    e = parser.add_argument_group("segment everything")
    e.add_argument("--everything", action="store_true", help="segment every object of every frame")
    e.add_argument("--strategy", default="boxes", choices=("boxes", "grid", "hierarchical"),
                   help="boxes (default): --detector or --prompts-topic boxes; grid: SAM's point grid; "
                        "hierarchical: TinySAM's")
    e.add_argument("--detector", metavar="ONNX", help="object-aware detector, YOLOv8 ONNX layout (boxes strategy)")
    e.add_argument("--conf", type=float, default=None, help="detector confidence threshold (default 0.4)")
    e.add_argument("--points-per-side", type=int, default=None, help="grid points per side (default 32)")
    e.add_argument("--pred-iou-thresh", type=float, default=None, help="drop masks with predicted IoU not above this")
    e.add_argument("--stability-thresh", type=float, default=None, help="drop masks with a lower stability score")
    d = parser.add_argument_group("3D (as the node's depth_topic / camera_info_topic: ~/detections_3d, ~/points, ~/markers)")
    d.add_argument("--depth-topic", metavar="TOPIC", help="depth registered to the frames (sensor_msgs/Image 16UC1 mm "
                                                         "or 32FC1 m, e.g. aligned_depth_to_color/image_raw)")
    d.add_argument("--camera-info-topic", metavar="TOPIC", help="sensor_msgs/CameraInfo of the colour frames")
    d.add_argument("--depth-max-dt", type=float, default=None, metavar="S",
                   help="a frame takes the depth frame of its stamp, else the nearest within S seconds (default 0.02)")
    o = parser.add_argument_group("output")
    o.add_argument("--ns", default="/mobilesam", help="namespace of the output topics (default /mobilesam: "
                                                      "/mobilesam/mask, labels, detections, overlay, as the node)")
    o.add_argument("--storage", choices=("sqlite3", "mcap"), help="storage of OUTPUT (default: the input's)")
    o.add_argument("--overlay", action="store_true", help="also write ~/overlay (rgb8, as big as the frames)")
    o.add_argument("--copy-input", action="store_true", help="copy every input topic into OUTPUT, so one bag replays all")
    o.add_argument("--coco", metavar="DIR", help="also write the frames and a COCO instance-segmentation JSON to DIR")
    o.add_argument("--every", type=int, default=1, metavar="N", help="with --coco: every Nth segmented frame (default 1)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT bag (and --coco annotations)")
    o.add_argument("--quiet", action="store_true", help="no progress line")


def _parse_prompts(args: argparse.Namespace):
    points, labels = [], []
    for text in args.point:
        values = parse_floats(text, len(text.split(",")), "--point") if text.count(",") in (1, 2) else None
        if values is None:
            raise CommandError(f"--point must be X,Y or X,Y,LABEL, got '{text}'")
        label = values[2] if len(values) == 3 else 1.0
        if label not in (0, 1):
            raise CommandError(f"point label must be 1 (foreground) or 0 (background), got {label:g}")
        points.append(values[:2])
        labels.append(int(label))
    boxes = [parse_floats(b, 4, "--box") for b in args.box]
    for b in boxes:
        if b[2] <= b[0] or b[3] <= b[1]:
            raise CommandError(f"--box {','.join(f'{v:g}' for v in b)} is empty: need x0 < x1 and y0 < y1")
    return (
        np.asarray(points, np.float32) if points else None,
        np.asarray(labels, np.int64) if points else None,
        np.asarray(boxes, np.float32) if boxes else None,
    )


def _everything_config(args: argparse.Namespace):
    """The everything command's configuration (its defaults, these options)."""
    from . import everything as ev

    defaults = argparse.ArgumentParser(add_help=False)
    ev.add_arguments(defaults)
    base = defaults.parse_args(["-", "--model", "-"])
    base.strategy = args.strategy
    for name in ("conf", "points_per_side", "pred_iou_thresh", "stability_thresh"):
        if getattr(args, name) is not None:
            setattr(base, name, getattr(args, name))
    return ev.config_from_args(base)


def _check(args: argparse.Namespace) -> None:
    fixed = bool(args.point or args.box)
    if not (fixed or args.prompts_topic or args.everything):
        raise CommandError("no prompt source: give --prompts-topic, --point/--box, or --everything")
    if args.everything and fixed:
        raise CommandError("--everything segments every object: it does not take --point/--box")
    if args.detector and not args.everything:
        raise CommandError("--detector is for --everything (boxes strategy)")
    if args.everything and args.strategy == "boxes" and not (args.detector or args.prompts_topic):
        raise CommandError("--everything --strategy boxes needs boxes: give --detector ONNX or --prompts-topic, "
                           "or use --strategy grid/hierarchical")
    if args.everything and args.strategy != "boxes" and (args.detector or args.prompts_topic):
        raise CommandError(f"--detector and --prompts-topic give boxes for --strategy boxes, not {args.strategy}")
    if args.every < 1:
        raise CommandError(f"--every must be at least 1, got {args.every}")
    if args.every != 1 and not args.coco:
        raise CommandError("--every applies to --coco")
    if Path(args.out).resolve() == Path(args.input).resolve():
        raise CommandError("--out is the input bag: give a new path")
    if Path(args.out).exists():
        from ..bag.io import is_bag

        if not args.overwrite:
            raise CommandError(f"output {args.out} exists: choose another --out or pass --overwrite")
        if not is_bag(Path(args.out)):
            raise CommandError(f"output {args.out} exists and is not a rosbag2: not overwriting it")


def run(args: argparse.Namespace) -> int:
    from ..bag import BagError, BagOptions, BagSegmenter, InputBag, Progress, input_connections
    from ..bag.coco import CocoWriter
    from ..predictor import SamPredictor

    _check(args)
    points, labels, boxes = _parse_prompts(args)
    config = _everything_config(args) if args.everything else None
    try:
        bag = InputBag(args.input)
    except ModuleNotFoundError as exc:
        raise CommandError(f"{exc.name} is not installed: pip install 'mobilesam_ros[bag]' (or pip install rosbags)") from exc
    except BagError as exc:
        raise CommandError(str(exc)) from exc
    tracking = None
    if not args.no_tracking:
        from ..live.tracking import TrackingConfig

        changes = {k: v for k, v in (("motion", args.motion), ("max_lost_frames", args.max_lost_frames)) if v is not None}
        tracking = TrackingConfig(**changes)
    options = BagOptions(
        image_topic=args.image_topic, ns=args.ns, prompts_topic=args.prompts_topic, persistence=args.persistence,
        points=points, point_labels=labels, boxes=boxes, overlay=args.overlay, copy_input=args.copy_input,
        storage=args.storage, overwrite=args.overwrite, min_score=args.min_score, tracking=tracking,
        depth_topic=args.depth_topic, camera_info_topic=args.camera_info_topic, depth_max_dt=args.depth_max_dt,
    )
    try:
        input_connections(bag, options)  # a wrong topic fails before the model loads
    except BagError as exc:
        bag.close()
        raise CommandError(str(exc)) from exc
    runtime = None
    segmenter = None
    previous_term = signal.getsignal(signal.SIGTERM)
    try:
        coco = None
        if args.coco:
            try:
                coco = CocoWriter(args.coco, args.every, overwrite=args.overwrite, source=str(args.input))
            except (FileExistsError, OSError) as exc:
                raise CommandError(str(exc)) from exc
        runtime = open_runtime(args)
        predictor = SamPredictor(runtime, cache_size=1)
        everything = None
        if config is not None:
            from ..everything import EverythingSegmenter
            from .everything import open_detector

            detector = open_detector(args.detector, config, args.threads) if args.detector else None
            everything = EverythingSegmenter(predictor, config, detector)
        segmenter = BagSegmenter(predictor, options, everything)
        print(f"{runtime.describe()}: {args.input} ({bag.storage}) -> {args.out}", file=sys.stderr)
        progress = None if args.quiet else Progress(0, sys.stderr)

        def report(done: int, total: int) -> None:
            progress.total = total
            progress.update(done, force=done == total)

        # a polite kill (SIGTERM) closes OUTPUT like Ctrl-C (signals need the main thread)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            summary = segmenter.run(bag, args.out, coco, None if progress is None else report)
        finally:
            if progress is not None:
                progress.finish()
    except KeyboardInterrupt:
        if segmenter is not None and segmenter.output is not None:
            done = segmenter.summary.segmented
            print(f"mobilesam-ros bag: interrupted after {done} of {segmenter.summary.frames_total} frame(s); "
                  f"{args.out} is closed and holds them", file=sys.stderr)
        else:
            print("mobilesam-ros bag: interrupted before the first frame", file=sys.stderr)
        return 130
    except BagError as exc:
        print(f"mobilesam-ros bag: error: {exc}" + _written(segmenter, args.out), file=sys.stderr)
        return 1 if segmenter and segmenter.output else 2
    except CommandError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure mid-run: OUTPUT is closed, one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"mobilesam-ros bag: error: {type(exc).__name__}: {text}" + _written(segmenter, args.out), file=sys.stderr)
        return 1
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous_term)
        bag.close()
        if runtime is not None:
            runtime.close()
    for line in summary.lines():
        print(line, file=sys.stderr)
    written = ", ".join(f"{t} {n}" for t, n in sorted(summary.written.items()) if t.startswith(options.topic("")))
    print(f"wrote {args.out} ({summary.storage}): {written}", file=sys.stderr)
    if coco is not None:
        print(f"wrote {args.coco}: {summary.coco_images} image(s), annotations.json", file=sys.stderr)
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _written(segmenter, out: str) -> str:
    if segmenter is not None and segmenter.output is not None:
        return f" ({out} is closed and holds the {segmenter.summary.segmented} frame(s) done)"
    return ""
