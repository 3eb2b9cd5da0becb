"""segment_node with real rclpy: the node runs in its own process, this test publishes
frames and prompts over DDS and checks what comes back.

One node process serves the prompt-mode checks in order (model encoding costs ~1-3 s
per frame on a small CPU); a second one covers the params file, the compressed
transport, a best-effort publisher and segment-everything.
"""

from __future__ import annotations

import array
import importlib.util
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty

from ros_harness import REPO, Client, NodeProcess, domain_for, image_msg, ros_environment, stamps

DOMAIN = domain_for(__name__)
NS = "/mobilesam"
RNG = np.random.default_rng(0)
FRAME = RNG.integers(0, 256, (480, 640, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def env():
    return ros_environment(DOMAIN)


@pytest.fixture(scope="module")
def client():
    c = Client(DOMAIN)
    yield c
    c.close()


@pytest.fixture(scope="module")
def node(exported_model, env, tmp_path_factory):
    """The prompt-mode node on the deployed path: an exported model on ONNX Runtime (the
    params-file node below runs the torch backend on a checkpoint)."""
    log = tmp_path_factory.mktemp("node") / "node.log"
    proc = NodeProcess(
        ["-p", f"model:={exported_model}", "-p", "backend:=onnxruntime", "-p", "overlay.max_rate:=0.0",
         "-p", "diagnostics_period:=0.5", "-r", "image:=/test/image"],
        env, log,
    )
    assert proc.wait_for_log("ready:", 90), proc.log()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def io(node, client):
    """Publishers and recorded outputs of the prompt-mode node."""
    out = {
        "mask": client.subscribe(Image, f"{NS}/mask"),
        "labels": client.subscribe(Image, f"{NS}/labels"),
        "overlay": client.subscribe(Image, f"{NS}/overlay"),
        "diagnostics": client.subscribe(DiagnosticArray, "/diagnostics"),
        "image": client.publisher(Image, "/test/image", depth=1),
        "point": client.publisher(PointStamped, f"{NS}/prompt/point"),
        "click": client.publisher(Point, f"{NS}/prompt/click"),
        "clear": client.publisher(Empty, f"{NS}/prompt/clear"),
    }
    for name in ("image", "point", "click", "clear"):
        assert client.wait_matched(out[name]), name
    assert client.wait_publishers([f"{NS}/mask", f"{NS}/labels", f"{NS}/overlay"])
    return out


def _point(x, y, z=1.0, sec=0):
    msg = PointStamped()
    msg.header.stamp.sec = sec
    msg.point.x, msg.point.y, msg.point.z = float(x), float(y), float(z)
    return msg


def _labels_for(io, sec):
    return [m for m in io["labels"] if m.header.stamp.sec == sec]


def _counter(io, key):
    for msg in reversed(io["diagnostics"]):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if key in values:
                return int(values[key])
    return None


def test_prompt_before_any_frame_is_logged_and_skipped(node, io, client):
    io["point"].publish(_point(10, 10))
    assert node.wait_for_log("before any image frame", 20), node.log()
    assert node.proc.poll() is None


def test_frame_and_prompt_give_mask_and_labels_with_the_frame_header(node, io, client):
    io["image"].publish(image_msg(FRAME, "rgb8", 101, "cam_optical"))
    assert client.wait_until(lambda: _labels_for(io, 101) and any(m.header.stamp.sec == 101 for m in io["mask"]), 60)
    io["point"].publish(_point(320, 240, sec=101))  # stamped with the cached frame
    assert client.wait_until(lambda: len(_labels_for(io, 101)) >= 2, 30), node.log()
    labels = _labels_for(io, 101)[-1]
    mask = [m for m in io["mask"] if m.header.stamp.sec == 101][-1]
    assert labels.header.frame_id == mask.header.frame_id == "cam_optical"
    assert (labels.encoding, labels.height, labels.width, labels.step) == ("mono16", 480, 640, 1280)
    assert (mask.encoding, mask.height, mask.width, mask.step) == ("mono8", 480, 640, 640)
    lab = np.frombuffer(labels.data, np.uint16).reshape(480, 640)
    msk = np.frombuffer(mask.data, np.uint8).reshape(480, 640)
    assert set(np.unique(lab)) <= {0, 1} and set(np.unique(msk)) <= {0, 255}
    np.testing.assert_array_equal(msk == 255, lab > 0)
    # the overlay goes out while someone subscribes (this client), same header
    assert client.wait_until(lambda: any(m.header.stamp.sec == 101 for m in io["overlay"]), 10)
    overlay = [m for m in io["overlay"] if m.header.stamp.sec == 101][-1]
    assert (overlay.encoding, overlay.height, overlay.width) == ("rgb8", 480, 640)
    # the node says so once when vision_msgs is missing (scripts/build_vision_msgs.sh
    # builds it for the tests; test_ros_vision_msgs.py covers the real types)
    has_vision_msgs = importlib.util.find_spec("vision_msgs") is not None
    assert ("vision_msgs is not installed" in node.log()) != has_vision_msgs


def test_click_and_clear(node, io, client):
    before = len(io["labels"])
    io["click"].publish(Point(x=100.0, y=50.0, z=0.0))
    assert client.wait_until(lambda: len(io["labels"]) > before, 30), node.log()[-3000:]
    before = len(io["labels"])
    io["clear"].publish(Empty())
    assert client.wait_until(lambda: len(io["labels"]) > before, 30), node.log()[-3000:]
    assert not np.frombuffer(io["labels"][-1].data, np.uint16).any()  # cleared: nothing segmented


def _counters(io, *keys):
    return tuple(_counter(io, key) for key in keys)


def test_burst_keeps_only_the_newest_frame(node, io, client):
    keys = ("frames_received", "frames_processed", "frames_dropped")
    assert client.wait_until(lambda: None not in _counters(io, *keys), 10)
    received0, processed0, dropped0 = _counters(io, *keys)
    for sec in range(200, 215):
        io["image"].publish(image_msg(FRAME, "rgb8", sec))
        client.spin_for(0.01)
    assert client.wait_until(lambda: 214 in stamps(io["labels"]), 60), node.log()
    burst = sorted({s for s in stamps(io["labels"]) if 200 <= s < 215})
    assert burst[-1] == 214
    assert len(burst) <= 6, burst  # ~1-3 s per encode: most of the 15 frames were skipped, not queued

    # every frame of the burst that arrived was either processed or counted as dropped
    def settled():
        received, processed, dropped = _counters(io, *keys)
        return processed - processed0 == len(burst) and received - received0 == len(burst) + dropped - dropped0

    assert client.wait_until(settled, 10), (_counters(io, *keys), (received0, processed0, dropped0), burst)
    received, _, dropped = _counters(io, *keys)
    assert dropped - dropped0 >= 1 and received - received0 > len(burst)


ENCODINGS = [
    ("bgr8", lambda f: f[:, :, ::-1], {}),
    ("rgba8", lambda f: np.dstack([f, np.full(f.shape[:2], 255, np.uint8)]), {}),
    ("bgra8", lambda f: np.dstack([f[:, :, ::-1], np.full(f.shape[:2], 255, np.uint8)]), {}),
    ("mono8", lambda f: f[:, :, 1].copy(), {}),
    ("mono16", lambda f: f[:, :, 1].astype(np.uint16) * 200, {}),
    ("mono16", lambda f: (f[:, :, 1].astype(np.uint16) * 200).astype(">u2"), {"bigendian": True}),
    ("uyvy", lambda f: f[:, :, :2].copy(), {}),
    ("yuyv", lambda f: f[:, :, :2].copy(), {}),
    ("rgb8", lambda f: f, {"step": 64 * 3 + 8}),  # padded rows
]


def test_every_encoding(node, io, client):
    small = FRAME[:48, :64]
    for i, (encoding, make, extra) in enumerate(ENCODINGS):
        sec = 300 + i
        io["image"].publish(image_msg(make(small), encoding, sec, **extra))
        assert client.wait_until(lambda: _labels_for(io, sec), 40), (encoding, node.log()[-2000:])
        msg = _labels_for(io, sec)[-1]
        assert (msg.height, msg.width) == (48, 64), encoding


def test_bad_input_is_logged_and_skipped_and_the_node_keeps_serving(node, io, client):
    io["image"].publish(image_msg(FRAME[:48, :64], "rgb8", 399))  # the latest frame is 64x48
    assert client.wait_until(lambda: _labels_for(io, 399), 40), node.log()[-3000:]
    good = image_msg(FRAME[:48, :64], "rgb8", 400)
    wrong_encoding = image_msg(FRAME[:48, :64], "rgb9", 401)
    short = image_msg(FRAME[:48, :64], "rgb8", 402)
    short.data = array.array("B", bytes(100))
    empty = Image(height=0, width=0, encoding="rgb8", step=0)
    empty.header.stamp.sec = 403
    for msg in (wrong_encoding, short, empty, wrong_encoding):
        io["image"].publish(msg)
        client.spin_for(0.4)  # one at a time: the node keeps only the newest frame
    io["point"].publish(_point(math.nan, 5))
    io["point"].publish(_point(5000, 5))  # outside the 64x48 frame
    io["point"].publish(_point(5, 5, z=math.inf))
    client.spin_for(0.5)
    io["image"].publish(good)
    assert client.wait_until(lambda: _labels_for(io, 400), 40), node.log()[-3000:]
    log = node.log()
    assert "unsupported encoding 'rgb9'" in log
    assert log.count("unsupported encoding 'rgb9'") == 1  # the repeat is throttled
    assert "less than step x height" in log and "zero-size image" in log
    assert "not finite" in log and "outside the 64x48 image" in log and "z must be finite" in log
    assert client.wait_until(lambda: (_counter(io, "frame_errors") or 0) >= 3 and (_counter(io, "prompt_errors") or 0) >= 3, 10)
    assert node.proc.poll() is None


def test_diagnostics(node, io, client):
    assert client.wait_until(lambda: io["diagnostics"], 10)
    status = io["diagnostics"][-1].status[0]
    assert "mobilesam" in status.name and "onnxruntime" in status.hardware_id
    keys = {kv.key for kv in status.values}
    for key in ("input_rate_hz", "output_rate_hz", "latency_ms_mean", "frames_dropped", "last_error",
                "convert_ms_mean", "encode_ms_mean", "decode_ms_mean", "postprocess_ms_mean", "publish_ms_mean"):
        assert key in keys, key
    values = {kv.key: kv.value for kv in status.values}
    assert float(values["encode_ms_mean"]) > 0 and int(values["frames_processed"]) > 0


# --- a second node: params file, compressed transport, best-effort camera, everything mode ----------
def test_params_file_compressed_best_effort_everything(synthetic_checkpoint, env, client, tmp_path):
    proc = NodeProcess(
        ["--params-file", str(REPO / "config" / "segment.yaml"),
         "-p", f"model:={synthetic_checkpoint}", "-p", "transport:=compressed", "-p", "mode:=everything",
         "-p", "everything.strategy:=grid", "-p", "everything.points_per_side:=3",
         "-p", "everything.pred_iou_thresh:=0.0", "-p", "everything.stability_score_thresh:=0.0",
         "-r", "__node:=everything", "-r", "image:=/test/camera"],
        env, tmp_path / "everything.log",
    )
    try:
        assert proc.wait_for_log("ready:", 90), proc.log()
        assert "images on /test/camera/compressed (compressed" in proc.log() and "mode everything" in proc.log()
        labels = client.subscribe(Image, "/everything/labels")
        pub = client.publisher(CompressedImage, "/test/camera/compressed", reliable=False, depth=1)
        assert client.wait_matched(pub)
        assert client.wait_publishers(["/everything/labels"])
        assert proc.wait_for_log("subscribing best_effort", 10), proc.log()
        # a small jpeg, and a 640x480 png of noise (~0.9 MB: over Fast DDS's default shared-memory
        # segment, so it reaches the best-effort subscription only thanks to the shipped profile)
        for sec, ext, pixels in ((500, ".jpg", FRAME[:96, :128]), (501, ".png", FRAME)):
            msg = CompressedImage(format="rgb8; jpeg compressed bgr8" if ext == ".jpg" else "png")
            data = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2BGR))[1].tobytes()
            msg.data = array.array("B", data)
            msg.header.stamp.sec = sec
            pub.publish(msg)
            assert client.wait_until(lambda: sec in stamps(labels), 60), proc.log()
            out = [m for m in labels if m.header.stamp.sec == sec][-1]
            assert (out.encoding, out.height, out.width) == ("mono16", *pixels.shape[:2])
        assert len(data) > 600_000
        bad = CompressedImage(format="jpeg")
        bad.data = array.array("B", b"definitely not a jpeg")
        bad.header.stamp.sec = 502
        pub.publish(bad)
        assert proc.wait_for_log("cannot decode", 20), proc.log()
        assert proc.proc.poll() is None
    finally:
        assert proc.stop() == 0, proc.log()


