"""What 3D from aligned depth costs per frame: ``objects_from_depth`` on a synthetic
RGB-D frame (default 640x480, 10 objects), 16UC1 and 32FC1.

``python -m mobilesam_ros.bench.rgbd [--size 640x480] [--objects 10] [--repeats 50]
[--messages] [--json OUT]`` prints the median, p90 and max wall time per frame (ms), the
median and minimum CPU time of the process (ms; what the frame costs when the cores are
shared) and the points per frame; ``--messages`` adds the CPU time of building the
node's three 3D messages from those objects. The scene (seed 0): a wall at 3 m, N objects of 60-200 px, each a plane at
0.5-2.5 m (some tilted), its mask leaking 15 % onto the wall, 2 px of flying pixels
on its edges, 5 % holes, 0.5 % depth noise. The masks' boxes are given, as the node
gives the segmenter's. It measures; it does not assert.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..arguments import frame_size
from ..live.rgbd import objects_from_depth
from ..visualize import mask_boxes
from .model import load_average


def synthetic_rgbd(height: int = 480, width: int = 640, objects: int = 10, seed: int = 0):
    """(masks (N, H, W) bool, depth (H, W) float32 metres, K 3x3) of the scene above."""
    rng = np.random.default_rng(seed)
    depth = np.full((height, width), 3.0, np.float32)
    masks = np.zeros((objects, height, width), bool)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(objects):
        w, h = (int(x) for x in rng.integers(60, 200, 2))
        x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        z0 = rng.uniform(0.5, 2.5)
        slope = rng.choice([0.0, rng.uniform(-0.002, 0.002)])  # metres per pixel: a tilted face
        box = (slice(y0, y0 + h), slice(x0, x0 + w))
        depth[box] = z0 + slope * (u[box] - x0)
        leak = int(0.15 * w)
        masks[i, y0:y0 + h, x0:min(width, x0 + w + leak)] = True
        edge = np.zeros((height, width), bool)
        edge[max(0, y0 - 2):y0 + h + 2, max(0, x0 - 2):x0 + w + 2] = True
        edge[y0 + 2:y0 + h - 2, x0 + 2:x0 + w - 2] = False
        depth[edge] = rng.uniform(z0, 3.0, int(edge.sum()))
    depth *= 1 + rng.normal(0, 0.005, depth.shape).astype(np.float32)
    depth[rng.uniform(size=depth.shape) < 0.05] = 0.0
    K = np.array([[0.9 * width, 0, (width - 1) / 2], [0, 0.9 * width, (height - 1) / 2], [0, 0, 1]])
    return masks, depth, K


def _stats(samples: list[float]) -> dict[str, float]:
    a = np.asarray(samples)
    return {"median_ms": round(float(np.median(a)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3),
            "max_ms": round(float(a.max()), 3)}


def run(height: int, width: int, objects: int, repeats: int, max_points: int) -> dict:
    masks, depth_m, K = synthetic_rgbd(height, width, objects)
    boxes = mask_boxes(masks)  # the node passes the segmenter's boxes
    inputs = {"16UC1": np.round(depth_m * 1000).astype(np.uint16), "32FC1": depth_m}
    out = {"size": f"{width}x{height}", "objects": objects, "repeats": repeats, "max_points": max_points,
           "mask_pixels": int(masks.sum()), "load_average": load_average()}
    for name, depth in inputs.items():
        objects_from_depth(masks, depth, K, boxes=boxes, max_points=max_points)  # warm-up
        times, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            result = objects_from_depth(masks, depth, K, boxes=boxes, max_points=max_points)
            times.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
        # CPU time is what the frame costs; wall time also counts waiting for a busy core
        # (the minimum is the least disturbed run when other processes share the cores)
        out[name] = {**_stats(times), "cpu_median_ms": round(float(np.median(cpu)), 3),
                     "cpu_min_ms": round(float(np.min(cpu)), 3),
                     "objects_with_3d": sum(o is not None for o in result),
                     "inlier_points": int(sum(o.num_points for o in result if o is not None))}
    return out


def message_costs(objects, repeats: int) -> dict:
    """CPU time (ms: min / median) to build the node's 3D messages for ``objects``, with
    the real message classes where they are installed (else the entry says why not)."""
    from ..messages.objects3d import detections_3d_msg, markers_msg, point_buffer, pointcloud_msg

    out: dict = {}
    ids = [str(i + 1) for i in range(len(objects))]
    classes, scores = [""] * len(objects), np.ones(len(objects), np.float32)
    image = np.zeros((480, 640, 3), np.uint8)
    builders = {}
    try:
        from sensor_msgs.msg import PointCloud2, PointField
        from std_msgs.msg import Header
        from visualization_msgs.msg import Marker, MarkerArray

        header = Header(frame_id="camera_color_optical_frame")
        builders["points"] = lambda: pointcloud_msg(point_buffer(objects, ids, image), header, PointCloud2, PointField)
        builders["markers"] = lambda: markers_msg(objects, ids, classes, header, MarkerArray, Marker)
        try:
            import vision_msgs.msg as vision

            builders["detections_3d"] = lambda: detections_3d_msg(objects, ids, classes, scores, header, vision)
        except ImportError:
            out["detections_3d"] = "vision_msgs not importable"
    except ImportError as exc:
        return {"skipped": f"ROS messages not importable: {exc}"}
    for name, build in builders.items():
        cpu = []
        for _ in range(repeats):
            c0 = time.process_time()
            build()
            cpu.append((time.process_time() - c0) * 1e3)
        out[name] = {"cpu_min_ms": round(float(np.min(cpu)), 3), "cpu_median_ms": round(float(np.median(cpu)), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobilesam_ros.bench.rgbd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=frame_size, default="640x480", metavar="WxH")
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--max-points", type=int, default=2000, help="points kept per object (the node's default)")
    parser.add_argument("--messages", action="store_true",
                        help="also time building ~/detections_3d, ~/points, ~/markers (needs the ROS message packages)")
    parser.add_argument("--json", metavar="OUT", help="also write the results here")
    args = parser.parse_args(argv)
    width, height = args.size
    if args.objects < 1 or args.repeats < 1:
        print("error: --objects and --repeats must be >= 1", file=sys.stderr)
        return 2
    result = run(height, width, args.objects, args.repeats, args.max_points)
    if args.messages:
        masks, depth_m, K = synthetic_rgbd(height, width, args.objects)
        objects = objects_from_depth(masks, depth_m, K, max_points=args.max_points)
        result["messages"] = message_costs(objects, args.repeats)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
