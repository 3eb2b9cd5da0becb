"""PyTorch definitions of MobileSAM (export and the torch runtime only; never on
the ROS runtime path unless the torch backend is chosen)."""

from .checkpoint import (
    CheckpointError,
    load_sam,
    read_prompt_guided_decoder,
    synthetic_state_dict,
    write_synthetic_checkpoint,
)
from .sam import Sam, SamDecoder, SamEncoder

__all__ = [
    "CheckpointError",
    "Sam",
    "SamDecoder",
    "SamEncoder",
    "load_sam",
    "read_prompt_guided_decoder",
    "synthetic_state_dict",
    "write_synthetic_checkpoint",
]
