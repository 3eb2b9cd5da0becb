"""Faults a robot meets, over DDS with the real node (the toy-world model, torch backend,
so masks are real): depth and camera info that never arrive, time going backwards
(a bag replayed with --loop, use_sim_time), a camera restarting at another resolution,
prompts stamped in the future or far in the past. Each is proven by the node's outputs
and diagnostics counters, not by waiting for silence.

One node process, the checks in order (each relies on the state the previous left).
"""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ros_harness import Client, NodeProcess, diagnostic, domain_for, image_msg, ros_environment

DOMAIN = domain_for(__name__)
NS = "/mobilesam"


def scene(width: int = 320, height: int = 240) -> np.ndarray:
    """A toy-world frame: a red disk on a plain grey background."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.full((height, width, 3), 110, np.uint8)
    rgb[(x - width / 2) ** 2 + (y - height / 2) ** 2 <= (height / 5) ** 2] = (220, 40, 40)
    return rgb


def depth_msg(sec: int, width: int = 320, height: int = 240) -> Image:
    return image_msg(np.full((height, width), 1500, np.uint16), "16UC1", sec)


def info_msg(width: int = 320, height: int = 240) -> CameraInfo:
    info = CameraInfo(width=width, height=height)
    info.header.frame_id = "camera_optical"
    info.k = [300.0, 0.0, width / 2 - 0.5, 0.0, 300.0, height / 2 - 0.5, 0.0, 0.0, 1.0]
    return info


@pytest.fixture(scope="module")
def client():
    c = Client(DOMAIN, "faults_test_client")
    yield c
    c.close()


@pytest.fixture(scope="module")
def node(toy_checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("faults") / "node.log"
    proc = NodeProcess(
        ["-p", f"model:={toy_checkpoint}", "-p", "overlay.enabled:=false", "-p", "diagnostics_period:=0.2",
         "-p", "depth_topic:=/flt/depth", "-p", "camera_info_topic:=/flt/camera_info", "-p", "depth.wait:=0.5",
         "-r", "image:=/flt/image"],
        ros_environment(DOMAIN), log,
    )
    assert proc.wait_for_log("ready:", 120), proc.log()
    yield proc
    assert proc.stop(30) == 0, proc.log()


@pytest.fixture(scope="module")
def io(node, client):
    out = {
        "labels": client.subscribe(Image, f"{NS}/labels"),
        "points": client.subscribe(PointCloud2, f"{NS}/points"),
        "diagnostics": client.subscribe(DiagnosticArray, "/diagnostics"),
        "image": client.publisher(Image, "/flt/image", depth=1),
        "depth": client.publisher(Image, "/flt/depth", depth=5),
        "info": client.publisher(CameraInfo, "/flt/camera_info"),
        "click": client.publisher(Point, f"{NS}/prompt/click"),
        "point": client.publisher(PointStamped, f"{NS}/prompt/point"),
    }
    for name in ("image", "click", "point"):
        assert client.wait_matched(out[name], 30), name
    assert client.wait_publishers([f"{NS}/labels", f"{NS}/points"])
    return out


def _labels(io, sec: int):
    return [m for m in io["labels"] if m.header.stamp.sec == sec]


def _frame(io, client, node, sec: int, width: int = 320, height: int = 240, depth: bool = False):
    """Publish a frame (and its depth); its labels image."""
    if depth:
        io["depth"].publish(depth_msg(sec, width, height))
    io["image"].publish(image_msg(scene(width, height), "rgb8", sec))
    assert client.wait_until(lambda: _labels(io, sec), 90), node.log()[-3000:]
    return _labels(io, sec)[-1]


def _objects(msg) -> int:
    return len(set(np.unique(np.frombuffer(msg.data, np.uint16)).tolist()) - {0})


def _counter(io, key: str) -> int:
    value = diagnostic(io["diagnostics"], key)
    return int(value) if value is not None else -1


def _click(io, client, node, sec_after: int):
    """Click the disk's centre on the newest frame; wait for the result it causes."""
    before = len(io["labels"])
    io["click"].publish(Point(x=160.0, y=120.0, z=1.0))
    assert client.wait_until(lambda: len(io["labels"]) > before and _objects(io["labels"][-1]) == 1, 60), \
        node.log()[-3000:]


