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
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 1024
EMBED_DIM = 256
EMBED_SIZE = 64
LOW_RES_SIZE = 256

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


def empty_mask_input(batch: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Decoder inputs meaning 'no previous mask' (broadcast over the batch)."""
    del batch  # a (1, ...) mask input broadcasts to any batch
    return (
        np.zeros((1, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32),
        np.zeros((1,), np.float32),
    )
