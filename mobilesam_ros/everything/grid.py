"""SAM's point grid (``SamAutomaticMaskGenerator`` with one full-image crop).

Points are ``build_point_grid(n)`` (``offset = 1 / (2n)``, ``linspace(offset,
1 - offset, n)`` on each axis, x varying fastest) scaled by the ORIGINAL image's
width and height; each point is one decoder prompt (label 1 plus SAM's padding
point), decoded with multimask output (tokens 1..3, three masks per point) in
batches of ``points_per_batch``.
"""

from __future__ import annotations

import numpy as np

from ..geometry import LOW_RES_SIZE
from ..predictor import LABEL_BOX_BOTTOM_RIGHT, LABEL_BOX_TOP_LEFT, LABEL_FOREGROUND, LABEL_PADDING
from ..transforms import apply_coords


def build_point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points x, y in [0, 1], exactly SAM's ``build_point_grid``."""
    if n_per_side < 1:
        raise ValueError(f"points_per_side must be >= 1, got {n_per_side}")
    offset = 1 / (2 * n_per_side)
    points_one_side = np.linspace(offset, 1 - offset, n_per_side)
    points_x = np.tile(points_one_side[None, :], (n_per_side, 1))
    points_y = np.tile(points_one_side[:, None], (1, n_per_side))
    return np.stack([points_x, points_y], axis=-1).reshape(-1, 2)


def grid_points(n_per_side: int, original_size: tuple[int, int]) -> np.ndarray:
    """(n*n, 2) float64 grid points x, y in original pixels."""
    h, w = original_size
    return build_point_grid(n_per_side) * np.array([[w, h]], np.float64)


def point_prompt_arrays(
    points: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(B, 2) foreground points (original pixels) -> decoder coords (B, 2, 2) and labels
    (B, 2): the point in the model frame plus SAM's padding point (0, 0) / -1, as
    ``SamPredictor`` builds a single-point prompt."""
    pts = apply_coords(np.asarray(points).reshape(-1, 1, 2), original_size, input_size)
    coords = np.zeros((len(pts), 2, 2), np.float32)
    coords[:, :1] = pts
    labels = np.empty((len(pts), 2), np.float32)
    labels[:, 0] = LABEL_FOREGROUND
    labels[:, 1] = LABEL_PADDING
    return coords, labels


def box_prompt_arrays(
    boxes: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(B, 4) boxes x0, y0, x1, y1 (original pixels) -> coords (B, 2, 2), labels (B, 2)
    (corners with labels 2, 3, no padding point, as ``SamPredictor`` builds them)."""
    coords = apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size, input_size)
    labels = np.empty((len(coords), 2), np.float32)
    labels[:, 0] = LABEL_BOX_TOP_LEFT
    labels[:, 1] = LABEL_BOX_BOTTOM_RIGHT
    return coords, labels


def low_res_valid_size(input_size: tuple[int, int]) -> tuple[int, int]:
    """Rows and columns of the 256x256 low-res logits that cover the image (the rest
    covers the zero padding of the 1024x1024 model input)."""
    h_in, w_in = input_size
    scale = LOW_RES_SIZE / 1024
    return int(np.ceil(h_in * scale)), int(np.ceil(w_in * scale))
