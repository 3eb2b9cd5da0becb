"""Proof (3) of the depth issue: with a model whose masks follow objects (the toy-world
model), objects at known depths in a rendered RGB-D sequence are reported within 3 cm.

The sequence: toy-world scenes (exact instance masks) with a depth image rendered for
them: a wall at 2.5 m, each shape a plane at its own known depth (0.6 - 2.2 m, some
tilted), 0.3 % depth noise, 5 % holes, flying pixels along every shape's edge. Each
shape is prompted with its true box (as a detector would); the model's mask goes
through ``objects_from_depth``; the truth is the same measurement on the true mask and
the noise-free depth, and the depth the shape was placed at.

The model: ``MOBILESAM_TOY_CHECKPOINT`` (a checkpoint file), else the toy-world model
built from the tensors shipped in the package (``mobilesam-ros synthetic-checkpoint
--toy``). Without either the test skips and says why.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

from mobilesam_ros.live.rgbd import objects_from_depth

FX = 525.0
FRAMES = 6
TOLERANCE_M = 0.03


def render_depth(masks: np.ndarray, rng: np.random.Generator, K: np.ndarray):
    """Noise-free and measured depth (metres) for a toy scene, and each shape's depth at its centre."""
    h, w = masks.shape[1:]
    u = np.arange(w, dtype=np.float64)[None, :]
    clean = np.full((h, w), 2.5)
    placed = []
    for mask in masks:
        z0 = rng.uniform(0.6, 2.2)
        slope = rng.choice([0.0, rng.uniform(-0.0015, 0.0015)])  # metres per pixel: a turned face
        ys, xs = np.nonzero(mask)
        plane = z0 + slope * (u - xs.mean())
        clean = np.where(mask, np.broadcast_to(plane, (h, w)), clean)
        placed.append(z0)
    measured = clean * (1 + rng.normal(0, 0.003, clean.shape))
    edges = np.zeros((h, w), bool)
    for mask in masks:  # flying pixels: 1 px either side of each edge, between the shape and what is behind
        m8 = mask.view(np.uint8)
        edges |= (cv2.dilate(m8, np.ones((3, 3), np.uint8)) > 0) & ~(cv2.erode(m8, np.ones((3, 3), np.uint8)) > 0)
    measured[edges] = rng.uniform(0.6, 2.5, int(edges.sum()))
    measured[rng.uniform(size=clean.shape) < 0.05] = 0.0
    return clean, np.round(measured * 1000).astype(np.uint16), placed


MASK_ON_OBJECT = 0.8
SPILL_LIMIT = 0.1


def test_toy_world_objects_at_known_depth_within_3_cm(toy_checkpoint):
    from mobilesam_ros.predictor import SamPredictor
    from mobilesam_ros.runtime import create_runtime
    from mobilesam_ros.toy.evaluate import eval_scene

    predictor = SamPredictor(create_runtime(str(toy_checkpoint), backend="torch"))
    rng = np.random.default_rng(11)
    K = np.array([[FX, 0, 319.5], [0, FX, 239.5], [0, 0, 1]])
    errors = []
    for frame in range(FRAMES):
        scene = eval_scene(100 + frame)
        clean, depth_mm, placed = render_depth(scene.masks, rng, K)
        predictor.set_image(scene.image)
        result = predictor.predict_boxes(scene.boxes())
        masks = result.masks[:, 0]
        got = objects_from_depth(masks, depth_mm, K)
        truth = objects_from_depth(scene.masks, clean.astype(np.float32), K)
        for i, (obj, true) in enumerate(zip(got, truth)):
            assert obj is not None, (frame, i, got.reasons[i])
            # an occluded shape's tight box holds part of the shape in front of it, and the
            # model's mask may spill onto that nearer shape: then the front surface the
            # mask measures is rightly the other object's. Where the mask is on its own
            # object (IoU >= MASK_ON_OBJECT, under SPILL_LIMIT of it on other shapes), its
            # 3D must be right. (Measured: 19 of 24 objects qualify, IoU 0.90 - 0.98.)
            mask_iou = float((masks[i] & scene.masks[i]).sum() / max(1, (masks[i] | scene.masks[i]).sum()))
            others = np.delete(scene.masks, i, axis=0).any(0)
            spill = float((masks[i] & others).sum() / max(1, masks[i].sum()))
            if mask_iou < MASK_ON_OBJECT or spill > SPILL_LIMIT:
                continue
            error = float(np.linalg.norm(obj.centroid - true.centroid))
            errors.append(error)
            assert error <= TOLERANCE_M, (frame, i, mask_iou, obj.centroid, true.centroid)
            # the depth the shape was placed at (its plane's depth at the mask's mean column)
            assert abs(obj.median_depth - placed[i]) <= TOLERANCE_M, (frame, i, obj.median_depth, placed[i])
    # measured: 19 objects with a mask on their object, centroid error mean 2.1 mm, max
    # 4.7 mm; floors: one object fewer (a mask IoU near MASK_ON_OBJECT may fall either
    # side on another machine's floats), mean within 3 mm
    assert len(errors) >= 18, f"only {len(errors)} objects with a mask on the object"
    assert np.mean(errors) <= 0.003, np.mean(errors)
    print(f"toy-world RGB-D: {len(errors)} objects, centroid error mean {1000 * np.mean(errors):.1f} mm, "
          f"max {1000 * np.max(errors):.1f} mm")
