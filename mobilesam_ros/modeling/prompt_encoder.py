"""SAM's prompt encoder: points, box corners and a low-res mask -> embeddings.

Module names follow the official keys under ``prompt_encoder.``. Prompts are
embedded arithmetically from labels (no boolean-index assignment), which is the
same maths as the reference but exports to ONNX cleanly and batches.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import LayerNorm2d


class PositionEmbeddingRandom(nn.Module):
    """Positional encoding with random spatial frequencies (a checkpoint buffer)."""

    def __init__(self, num_pos_feats: int = 128) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: torch.Tensor) -> torch.Tensor:
        """Coordinates normalised to [0, 1], (..., 2) -> (..., 2 * num_pos_feats)."""
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of an h x w grid -> (C, h, w)."""
        height, width = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((height, width), device=device, dtype=torch.float32)
        y_embed = (grid.cumsum(dim=0) - 0.5) / height
        x_embed = (grid.cumsum(dim=1) - 0.5) / width
        pe = self._pe_encoding(torch.stack([x_embed, y_embed], dim=-1))
        return pe.permute(2, 0, 1)


class PromptEncoder(nn.Module):
    #: label values (SAM's): -1 padding, 0 background, 1 foreground, 2 / 3 box corners
    num_point_embeddings = 4

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings)])
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, C, 64, 64) positional encoding of the image embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, N, 2) coords in the 1024 input frame, (B, N) labels -> (B, N, C).

        Box corners are points labelled 2 and 3; padding points are labelled -1 and
        get only the 'not a point' embedding, as in the reference.
        """
        coords = coords + 0.5  # centre of the pixel
        height, width = self.input_image_size
        scale = torch.tensor([1.0 / width, 1.0 / height], dtype=coords.dtype, device=coords.device)
        embedding = self.pe_layer._pe_encoding(coords * scale)
        labels = labels.unsqueeze(-1)
        embedding = embedding * (labels != -1).to(embedding.dtype)
        embedding = embedding + self.not_a_point_embed.weight * (labels == -1).to(embedding.dtype)
        for i, point_embedding in enumerate(self.point_embeddings):
            embedding = embedding + point_embedding.weight * (labels == i).to(embedding.dtype)
        return embedding

    def embed_masks(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        """(M, 1, 256, 256) logits, (M,) flags -> (M, C, 64, 64) dense embedding.

        Where the flag is 0 the result is exactly ``no_mask_embed`` broadcast.
        """
        has_mask = has_mask_input.reshape(-1, 1, 1, 1).to(mask_input.dtype)
        downscaled = self.mask_downscaling(mask_input)
        no_mask = self.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask * downscaled + (1 - has_mask) * no_mask
