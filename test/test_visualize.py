"""Label images, mask boxes and overlays."""

from __future__ import annotations

import numpy as np

from mobilesam_ros.visualize import draw_overlay, mask_boxes, masks_to_label_image


def _masks():
    masks = np.zeros((3, 40, 60), bool)
    masks[0, 5:35, 5:55] = True  # large
    masks[1, 10:20, 10:20] = True  # small, on top of the large one
    masks[2, 0:2, 58:60] = True  # tiny, in a corner
    return masks


def test_label_image_keeps_small_objects_visible():
    labels = masks_to_label_image(_masks())
    assert labels.dtype == np.uint16
    assert labels[15, 15] == 2  # the small mask wins over the large one it lies on
    assert labels[30, 40] == 1
    assert labels[1, 59] == 3
    assert labels[39, 0] == 0
    assert masks_to_label_image(np.zeros((0, 4, 5), bool)).shape == (4, 5)


def test_mask_boxes_are_exclusive_pixel_edges():
    boxes = mask_boxes(_masks())
    np.testing.assert_array_equal(boxes, [[5, 5, 55, 35], [10, 10, 20, 20], [58, 0, 60, 2]])
    assert mask_boxes(np.zeros((1, 4, 4), bool)).tolist() == [[0, 0, 0, 0]]


def test_overlay_draws_without_changing_the_input():
    image = np.full((40, 60, 3), 100, np.uint8)
    out = draw_overlay(image, _masks(), scores=np.array([0.9, 0.8, 0.7]), points=[[15, 15]], point_labels=[1],
                       boxes=[[5, 5, 55, 35]])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (image == 100).all()
    assert (out != 100).any()
    empty = draw_overlay(image, np.zeros((0, 40, 60), bool))
    assert (empty == image).all()
