#!/usr/bin/env bash
# Create (or update) the project's virtual environment with everything a user or
# CI needs and no ROS install: the package itself, PyTorch (CPU build pinned to
# 2.13.0; export and the torch backend), ONNX Runtime, the ROS 2 Kilted pip wheels,
# the test tools, and (scripts/install_ros_cli.sh) the ros2 command line where its
# sources are vendored beside the clone. Then: source scripts/ros_env.sh
#
#   scripts/setup_env.sh            # creates ./.venv
#   VENV=/path/to/venv scripts/setup_env.sh
#   ROS_WHEELS=jazzy VENV=.venv-jazzy scripts/setup_env.sh   # the ROS 2 Jazzy wheels instead
#
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
ros_wheels="${ROS_WHEELS:-kilted}"
case "$ros_wheels" in
    kilted) ros_extra=ros ;;
    jazzy) ros_extra=ros-jazzy ;;
    *) echo "error: ROS_WHEELS must be kilted or jazzy (got $ros_wheels)" >&2; exit 2 ;;
esac

"$python" - <<'PY' || { echo "error: Python 3.10 to 3.12 is required (found $("$python" --version 2>&1))" >&2; exit 1; }
import sys
sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)
PY

if [ ! -x "$venv/bin/python" ]; then
    echo "[setup] creating virtual environment $venv" >&2
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
echo "[setup] installing PyTorch 2.13.0 (CPU build where available)" >&2
"${pip[@]}" "torch==2.13.0"
echo "[setup] installing mobilesam_ros with the ROS 2 $ros_wheels pip wheels, export and test extras" >&2
"${pip[@]}" -e "$repo[export,$ros_extra,test]"
# the ROS 2 command line (ros2 launch / run / topic / param / lifecycle) from the sources
# vendored beside the clone (../shared/vendor/ros2-launch-cli), and mobilesam_ros
# registered in the venv's ament index; without those sources it says how to run the node
VENV="$venv" "$repo/scripts/install_ros_cli.sh"
echo "[setup] ready: $venv" >&2
