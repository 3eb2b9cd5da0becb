"""One camera's 2D outputs: ``~/mask``, ``~/labels``, ``~/detections``, ``~/overlay``
(created at configure), published for each result on the worker thread, before the
3D outputs."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sensor_msgs.msg import Image

from ..live.config import NodeConfig
from ..messages.detections import result_to_detections
from ..messages.images import ImageOut, header_stamp_ns
from ..visualize import draw_overlay
from .qos import qos_profile


def overlay_period(cfg: NodeConfig) -> float:
    """Seconds between two overlays (overlay.max_rate; 0: every frame)."""
    return 1.0 / cfg["overlay.max_rate"] if cfg["overlay.max_rate"] > 0 else 0.0


class CameraOutputs:
    """The publishers of one camera (``cam``) of the segment node ``node``; ``vision`` is
    vision_msgs.msg or None (no ~/detections)."""

    def __init__(self, node, cam, cfg: NodeConfig, vision: Any) -> None:
        self._node, self._cam, self._vision = node, cam, vision
        out_qos = qos_profile("reliable", 2)
        self._images = ImageOut(Image)  # reused output messages
        self.mask = node.create_publisher(Image, cam.output("mask"), out_qos) if cfg["publish_mask"] else None
        self.labels = node.create_publisher(Image, cam.output("labels"), out_qos) if cfg["publish_labels"] else None
        self.overlay = node.create_publisher(Image, cam.output("overlay"), out_qos) if cfg["overlay.enabled"] else None
        self.detections = None
        if vision is not None and cfg["publish_detections"]:
            self.detections = node.create_publisher(vision.Detection2DArray, cam.output("detections"), out_qos)
        self.overlay_period = overlay_period(cfg)
        self._overlay_last = 0.0

    def names(self) -> list[str]:
        """The outputs this camera publishes (for the node's "ready" line)."""
        return [n for n, p in (("mask", self.mask), ("labels", self.labels),
                               ("detections", self.detections), ("overlay", self.overlay)) if p]

    def publish(self, result) -> None:
        """Every output of one result (the worker's publish callback)."""
        cam = self._cam
        header = result.frame.header
        h, w = result.labels.shape
        if self.mask is not None:
            msg, view = self._images.fill("mask", header, (h, w), np.uint8, "mono8")
            np.greater(result.labels, 0, out=view.view(np.bool_))
            view *= 255
            self.mask.publish(msg)
        if self.labels is not None:
            msg, view = self._images.fill("labels", header, (h, w), np.uint16, "mono16")
            view[...] = result.labels
            self.labels.publish(msg)
        if self.detections is not None:
            self.detections.publish(result_to_detections(result, header, self._vision))
        if self.overlay is not None:
            self._publish_overlay(result, header)
        stamp_ns = header_stamp_ns(header)
        if stamp_ns:
            cam.stats.stage("stamp_age", (self._node.get_clock().now().nanoseconds - stamp_ns) / 1e6)
        if cam.depth3d is not None:  # after the 2D outputs: it may wait depth.wait for a late depth frame
            cam.depth3d.publish(result, header)

    def _publish_overlay(self, result, header) -> None:
        now = time.monotonic()
        if self.overlay_period and now - self._overlay_last < self.overlay_period:
            return
        if self.overlay.get_subscription_count() == 0:
            return
        self._overlay_last = now
        t0 = time.perf_counter()
        image = draw_overlay(
            result.frame.image, result.masks, result.scores, result.prompt_points, result.prompt_labels,
            result.prompt_boxes, alpha=self._node.config["overlay.alpha"], ids=result.track_ids,
        )
        msg, view = self._images.fill("overlay", header, image.shape, np.uint8, "rgb8")
        view[...] = image
        self.overlay.publish(msg)
        self._cam.stats.stage("overlay", (time.perf_counter() - t0) * 1e3)
