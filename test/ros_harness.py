"""Helpers for the rclpy tests: start segment_node in its own process (real DDS) and
talk to it from a client node in the test process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: one DDS domain range per test module, none shared: a node left over from one module
#: (or a module of a second run on the same machine) never answers another's client.
#: Within its range a module takes the id given by the process id.
DOMAIN_RANGES: dict[str, range] = {
    "test_ros_lifecycle": range(1, 20),
    "test_lifecycle_race": range(20, 30),
    "test_ros_node": range(30, 45),
    "test_ros_variants": range(45, 60),
    "test_launch_real": range(60, 75),
    "test_readme_commands": range(75, 90),
    "test_ros_cameras": range(90, 100),
    "test_ros_vision_msgs": range(100, 115),
    "test_ros_demo": range(115, 130),
    "test_ros_shutdown": range(130, 145),
    "test_ros_faults": range(145, 160),
    "test_ros_depth": range(160, 175),
    "test_ros_tracking": range(175, 190),
    "test_colcon_install": range(190, 205),
}


def domain_for(module: str) -> int:
    """The DDS domain of the test module ``module`` (its ``__name__``)."""
    ids = DOMAIN_RANGES[module.rsplit(".", 1)[-1]]
    return ids[os.getpid() % len(ids)]


def ros_environment(domain_id: int) -> dict[str, str]:
    """The environment for node processes: this venv's ROS libraries (the wheels'
    bootstrapper already set LD_LIBRARY_PATH for this process), a private domain on
    localhost, the source tree importable, unbuffered logs."""
    env = dict(os.environ)
    env.update(
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]),
        PYTHONUNBUFFERED="1",
        RCUTILS_COLORIZED_OUTPUT="0",
    )
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


class NodeProcess:
    """``python -m mobilesam_ros.ros.node --ros-args ...`` with its log in a file."""

    def __init__(self, ros_args: list[str], env: dict[str, str], log_path: Path,
                 module: str = "mobilesam_ros.ros.node") -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--ros-args", *ros_args],
            cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class Client:
    """A test-side rclpy node that publishes frames and prompts and records outputs."""

    def __init__(self, domain_id: int, name: str = "mobilesam_test_client") -> None:
        import rclpy
        from rclpy.node import Node

        from mobilesam_ros.ros.node import configure_fastdds_profile

        configure_fastdds_profile()  # as a camera driver should: large best-effort frames arrive
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(name, context=self.context)
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self._pubs: dict[str, object] = {}

    def qos(self, reliable: bool = True, depth: int = 10):
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)

    def subscribe(self, msg_type, topic: str) -> list:
        messages = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, messages.append, self.qos(True, 50))
        return messages

    def publisher(self, msg_type, topic: str, reliable: bool = True, depth: int = 10):
        key = f"{topic}:{reliable}"
        if key not in self._pubs:
            self._pubs[key] = self.node.create_publisher(msg_type, topic, self.qos(reliable, depth))
        return self._pubs[key]

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def wait_until(self, predicate, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            self.executor.spin_once(timeout_sec=0.05)
        return bool(predicate())

    def wait_matched(self, publisher, timeout: float = 20.0) -> bool:
        return self.wait_until(lambda: publisher.get_subscription_count() > 0, timeout)

    def wait_publishers(self, topics: list[str], timeout: float = 20.0) -> bool:
        ok = self.wait_until(lambda: all(self.node.count_publishers(t) > 0 for t in topics), timeout)
        self.spin_for(0.5)  # let the node's side of the match settle
        return ok

    def call(self, srv_type, name: str, request, timeout: float = 60.0):
        """Call a service (waiting for it to appear); the response, or None on timeout."""
        key = f"srv:{name}"
        if key not in self._pubs:
            self._pubs[key] = self.node.create_client(srv_type, name)
        client = self._pubs[key]
        if not self.wait_until(client.service_is_ready, min(timeout, 20.0)):
            return None
        future = client.call_async(request)
        self.wait_until(future.done, timeout)
        return future.result() if future.done() else None

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


def image_msg(pixels: np.ndarray, encoding: str, sec: int, frame_id: str = "camera", step: int | None = None,
              bigendian: bool = False):
    """numpy pixels -> sensor_msgs/Image (rows padded to ``step`` when given)."""
    import array

    from sensor_msgs.msg import Image

    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    step = rows.shape[1] if step is None else step
    data = np.zeros((height, step), np.uint8)
    data[:, : rows.shape[1]] = rows
    msg = Image(height=height, width=width, encoding=encoding, step=step, is_bigendian=int(bigendian))
    msg.data = array.array("B", data.tobytes())
    msg.header.stamp.sec = sec
    msg.header.frame_id = frame_id
    return msg


def diagnostic(messages, key: str, status: int = 0) -> str | None:
    """The newest value of ``key`` in recorded /diagnostics messages (status ``status``:
    the camera), or None when no message has it yet."""
    for msg in reversed(messages):
        if len(msg.status) > status:
            for kv in msg.status[status].values:
                if kv.key == key:
                    return kv.value
    return None


def stamps(messages) -> list[int]:
    return [m.header.stamp.sec for m in messages]
