"""The one small interface every inference engine implements.

A runtime knows tensors, not prompts: the predictor turns prompts into decoder
inputs and decoder outputs into masks, so parity is decided once for all engines.

Tensor conventions (all numpy, float32, C-contiguous):

* encoder input  ``image``            (1, 3, 1024, 1024) normalised and zero-padded
* encoder output ``image_embeddings`` (1, 256, 64, 64)
* decoder inputs
    - ``image_embeddings`` (1, 256, 64, 64): ONE image, broadcast to every prompt
    - ``point_coords``     (B, N, 2) x, y in the 1024-pixel model-input frame
    - ``point_labels``     (B, N)  1 fg, 0 bg, -1 padding, 2 box top-left, 3 box bottom-right
    - ``mask_input``       (1 or B, 1, 256, 256) previous low-res logits
    - ``has_mask_input``   (1 or B,) 1.0 where mask_input is used, else 0.0
* decoder outputs
    - ``iou_predictions``  (B, K)
    - ``low_res_masks``    (B, K, 256, 256) logits
  where K = ``num_mask_outputs``: 4 (token 0 = single-mask output, tokens 1..3 =
  multimask outputs, SAM's order) or 1 for a single-mask decoder export.

The sizes (1024, 256, 64) are the model's geometry (``mobilesam_ros/geometry.py``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from ..geometry import EMBED_DIM, EMBED_SIZE, LOW_RES_SIZE

ENCODER_INPUT_NAMES = ("image",)
ENCODER_OUTPUT_NAMES = ("image_embeddings",)
DECODER_INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
)
DECODER_OUTPUT_NAMES = ("iou_predictions", "low_res_masks")


class RuntimeUnavailable(RuntimeError):
    """The engine (library, GPU or model file) needed by a runtime is missing."""


@dataclass(frozen=True)
class DecoderOutput:
    iou_predictions: np.ndarray  # (B, K) float32
    low_res_masks: np.ndarray  # (B, K, 256, 256) float32 logits


class Runtime(abc.ABC):
    """Encode an image, decode prompts. Create once at start-up, call per frame."""

    #: short name used on the command line and in parameters
    name: str = "base"
    #: 4 (tokens 0..3) or 1 (token 0 only)
    num_mask_outputs: int = 4
    #: which SAM this is ("mobilesam" or "tinysam", see ``variants``): decides which
    #: outputs a prompt gets (``predictor.output_tokens``)
    variant: str = "mobilesam"
    #: where the prompt encoder + mask decoder weights came from when not from the
    #: checkpoint: MobileSAMv2's prompt-guided decoder, {"kind", "file", "sha256"}
    prompt_decoder: dict | None = None
    #: segment-everything thresholds recorded for this model, per strategy:
    #: {"grid": {"pred_iou_thresh": 0.5, ...}, ...} (model.json's "everything"; for a
    #: checkpoint, the toy-world model's when it is that model); None: SAM's published ones.
    #: Thresholds set explicitly (CLI, node parameters) win over these.
    everything_defaults: dict | None = None

    @abc.abstractmethod
    def encode(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, 1024, 1024) float32 -> (1, 256, 64, 64) float32."""

    @abc.abstractmethod
    def decode(
        self,
        image_embeddings: np.ndarray,
        point_coords: np.ndarray,
        point_labels: np.ndarray,
        mask_input: np.ndarray,
        has_mask_input: np.ndarray,
    ) -> DecoderOutput:
        """Decode B prompts of N points each against one embedding."""

    def describe(self) -> str:
        """One line for logs: engine, device, precision."""
        return self.name

    def close(self) -> None:
        """Release engine resources (GPU memory, sessions)."""


def empty_mask_input() -> tuple[np.ndarray, np.ndarray]:
    """Decoder inputs meaning 'no previous mask' (a (1, ...) mask input broadcasts to any batch)."""
    return (
        np.zeros((1, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32),
        np.zeros((1,), np.float32),
    )


def check_decoder_inputs(image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
    """The decoder inputs as C-contiguous float32 arrays (no copy when they already
    are), ``has_mask_input`` flattened; ValueError for shapes a decoder cannot take."""
    embedding = np.ascontiguousarray(image_embeddings, np.float32)
    coords = np.ascontiguousarray(point_coords, np.float32)
    labels = np.ascontiguousarray(point_labels, np.float32)
    mask_input = np.ascontiguousarray(mask_input, np.float32)
    has_mask_input = np.ascontiguousarray(has_mask_input, np.float32).reshape(-1)
    if embedding.shape != (1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE):
        raise ValueError(f"image_embeddings must be (1, {EMBED_DIM}, {EMBED_SIZE}, {EMBED_SIZE}), got {embedding.shape}")
    if coords.ndim != 3 or coords.shape[2] != 2 or labels.shape != coords.shape[:2]:
        raise ValueError(f"point_coords (B, N, 2) and point_labels (B, N) expected, got {coords.shape}, {labels.shape}")
    batch = coords.shape[0]
    if mask_input.shape[1:] != (1, LOW_RES_SIZE, LOW_RES_SIZE) or mask_input.shape[0] not in (1, batch):
        raise ValueError(f"mask_input must be (1 or {batch}, 1, 256, 256), got {mask_input.shape}")
    if has_mask_input.shape[0] != mask_input.shape[0]:
        raise ValueError(f"has_mask_input must have {mask_input.shape[0]} entries, got {has_mask_input.shape[0]}")
    return embedding, coords, labels, mask_input, has_mask_input


def thread_output_buffers(local, batch: int, num_mask_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoder output buffers (iou (B, K), logits (B, K, 256, 256)) kept on ``local``
    (a ``threading.local``): allocated once per thread, grown for a larger batch."""
    masks = getattr(local, "masks", None)
    if masks is None or masks.shape[0] < batch:
        local.iou = np.empty((batch, num_mask_outputs), np.float32)
        local.masks = np.empty((batch, num_mask_outputs, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
    return local.iou[:batch], local.masks[:batch]


#: what a model may record per everything strategy (model.json "everything")
EVERYTHING_DEFAULT_KEYS = ("pred_iou_thresh", "stability_score_thresh")
EVERYTHING_STRATEGIES = ("boxes", "grid", "hierarchical")


def check_everything_defaults(value, source: str) -> dict | None:
    """model.json's ``"everything"`` entry -> {strategy: {threshold: float}}, or None when
    absent. Raises ValueError naming ``source`` for anything else."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{source}: 'everything' must be an object {{strategy: {{threshold: value}}}}")
    out: dict = {}
    for strategy, values in value.items():
        if strategy in ("note", "source"):  # free text about where the values come from
            continue
        if strategy not in EVERYTHING_STRATEGIES or not isinstance(values, dict):
            raise ValueError(f"{source}: 'everything' has {strategy!r}; expected {', '.join(EVERYTHING_STRATEGIES)} "
                             "with an object of thresholds each")
        out[strategy] = {}
        for key, number in values.items():
            if key not in EVERYTHING_DEFAULT_KEYS:
                raise ValueError(f"{source}: everything.{strategy}.{key} is not one of {', '.join(EVERYTHING_DEFAULT_KEYS)}")
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0.0 <= number <= 1.0:
                raise ValueError(f"{source}: everything.{strategy}.{key} must be a number in [0, 1], got {number!r}")
            out[strategy][key] = float(number)
    return out
