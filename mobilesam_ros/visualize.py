"""Turning masks into what people and consumers look at: label images, boxes, overlays.

ROS-free; shared by the CLI and the node.
"""

from __future__ import annotations

import cv2
import numpy as np


def instance_colour(index: int) -> tuple[int, int, int]:
    """A stable, well-separated RGB colour for instance ``index`` (golden-ratio hues)."""
    hue = int((index * 0.618033988749895 % 1.0) * 180)
    hsv = np.array([[[hue, 200, 255]]], np.uint8)
    r, g, b = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(K, H, W) bool -> (K, 4) float32 x0, y0, x1, y1 (pixel edges, exclusive max).

    An empty mask gets an all-zero box.
    """
    masks = np.asarray(masks, bool)
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            continue
        cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
        boxes[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def masks_to_label_image(masks: np.ndarray, dtype=np.uint16) -> np.ndarray:
    """(K, H, W) bool -> (H, W) instance ids: 0 background, mask i gets id i + 1.

    Larger masks are drawn first, so a small object lying on a large one keeps its
    own id where they overlap.
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got {masks.shape}")
    labels = np.zeros(masks.shape[1:], dtype)
    if len(masks) > np.iinfo(dtype).max:
        raise ValueError(f"{len(masks)} instances do not fit in {np.dtype(dtype).name}")
    areas = masks.sum(axis=(1, 2))
    boxes = mask_boxes(masks).astype(int)
    for i in np.argsort(-areas, kind="stable"):
        x0, y0, x1, y1 = boxes[i]
        # write only inside the mask's box: most instances cover a small part of the frame
        np.copyto(labels[y0:y1, x0:x1], i + 1, where=masks[i, y0:y1, x0:x1], casting="unsafe")
    return labels


def draw_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray | None = None,
    points: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    alpha: float = 0.5,
) -> np.ndarray:
    """Colour each mask, outline it, mark prompt points (green fg / red bg) and boxes,
    and print each mask's score at its top-left. Returns a new RGB uint8 image."""
    out = np.array(image, np.uint8, copy=True)
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)
    masks = np.asarray(masks, bool).reshape(-1, *out.shape[:2]) if np.size(masks) else np.zeros((0, *out.shape[:2]), bool)
    labels = masks_to_label_image(masks) if len(masks) else None
    if labels is not None:
        palette = np.array([(0, 0, 0)] + [instance_colour(i) for i in range(len(masks))], np.float32)
        inside = labels > 0
        out[inside] = (out[inside] * (1 - alpha) + palette[labels[inside]] * alpha).astype(np.uint8)
        thickness = max(1, round(max(out.shape[:2]) / 500))
        for i, mask in enumerate(masks):
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, instance_colour(i), thickness)
        if scores is not None:
            font_scale = max(0.4, max(out.shape[:2]) / 1500)
            for i, (x0, y0, _, _) in enumerate(mask_boxes(masks)):
                if not masks[i].any():
                    continue
                text = f"{float(np.ravel(scores)[i]):.2f}"
                org = (int(x0) + 2, max(int(y0) + 14, 14))
                cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)
    radius = max(4, round(max(out.shape[:2]) / 150))
    if boxes is not None:
        for box in np.asarray(boxes, np.float32).reshape(-1, 4):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 0), max(1, radius // 3))
    if points is not None:
        pts = np.asarray(points, np.float32).reshape(-1, 2)
        lbl = np.ones(len(pts)) if point_labels is None else np.asarray(point_labels).reshape(-1)
        for (x, y), label in zip(pts, lbl):
            colour = (0, 255, 0) if label > 0 else (255, 0, 0)
            centre = (int(round(x)), int(round(y)))
            cv2.circle(out, centre, radius, colour, -1, cv2.LINE_AA)
            cv2.circle(out, centre, radius, (255, 255, 255), 1, cv2.LINE_AA)
    return out
