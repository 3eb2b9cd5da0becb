"""vision_msgs 2D detections <-> numpy: detector boxes and object prompts in, the
segmentation result's ``~/detections`` out. vision_msgs 4.x (Humble and later) and
the 3.x layout are both read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def detections_to_boxes(msg: Any) -> tuple[np.ndarray, list[str], list[float | None]]:
    """vision_msgs/Detection2DArray -> boxes (K, 4) x0, y0, x1, y1 in pixels, class ids,
    detector scores.

    The box is ``bbox.center.position.(x, y)`` +- ``bbox.size_(x, y) / 2`` (vision_msgs
    4.x, Humble and later; the 3.x layout ``bbox.center.(x, y)`` is read too). The
    class id and score come from the best hypothesis in ``results`` (empty when
    there is none).
    """
    detections = list(msg.detections)
    boxes = np.zeros((len(detections), 4), np.float64)
    class_ids: list[str] = []
    scores: list[float | None] = []
    for i, det in enumerate(detections):
        center = det.bbox.center
        position = getattr(center, "position", center)
        cx, cy = float(position.x), float(position.y)
        half_w, half_h = float(det.bbox.size_x) / 2.0, float(det.bbox.size_y) / 2.0
        boxes[i] = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
        best = None
        for result in getattr(det, "results", []) or []:
            hyp = getattr(result, "hypothesis", result)  # 4.x: .hypothesis; 3.x: the fields directly
            score = float(getattr(hyp, "score", 0.0))
            if best is None or score > best[1]:
                best = (str(getattr(hyp, "class_id", getattr(hyp, "id", ""))), score)
        class_ids.append(best[0] if best else str(getattr(det, "id", "") or ""))
        scores.append(best[1] if best else None)
    return boxes, class_ids, scores


def detection_to_object(det: Any) -> tuple[np.ndarray | None, np.ndarray | None, int, str]:
    """vision_msgs/Detection2D on ``~/prompt/object`` -> (point (1, 2) or None, box (4,)
    or None, target track id (0: a new object), class id).

    A box of zero size is a point at its centre (a foreground click); ``id`` empty is a
    new object, a number is the track that gets this prompt (it keeps its id). Raises
    ValueError for any other id.
    """
    center = det.bbox.center
    position = getattr(center, "position", center)
    cx, cy = float(position.x), float(position.y)
    w, h = float(det.bbox.size_x), float(det.bbox.size_y)
    text = str(getattr(det, "id", "") or "").strip()
    if text and not text.isdigit():
        raise ValueError(f"id must be empty (a new object) or a track id, got '{text}'")
    target = int(text) if text else 0
    class_id = ""
    best = -math.inf
    for result in getattr(det, "results", []) or []:
        hyp = getattr(result, "hypothesis", result)
        score = float(getattr(hyp, "score", 0.0))
        if score > best:
            best, class_id = score, str(getattr(hyp, "class_id", getattr(hyp, "id", "")))
    if w == 0.0 and h == 0.0:
        return np.array([[cx, cy]], np.float32), None, target, class_id
    return None, np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32), target, class_id


def result_to_detections(result: Any, header: Any, classes: Any) -> Any:
    """A SegmentationResult -> vision_msgs/Detection2DArray.

    One Detection2D per object: ``id`` = its track id (its value in ~/labels),
    ``bbox`` = the mask's box (centre, size; pixel edges), one result with
    ``hypothesis.class_id`` (the prompt's class id when the prompt was a detection,
    else "") and ``hypothesis.score`` = the predicted IoU. ``classes`` provides the
    message classes: ``Detection2DArray``, ``Detection2D``, ``ObjectHypothesisWithPose``
    (the ``vision_msgs.msg`` module, or stand-ins in tests).
    """
    out = classes.Detection2DArray()
    out.header = header
    detections = []
    track_ids = getattr(result, "track_ids", None)
    for i in range(len(result.masks)):
        x0, y0, x1, y1 = (float(v) for v in result.boxes[i])
        det = classes.Detection2D()
        det.header = header
        det.id = str(int(track_ids[i]) if track_ids is not None else i + 1)
        center = det.bbox.center
        position = getattr(center, "position", center)
        position.x, position.y = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        det.bbox.size_x, det.bbox.size_y = x1 - x0, y1 - y0
        hyp = classes.ObjectHypothesisWithPose()
        target = getattr(hyp, "hypothesis", hyp)
        target.class_id = result.class_ids[i] if i < len(result.class_ids) else ""
        target.score = float(result.scores[i])
        det.results = [hyp]
        detections.append(det)
    out.detections = detections
    return out
