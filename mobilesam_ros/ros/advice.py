"""Install advice that fits the setup the node runs in.

A ROS 2 install from apt (Humble, Jazzy, Kilted) gets missing ROS packages from apt;
the ROS 2 pip wheels (``scripts/setup_env.sh``: no ROS install) have no vision_msgs
wheel, and the fix there is to build it with the wheels' toolchain
(``scripts/build_vision_msgs.sh``). No rclpy import here.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import Mapping

_DISTROS = ("kilted", "jazzy", "rolling", "humble", "iron")
_BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_vision_msgs.sh"


def pip_wheels_distro() -> str | None:
    """The distribution of the ROS 2 pip wheels rclpy comes from (``ros-<distro>-rclpy``
    installed with pip), or None (a ROS install, or no rclpy)."""
    for distro in _DISTROS:
        try:
            importlib.metadata.version(f"ros-{distro}-rclpy")
        except importlib.metadata.PackageNotFoundError:
            continue
        return distro
    return None


def vision_msgs_advice(environ: Mapping[str, str] = os.environ, wheels: str | None = None,
                       build_script: Path = _BUILD_SCRIPT) -> str:
    """How to get vision_msgs here, in a few words (for the node's start-up warning).
    ``wheels``: the pip wheels' distribution (default: looked up)."""
    wheels = wheels if wheels is not None else pip_wheels_distro()
    if wheels:
        if build_script.is_file():
            script = build_script
            return (f"ROS 2 {wheels} pip wheels: build it with {script} "
                    f"and use it with: eval \"$({script} --env)\"")
        return (f"ROS 2 {wheels} pip wheels: vision_msgs has no wheel; build it with scripts/build_vision_msgs.sh "
                "of a mobilesam_ros clone")
    distro = environ.get("ROS_DISTRO") or "$ROS_DISTRO"
    return f"install it: sudo apt install ros-{distro}-vision-msgs"
