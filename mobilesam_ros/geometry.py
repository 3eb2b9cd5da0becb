"""The model's geometry: the sizes of the tensors every part agrees on.

The PyTorch graphs (``modeling/``), the export, the engines (``runtime/``), the
pre- and post-processing and the live pipeline all build on these numbers, so they
live here at the bottom, importing nothing. ``runtime/base.py`` describes the tensors
themselves (names, shapes, dtypes) in these terms.
"""

from __future__ import annotations

#: the encoder's square input, in pixels: the longest image side is resized to this
#: and the rest zero-padded (bottom and right)
IMAGE_SIZE = 1024
#: channels of the image embedding (and of the prompt and mask tokens)
EMBED_DIM = 256
#: the image embedding's side: IMAGE_SIZE / 16 (the encoder's total stride)
EMBED_SIZE = 64
#: the side of the decoder's mask logits (and of its mask input): 4 x EMBED_SIZE
LOW_RES_SIZE = 256
