"""No transition frees the model while a call is inside it.

A runtime stand-in (blocking_runtime.py) blocks its encode until released and records
every call and its close. The managed node, in this process: deactivate while the call
is in flight waits for it within ``deactivate_timeout`` or fails (the node stays
active and says why); cleanup, shutdown and ``destroy_node`` never close the engine in
use. Ctrl-C: segment_node in its own process on the same stand-in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from lifecycle_msgs.msg import State
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from blocking_runtime import BlockingRuntime
from ros_harness import REPO, Client, domain_for, image_msg, ros_environment

DOMAIN = domain_for(__name__)
FRAME = np.zeros((48, 64, 3), np.uint8)
HERE = Path(__file__).resolve().parent


@pytest.fixture
def make_node(tmp_path):
    """A started SegmentLifecycleNode on a BlockingRuntime (private context); its log
    lines are kept in ``node.lines``. Destroyed at the end, released first."""
    from mobilesam_ros.ros.lifecycle_node import SegmentLifecycleNode

    model = tmp_path / "model.pt"
    model.write_bytes(b"stand-in")
    made = []

    class StandInNode(SegmentLifecycleNode):
        def _open_runtime(self, cfg):
            return self.stand_in

        def log(self, level, message):
            self.lines.append((level, message))
            super().log(level, message)

    def make(deactivate_timeout: float):
        context = rclpy.Context()
        rclpy.init(context=context, domain_id=DOMAIN)
        StandInNode.stand_in = runtime = BlockingRuntime()
        StandInNode.lines = []
        node = StandInNode(context=context, parameter_overrides=[
            Parameter("model", value=str(model)), Parameter("deactivate_timeout", value=deactivate_timeout),
            Parameter("overlay.enabled", value=False)])
        made.append((node, runtime, context))
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        return node, runtime

    yield make
    for node, runtime, context in made:
        runtime.release()
        try:
            node.destroy_node()
        finally:
            rclpy.try_shutdown(context=context)
        assert runtime.violations() == [], runtime.events


def _state(node) -> int:
    return node._state_machine.current_state[0]


def _block_in_encode(node, runtime) -> None:
    """Hand the node a frame; its worker enters the blocking encode."""
    node.cameras[0].images.on_image(image_msg(FRAME, "rgb8", 1))
    assert runtime.entered.wait(20), runtime.events


def _release_after(runtime, seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, runtime.release)
    timer.start()
    return timer


def test_deactivate_during_a_long_call_fails_and_the_node_stays_active(make_node):
    node, runtime = make_node(deactivate_timeout=0.3)
    _block_in_encode(node, runtime)
    subscriptions = len(list(node.subscriptions))
    t0 = time.monotonic()
    assert node.trigger_deactivate() == TransitionCallbackReturn.FAILURE
    assert 0.3 <= time.monotonic() - t0 < 5.0  # waited its bound, not for ever
    assert _state(node) == State.PRIMARY_STATE_ACTIVE
    assert any(level == "error" and "cannot deactivate" in text and "stays active" in text
               for level, text in node.lines), node.lines
    # still active: the worker finishes the frame and serves the next one
    runtime.release()
    assert node.worker is not None and len(list(node.subscriptions)) == subscriptions > 0
    node.cameras[0].images.on_image(image_msg(FRAME, "rgb8", 2))
    deadline = time.monotonic() + 20
    while node.stats.snapshot()["frames_processed"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert node.stats.snapshot()["frames_processed"] == 2
    # now idle: deactivate and cleanup succeed, the engine is closed once, with no call inside
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert [e for e in runtime.events if e[0] == "close"] == [("close", 0)]
    assert runtime.violations() == []


def test_deactivate_waits_for_a_call_that_ends_within_the_bound(make_node):
    node, runtime = make_node(deactivate_timeout=20.0)
    _block_in_encode(node, runtime)
    timer = _release_after(runtime, 0.5)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    timer.join()
    assert ("exit", "encode") in runtime.events and not runtime.closed
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
    assert runtime.events[-1] == ("close", 0)


@pytest.mark.parametrize("how", ["shutdown", "destroy_node"])
def test_shutdown_and_destroy_never_close_the_engine_in_use(make_node, how):
    node, runtime = make_node(deactivate_timeout=0.3)
    _block_in_encode(node, runtime)
    if how == "shutdown":
        assert node.trigger_shutdown() == TransitionCallbackReturn.SUCCESS
        assert _state(node) == State.PRIMARY_STATE_FINALIZED
    else:
        node.destroy_node()
    assert not runtime.closed  # the call is still inside: the engine is left to it
    assert any("still busy" in text for _, text in node.lines), node.lines
    runtime.release()
    node.worker._thread.join(10)  # the worker ends after its call
    assert not node.worker.running
    assert runtime.violations() == []


# --- Ctrl-C: segment_node in its own process ----------------------------------------------------------
def _events(path: Path) -> list:
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def client():
    c = Client(DOMAIN, "race_test_client")
    yield c
    c.close()


@pytest.mark.parametrize("release_after, deactivate_timeout", [(1.0, 20.0), (3.0, 0.5)])
def test_ctrl_c_during_a_long_call_never_closes_the_engine_under_it(tmp_path, client, release_after,
                                                                   deactivate_timeout):
    model = tmp_path / "model.pt"
    model.write_bytes(b"stand-in")
    events, release = tmp_path / "events.jsonl", tmp_path / "release"
    log = open(tmp_path / "node.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "blocking_runtime.py"), str(events), str(release), "--ros-args",
         "-p", f"model:={model}", "-p", f"deactivate_timeout:={deactivate_timeout}", "-p", "overlay.enabled:=false",
         "-r", "image:=/race/image"],
        cwd=REPO, env={**ros_environment(DOMAIN), "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])},
        stdout=log, stderr=subprocess.STDOUT)
    try:
        image = client.publisher(Image, "/race/image", depth=1)
        assert client.wait_matched(image, 60), (tmp_path / "node.log").read_text()
        image.publish(image_msg(FRAME, "rgb8", 1))
        deadline = time.monotonic() + 30
        while ("enter", "encode", False) not in _events(events)[2:] and time.monotonic() < deadline:
            time.sleep(0.05)  # the warm-up encode (enter + exit) is first; then the frame's
        assert ("enter", "encode", False) in _events(events)[2:], _events(events)
        proc.send_signal(signal.SIGINT)  # Ctrl-C while the call is inside
        threading.Timer(release_after, release.touch).start()
        assert proc.wait(30) == 0, (tmp_path / "node.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    runtime_events = _events(events)
    inside, bad = 0, []
    for event in runtime_events:
        inside += {"enter": 1, "exit": -1}.get(event[0], 0)
        if event[0] == "close" and (event[1] > 0 or inside > 0):
            bad.append(event)
    assert bad == [] and runtime_events[-1][0] in ("exit", "close"), runtime_events
    text = (tmp_path / "node.log").read_text()
    if release_after < deactivate_timeout:  # waited for the call, then released the engine
        assert runtime_events[-1] == ["close", 0] or runtime_events[-1] == ("close", 0), runtime_events
    else:  # gave up waiting: the engine is left to the process exit, and the log says so
        assert "close" not in [e[0] for e in runtime_events] and "still busy" in text, text
