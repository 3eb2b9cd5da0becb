"""Start-up work of the segment node (never per frame): the model loaded and warmed,
segment-everything set up, the optional vision_msgs. Every failure is one
:class:`StartupError` with a clear message."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..live.config import NodeConfig, model_help

Log = Callable[[str, str], None]  # (level, message)


class StartupError(RuntimeError):
    """The node cannot start (bad parameters, missing model): one clear message."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def import_vision_msgs():
    """vision_msgs.msg, or None where it is not installed (the node runs without it)."""
    try:
        return importlib.import_module("vision_msgs.msg")
    except ImportError:
        return None


def open_runtime(cfg: NodeConfig):
    """The model of the ``model`` parameter on its backend."""
    from ..runtime import create_runtime

    model = str(Path(cfg["model"]).expanduser())
    try:
        decoder = cfg["decoder_checkpoint"].strip()
        return create_runtime(model, cfg["backend"], device=cfg["device"], precision=cfg["precision"],
                              num_threads=cfg["num_threads"],
                              variant=None if cfg["variant"] == "auto" else cfg["variant"],
                              decoder_checkpoint=str(Path(decoder).expanduser()) if decoder else None)
    except Exception as exc:  # any loading failure is one clear start-up error
        text = _first_line(exc)
        hint = "" if "mobilesam-ros" in text else f"; {model_help()}"
        raise StartupError(f"cannot load model '{model}' (backend {cfg['backend']}): {text}{hint}") from exc


def warm_up(runtime, cfg: NodeConfig, log: Log) -> None:
    """One encode of a blank image at configure: engines that build or allocate on
    their first call (TensorRT, CUDA) do it here, not on the first camera frame."""
    t0 = time.perf_counter()
    try:
        runtime.encode(np.zeros((1, 3, 1024, 1024), np.float32))
    except Exception as exc:  # a model that loads but cannot run is a start-up error
        raise StartupError(f"model '{cfg['model']}' loaded but its first encode failed: {_first_line(exc)}") from exc
    log("debug", f"warm-up encode {time.perf_counter() - t0:.2f} s")


def open_everything(cfg: NodeConfig, predictor, log: Log) -> Any:
    """The segment-everything segmenter of the everything.* parameters (and its detector)."""
    try:
        from ..everything import EverythingConfig, EverythingSegmenter, ObjectDiscovery
    except ImportError as exc:
        raise StartupError(f"mode everything is unavailable in this build: {exc}") from exc
    try:
        config = EverythingConfig(**cfg.everything_options())
        detector = None
        if cfg["everything.detector"]:
            detector = ObjectDiscovery(
                str(Path(cfg["everything.detector"]).expanduser()), conf=config.detector_conf,
                iou=config.detector_iou, max_det=config.max_det, num_threads=cfg["num_threads"],
            )
    except Exception as exc:
        raise StartupError(f"cannot set up segment-everything: {exc}") from exc
    if config.strategy == "boxes" and detector is None:
        log("info", "everything.strategy boxes without a detector: boxes come from ~/prompt/boxes")
    return EverythingSegmenter(predictor, config, detector)
