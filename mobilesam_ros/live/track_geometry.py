"""Geometry of the tracker (see live/tracking.py): box and mask IoU, greedy matching,
the decoder's low-res grid (:class:`LowRes`), box helpers and the velocity slope."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..geometry import IMAGE_SIZE, LOW_RES_SIZE

if TYPE_CHECKING:
    from .track_state import _Obs


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 4) x (B, 4) boxes -> (A, B) IoU."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _iou(a, b) -> float:
    """IoU of two boxes (x0, y0, x1, y1), in plain floats (many small calls per frame)."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = min(ax1, bx1) - max(ax0, bx0)
    ih = min(ay1, by1) - max(ay0, by0)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)


def _overlap(a: "_Obs", b: "_Obs") -> int:
    """Low-res pixels two cropped masks share."""
    u0, v0 = max(a.lbox[0], b.lbox[0]), max(a.lbox[1], b.lbox[1])
    u1, v1 = min(a.lbox[2], b.lbox[2]), min(a.lbox[3], b.lbox[3])
    if u1 <= u0 or v1 <= v0:
        return 0
    ca = a.small[v0 - a.lbox[1] : v1 - a.lbox[1], u0 - a.lbox[0] : u1 - a.lbox[0]]
    cb = b.small[v0 - b.lbox[1] : v1 - b.lbox[1], u0 - b.lbox[0] : u1 - b.lbox[0]]
    return int(np.count_nonzero(ca & cb))


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, N) x (B, N) flattened bool masks -> (A, B) IoU."""
    a = np.asarray(a, np.float32).reshape(len(a), -1)
    b = np.asarray(b, np.float32).reshape(len(b), -1)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col), highest IoU first, each row and column at most once, IoU >= threshold.

    Greedy rather than Hungarian: with well-separated objects both give the same pairs,
    and where they differ (two tracks about equally close to two boxes) neither is
    reliably right; greedy keeps the clearest match."""
    iou = np.asarray(iou)
    if iou.size == 0:
        return []
    order = np.argsort(-iou, axis=None, kind="stable")
    rows_used: set[int] = set()
    cols_used: set[int] = set()
    pairs = []
    for flat in order:
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold or not iou[r, c] > 0:
            break
        if r in rows_used or c in cols_used:
            continue
        rows_used.add(r)
        cols_used.add(c)
        pairs.append((r, c))
    return pairs


class LowRes:
    """Geometry of the decoder's 256x256 low-res logits for one frame size: the valid
    region (the resized image, the rest is padding) and the pixel <-> low-res maps."""

    def __init__(self, size: tuple[int, int]) -> None:
        h, w = size
        scale = IMAGE_SIZE / max(h, w)
        self.size = (h, w)
        self.factor = scale * LOW_RES_SIZE / IMAGE_SIZE  # original pixels -> low-res pixels
        self.valid = (min(LOW_RES_SIZE, math.ceil(h * self.factor)), min(LOW_RES_SIZE, math.ceil(w * self.factor)))

    def masks(self, logits: np.ndarray, threshold: float) -> np.ndarray:
        vh, vw = self.valid
        return logits[..., :vh, :vw] > threshold

    def crops(self, logits: np.ndarray, threshold: float) -> list[tuple[np.ndarray, tuple[int, int, int, int]] | None]:
        """(n, 256, 256) logits -> per mask (its low-res mask cropped to its box, the box
        (u0, v0, u1, v1) in low-res pixels), or None for an empty mask."""
        masks = self.masks(logits, threshold)
        rows_any, cols_any = masks.any(axis=2), masks.any(axis=1)
        out = []
        for i in range(len(masks)):
            rows, cols = np.flatnonzero(rows_any[i]), np.flatnonzero(cols_any[i])
            if rows.size == 0:
                out.append(None)
                continue
            v0, v1, u0, u1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            out.append((masks[i, v0:v1, u0:u1].copy(), (u0, v0, u1, v1)))
        return out

    def to_pixels(self, lbox) -> np.ndarray:
        return np.asarray(lbox, np.float32) / self.factor

    def interior_point(self, crop: np.ndarray, lbox) -> np.ndarray:
        """The most interior pixel of a cropped low-res mask (distance-transform maximum), in pixels."""
        padded = cv2.copyMakeBorder(crop.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
        v, u = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return np.array([(lbox[0] + u - 1 + 0.5) / self.factor, (lbox[1] + v - 1 + 0.5) / self.factor], np.float32)



def _low_res_box(box, factor: float, slack: float) -> tuple[int, int, int, int]:
    """A pixel box widened by ``slack`` of its size (and 2 low-res pixels) on each side,
    in low-res pixels (u0, v0, u1, v1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = slack * (x1 - x0), slack * (y1 - y0)
    return (max(0, int(math.floor((x0 - mx) * factor)) - 2), max(0, int(math.floor((y0 - my) * factor)) - 2),
            min(LOW_RES_SIZE, int(math.ceil((x1 + mx) * factor)) + 2),
            min(LOW_RES_SIZE, int(math.ceil((y1 + my) * factor)) + 2))


def _clip(box: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = size
    return (min(max(float(box[0]), 0.0), w), min(max(float(box[1]), 0.0), h),
            min(max(float(box[2]), 0.0), w), min(max(float(box[3]), 0.0), h))


def _size(box) -> float:
    """The smaller side of a box (pixels), at least 1."""
    return max(1.0, min(float(box[2] - box[0]), float(box[3] - box[1])))


def _slope(centres: list) -> np.ndarray:
    """Least-squares velocity (px per time unit) through [(time, x, y)]; zero for one point."""
    n = len(centres)
    if n < 2:
        return np.zeros(2, np.float32)
    # plain Python: at most VELOCITY_HISTORY points, far below numpy's per-call cost
    mt = sum(c[0] for c in centres) / n
    mx = sum(c[1] for c in centres) / n
    my = sum(c[2] for c in centres) / n
    denom = sum((c[0] - mt) ** 2 for c in centres)
    vx = sum((c[0] - mt) * (c[1] - mx) for c in centres) / denom
    vy = sum((c[0] - mt) * (c[2] - my) for c in centres) / denom
    return np.array([vx, vy], np.float32)

