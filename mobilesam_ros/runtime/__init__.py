"""Inference engines behind one interface (``Runtime``), chosen by name or by what
is installed. Engine modules are imported lazily: the ROS runtime path never
imports torch unless the torch backend is asked for."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..variants import check_variant
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
    variant: str | None = None,
    decoder_checkpoint: str | Path | None = None,
    **options,
) -> Runtime:
    """Build the engine once at start-up. ``options`` go to the engine (cache dirs, ...).

    ``variant`` (``variants.VARIANTS``): for a checkpoint, which SAM it is (default
    MobileSAM); an exported model records it in model.json, and a different one given
    here is an error. ``decoder_checkpoint``: MobileSAMv2's prompt-guided decoder, combined
    with a checkpoint's image encoder (torch); an exported model has it built in.
    """
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(
            f"model not found: {path}. Pass a MobileSAM checkpoint (mobile_sam.pt; get it with "
            "'mobilesam-ros download') or a directory written by 'mobilesam-ros export'"
        )
    if variant is not None:
        check_variant(variant)
    chosen = resolve_backend(path, backend)
    if chosen == "torch":
        if not _has("torch"):
            raise RuntimeUnavailable("the torch backend needs PyTorch: pip install 'mobilesam_ros[export]'")
        from .torch_backend import TorchRuntime

        return TorchRuntime(str(path), device=device, precision=precision, num_threads=num_threads,
                            variant=variant, decoder_checkpoint=None if decoder_checkpoint is None else str(decoder_checkpoint))
    if decoder_checkpoint is not None:
        raise ValueError(
            f"{path} is an exported model: its decoder is fixed at export. Export with "
            f"'mobilesam-ros export --checkpoint CKPT --decoder-checkpoint {decoder_checkpoint} --out DIR' "
            "(or pass the checkpoint itself to the torch backend)"
        )
    if chosen == "onnxruntime":
        from .onnx_backend import OnnxRuntime

        runtime = OnnxRuntime(path, device=device, precision=precision, num_threads=num_threads, **options)
    else:
        from .tensorrt_backend import TensorRTRuntime

        # TensorRT runs on a GPU only; the CPU default of the other engines means "the first GPU"
        gpu = "cuda" if device == "cpu" else device
        runtime = TensorRTRuntime(path, precision=precision, device=gpu, **options)
    if variant is not None and variant != runtime.variant:
        runtime.close()
        raise ValueError(
            f"{path} was exported as {runtime.variant} (model.json), not {variant}: drop the variant or "
            f"re-export with 'mobilesam-ros export --variant {variant}'"
        )
    return runtime


__all__ = ["BACKENDS", "DecoderOutput", "Runtime", "RuntimeUnavailable", "create_runtime", "resolve_backend"]
