"""Strict, safe checkpoint loading and seeded synthetic checkpoints.

The official ``mobile_sam.pt`` is a plain state dict (439 keys). We load with
``torch.load(weights_only=True)``, which refuses pickled code, and we never load
partially: a wrong file gets an error that names what is missing, unexpected or
of the wrong shape.
"""

from __future__ import annotations

import io
import os
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

import torch

from ..errors import CheckpointError
from ..weights import MOBILE_SAM_SHA256, MOBILE_SAM_SIZE, MOBILE_SAM_URL, PROMPT_GUIDED_DECODER_URL, sha256_file
from .sam import Sam

__all__ = ["CheckpointError", "MOBILE_SAM_SHA256", "MOBILE_SAM_SIZE", "MOBILE_SAM_URL", "check_state_dict",
           "load_sam", "read_prompt_guided_decoder", "sha256_file", "synthetic_state_dict", "write_synthetic_checkpoint"]

_WRAPPER_KEYS = ("model", "state_dict")
_SHOW = 5  # how many names of each kind an error lists
# nn.Embedding tables (unit-variance in a synthetic checkpoint). Matching on "token" or
# "embed" alone would also catch the decoder's cross_attn_token_to_image /
# cross_attn_image_to_token projections and TinyViT's patch_embed convolutions, whose
# unscaled weights saturate the attention softmax (outputs then change by whole units
# under float reordering, e.g. ONNX Runtime vs PyTorch).
_EMBEDDING_WEIGHTS = ("point_embeddings.", "not_a_point_embed.", "no_mask_embed.", "iou_token.", "mask_tokens.")


# globals a plain tensor checkpoint's pickle refers to (torch's own rebuild helpers,
# storages, dtypes, OrderedDict); anything else is a pickled Python object
_TENSOR_GLOBALS = re.compile(
    r"^(collections\.OrderedDict|torch\._utils\._rebuild_\w+|torch\.\w*Storage|torch\.storage\.\w+|"
    r"torch\.(device|Size|dtype|float\d*|bfloat16|half|int\d*|uint8|bool|long|double)|_codecs\.encode|"
    r"torch\._tensor\._rebuild_from_type_v2|torch\.Tensor|torch\.nn\.parameter\.Parameter)$"
)
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING", "STRING"}
_MAX_PICKLE = 64 << 20  # a checkpoint's object pickle is small (tensors live in separate records)


def _pickle_globals(data: bytes | BinaryIO, count: int = 1) -> list[str]:
    """The classes/functions named by ``count`` consecutive pickles, read with
    ``pickletools.genops``: it parses opcodes and never runs or imports anything.
    Raises ValueError (or another parse error) when the bytes are not a pickle."""
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    names: list[str] = []
    for _ in range(count):
        strings: list[str] = []
        for opcode, arg, _pos in pickletools.genops(stream):
            if opcode.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            elif opcode.name in _STRING_OPS:
                strings.append(str(arg))
    return names


