#!/usr/bin/env bash
# Set up the environment (if needed) and run the whole test suite.
#   scripts/test.sh [pytest args...]          # e.g. scripts/test.sh -k parity
#   ROS_WHEELS=jazzy VENV=.venv-jazzy scripts/test.sh test/test_ros_*.py   # on the Jazzy wheels
# It also builds the real vision_msgs for the tests (scripts/build_vision_msgs.sh:
# about a minute the first time, cached after; needs cmake and a C/C++ compiler, else
# the tests that need it skip and say why).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VENV="${VENV:-$repo/.venv}"
"$repo/scripts/setup_env.sh"
if command -v cmake >/dev/null && command -v c++ >/dev/null && command -v make >/dev/null; then
    if ! "$repo/scripts/build_vision_msgs.sh" >/dev/null; then
        [ -n "${CI:-}" ] && exit 1
        echo "[test] the vision_msgs build failed (see above): its tests skip" >&2
    fi
else
    echo "[test] no cmake / C++ compiler / make: the real vision_msgs tests skip (apt-get install cmake g++ make)" >&2
fi
# shellcheck disable=SC1091
source "$repo/scripts/ros_env.sh" "$VENV"
# a private DDS domain so parallel runs on one machine do not hear each other
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}"
cd "$repo"
# no path arguments: setup.cfg's testpaths (test/)
# the slowest tests are listed at the end, so a test that grows is seen
exec python -m pytest -q -ra --durations=15 "$@"
