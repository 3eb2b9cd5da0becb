#!/usr/bin/env bash
# Set up the environment (if needed) and run the whole test suite.
#   scripts/test.sh [pytest args...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$repo/scripts/setup_env.sh"
# shellcheck disable=SC1091
source "$repo/scripts/ros_env.sh"
# a private DDS domain so parallel runs on one machine do not hear each other
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}"
cd "$repo"
exec python -m pytest test -q -ra "$@"
