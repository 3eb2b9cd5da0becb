"""Tracking without ROS and without a model: ids, association, propagation, loss and
re-acquisition on synthetic masks (exact values), and the segmenter's tracked path
with a stand-in runtime."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mobilesam_ros.live.prompts import PromptState
from mobilesam_ros.live.segmenter import StreamSegmenter
from mobilesam_ros.live.tracking import (
    TRACK_ID_MAX,
    IdAllocator,
    LowRes,
    Tracker,
    TrackingConfig,
    box_iou,
    greedy_match,
    mask_iou,
)
from mobilesam_ros.predictor import Prompt, SamPredictor

from test_stream import FakeRuntime

H, W = 480, 640
GEOM = LowRes((H, W))  # 640 px -> 256 low-res: 0.4 low-res pixel per pixel


def disk_logits(*disks: tuple[float, float, float]) -> np.ndarray:
    """(256, 256) logits: +10 inside the disks (pixel centre, radius), -10 elsewhere."""
    v, u = np.mgrid[0:256, 0:256]
    x, y = (u + 0.5) / GEOM.factor, (v + 0.5) / GEOM.factor
    inside = np.zeros((256, 256), bool)
    for cx, cy, r in disks:
        inside |= (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    return np.where(inside, 10.0, -10.0).astype(np.float32)


def tracker(**kw) -> Tracker:
    kw.setdefault("motion", "velocity")
    return Tracker(TrackingConfig(**kw))


def step(tr: Tracker, seq: int, logits_for, scores=0.9):
    """Plan frame ``seq``, decode with ``logits_for(track_id, prompt) -> logits``, observe."""
    tr._geom((H, W))
    planned = tr.plan(seq, (H, W))
    low = np.stack([logits_for(p.track.track_id, p.prompt) for p in planned]) if planned else np.zeros((0, 256, 256))
    sc = np.full(len(planned), scores, np.float32)
    keep = tr.observe(seq, planned, sc, low)
    return planned, keep


def test_ids_start_at_one_are_never_reused_and_wrap_past_65535_skipping_live_ones():
    ids = IdAllocator()
    assert [ids.allocate() for _ in range(3)] == [1, 2, 3]
    ids._next = TRACK_ID_MAX
    assert ids.allocate(in_use={1, 2}) == TRACK_ID_MAX
    assert ids.allocate(in_use={1, 2}) == 3  # wrapped, 1 and 2 still alive
    tr = tracker()
    tr._geom((H, W))
    a = tr.add_object(1, Prompt(points=np.array([[100, 100]], np.float32), labels=np.array([1])))
    tr.remove(a.track_id)
    b = tr.add_object(1, Prompt(points=np.array([[100, 100]], np.float32), labels=np.array([1])))
    assert (a.track_id, b.track_id) == (1, 2)  # a removed id is not given again


def test_box_iou_mask_iou_and_greedy_match_exact():
    np.testing.assert_allclose(box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30]]), [[1 / 3, 0]])
    a = np.zeros((2, 4), bool)
    a[0, :2] = a[1, 2:] = True
    np.testing.assert_allclose(mask_iou(a, a[::-1]), [[0, 1], [1, 0]])
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert greedy_match(iou, 0.3) == [(0, 0)]  # row 1's only option was taken; 0.1 is below threshold
    assert greedy_match(np.array([[0.5, 0.6], [0.7, 0.2]]), 0.3) == [(1, 0), (0, 1)]


def test_detector_boxes_keep_their_ids_when_shuffled_and_jittered():
    tr = tracker()
    rng = np.random.default_rng(0)
    starts = np.array([[50, 50, 150, 150], [300, 80, 380, 200], [500, 300, 600, 420]], np.float32)
    velocity = np.array([[6, 2], [-4, 3], [-5, -4]], np.float32)
    first: dict[int, int] = {}
    for seq in range(1, 31):
        boxes = starts + np.tile(velocity * seq, 2) + rng.normal(0, 2.0, (3, 4)).astype(np.float32)
        order = rng.permutation(3)
        tr.detections(seq, boxes[order], [""] * 3)
        planned, keep = step(tr, seq, lambda tid, p: disk_logits(((p.box[0] + p.box[2]) / 2, (p.box[1] + p.box[3]) / 2, 30)))
        # which object each track's prompt box is (the detector box it was matched with)
        by_object = {int(np.abs(boxes - p.prompt.box).sum(1).argmin()): p.track.track_id for p in planned}
        assert len(by_object) == 3
        assert {p.kind for p in planned} == ({"new"} if seq == 1 else {"detection"})
        if seq == 1:
            first = by_object
        assert by_object == first, seq
    assert sorted(first.values()) == [1, 2, 3] and tr.counters["tracks_started"] == 3


def test_detector_object_missing_is_kept_then_ends_and_new_box_starts_a_track():
    tr = tracker(max_lost_frames=2)
    box = np.array([[100, 100, 200, 200]], np.float32)
    tr.detections(1, box, [""])
    step(tr, 1, lambda tid, p: disk_logits((150, 150, 40)))
    for seq in (2, 3):  # missed twice: kept, not published, not propagated
        tr.detections(seq, np.zeros((0, 4), np.float32), [])
        planned, _ = step(tr, seq, lambda tid, p: disk_logits((150, 150, 40)))
        assert planned == [] and 1 in tr.tracks
    tr.detections(4, box + 3, [""])  # back within max_lost_frames: same id
    planned, keep = step(tr, 4, lambda tid, p: disk_logits((153, 153, 40)))
    assert [p.track.track_id for p in planned] == [1] and keep == [0]
    for seq in (5, 6, 7):
        tr.detections(seq, np.zeros((0, 4), np.float32), [])
    assert 1 not in tr.tracks and tr.counters["tracks_ended"] == 1
    tr.detections(8, box, [""])
    assert list(tr.tracks) == [2]


def test_detector_object_survives_poor_masks_between_box_lists():
    tr = tracker(max_lost_frames=2)
    box = np.array([[100, 100, 200, 200]], np.float32)
    tr.detections(1, box, [""])
    step(tr, 1, lambda tid, p: disk_logits((150, 150, 40)))
    empty = np.full((256, 256), -10.0, np.float32)
    for seq in range(2, 8):  # a slow detector: frames without boxes, on which the masks vanish
        planned, keep = step(tr, seq, lambda tid, p: empty)
        assert keep == [] and 1 in tr.tracks
    tr.detections(8, box + 4, [""])
    planned, keep = step(tr, 8, lambda tid, p: disk_logits((154, 154, 40)))
    assert [p.track.track_id for p in planned] == [1] and keep == [0] and tr.tracks[1].lost == 0


def test_detector_class_ids_must_agree():
    tr = tracker()
    box = np.array([[100, 100, 200, 200]], np.float32)
    tr.detections(1, box, ["cup"])
    tr.detections(2, box, ["bowl"])
    assert [t.class_id for t in tr.tracks.values()] == ["cup", "bowl"]


def test_propagated_prompt_is_the_previous_box_moved_by_velocity_with_margin_and_interior_point():
    tr = tracker(box_margin=0.1)
    tr._geom((H, W))
    tr.add_object(1, Prompt(points=np.array([[200, 200]], np.float32), labels=np.array([1])))
    centres = {1: (200.0, 200.0), 2: (210.0, 205.0)}
    r = 40.0
    for seq in (1, 2):
        cx, cy = centres[seq]
        step(tr, seq, lambda tid, p: disk_logits((cx, cy, r)))
    track = tr.tracks[1]
    np.testing.assert_allclose(track.velocity, [10.0, 5.0], atol=0.5)  # the slope through the two centres
    planned = tr.plan(3, (H, W))
    (p,) = planned
    assert p.kind == "propagate"
    v = track.velocity
    expected = track.obs.box + np.array([v[0], v[1], v[0], v[1]])
    np.testing.assert_allclose(p.predicted, expected, atol=1e-4)
    w, h = expected[2] - expected[0], expected[3] - expected[1]
    np.testing.assert_allclose(p.prompt.box, expected + np.array([-0.1 * w, -0.1 * h, 0.1 * w, 0.1 * h]), atol=1e-3)
    # the point is the low-res disk's most interior pixel moved by the velocity: the disk centre within a low-res pixel
    np.testing.assert_allclose(p.prompt.points[0], np.array(centres[2]) + v, atol=1 / GEOM.factor)
    assert p.prompt.labels.tolist() == [1] and p.prompt.mask_input is None


def test_loss_is_kept_for_max_lost_frames_and_reacquired_where_predicted():
    tr = tracker(max_lost_frames=5)
    tr._geom((H, W))
    tr.add_object(1, Prompt(points=np.array([[100, 240]], np.float32), labels=np.array([1])))
    x = {s: 100.0 + 10 * (s - 1) for s in range(1, 20)}
    for seq in (1, 2, 3):
        step(tr, seq, lambda tid, p: disk_logits((x[seq], 240, 30)))
    empty = np.full((256, 256), -10.0, np.float32)
    for seq in (4, 5, 6):  # occluded: the mask vanishes
        planned, keep = step(tr, seq, lambda tid, p: empty)
        assert keep == [] and planned[0].kind == ("propagate" if seq == 4 else "reacquire")
    assert tr.tracks[1].lost == 3 and tr.counters["tracks_lost"] == 1
    assert any("track 1 lost: mask vanished" in e for e in tr.take_events())
    planned, keep = step(tr, 7, lambda tid, p: disk_logits((x[7], 240, 30)))
    assert planned[0].kind == "reacquire" and keep == [0]
    assert tr.tracks[1].lost == 0 and tr.counters["tracks_reacquired"] == 1
    assert tr.states(planned, keep) == ["reacquired"]
    # something else where it should be (a jump of area) is not re-acquired; then it ends
    for seq in range(8, 15):
        step(tr, seq, lambda tid, p: empty)
    assert 1 not in tr.tracks and tr.counters["tracks_ended"] == 1
    assert any("ended: lost for 6 frames" in e for e in tr.take_events())


@pytest.mark.parametrize("case, logits, reason", [
    ("area", lambda: disk_logits((300, 240, 90)), "area changed"),
    ("jump", lambda: disk_logits((520, 240, 40)), "box jumped"),
    ("score", lambda: disk_logits((300, 240, 40)), "predicted IoU"),
])
def test_implausible_masks_are_losses(case, logits, reason):
    tr = tracker()
    tr._geom((H, W))
    tr.add_object(1, Prompt(points=np.array([[300, 240]], np.float32), labels=np.array([1])))
    step(tr, 1, lambda tid, p: disk_logits((300, 240, 40)))
    tr.take_events()
    _, keep = step(tr, 2, lambda tid, p: logits(), scores=0.1 if case == "score" else 0.9)
    assert keep == [] and tr.tracks[1].lost == 1
    assert reason in tr.take_events()[0]


def test_two_tracks_on_one_mask_the_one_nearer_its_prediction_keeps_it():
    tr = tracker()
    tr._geom((H, W))
    tr.add_object(1, Prompt(points=np.array([[250, 240]], np.float32), labels=np.array([1])))
    tr.add_object(1, Prompt(points=np.array([[278, 240]], np.float32), labels=np.array([1])))
    step(tr, 1, lambda tid, p: disk_logits((250, 240, 40) if tid == 1 else (278, 240, 40)))
    # frame 2: object 2 has passed in front of object 1: both prompts give object 2's mask,
    # which fits both predictions, object 2's better
    _, keep = step(tr, 2, lambda tid, p: disk_logits((272, 240, 40)))
    assert keep == [1] and tr.tracks[1].lost == 1 and tr.tracks[2].lost == 0
    assert any("its mask is track 2's" in e for e in tr.take_events())


def test_point_object_keeps_its_id_when_prompted_on_itself_and_is_replaced_elsewhere():
    tr = tracker()
    tr._geom((H, W))

    def pt(x, y):
        return Prompt(points=np.array([[x, y]], np.float32), labels=np.array([1]))

    tr.point_object(1, pt(200, 200))
    step(tr, 1, lambda tid, p: disk_logits((200, 200, 40)))
    tr.point_object(2, pt(210, 190))  # on the object: a re-prompt
    planned, _ = step(tr, 2, lambda tid, p: disk_logits((200, 200, 40)))
    assert [p.track.track_id for p in planned] == [1] and planned[0].kind == "prompt"
    tr.point_object(3, pt(500, 400))  # elsewhere: a new object, the old one ends
    planned, _ = step(tr, 3, lambda tid, p: disk_logits((500, 400, 40)))
    assert [p.track.track_id for p in planned] == [2] and list(tr.tracks) == [2]


def test_everything_masks_keep_ids_across_frames():
    tr = tracker(max_lost_frames=1)
    a = np.zeros((3, 120, 160), bool)
    a[0, 10:50, 10:50] = a[1, 60:100, 80:150] = a[2, 0:20, 120:160] = True
    ids1 = tr.associate_masks(1, a)
    b = np.roll(a[[1, 0]], 3, axis=2)  # moved a little, order changed, third mask gone
    ids2 = tr.associate_masks(2, b)
    assert ids1.tolist() == [1, 2, 3] and ids2.tolist() == [2, 1]
    c = np.concatenate([b, np.zeros((1, 120, 160), bool)])
    c[2, 100:120, 0:30] = True
    assert tr.associate_masks(3, c).tolist() == [2, 1, 4]
    assert 3 not in tr.tracks  # unmatched for 2 frames > max_lost_frames 1


def test_lucas_kanade_motion_of_a_textured_object():
    tr = tracker(motion="flow")
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (7, 7), 0)
    frame1 = np.full((H, W, 3), 90, np.uint8)
    frame2 = frame1.copy()
    yy, xx = np.mgrid[0:H, 0:W]
    disk1 = (xx - 300) ** 2 + (yy - 240) ** 2 <= 60 ** 2
    frame1[disk1] = texture[disk1]
    shifted = np.roll(np.roll(texture, 3, axis=0), 8, axis=1)
    disk2 = (xx - 308) ** 2 + (yy - 243) ** 2 <= 60 ** 2
    frame2[disk2] = shifted[disk2]
    tr.frame(1, frame1)
    tr.add_object(1, Prompt(points=np.array([[300, 240]], np.float32), labels=np.array([1])))
    step(tr, 1, lambda tid, p: disk_logits((300, 240, 60)))
    tr.frame(2, frame2)
    (p,) = tr.plan(2, (H, W))
    np.testing.assert_allclose(p.predicted - tr.tracks[1].obs.box, [8, 3, 8, 3], atol=0.5)


# --- through the segmenter ----------------------------------------------------------------------------
def _tracked_segmenter(persistence="sticky"):
    runtime = FakeRuntime()
    prompts = PromptState(persistence)
    seg = StreamSegmenter(SamPredictor(runtime), prompts, tracking=TrackingConfig(motion="velocity"))
    return seg, prompts, runtime


def _bind(prompts, key):
    for change in prompts.take_changes():
        prompts.bind(change, key)


def test_segmenter_labels_are_track_ids_one_decoder_call_per_frame_remove_and_clear():
    seg, prompts, runtime = _tracked_segmenter()
    image = np.full((H, W, 3), 100, np.uint8)
    seg.encode(image, (1, 0))
    for i in range(10):  # ten objects added one by one, none disturbing the others
        prompts.add_object(box=[10 + 60 * i, 100, 50 + 60 * i, 140])
    _bind(prompts, (1, 0))
    result = seg.segment((1, 0))
    assert result.track_ids.tolist() == list(range(1, 11)) and result.states == ["new"] * 10
    assert result.labels[120, 30] == 1 and result.labels[120, 570] == 10
    objects = result.objects()
    assert [o.track_id for o in objects] == list(range(1, 11)) and objects[0].mask.shape == (H, W)
    assert objects[0].source == "object" and objects[0].box.shape == (4,)
    seg.encode(image, (2, 0))
    calls = runtime.decode_calls
    result = seg.segment((2, 0))
    assert runtime.decode_calls - calls == 1  # ten propagated objects, one batched decoder call
    assert result.track_ids.tolist() == list(range(1, 11)) and result.states == ["tracked"] * 10
    assert "tracking" in result.timings_ms
    prompts.remove(3)
    prompts.remove(99)
    seg.encode(image, (3, 0))
    result = seg.segment((3, 0))
    assert 3 not in result.track_ids.tolist() and len(result) == 9 and not (result.labels == 3).any()
    assert any("no object with id 99" in p for p in result.problems)
    assert any("track 3 (object) ended: removed" in e for e in result.events)
    prompts.add_object(points=[[320, 400]])  # added later: the next id
    _bind(prompts, (3, 0))
    result = seg.segment((3, 0))
    assert result.track_ids.tolist()[-1] == 11
    prompts.clear()
    seg.encode(image, (4, 0))
    assert len(seg.segment((4, 0))) == 0 and not seg.tracker.tracks
    assert seg.tracker.counters["tracks_ended"] == 11


def test_segmenter_reprompt_by_target_id_and_the_same_frame_segmented_twice():
    seg, prompts, _ = _tracked_segmenter()
    image = np.full((H, W, 3), 100, np.uint8)
    seg.encode(image, (1, 0))
    prompts.add_object(box=[100, 100, 200, 200])
    prompts.add_object(box=[300, 100, 400, 200])
    _bind(prompts, (1, 0))
    seg.segment((1, 0))
    seg.encode(image, (2, 0))
    first = seg.segment((2, 0))
    again = seg.segment((2, 0))  # a prompt change makes the node segment the latest frame again
    np.testing.assert_array_equal(first.labels, again.labels)
    prompts.add_object(box=[320, 300, 420, 400], target_id=2)
    _bind(prompts, (2, 0))
    result = seg.segment((2, 0))
    assert result.track_ids.tolist() == [1, 2] and result.labels[350, 370] == 2 and result.labels[150, 350] == 0


def test_tracking_disabled_gives_ids_in_prompt_order():
    runtime = FakeRuntime()
    prompts = PromptState()
    seg = StreamSegmenter(SamPredictor(runtime), prompts, tracking=TrackingConfig(enabled=False))
    seg.encode(np.full((H, W, 3), 100, np.uint8), (1, 0))
    prompts.set_boxes([[10, 10, 50, 50], [100, 100, 150, 150]])
    _bind(prompts, (1, 0))
    assert seg.tracker is None and seg.segment((1, 0)).track_ids.tolist() == [1, 2]


def test_segmenter_everything_mode_keeps_ids_for_the_same_masks():
    everything = pytest.importorskip("mobilesam_ros.everything")
    runtime = FakeRuntime()
    predictor = SamPredictor(runtime)
    config = everything.EverythingConfig(strategy="grid", points_per_side=2, pred_iou_thresh=0.0,
                                         stability_score_thresh=0.0)
    seg = StreamSegmenter(predictor, PromptState(), "everything", everything.EverythingSegmenter(predictor, config),
                          tracking=TrackingConfig())
    image = np.full((120, 160, 3), 100, np.uint8)
    seg.encode(image, (1, 0))
    first = seg.segment((1, 0))
    seg.encode(image, (2, 0))
    second = seg.segment((2, 0))
    assert len(first) >= 1 and sorted(second.track_ids.tolist()) == sorted(first.track_ids.tolist())
    for tid in first.track_ids:  # each id marks the same pixels on both frames
        np.testing.assert_array_equal(first.labels == tid, second.labels == tid)
    assert second.sources == ["everything"] * len(second) and "tracking" in second.timings_ms
