"""One camera's image input (created at activate): the subscription, with a fixed or
an automatic (``qos.reliability: auto``) reliability, frames into the camera's slot,
and the worker's conversion of a taken frame to RGB."""

from __future__ import annotations

from typing import Any

from sensor_msgs.msg import CompressedImage, Image

from ..messages.images import compressed_msg_to_rgb, header_key, image_msg_to_rgb
from .fastdds import PROFILE_NAME
from .qos import ReliabilityMatcher, qos_profile


class ImageInput:
    """Images of camera ``cam`` for the segment node ``node`` (its ``config``,
    ``enabled`` and ``log``)."""

    def __init__(self, node, cam) -> None:
        self._node, self._cam = node, cam
        cfg = node.config
        compressed = cfg["transport"] == "compressed"
        self._msg_type = CompressedImage if compressed else Image
        self._to_rgb = compressed_msg_to_rgb if compressed else image_msg_to_rgb
        self._sub: Any = None
        self.reliability: str | None = None  # None until subscribed (auto: until a publisher appears)
        if cfg["qos.reliability"] == "auto":
            matcher = ReliabilityMatcher(node, cam.image_topic, lambda: self.reliability, self._subscribe,
                                         self._announce)
            matcher.start()
            matcher.tick()  # at once: a publisher that is already there is matched now
        else:
            self._subscribe(cfg["qos.reliability"])

    def _subscribe(self, reliability: str) -> None:
        if self._sub is not None:
            self._node.destroy_subscription(self._sub)
        self._sub = self._node.create_subscription(
            self._msg_type, self._cam.image_topic, self.on_image,
            qos_profile(reliability, self._node.config["qos.depth"]),
        )
        self.reliability = reliability

    def _announce(self, reliability: str, publishers: int) -> None:
        note = (
            " (frames over ~0.5 MB reach a best-effort subscriber only when the publisher's Fast DDS "
            "shared-memory segment can hold them: run the camera driver with config/" + PROFILE_NAME + ")"
            if reliability == "best_effort" else ""
        )
        self._node.log("info", f"{publishers} publisher(s) on {self._cam.image_topic}: subscribing {reliability}{note}")

    def on_image(self, msg) -> None:
        """A frame (executor thread): into the camera's slot, newest wins."""
        cam = self._cam
        if not self._node.enabled:  # ~/enable false: nothing is decoded
            cam.stats.count("frames_while_paused")
            return
        replaced = cam.slot.put(msg, key=header_key(msg.header))
        cam.stats.frame_received(replaced)
        if cam.depth3d is not None:
            cam.depth3d.colour_arrived(msg.header)

    def convert(self, msg):
        """The frame the worker takes -> (RGB, frame key, header)."""
        if self._cam.depth3d is not None:
            self._cam.depth3d.frame_taken(msg.header)
        return self._to_rgb(msg), header_key(msg.header), msg.header
