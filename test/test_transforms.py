"""Pre/post-processing without torch, checked against torch where torch defines it."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam_ros.transforms import (
    PIXEL_MEAN,
    PIXEL_STD,
    ImagePreprocessor,
    apply_coords,
    logits_to_masks,
    preprocess_shape,
    resize_longest_side,
    upscale_logits,
)


def test_preprocess_shape_rounds_like_the_reference():
    assert preprocess_shape(770, 769) == (1024, 1023)
    assert preprocess_shape(1365, 2048) == (683, 1024)
    assert preprocess_shape(480, 640) == (768, 1024)
    assert preprocess_shape(1024, 1024) == (1024, 1024)


def test_normalise_and_pad_reuses_one_buffer():
    pre = ImagePreprocessor()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)
    out = pre(img)
    assert out.shape == (1, 3, 1024, 1024) and out.dtype == np.float32
    want = (img.astype(np.float32) - PIXEL_MEAN) / PIXEL_STD
    np.testing.assert_allclose(out[0, :, :768, :].transpose(1, 2, 0), want, atol=1e-5)
    assert not out[0, :, 768:].any()
    small = rng.integers(0, 256, (100, 50, 3), dtype=np.uint8)
    out2 = pre(small)
    assert out2 is out  # no per-frame allocation
    assert not out2[0, :, 100:].any() and not out2[0, :, :, 50:].any()


def test_resize_rejects_non_rgb():
    with pytest.raises(ValueError):
        resize_longest_side(np.zeros((10, 10), np.uint8))


def test_apply_coords_scales_per_axis():
    coords = apply_coords(np.array([[769.0, 770.0]]), (770, 769), (1024, 1023))
    np.testing.assert_allclose(coords, [[1023.0, 1024.0]], rtol=1e-6)


def test_upscale_matches_torch_interpolate():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    low = rng.normal(size=(256, 256)).astype(np.float32)
    for original, input_size in (((1365, 2048), (683, 1024)), ((770, 769), (1024, 1023))):
        t = torch.from_numpy(low)[None, None]
        t = F.interpolate(t, (1024, 1024), mode="bilinear", align_corners=False)
        t = t[..., : input_size[0], : input_size[1]]
        t = F.interpolate(t, original, mode="bilinear", align_corners=False)[0, 0].numpy()
        ours = upscale_logits(low, original, input_size)
        assert np.abs(ours - t).max() < 1e-4
        masks = logits_to_masks(low[None], original, input_size)
        assert masks.shape == (1, *original)
        assert (masks[0] == (t > 0)).mean() > 0.9999
