"""The toy fine-tune's tracking-like prompts and widened scenes (no model: cheap)."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam_ros.toy.scenes import add_occluder, make_scene

pytest.importorskip("torch")


def test_occluder_hides_part_of_its_target_and_keeps_masks_exact():
    rng = np.random.default_rng(3)
    hidden = 0
    for seed in range(8):
        scene = make_scene(seed, num_objects=(2, 3))
        target = int(rng.integers(len(scene.masks)))
        after = add_occluder(scene, rng, target)
        assert (after.masks.sum(0) <= 1).all()  # visible masks stay disjoint
        for mask, colour in zip(after.masks, after.colours):
            assert mask.sum() >= 100 and (after.image[mask] == np.array(colour, np.uint8)).all()
        if len(after.masks) > len(scene.masks):
            kept = after.masks[target].sum() / scene.masks[target].sum()
            assert 0.35 <= kept < 1.0
            hidden += 1
    assert hidden >= 6  # measured 8 of 8 with these seeds


def test_tracking_prompts_are_loose_shifted_boxes_with_an_interior_point():
    from mobilesam_ros.toy.finetune import TrackingNoise, finetune_scene, tracking_prompt

    rng = np.random.default_rng(0)
    noise = TrackingNoise(loose=0.25, shift=0.15)
    inside = []
    for n in range(6):
        scene = finetune_scene(n)
        for k, (x0, y0, x1, y1) in enumerate(scene.boxes()):
            coords, labels, mask_input = tracking_prompt(rng, scene, k, "track-refine", noise)
            assert labels.tolist() == [1, 2, 3] and mask_input.shape == (256, 256)
            (px, py), (bx0, by0), (bx1, by1) = coords
            w, h = x1 - x0, y1 - y0
            # off by at most the shift plus the previous mask's erosion / dilation, widened by at most 25 %
            slack = 0.15 + 0.06 + 0.25 + 1e-3
            assert bx0 >= x0 - slack * w - 1 and bx1 <= x1 + slack * w + 1
            assert by0 >= y0 - slack * h - 1 and by1 <= y1 + slack * h + 1
            assert bx0 < bx1 and by0 < by1 and bx0 <= px <= bx1 and by0 <= py <= by1
            inside.append(bool(scene.masks[k][int(py), int(px)]))
    assert np.mean(inside) >= 0.8  # the point mostly lies on the object (measured 20 of 20)
