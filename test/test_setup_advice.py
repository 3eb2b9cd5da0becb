"""What the package says to its user fits what it does and the setup it runs in:
the vision_msgs advice (pip wheels: scripts/build_vision_msgs.sh; a ROS install: apt),
`demo --help`'s default model, the node's missing-model hint, the README's precision list.
(The node's first log line under its own name and level: test_launch_real.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from mobilesam_ros.cli import build_parser
from mobilesam_ros.live.config import model_help
from mobilesam_ros.ros.advice import pip_wheels_distro, vision_msgs_advice

REPO = Path(__file__).resolve().parents[1]


def test_vision_msgs_advice_in_the_pip_setup_is_the_build_script():
    advice = vision_msgs_advice(wheels="kilted")
    script = REPO / "scripts" / "build_vision_msgs.sh"
    assert f"{script} --env" in advice and "apt" not in advice, advice
    # a pip install without the clone's scripts still names the script, not apt
    advice = vision_msgs_advice(wheels="jazzy", build_script=Path("/nonexistent/build_vision_msgs.sh"))
    assert "build_vision_msgs.sh" in advice and "apt" not in advice, advice


def test_vision_msgs_advice_with_a_ros_install_is_apt():
    assert vision_msgs_advice({"ROS_DISTRO": "humble"}, wheels="") == \
        "install it: sudo apt install ros-humble-vision-msgs"
    assert "ros-$ROS_DISTRO-vision-msgs" in vision_msgs_advice({}, wheels="")


def test_this_venv_is_recognised_as_the_pip_setup():
    import importlib.metadata as md

    wheels = [d for d in ("kilted", "jazzy") if _installed(md, f"ros-{d}-rclpy")]
    assert pip_wheels_distro() == (wheels[0] if wheels else None)


def _installed(md, name: str) -> bool:
    try:
        md.version(name)
        return True
    except md.PackageNotFoundError:
        return False


def test_demo_help_says_its_default_is_the_toy_world_model():
    out = subprocess.run([sys.executable, "-m", "mobilesam_ros.cli", "demo", "--help"], capture_output=True,
                         text=True, timeout=120, cwd=REPO).stdout
    help_text = " ".join(out.split())
    assert "else the toy-world model" in help_text and "synthetic checkpoint" not in help_text, out


def test_missing_model_hint_offers_the_toy_world_model():
    hint = model_help()
    assert "mobilesam-ros synthetic-checkpoint --toy" in hint and "random weights" not in hint, hint


def test_readme_precision_list_is_what_the_cli_offers():
    parser = build_parser("segment")
    segment = parser._subparsers._group_actions[0].choices["segment"]
    (precision,) = [a for a in segment._actions if "--precision" in a.option_strings]
    readme = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")  # the segment options table
    row = re.search(r"`--precision ([a-z0-9\\|]+)`, `--threads N`", readme)
    assert row, "docs/cli.md's segment options table lost its --precision row"
    assert row.group(1).split("\\|") == list(precision.choices)
