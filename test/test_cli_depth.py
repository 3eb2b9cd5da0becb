"""`mobilesam-ros segment --depth DEPTH --intrinsics ...`: each object's 3D printed, saved
in the npz and a JSON file, distance on the overlay; bad depth input is one clear line
before the model is loaded."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

pytest.importorskip("torch")

from mobilesam_ros.cli import main
from mobilesam_ros.live.rgbd import objects_from_depth

INTRINSICS = "700,700,384,385"
W, H = 769, 770  # picture1.jpg


@pytest.fixture()
def image(parity_dir):
    return str(parity_dir / "images" / "picture1.jpg")


def test_segment_with_depth_prints_saves_json_npz_and_overlay(parity_dir, image, tmp_path, capsys):
    depth = np.full((H, W), 1500, np.uint16)  # a plane at 1.5 m ...
    depth[:, :100] = 0  # ... with no data on the left
    path = tmp_path / "depth.png"
    cv2.imwrite(str(path), depth)
    out, overlay = tmp_path / "out.npz", tmp_path / "overlay.png"
    assert main(["segment", image, "--checkpoint", str(parity_dir / "checkpoint.pt"), "--box", "150,150,650,700",
                 "--depth", str(path), "--intrinsics", INTRINSICS, "--save-npz", str(out),
                 "--overlay", str(overlay)]) == 0
    printed = capsys.readouterr()
    saved = np.load(out)
    masks = saved["masks"]
    expected = objects_from_depth(masks, depth, [700, 700, 384, 385])
    assert len(expected) == len(masks) and expected[0] is not None
    assert "object 1: centroid (" in printed.out and "median depth 1.500 m" in printed.out
    np.testing.assert_allclose(saved["depth_centroid"][0], expected[0].centroid)
    np.testing.assert_allclose(saved["depth_box_size"][0], expected[0].size)
    assert saved["depth_num_points"][0] == expected[0].num_points
    data = json.loads((tmp_path / "out_3d.json").read_text())  # beside the npz
    assert data["intrinsics"] == {"fx": 700.0, "fy": 700.0, "cx": 384.0, "cy": 385.0} and data["depth_scale"] == 0.001
    (obj,) = data["objects"]
    assert obj["index"] == 1 and obj["centroid"][2] == pytest.approx(1.5) and obj["num_points"] == expected[0].num_points
    # the overlay is the usual one plus the distance text
    from mobilesam_ros.transforms import read_rgb
    from mobilesam_ros.visualize import draw_overlay

    without = draw_overlay(read_rgb(image), masks, scores=saved["iou_predictions"].reshape(-1),
                           boxes=np.array([150, 150, 650, 700], np.float32))
    with_depth = cv2.cvtColor(cv2.imread(str(overlay)), cv2.COLOR_BGR2RGB)
    differs = (with_depth != without).any(axis=2)
    assert differs.any() and differs.mean() < 0.01


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--depth", "{dir}/missing.png", "--intrinsics", INTRINSICS], "depth image not found"),
        (["--depth", "{dir}/d8.png", "--intrinsics", INTRINSICS], "is 8-bit"),
        (["--depth", "{dir}/d16.png"], "--depth needs --intrinsics"),
        (["--depth", "{dir}/d16.png", "--intrinsics", "700,700,384"], "--intrinsics must be 4 comma-separated"),
        (["--depth", "{dir}/d16.png", "--intrinsics", "0,700,384,385"], "fx, fy > 0"),
        (["--depth", "{dir}/wide.png", "--intrinsics", INTRINSICS], "differ in aspect ratio"),
        (["--intrinsics", INTRINSICS], "--intrinsics given without --depth"),
        (["--depth", "{dir}/d16.png", "--intrinsics", INTRINSICS, "--depth-scale", "0"], "--depth-scale must be > 0"),
    ],
)
def test_depth_errors_are_one_clear_line(parity_dir, image, tmp_path, capsys, extra, message):
    cv2.imwrite(str(tmp_path / "d8.png"), np.zeros((H, W), np.uint8))
    cv2.imwrite(str(tmp_path / "d16.png"), np.zeros((H, W), np.uint16))
    cv2.imwrite(str(tmp_path / "wide.png"), np.zeros((480, 848), np.uint16))
    extra = [a.replace("{dir}", str(tmp_path)) for a in extra]
    rc = main(["segment", image, "--checkpoint", str(tmp_path / "not_loaded.pt"), "--point", "10,10,1",
               "--save-npz", str(tmp_path / "o.npz"), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
