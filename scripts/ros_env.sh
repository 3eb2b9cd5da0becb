# Source this file to use the pip-installed ROS 2 wheels of a virtual environment
# without the re-exec that 'import rclpy' would otherwise do to set
# LD_LIBRARY_PATH:   source scripts/ros_env.sh [VENV]
_msr_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_msr_venv="${1:-${VENV:-$_msr_repo/.venv}}"
_msr_venv="$(cd "$_msr_venv" && pwd)"
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
# the venv is an ament prefix: the wheels' packages, and mobilesam_ros with the ros2
# command line where scripts/setup_env.sh installed it (ros2 launch / run find it there)
case ":${AMENT_PREFIX_PATH:-}:" in
    *":$_msr_venv:"*) ;;
    *) export AMENT_PREFIX_PATH="$_msr_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;;
esac
unset _msr_repo _msr_venv _msr_site _msr_ld _msr_d
