"""Objects in 3D from aligned depth (mobilesam_ros.live.rgbd), on synthetic RGB-D scenes
with known geometry: planar rectangles ray-cast exactly through a pinhole camera in
front of a wall, ground-truth masks. Centroid error <= 1 cm, extent error <= 3 cm."""

from __future__ import annotations

import math
import threading
import time

import cv2
import numpy as np
import pytest

from mobilesam_ros.live.rgbd import (
    DepthError,
    DepthOptions,
    DepthPairer,
    depth_to_array,
    draw_distances,
    fit_masks_to_depth,
    intrinsics_matrix,
    objects_from_depth,
    scale_intrinsics,
)

H, W = 480, 640
K = np.array([[600.0, 0, 319.5], [0, 600.0, 239.5], [0, 0, 1]])
WALL = 2.5


def rect(center, size, yaw_deg=0.0):
    """A planar rectangle facing the camera, turned by ``yaw`` about the y axis."""
    a = math.radians(yaw_deg)
    return {"c": np.asarray(center, float), "u": np.array([math.cos(a), 0, -math.sin(a)]), "v": np.array([0, 1.0, 0]),
            "half": (size[0] / 2, size[1] / 2)}


def truth_box(r):
    """Centre and axis-aligned extent of a rectangle in 3D."""
    corners = np.array([r["c"] + su * r["half"][0] * r["u"] + sv * r["half"][1] * r["v"]
                        for su in (-1, 1) for sv in (-1, 1)])
    return r["c"], corners.max(0) - corners.min(0)


