"""PyTorch runtime: the reference and fallback (CPU or CUDA, optional fp16).

Imports torch; only loaded when the torch backend is chosen.
"""

from __future__ import annotations

import numpy as np
import torch

from ..modeling import SamDecoder, SamEncoder, load_sam
from .base import DecoderOutput, Runtime, RuntimeUnavailable


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(self, checkpoint: str, device: str = "cpu", precision: str = "fp32", num_threads: int = 0) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeUnavailable(f"device '{device}' asked for, but this PyTorch build sees no CUDA GPU")
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16 for the torch backend, not '{precision}'")
        if precision == "fp16" and not device.startswith("cuda"):
            raise ValueError("fp16 needs a CUDA device (CPU fp16 kernels are slow or missing)")
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.precision = precision
        sam = load_sam(checkpoint)
        # the decoder captures the positional encoding of the loaded weights at build time
        self._encoder = SamEncoder(sam).eval().to(self.device, self.dtype)
        self._decoder = SamDecoder(sam, num_mask_outputs=4).eval().to(self.device, self.dtype)
        self.num_mask_outputs = 4

    def describe(self) -> str:
        return f"torch {torch.__version__} on {self.device} ({self.precision})"

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, self.dtype, non_blocking=True)

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> np.ndarray:
        embedding = self._encoder(self._tensor(image))
        return embedding.float().cpu().numpy()

    @torch.inference_mode()
    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input) -> DecoderOutput:
        iou, masks = self._decoder(
            self._tensor(image_embeddings),
            self._tensor(point_coords),
            self._tensor(point_labels),
            self._tensor(mask_input),
            self._tensor(has_mask_input),
        )
        return DecoderOutput(iou.float().cpu().numpy(), masks.float().cpu().numpy())

    def close(self) -> None:
        del self._encoder, self._decoder
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
