"""launch/segment.launch.py through the real `ros2 launch`, with the real `ros2`
command line (`ros2 node/topic/param/lifecycle`), as a user runs them.

The command line comes from scripts/setup_env.sh (scripts/install_ros_cli.sh: the
sources vendored beside the clone, mobilesam_ros registered in the venv's ament index).
Without it these tests skip on a developer machine and fail in CI (CI=true).

Each launch runs in its own process group and is stopped as a terminal's Ctrl-C does
(SIGINT to the group); every process it started must be gone within a few seconds.
Three launches cover the checks (one node start each, the model on ONNX Runtime):
  A  plain node, namespace + node_name + params_file + image remap: frame + click ->
     mask, `ros2 param set` accepted / refused with the reason, first log line;
  B  lifecycle:=true autostart:=false cameras:=front,rear log_level:=warn rviz:=true
     (no rviz2 here): waits unconfigured until `ros2 lifecycle set`;
  C  lifecycle:=true (autostart): reaches active by itself.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Image

from ros_harness import REPO, Client, domain_for, image_msg, ros_environment

DOMAIN = domain_for(__name__)
ROS2 = Path(sys.executable).parent / "ros2"
STOP_WITHIN = 10.0  # s: SIGINT to the group until every process is gone (measured 0.3-1.5 s)


def _need_cli() -> None:
    ok = ROS2.is_file()
    if ok:
        probe = subprocess.run([str(ROS2), "pkg", "prefix", "mobilesam_ros"], env=_env(), capture_output=True,
                               text=True, timeout=60)
        ok = probe.returncode == 0
    if not ok:
        reason = f"no ros2 command line with mobilesam_ros registered in {sys.prefix} (scripts/setup_env.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def _env() -> dict[str, str]:
    env = ros_environment(DOMAIN)
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes:  # what scripts/ros_env.sh sets
        env["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix] + prefixes)
    return env


def ros2(*args: str, timeout: float = 60.0) -> str:
    """A `ros2 ...` call (--no-daemon: nothing left running); stdout + stderr. Without
    the daemon, discovery may not have found the node within the call's spin time
    ("Node not found", nothing sent): then it is repeated, up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = subprocess.run([str(ROS2), *args], env=_env(), capture_output=True, text=True, timeout=timeout)
        out = result.stdout + result.stderr
        if "Node not found" not in out or time.monotonic() > deadline:
            return out
        time.sleep(0.3)


def ros2_until(args: list[str], expected: str | tuple[str, ...], timeout: float = 60.0) -> str:
    """Repeat a `ros2` call until its output has ``expected`` (each of them, for a tuple):
    discovery takes a moment, and entities appear in no particular order."""
    wanted = (expected,) if isinstance(expected, str) else expected
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = ros2(*args)
        if all(text in out for text in wanted):
            return out
        time.sleep(0.5)
    return out


