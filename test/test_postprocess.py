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


def test_masks_into_a_buffer_of_the_callers():
    size = (300, 400)
    input_size = preprocess_shape(*size)
    rng = np.random.default_rng(3)
    logits = np.concatenate([_blobs(rng, 6, input_size), rng.normal(size=(1, 256, 256)).astype(np.float32)])
    post = MaskPostprocessor(size, input_size)
    want = post.masks(logits).copy()
    buffer = np.ones((3, *size), bool)  # stale contents: overwritten
    got = []
    for start in range(0, 7, 3):
        part = buffer[: min(3, 7 - start)]
        post.masks_into(logits[start : start + 3], part)
        got.append(part.copy())
    assert np.array_equal(np.concatenate(got), want)  # blobs and speckle alike
    with pytest.raises(ValueError):
        post.masks_into(logits[:2], buffer)


def test_get_postprocessor_caches_per_size():
    a = get_postprocessor((480, 640), (768, 1024))
    assert get_postprocessor((480, 640), (768, 1024)) is a
    assert get_postprocessor((480, 640), (768, 1024), 1.0) is not a


# --- bit-exactness with the reference arithmetic (postprocess.reference_masks) -----------
def _speckle(rng, count):
    """Logits like a random-weight decoder's: a 4 x 4 sub-pixel pattern, signs flipping
    between neighbouring low-res cells (the boundary is everywhere)."""
    base = rng.normal(0, 1, (count, 64, 64)).astype(np.float32)
    phase = rng.normal(0, 2, (count, 4, 4)).astype(np.float32)
    return np.repeat(np.repeat(base, 4, 1), 4, 2) + np.tile(phase, (1, 64, 64))


def _rings(rng, count, input_size):
    """Boundary-heavy but structured: concentric rings and stripes crossing zero often."""
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    out = np.empty((count, 256, 256), np.float32)
    for i in range(count):
        cy, cx = rng.uniform(0, input_size[0] / 4), rng.uniform(0, input_size[1] / 4)
        out[i] = np.sin(np.hypot(yy - cy, xx - cx) / rng.uniform(1, 6)) * rng.uniform(0.5, 5)
        out[i] += np.cos(xx / rng.uniform(2, 9)) * rng.uniform(0, 2)
    return out


@pytest.mark.parametrize("size", [(1365, 2048), (770, 769), (1024, 1024), (100, 50), (33, 700)])
def test_masks_bit_exact_with_reference(size):
    from mobilesam_ros.postprocess import reference_masks

    rng = np.random.default_rng(sum(size) + 7)
    input_size = preprocess_shape(*size)
    full_cover = np.full((1, 256, 256), 3, np.float32)
    full_cover[0, :4, :4] = 1e-3  # barely above the threshold: still covered, near it
    logits = np.concatenate([
        _blobs(rng, 3, input_size),
        _rings(rng, 1, input_size),
        _speckle(rng, 1),
        full_cover,
        np.full((1, 256, 256), 5, np.float32),  # covers the image: no interpolation at all
        np.full((1, 256, 256), -1e-7, np.float32),  # all just below the threshold
        np.zeros((1, 256, 256), np.float32),  # exactly at the threshold: all False
    ])
    post = MaskPostprocessor(size, input_size)
    got = post.masks(logits)
    want = reference_masks(logits, size, input_size)
    assert np.array_equal(got, want), [int((g != w).sum()) for g, w in zip(got, want)]
    assert got[-4].all() and not got[-2].any() and not got[-1].any()
    assert post.stats["full"] >= 1 and post.stats["box"] >= 1  # both paths were exercised


def test_bit_exact_at_other_thresholds_and_odd_values():
    from mobilesam_ros.postprocess import reference_masks

    rng = np.random.default_rng(3)
    size = (720, 1280)
    input_size = preprocess_shape(*size)
    logits = np.concatenate([_blobs(rng, 3, input_size), _speckle(rng, 2)])
    for threshold in (-1.5, 0.7):
        got = MaskPostprocessor(size, input_size, threshold).masks(logits)
        assert np.array_equal(got, reference_masks(logits, size, input_size, threshold))
    odd = _blobs(rng, 2, input_size)
    odd[0, 40, 40] = np.nan  # NaN and inf spread as in the reference arithmetic
    odd[1, 10, 10] = np.inf
    assert np.array_equal(MaskPostprocessor(size, input_size).masks(odd), reference_masks(odd, size, input_size))


def test_cost_follows_the_boundary():
    """A compact mask interpolates only a thin band; a covering mask none at all."""
    size = (1365, 2048)
    input_size = preprocess_shape(*size)
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    disc = (60 - np.hypot(yy - 85, xx - 128)).astype(np.float32)[None]  # radius ~480 px at full size
    post = MaskPostprocessor(size, input_size)
    mask = post.masks(disc)[0]
    boundary = post.stats["boundary_pixels"]
    perimeter = 2 * np.pi * 480
    assert post.stats["box"] == 1 and 0 < boundary < 20 * perimeter < 0.05 * mask.size
    assert mask.sum() > 0.2 * mask.size  # ... while the mask itself is large
    post.masks(np.full((1, 256, 256), 4, np.float32))
    assert post.stats["boundary_pixels"] == boundary


def test_reference_upscale_is_torch_interpolate():
    """The reference arithmetic is torch's F.interpolate (to float rounding), and its masks
    equal the parity fixture's (made with F.interpolate) on all but a pixel or so."""
    torch = pytest.importorskip("torch")
    import json
    from pathlib import Path

    import torch.nn.functional as F

    from mobilesam_ros.postprocess import reference_upscale

    rng = np.random.default_rng(4)
    for size in ((1365, 2048), (770, 769)):
        input_size = preprocess_shape(*size)
        low = rng.normal(0, 3, (256, 256)).astype(np.float32)
        t = F.interpolate(torch.from_numpy(low)[None, None], (1024, 1024), mode="bilinear", align_corners=False)
        t = F.interpolate(t[..., : input_size[0], : input_size[1]], size, mode="bilinear", align_corners=False)
        assert np.abs(reference_upscale(low, size, input_size) - t[0, 0].numpy()).max() < 1e-5
    fixture = Path(__file__).resolve().parents[1] / ".." / "shared" / "fixtures" / "parity"
    if not (fixture / "expected.npz").exists():
        return
    expected = np.load(fixture / "expected.npz")
    differing = total = 0
    for case in json.loads((fixture / "cases.json").read_text())["cases"]:
        key = f"{case['image']}/{case['id']}"
        if key + "/low_res_logits" not in expected or case["image"] != "picture1.jpg":  # the small image: fast
            continue
        size = tuple(case["image_size"])
        want = np.unpackbits(expected[key + "/masks"], axis=-1, count=size[1]).astype(bool)
        got = logits_to_masks_fast(expected[key + "/low_res_logits"], size, preprocess_shape(*size))
        differing += int((got.reshape(want.shape) != want).sum())
        total += want.size
    assert total > 0 and differing <= 1e-6 * total, (differing, total)
