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

from ..weights import TOY_WORLD_TENSORS

TOY_ENCODER_SEED = 2026
#: the entries the first training phase changes (the second trains the encoder too)
TRAINED_PREFIXES = ("image_encoder.neck.", "prompt_encoder.", "mask_decoder.")
SHIPPED = TOY_WORLD_TENSORS  # weights.py recognises a loaded toy-world model by these tensors
TOY_NOTICE = ("toy-world model: trained on synthetic shapes only, meaningless on real images "
              "(see docs/models.md, 'Toy-world model')")

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
