"""SAM's mask decoder. Module names follow the official keys under ``mask_decoder.``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import LayerNorm2d
from .transformer import TwoWayTransformer


class MLP(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == last else F.relu(layer(x))
        return x


class MaskDecoder(nn.Module):
    """Prompt tokens + image embedding -> mask logits (256x256) and predicted IoU.

    Always returns all ``num_multimask_outputs + 1`` masks in SAM's token order:
    token 0 is the single-mask output, tokens 1..3 the multimask outputs; callers
    slice. ``num_mask_outputs`` restricts the hypernetworks and IoU to the first k
    tokens (a single-mask export uses 1).
    """

    def __init__(self, transformer_dim: int = 256, num_multimask_outputs: int = 3, iou_head_depth: int = 3,
                 iou_head_hidden_dim: int = 256) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = TwoWayTransformer(depth=2, embedding_dim=transformer_dim, num_heads=8, mlp_dim=2048)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        num_mask_outputs: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image (1, C, 64, 64), pe (1, C, 64, 64), sparse (B, N, C), dense (1 or B, C, 64, 64)
        -> masks (B, K, 256, 256), iou (B, K)."""
        k = self.num_mask_tokens if num_mask_outputs is None else num_mask_outputs
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        # no repeat_interleave: the (1 or B)-batch image broadcasts inside the transformer
        src = image_embeddings + dense_prompt_embeddings
        hs, src = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : 1 + k, :]

        channels, height, width = image_embeddings.shape[1:]
        src = src.transpose(1, 2).reshape(batch, channels, height, width)
        upscaled = self.output_upscaling(src)
        hyper_in = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(k)], dim=1)
        masks = (hyper_in @ upscaled.flatten(2)).unflatten(-1, upscaled.shape[-2:])
        iou_pred = self.iou_prediction_head(iou_token_out)[:, :k]
        return masks, iou_pred
