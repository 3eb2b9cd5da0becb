"""Following objects with a real model: the toy-world model (exported to ONNX) through the
real StreamSegmenter + Tracker on a toy-world sequence with known truth
(``mobilesam_ros.bench.tracking``'s "crossing": a red disk, clicked, and a blue
rectangle, added, moving 20-22 px per frame towards each other; the rectangle passes in
front of the disk). Masks come from the decoder, not from the truth; every frame is
processed (lock step). The benchmark runs the same and more:
``python -m mobilesam_ros.bench.tracking --toy`` (figures in the README)."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def toy_onnx(tmp_path_factory):
    from mobilesam_ros.toy.model import SHIPPED, write_toy_checkpoint

    if not SHIPPED.is_file():
        pytest.fail(f"the toy-world model's trained tensors are not in the package: {SHIPPED}")
    folder = tmp_path_factory.mktemp("toy_track")
    checkpoint = write_toy_checkpoint(folder / "toy_world.pt")
    result = subprocess.run([sys.executable, "-m", "mobilesam_ros", "export", "--checkpoint", str(checkpoint),
                             "--out", str(folder / "onnx"), "--quiet"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def test_two_crossing_objects_keep_their_ids_and_masks_with_the_toy_model(toy_onnx):
    from mobilesam_ros.bench.tracking import CachedEncoder, run_toy, toy_scenarios
    from mobilesam_ros.live.tracking import TrackingConfig
    from mobilesam_ros.runtime import create_runtime

    runtime = CachedEncoder(create_runtime(str(toy_onnx / "onnx"), "onnxruntime"), toy_onnx / "cache")
    scene = toy_scenarios(640, 480, 16)["crossing"]
    report = run_toy(scene, runtime, TrackingConfig())
    s = report.summary()
    # measured (16 frames, 2 objects, 26 frames where >= 90 % of an object is visible; ONNX
    # Runtime as here, 2026-12-03): followed 0.96, IoU >= 0.8 in 0.92, mean IoU 0.91; before issue 20's
    # tracker (same sequence, 30 frames): followed 0.61, mean IoU 0.62. Floors: measured minus 0.1.
    assert s["followed"] >= 0.86, s
    assert s["iou_ge_0.8"] >= 0.82, s
    assert s["mean_iou"] >= 0.81, s
    assert s["id_switches"] == 0 and s["taken_by_another"] == 0, s  # the occluder never takes the disk's id
    assert s["decoder_calls_per_frame_max"] == 1, s  # both objects in one batched decoder call per frame
    # the node slower than the camera: every other frame (stamps 1/15 s apart), no new encodes
    slow = run_toy(scene, runtime, TrackingConfig(), step=2).summary()
    # measured: followed 1.00, mean IoU 0.93 in 12 visible frames (the objects move 40-44 px
    # between processed frames; the plain objects are located by their colours, where flow reads
    # no motion; 0.75 / 0.64 before). Floors: measured minus two of the 12 frames (0.17).
    assert slow["followed"] >= 0.83 and slow["id_switches"] == 0 and slow["taken_by_another"] == 0, slow
    assert slow["mean_iou"] >= 0.76, slow
