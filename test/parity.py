"""Reading the reference-parity fixture and checking results against it.

Used by the parity tests of every runtime (torch, ONNX Runtime, ...)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# tolerances from the fixture README
EMBEDDING_ATOL = 1e-3
LOGITS_ATOL = 1e-3
IOU_ATOL = 1e-3
MIN_MASK_IOU = 0.99
IMAGES = ("picture1.jpg", "picture4.jpg")


@dataclass(frozen=True)
class Case:
    image: str
    id: str
    image_size: tuple[int, int]
    raw: dict

    @property
    def key(self) -> str:
        return f"{self.image}/{self.id}"


def load_cases(parity_dir: Path, include_amg: bool = False) -> list[Case]:
    cases = json.loads((parity_dir / "cases.json").read_text())["cases"]
    return [
        Case(c["image"], c["id"], tuple(c["image_size"]), c)
        for c in cases
        if include_amg or c["id"] != "amg"
    ]


def expected_masks(expected, key: str, width: int) -> np.ndarray:
    return np.unpackbits(expected[f"{key}/masks"], axis=-1, count=width).astype(bool)


def mask_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    inter = (a & b).sum(1)
    union = (a | b).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def run_case(predictor, case: Case, expected, embedding=None):
    """Decode one fixture case with a SamPredictor -> (iou, low_res_logits, masks) shaped like the fixture."""
    c = case.raw
    if "boxes" in c:
        result = predictor.predict_boxes(np.asarray(c["boxes"], np.float32), multimask_output=False, embedding=embedding)
        masks = result.masks[:, 0] if result.masks.shape[1] == 1 else result.masks  # TinySAM: (B, 3, H, W)
        return result.iou_predictions, result.low_res_logits, masks
    mask_input = None
    if "mask_from" in c:
        source = f"{case.image}/{c['mask_from']}"
        mask_input = expected[f"{source}/low_res_logits"][np.argmax(expected[f"{source}/iou_predictions"])]
    result = predictor.predict(
        np.asarray(c["points"], np.float32) if "points" in c else None,
        np.asarray(c["labels"], np.float32) if "labels" in c else None,
        np.asarray(c["box"], np.float32) if "box" in c else None,
        mask_input,
        multimask_output=c.get("multimask", False),  # TinySAM's cases have no flag: its model decides
        embedding=embedding,
    )
    return result.iou_predictions, result.low_res_logits, result.masks


def check_case(case: Case, expected, iou, logits, masks, check_logits: bool = True) -> dict:
    """Assert a case's outputs against the fixture; returns the measured differences."""
    key = case.key
    want_logits = expected[f"{key}/low_res_logits"]
    want_iou = expected[f"{key}/iou_predictions"]
    want_masks = expected_masks(expected, key, case.image_size[1])
    if masks.shape != want_masks.shape and [n for n in masks.shape if n != 1] == [n for n in want_masks.shape if n != 1]:
        masks = masks.reshape(want_masks.shape)  # (B, H, W) vs the MobileSAMv2 fixture's (B, 1, H, W)
    assert logits.shape == want_logits.shape, (key, logits.shape, want_logits.shape)
    assert iou.shape == want_iou.shape, (key, iou.shape, want_iou.shape)
    assert masks.shape == want_masks.shape, (key, masks.shape, want_masks.shape)
    measured = {
        "logits": float(np.abs(logits - want_logits).max()),
        "iou": float(np.abs(iou - want_iou).max()),
        "mask_iou": float(mask_ious(masks, want_masks).min()),
    }
    if check_logits:
        assert measured["logits"] <= LOGITS_ATOL, (key, measured)
        assert measured["iou"] <= IOU_ATOL, (key, measured)
    assert measured["mask_iou"] >= MIN_MASK_IOU, (key, measured)
    return measured
