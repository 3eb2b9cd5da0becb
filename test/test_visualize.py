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


def test_overlay_colour_contrasts_with_the_object_and_the_label_sits_on_its_mask():
    from mobilesam_ros.visualize import contrasting_colour, instance_colour

    red = (220, 40, 40)
    assert instance_colour(0)[0] > 200 and instance_colour(0)[1] < 100  # id 0's own colour is red
    chosen = contrasting_colour(0, red)
    assert np.linalg.norm(np.subtract(chosen, red)) > np.linalg.norm(np.subtract(instance_colour(0), red))
    assert contrasting_colour(0, (40, 200, 200)) == instance_colour(0)  # on cyan, red stands out: kept
    image = np.full((240, 320, 3), 90, np.uint8)
    yy, xx = np.mgrid[0:240, 0:320]
    disk = (xx - 230) ** 2 + (yy - 160) ** 2 <= 50 ** 2
    image[disk] = red
    out = draw_overlay(image, disk[None], scores=np.array([0.97]), ids=[7])
    white = (out == 255).all(axis=2)  # the label's text
    ys, xs = np.nonzero(white)
    assert len(ys) and disk[ys, xs].mean() > 0.9  # the label is printed on the disk, not at its box corner
