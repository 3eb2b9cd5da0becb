"""Mask post-processing for segment-everything (numpy and OpenCV only, no torch).

Definitions follow SAM's automatic mask generator (``segment_anything/utils/amg.py``)
so results can be compared with it:

* stability score: IoU between the mask thresholded at ``t + offset`` and at
  ``t - offset`` on the logits (t = 0, offset = 1). The first is contained in the
  second, so it is ``count(logits > t + o) / count(logits > t - o)``.
* mask boxes: x0, y0, x1, y1 where x1, y1 are the indices of the last pixel in the
  mask (inclusive, as SAM's ``batched_mask_to_box``), so SAM's ``bbox`` in xywh is
  ``x0, y0, x1 - x0, y1 - y0``. An empty mask has the box 0, 0, 0, 0.
* box NMS: greedy, by descending score, a box is dropped when its IoU with a kept
  box is above the threshold (torchvision's ``nms``; areas are ``(x1-x0)*(y1-y0)``).
* RLE: COCO's column-major run lengths, starting with a run of zeros;
  ``rle_to_string`` is pycocotools' compressed string format (``rleToString``).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

import cv2
import numpy as np

# ----------------------------------------------------------------------------------
# scores and boxes


def stability_scores(logits: np.ndarray, threshold: float = 0.0, offset: float = 1.0) -> np.ndarray:
    """(N, H, W) logits -> (N,) float32 stability scores (SAM's definition).

    A mask with nothing above ``threshold - offset`` scores 0 (SAM's gives NaN there,
    which fails any positive threshold just the same).
    """
    logits = np.asarray(logits)
    if len(logits) == 0:
        return np.zeros(0, np.float32)
    flat = logits.reshape(len(logits), -1)
    inter = np.count_nonzero(flat > (threshold + offset), axis=1)
    union = np.count_nonzero(flat > (threshold - offset), axis=1)
    out = np.zeros(len(flat), np.float32)
    np.divide(inter, union, out=out, where=union > 0, casting="unsafe")
    return out


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N, 4) float32 x0, y0, x1, y1 with inclusive x1, y1 (SAM's
    ``batched_mask_to_box``); empty masks give 0, 0, 0, 0."""
    masks = np.asarray(masks, bool)
    n = len(masks)
    boxes = np.zeros((n, 4), np.float32)
    if n == 0:
        return boxes
    rows = masks.any(axis=2)  # (N, H)
    cols = masks.any(axis=1)  # (N, W)
    nonempty = rows.any(axis=1)
    h, w = masks.shape[1:]
    boxes[:, 0] = np.argmax(cols, axis=1)
    boxes[:, 1] = np.argmax(rows, axis=1)
    boxes[:, 2] = w - 1 - np.argmax(cols[:, ::-1], axis=1)
    boxes[:, 3] = h - 1 - np.argmax(rows[:, ::-1], axis=1)
    boxes[~nonempty] = 0
    return boxes


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """(A, 4), (B, 4) xyxy -> (A, B) IoU with areas (x1 - x0) * (y1 - y0)."""
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _greedy_nms(order: np.ndarray, iou_row) -> np.ndarray:
    """Greedy suppression along ``order``; ``iou_row(i, rest)`` gives IoU of i with rest."""
    keep = []
    alive = np.ones(len(order), bool)
    for pos in range(len(order)):
        if not alive[pos]:
            continue
        i = order[pos]
        keep.append(i)
        rest = pos + 1 + np.flatnonzero(alive[pos + 1 :])
        if len(rest):
            alive[rest[iou_row(i, order[rest])]] = False
    return np.asarray(keep, np.int64)


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, by descending score (torchvision ``nms`` semantics:
    a box is suppressed when its IoU with a kept, higher-scoring box is > threshold)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    return _greedy_nms(order, lambda i, others: box_iou(boxes[i], boxes[others])[0] > iou_threshold)


def mask_iou_matrix(masks: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(N, H, W) bool -> (N, N) float32 pairwise mask IoU (float32 matmul, chunked)."""
    masks = np.asarray(masks, bool)
    n = len(masks)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    flat = masks.reshape(n, -1).astype(np.float32)
    area = flat.sum(axis=1)
    out = np.empty((n, n), np.float32)
    for start in range(0, n, chunk):
        inter = flat[start : start + chunk] @ flat.T
        union = area[start : start + chunk, None] + area[None, :] - inter
        np.divide(inter, union, out=out[start : start + chunk], where=union > 0)
        out[start : start + chunk][union <= 0] = 0.0
    return out


def mask_nms(masks: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Like ``box_nms`` with the IoU of the masks themselves (any resolution)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    if len(scores) == 0:
        return np.zeros(0, np.int64)
    ious = mask_iou_matrix(masks)
    order = np.argsort(-scores, kind="stable")
    return _greedy_nms(order, lambda i, others: ious[i, others] > iou_threshold)


# ----------------------------------------------------------------------------------
# small regions


def remove_small_regions(mask: np.ndarray, area_threshold: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode='holes'``) or drop islands (``mode='islands'``) smaller than
    ``area_threshold`` pixels (8-connectivity), as SAM's ``remove_small_regions``.
    Returns (mask, changed). When every island is small, the largest one is kept."""
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', not {mode!r}")
    correct_holes = mode == "holes"
    working = (correct_holes ^ np.asarray(mask, bool)).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is the background
    small = [i + 1 for i, s in enumerate(sizes) if s < area_threshold]
    if not small:
        return np.asarray(mask, bool), False
    fill = [0] + small
    if not correct_holes:
        fill = [i for i in range(n_labels) if i not in fill]
        if not fill:  # every island is small: keep the largest
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def clean_mask(mask: np.ndarray, area_threshold: float) -> tuple[np.ndarray, bool]:
    """Fill small holes, then drop small islands; (mask, changed)."""
    mask, changed_holes = remove_small_regions(mask, area_threshold, "holes")
    mask, changed_islands = remove_small_regions(mask, area_threshold, "islands")
    return mask, changed_holes or changed_islands


# ----------------------------------------------------------------------------------
# RLE (COCO) without pycocotools


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> uncompressed COCO RLE ``{"size": [h, w], "counts": [...]}``
    (column-major runs, the first run counts zeros and may be 0)."""
    mask = np.asarray(mask, bool)
    h, w = mask.shape
    flat = mask.reshape(-1, order="F") if mask.size else mask.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": [int(c) for c in counts]}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Uncompressed or compressed COCO RLE -> (H, W) bool."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_from_string(counts)
    counts = np.asarray(counts, np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {int(counts.sum())}, expected {h * w}")
    values = np.zeros(len(counts), bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(w, h).T.copy()


def rle_area(rle: dict[str, Any]) -> int:
    counts = rle["counts"]
    if isinstance(counts, (str, bytes)):
        counts = rle_from_string(counts)
    return int(sum(counts[1::2]))


def rle_to_string(counts: Iterable[int]) -> str:
    """Run lengths -> pycocotools' compressed string (``rleToString``: 5-bit groups,
    differences to the count two back from the fourth count on)."""
    counts = [int(c) for c in counts]
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_from_string(s: str | bytes) -> list[int]:
    """pycocotools' compressed string -> run lengths (``rleFrString``)."""
    if isinstance(s, bytes):
        s = s.decode("ascii")
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = 0
        k = 0
        more = True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def mask_to_coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """(H, W) bool -> compressed COCO RLE ``{"size": [h, w], "counts": str}`` as
    pycocotools' ``mask.encode`` writes it (json-serialisable)."""
    rle = mask_to_rle(mask)
    return {"size": rle["size"], "counts": rle_to_string(rle["counts"])}


def coco_bbox(box_inclusive: np.ndarray) -> list[float]:
    """Inclusive x0, y0, x1, y1 -> COCO ``[x, y, w, h]`` covering whole pixels (what
    pycocotools' ``toBbox`` gives: ``w = x1 - x0 + 1``); an empty mask gives zeros."""
    x0, y0, x1, y1 = (float(v) for v in box_inclusive)
    if x1 < x0 or y1 < y0:
        return [0.0, 0.0, 0.0, 0.0]
    return [x0, y0, x1 - x0 + 1.0, y1 - y0 + 1.0]


def coco_annotations(
    masks: np.ndarray,
    iou_predictions: np.ndarray,
    stability_scores_: np.ndarray,
    image_id: int = 1,
    category_id: int = 1,
    start_id: int = 1,
    point_coords: np.ndarray | None = None,
    prompt_boxes: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """One COCO annotation per mask: compressed RLE, area, bbox (COCO xywh),
    predicted_iou, stability_score (and the prompt that made it when known)."""
    boxes = masks_to_boxes(masks)
    anns = []
    for k, mask in enumerate(np.asarray(masks, bool)):
        area = int(np.count_nonzero(mask))
        ann: dict[str, Any] = {
            "id": start_id + k,
            "image_id": image_id,
            "category_id": category_id,
            "segmentation": mask_to_coco_rle(mask),
            "area": area,
            "bbox": coco_bbox(boxes[k]) if area else [0.0, 0.0, 0.0, 0.0],
            "iscrowd": 0,
            "predicted_iou": float(iou_predictions[k]),
            "stability_score": float(stability_scores_[k]),
        }
        if point_coords is not None:
            ann["point_coords"] = [[float(v) for v in point_coords[k]]]
        if prompt_boxes is not None:
            ann["prompt_box"] = [float(v) for v in prompt_boxes[k]]
        anns.append(ann)
    return anns


def coco_document(
    annotations: list[dict[str, Any]], height: int, width: int, file_name: str = "", image_id: int = 1, **info: Any
) -> dict[str, Any]:
    """A minimal COCO results file: one image, one category, the annotations."""
    doc: dict[str, Any] = {
        "images": [{"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)}],
        "categories": [{"id": 1, "name": "object", "supercategory": "object"}],
        "annotations": annotations,
    }
    if info:
        doc["info"] = info
    return doc


def write_coco_json(path, document: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f)
