"""What ``mobilesam-ros bag`` costs beyond the model: reading, converting and writing.

``python -m mobilesam_ros.bench.bag --model PATH [--frames 20] [--size 640x480]
[--encoding rgb8|bgr8|jpeg] [--storage sqlite3|mcap] [--boxes 3] [--overlay] [--coco]
[--json OUT]`` writes a recording of moving shapes (raw or JPEG frames and one
Detection2DArray of ``--boxes`` boxes per frame, stamped like its frame), runs it
through the bag pipeline with the given model (``--prompts-topic`` path: detections
paired by stamp, outputs mask + labels + detections) and prints per frame: the model
(encoder + decoder + masks), decoding the frame, writing the outputs, and the whole
loop; the overhead is everything that is not the model, as a share of the model's
time, and as CPU time of the reading / writing thread (which, unlike wall time, does
not grow when other processes share the cores). Start-up (opening the bags, the model) is outside the loop and reported apart.
It measures; it does not assert.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ..arguments import frame_size
from .model import load_average

DETECTIONS = "vision_msgs/msg/Detection2DArray"


def synthetic_frames(count: int, height: int, width: int, boxes: int, seed: int = 0):
    """(RGB frame, [x0, y0, x1, y1] per shape) for each frame: shapes moving over a gradient."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                           np.full_like(x, 90)], -1).astype(np.uint8)
    sizes = rng.integers(min(height, width) // 8, min(height, width) // 3, (boxes, 2))
    starts = rng.uniform(0, 1, (boxes, 2)) * (np.array([width, height]) - sizes)
    velocity = rng.uniform(-4, 4, (boxes, 2))
    colours = rng.integers(0, 255, (boxes, 3))
    for i in range(count):
        frame = background.copy()
        rects = []
        for k in range(boxes):
            x0, y0 = np.clip(starts[k] + velocity[k] * i, 0, np.array([width, height]) - sizes[k]).astype(int)
            x1, y1 = x0 + int(sizes[k][0]), y0 + int(sizes[k][1])
            cv2.rectangle(frame, (int(x0), int(y0)), (x1 - 1, y1 - 1), tuple(int(c) for c in colours[k]), -1)
            rects.append([float(x0), float(y0), float(x1), float(y1)])
        yield frame, rects


def write_recording(path: Path, storage: str, frames: int, height: int, width: int, encoding: str, boxes: int) -> None:
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ..bag.typestore import default_message, default_typestore

    store = default_typestore()
    T, Header = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
    compressed = encoding == "jpeg"
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
        image_conn = writer.add_connection("/camera/image", image_type, typestore=store)
        det_conn = writer.add_connection("/detections", DETECTIONS, typestore=store)
        for i, (rgb, rects) in enumerate(synthetic_frames(frames, height, width, boxes)):
            header = Header(stamp=T(sec=1000 + i // 30, nanosec=(i % 30) * 33_000_000), frame_id="camera")
            t = 10**9 * 1000 + i * 33_000_000
            if compressed:
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
                msg = store.types[image_type](header=header, format="jpeg", data=buf.reshape(-1))
            else:
                data = rgb if encoding == "rgb8" else np.ascontiguousarray(rgb[:, :, ::-1])
                msg = store.types[image_type](header=header, height=height, width=width, encoding=encoding,
                                              is_bigendian=0, step=width * 3, data=data.reshape(-1))
            writer.write(image_conn, t, store.serialize_cdr(msg, image_type))
            dets = default_message(store, DETECTIONS)
            dets.header = header
            for x0, y0, x1, y1 in rects:
                det = default_message(store, "vision_msgs/msg/Detection2D")
                det.header = header
                det.bbox.center.position.x, det.bbox.center.position.y = (x0 + x1) / 2, (y0 + y1) / 2
                det.bbox.size_x, det.bbox.size_y = x1 - x0, y1 - y0
                hyp = default_message(store, "vision_msgs/msg/ObjectHypothesisWithPose")
                hyp.hypothesis.class_id, hyp.hypothesis.score = "1", 0.9
                det.results = [hyp]
                dets.detections.append(det)
            writer.write(det_conn, t + 5_000_000, store.serialize_cdr(dets, DETECTIONS))


def run(args: argparse.Namespace) -> dict:
    from ..arguments import open_runtime
    from ..bag import BagOptions, BagSegmenter, InputBag
    from ..bag.coco import CocoWriter
    from ..predictor import SamPredictor

    width, height = args.size
    with tempfile.TemporaryDirectory(prefix="mobilesam-bench-bag-") as tmp:
        src = Path(tmp) / "in"
        write_recording(src, args.storage, args.frames, height, width, args.encoding, args.boxes)
        t0 = time.perf_counter()
        runtime = open_runtime(args)
        predictor = SamPredictor(runtime, cache_size=1)
        predictor.set_image(np.zeros((height, width, 3), np.uint8))  # warm-up: first-run allocations
        options = BagOptions(image_topic="/camera/image", prompts_topic="/detections", overlay=args.overlay)
        segmenter = BagSegmenter(predictor, options)
        bag = InputBag(src)
        startup_s = time.perf_counter() - t0
        coco = CocoWriter(Path(tmp) / "coco") if args.coco else None
        try:
            summary = segmenter.run(bag, Path(tmp) / "out", coco)
        finally:
            bag.close()
        n = max(summary.segmented, 1)
        other = summary.total_s - summary.model_s - summary.decode_s - summary.write_s
        result = {
            "model": runtime.describe(),
            "frames": summary.segmented,
            "size": f"{width}x{height}",
            "encoding": args.encoding,
            "storage": args.storage,
            "boxes": args.boxes,
            "overlay": args.overlay,
            "coco": args.coco,
            "startup_s": round(startup_s, 2),
            "per_frame_ms": {
                "model": round(1e3 * summary.model_s / n, 2),
                "decode_frame": round(1e3 * summary.decode_s / n, 2),
                "write_outputs": round(1e3 * summary.write_s / n, 2),
                "reading_and_other": round(1e3 * other / n, 2),
                "total": round(1e3 * summary.total_s / n, 2),
            },
            "overhead_ms_per_frame": round(1e3 * (summary.total_s - summary.model_s) / n, 2),
            "overhead_cpu_ms_per_frame": round(1e3 * summary.overhead_cpu_s / n, 2),
            "overhead_pct_of_model": round(100 * summary.overhead, 2),
            "load_average": load_average(),
        }
        runtime.close()
    return result


def main(argv: list[str] | None = None) -> int:
    from ..arguments import add_model_arguments

    parser = argparse.ArgumentParser(prog="python -m mobilesam_ros.bench.bag", description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--size", type=frame_size, default="640x480", help="WxH (default 640x480)")
    parser.add_argument("--encoding", default="rgb8", choices=("rgb8", "bgr8", "jpeg"))
    parser.add_argument("--storage", default="sqlite3", choices=("sqlite3", "mcap"))
    parser.add_argument("--boxes", type=int, default=3, help="detections per frame (default 3)")
    parser.add_argument("--overlay", action="store_true", help="also write ~/overlay")
    parser.add_argument("--coco", action="store_true", help="also write a COCO dataset (every frame)")
    parser.add_argument("--json", metavar="OUT", help="write the result as JSON")
    args = parser.parse_args(argv)
    result = run(args)
    ms = result["per_frame_ms"]
    print(f"{result['model']}: {result['frames']} frames {result['size']} {result['encoding']} ({result['storage']}), "
          f"{result['boxes']} boxes/frame; start-up {result['startup_s']} s", file=sys.stderr)
    print(f"per frame: model {ms['model']} ms, decode frame {ms['decode_frame']} ms, write outputs "
          f"{ms['write_outputs']} ms, reading + other {ms['reading_and_other']} ms, total {ms['total']} ms", file=sys.stderr)
    print(f"overhead beyond the model: {result['overhead_ms_per_frame']} ms/frame = "
          f"{result['overhead_pct_of_model']}% of model time; CPU time {result['overhead_cpu_ms_per_frame']} ms/frame "
          f"(load average {result['load_average']})", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
