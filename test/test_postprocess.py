"""Fast mask post-processing gives the reference's masks (transforms.logits_to_masks)."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam_ros.postprocess import MaskPostprocessor, composite_matrix, get_postprocessor, logits_to_masks_fast
from mobilesam_ros.transforms import logits_to_masks, preprocess_shape, upscale_logits

SIZES = [(770, 769), (1365, 2048), (1080, 1920), (480, 640), (512, 512), (1024, 1024), (100, 50), (33, 700)]


def _blobs(rng, count, input_size):
    """Logits like real masks: a few compact positive regions, anywhere in the image part."""
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    out = np.empty((count, 256, 256), np.float32)
    h, w = max(4, input_size[0] // 4), max(4, input_size[1] // 4)
    for i in range(count):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, 50)
        out[i] = (r - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)) * rng.uniform(0.2, 3) + rng.normal(0, 0.3, (256, 256))
    return out


def _iou(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    union = (a | b).sum(1)
    return np.where(union > 0, (a & b).sum(1) / np.maximum(union, 1), 1.0)


@pytest.mark.parametrize("size", SIZES)
def test_same_masks_as_the_reference_path(size):
    rng = np.random.default_rng(sum(size))
    input_size = preprocess_shape(*size)
    logits = np.concatenate([
        _blobs(rng, 12, input_size),
        rng.normal(0, 2, (2, 256, 256)).astype(np.float32),  # noise: the full path
        np.full((1, 256, 256), -3, np.float32),  # empty
        np.full((1, 256, 256), 2, np.float32),  # everything
    ])
    post = MaskPostprocessor(size, input_size)
    got = post.masks(logits.reshape(4, 4, 256, 256))
    want = logits_to_masks(logits, size, input_size)
    assert got.shape == (4, 4, *size) and got.dtype == bool
    ious = _iou(got.reshape(-1, *size), want)
    assert ious.min() >= 0.999, ious
    assert post.stats["box"] > 0 and post.stats["empty"] > 0


def test_composite_matrix_is_the_two_resizes():
    rng = np.random.default_rng(0)
    for size in SIZES:
        input_size = preprocess_shape(*size)
        logits = rng.normal(0, 3, (256, 256)).astype(np.float32)
        ay = composite_matrix(size[0], input_size[0])
        ax = composite_matrix(size[1], input_size[1])
        assert np.allclose(ay.sum(1), 1.0) and (ay >= 0).all()  # convex combinations
        assert np.abs(ay @ logits @ ax.T - upscale_logits(logits, size, input_size)).max() < 1e-4


def test_threshold_other_than_zero():
    rng = np.random.default_rng(1)
    size = (600, 800)
    input_size = preprocess_shape(*size)
    logits = _blobs(rng, 6, input_size)
    for threshold in (-1.0, 2.5):
        got = get_postprocessor(size, input_size, threshold).masks(logits)
        assert _iou(got, logits_to_masks(logits, size, input_size, threshold)).min() >= 0.999


def test_buffers_are_recycled_only_when_released():
    size = (300, 400)
    input_size = preprocess_shape(*size)
    rng = np.random.default_rng(2)
    post = MaskPostprocessor(size, input_size)
    first = post.masks(_blobs(rng, 3, input_size))
    kept = first.copy()
    second = post.masks(_blobs(rng, 3, input_size))
    assert not np.shares_memory(first, second)  # first is still held
    assert np.array_equal(first, kept)
    third_logits = np.full((2, 256, 256), -5, np.float32)
    del first
    third = post.masks(third_logits)
    assert not third.any()  # a recycled buffer comes back cleared
    assert np.array_equal(logits_to_masks_fast(third_logits, size, input_size), third)


def test_get_postprocessor_caches_per_size():
    a = get_postprocessor((480, 640), (768, 1024))
    assert get_postprocessor((480, 640), (768, 1024)) is a
    assert get_postprocessor((480, 640), (768, 1024), 1.0) is not a