class Launch:
    """`ros2 launch mobilesam_ros segment.launch.py ARGS` in its own process group."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([str(ROS2), "launch", "mobilesam_ros", "segment.launch.py", *args],
                                     env=_env(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 90.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log()):
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        return bool(re.search(pattern, self.log()))

    def processes(self):
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root] + root.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def interrupt(self) -> tuple[float, list[str]]:
        """SIGINT to the group (Ctrl-C); (seconds until every process that the launch
        had started is gone, those still alive after STOP_WITHIN)."""
        import psutil

        started = self.processes()
        assert len(started) >= 2, self.log()  # ros2 launch and the node
        t0 = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)

        def alive():
            out = []
            for p in started:
                try:
                    if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                        out.append(f"{p.pid} {' '.join(p.cmdline()[:3])}")
                except psutil.NoSuchProcess:
                    pass
            return out

        while alive() and time.monotonic() - t0 < STOP_WITHIN:
            time.sleep(0.05)
            self.proc.poll()
        elapsed, left = time.monotonic() - t0, alive()
        for p in started:  # never leave anything behind, even when the test fails
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        self.proc.wait(10)
        self._log.close()
        return elapsed, left


@pytest.fixture(scope="module")
def launch_a(exported_model, tmp_path_factory):
    _need_cli()
    folder = tmp_path_factory.mktemp("launch_a")
    params = yaml.safe_load((REPO / "config" / "segment.yaml").read_text())
    params["/**"]["ros__parameters"].update(min_score=0.25, backend="onnxruntime")
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    launch = Launch([f"model:={exported_model}", "namespace:=ns", "node_name:=sam", "image:=/cam/front",
                     f"params_file:={folder / 'params.yaml'}"], folder / "launch.log")
    assert launch.wait_for_log(r"\[ns\.sam\]: ready:"), launch.log()
    yield launch
    if launch.proc.poll() is None:
        launch.interrupt()


def test_launch_starts_the_node_with_its_name_namespace_params_file_and_remap(launch_a):
    log = launch_a.log()
    # the first log line is the node's own (its namespace and name), not "[mobilesam]"
    first = [line for line in log.splitlines() if "[segment_node-1]" in line and "]: " in line.split("[segment_node-1]")[1]]
    assert "[ns.sam]: Fast DDS profile in force" in first[0], log
    assert "[mobilesam]" not in log, log
    assert "/ns/sam" in ros2_until(["node", "list", "--no-daemon"], "/ns/sam")
    topics = ros2_until(["topic", "list", "--no-daemon"], "/ns/sam/mask")
    assert {"/ns/sam/mask", "/ns/sam/prompt/click"} <= set(topics.split()), topics
    # image:= remapped (with qos auto the image subscription waits for a camera to appear:
    # the frame test below publishes on /cam/front)
    assert re.search(r"\[ns\.sam\]: ready: .*images on /cam/front ", log), log
    # params_file: the file's value, not the default (0.0)
    assert "Double value is: 0.25" in ros2_until(["param", "get", "--no-daemon", "/ns/sam", "min_score"], "value is")


def test_a_frame_and_a_click_give_a_mask(launch_a):
    client = Client(DOMAIN, name="launch_test_client")
    try:
        masks = client.subscribe(Image, "/ns/sam/mask")
        camera = client.publisher(Image, "/cam/front", depth=1)
        assert client.wait_matched(camera) and client.wait_publishers(["/ns/sam/mask"])
        frame = np.random.default_rng(3).integers(0, 256, (240, 320, 3), dtype=np.uint8)
        camera.publish(image_msg(frame, "rgb8", 7, "front_optical"))

        def for_frame():
            return [m for m in masks if m.header.stamp.sec == 7]

        assert client.wait_until(lambda: len(for_frame()) >= 1, 60), launch_a.log()  # the frame, no prompt yet
        before = len(for_frame())
        out = ros2("topic", "pub", "--once", "-w", "1", "/ns/sam/prompt/click", "geometry_msgs/msg/Point",
                   "{x: 160.0, y: 120.0, z: 1.0}")
        assert "publishing #1" in out, out
        assert client.wait_until(lambda: len(for_frame()) > before, 60), launch_a.log()
        mask = for_frame()[-1]
        assert (mask.encoding, mask.width, mask.height, mask.header.frame_id) == ("mono8", 320, 240, "front_optical")
    finally:
        client.close()


def test_ros2_param_set_accepts_a_good_value_and_refuses_a_bad_one_with_the_reason(launch_a):
    ok = ros2_until(["param", "set", "--no-daemon", "/ns/sam", "min_score", "0.5"], "Set parameter")
    assert "Set parameter successful" in ok, ok
    bad = ros2("param", "set", "--no-daemon", "/ns/sam", "min_score", "2.0")
    assert "Setting parameter failed" in bad and "min_score: 2.0 is above the maximum 1.0" in bad, bad
    assert "Double value is: 0.5" in ros2("param", "get", "--no-daemon", "/ns/sam", "min_score")


def test_ctrl_c_ends_the_launch_and_its_node(launch_a):
    elapsed, left = launch_a.interrupt()
    assert not left, f"still running {elapsed:.1f} s after SIGINT: {left}\n{launch_a.log()}"
    assert re.search(r"\[segment_node-1\]: process has finished cleanly", launch_a.log()), launch_a.log()


def test_lifecycle_without_autostart_waits_for_ros2_lifecycle_set(exported_model, tmp_path):
    _need_cli()
    launch = Launch([f"model:={exported_model}", "backend:=onnxruntime", "lifecycle:=true", "autostart:=false",
                     "cameras:=front,rear", "log_level:=warn", "rviz:=true"], tmp_path / "launch.log")
    try:
        assert "unconfigured [1]" in ros2_until(["lifecycle", "get", "--no-daemon", "/mobilesam"], "unconfigured"), \
            launch.log()
        time.sleep(2.0)
        assert "unconfigured [1]" in ros2("lifecycle", "get", "--no-daemon", "/mobilesam")  # nobody configured it
        for transition in ("configure", "activate"):
            out = ros2("lifecycle", "set", "--no-daemon", "/mobilesam", transition, timeout=120)
            assert "Transitioning successful" in out, out + launch.log()
        assert "active [3]" in ros2("lifecycle", "get", "--no-daemon", "/mobilesam")
        # one node, two cameras: each reads <name>/image and publishes ~/<name>/mask
        per_camera = ("/mobilesam/front/mask", "/mobilesam/rear/mask", "/mobilesam/front/prompt/click",
                      "/mobilesam/rear/prompt/click")
        topics = set(ros2_until(["topic", "list", "--no-daemon"], per_camera).split())
        assert set(per_camera) <= topics, topics
        log = launch.log()
        assert "rviz:=true but rviz2 is not installed" in log, log  # the node starts without it
        # log_level:=warn: the node's info lines (the Fast DDS profile line first) are not printed
        assert "Fast DDS profile" not in log and "[INFO]" not in log.split("[segment_lifecycle_node-1]", 1)[-1], log
    finally:
        elapsed, left = launch.interrupt() if launch.proc.poll() is None else (0.0, [])
    assert not left, f"still running {elapsed:.1f} s after SIGINT: {left}"


def test_lifecycle_with_autostart_reaches_active_by_itself(exported_model, tmp_path):
    _need_cli()
    launch = Launch([f"model:={exported_model}", "backend:=onnxruntime", "lifecycle:=true"], tmp_path / "launch.log")
    try:
        out = ros2_until(["lifecycle", "get", "--no-daemon", "/mobilesam"], "active [3]", timeout=90)
        assert "active [3]" in out, out + launch.log()
        assert "[mobilesam]: Fast DDS profile in force" in launch.log()
    finally:
        elapsed, left = launch.interrupt() if launch.proc.poll() is None else (0.0, [])
    assert not left, f"still running {elapsed:.1f} s after SIGINT: {left}"
