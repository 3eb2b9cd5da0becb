"""The fast decoder formulation, shared by the ONNX export and the torch backend.

``FastSamDecoder`` has ``SamDecoder``'s inputs and outputs and the same maths (and so
the reference's), rewritten so that the per-prompt work is about half:

* attention against the 4096 image tokens is re-associated so the big
  ``(4096 x 256) @ (256 x 128)`` projections of per-prompt image tokens never run.
  With T (about 7) prompt tokens, ``softmax(q Wq (k Wk)^T)`` is computed as
  ``softmax((q Wq Wk^T) k^T)`` and ``softmax(.) (v Wv)`` as ``(softmax(.) v) Wv``
  (rows of a softmax sum to one, so the value bias passes through), and the
  image-to-token output projection is folded into the T token values. Every
  product keeps a 4096-long dimension against a ~56-wide one instead of 128
  or 256 wide;
* the query bias of token-to-image attention is dropped: it adds a constant along
  the softmax axis (exactly no change);
* the two stride-2 2x2 transposed convolutions run as plain MatMuls on the
  token layout (no NCHW transposes), and the sub-pixel interleave happens once,
  on the K mask outputs only;
* the final token-to-image attention runs only for the tokens whose outputs are
  used (IoU token and the K mask tokens).

The layer-0 image projections stay shared by all prompts (the embedding is
broadcast, never repeated: no Tile, no OneHot). The result equals ``SamDecoder``
within float rounding (~1e-5 on logits). ``export.py`` writes it as the default
ONNX decoder graph; ``runtime/torch_backend.py`` runs it on CPU or CUDA.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import EMBED_SIZE, LOW_RES_SIZE


def _heads_out_in(linear: nn.Linear, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear(in, out) -> weight (heads, out/heads, in), bias (heads, out/heads)."""
    w = linear.weight.detach()
    b = linear.bias.detach()
    return w.reshape(heads, -1, w.shape[1]).clone(), b.reshape(heads, -1).clone()


class _TokenToImage(nn.Module):
    """Attention of T prompt tokens (queries) over the 4096 image tokens.

    Standard: ``softmax(Q K^T / sqrt(d)) V`` with ``K = k Wk^T + bk``, ``V = v Wv^T + bv``
    over per-prompt image tokens. Here ``Q_h Wk_h`` (T x 256 per head) multiplies the
    image tokens directly, and the attention-weighted image tokens are projected by
    ``Wv_h`` afterwards. The ``Q_h . bk_h`` term is constant along the softmax axis
    and is left out.
    """

    def __init__(self, attn, shared_image: bool) -> None:
        super().__init__()
        self.heads = attn.num_heads
        self.shared_image = shared_image
        self.attn = attn  # keeps q_proj, out_proj (and k/v for the shared form)
        head_dim = attn.internal_dim // attn.num_heads
        self.scale = 1.0 / math.sqrt(head_dim)
        wk, _ = _heads_out_in(attn.k_proj, self.heads)  # (h, d, C)
        wv, bv = _heads_out_in(attn.v_proj, self.heads)  # (h, d, C)
        self.register_buffer("wk", wk * self.scale, persistent=False)
        self.register_buffer("wv_t", wv.transpose(1, 2).contiguous(), persistent=False)  # (h, C, d)
        self.register_buffer("bv", bv.reshape(1, self.heads, 1, -1), persistent=False)  # (1, h, 1, d)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (B, T, C) prompt tokens; k, v (1 or B, 4096, C) image tokens -> (B, T, C)."""
        if self.shared_image:
            return self.attn(q, k, v)  # k, v projections computed once for all prompts
        batch, tokens, _ = q.shape
        qp = self.attn.q_proj(q).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, h, T, d)
        a = (qp @ self.wk).flatten(1, 2)  # (B, h*T, C)
        scores = torch.softmax(a @ k.transpose(1, 2), dim=-1)  # (B, h*T, 4096)
        weighted = (scores @ v).unflatten(1, (self.heads, -1))  # (B, h, T, C)
        out = weighted @ self.wv_t + self.bv  # (B, h, T, d)
        return self.attn.out_proj(out.transpose(1, 2).flatten(2))


