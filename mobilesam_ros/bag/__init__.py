"""Recorded data: segment a rosbag2 offline, without ROS, and turn it into outputs
a robot stack or a training pipeline reads.

``io`` (rosbag2 sqlite3 / MCAP in and out with ``rosbags``), ``typestore`` (the
typestore with vision_msgs, the node's output messages), ``pipeline`` (every frame
through the live segmenter, in order, recorded detections paired by stamp),
``recorded_depth`` (the node's 3D outputs from recorded depth and camera info), ``coco``
(a COCO instance-segmentation dataset). ``mobilesam-ros bag`` is the
command; nothing here imports rclpy.
"""

from .io import BagError, InputBag, OutputBag, storage_of
from .pipeline import BagOptions, BagSegmenter, BagSummary, Progress, input_connections, pair_detections

__all__ = [
    "BagError",
    "BagOptions",
    "BagSegmenter",
    "BagSummary",
    "InputBag",
    "OutputBag",
    "Progress",
    "input_connections",
    "pair_detections",
    "storage_of",
]
