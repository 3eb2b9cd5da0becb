"""Where the official weights come from and how to recognise them (no torch)."""

from __future__ import annotations

import hashlib
import os

#: the official MobileSAM weights (MobileSAM GitHub repository, weights/mobile_sam.pt)
MOBILE_SAM_URL = "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt"
MOBILE_SAM_SIZE = 40_728_226
MOBILE_SAM_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
