#!/usr/bin/env python3
"""End-to-end benchmark of segment_node over real DDS: publish a frame, receive its
mask and labels, one frame in flight at a time (so no frame is dropped).

For each resolution it reports the latency from publish to the arrival of the
labels, the node's model time (encode + decode, measured inside the node) and the
node's overhead beyond it (latency - model time: conversion, post-processing,
publishing, DDS transport both ways, Python scheduling). Results go to a JSON file.

    python scripts/bench_ros.py --model models/mobile_sam.pt            # torch
    python scripts/bench_ros.py --model models/mobile_sam --backend onnxruntime
    python scripts/bench_ros.py                                          # synthetic checkpoint
    python scripts/bench_ros.py --sizes 640x480,1280x720 --frames 10 --out out/bench_ros.json

A synthetic checkpoint has the official architecture, so its timings are the real
model's (only the masks are meaningless). Run it inside the venv (scripts/ros_env.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _stats(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "mean": round(statistics.fmean(values), 1),
        "p50": round(values[len(values) // 2], 1),
        "p90": round(values[min(len(values) - 1, int(len(values) * 0.9))], 1),
        "min": round(values[0], 1),
        "max": round(values[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint or exported directory (default: a synthetic checkpoint)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--sizes", default="640x480,1280x720")
    parser.add_argument("--frames", type=int, default=8, help="measured frames per size (after 2 warm-up)")
    parser.add_argument("--threads", type=int, default=0, help="engine threads (0: default)")
    parser.add_argument("--overlay", action="store_true", help="also subscribe to ~/overlay (drawn per frame)")
    parser.add_argument("--out", default="out/bench_ros.json")
    args = parser.parse_args()

    from mobilesam_ros.ros.node import configure_fastdds_profile

    model = args.model
    if not model:
        from mobilesam_ros.modeling import write_synthetic_checkpoint

        model = str(Path(tempfile.gettempdir()) / "mobilesam_bench_synthetic.pt")
        if not Path(model).is_file():
            write_synthetic_checkpoint(model, seed=0)
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(120, 200)))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    configure_fastdds_profile()

    node = subprocess.Popen(
        [sys.executable, "-m", "mobilesam_ros.ros.node", "--ros-args", "-r", "image:=/bench/image",
         "-p", f"model:={model}", "-p", f"backend:={args.backend}", "-p", f"num_threads:={args.threads}",
         "-p", "diagnostics_period:=0.1", "-p", "overlay.max_rate:=0.0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        results = run(args, node)
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(15)
        except subprocess.TimeoutExpired:
            node.kill()
    report = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "model": model,
        "synthetic_weights": not args.model,
        "backend": args.backend,
        "frames_per_size": args.frames,
        "overlay_subscribed": args.overlay,
        "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"written to {out}")
    return 0


def run(args, node) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Point
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    client = Node("mobilesam_bench")
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    pub = client.create_publisher(Image, "/bench/image", qos)
    click = client.create_publisher(Point, "/mobilesam/prompt/click", 10)
    arrivals: dict[tuple[int, int], float] = {}
    masks: dict[tuple[int, int], float] = {}
    diag: list[dict[str, str]] = []
    client.create_subscription(
        Image, "/mobilesam/labels",
        lambda m: arrivals.setdefault((m.header.stamp.sec, m.header.stamp.nanosec), time.perf_counter()), 10)
    client.create_subscription(
        Image, "/mobilesam/mask",
        lambda m: masks.setdefault((m.header.stamp.sec, m.header.stamp.nanosec), time.perf_counter()), 10)
    if args.overlay:
        client.create_subscription(Image, "/mobilesam/overlay", lambda m: None, 10)

    def on_diag(msg):
        for status in msg.status:
            if "mobilesam" in status.name:
                diag.append({kv.key: kv.value for kv in status.values})

    client.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)

    def spin_until(predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            if node.poll() is not None:
                raise SystemExit(f"the node exited: {node.stderr.read()[-2000:]}")
            rclpy.spin_once(client, timeout_sec=0.01)
        return predicate()

    if not spin_until(lambda: pub.get_subscription_count() > 0 and click.get_subscription_count() > 0
                      and client.count_publishers("/mobilesam/labels") > 0, 180):
        raise SystemExit("the node did not come up")
    time.sleep(0.5)
    results = {}
    rng = np.random.default_rng(0)
    seq = 0
    for size in args.sizes.split(","):
        width, height = (int(v) for v in size.split("x"))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes()
        latencies, mask_latencies, model, overhead = [], [], [], []
        stages: dict[str, list[float]] = {}
        for i in range(args.frames + 2):
            seq += 1
            msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
            msg.data = pixels
            msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + seq, 0
            key = (1000 + seq, 0)
            if i == 0:  # a sticky prompt: every frame decodes one object
                pub.publish(msg)
                spin_until(lambda: key in arrivals, 120)
                click.publish(Point(x=width / 2.0, y=height / 2.0, z=0.0))
                spin_until(lambda: False, 1.0)
                continue
            n_diag = len(diag)
            t0 = time.perf_counter()
            pub.publish(msg)
            if not spin_until(lambda: key in arrivals and key in masks, 120):
                raise SystemExit(f"no result for frame {key}")
            spin_until(lambda: len(diag) > n_diag, 1.0)
            spin_until(lambda: False, 0.15)  # one more diagnostics period: the _last values are this frame's
            if i == 1:
                continue  # warm-up
            d = diag[-1]
            latency = (arrivals[key] - t0) * 1e3
            model_ms = float(d["encode_ms_last"]) + float(d["decode_ms_last"])
            latencies.append(latency)
            mask_latencies.append((masks[key] - t0) * 1e3)
            model.append(model_ms)
            overhead.append(latency - model_ms)
            for stage in ("convert", "encode", "decode", "postprocess", "publish"):
                stages.setdefault(stage, []).append(float(d[f"{stage}_ms_last"]))
        results[size] = {
            "latency_ms": _stats(latencies),
            "mask_latency_ms": _stats(mask_latencies),
            "model_ms": _stats(model),
            "overhead_ms": _stats(overhead),
            "overhead_fraction": round(statistics.fmean(overhead) / statistics.fmean(latencies), 3),
            "node_stages_ms_mean": {k: round(statistics.fmean(v), 2) for k, v in stages.items()},
        }
        print(f"{size}: latency {results[size]['latency_ms']['mean']} ms, model {results[size]['model_ms']['mean']} ms, "
              f"overhead {results[size]['overhead_ms']['mean']} ms", flush=True)
    client.destroy_node()
    rclpy.try_shutdown()
    return results


if __name__ == "__main__":
    sys.exit(main())