def render(rects, wall=WALL):
    """Exact depth (m) of the nearest surface per pixel, and each rectangle's mask."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    depth = np.full((H, W), wall)
    owner = np.full((H, W), -1)
    for i, r in enumerate(rects):
        n = np.cross(r["u"], r["v"])
        t = (n @ r["c"]) / (rays @ n)
        p = rays * t[..., None] - r["c"]
        inside = (np.abs(p @ r["u"]) <= r["half"][0]) & (np.abs(p @ r["v"]) <= r["half"][1]) & (t > 0) & (t < depth)
        depth[inside] = t[inside]
        owner[inside] = i
    masks = np.stack([owner == i for i in range(len(rects))])
    return depth, masks


def to_mm(depth_m):
    return np.round(np.nan_to_num(depth_m, nan=0.0) * 1000).astype(np.uint16)


def check(obj, r, centroid_tol=0.01, size_tol=0.03):
    assert obj is not None
    center, size = truth_box(r)
    assert np.linalg.norm(obj.centroid - center) <= centroid_tol, (obj.centroid, center)
    assert np.all(np.abs(obj.size - size) <= size_tol), (obj.size, size)


BOX = rect((0.10, -0.05, 1.2), (0.30, 0.20))


def test_box_before_wall_16uc1_and_32fc1():
    depth, masks = render([BOX])
    mm = objects_from_depth(masks, to_mm(depth), K)
    metres = objects_from_depth(masks, depth.astype(np.float32), K)
    for objs in (mm, metres):
        check(objs[0], BOX)
        assert objs.reasons == [None]
        assert abs(objs[0].median_depth - 1.2) < 0.002
        # 14,000 mask pixels, eroded, sampled on a grid to at most max_samples (2000)
        assert 1500 < objs[0].num_points <= 2000 and objs[0].points.shape == (objs[0].num_points, 3)
    every = objects_from_depth(masks, to_mm(depth), K, max_samples=0)[0]
    assert every.num_points > 12000
    check(every, BOX)
    # the points are where the box is
    assert np.allclose(mm[0].points[:, 2], 1.2, atol=0.002)


def test_mask_leaking_20_percent_onto_the_wall_with_flying_pixels_and_holes():
    depth, masks = render([BOX])
    mask = masks[0].copy()
    rows, cols = np.nonzero(mask)
    area = mask.sum()
    # leak: a band right of the box, 25 % of the box's area = 20 % of the mask
    band = int(round(0.25 * area / (rows.max() - rows.min() + 1)))
    mask[rows.min():rows.max() + 1, cols.max() + 1:cols.max() + 1 + band] = True
    assert abs(mask.sum() / area - 1.25) < 0.01
    rng = np.random.default_rng(1)
    noisy = depth.copy()
    # flying pixels: 2 px on both sides of every edge of the box, depth mixed between box and wall
    kernel = np.ones((5, 5), np.uint8)
    inner = masks[0]
    edge = (cv2.dilate(inner.view(np.uint8), kernel) > 0) & ~(cv2.erode(inner.view(np.uint8), kernel) > 0)
    mix = rng.uniform(0, 1, edge.sum())
    noisy[edge] = 1.2 + mix * (WALL - 1.2)
    # holes: 10 % random pixels and a 20x20 block with no depth
    holes = inner & (rng.uniform(size=inner.shape) < 0.10)
    cy, cx = int(rows.mean()), int(cols.mean())
    holes[cy - 10:cy + 10, cx - 10:cx + 10] = True
    noisy[holes] = 0.0
    for image in (to_mm(noisy), np.where(holes, np.nan, noisy).astype(np.float32)):
        objs = objects_from_depth(mask[None], image, K)
        check(objs[0], BOX)
        assert np.all(objs[0].points[:, 2] < 1.25)  # nothing from the wall or the flying pixels


def test_wall_majority_behind_still_gives_the_front_surface():
    """A mask that is half box, half wall (a badly leaking mask) gives the box."""
    depth, masks = render([BOX])
    mask = masks[0].copy()
    rows, cols = np.nonzero(mask)
    mask[rows.min():rows.max() + 1, cols.max() + 1:cols.max() + 1 + (cols.max() - cols.min())] = True
    obj = objects_from_depth(mask[None], to_mm(depth), K)[0]
    assert abs(obj.median_depth - 1.2) < 0.002 and abs(obj.centroid[2] - 1.2) < 0.002


def test_tilted_plane():
    plane = rect((-0.15, 0.05, 1.4), (0.50, 0.30), yaw_deg=40)
    depth, masks = render([plane])
    for image in (to_mm(depth), depth.astype(np.float32)):
        objs = objects_from_depth(masks, image, K)
        check(objs[0], plane)
        center, size = truth_box(plane)
        assert size[2] > 0.3  # the plane spans 32 cm in depth: nothing was cut as an outlier


def test_several_objects_at_several_depths():
    near = rect((-0.3, 0.0, 0.8), (0.12, 0.12))
    far = rect((0.6, 0.3, 2.0), (0.4, 0.3))
    tilted = rect((-0.5, -0.3, 1.6), (0.3, 0.2), yaw_deg=-30)
    scene = [near, BOX, far, tilted]
    depth, masks = render(scene)
    assert all(m.any() for m in masks) and masks.sum(0).max() == 1
    objs = objects_from_depth(masks, to_mm(depth), K)
    for obj, r in zip(objs, scene):
        check(obj, r)


def test_too_few_points_empty_mask_and_out_of_range_give_none_with_reasons():
    depth, masks = render([BOX])
    tiny = np.zeros((H, W), bool)
    tiny[100:103, 100:103] = True
    empty = np.zeros((H, W), bool)
    far = to_mm(np.full((H, W), 12.0))  # beyond max_depth 10 m
    objs = objects_from_depth(np.stack([tiny, empty, masks[0]]), to_mm(depth), K)
    assert objs[0] is None and "valid depth point" in objs.reasons[0]
    assert objs[1] is None and objs.reasons[1] == "empty mask"
    assert objs[2] is not None and objs.reasons[2] is None
    out = objects_from_depth(masks, far, K)
    assert out[0] is None and "outside [0.1, 10] m" in out.reasons[0]
    assert objects_from_depth(masks, far, K, max_depth=15.0)[0] is not None
    holes = objects_from_depth(masks, np.zeros((H, W), np.uint16), K)
    assert holes[0] is None and holes.reasons[0].startswith("0 valid")


def test_thin_object_falls_back_to_the_unerorded_mask():
    pole = rect((0.0, 0.0, 1.0), (0.008, 0.4))  # ~5 px wide: erosion by 3 px leaves nothing
    depth, masks = render([pole])
    obj = objects_from_depth(masks, to_mm(depth), K)[0]
    assert obj is not None and abs(obj.centroid[2] - 1.0) < 0.002 and abs(obj.size[1] - 0.4) < 0.03


def test_max_points_subsamples_evenly_and_pixels_match_points():
    depth, masks = render([BOX])
    obj = objects_from_depth(masks, to_mm(depth), K, max_points=500)[0]
    assert obj.points.shape == (500, 3) and obj.pixels.shape == (500, 2) and obj.num_points > 500
    r, c = obj.pixels[:, 0], obj.pixels[:, 1]
    assert masks[0][r, c].all()
    np.testing.assert_allclose(obj.points[:, 0], (c - K[0, 2]) * obj.points[:, 2] / K[0, 0], atol=1e-5)


def test_options_and_input_errors():
    depth, masks = render([BOX])
    with pytest.raises(TypeError, match="unknown option"):
        objects_from_depth(masks, to_mm(depth), K, erode=3)
    with pytest.raises(ValueError, match="min_depth"):
        DepthOptions(min_depth=0.0)
    with pytest.raises(DepthError, match="differ in size"):
        objects_from_depth(masks, to_mm(depth)[::2, ::2], K)
    with pytest.raises(DepthError, match="fx, fy > 0"):
        objects_from_depth(masks, to_mm(depth), [0, 600, 320, 240])
    opts = DepthOptions(erode_px=0, percentile=0.0)
    assert objects_from_depth(masks, to_mm(depth), K, options=opts)[0] is not None
    np.testing.assert_allclose(intrinsics_matrix([600, 600, 319.5, 239.5]), K)


def test_scaled_depth_maps_through_the_intrinsics_and_other_aspect_is_refused():
    depth, masks = render([BOX])
    half = to_mm(depth)[::2, ::2]  # 320x240 depth of the same view (pixel centres shift)
    small_masks, K2 = fit_masks_to_depth(masks, K, half.shape)
    assert small_masks.shape == (1, 240, 320)
    np.testing.assert_allclose(K2, [[300, 0, 159.5], [0, 300, 119.5], [0, 0, 1]])
    # the [::2] subsample takes pixel centres 0, 2, 4 ... = (u' + 0.25) * 2 - 0.5: K2's cx is off by
    # 0.25 px, well inside the tolerance
    check(objects_from_depth(small_masks, half, K2)[0], BOX)
    with pytest.raises(DepthError, match="aspect ratio"):
        fit_masks_to_depth(masks, K, (480, 848))
    assert scale_intrinsics(K, (H, W), (H, W)) is K


def test_depth_to_array_views_16uc1_and_32fc1_and_swaps_byte_order():
    mm = np.arange(12, dtype=np.uint16).reshape(3, 4)
    view = depth_to_array(mm.tobytes(), "16UC1", 3, 4, 8)
    assert view.dtype == np.uint16 and np.array_equal(view, mm)
    padded = np.zeros((3, 10), np.uint8)
    padded[:, :8] = mm.view(np.uint8).reshape(3, 8)
    assert np.array_equal(depth_to_array(padded.tobytes(), "16UC1", 3, 4, 10), mm)
    assert np.array_equal(depth_to_array(mm.byteswap().tobytes(), "16UC1", 3, 4, 8, is_bigendian=True), mm)
    m = np.array([[1.5, np.nan], [np.inf, 0.0]], np.float32)
    out = depth_to_array(m.tobytes(), "32FC1", 2, 2, 8)
    assert out.dtype == np.float32 and np.array_equal(out, m, equal_nan=True)
    with pytest.raises(DepthError, match="not supported"):
        depth_to_array(m.tobytes(), "rgb8", 2, 2, 8)
    with pytest.raises(DepthError, match="less than step"):
        depth_to_array(m.tobytes()[:10], "32FC1", 2, 2, 8)


def test_depth_scale_and_float_scale():
    depth, masks = render([BOX])
    tenth_mm = np.round(depth * 10000).astype(np.uint16)  # 0.1 mm units
    check(objects_from_depth(masks, tenth_mm, K, depth_scale=0.0001)[0], BOX)
    mm_float = (depth * 1000).astype(np.float32)
    check(objects_from_depth(masks, mm_float, K, float_scale=0.001)[0], BOX)


def test_draw_distances_writes_on_the_image():
    depth, masks = render([BOX])
    objs = objects_from_depth(masks, to_mm(depth), K)
    image = np.zeros((H, W, 3), np.uint8)
    draw_distances(image, np.array([[200, 150, 400, 300]]), objs)
    assert image.any()


# --- pairing -------------------------------------------------------------------------------
MS = 1_000_000


def test_pairer_exact_and_nearest_within_max_dt():
    p = DepthPairer(max_dt=0.02)
    p.add_depth(1000 * MS, "d1000")
    p.add_depth(1033 * MS, "d1033")
    p.colour_arrived(1033 * MS)
    assert p.lookup(1033 * MS) == ("d1033", 0.0)
    p.colour_arrived(1040 * MS)  # nearest: 1033 (7 ms), final once a later depth arrives
    p.add_depth(1066 * MS, "d1066")
    depth, dt = p.lookup(1040 * MS)
    assert depth == "d1033" and abs(dt - 0.007) < 1e-9
    p.colour_arrived(1100 * MS)  # 34 ms from the nearest: none
    p.add_depth(1133 * MS, "d1133")
    assert p.lookup(1100 * MS) is None


def test_pairer_depth_after_colour_and_pinned_frames_survive_newer_arrivals():
    p = DepthPairer(max_dt=0.02, pending=2, pinned=3)
    p.colour_arrived(10 * MS)
    p.pin(10 * MS)  # the worker took it before its depth came
    for t in range(11, 40):
        p.colour_arrived(t * MS)  # newer frames arrive while the worker encodes
    p.add_depth(10 * MS, "late depth")
    assert p.lookup(10 * MS) == ("late depth", 0.0)


def test_pairer_waits_for_late_depth_then_gives_up():
    p = DepthPairer(max_dt=0.02)
    p.colour_arrived(500 * MS)
    timer = threading.Timer(0.05, p.add_depth, (500 * MS, "depth"))
    timer.start()
    t0 = time.monotonic()
    assert p.lookup(500 * MS, wait=2.0) == ("depth", 0.0)
    assert time.monotonic() - t0 < 1.0
    timer.join()
    p.colour_arrived(600 * MS)
    t0 = time.monotonic()
    assert p.lookup(600 * MS, wait=0.1) is None  # no depth at all: waits 0.1 s, then none
    assert 0.09 <= time.monotonic() - t0 < 0.5
    p.add_depth(590 * MS, "earlier")  # arrives later, 10 ms before: taken on the next look
    assert p.lookup(600 * MS) == ("earlier", pytest.approx(0.01))


def test_given_boxes_give_the_same_objects():
    from mobilesam_ros.visualize import mask_boxes

    near = rect((-0.3, 0.0, 0.8), (0.12, 0.12))
    depth, masks = render([near, BOX])
    found = objects_from_depth(masks, to_mm(depth), K)
    given = objects_from_depth(masks, to_mm(depth), K, boxes=mask_boxes(masks))
    for a, b in zip(found, given):
        np.testing.assert_array_equal(a.centroid, b.centroid)
        np.testing.assert_array_equal(a.size, b.size)
    with pytest.raises(DepthError, match="1 boxes for 2 masks"):
        objects_from_depth(masks, to_mm(depth), K, boxes=mask_boxes(masks)[:1])


def test_a_sliver_of_an_occluder_in_front_and_depth_noise_do_not_move_the_object():
    """10 % of the mask on something nearer (a hand at 0.6 m), 1 % depth noise: still the box."""
    depth, masks = render([BOX])
    mask = masks[0]
    rows, cols = np.nonzero(mask)
    occluder = np.zeros_like(mask)
    height = int(0.10 * mask.sum() / (cols.max() - cols.min() + 1))
    occluder[rows.max() - height + 1:rows.max() + 1, cols.min():cols.max() + 1] = True
    noisy = np.where(occluder, 0.6, depth) * (1 + np.random.default_rng(2).normal(0, 0.01, depth.shape))
    obj = objects_from_depth(mask[None], to_mm(noisy), K)[0]
    assert abs(obj.median_depth - 1.2) < 0.005
    assert np.all(obj.points[:, 2] > 1.0)  # nothing from the occluder
    assert abs(obj.centroid[2] - 1.2) < 0.01 and abs(obj.centroid[0] - BOX["c"][0]) < 0.01