def _pickled_objects(path: Path) -> list[str] | None:
    """What a file that ``weights_only`` refused holds, decided without unpickling it:
    the names of the non-tensor classes/functions its pickle would import (a pickled
    module), [] when it parses as a tensor checkpoint, None when it is not a
    readable PyTorch file at all (corrupt, truncated, text, random bytes)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next((n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
                if member is None or archive.getinfo(member).file_size > _MAX_PICKLE:
                    return None
                names = _pickle_globals(archive.read(member))
        else:  # legacy format: magic number, protocol, sys info, then the object
            with open(path, "rb") as f:
                names = _pickle_globals(f, count=4)
    except Exception:  # noqa: BLE001 - any parse failure means: not a PyTorch file
        return None
    return sorted({n for n in names if not _TENSOR_GLOBALS.match(n)})


def _load_tensors(path: Path, what: str = "checkpoint"):
    """``torch.load(weights_only=True)`` with an error that says what the file is."""
    if not path.is_file():
        hint = (
            f"'mobilesam-ros download prompt_guided_decoder' or from {PROMPT_GUIDED_DECODER_URL}"
            if what == "decoder checkpoint"
            else f"'mobilesam-ros download' or from {MOBILE_SAM_URL}"
        )
        raise CheckpointError(f"{what} not found: {path}. Get the official weights with {hint}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about odd "protocols" in random bytes
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file; classify it ourselves
        error = exc
    objects = _pickled_objects(path)
    size = path.stat().st_size
    if objects:
        shown = ", ".join(objects[:3]) + (f" (+{len(objects) - 3} more)" if len(objects) > 3 else "")
        raise CheckpointError(
            f"{path} holds pickled Python objects ({shown}), not a state dict of tensors. Loading it would "
            "run arbitrary code from the file, so it is refused. Q-TinySAM's int8 checkpoint is such a file "
            "(a whole module of simulated-quantisation layers): run the fp32 TinySAM checkpoint instead "
            "(--variant tinysam); real int8 speed needs a proper int8 export (e.g. an int8-calibrated TensorRT "
            "engine, which this package does not build yet), not that file. For another file whose source you "
            "trust, save its state_dict() once with your own PyTorch and load that"
        ) from error
    # not a pickle at all (None), or a tensor pickle torch could not read (a missing or cut
    # record): corrupt either way. torch's own message is not shown: for some bytes it
    # advises loading with weights_only=False, which is wrong advice for a broken file.
    detail = "" if objects is None else f", {type(error).__name__}"
    official = "" if what == "decoder checkpoint" else f"; the official mobile_sam.pt is {MOBILE_SAM_SIZE:,} bytes"
    raise CheckpointError(
        f"{path} is not a PyTorch checkpoint: truncated or corrupt, or another kind of file ({size:,} "
        f"bytes{detail}{official})"
    ) from error


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    obj = _load_tensors(path)
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


def read_prompt_guided_decoder(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """MobileSAMv2's ``Prompt_guided_Mask_Decoder.pt`` -> {"prompt_encoder": sd, "mask_decoder": sd}.

    The authors save ``{"PromtEncoder": state_dict, "MaskDecoder": state_dict}`` (their
    spelling), keys relative to each module. Loaded with ``weights_only=True``; a file
    of another layout is refused with its missing and unexpected top-level keys.
    """
    path = Path(path)
    obj = _load_tensors(path, what="decoder checkpoint")
    parts = {"PromtEncoder": "prompt_encoder", "MaskDecoder": "mask_decoder"}
    keys = list(obj) if isinstance(obj, dict) else []
    missing = [k for k in parts if k not in keys]
    unexpected = [str(k) for k in keys if k not in parts]
    if not isinstance(obj, dict) or missing or unexpected:
        found = f"found {type(obj).__name__}" if not isinstance(obj, dict) else "; ".join(
            f"{len(items)} {title}: {', '.join(items[:_SHOW])}{f' (+{len(items) - _SHOW} more)' if len(items) > _SHOW else ''}"
            for title, items in (("missing keys", missing), ("unexpected keys", unexpected))
            if items
        )
        raise CheckpointError(
            f"{path} is not MobileSAMv2's prompt-guided decoder (a dict with 'PromtEncoder' and 'MaskDecoder' "
            f"state dicts, as in Prompt_guided_Mask_Decoder.pt): {found}"
        )
    out = {}
    for key, name in parts.items():
        state = obj[key]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: '{key}' does not hold a state dict of tensors")
        out[name] = state
    return out


def load_sam(path: str | os.PathLike, decoder_checkpoint: str | os.PathLike | None = None) -> Sam:
    """Build MobileSAM and load a checkpoint strictly. Returns the model in eval mode.

    ``decoder_checkpoint``: MobileSAMv2's ``Prompt_guided_Mask_Decoder.pt``, whose prompt
    encoder and mask decoder replace the checkpoint's (the image encoder stays the
    checkpoint's, e.g. MobileSAM's TinyViT), each loaded strictly.
    """
    path = Path(path)
    state = _read_state_dict(path)
    sam = Sam()
    expected = sam.state_dict()
    check_state_dict(state, expected, source=str(path))
    sam.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
    if decoder_checkpoint is not None:
        decoder = read_prompt_guided_decoder(decoder_checkpoint)
        for name, part_state in decoder.items():
            module = getattr(sam, name)
            part_expected = module.state_dict()
            source = f"{decoder_checkpoint} ({'PromtEncoder' if name == 'prompt_encoder' else 'MaskDecoder'})"
            check_state_dict(part_state, part_expected, source=source)
            module.load_state_dict({k: v.to(part_expected[k].dtype) for k, v in part_state.items()}, strict=True)
    return sam.eval()


def synthetic_value(name: str, shape: tuple[int, ...], randn: Callable, rand: Callable) -> torch.Tensor:
    """The seeded random value of one checkpoint entry, variance-preserving.

    Weights are N(0, 1/fan_in) so activations keep their scale through the network:
    the embedding depends on the image and mask logits spread over a few units.
    ``randn(shape)`` / ``rand(shape)`` draw standard normal / uniform float tensors, so
    the same rules serve torch's generator and NumPy's frozen ``RandomState`` (the
    toy-world model regenerates its encoder with the latter, identically everywhere).
    """
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 1.0 + 0.1 * rand(shape)
    if leaf == "running_mean":
        return 0.05 * randn(shape)
    if leaf == "bias":
        return 0.02 * randn(shape)
    if leaf == "attention_biases":
        return 0.5 * randn(shape)
    if leaf == "weight" and len(shape) == 1:  # LayerNorm / BatchNorm scale
        return 1.0 + 0.1 * randn(shape)
    if leaf == "weight" and len(shape) >= 2 and not any(part in name for part in _EMBEDDING_WEIGHTS):
        fan_in = shape[1] * (shape[2] * shape[3] if len(shape) == 4 else 1)
        if "output_upscaling" in name:  # ConvTranspose2d weights are (in, out, k, k)
            fan_in = shape[0]
        return randn(shape) / fan_in**0.5
    return randn(shape)  # embeddings, tokens, the positional-encoding matrix


def synthetic_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights in the official layout (see :func:`synthetic_value`):
    tests and demos exercise real maths (the masks mean nothing, of course)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in Sam().state_dict().items():
        if tensor.dtype == torch.int64:  # BatchNorm num_batches_tracked
            state[name] = torch.zeros_like(tensor)
            continue
        value = synthetic_value(name, tuple(tensor.shape), lambda s: torch.randn(s, generator=generator),
                                lambda s: torch.rand(s, generator=generator))
        state[name] = value.to(tensor.dtype).contiguous()
    return state


def write_synthetic_checkpoint(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a synthetic checkpoint (plain ``torch.save(state_dict)``) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(synthetic_state_dict(seed), path)
    return path
