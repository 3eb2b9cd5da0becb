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


def contrasting_colour(key: int, under: np.ndarray) -> tuple[int, int, int]:
    """Instance ``key``'s colour, or its complement (the hue half-way round) when that is
    further from ``under`` (the mean RGB of the pixels the mask covers): a red object is
    not painted red. Stable from frame to frame as long as the object keeps its colour."""
    a = instance_colour(key)
    hue = int(((key * 0.618033988749895 + 0.5) % 1.0) * 180)
    r, g, b = cv2.cvtColor(np.array([[[hue, 200, 255]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    c = (int(r), int(g), int(b))
    under = np.asarray(under, np.float32)
    return a if np.linalg.norm(np.float32(a) - under) >= np.linalg.norm(np.float32(c) - under) else c


def interior_points(masks: np.ndarray, boxes: np.ndarray) -> list[tuple[int, int]]:
    """Per mask, its most interior pixel (x, y) (distance-transform maximum), where a label
    reads as belonging to it; (-1, -1) for an empty mask."""
    out = []
    for mask, (x0, y0, x1, y1) in zip(masks, np.asarray(boxes).astype(int)):
        if x1 <= x0 or y1 <= y0:
            out.append((-1, -1))
            continue
        crop = np.pad(mask[y0:y1, x0:x1], 1).astype(np.uint8)
        dist = cv2.distanceTransform(crop, cv2.DIST_L2, 3)
        v, u = np.unravel_index(int(np.argmax(dist)), dist.shape)
        out.append((x0 + int(u) - 1, y0 + int(v) - 1))
    return out


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


def masks_to_label_image(masks: np.ndarray, dtype=np.uint16, ids=None) -> np.ndarray:
    """(K, H, W) bool -> (H, W) instance ids: 0 background, mask i gets ``ids[i]``
    (default i + 1; track ids when tracking).

    Larger masks are drawn first, so a small object lying on a large one keeps its
    own id where they overlap.
    """
    masks = np.asarray(masks, bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got {masks.shape}")
    labels = np.zeros(masks.shape[1:], dtype)
    if len(masks) > np.iinfo(dtype).max:
        raise ValueError(f"{len(masks)} instances do not fit in {np.dtype(dtype).name}")
    values = np.arange(1, len(masks) + 1) if ids is None else np.asarray(ids, np.int64).reshape(-1)
    if len(values) != len(masks) or (len(values) and (values.min() < 1 or values.max() > np.iinfo(dtype).max)):
        raise ValueError(f"need {len(masks)} ids in 1..{np.iinfo(dtype).max}, got {values.tolist()}")
    areas = masks.sum(axis=(1, 2))
    boxes = mask_boxes(masks).astype(int)
    for i in np.argsort(-areas, kind="stable"):
        x0, y0, x1, y1 = boxes[i]
        # write only inside the mask's box: most instances cover a small part of the frame
        np.copyto(labels[y0:y1, x0:x1], values[i], where=masks[i, y0:y1, x0:x1], casting="unsafe")
    return labels


def place_labels(anchors: list[tuple[int, int]], sizes: list[tuple[int, int]],
                 shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Text origins (bottom-left, as cv2.putText takes them) for labels of the given
    (width, height) wanted with their top-left at ``anchors``: inside the image and
    clear of the labels already placed (the nearest free slot: below first, then
    above, then beside), so masks that share a corner (all touching (0, 0)) do not
    get their scores printed on top of each other. Overlaps only when the image has
    no room left."""
    height, width = shape
    placed: list[tuple[int, int, int, int]] = []  # x0, y0, x1, y1, margins included

    def free(box):
        return all(box[2] <= p[0] or p[2] <= box[0] or box[3] <= p[1] or p[3] <= box[1] for p in placed)

    origins = []
    for (ax, ay), (w, h) in zip(anchors, sizes):
        step_x, step_y = w + 4, h + 6
        cx = min(max(ax, 0), max(width - w, 0))
        cy = min(max(ay, 0), max(height - step_y, 0))
        best = (cx, cy)
        # rows below, then above, then the same in the next columns right and left
        for col in (0, 1, -1, 2, -2):
            x = cx + col * step_x
            if x < 0 or x + w > width:
                continue
            rows = [cy + k * step_y for k in range(0, len(placed) + 1)] + \
                   [cy - k * step_y for k in range(1, len(placed) + 1)]
            spot = next(((x, y) for y in rows if 0 <= y <= height - step_y and free((x, y, x + step_x, y + step_y))),
                        None)
            if spot is not None:
                best = spot
                break
        x, y = best
        placed.append((x, y, x + step_x, y + step_y))
        origins.append((x, y + h + 2))
    return origins


def draw_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    scores: np.ndarray | None = None,
    points: np.ndarray | None = None,
    point_labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    alpha: float = 0.5,
    ids=None,
) -> np.ndarray:
    """Colour each mask, outline it, mark prompt points (green fg / red bg) and boxes,
    and print each mask's score on the mask (centred on its most interior pixel). With
    ``ids`` (track ids) an object's colour comes from its id, so it keeps its colour from
    frame to frame, and its label reads "#id score". Each colour is the instance's or its
    complement, whichever contrasts more with the pixels under the mask. Returns a new
    RGB uint8 image."""
    out = np.array(image, np.uint8, copy=True)
    if out.ndim == 2:
        out = cv2.cvtColor(out, cv2.COLOR_GRAY2RGB)
    masks = np.asarray(masks, bool).reshape(-1, *out.shape[:2]) if np.size(masks) else np.zeros((0, *out.shape[:2]), bool)
    labels = masks_to_label_image(masks) if len(masks) else None
    colour_keys = list(range(len(masks))) if ids is None else [int(v) for v in np.ravel(ids)]
    if labels is not None:
        under = [out[m].reshape(-1, 3).mean(axis=0) if m.any() else np.zeros(3) for m in masks]
        colours = [contrasting_colour(k, u) for k, u in zip(colour_keys, under)]
        palette = np.array([(0, 0, 0)] + colours, np.float32)
        inside = labels > 0
        out[inside] = (out[inside] * (1 - alpha) + palette[labels[inside]] * alpha).astype(np.uint8)
        thickness = max(1, round(max(out.shape[:2]) / 500))
        for i, mask in enumerate(masks):
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, colours[i], thickness)
        if scores is not None:
            font_scale = max(0.4, max(out.shape[:2]) / 1500)
            texts, centres = [], []
            for i, (cx, cy) in enumerate(interior_points(masks, mask_boxes(masks))):
                if cx < 0:
                    continue
                text = f"{float(np.ravel(scores)[i]):.2f}"
                if ids is not None:
                    text = f"#{colour_keys[i]} {text}"
                texts.append(text)
                centres.append((cx, cy))
            sizes = [cv2.getTextSize(t, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 3)[0] for t in texts]
            anchors = [(cx - w // 2, cy - h // 2) for (cx, cy), (w, h) in zip(centres, sizes)]
            for text, org in zip(texts, place_labels(anchors, sizes, out.shape[:2])):
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
