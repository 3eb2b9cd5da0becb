"""Strict, safe checkpoint loading and seeded synthetic checkpoints.

The official ``mobile_sam.pt`` is a plain state dict (439 keys). We load with
``torch.load(weights_only=True)``, which refuses pickled code, and we never load
partially: a wrong file gets an error that names what is missing, unexpected or
of the wrong shape.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..weights import MOBILE_SAM_SHA256, MOBILE_SAM_SIZE, MOBILE_SAM_URL, sha256_file
from .sam import Sam

__all__ = ["CheckpointError", "MOBILE_SAM_SHA256", "MOBILE_SAM_SIZE", "MOBILE_SAM_URL", "check_state_dict",
           "load_sam", "sha256_file", "synthetic_state_dict", "write_synthetic_checkpoint"]

_WRAPPER_KEYS = ("model", "state_dict")
_SHOW = 5  # how many names of each kind an error lists
# nn.Embedding tables (unit-variance in a synthetic checkpoint). Matching on "token" or
# "embed" alone would also catch the decoder's cross_attn_token_to_image /
# cross_attn_image_to_token projections and TinyViT's patch_embed convolutions, whose
# unscaled weights saturate the attention softmax (outputs then change by whole units
# under float reordering, e.g. ONNX Runtime vs PyTorch).
_EMBEDDING_WEIGHTS = ("point_embeddings.", "not_a_point_embed.", "no_mask_embed.", "iou_token.", "mask_tokens.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Get the official weights with "
            f"'mobilesam-ros download' or from {MOBILE_SAM_URL}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses anything that is not tensors and containers
        raise CheckpointError(
            f"{path} is a pickled Python object (for example a whole nn.Module, as Q-TinySAM's "
            "int8 checkpoint is), not a state dict. Loading it would run arbitrary code, so it is "
            "refused. If you trust the file, convert it once: python -c \"import torch; "
            f"torch.save(torch.load('{path}', weights_only=False).state_dict(), 'converted.pt')\""
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({size:,} bytes; the official "
            f"mobile_sam.pt is {MOBILE_SAM_SIZE:,} bytes): truncated or corrupt? ({exc})"
        ) from exc
    for wrapper in _WRAPPER_KEYS:
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors (found {type(obj).__name__})")
    # checkpoints saved from DataParallel prefix every key with 'module.'
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def check_state_dict(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise CheckpointError unless ``state`` has exactly the expected keys and shapes."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{source} does not match the MobileSAM layout:"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
            lines.append(f"  {len(items)} {title}: {', '.join(items[:_SHOW])}{more}")
    raise CheckpointError("\n".join(lines))


def load_sam(path: str | os.PathLike) -> Sam:
    """Build MobileSAM and load a checkpoint strictly. Returns the model in eval mode."""
    path = Path(path)
    state = _read_state_dict(path)
    sam = Sam()
    expected = sam.state_dict()
    check_state_dict(state, expected, source=str(path))
    sam.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    return sam.eval()


def synthetic_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights in the official layout, variance-preserving.

    Weights are N(0, 1/fan_in) so activations keep their scale through the network:
    the embedding depends on the image and mask logits spread over a few units, so
    tests and demos exercise real maths (the masks mean nothing, of course).
    """
    generator = torch.Generator().manual_seed(seed)
    sam = Sam()
    state = {}
    for name, tensor in sam.state_dict().items():
        if tensor.dtype == torch.int64:  # BatchNorm num_batches_tracked
            state[name] = torch.zeros_like(tensor)
            continue
        leaf = name.rsplit(".", 1)[-1]
        shape = tensor.shape
        if leaf == "running_var":
            value = 1.0 + 0.1 * torch.rand(shape, generator=generator)
        elif leaf == "running_mean":
            value = 0.05 * torch.randn(shape, generator=generator)
        elif leaf == "bias":
            value = 0.02 * torch.randn(shape, generator=generator)
        elif leaf == "attention_biases":
            value = 0.5 * torch.randn(shape, generator=generator)
        elif leaf == "weight" and len(shape) == 1:  # LayerNorm / BatchNorm scale
            value = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        elif leaf == "weight" and len(shape) >= 2 and not any(part in name for part in _EMBEDDING_WEIGHTS):
            fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
            if "output_upscaling" in name:  # ConvTranspose2d weights are (in, out, k, k)
                fan_in = shape[0]
            value = torch.randn(shape, generator=generator) / fan_in**0.5
        else:  # embeddings, tokens, the positional-encoding matrix
            value = torch.randn(shape, generator=generator)
        state[name] = value.to(tensor.dtype).contiguous()
    return state


def write_synthetic_checkpoint(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a synthetic checkpoint (plain ``torch.save(state_dict)``) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(synthetic_state_dict(seed), path)
    return path
