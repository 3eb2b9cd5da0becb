"""Which Fast DDS XML profile a process uses, and through which variable.

The node (and the test clients, as a camera driver should) load
config/fastdds_large_frames.xml: a larger shared-memory segment, so camera-sized
images reach best-effort subscribers on the same machine.

Fast DDS reads the profile path from an environment variable whose name changed with
its major version: 2.x (Humble, Jazzy) reads only ``FASTRTPS_DEFAULT_PROFILES_FILE``,
3.x (Kilted and later) only ``FASTDDS_DEFAULT_PROFILES_FILE``. The version is taken
from what is installed (the pip wheels never set ``ROS_DISTRO``): the pip
distribution that carries the library (``ros-fastdds`` 3.x, ``ros-fastrtps`` 2.x), or
the ament index of a ROS install (package ``fastdds`` since 3.0, ``fastrtps`` before),
then ``ROS_DISTRO``; when none tells, both variables are set. No rclpy import here.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import MutableMapping

PROFILE_NAME = "fastdds_large_frames.xml"
VARIABLE_3 = "FASTDDS_DEFAULT_PROFILES_FILE"
VARIABLE_2 = "FASTRTPS_DEFAULT_PROFILES_FILE"
#: distributions that ship Fast DDS 2.x
FASTDDS2_DISTROS = ("foxy", "galactic", "humble", "iron", "jazzy")
_FASTDDS_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")


@dataclass(frozen=True)
class ProfileChoice:
    """What configure_fastdds_profile() decided: the profile file in force (None: Fast
    DDS defaults), the variables set or found, and one line for the log."""

    path: str | None
    variables: tuple[str, ...]
    message: str
    warning: bool = False

    def __bool__(self) -> bool:
        return self.path is not None


def fastdds_major(environ: MutableMapping[str, str] = os.environ) -> tuple[int | None, str]:
    """(major version of the installed Fast DDS or None, how it was found)."""
    for dist in ("ros-fastdds", "ros-fastrtps"):  # the ROS 2 pip wheels
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        try:
            return int(version.split(".")[0]), f"pip {dist} {version}"
        except ValueError:
            continue
    for prefix in filter(None, environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):  # a ROS install
        index = Path(prefix) / "share" / "ament_index" / "resource_index" / "packages"
        if (index / "fastdds").is_file():
            return 3, f"package fastdds in {prefix}"
        if (index / "fastrtps").is_file():
            return 2, f"package fastrtps in {prefix}"
    distro = environ.get("ROS_DISTRO", "")
    if distro:
        return (2 if distro in FASTDDS2_DISTROS else 3), f"ROS_DISTRO={distro}"
    return None, "Fast DDS version unknown"


def find_profile() -> Path | None:
    """config/fastdds_large_frames.xml: the installed share dir, or the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("mobilesam_ros")) / "config" / PROFILE_NAME)
    except Exception:  # noqa: BLE001 - not installed through ament (pip, source tree)
        pass
    candidates.append(Path(sys.prefix) / "share" / "mobilesam_ros" / "config" / PROFILE_NAME)
    candidates.append(Path(__file__).resolve().parents[2] / "config" / PROFILE_NAME)
    return next((c for c in candidates if c.is_file()), None)


def configure_fastdds_profile(environ: MutableMapping[str, str] = os.environ,
                              profile: Path | None = None) -> ProfileChoice:
    """Point Fast DDS at config/fastdds_large_frames.xml for this process, through the
    variable the installed Fast DDS reads. Must run before rclpy.init().

    Left alone: another RMW, ``MOBILESAM_FASTDDS_PROFILE=0``, or a profile the user set
    in the variable this Fast DDS reads. A user's profile in the *other* variable (which
    this Fast DDS would silently ignore) is copied into the right one, with a warning.
    """
    rmw = environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    if rmw not in _FASTDDS_RMWS:
        return ProfileChoice(None, (), f"Fast DDS profile: not used (RMW_IMPLEMENTATION={rmw})")
    major, found = fastdds_major(environ)
    wanted = {2: (VARIABLE_2,), 3: (VARIABLE_3,)}.get(major, (VARIABLE_3, VARIABLE_2))
    version = f"Fast DDS {major}.x ({found})" if major else found
    users = [v for v in (VARIABLE_3, VARIABLE_2) if environ.get(v)]
    if users:
        read = [v for v in users if v in wanted]
        if read:
            return ProfileChoice(environ[read[0]], tuple(read),
                                 f"Fast DDS profile in force: {environ[read[0]]} (yours, {read[0]}; {version})")
        path = environ[users[0]]
        for variable in wanted:
            environ[variable] = path
        return ProfileChoice(path, wanted, f"Fast DDS profile in force: {path} ({users[0]} is not read by "
                                           f"{version}: copied to {', '.join(wanted)})", warning=True)
    if environ.get("MOBILESAM_FASTDDS_PROFILE", "1") == "0":
        return ProfileChoice(None, (), "Fast DDS profile: none (MOBILESAM_FASTDDS_PROFILE=0): Fast DDS defaults")
    path = profile or find_profile()
    if path is None:
        return ProfileChoice(None, (), f"Fast DDS profile: {PROFILE_NAME} not found: Fast DDS defaults "
                                       "(large best-effort frames may not arrive)", warning=True)
    for variable in wanted:
        environ[variable] = str(path)
    return ProfileChoice(str(path), wanted, f"Fast DDS profile in force: {path} ({', '.join(wanted)}; {version})")
