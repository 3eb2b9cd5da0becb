"""PyTorch runtime: CPU or CUDA, fp32 or mixed precision (fp16 / bf16).

The decoder is ``FastSamDecoder`` (``modeling/fast_decoder.py``, the formulation the
ONNX export writes: about half the per-prompt work of ``SamDecoder``, same maths);
``decoder_graph="plain"`` runs ``SamDecoder`` as is. fp16 and bf16 run under
``torch.autocast`` with fp32 weights, so LayerNorm, softmax and the reductions that
overflow in half precision stay fp32. ``compile_mode`` (off by default: not measured
to help yet; ``scripts/gpu_check.sh`` reports with and without) wraps both graphs in
``torch.compile``; its "reduce-overhead" mode replays CUDA graphs.

Imports torch; only loaded when the torch backend is chosen. Uses nothing newer than
torch 2.1 (tested with 2.11 and 2.13).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..modeling import SamDecoder, SamEncoder, load_sam
from ..modeling.fast_decoder import FastSamDecoder
from ..variants import DEFAULT_VARIANT, PROMPT_GUIDED_DECODER, check_variant
from ..weights import everything_defaults, sha256_file
from .base import DecoderOutput, Runtime, RuntimeUnavailable

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DECODER_GRAPHS = ("fast", "plain")
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune")


class TorchRuntime(Runtime):
    name = "torch"

    def __init__(self, checkpoint: str, device: str = "cpu", precision: str = "fp32", num_threads: int = 0,
                 variant: str | None = None, decoder_checkpoint: str | None = None, *,
                 decoder_graph: str = "fast", compile_mode: str | None = None) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeUnavailable(f"device '{device}' asked for, but this PyTorch build sees no CUDA GPU")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} for the torch backend, not '{precision}'")
        if precision == "fp16" and not device.startswith("cuda"):
            raise ValueError("fp16 needs a CUDA device (CPU fp16 kernels are slow or missing; bf16 runs on CPU)")
        if decoder_graph not in DECODER_GRAPHS:
            raise ValueError(f"decoder_graph must be one of {', '.join(DECODER_GRAPHS)}, not '{decoder_graph}'")
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, not '{compile_mode}'")
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.dtype = PRECISIONS[precision]  # the autocast dtype; weights and inputs stay fp32
        self.precision = precision
        self.decoder_graph = decoder_graph
        self.compile_mode = compile_mode
        self.variant = check_variant(variant)
        if decoder_checkpoint is not None and self.variant != DEFAULT_VARIANT:
            raise ValueError(f"--decoder-checkpoint is MobileSAMv2's prompt-guided decoder; it does not go with {self.variant}")
        sam = load_sam(checkpoint, decoder_checkpoint)
        if decoder_checkpoint is not None:
            self.prompt_decoder = {"kind": PROMPT_GUIDED_DECODER, "file": Path(decoder_checkpoint).name,
                                   "sha256": sha256_file(decoder_checkpoint)}
        if decoder_checkpoint is None:  # the toy-world model, recognised by its weights
            self.everything_defaults = everything_defaults(sam.state_dict())
        # the decoders capture the positional encoding (and, the fast one, re-arranged
        # projection weights) of the loaded weights at build time
        sam = sam.eval().to(self.device)
        self._encoder = SamEncoder(sam).eval()
        decoder = FastSamDecoder if decoder_graph == "fast" else SamDecoder
        self._decoder = decoder(sam, num_mask_outputs=4).eval().to(self.device)
        self.num_mask_outputs = 4
        if compile_mode is not None:
            # shapes are static per batch size: one compiled graph each (dynamic=False)
            self._encoder = torch.compile(self._encoder, mode=compile_mode, dynamic=False)
            self._decoder = torch.compile(self._decoder, mode=compile_mode, dynamic=False)

    def describe(self) -> str:
        extra = f", torch.compile {self.compile_mode}" if self.compile_mode else ""
        return f"torch {torch.__version__} on {self.device} ({self.precision}, {self.decoder_graph} decoder{extra})"

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, np.float32))
        if self.device.type == "cuda":
            tensor = tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32)

    @torch.inference_mode()
    def encode_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, 1024, 1024) float32 on the device -> fp32 embedding on the device."""
        with self._autocast():
            return self._encoder(image).float()

    @torch.inference_mode()
    def decode_tensors(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder inputs as device tensors -> (iou, low-res logits), fp32 on the device."""
        with self._autocast():
            iou, masks = self._decoder(*inputs)
        return iou.float(), masks.float()

    def encode(self, image: np.ndarray) -> np.ndarray:
        return self.encode_tensor(self._tensor(image)).cpu().numpy()

    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input) -> DecoderOutput:
        iou, masks = self.decode_tensors(*(self._tensor(a) for a in (
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input)))
        return DecoderOutput(iou.cpu().numpy(), masks.cpu().numpy())

    def close(self) -> None:
        del self._encoder, self._decoder
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
