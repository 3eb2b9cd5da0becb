"""The demo command end to end (node process, publisher, overlays on disk)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_harness import REPO, ros_environment  # noqa: E402


def test_demo_streams_images_and_writes_overlays(synthetic_checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    out = tmp_path / "demo"
    env = ros_environment(30 + (hash(str(tmp_path)) % 60))
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
    path, backend, what = demo.choose_model(None, "auto", tmp_path)
    assert "SYNTHETIC" in what and path.endswith("synthetic_mobile_sam.pt")
