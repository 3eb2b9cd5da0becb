"""TinySAM's hierarchical segment-everything (``SamHierarchicalMaskGenerator``).

1. A sparse grid of ``points_per_side // 4`` points per side, decoded and filtered
   like SAM's grid; the masks that pass are ORed together where their logits exceed
   a high threshold (8.5): the "covered" map.
2. Around every sparse point, dense points at the full grid's stride
   (``w // points_per_side``, ``h // points_per_side``): the 3x3 neighbourhood
   without the centre, plus the +2 column and row (and the +2, +2 corner) when they
   fall inside the image: up to 15 points each. A dense point is skipped when the
   covered map is set at ``(int(y), int(x))``.
3. The dense points are decoded and filtered the same way, and one box NMS runs over
   the masks of both passes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

#: offsets (in dense strides) around each sparse point, TinySAM's order
_NEIGHBOURS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]


def dense_points(
    sparse_points: np.ndarray,
    original_size: tuple[int, int],
    points_per_side: int,
    is_covered: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """(S, 2) sparse points (original pixels) -> (D, 2) dense points to decode.

    ``is_covered(xs, ys)`` -> bool array tells which candidate points lie in the
    high-confidence union of the sparse pass (None: nothing is covered).
    """
    h, w = original_size
    stride_x, stride_y = w // points_per_side, h // points_per_side
    candidates = []
    for x, y in np.asarray(sparse_points, np.float64).reshape(-1, 2):
        for dx, dy in _NEIGHBOURS:
            candidates.append((x + stride_x * dx, y + stride_y * dy))
        right_ok = x + stride_x * 2 < w
        down_ok = y + stride_y * 2 < h
        if right_ok:
            candidates.extend((x + stride_x * 2, y + stride_y * dy) for dy in (-1, 0, 1))
        if down_ok:
            candidates.extend((x + stride_x * dx, y + stride_y * 2) for dx in (-1, 0, 1))
        if right_ok and down_ok:
            candidates.append((x + stride_x * 2, y + stride_y * 2))
    points = np.asarray(candidates, np.float64).reshape(-1, 2)
    if len(points) == 0 or is_covered is None:
        return points
    covered = np.asarray(is_covered(points[:, 0], points[:, 1]), bool)
    return points[~covered]


class CoverageMap:
    """The union of high-confidence masks, at full or low resolution, queried at points
    given in original pixels."""

    def __init__(self, shape: tuple[int, int], scale_xy: tuple[float, float] = (1.0, 1.0)) -> None:
        self.covered = np.zeros(shape, bool)
        self.scale_x, self.scale_y = scale_xy  # original pixels -> map pixels

    def add(self, masks: np.ndarray) -> None:
        """OR (N, h, w) or (h, w) bool masks into the map's top-left corner."""
        masks = np.asarray(masks, bool)
        if masks.ndim == 3:
            if len(masks) == 0:
                return
            masks = masks.any(axis=0)
        h, w = masks.shape
        self.covered[:h, :w] |= masks

    def __call__(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        cols = np.clip((np.asarray(xs) * self.scale_x).astype(np.int64), 0, self.covered.shape[1] - 1)
        rows = np.clip((np.asarray(ys) * self.scale_y).astype(np.int64), 0, self.covered.shape[0] - 1)
        return self.covered[rows, cols]

    @property
    def fraction(self) -> float:
        return float(self.covered.mean()) if self.covered.size else 0.0
