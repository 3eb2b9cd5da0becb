"""One camera of the segment node: its topics, prompts, segmenter, frame slot,
publishers and statistics. All cameras share the node's model (one runtime).

With the ``cameras`` parameter empty the node has one camera named "" whose topics
are exactly the single-camera ones (``image``, ``~/mask``, ``~/prompt/point``, ...);
camera ``front`` reads ``front/<image_topic>`` and uses ``~/front/mask``,
``~/front/prompt/point``, ... (relative names: remapping works as for one camera).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..live.frames import FrameSlot
from ..live.prompts import PromptState
from ..live.segmenter import StreamSegmenter
from ..live.stats import NodeStats, ThrottledLog


@dataclass(eq=False)
class Camera:
    index: int
    name: str  # "" for the single camera
    stats: NodeStats
    errors: ThrottledLog
    prompts: PromptState | None = None
    segmenter: StreamSegmenter | None = None
    slot: FrameSlot | None = None  # a new one per activation
    image_topic: str = ""  # resolved
    image_sub: Any = None
    image_reliability: str | None = None
    qos_ticks: int = 0
    out: Any = None  # ImageOut: reused output messages
    pub_mask: Any = None
    pub_labels: Any = None
    pub_detections: Any = None
    pub_overlay: Any = None
    overlay_last: float = 0.0
    depth3d: Any = None

    def output(self, name: str) -> str:
        """The camera's topic ``name`` under the node: ``~/name`` or ``~/<camera>/name``."""
        return f"~/{self.name}/{name}" if self.name else f"~/{name}"

    def input(self, topic: str) -> str:
        """An input topic of the camera: ``topic`` or ``<camera>/topic`` (relative)."""
        return f"{self.name}/{topic}" if self.name else topic
