"""The demo command end to end (node process, publisher, overlays on disk)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_harness import REPO, domain_for, ros_environment

DOMAIN = domain_for(__name__)


def test_demo_streams_images_and_writes_overlays(synthetic_checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    out = tmp_path / "demo"
    env = ros_environment(DOMAIN)
    result = subprocess.run(
        [sys.executable, "-m", "mobilesam_ros.cli", "demo", "--images", str(images), "--model",
         str(synthetic_checkpoint), "--duration", "3", "--fps", "5", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    assert f"overlays will be written to {out / 'overlays'}" in text
    assert f"your model {synthetic_checkpoint}" in text
    written = sorted((out / "overlays").glob("*.png"))
    assert written and cv2.imread(str(written[-1])).shape == (120, 160, 3)
    assert (out / "summary.json").is_file()


def test_demo_model_choice(tmp_path, monkeypatch):
    from mobilesam_ros.commands import demo

    models = tmp_path / "models"
    models.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "REPO", tmp_path)
    (models / "mobile_sam.pt").write_bytes(b"x")
    path, backend, what = demo.choose_model(None, "auto", tmp_path)
    assert path.endswith("mobile_sam.pt") and backend == "torch" and what.startswith("real weights")
    exported = models / "mobile_sam"
    exported.mkdir()
    (exported / "model.json").write_text("{}")
    path, backend, what = demo.choose_model(None, "auto", tmp_path)
    assert path == str(exported) and backend == "onnxruntime"
    (models / "mobile_sam.pt").unlink()
    (exported / "model.json").unlink()
    pytest.importorskip("torch")
    from mobilesam_ros.toy.model import SHIPPED

    path, backend, what = demo.choose_model(None, "auto", tmp_path)
    assert SHIPPED.is_file(), "the toy-world model's tensors ship with the package"
    assert "TOY-WORLD" in what and "meaningless on real images" in what and path.endswith("toy_world.pt")
    assert backend == "torch" and (tmp_path / "toy_world.pt").is_file()
    monkeypatch.setattr("mobilesam_ros.toy.model.SHIPPED", tmp_path / "absent.npz")  # a build without it
    path, backend, what = demo.choose_model(None, "auto", tmp_path)
    assert "SYNTHETIC" in what and path.endswith("synthetic_mobile_sam.pt")


def test_demo_clicks_the_disk_on_a_frame_the_node_encoded_and_follows_it(exported_model, tmp_path):
    """Issue 9 defect 13 and issue 10's demo proof: the click lies on the disk in the frame
    it is decoded on (stamped with a frame the node has answered, so its embedding is
    cached), and, with a model whose masks follow shapes (the toy-world model, when its
    tensors ship), the disk is followed with one id."""
    import json

    from mobilesam_ros.toy.model import SHIPPED, write_toy_checkpoint

    toy = SHIPPED.is_file()
    # without the toy model: the exported random-weight model (ONNX Runtime starts fastest)
    model, backend = (write_toy_checkpoint(tmp_path / "toy.pt"), "torch") if toy else (exported_model, "onnxruntime")
    out = tmp_path / "demo"
    env = ros_environment(DOMAIN)
    result = subprocess.run(
        [sys.executable, "-m", "mobilesam_ros.cli", "demo", "--model", str(model), "--backend", backend, "--size", "320x240",
         "--duration", "12", "--fps", "5", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    text = result.stdout + result.stderr
    assert result.returncode == 0, text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt"] is not None, text  # the node answered a frame and the disk was clicked
    assert summary["prompt"]["on_disk"], summary
    assert "clicked the disk" in text
    if toy:
        followed = summary["followed"]
        assert followed["ids_on_disk"] == [1] and followed["id"] == 1, followed
        # the scene is paced by the node (the disk moves <= 12 px per processed frame): the
        # clicked disk is followed in >= 90 % of the frames processed after the click, and
        # the IoU over all of them (0 where it was not followed) is >= 0.8. Measured on the
        # loaded 2-core CPU (torch backend, --duration 45 for 8 frames after the click):
        # followed 8 of 8, mean IoU 0.967 (per frame 0.94-0.98; 0.871 before the colour
        # blob's box became the prompt); floors: the goal (before issue 20: 0.5 and 0.4)
        assert followed["frames"] >= 1, followed
        assert followed["frames_followed"] >= 0.9 * followed["frames"], followed
        assert followed["mean_iou_with_disk"] >= 0.8, followed
        assert f"followed (#1, IoU >= 0.5) in {followed['frames_followed']} of them" in text
