"""MobileSAM assembled: encoder, prompt encoder, mask decoder, and the two graphs
that every runtime runs (``SamEncoder``, ``SamDecoder``; also what export writes)."""

from __future__ import annotations

import torch
from torch import nn

from ..geometry import EMBED_DIM, EMBED_SIZE, IMAGE_SIZE
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .tiny_vit import TinyViT


class Sam(nn.Module):
    """Holds the three parts under the official checkpoint's top-level names."""

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = TinyViT(img_size=IMAGE_SIZE)
        self.prompt_encoder = PromptEncoder(EMBED_DIM, (EMBED_SIZE, EMBED_SIZE), (IMAGE_SIZE, IMAGE_SIZE), 16)
        self.mask_decoder = MaskDecoder(EMBED_DIM)


class SamEncoder(nn.Module):
    """(1, 3, 1024, 1024) normalised padded image -> (1, 256, 64, 64) embedding."""

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.image_encoder = sam.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)


class SamDecoder(nn.Module):
    """Prompt encoder + mask decoder over ONE image embedding and B prompts.

    Inputs and outputs are the runtime interface's (see ``runtime/base.py``). The
    dense positional encoding is a constant computed once here, not per call.
    """

    def __init__(self, sam: Sam, num_mask_outputs: int = 4) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = sam.mask_decoder
        self.num_mask_outputs = num_mask_outputs
        with torch.no_grad():
            self.register_buffer("image_pe", self.prompt_encoder.get_dense_pe(), persistent=False)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self.prompt_encoder.embed_points(point_coords, point_labels)
        dense = self.prompt_encoder.embed_masks(mask_input, has_mask_input)
        masks, iou = self.mask_decoder(image_embeddings, self.image_pe, sparse, dense, self.num_mask_outputs)
        return iou, masks
