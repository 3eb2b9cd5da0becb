"""The Fast DDS profile goes into the variable the installed Fast DDS reads (2.x:
FASTRTPS_DEFAULT_PROFILES_FILE, 3.x: FASTDDS_DEFAULT_PROFILES_FILE), found from what is
installed: the pip wheels never set ROS_DISTRO (on the Jazzy wheels the profile used to
be silently skipped: best-effort 640x480 frames 30/50 instead of 50/50)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from mobilesam_ros.ros import fastdds
from mobilesam_ros.ros.fastdds import VARIABLE_2, VARIABLE_3, configure_fastdds_profile, fastdds_major

PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_frames.xml"


def _pip_wheels(monkeypatch, installed: dict[str, str]):
    """Pretend exactly these pip distributions are installed (name -> version)."""
    def version(name):
        if name in installed:
            return installed[name]
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(fastdds.importlib.metadata, "version", version)


def test_jazzy_pip_wheels_get_the_fastdds2_variable_without_ros_distro(monkeypatch):
    _pip_wheels(monkeypatch, {"ros-fastrtps": "2.14.5"})
    env = {}
    choice = configure_fastdds_profile(env, profile=PROFILE)
    assert env == {VARIABLE_2: str(PROFILE)}
    assert choice and choice.path == str(PROFILE) and not choice.warning
    assert "in force" in choice.message and VARIABLE_2 in choice.message and "2.x" in choice.message


def test_kilted_pip_wheels_get_the_fastdds3_variable(monkeypatch):
    _pip_wheels(monkeypatch, {"ros-fastdds": "3.2.3"})
    env = {"ROS_DISTRO": "humble"}  # what is installed wins over a stale ROS_DISTRO
    configure_fastdds_profile(env, profile=PROFILE)
    assert env == {"ROS_DISTRO": "humble", VARIABLE_3: str(PROFILE)}


def test_ros_install_is_recognised_by_its_ament_index(monkeypatch, tmp_path):
    _pip_wheels(monkeypatch, {})
    for package, variable in (("fastrtps", VARIABLE_2), ("fastdds", VARIABLE_3)):
        prefix = tmp_path / package
        index = prefix / "share" / "ament_index" / "resource_index" / "packages"
        index.mkdir(parents=True)
        (index / package).write_text("")
        env = {"AMENT_PREFIX_PATH": str(prefix)}
        assert fastdds_major(env)[0] == (2 if package == "fastrtps" else 3)
        configure_fastdds_profile(env, profile=PROFILE)
        assert env.get(variable) == str(PROFILE) and len(env) == 2


def test_ros_distro_then_both_variables_when_nothing_tells(monkeypatch):
    _pip_wheels(monkeypatch, {})
    env = {"ROS_DISTRO": "jazzy"}
    configure_fastdds_profile(env, profile=PROFILE)
    assert VARIABLE_2 in env and VARIABLE_3 not in env
    env = {}
    choice = configure_fastdds_profile(env, profile=PROFILE)
    assert env == {VARIABLE_2: str(PROFILE), VARIABLE_3: str(PROFILE)}
    assert "unknown" in choice.message


def test_a_users_profile_in_the_variable_fastdds_ignores_is_copied_with_a_warning(monkeypatch):
    _pip_wheels(monkeypatch, {"ros-fastrtps": "2.14.5"})
    env = {VARIABLE_3: "/etc/mine.xml"}  # what the README used to say for every distro
    choice = configure_fastdds_profile(env, profile=PROFILE)
    assert env == {VARIABLE_3: "/etc/mine.xml", VARIABLE_2: "/etc/mine.xml"}
    assert choice.warning and choice.path == "/etc/mine.xml" and "not read" in choice.message


@pytest.mark.parametrize("env", [{VARIABLE_2: "mine.xml"}, {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
                                 {"MOBILESAM_FASTDDS_PROFILE": "0"}])
def test_left_alone(monkeypatch, env):
    _pip_wheels(monkeypatch, {"ros-fastrtps": "2.14.5"})
    before = dict(env)
    choice = configure_fastdds_profile(env, profile=PROFILE)
    assert env == before
    assert (choice.path == "mine.xml") if VARIABLE_2 in env else not choice


def test_this_environment_is_detected():
    """The real wheels here: their Fast DDS version is found (no ROS_DISTRO needed)."""
    pytest.importorskip("rclpy")
    major, found = fastdds_major({})
    assert major in (2, 3), found
