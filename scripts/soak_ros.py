#!/usr/bin/env python3
"""Soak test of segment_node over real DDS: a camera stream at --rate Hz for --duration
seconds with a bad message every second, a prompt stream, and the node's resident memory
sampled from /proc. Measures, asserts nothing: the report says whether the node stayed
alive and served, and how its memory moved (first half against second half).

    python scripts/soak_ros.py --model out/model --backend onnxruntime          # 300 s, 30 Hz
    python scripts/soak_ros.py --duration 60 --out out/soak.json                # a short one

The bad messages cycle through what a robot's topics carry when something is wrong: a
row step shorter than the width, an unknown encoding, a truncated buffer, a frame of
another size, a NaN click, a click outside the image. Run it inside the venv
(scripts/ros_env.sh); without --model it uses a synthetic checkpoint (the real
architecture: real costs, noise masks).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (MB), or None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def bad_messages(width: int, height: int):
    """(kind, message) pairs, one per second, round robin."""
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import Image

    def image(encoding: str, step: int, data: bytes, w: int = width, h: int = height) -> Image:
        msg = Image(height=h, width=w, encoding=encoding, step=step)
        msg.data = data
        return msg

    frame = bytes(width * height * 3)
    return [
        ("image", image("rgb8", width, frame)),  # step shorter than a row
        ("image", image("rgb17", width * 3, frame)),  # unknown encoding
        ("image", image("rgb8", width * 3, frame[: len(frame) // 2])),  # truncated
        ("image", image("rgb8", 97 * 3, bytes(97 * 61 * 3), 97, 61)),  # another size, valid
        ("click", Point(x=math.nan, y=10.0, z=1.0)),
        ("click", Point(x=10 * width, y=10.0, z=1.0)),  # outside the image
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint or exported directory (default: a synthetic checkpoint)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of streaming (default 300)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz (default 30)")
    parser.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    parser.add_argument("--out", default="out/soak.json")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from mobilesam_ros.ros.fastdds import configure_fastdds_profile

    model = args.model
    if not model:
        from mobilesam_ros.modeling import write_synthetic_checkpoint

        model = str(Path(tempfile.gettempdir()) / "mobilesam_bench_synthetic.pt")
        if not Path(model).is_file():
            write_synthetic_checkpoint(model, seed=0)
    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.randint(220, 230)))
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    configure_fastdds_profile()
    log_path = Path(args.out).with_suffix(".node.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "w")
    node = subprocess.Popen(
        [sys.executable, "-m", "mobilesam_ros.ros.node", "--ros-args", "-r", "image:=/soak/image",
         "-p", f"model:={model}", "-p", f"backend:={args.backend}", "-p", "diagnostics_period:=1.0"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        report = run(args, node, width, height)
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(30)
            except subprocess.TimeoutExpired:
                node.kill()
        log.close()
    report.update({
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "model": model, "backend": args.backend, "size": args.size, "rate_hz": args.rate,
        "duration_s": args.duration, "node_exit_code": node.returncode, "node_log": str(log_path),
    })
    out = Path(args.out)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "memory_mb"}, indent=2))
    print(f"written to {out}")
    return 0


def run(args, node, width: int, height: int) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import Point
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    rclpy.init()
    client = Node("mobilesam_soak")
    pub = client.create_publisher(Image, "/soak/image", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
    click = client.create_publisher(Point, "/mobilesam/prompt/click", 10)
    labels: list[float] = []
    diag: dict[str, str] = {}
    client.create_subscription(Image, "/mobilesam/labels", lambda m: labels.append(time.monotonic()), 10)

    def on_diag(msg):
        for status in msg.status:
            if "mobilesam" in status.name:
                diag.update({kv.key: kv.value for kv in status.values})

    client.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    deadline = time.monotonic() + 180
    while not (pub.get_subscription_count() and client.count_publishers("/mobilesam/labels")):
        if node.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the node did not come up (see its log)")
        rclpy.spin_once(client, timeout_sec=0.05)

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes() for _ in range(4)]
    bad = bad_messages(width, height)
    memory: list[tuple[float, float]] = []
    start = time.monotonic()
    next_frame, next_bad, next_sample, seq, bad_sent = start, start + 1.0, start, 0, 0
    click.publish(Point(x=width / 2.0, y=height / 2.0, z=1.0))
    while time.monotonic() - start < args.duration and node.poll() is None:
        now = time.monotonic()
        if now >= next_frame:
            seq += 1
            msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
            msg.data = frames[seq % len(frames)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int((1000 + seq / args.rate) * 1e9), 10**9)
            pub.publish(msg)
            next_frame += 1.0 / args.rate
        if now >= next_bad:
            kind, message = bad[bad_sent % len(bad)]
            (pub if kind == "image" else click).publish(message)
            bad_sent += 1
            next_bad += 1.0
        if now >= next_sample:
            value = rss_mb(node.pid)
            if value is not None:
                memory.append((round(now - start, 1), round(value, 1)))
            next_sample += 5.0
        rclpy.spin_once(client, timeout_sec=max(0.0, min(next_frame, next_bad) - time.monotonic()))
    elapsed = time.monotonic() - start
    alive = node.poll() is None
    # the last diagnostics of the run
    end = time.monotonic() + 2.5
    while alive and time.monotonic() < end:
        rclpy.spin_once(client, timeout_sec=0.1)
    half = elapsed / 2
    first = [m for t, m in memory if 30 <= t < half]  # after the first 30 s: model load and warm-up done
    second = [m for t, m in memory if t >= half]
    counters = {k: diag.get(k) for k in ("frames_received", "frames_processed", "frames_dropped", "frame_errors",
                                         "prompts_received", "prompt_errors", "results_published", "worker_errors")}
    client.destroy_node()
    rclpy.try_shutdown()
    return {
        "alive_at_end": alive,
        "elapsed_s": round(elapsed, 1),
        "frames_published": seq,
        "bad_messages_published": bad_sent,
        "labels_received": len(labels),
        "labels_in_last_30_s": sum(1 for t in labels if t >= start + elapsed - 30),
        "node_counters": counters,
        "memory_mb": memory,
        "memory_first_half_mean_mb": round(float(np.mean(first)), 1) if first else None,
        "memory_second_half_mean_mb": round(float(np.mean(second)), 1) if second else None,
        "memory_growth_second_half_mb": round(max(second) - min(second), 1) if second else None,
        "memory_peak_mb": max((m for _, m in memory), default=None),
    }


if __name__ == "__main__":
    sys.exit(main())
