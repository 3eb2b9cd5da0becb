"""segment_node stops cleanly on SIGTERM and SIGINT while its worker is busy: the worker
is stopped before the ROS context goes away, so nothing is published into a dead
context (it used to log "segmenting a frame failed: RCLError: ... publisher's context
is invalid"), and the process exits 0."""

from __future__ import annotations

import signal

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Image

from ros_harness import Client, NodeProcess, domain_for, image_msg, ros_environment

DOMAIN = domain_for(__name__)
FRAME = np.random.default_rng(5).integers(0, 256, (480, 640, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def client():
    c = Client(DOMAIN, name="shutdown_test_client")
    yield c
    c.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_segmenting_exits_cleanly(exported_model, client, tmp_path, signum):
    topic = f"/shutdown_{signum.name.lower()}/image"
    node = NodeProcess(["-p", f"model:={exported_model}", "-p", "backend:=onnxruntime", "-r", f"image:={topic}"],
                       ros_environment(DOMAIN), tmp_path / "node.log")
    try:
        assert node.wait_for_log("ready:", 90), node.log()
        labels = client.subscribe(Image, "/mobilesam/labels")
        image = client.publisher(Image, topic, depth=1)
        assert client.wait_matched(image) and client.wait_publishers(["/mobilesam/labels"])
        # frames faster than the model runs: the worker is always in an encode
        for sec in range(1, 200):
            image.publish(image_msg(FRAME, "rgb8", sec))
            client.spin_for(0.1)
            if labels:
                break
        assert labels, node.log()
        for sec in range(200, 204):
            image.publish(image_msg(FRAME, "rgb8", sec))
            client.spin_for(0.1)
        node.proc.send_signal(signum)
        for sec in range(204, 210):  # the camera keeps streaming while the node stops
            image.publish(image_msg(FRAME, "rgb8", sec))
            client.spin_for(0.05)
        returncode = node.proc.wait(20)
    finally:
        node.stop()
    log = node.log()
    assert returncode == 0, log
    for bad in ("RCLError", "failed", "Traceback", "context is invalid"):
        assert bad not in log, log
