"""Where the official weights come from and how to recognise them (no torch).

Also the toy-world model (``toy/``): recognised in a loaded checkpoint by its shipped
tensors, with the segment-everything thresholds recorded for it. The engines and the
export ask here, below them, rather than importing ``toy/`` (which builds on them).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: the official MobileSAM weights (MobileSAM GitHub repository, weights/mobile_sam.pt)
MOBILE_SAM_URL = "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt"
MOBILE_SAM_SIZE = 40_728_226
MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"

#: MobileSAMv2's prompt encoder + mask decoder (MobileSAM GitHub repository,
#: MobileSAMv2/PromptGuidedDecoder/). Its size and sha256 are not published anywhere we
#: could check, so they are None: a download is verified by its layout (it must load
#: with weights_only=True as {"PromtEncoder": ..., "MaskDecoder": ...} of SAM's shapes)
#: and its sha256 is printed and recorded in model.json, so a user can pin it.
PROMPT_GUIDED_DECODER_URL = (
    "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/MobileSAMv2/PromptGuidedDecoder/"
    "Prompt_guided_Mask_Decoder.pt"
)
PROMPT_GUIDED_DECODER_SIZE: int | None = None
PROMPT_GUIDED_DECODER_SHA256: str | None = None


@dataclass(frozen=True)
class WeightsFile:
    """A downloadable weights file: where it is, and what it must be (None: unknown)."""

    name: str
    filename: str
    url: str
    size: int | None
    sha256: str | None
    description: str


def weights_files() -> dict[str, WeightsFile]:
    """The files ``mobilesam-ros download`` knows, by name (read at call time, so the
    module constants can be replaced in tests)."""
    return {
        "mobile_sam": WeightsFile("mobile_sam", "mobile_sam.pt", MOBILE_SAM_URL, MOBILE_SAM_SIZE, MOBILE_SAM_SHA256,
                                  "MobileSAM (TinyViT encoder + SAM's decoder)"),
        "prompt_guided_decoder": WeightsFile(
            "prompt_guided_decoder", "Prompt_guided_Mask_Decoder.pt", PROMPT_GUIDED_DECODER_URL,
            PROMPT_GUIDED_DECODER_SIZE, PROMPT_GUIDED_DECODER_SHA256,
            "MobileSAMv2's prompt-guided decoder (use with mobile_sam.pt via --decoder-checkpoint)"),
    }


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


#: the toy-world model's trained tensors, shipped in the package (``toy/model.py``
#: builds the checkpoint from them)
TOY_WORLD_TENSORS = Path(__file__).parent / "toy" / "toy_world.npz"
#: segment-everything thresholds recommended for the toy-world model, per strategy (its
#: IoU head and logits are calibrated on toy scenes, not as SAM's: at SAM's 0.88 / 0.95
#: nothing passes). Measured with ``python -m mobilesam_ros.toy.calibrate_everything``
#: (docs/everything.md, "Thresholds recorded per model"); re-measure after retraining.
#: Calibration (12 scenes, 16 x 16 grid, 43 objects): recall 0.77, precision 0.83 at
#: 0.4 / 0.8 (the best recall + precision; predicted IoU 0 to 0.4 tie), 0.16 at SAM's
#: 0.88 / 0.95. Held out (10 scenes, 8 x 8 grid, 29 objects): recall 0.79, precision 0.91
#: (SAM's: 0.21).
TOY_EVERYTHING_THRESHOLDS = {
    "grid": {"pred_iou_thresh": 0.4, "stability_score_thresh": 0.8},
    "hierarchical": {"pred_iou_thresh": 0.4, "stability_score_thresh": 0.8},
}
#: small trained tensors that identify the shipped toy-world model in a loaded checkpoint
_TOY_FINGERPRINT = ("mask_decoder.iou_token.weight", "mask_decoder.iou_prediction_head.layers.2.bias")


def is_toy_model(state: dict) -> bool:
    """True when ``state`` (a loaded state dict, name -> tensor) holds the shipped toy-world
    model's trained tensors (compared exactly on a few small ones), whatever its file is called."""
    if not TOY_WORLD_TENSORS.is_file() or any(name not in state for name in _TOY_FINGERPRINT):
        return False
    with np.load(TOY_WORLD_TENSORS) as data:
        if any(name not in data.files for name in _TOY_FINGERPRINT):
            return False
        for name in _TOY_FINGERPRINT:
            ours = data[name].astype(np.float32).reshape(-1)
            theirs = state[name].detach().cpu().numpy().astype(np.float32).reshape(-1)
            if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
                return False
    return True


def everything_defaults(state: dict) -> dict | None:
    """The segment-everything thresholds recorded for the weights in ``state``: the
    toy-world model's when it is that model, else None (SAM's published ones apply)."""
    if not is_toy_model(state):
        return None
    return {strategy: dict(values) for strategy, values in TOY_EVERYTHING_THRESHOLDS.items()}
