#!/usr/bin/env bash
# Build the vision_msgs 4.x interfaces (interfaces/vision_msgs: the 16 messages of
# Humble/Jazzy's vision_msgs, same type hashes) for the ROS 2 pip wheels of a virtual
# environment. vision_msgs is not on pip; the wheels carry the rosidl/ament_cmake
# toolchain, so this installs it (pip) and builds with the machine's cmake and C/C++
# compiler (~1 min on 2 cores). Cached: a second run with the same sources, Python
# and ROS wheels prints the prefix and returns at once. Safe to run concurrently.
#
#   scripts/build_vision_msgs.sh              # build (or reuse); prints the install prefix
#   scripts/build_vision_msgs.sh --env        # ... and prints the shell exports to use it:
#   eval "$(scripts/build_vision_msgs.sh --env)"
#
# Environment: VENV (default ./.venv; the active one if VIRTUAL_ENV is set),
# VISION_MSGS_PREFIX (default build/vision_msgs/<distro>-<python>/install).
# The tests find the build through test/vision_msgs_build.py (same default prefix).
# With a ROS install, use its ros-$ROS_DISTRO-vision-msgs instead of this.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-${VIRTUAL_ENV:-$repo/.venv}}"
python="$venv/bin/python"
print_env=0
case "${1:-}" in
    --env) print_env=1 ;;
    "") ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
esac
log() { echo "[vision_msgs] $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

[ -x "$python" ] || die "no virtual environment at $venv (run scripts/setup_env.sh, or set VENV)"
for tool in cmake cc c++ make; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian/Ubuntu: apt-get install cmake g++ make)"
done

# which ROS 2 pip wheels the venv has (ros-<distro>-rclpy), and the Python version
read -r distro pytag rclpy_version < <("$python" - <<'PY'
import importlib.metadata as md, sys
for distro in ("kilted", "jazzy", "rolling", "humble"):
    try:
        version = md.version(f"ros-{distro}-rclpy")
    except md.PackageNotFoundError:
        continue
    print(distro, f"py{sys.version_info[0]}{sys.version_info[1]}", version)
    break
else:
    print("none", "none", "none")
PY
)
[ "$distro" != none ] || die "no ROS 2 pip wheels (ros-<distro>-rclpy) in $venv (pip install -e '.[ros]')"

prefix="${VISION_MSGS_PREFIX:-$repo/build/vision_msgs/$distro-$pytag/install}"
sources=("$repo/interfaces/vision_msgs" "$repo/scripts/cmake/pip_wheel_includes.cmake" "$repo/scripts/build_vision_msgs.sh")
key="$( { echo "$distro $pytag rclpy=$rclpy_version"; "$python" -c 'import sys; print(sys.executable, sys.version)';
          find "${sources[@]}" -type f -print0 | sort -z | xargs -0 sha256sum | sed "s#$repo/##"; } | sha256sum | cut -d' ' -f1)"

print_result() {
    if [ "$print_env" = 1 ]; then
        site="$(cd "$prefix" && ls -d lib/python3*/site-packages)"
        echo "export PYTHONPATH=\"$prefix/$site\${PYTHONPATH:+:\$PYTHONPATH}\""
        echo "export LD_LIBRARY_PATH=\"$prefix/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
        echo "export AMENT_PREFIX_PATH=\"$prefix\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}\""
    else
        echo "$prefix"
    fi
}

mkdir -p "$(dirname "$prefix")"
exec 9>"$(dirname "$prefix")/.lock"
flock 9  # one build at a time per prefix; a waiting run then finds the cache
if [ -f "$prefix/.build_key" ] && [ "$(cat "$prefix/.build_key")" = "$key" ]; then
    log "up to date: $prefix"
    print_result
    exit 0
fi

started=$(date +%s)
toolchain=(ament-cmake ament-cmake-include-directories ament-cmake-ros ament-package
           rosidl-default-generators rosidl-core-generators)
# what each distribution's CMake configs also look for (found by configuring with the list above)
case "$distro" in
    kilted) toolchain+=(ament-cmake-ros-core) ;;
    jazzy) toolchain+=(ament-cmake-gmock ament-cmake-gtest ament-cmake-pytest python-cmake-module) ;;
esac
log "installing the rosidl/ament_cmake toolchain (ros-$distro-* pip wheels)"
"$python" -m pip install --disable-pip-version-check -q "${toolchain[@]/#/ros-$distro-}" catkin_pkg empy lark 2>&1 \
    | grep -v "is ignored: it is neither" >&2 || true
"$python" -c 'import ament_package, catkin_pkg, numpy' 2>/dev/null || die "toolchain install failed (see pip's messages above)"

work="$(dirname "$prefix")/work"
rm -rf "$work" "$prefix"  # the key is written last: a half-built prefix is rebuilt
mkdir -p "$work"
site="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ldpath="$venv/lib"
for d in "$site"/ros_*.libs; do [ -d "$d" ] && ldpath="$ldpath:$d"; done
log "configuring (cmake) in $work"
(
    export LD_LIBRARY_PATH="$ldpath${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export AMENT_PREFIX_PATH="$venv" _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 PATH="$venv/bin:$PATH"
    # CMAKE_PROJECT_INCLUDE: points the wheels' manylinux include paths at this Python's.
    # RPATH $ORIGIN: the Python extensions find the package's own libraries without
    # LD_LIBRARY_PATH (the RMW's typesupport lookup still needs it, or a preload).
    cmake -S "$repo/interfaces/vision_msgs" -B "$work" \
        -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
        -DCMAKE_PREFIX_PATH="$venv" -DCMAKE_INSTALL_PREFIX="$prefix" \
        -DPython3_EXECUTABLE="$python" \
        -DCMAKE_PROJECT_INCLUDE="$repo/scripts/cmake/pip_wheel_includes.cmake" \
        -DCMAKE_INSTALL_RPATH='$ORIGIN;$ORIGIN/../../..' >"$work/configure.log" 2>&1 \
        || { tail -40 "$work/configure.log" >&2; echo "error: cmake configure failed (log: $work/configure.log)" >&2; exit 1; }
    log "building 16 messages (C, C++, Python typesupport; about a minute on 2 cores)"
    cmake --build "$work" -j "$(nproc)" >"$work/build.log" 2>&1 \
        || { tail -40 "$work/build.log" >&2; echo "error: build failed (log: $work/build.log)" >&2; exit 1; }
    cmake --install "$work" >"$work/install.log" 2>&1 \
        || { tail -20 "$work/install.log" >&2; echo "error: install failed" >&2; exit 1; }
)
echo "$key" >"$prefix/.build_key"
rm -rf "$work"
log "built in $(( $(date +%s) - started )) s: $prefix"
print_result
