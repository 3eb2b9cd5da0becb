"""Segment everything: MobileSAMv2's object-aware boxes, SAM's point grid and TinySAM's
hierarchical grid behind one interface (:class:`EverythingSegmenter`).

Importing this package needs numpy and OpenCV only; the detector needs onnxruntime.
"""

from .discovery import Detections, ObjectDiscovery, letterbox
from .segmenter import STRATEGIES, EverythingConfig, EverythingResult, EverythingSegmenter, sanitize_boxes

__all__ = [
    "STRATEGIES",
    "Detections",
    "EverythingConfig",
    "EverythingResult",
    "EverythingSegmenter",
    "ObjectDiscovery",
    "letterbox",
    "sanitize_boxes",
]
