"""The PyTorch model reproduces the reference MobileSAM on the parity fixture."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from parity import EMBEDDING_ATOL, IMAGES, check_case, load_cases, run_case

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def predictor(parity_dir):
    from mobilesam_ros.predictor import SamPredictor
    from mobilesam_ros.runtime import create_runtime

    return SamPredictor(create_runtime(parity_dir / "checkpoint.pt", "torch"))


@pytest.fixture(scope="module")
def expected(parity_dir):
    return np.load(parity_dir / "expected.npz")


@pytest.mark.parametrize("image", IMAGES)
def test_encoder_on_reference_resize(predictor, parity_dir, expected, image):
    resized = np.asarray(Image.open(parity_dir / "images" / f"{image}.resized.png").convert("RGB"))
    original_size = next(c.image_size for c in load_cases(parity_dir) if c.image == image)
    emb = predictor.set_resized_image(resized, original_size)
    assert emb.input_size == tuple(expected[f"{image}/input_size"])
    diff = np.abs(emb.embedding - expected[f"{image}/embedding"]).max()
    assert diff <= EMBEDDING_ATOL, diff


def test_decoder_on_stored_embedding(predictor, parity_dir, expected):
    cases = load_cases(parity_dir)
    assert len(cases) == 12
    for case in cases:
        emb = predictor.set_embedding(expected[f"{case.image}/embedding"], case.image_size)
        iou, logits, masks = run_case(predictor, case, expected, emb)
        check_case(case, expected, iou, logits, masks)


@pytest.mark.parametrize("image", IMAGES)
def test_end_to_end_from_original_image(predictor, parity_dir, expected, image):
    from mobilesam_ros.commands._common import load_image

    rgb = load_image(parity_dir / "images" / image)
    emb = predictor.set_image(rgb, key=image)
    assert np.abs(emb.embedding - expected[f"{image}/embedding"]).max() <= EMBEDDING_ATOL
    for case in (c for c in load_cases(parity_dir) if c.image == image):
        iou, logits, masks = run_case(predictor, case, expected, emb)
        check_case(case, expected, iou, logits, masks)
