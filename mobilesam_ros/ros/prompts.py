"""One camera's prompt topics (created at activate): ``~/prompt/point``, ``click``,
``clear``, ``add``, ``remove`` and, with vision_msgs, ``boxes`` and ``object``. A bad
prompt is counted and logged (throttled), never raised."""

from __future__ import annotations

import math
from typing import Any

from geometry_msgs.msg import Point, PointStamped
from std_msgs.msg import Empty, UInt16

from ..live.stats import error_kind
from ..messages.detections import detection_to_object, detections_to_boxes
from ..messages.images import header_key
from ..predictor import PromptError
from .qos import qos_profile


class PromptInput:
    """Prompts of camera ``cam`` for the segment node ``node`` (its ``config``: mode);
    ``vision`` is vision_msgs.msg or None (no box or object prompts)."""

    def __init__(self, node, cam, vision: Any) -> None:
        self._node, self._cam = node, cam
        topics = (
            (PointStamped, "prompt/point", self._on_point), (Point, "prompt/click", self._on_click),
            (Empty, "prompt/clear", self._on_clear), (PointStamped, "prompt/add", self._on_add),
            (UInt16, "prompt/remove", self._on_remove),
        )
        if vision is not None:
            topics += (
                (vision.Detection2DArray, "prompt/boxes", self._on_boxes),
                (vision.Detection2D, "prompt/object", self._on_object),
            )
        prompt_qos = qos_profile("reliable", 10)
        for msg_type, topic, handler in topics:
            node.create_subscription(msg_type, cam.output(topic), handler, prompt_qos)

    def _allowed(self, topic: str) -> bool:
        if self._node.config["mode"] == "everything":
            self._cam.errors.once(f"ignored:{topic}", f"mode everything: {topic} is ignored (only prompt/boxes is used)",
                                  level="warn")
            return False
        return True

    def _rejected(self, topic: str, exc: Exception) -> None:
        self._cam.errors.report(error_kind(topic, str(exc)), f"{topic} skipped: {exc}", counter="prompt_errors")

    def _on_point(self, msg: PointStamped) -> None:
        cam = self._cam
        cam.stats.count("prompts_received")
        if not self._allowed("prompt/point"):
            return
        p = msg.point
        try:
            if not math.isfinite(p.z):
                raise PromptError(f"z must be finite (>= 0 foreground, < 0 background), got {p.z}")
            cam.prompts.add_point(p.x, p.y, foreground=p.z >= 0, stamp=header_key(msg.header))
        except PromptError as exc:
            self._rejected("prompt/point", exc)
            return
        cam.slot.notify()

    def _on_click(self, msg: Point) -> None:
        cam = self._cam
        cam.stats.count("prompts_received")
        if not self._allowed("prompt/click"):
            return
        try:
            cam.prompts.add_point(msg.x, msg.y, foreground=True, stamp=None)
        except PromptError as exc:
            self._rejected("prompt/click", exc)
            return
        cam.slot.notify()

    def _on_clear(self, _msg: Empty) -> None:
        cam = self._cam
        cam.stats.count("prompts_received")
        cam.prompts.clear()
        cam.slot.notify()

    def _on_add(self, msg: PointStamped) -> None:
        """A new object from one foreground point; the other objects are left alone."""
        cam = self._cam
        cam.stats.count("prompts_received")
        if not self._allowed("prompt/add"):
            return
        try:
            cam.prompts.add_object(points=[[msg.point.x, msg.point.y]], stamp=header_key(msg.header))
        except PromptError as exc:
            self._rejected("prompt/add", exc)
            return
        cam.slot.notify()

    def _on_object(self, msg) -> None:
        """Add one object (Detection2D ``id`` empty) or re-prompt track ``id``; a box, or a
        point where the box has zero size."""
        cam = self._cam
        cam.stats.count("prompts_received")
        if not self._allowed("prompt/object"):
            return
        try:
            point, box, target, class_id = detection_to_object(msg)
            if target and cam.segmenter.tracker is None:
                raise PromptError("a track id needs tracking.enabled")
            cam.prompts.add_object(points=point, box=box, stamp=header_key(msg.header), target_id=target,
                                   class_id=class_id)
        except (PromptError, ValueError, AttributeError, TypeError) as exc:
            self._rejected("prompt/object", exc)
            return
        cam.slot.notify()

    def _on_remove(self, msg: UInt16) -> None:
        cam = self._cam
        cam.stats.count("prompts_received")
        if cam.segmenter.tracker is None:
            cam.errors.once("remove:untracked", "prompt/remove needs tracking.enabled: ignored", level="warn")
            return
        cam.prompts.remove(int(msg.data))
        cam.slot.notify()

    def _on_boxes(self, msg) -> None:
        cam = self._cam
        cam.stats.count("prompts_received")
        try:
            boxes, class_ids, scores = detections_to_boxes(msg)
        except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the node
            self._rejected("prompt/boxes", exc)
            return
        if len(boxes) == 0:  # a valid clear (a detector that saw nothing): counted, not an error
            cam.stats.count("empty_box_lists")
            cam.errors.report("prompt/boxes:empty", "prompt/boxes: empty box list: box prompts cleared",
                              counter=None, level="info")
        for problem in cam.prompts.set_boxes(boxes, header_key(msg.header), class_ids, scores):
            cam.errors.report(error_kind("prompt/boxes", problem), f"prompt/boxes: {problem}", counter="prompt_errors")
        cam.slot.notify()
