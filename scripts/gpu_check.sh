#!/usr/bin/env bash
# The GPU check in one call (see mobilesam_ros/bench/gpu_check.py): the torch backend on
# CUDA in fp32 / fp16 / bf16, and int8 (export --quantize int8: ONNX Runtime CPU, and the
# TensorRT int8 engine where tensorrt is installed; --no-int8 skips it) -> gpu_check.json in $OUT (else out/).
#   scripts/gpu_check.sh                       # on the GPU machine (~2-4 min; add --compile reduce-overhead)
#   scripts/gpu_check.sh --device cpu          # CI: small settings, same code
# Needs PyTorch (CUDA build on the GPU machine) and numpy, opencv, pillow; installs nothing.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# the project's venv when there is one (CI, this repo's machines); else the python on PATH
if [[ -z "${VIRTUAL_ENV:-}" && -f "$repo/.venv/bin/activate" && "${GPU_CHECK_SYSTEM_PYTHON:-0}" != 1 ]]; then
    # shellcheck disable=SC1091
    source "$repo/.venv/bin/activate"
fi
# a bare GPU machine may lack the package's CPU dependencies and has no internet: install
# them from wheels carried along (pip download opencv-python-headless pillow -d wheels/)
if ! python -c "import numpy, cv2, PIL" 2>/dev/null; then
    for dir in "$repo/wheels" "$repo/shared/wheels" "$repo/../shared/wheels"; do
        if compgen -G "$dir/*.whl" >/dev/null; then
            echo "gpu_check: installing missing dependencies from $dir" >&2
            python -m pip install --quiet --no-index --find-links "$dir" numpy opencv-python-headless pillow >&2 || true
            break
        fi
    done
fi
python -c "import numpy, cv2, PIL, torch" || {
    echo "gpu_check: needs numpy, opencv-python-headless, pillow and torch (see the comment above)" >&2
    exit 2
}
exec python -m mobilesam_ros.bench.gpu_check "$@"