def test_without_depth_and_camera_info_2d_continues_and_diagnostics_say_what_is_missing(node, client, io):
    _frame(io, client, node, 1)
    _click(io, client, node, 1)
    assert _objects(_frame(io, client, node, 2)) == 1  # followed, 2D published
    assert client.wait_until(lambda: _counter(io, "frames_processed") >= 2, 10)
    assert diagnostic(io["diagnostics"], "camera_info") == "waiting on /flt/camera_info"
    assert diagnostic(io["diagnostics"], "depth") == "none received yet on /flt/depth"
    assert "no camera_info received yet on /flt/camera_info" in diagnostic(io["diagnostics"], "depth_last_skip")
    assert _counter(io, "frames_without_3d") >= 1 and _counter(io, "frames_with_3d") == -1
    assert node.proc.poll() is None


def test_time_going_backwards_resets_tracking_and_depth_pairing(node, client, io):
    io["info"].publish(info_msg())
    assert client.wait_until(lambda: diagnostic(io["diagnostics"], "camera_info") == "received", 20)
    for sec in (100, 101):
        assert _objects(_frame(io, client, node, sec, depth=True)) == 1
    assert client.wait_until(lambda: _counter(io, "frames_with_3d") == 2, 10), node.log()[-3000:]
    assert [p.header.stamp.sec for p in io["points"]][-2:] == [100, 101]
    assert _counter(io, "tracks_active") == 1 and _counter(io, "stream_restarts") == 0

    # the bag starts again at 5 s: the track of the old lap ends, the frame is served
    looped = _frame(io, client, node, 5, depth=True)
    assert _objects(looped) == 0
    assert client.wait_until(lambda: _counter(io, "stream_restarts") == 1 and _counter(io, "tracks_active") == 0, 10)
    assert "time went backwards by 96.000 s" in node.log()
    # a click on the new lap is followed, and its frames pair with their own depth
    _click(io, client, node, 5)
    assert _objects(_frame(io, client, node, 6, depth=True)) == 1
    assert client.wait_until(lambda: 6 in [p.header.stamp.sec for p in io["points"]], 10), node.log()[-3000:]
    assert _counter(io, "tracks_active") == 1


def test_camera_restarting_at_another_resolution(node, client, io):
    restarts = _counter(io, "stream_restarts")
    bigger = _frame(io, client, node, 7, width=640, height=480, depth=True)  # depth and info still 320x240
    assert (bigger.width, bigger.height) == (640, 480) and _objects(bigger) == 0
    assert client.wait_until(lambda: _counter(io, "stream_restarts") == restarts + 1, 10)
    assert "the image size changed from 320x240 to 640x480" in node.log()
    io["info"].publish(info_msg(640, 480))
    _click(io, client, node, 7)
    assert _objects(_frame(io, client, node, 8, width=640, height=480, depth=True)) == 1
    assert _counter(io, "worker_errors") == 0 and node.proc.poll() is None


def test_prompts_stamped_in_the_future_or_far_past_go_to_the_newest_frame(node, client, io):
    for sec, word in ((100_000, "after"), (2, "before")):
        before = len(io["labels"])
        point = PointStamped()
        point.header.stamp.sec = sec
        point.point.x, point.point.y, point.point.z = 320.0, 240.0, 1.0
        io["point"].publish(point)
        assert client.wait_until(lambda: len(io["labels"]) > before, 60), node.log()[-3000:]
        assert io["labels"][-1].header.stamp.sec == 8  # the newest frame took it
        assert node.wait_for_log(f"s {word} the newest frame", 10), node.log()[-3000:]
    assert client.wait_until(lambda: _counter(io, "prompts_unmatched_stamp") == 2, 10)
    assert _counter(io, "prompt_errors") == 0
