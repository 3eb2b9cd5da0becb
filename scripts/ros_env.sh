# Source this file to use the pip-installed ROS 2 wheels of a virtual environment
# without the re-exec that 'import rclpy' would otherwise do to set
# LD_LIBRARY_PATH:   source scripts/ros_env.sh [VENV]
_msr_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_msr_venv="${1:-${VENV:-$_msr_repo/.venv}}"
# shellcheck disable=SC1091
. "$_msr_venv/bin/activate"
_msr_site="$("$_msr_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
_msr_ld="$_msr_venv/lib"
for _msr_d in "$_msr_site"/ros_*.libs; do
    [ -d "$_msr_d" ] && _msr_ld="$_msr_ld:$_msr_d"
done
export LD_LIBRARY_PATH="$_msr_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# tells ros-wheels-bootstrapper the path is already set (no re-exec of Python)
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
unset _msr_repo _msr_venv _msr_site _msr_ld _msr_d
