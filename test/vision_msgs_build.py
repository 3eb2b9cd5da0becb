"""Put the vision_msgs built by scripts/build_vision_msgs.sh on this process's path.

vision_msgs is not on pip: scripts/build_vision_msgs.sh builds the 4.x messages with the
ROS 2 pip wheels' toolchain into build/vision_msgs/<distro>-py3X/install (or
$VISION_MSGS_PREFIX). ``activate()`` (called by conftest before anything imports
rclpy) makes that build importable here and in every node process the tests start:

* ``sys.path`` gets its site-packages (``PYTHONPATH`` too, for child processes);
* its libraries are preloaded: the RMW looks up a package's typesupport library by
  file name (``dlopen("libvision_msgs__rosidl_typesupport_fastrtps_c.so")``), which
  the dynamic loader resolves against already-loaded libraries, but not against an
  ``LD_LIBRARY_PATH`` changed after the process started;
* ``LD_LIBRARY_PATH`` and ``AMENT_PREFIX_PATH`` get its lib/ and prefix for children.

A ROS install's own vision_msgs (``import vision_msgs`` works already) is left alone.
``MOBILESAM_VISION_MSGS=0`` turns this off (the tests then use stand-ins or skip).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = REPO / "scripts" / "build_vision_msgs.sh"

_active: Path | None = None


def _distro() -> str | None:
    for distro in ("kilted", "jazzy", "rolling", "humble"):
        try:
            importlib.metadata.version(f"ros-{distro}-rclpy")
            return distro
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def default_prefix() -> Path | None:
    """Where scripts/build_vision_msgs.sh installs for this Python and these wheels."""
    if os.environ.get("VISION_MSGS_PREFIX"):
        return Path(os.environ["VISION_MSGS_PREFIX"])
    distro = _distro()
    if distro is None:
        return None
    return REPO / "build" / "vision_msgs" / f"{distro}-py{sys.version_info[0]}{sys.version_info[1]}" / "install"


def built_prefix() -> Path | None:
    """The finished build for this interpreter, or None (never built, or half-built)."""
    prefix = default_prefix()
    if prefix is None or not (prefix / ".build_key").is_file():
        return None
    return prefix


def _prepend(variable: str, value: str) -> None:
    parts = [p for p in os.environ.get(variable, "").split(os.pathsep) if p and p != value]
    os.environ[variable] = os.pathsep.join([value] + parts)


def activate() -> Path | None:
    """Make the built vision_msgs importable (idempotent). Returns its prefix, or None
    when it is off, not built, or a vision_msgs is importable already (a ROS install)."""
    global _active
    if _active is not None:
        return _active
    if os.environ.get("MOBILESAM_VISION_MSGS", "1") == "0":
        return None
    prefix = built_prefix()
    if prefix is None:
        return None
    if "vision_msgs" not in sys.modules and importlib.util.find_spec("vision_msgs") is not None:
        return None  # a real install is on the path: use it
    site = next(iter(sorted((prefix / "lib").glob("python3*/site-packages"))), None)
    if site is None:
        return None
    # dependencies first: the typesupport libraries link the generator libraries
    libs = sorted((prefix / "lib").glob("libvision_msgs__*.so"), key=lambda p: ("generator" not in p.name, p.name))
    try:
        for lib in libs:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
    except OSError:  # the ROS libraries are not on this process's library path
        return None
    sys.path.insert(0, str(site))
    _prepend("PYTHONPATH", str(site))
    _prepend("LD_LIBRARY_PATH", str(prefix / "lib"))
    _prepend("AMENT_PREFIX_PATH", str(prefix))
    _active = prefix
    return prefix


def unavailable_reason() -> str:
    """Why the real vision_msgs is not available here (for skip messages)."""
    if os.environ.get("MOBILESAM_VISION_MSGS", "1") == "0":
        return "MOBILESAM_VISION_MSGS=0"
    prefix = default_prefix()
    if prefix is None:
        return "no ROS 2 pip wheels (ros-<distro>-rclpy) in this environment"
    return (f"vision_msgs is not built for this environment ({prefix} missing): run "
            f"scripts/build_vision_msgs.sh (needs cmake and a C/C++ compiler; scripts/test.sh runs it)")


def require_module() -> None:
    """For a test module that needs the real vision_msgs types: activate our build (or
    use a ROS install's own package); otherwise skip the module with the reason (in CI,
    which builds them, a failure: ci_skips.py)."""
    import pytest

    if activate() is not None:
        return
    try:
        import vision_msgs.msg  # noqa: F401  (a ROS install's own package)
    except ImportError:
        pytest.skip(unavailable_reason(), allow_module_level=True)
