"""The package as colcon installs it: run by scripts/check_colcon.sh once per install
space (``colcon build`` and ``colcon build --symlink-install``) with that space sourced
and MOBILESAM_COLCON_INSTALL=<install base>. Skipped otherwise.

The installed ``segment_node`` (the file ``ros2 run mobilesam_ros segment_node`` runs)
starts from outside the source tree, finds its share directory through the ament
index, loads an exported model, serves a frame over DDS and exits 0 on SIGINT; the
``mobilesam-ros`` CLI is on PATH.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

INSTALL = os.environ.get("MOBILESAM_COLCON_INSTALL")
if not INSTALL:
    pytest.skip("run by scripts/check_colcon.sh against a colcon install space (MOBILESAM_COLCON_INSTALL)",
                allow_module_level=True)
rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Image

from ros_harness import Client, domain_for, image_msg

PREFIX = Path(INSTALL).resolve() / "mobilesam_ros"
DOMAIN = domain_for(__name__)


def test_cli_on_path_and_package_found_through_the_ament_index(tmp_path):
    cli = shutil.which("mobilesam-ros")
    assert cli and Path(cli).resolve().parent == (PREFIX / "bin").resolve(), cli
    assert (PREFIX / "lib" / "mobilesam_ros" / "mobilesam-ros").is_file()  # ros2 run mobilesam_ros mobilesam-ros
    out = subprocess.run([cli, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and "segment" in out.stdout, out.stderr
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("mobilesam_ros"))
    assert share == PREFIX / "share" / "mobilesam_ros"
    for name in ("package.xml", "launch/segment.launch.py", "config/segment.yaml", "config/fastdds_large_frames.xml"):
        assert (share / name).is_file(), name
    # a process outside the source tree imports the workspace's copy (install space, or
    # build/ with --symlink-install), not a pip-installed one
    where = subprocess.run(["python", "-c", "import mobilesam_ros; print(mobilesam_ros.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60).stdout.strip()
    assert Path(where).is_relative_to(Path(INSTALL).resolve().parent), where
    # package data: the toy-world model's tensors travel with the package
    source = Path(__file__).resolve().parents[1] / "mobilesam_ros" / "toy"
    for npz in source.glob("*.npz"):
        assert (Path(where).parent / "toy" / npz.name).is_file(), npz.name


@pytest.fixture(scope="module")
def model(request) -> Path:
    """The model the check script exported with the installed CLI, else the session's."""
    if os.environ.get("MOBILESAM_COLCON_MODEL"):
        return Path(os.environ["MOBILESAM_COLCON_MODEL"])
    return request.getfixturevalue("exported_model")


def test_installed_segment_node_serves_a_frame_and_stops_on_sigint(model, tmp_path):
    executable = PREFIX / "lib" / "mobilesam_ros" / "segment_node"
    assert executable.is_file()
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    for variable in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(variable, None)  # the node picks the installed profile itself
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(executable), "--ros-args", "-p", f"model:={model}",
                                 "-p", "backend:=onnxruntime", "-r", "image:=/colcon/image"],
                                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    client = Client(DOMAIN, name="colcon_test_client")
    try:
        deadline = time.monotonic() + 90
        while "ready:" not in log_path.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "ready:" in log_path.read_text(), log_path.read_text()
        labels = client.subscribe(Image, "/mobilesam/labels")
        image = client.publisher(Image, "/colcon/image", depth=1)
        assert client.wait_matched(image) and client.wait_publishers(["/mobilesam/labels"])
        image.publish(image_msg(np.zeros((120, 160, 3), np.uint8), "rgb8", 42))
        assert client.wait_until(lambda: any(m.header.stamp.sec == 42 for m in labels), 60), log_path.read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        client.close()
    text = log_path.read_text()
    assert "Traceback" not in text and "RCLError" not in text, text
    # the profile comes from the install space's share directory, through the right variable
    assert f"Fast DDS profile in force: {PREFIX / 'share' / 'mobilesam_ros' / 'config'}" in text, text
