"""The demo's scoring without ROS (``commands/demo.py``'s DemoRecord): what
``ros/demo_stream.py`` feeds it (stamps, label images) becomes summary.json's figures.
The whole demo over DDS is test_ros_demo.py."""

from __future__ import annotations

import numpy as np

from mobilesam_ros.commands.demo import DemoRecord, SyntheticScene


def _labels_with(mask: np.ndarray, label: int) -> np.ndarray:
    labels = np.zeros(mask.shape, np.uint16)
    labels[mask] = label
    return labels


def test_click_lands_on_the_disk_of_an_answered_frame_and_following_is_scored(tmp_path):
    scene = SyntheticScene(320, 240)
    record = DemoRecord(scene, "prompt", tmp_path)
    assert record.waiting_for_click() and record.click_on_disk() is None  # nothing answered yet
    record.on_published((1, 0), record.frame_time(0))
    record.on_labels((1, 0), np.zeros((240, 320), np.uint16))  # answered before the click: not scored
    stamp, x, y = record.click_on_disk()
    assert stamp == (1, 0) and scene.disk(record.frame_of[stamp])[int(y), int(x)]
    assert not record.waiting_for_click()
    # the scene moved on by one step per answered frame; the node follows the disk as #3
    t = record.frame_time(1)
    assert t == scene.step
    record.on_published((2, 0), t)
    record.on_labels((2, 0), _labels_with(scene.disk(t), 3))
    record.on_published((3, 0), record.frame_time(2))
    record.on_labels((3, 0), np.zeros((240, 320), np.uint16))  # lost in this frame
    followed = record.summary()["followed"]
    assert followed["id"] == 3 and followed["ids_on_disk"] == [3]
    assert followed["iou_per_frame"] == [1.0, 0.0] and followed["frames_followed"] == 1
    assert record.summary()["prompt"]["on_disk"] is True


def test_everything_mode_scores_each_scene_object(tmp_path):
    scene = SyntheticScene(320, 240)
    record = DemoRecord(scene, "everything", tmp_path)
    assert not record.waiting_for_click()
    record.on_published((1, 0), 0.0)
    objects = scene.objects(0.0)
    labels = _labels_with(objects["disk"], 1) + _labels_with(objects["triangle"], 2)
    record.on_labels((1, 0), labels)
    everything = record.summary()["everything"]
    assert everything["frames"] == 1
    assert everything["frames_found"] == {"disk": 1, "square": 0, "triangle": 1}


def test_overlays_and_diagnostics_are_kept(tmp_path):
    record = DemoRecord(None, "prompt", tmp_path)  # images or a video: nothing to score
    record.on_published((5, 7), record.frame_time(0))
    record.on_overlay((5, 7), np.zeros((4, 6, 3), np.uint8))
    record.on_diagnostics({"frames_processed": "1", "output_rate_hz_run": "2.0"})
    summary = record.summary()
    assert summary["overlays_written"] == 1 and (tmp_path / "00000_5_000000007.png").is_file()
    assert summary["node"]["frames_processed"] == "1" and summary["node"]["output_rate_hz"] == "2.0"
    assert "followed" not in summary and "prompt" not in summary
