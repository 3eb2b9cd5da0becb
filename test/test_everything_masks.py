"""Mask post-processing for segment-everything: stability, boxes, NMS, RLE, small regions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mobilesam_ros.everything import masks as mk


def test_stability_score_is_sams_definition():
    logits = np.array([[[2.0, 0.5, -0.5, -2.0], [1.5, 1.0, -1.0, 0.0]]], np.float32)
    # > 1: 2.0, 1.5 -> 2; > -1: 2.0, 0.5, -0.5, 1.5, 1.0, 0.0 -> 6
    assert mk.stability_scores(logits)[0] == pytest.approx(2 / 6)
    assert mk.stability_scores(logits, threshold=0.0, offset=0.5)[0] == pytest.approx(3 / 5)
    assert mk.stability_scores(np.full((1, 3, 3), -5.0, np.float32))[0] == 0.0  # nothing above -1


def test_masks_to_boxes_inclusive_like_sam():
    masks = np.zeros((3, 6, 8), bool)
    masks[0, 1:4, 2:5] = True
    masks[1, 5, 7] = True
    boxes = mk.masks_to_boxes(masks)
    np.testing.assert_array_equal(boxes[0], [2, 1, 4, 3])
    np.testing.assert_array_equal(boxes[1], [7, 5, 7, 5])
    np.testing.assert_array_equal(boxes[2], [0, 0, 0, 0])  # empty
    assert mk.coco_bbox(boxes[0]) == [2.0, 1.0, 3.0, 3.0]


def test_box_nms_greedy_strictly_greater():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 5]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # IoU(0, 1) = 81 / 119 = 0.68; IoU(0, 3) = 0.5 exactly; IoU(1, 3) = 36 / 114
    np.testing.assert_array_equal(mk.box_nms(boxes, scores, 0.7), [3, 0, 1, 2])
    np.testing.assert_array_equal(mk.box_nms(boxes, scores, 0.6), [3, 0, 2])
    np.testing.assert_array_equal(mk.box_nms(boxes, scores, 0.5), [3, 0, 2])  # 0.5 is not > 0.5
    np.testing.assert_array_equal(mk.box_nms(boxes, scores, 0.49), [3, 1, 2])
    assert mk.box_nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)
    np.testing.assert_allclose(mk.box_iou(boxes[:1], boxes[1:2]), [[81 / 119]])


def test_mask_nms():
    masks = np.zeros((3, 10, 10), bool)
    masks[0, :5, :] = True  # 50 px
    masks[1, :4, :] = True  # 40 px, IoU with 0 = 0.8
    masks[2, 5:, :] = True  # disjoint
    np.testing.assert_array_equal(mk.mask_nms(masks, [0.9, 0.95, 0.5], 0.7), [1, 2])
    np.testing.assert_array_equal(mk.mask_nms(masks, [0.9, 0.95, 0.5], 0.85), [1, 0, 2])
    np.testing.assert_allclose(mk.mask_iou_matrix(masks)[0, 1], 0.8)


def test_rle_matches_pycocotools_strings():
    # strings produced by pycocotools 2.0.11 mask.encode for these masks
    m = np.zeros((7, 5), bool)
    m[1:4, 1:3] = True
    m[6, 4] = True
    m[0, 0] = True
    assert mk.mask_to_coco_rle(m) == {"size": [7, 5], "counts": "0172M0<N"}
    big = np.zeros((40, 30), bool)
    big[3:35, 2:20] = True
    big[10:12, 5:7] = False
    rle = mk.mask_to_coco_rle(big)
    assert rle["counts"] == "c2P180000WOJ`06@J`069000000000000000000000000]<"
    np.testing.assert_array_equal(mk.rle_to_mask(rle), big)
    assert mk.rle_area(rle) == big.sum()


def test_rle_round_trip_random():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 7), (32, 17), (50, 64)]:
        for p in (0.0, 0.3, 1.0):
            m = rng.random(shape) < p
            rle = mk.mask_to_rle(m)
            assert sum(rle["counts"]) == m.size
            np.testing.assert_array_equal(mk.rle_to_mask(rle), m)
            assert mk.rle_from_string(mk.rle_to_string(rle["counts"])) == rle["counts"]
            np.testing.assert_array_equal(mk.rle_to_mask(mk.mask_to_coco_rle(m)), m)


def test_remove_small_regions_holes_and_islands():
    mask = np.zeros((30, 30), bool)
    mask[2:20, 2:20] = True
    mask[8:10, 8:10] = False  # 4 px hole
    mask[25:27, 25:27] = True  # 4 px island
    cleaned, changed = mk.clean_mask(mask, 10)
    assert changed
    expected = np.zeros_like(mask)
    expected[2:20, 2:20] = True
    np.testing.assert_array_equal(cleaned, expected)
    same, changed = mk.clean_mask(expected, 10)
    assert not changed and (same == expected).all()
    # every island small: the largest stays
    tiny = np.zeros((10, 10), bool)
    tiny[0, 0] = True
    tiny[5:7, 5:7] = True
    out, changed = mk.remove_small_regions(tiny, 100, "islands")
    assert changed and out.sum() == 4 and out[5:7, 5:7].all()


def test_coco_annotations_document():
    masks = np.zeros((2, 8, 9), bool)
    masks[0, 1:3, 2:6] = True
    masks[1, 4:8, 0:2] = True
    anns = mk.coco_annotations(masks, np.array([0.9, 0.8]), np.array([0.97, 0.96]), image_id=3)
    doc = json.loads(json.dumps(mk.coco_document(anns, 8, 9, "x.png")))
    assert doc["images"][0] == {"id": 1, "file_name": "x.png", "height": 8, "width": 9}
    a0, a1 = doc["annotations"]
    assert a0["image_id"] == 3 and a0["area"] == 8 and a0["bbox"] == [2.0, 1.0, 4.0, 2.0]
    assert a0["predicted_iou"] == pytest.approx(0.9) and a0["stability_score"] == pytest.approx(0.97)
    assert a1["bbox"] == [0.0, 4.0, 2.0, 4.0] and a1["iscrowd"] == 0
    np.testing.assert_array_equal(mk.rle_to_mask(a1["segmentation"]), masks[1])
