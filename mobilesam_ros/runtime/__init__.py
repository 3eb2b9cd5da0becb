"""Inference engines behind one interface (``Runtime``), chosen by name or by what
is installed. Engine modules are imported lazily: the ROS runtime path never
imports torch unless the torch backend is asked for."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .base import DecoderOutput, Runtime, RuntimeUnavailable

BACKENDS = ("auto", "onnxruntime", "tensorrt", "torch")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve_backend(model: str | Path, backend: str = "auto") -> str:
    """Which engine runs ``model`` (a checkpoint file or an exported model directory)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend '{backend}', choose one of {', '.join(BACKENDS)}")
    path = Path(model)
    is_checkpoint = path.suffix in CHECKPOINT_SUFFIXES
    if backend == "auto":
        if is_checkpoint:
            return "torch"
        if _has("tensorrt") and (path / "encoder.onnx").exists() and _cuda_visible():
            return "tensorrt"
        return "onnxruntime"
    if is_checkpoint and backend != "torch":
        raise ValueError(
            f"backend '{backend}' runs an exported model directory, not the checkpoint {path}: "
            f"run 'mobilesam-ros export --checkpoint {path} --out DIR' and pass DIR"
        )
    if not is_checkpoint and backend == "torch":
        raise ValueError(f"the torch backend needs a checkpoint file (.pt/.pth), not {path}")
    return backend


def _cuda_visible() -> bool:
    return Path("/dev/nvidia0").exists() or Path("/dev/nvhost-ctrl").exists()  # desktop / Jetson


def create_runtime(
    model: str | Path,
    backend: str = "auto",
    device: str = "cpu",
    precision: str = "fp32",
    num_threads: int = 0,
    **options,
) -> Runtime:
    """Build the engine once at start-up. ``options`` go to the engine (cache dirs, ...)."""
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(
            f"model not found: {path}. Pass a MobileSAM checkpoint (mobile_sam.pt; get it with "
            "'mobilesam-ros download') or a directory written by 'mobilesam-ros export'"
        )
    chosen = resolve_backend(path, backend)
    if chosen == "torch":
        if not _has("torch"):
            raise RuntimeUnavailable("the torch backend needs PyTorch: pip install 'mobilesam_ros[export]'")
        from .torch_backend import TorchRuntime

        return TorchRuntime(str(path), device=device, precision=precision, num_threads=num_threads)
    if chosen == "onnxruntime":
        from .onnx_backend import OnnxRuntime

        return OnnxRuntime(path, device=device, precision=precision, num_threads=num_threads, **options)
    from .tensorrt_backend import TensorRTRuntime

    # TensorRT runs on a GPU only; the CPU default of the other engines means "the first GPU"
    gpu = "cuda" if device == "cpu" else device
    return TensorRTRuntime(path, precision=precision, device=gpu, **options)


__all__ = ["BACKENDS", "DecoderOutput", "Runtime", "RuntimeUnavailable", "create_runtime", "resolve_backend"]
