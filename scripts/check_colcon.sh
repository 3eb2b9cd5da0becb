#!/usr/bin/env bash
# The ROS 2 workspace path, as a new user takes it: a colcon workspace with this
# checkout in src/, built with `colcon build` and with `colcon build --symlink-install`;
# each install space is sourced, the installed CLI exports a model, and
# test/test_colcon_install.py runs the installed segment_node from it over DDS.
#
#   scripts/check_colcon.sh [WS_DIR]      # default: build/colcon_check (recreated)
#
# VENV: the environment whose Python has the ROS 2 wheels (default ./.venv); colcon is
# pip-installed there when missing (colcon runs setup.py with its own Python, so it
# must be the one with rclpy, as with a ROS install). CI runs this in the Jazzy venv.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$repo/.venv}"
ws="$(realpath -m "${1:-$repo/build/colcon_check}")"
log() { echo "[colcon] $*" >&2; }

# shellcheck disable=SC1091
source "$repo/scripts/ros_env.sh" "$venv"
if ! python -c 'import colcon_core, colcon_ros, colcon_bash' 2>/dev/null; then
    log "installing colcon into $venv"
    python -m pip install --disable-pip-version-check -q colcon-core colcon-ros colcon-bash \
        colcon-package-selection colcon-parallel-executor colcon-output colcon-library-path \
        colcon-python-setup-py 2>&1 | grep -v "is ignored: it is neither" >&2 || true
fi

# the workspace: this checkout's files (tracked and new, not ignored) in src/mobilesam_ros
rm -rf "$ws"
mkdir -p "$ws/src/mobilesam_ros"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -cf - -T -) | tar -xf - -C "$ws/src/mobilesam_ros"

cd "$ws"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}"
model="$ws/model"
status=0
for mode in plain symlink; do
    args=(--build-base "build-$mode" --install-base "install-$mode" --event-handlers console_cohesion+)
    [ "$mode" = symlink ] && args+=(--symlink-install)
    log "colcon build ${args[*]}"
    started=$(date +%s)
    colcon build "${args[@]}" >"$ws/colcon-$mode.log" 2>&1 \
        || { tail -40 "$ws/colcon-$mode.log" >&2; log "FAILED: colcon build ($mode)"; status=1; continue; }
    log "built ($mode) in $(( $(date +%s) - started )) s"
    (
        set +u  # colcon's setup scripts read unset variables
        # shellcheck disable=SC1091
        source "install-$mode/setup.bash"
        set -u
        if [ ! -d "$model" ]; then  # the README's next steps, with the installed CLI
            log "mobilesam-ros synthetic-checkpoint + export (installed CLI: $(command -v mobilesam-ros))"
            mobilesam-ros synthetic-checkpoint "$ws/synthetic.pt" >/dev/null
            mobilesam-ros export --checkpoint "$ws/synthetic.pt" --out "$model" >/dev/null
        fi
        cd "$ws/src/mobilesam_ros"
        MOBILESAM_COLCON_INSTALL="$ws/install-$mode" MOBILESAM_COLCON_MODEL="$model" \
            python -m pytest test/test_colcon_install.py -q -p no:cacheprovider
    ) || { log "FAILED: the $mode install space"; status=1; }
done
[ "$status" = 0 ] && log "colcon workspace OK (plain and --symlink-install): $ws"
exit "$status"
