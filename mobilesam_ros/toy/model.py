"""The toy-world model as a checkpoint in the official ``mobile_sam.pt`` layout.

A toy-world model is MobileSAM trained on synthetic shapes only (see
:mod:`mobilesam_ros.toy.train` and :mod:`mobilesam_ros.toy.finetune`): its masks
follow solid shapes on smooth backgrounds, so demos and behaviour tests mean
something without the real weights. On real images it is meaningless. It is
assembled from two parts:

* seeded random weights for every entry, regenerated with NumPy's frozen
  ``RandomState`` stream (identical on every machine and version), by the same
  rules as ``mobilesam-ros synthetic-checkpoint``: the starting point of training,
  and the values of what training never touches (the encoder's unused
  classification head);
* the trained tensors shipped in ``toy_world.npz`` beside this file, stored as
  float16 (~20 MB): the image encoder, its neck, the prompt encoder and the mask
  decoder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TOY_ENCODER_SEED = 2026
#: the entries the first training phase changes (the second trains the encoder too)
TRAINED_PREFIXES = ("image_encoder.neck.", "prompt_encoder.", "mask_decoder.")
SHIPPED = Path(__file__).with_name("toy_world.npz")
TOY_NOTICE = ("toy-world model: trained on synthetic shapes only, meaningless on real images "
              "(see docs/models.md, 'Toy-world model')")

#: segment-everything thresholds recommended for the toy-world model, per strategy (its
#: IoU head and logits are calibrated on toy scenes, not as SAM's: at SAM's 0.88 / 0.95
#: nothing passes). Measured with ``python -m mobilesam_ros.toy.calibrate_everything``
#: (docs/everything.md, "Thresholds recorded per model"); re-measure after retraining.
#: Calibration (12 scenes, 16 x 16 grid, 43 objects): recall 0.77, precision 0.83 at
#: 0.4 / 0.8 (the best recall + precision; predicted IoU 0 to 0.4 tie), 0.16 at SAM's
#: 0.88 / 0.95. Held out (10 scenes, 8 x 8 grid, 29 objects): recall 0.79, precision 0.91
#: (SAM's: 0.21).
EVERYTHING_DEFAULTS = {
    "grid": {"pred_iou_thresh": 0.4, "stability_score_thresh": 0.8},
    "hierarchical": {"pred_iou_thresh": 0.4, "stability_score_thresh": 0.8},
}
#: small trained tensors that identify the shipped toy-world model in a loaded checkpoint
_FINGERPRINT = ("mask_decoder.iou_token.weight", "mask_decoder.iou_prediction_head.layers.2.bias")


def is_toy_model(state: dict, trained: str | os.PathLike | None = None) -> bool:
    """True when ``state`` (a loaded state dict, name -> tensor) holds the shipped toy-world
    model's trained tensors (compared exactly on a few small ones), whatever its file is called."""
    source = Path(trained) if trained is not None else SHIPPED
    if not source.is_file() or any(name not in state for name in _FINGERPRINT):
        return False
    with np.load(source) as data:
        if any(name not in data.files for name in _FINGERPRINT):
            return False
        for name in _FINGERPRINT:
            ours = data[name].astype(np.float32).reshape(-1)
            theirs = state[name].detach().cpu().numpy().astype(np.float32).reshape(-1)
            if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
                return False
    return True


def everything_defaults(state: dict) -> dict | None:
    """The toy-world model's recorded everything thresholds when ``state`` is that model, else None."""
    if not is_toy_model(state):
        return None
    return {strategy: dict(values) for strategy, values in EVERYTHING_DEFAULTS.items()}


def base_state_dict(seed: int = TOY_ENCODER_SEED) -> dict:
    """Every entry of the official layout, seeded random (the untrained toy model)."""
    import torch

    from ..modeling.checkpoint import synthetic_value
    from ..modeling.sam import Sam

    stream = np.random.RandomState(seed)  # frozen stream: the encoder is the same everywhere
    state = {}
    for name, tensor in Sam().state_dict().items():
        if tensor.dtype == torch.int64:  # BatchNorm num_batches_tracked
            state[name] = torch.zeros_like(tensor)
            continue
        value = synthetic_value(name, tuple(tensor.shape),
                                lambda s: stream.standard_normal(s), lambda s: stream.random_sample(s))
        state[name] = torch.from_numpy(np.asarray(value, np.float32)).contiguous()
    return state


def save_trained(path: str | os.PathLike, trained: dict) -> Path:
    """Write the trained entries as float16 arrays (what the repository ships)."""
    path = Path(path)
    arrays = {k: v.detach().cpu().numpy().astype(np.float16) for k, v in trained.items()}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def toy_state_dict(trained: str | os.PathLike | None = None) -> dict:
    """The toy-world checkpoint's state dict: seeded encoder + trained tensors."""
    import torch

    source = Path(trained) if trained is not None else SHIPPED
    if not source.is_file():
        raise FileNotFoundError(f"the toy-world model's trained tensors are missing: {source}")
    state = base_state_dict()
    with np.load(source) as data:
        for name in data.files:
            if name not in state:
                raise ValueError(f"{source}: unexpected entry {name}")
            state[name] = torch.from_numpy(data[name].astype(np.float32)).reshape(state[name].shape)
    return state


def write_toy_checkpoint(path: str | os.PathLike, trained: str | os.PathLike | None = None) -> Path:
    """Write the toy-world checkpoint (plain ``torch.save(state_dict)``) and return its path."""
    import torch

    path = Path(path)
    state = toy_state_dict(trained)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path
