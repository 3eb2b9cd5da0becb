"""SAM's grid generator against the reference (fixture case `amg`) and the grid helpers."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from mobilesam_ros.everything.grid import box_prompt_arrays, build_point_grid, grid_points, point_prompt_arrays
from mobilesam_ros.everything.hierarchical import CoverageMap, dense_points
from mobilesam_ros.predictor import Prompt, prompt_points
from mobilesam_ros.runtime.base import Runtime

from parity import expected_masks, mask_ious

H, W = 770, 769  # picture1.jpg


class CachingRuntime(Runtime):
    """Decode each distinct batch once, so several configurations share the decoder work."""

    def __init__(self, inner: Runtime) -> None:
        self.inner = inner
        self.name = inner.name
        self.num_mask_outputs = inner.num_mask_outputs
        self.cache: dict = {}
        self.calls = 0

    def encode(self, image):
        return self.inner.encode(image)

    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        key = (hashlib.sha1(image_embeddings.tobytes()).hexdigest(), point_coords.tobytes(), point_labels.tobytes())
        if key not in self.cache:
            self.calls += 1
            out = self.inner.decode(image_embeddings, point_coords, point_labels, mask_input, has_mask_input)
            # runtimes may return views of buffers they reuse on the next call: copy
            self.cache[key] = type(out)(out.iou_predictions.copy(), out.low_res_masks.copy())
        return self.cache[key]


@pytest.fixture(scope="module")
def expected(parity_dir):
    return np.load(parity_dir / "expected.npz")


@pytest.fixture(scope="module")
def predictor(parity_dir):
    pytest.importorskip("torch")
    from mobilesam_ros.predictor import SamPredictor
    from mobilesam_ros.runtime import create_runtime

    return SamPredictor(CachingRuntime(create_runtime(parity_dir / "checkpoint.pt", "torch")))


def test_point_grid_is_sams():
    grid = build_point_grid(4)
    assert grid.shape == (16, 2)
    np.testing.assert_allclose(grid[:5], [[0.125, 0.125], [0.375, 0.125], [0.625, 0.125], [0.875, 0.125], [0.125, 0.375]])
    pts = grid_points(2, (100, 200))
    np.testing.assert_allclose(pts, [[50, 25], [150, 25], [50, 75], [150, 75]])


def test_batched_prompt_arrays_match_the_predictor():
    size, input_size = (H, W), (1024, 1023)
    points = np.array([[10.5, 20.25], [700.0, 3.0]])
    coords, labels = point_prompt_arrays(points, size, input_size)
    boxes = np.array([[1.0, 2.0, 300.0, 400.0], [5.5, 6.5, 700.0, 760.0]])
    bcoords, blabels = box_prompt_arrays(boxes, size, input_size)
    for i in range(2):
        want_c, want_l = prompt_points(Prompt(points[i : i + 1], np.array([1])), size, input_size)
        np.testing.assert_array_equal(coords[i], want_c)
        np.testing.assert_array_equal(labels[i], want_l)
        want_c, want_l = prompt_points(Prompt(box=boxes[i]), size, input_size)
        np.testing.assert_array_equal(bcoords[i], want_c)
        np.testing.assert_array_equal(blabels[i], want_l)


def test_hierarchical_dense_points():
    sparse = grid_points(2, (64, 64))  # (16, 16), (48, 16), (16, 48), (48, 48); dense stride 8
    pts = dense_points(sparse, (64, 64), 8)
    assert len(pts) == 15 + 11 + 11 + 8  # the +2 column / row stop at the image edge
    first = {tuple(p) for p in pts[:15]}
    assert first == {(x, y) for x in (8, 16, 24, 32) for y in (8, 16, 24, 32)} - {(16, 16)}
    cover = CoverageMap((64, 64))
    left = np.zeros((64, 64), bool)
    left[:, :32] = True
    cover.add(left)
    pts = dense_points(sparse, (64, 64), 8, cover)
    assert len(pts) == 4 + 3 + 11 + 8 and (pts[:, 0] >= 32).all()
    # a low-resolution map is looked up through its scale
    low = CoverageMap((16, 16), (0.25, 0.25))
    low.add(left[::4, ::4])
    np.testing.assert_array_equal(low(np.array([31.0, 32.0]), np.array([5.0, 5.0])), [True, False])


def _amg_config(parity_dir, exact: bool):
    from mobilesam_ros.everything import EverythingConfig

    case = next(c for c in json.loads((parity_dir / "cases.json").read_text())["cases"] if c["id"] == "amg")
    g = case["generator"]
    return EverythingConfig(
        strategy="grid",
        points_per_side=g["points_per_side"],
        points_per_batch=g["points_per_batch"],
        pred_iou_thresh=g["pred_iou_thresh"],
        stability_score_thresh=g["stability_score_thresh"],
        nms="box",
        nms_thresh=g["box_nms_thresh"],
        remove_small_regions=g["min_mask_region_area"],
        exact=exact,
    )


@pytest.mark.parametrize("exact", [True, False], ids=["exact", "lowres_first"])
def test_grid_matches_reference_amg(parity_dir, expected, predictor, exact):
    """Both post-processing modes reproduce the reference generator on the fixture."""
    from mobilesam_ros.everything import EverythingSegmenter

    emb = predictor.set_embedding(expected["picture1.jpg/embedding"], (H, W))
    result = EverythingSegmenter(predictor, _amg_config(parity_dir, exact)).segment(None, embedding=emb)
    want_masks = expected_masks(expected, "picture1.jpg/amg", W)
    assert len(result) == len(want_masks) == 1, result.stats
    assert result.decoder_calls == 1  # 64 points in one batch of 64
    assert result.masks.shape == (1, H, W) and result.masks.dtype == bool
    assert mask_ious(result.masks, want_masks).min() >= 0.99
    np.testing.assert_allclose(result.iou_predictions, expected["picture1.jpg/amg/predicted_iou"], atol=1e-3)
    np.testing.assert_allclose(result.stability_scores, expected["picture1.jpg/amg/stability_score"], atol=1e-3)
    x0, y0, x1, y1 = result.boxes.T
    bbox_xywh = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)  # SAM's bbox
    np.testing.assert_allclose(bbox_xywh, expected["picture1.jpg/amg/bbox_xywh"], atol=1.0)
    np.testing.assert_array_equal(result.points.astype(np.float32), expected["picture1.jpg/amg/point"])
    assert result.stats["decoded_masks"] == 192  # 64 points x 3 masks
    if exact:
        assert result.stats["upsampled"] >= 192  # every candidate, as the reference
    else:
        assert result.stats["upsampled"] < 192  # low-res first: only what NMS reaches