# --- start-up errors: one clear message, exit status 1 ------------------------------------------------
def _start_and_fail(env, *ros_args, timeout=60):
    result = subprocess.run(
        [sys.executable, "-m", "mobilesam_ros.ros.node", "--ros-args", *ros_args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )
    return result.returncode, result.stdout + result.stderr


def test_missing_model_stops_start_up_with_one_clear_error(env, tmp_path):
    code, out = _start_and_fail(env, "-p", f"model:={tmp_path / 'mobile_sam.pt'}")
    assert code == 1, out
    lines = [line for line in out.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "does not exist" in out and "mobilesam-ros download" in out, out
    assert "Traceback" not in out


def test_bad_parameters_are_all_listed(env):
    code, out = _start_and_fail(env, "-p", "model:=x.pt", "-p", "qos.depth:=0", "-p", "transport:=carrier_pigeon")
    assert code == 1 and "qos.depth: 0 is below the minimum 1" in out and "transport: 'carrier_pigeon'" in out, out
    assert "Traceback" not in out


def test_corrupt_checkpoint_stops_start_up_with_one_clear_error(env, tmp_path):
    bad = tmp_path / "mobile_sam.pt"
    bad.write_bytes(b"this is not a checkpoint")
    code, out = _start_and_fail(env, "-p", f"model:={bad}")
    assert code == 1 and "cannot load model" in out and "Traceback" not in out, out
