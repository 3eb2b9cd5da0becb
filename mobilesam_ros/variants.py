"""Which SAM a model is, as its authors run it (no heavy imports).

All three share MobileSAM's architecture and checkpoint layout; they differ in
weights and in how prompts are decoded:

* ``mobilesam`` (default): SAM's decoding. One output per prompt (token 0, the
  single-mask output) unless three candidates are asked for (tokens 1..3).
* ``tinysam``: TinySAM's reference predictor decodes EVERY prompt with the three
  multimask outputs (tokens 1..3) and its demos keep the best-scored one; it has no
  single-mask path, so token 0 is never used.
* MobileSAMv2 is ``mobilesam`` decoding with another prompt encoder and mask
  decoder: its authors' ``Prompt_guided_Mask_Decoder.pt`` (``PROMPT_GUIDED_DECODER``),
  combined with an image encoder (MobileSAM's TinyViT from ``mobile_sam.pt``). It is
  recorded as where the decoder weights came from, not as a decoding variant.

Which output tokens a prompt gets is decided in one place: ``predictor.output_tokens``.
"""

from __future__ import annotations

MOBILESAM = "mobilesam"
TINYSAM = "tinysam"
VARIANTS = (MOBILESAM, TINYSAM)
DEFAULT_VARIANT = MOBILESAM

#: how model.json and runtimes name MobileSAMv2's prompt encoder + mask decoder
PROMPT_GUIDED_DECODER = "mobilesamv2_prompt_guided_decoder"
#: the authors' file name (MobileSAM repository, MobileSAMv2/PromptGuidedDecoder/)
PROMPT_GUIDED_DECODER_FILE = "Prompt_guided_Mask_Decoder.pt"


def check_variant(name: str | None, source: str = "variant") -> str:
    """``name`` if it is a known variant (None: the default); ValueError (one line) otherwise."""
    if name is None:
        return DEFAULT_VARIANT
    if name not in VARIANTS:
        raise ValueError(f"{source}: unknown model variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return name


def always_three_masks(variant: str) -> bool:
    """True when every prompt is decoded with the three multimask outputs (TinySAM)."""
    return variant == TINYSAM


def model_name(variant: str, prompt_decoder: dict | None = None) -> str:
    """How logs name a model: 'MobileSAM', 'TinySAM', 'MobileSAMv2 (decoder FILE)'."""
    if prompt_decoder and prompt_decoder.get("kind") == PROMPT_GUIDED_DECODER:
        return f"MobileSAMv2 (prompt-guided decoder {prompt_decoder.get('file', '?')})"
    return {MOBILESAM: "MobileSAM", TINYSAM: "TinySAM"}.get(variant, variant)
