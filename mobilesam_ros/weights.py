"""Where the official weights come from and how to recognise them (no torch)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

#: the official MobileSAM weights (MobileSAM GitHub repository, weights/mobile_sam.pt)
MOBILE_SAM_URL = "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt"
MOBILE_SAM_SIZE = 40_728_226
MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"

#: MobileSAMv2's prompt encoder + mask decoder (MobileSAM GitHub repository,
#: MobileSAMv2/PromptGuidedDecoder/). Its size and sha256 are not published anywhere we
#: could check, so they are None: a download is verified by its layout (it must load
#: with weights_only=True as {"PromtEncoder": ..., "MaskDecoder": ...} of SAM's shapes)
#: and its sha256 is printed and recorded in model.json, so a user can pin it.
PROMPT_GUIDED_DECODER_URL = (
    "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/MobileSAMv2/PromptGuidedDecoder/"
    "Prompt_guided_Mask_Decoder.pt"
)
PROMPT_GUIDED_DECODER_SIZE: int | None = None
PROMPT_GUIDED_DECODER_SHA256: str | None = None


@dataclass(frozen=True)
class WeightsFile:
    """A downloadable weights file: where it is, and what it must be (None: unknown)."""

    name: str
    filename: str
    url: str
    size: int | None
    sha256: str | None
    description: str


def weights_files() -> dict[str, WeightsFile]:
    """The files ``mobilesam-ros download`` knows, by name (read at call time, so the
    module constants can be replaced in tests)."""
    return {
        "mobile_sam": WeightsFile("mobile_sam", "mobile_sam.pt", MOBILE_SAM_URL, MOBILE_SAM_SIZE, MOBILE_SAM_SHA256,
                                  "MobileSAM (TinyViT encoder + SAM's decoder)"),
        "prompt_guided_decoder": WeightsFile(
            "prompt_guided_decoder", "Prompt_guided_Mask_Decoder.pt", PROMPT_GUIDED_DECODER_URL,
            PROMPT_GUIDED_DECODER_SIZE, PROMPT_GUIDED_DECODER_SHA256,
            "MobileSAMv2's prompt-guided decoder (use with mobile_sam.pt via --decoder-checkpoint)"),
    }


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