class _ImageToToken(nn.Module):
    """Attention of the 4096 image tokens (queries) over the T prompt tokens.

    The output projection is folded into the T values (``V_h Wo_h``, T x 256 per
    head), so the per-image-token work is one (4096 x hT) @ (hT x 256) product. For
    per-prompt image tokens (``shared_image=False``) the query projection is folded
    into the keys as well (``Wq_h^T K_h``, 256 x T per head).
    """

    def __init__(self, attn, shared_image: bool) -> None:
        super().__init__()
        self.heads = attn.num_heads
        self.shared_image = shared_image
        self.attn = attn
        head_dim = attn.internal_dim // attn.num_heads
        self.scale = 1.0 / math.sqrt(head_dim)
        wq, bq = _heads_out_in(attn.q_proj, self.heads)  # (h, d, C), (h, d)
        self.register_buffer("wq", wq * self.scale, persistent=False)
        self.register_buffer("bq", (bq * self.scale).reshape(1, self.heads, 1, -1), persistent=False)
        wo = attn.out_proj.weight.detach()  # (C, h*d)
        self.register_buffer(
            "wo_heads", wo.t().reshape(self.heads, -1, wo.shape[0]).contiguous(), persistent=False
        )  # (h, d, C)
        # each head's attention rows sum to one, so adding bo / heads to every folded
        # value row adds exactly bo to the output: no separate (4096 x C) bias pass
        self.register_buffer("bo", attn.out_proj.bias.detach().clone() / self.heads, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q (1 or B, 4096, C) image tokens; k, v (B, T, C) prompt tokens -> (B, 4096, C)."""
        kp = self.attn.k_proj(k).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, h, T, d)
        vp = self.attn.v_proj(v).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, h, T, d)
        if self.shared_image:
            qp = self.attn.q_proj(q).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (1, h, 4096, d)
            scores = (qp @ kp.transpose(-1, -2)) * self.scale  # (B, h, 4096, T)
            scores = torch.softmax(scores, dim=-1).permute(0, 2, 1, 3)  # (B, 4096, h, T)
        else:
            folded = (kp @ self.wq).flatten(1, 2)  # (B, h*T, C)
            bias = (kp * self.bq).sum(-1).flatten(1).unsqueeze(1)  # (B, 1, h*T)
            scores = q @ folded.transpose(1, 2) + bias  # (B, 4096, h*T)
            scores = torch.softmax(scores.unflatten(-1, (self.heads, -1)), dim=-1)  # (B, 4096, h, T)
        values = (vp @ self.wo_heads + self.bo).flatten(1, 2)  # (B, h*T, C)
        return scores.flatten(2) @ values


def _fast_block(block: nn.Module, shared_image: bool) -> nn.Module:
    """The model's own TwoWayAttentionBlock (same forward, same parameters) with its
    two cross-attentions swapped for the re-associated ones."""
    fast = copy.copy(block)
    fast._modules = dict(block._modules)  # its own module table: the model stays as it was
    fast.cross_attn_token_to_image = _TokenToImage(block.cross_attn_token_to_image, shared_image)
    fast.cross_attn_image_to_token = _ImageToToken(block.cross_attn_image_to_token, shared_image)
    return fast


class FastSamDecoder(nn.Module):
    """``SamDecoder``'s inputs and outputs, re-associated for speed (see the module doc).

    Built from a loaded ``Sam``; it shares (does not copy) the modules' parameters,
    plus a few re-arranged copies of projection weights as buffers.
    """

    def __init__(self, sam, num_mask_outputs: int = 4) -> None:
        super().__init__()
        if num_mask_outputs not in (1, 4):
            raise ValueError("num_mask_outputs must be 4 or 1")
        self.k = num_mask_outputs
        self.prompt_encoder = sam.prompt_encoder
        md = sam.mask_decoder
        self.md = md
        tr = md.transformer
        if len(tr.layers) != 2:
            raise ValueError("FastSamDecoder expects SAM's 2-layer two-way transformer")
        self.blocks = nn.ModuleList(
            [_fast_block(tr.layers[0], shared_image=True), _fast_block(tr.layers[1], shared_image=False)]
        )
        self.final = _TokenToImage(tr.final_attn_token_to_image, shared_image=False)
        self.norm_final = tr.norm_final_attn
        with torch.no_grad():
            pe = self.prompt_encoder.get_dense_pe()  # (1, C, 64, 64)
            self.register_buffer("key_pe", pe.flatten(2).transpose(1, 2).contiguous(), persistent=False)
            up1, ln1, _, up2, _ = md.output_upscaling
            # ConvTranspose2d weight (in, out, kh, kw) -> (in, kh*kw*out): column (i*2+j)*out + o
            w1 = up1.weight.detach()
            self.register_buffer("w1", w1.permute(0, 2, 3, 1).reshape(w1.shape[0], -1).contiguous(), persistent=False)
            self.register_buffer("b1", up1.bias.detach().repeat(4), persistent=False)
            w2 = up2.weight.detach()
            self.register_buffer("w2", w2.permute(0, 2, 3, 1).reshape(w2.shape[0], -1).contiguous(), persistent=False)
            self.register_buffer("b2", up2.bias.detach().repeat(4), persistent=False)
            self.ln1 = ln1  # LayerNorm2d over the 64 channels
            tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0)
            self.register_buffer("output_tokens", tokens.detach().unsqueeze(0).clone(), persistent=False)
        self.c1 = w1.shape[1]
        self.c2 = w2.shape[1]

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        sparse = self.prompt_encoder.embed_points(point_coords, point_labels)  # (B, N, C)
        dense = self.prompt_encoder.embed_masks(mask_input, has_mask_input)  # (1 or B, C, 64, 64)
        batch = sparse.shape[0]
        tokens = torch.cat((self.output_tokens.expand(batch, -1, -1), sparse), dim=1)  # (B, T, C)
        src = image_embeddings + dense
        keys = src.flatten(2).transpose(1, 2)  # (1 or B, 4096, C)
        queries = tokens
        for block in self.blocks:
            queries, keys = block(queries, keys, tokens, self.key_pe)
        # only the IoU token and the used mask tokens go through the final attention
        used = 1 + self.k
        queries = queries[:, :used]
        point_pe = tokens[:, :used]
        q = queries + point_pe
        k = keys + self.key_pe
        queries = self.norm_final(queries + self.final(q, k, keys))
        iou = self.md.iou_prediction_head(queries[:, 0])[:, : self.k]
        hyper = torch.stack(
            [self.md.output_hypernetworks_mlps[i](queries[:, 1 + i]) for i in range(self.k)], dim=1
        )  # (B, K, 32)

        # upscaling: two 2x2 stride-2 transposed convolutions as 2-D MatMuls on tokens
        # (2-D so that ONNX Runtime fuses the bias into a Gemm instead of a separate pass)
        x = keys.reshape(-1, keys.shape[-1]) @ self.w1 + self.b1  # (B*4096, 4*64)  [b, y, x] x [i, j, o]
        x = x.reshape(-1, self.c1)
        x = F.layer_norm(x, (self.c1,), self.ln1.weight, self.ln1.bias, self.ln1.eps)
        x = F.gelu(x)
        x = F.gelu(x @ self.w2 + self.b2)  # (B*4096*4, 4*32)  [b, y, x, i, j] x [k, l, o]
        x = x.reshape(batch, EMBED_SIZE * EMBED_SIZE * 16, self.c2)
        masks = hyper @ x.transpose(1, 2)  # (B, K, 65536) in (y, x, i, j, k, l) order
        side = EMBED_SIZE
        masks = masks.reshape(batch, self.k, side, side, 2, 2, 2, 2)  # y, x, i, j, k, l
        masks = masks.permute(0, 1, 2, 4, 6, 3, 5, 7)  # y, i, k, x, j, l
        masks = masks.reshape(batch, self.k, LOW_RES_SIZE, LOW_RES_SIZE)
        return iou, masks
