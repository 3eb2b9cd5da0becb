"""The demo's ROS side: stream frames to a running ``segment_node`` over DDS, click once,
and hand everything the node answers to the demo's record.

``mobilesam-ros demo`` (``commands/demo.py``) starts the node in its own process, picks
the frames and scores what comes back; this module is only the transport, the one part
of the demo that needs rclpy, imported by the command when it streams. The record it is
given is duck-typed (``commands/demo.py``'s ``DemoRecord``): it says which scene time
each frame shows, where to click, and keeps the labels, overlays and diagnostics.
"""

from __future__ import annotations

import subprocess
import time
from typing import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ..errors import CommandError
from .fastdds import configure_fastdds_profile

#: how long the node may take to come up (model loading) before the demo gives up
NODE_START_TIMEOUT_S = 180.0
#: a synthetic scene is streamed past --duration (at most this much longer) until the
#: node has answered a frame the demo can click the disk on (a slow CPU)
CLICK_GRACE_S = 120.0
#: after the stream: wait this long for the last answers, and this long more after each one
SETTLE_S, SETTLE_MORE_S = 10.0, 3.0
FRAME_ID = "demo_camera"


def stream_to_node(node: subprocess.Popen, source: Callable[[float], np.ndarray], record, *,
                   namespace: str, fps: float, duration: float) -> None:
    """Publish ``source(t)`` at ``fps`` for ``duration`` seconds to the node's camera
    topic, click once, and feed the node's labels, overlays and diagnostics to ``record``.
    CommandError when the node exits or does not come up."""
    configure_fastdds_profile()  # this process publishes camera-sized frames; before rclpy.init
    rclpy.init()
    client = _DemoClient(namespace, record)
    try:
        _wait_for_node(client, node)
        print("[demo] node is up: streaming", flush=True)
        _stream(client, node, source, record, fps, duration)
        _settle(client, record)
    finally:
        client.destroy_node()
        rclpy.try_shutdown()


class _DemoClient(Node):
    """The demo's own node: the camera and prompt publishers, and subscriptions that pass
    the node's outputs on to the record as arrays."""

    def __init__(self, namespace: str, record) -> None:
        super().__init__("mobilesam_demo")
        self.record = record
        self.image_pub = self.create_publisher(Image, f"{namespace}/camera/image_raw",
                                               QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.point_pub = self.create_publisher(PointStamped, f"{namespace}/mobilesam/prompt/point", 10)
        self.click_pub = self.create_publisher(Point, f"{namespace}/mobilesam/prompt/click", 10)
        self.create_subscription(Image, f"{namespace}/mobilesam/overlay", self._on_overlay, QoSProfile(depth=10))
        self.create_subscription(Image, f"{namespace}/mobilesam/labels", self._on_labels, QoSProfile(depth=10))
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_labels(self, msg: Image) -> None:
        labels = np.frombuffer(msg.data, np.uint16).reshape(msg.height, msg.width)
        self.record.on_labels(_stamp(msg.header.stamp), labels)

    def _on_overlay(self, msg: Image) -> None:
        rgb = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3)
        self.record.on_overlay(_stamp(msg.header.stamp), rgb)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if "mobilesam" in status.name:
                self.record.on_diagnostics({kv.key: kv.value for kv in status.values})

    def publish_frame(self, rgb: np.ndarray) -> tuple[int, int]:
        """Publish one RGB frame stamped now; returns its stamp (sec, nanosec)."""
        msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=rgb.shape[1] * 3)
        msg.data = rgb.tobytes()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = FRAME_ID
        self.image_pub.publish(msg)
        return _stamp(msg.header.stamp)

    def click_point(self, stamp: tuple[int, int], x: float, y: float) -> None:
        """A point prompt stamped with the frame it lies on (decoded on that frame)."""
        point = PointStamped()
        point.header.stamp.sec, point.header.stamp.nanosec = stamp
        point.header.frame_id = FRAME_ID
        point.point.x, point.point.y, point.point.z = x, y, 1.0
        self.point_pub.publish(point)

    def click_centre(self, rgb: np.ndarray) -> None:
        """What a click in rqt_image_view sends: the image centre, on the newest frame."""
        self.click_pub.publish(Point(x=rgb.shape[1] / 2.0, y=rgb.shape[0] / 2.0, z=0.0))


def _stamp(stamp) -> tuple[int, int]:
    return stamp.sec, stamp.nanosec


def _wait_for_node(client: _DemoClient, node: subprocess.Popen) -> None:
    """Until the node subscribes to the camera and prompt topics (its model loaded)."""
    print("[demo] waiting for the node (model loading) ...", flush=True)
    deadline = time.monotonic() + NODE_START_TIMEOUT_S
    while client.image_pub.get_subscription_count() == 0 or client.point_pub.get_subscription_count() == 0:
        if node.poll() is not None:
            raise CommandError(f"the node exited with status {node.returncode} (see its error above)")
        if time.monotonic() > deadline:
            raise CommandError(f"the node did not come up within {NODE_START_TIMEOUT_S:.0f} s")
        rclpy.spin_once(client, timeout_sec=0.1)


def _stream(client: _DemoClient, node: subprocess.Popen, source, record, fps: float, duration: float) -> None:
    """Publish at camera pace, click once when the record says where, spin in between."""
    period = 1.0 / fps
    start = time.monotonic()
    clicked = False
    while (elapsed := time.monotonic() - start) < duration or (
            record.waiting_for_click() and elapsed < duration + CLICK_GRACE_S):
        if node.poll() is not None:
            raise CommandError(f"the node exited with status {node.returncode}")
        t = record.frame_time(record.frames_published)
        rgb = np.ascontiguousarray(source(t))
        record.on_published(client.publish_frame(rgb), t)
        if record.mode == "prompt" and not clicked:
            clicked = _click(client, record, rgb)
        next_frame = start + record.frames_published * period
        while time.monotonic() < next_frame:
            rclpy.spin_once(client, timeout_sec=max(0.0, min(0.02, next_frame - time.monotonic())))


def _click(client: _DemoClient, record, rgb: np.ndarray) -> bool:
    """Click once: on a synthetic scene, the disk on the newest frame the node answered
    (when it has answered one); on images or video, the centre. True once clicked."""
    if record.scene is None:
        client.click_centre(rgb)
        return True
    target = record.click_on_disk()
    if target is None:
        return False
    client.click_point(*target)
    return True


def _settle(client: _DemoClient, record) -> None:
    """Let the last frames come back: spin until no overlay arrived for a while."""
    settle = time.monotonic() + SETTLE_S
    count = len(record.written)
    while time.monotonic() < settle:
        rclpy.spin_once(client, timeout_sec=0.1)
        if len(record.written) > count:
            count, settle = len(record.written), time.monotonic() + SETTLE_MORE_S
