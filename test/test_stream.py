"""The stream pipeline (encode once, decode active prompts, newest frame only) with a
fast stand-in runtime: the node's logic without ROS and without model cost."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mobilesam_ros.live.frames import FrameError, FrameSlot
from mobilesam_ros.live.prompts import PromptState
from mobilesam_ros.live.segmenter import StreamSegmenter, StreamWorker
from mobilesam_ros.live.stats import NodeStats, ThrottledLog
from mobilesam_ros.predictor import SamPredictor
from mobilesam_ros.runtime.base import DecoderOutput, Runtime

H, W = 120, 160


class FakeRuntime(Runtime):
    """Masks are a disk around the first foreground point, or the box; scores per token
    are 0.5 (single) and 0.6 / 0.9 / 0.7 (multimask)."""

    name = "fake"
    num_mask_outputs = 4

    def __init__(self, encode_delay: float = 0.0) -> None:
        self.encode_delay = encode_delay
        self.encodes = 0
        self.decode_calls = 0
        grid = (np.mgrid[0:256, 0:256] + 0.5) * 4.0  # low-res pixel centres, model-input frame
        self._yy, self._xx = grid

    def encode(self, image):
        self.encodes += 1
        if self.encode_delay:
            time.sleep(self.encode_delay)
        return np.zeros((1, 256, 64, 64), np.float32)

    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        self.decode_calls += 1
        b = point_labels.shape[0]
        logits = np.full((b, 4, 256, 256), -10.0, np.float32)
        for i in range(b):
            labels, coords = point_labels[i], point_coords[i]
            if (labels == 2).any():
                (x0, y0), (x1, y1) = coords[labels == 2][0], coords[labels == 3][0]
                inside = (self._xx >= x0) & (self._xx <= x1) & (self._yy >= y0) & (self._yy <= y1)
            else:
                x, y = coords[labels == 1][0]
                inside = (self._xx - x) ** 2 + (self._yy - y) ** 2 <= 60.0**2
            logits[i, :, inside] = 10.0
        iou = np.tile(np.array([0.5, 0.6, 0.9, 0.7], np.float32), (b, 1))
        return DecoderOutput(iou, logits)


def _image(value: int = 100) -> np.ndarray:
    return np.full((H, W, 3), value, np.uint8)


def _segmenter(runtime=None, persistence="sticky", accumulate=False, min_score=0.0, cache=4):
    runtime = runtime or FakeRuntime()
    predictor = SamPredictor(runtime, cache_size=cache)
    prompts = PromptState(persistence, accumulate)
    return StreamSegmenter(predictor, prompts, min_score=min_score), prompts, runtime


def _bind(prompts, key):
    for change in prompts.take_changes():
        prompts.bind(change, key)


def test_point_prompt_mask_labels_boxes():
    seg, prompts, runtime = _segmenter()
    entry, _ = seg.encode(_image(), (1, 0), header="h1")
    prompts.add_point(80, 60)
    _bind(prompts, (1, 0))
    result = seg.segment((1, 0))
    assert result.frame.header == "h1" and len(result) == 1
    assert result.masks.shape == (1, H, W) and result.labels.dtype == np.uint16
    assert result.labels[60, 80] == 1 and result.labels[0, 0] == 0
    assert result.scores[0] == pytest.approx(0.9)  # single point: best of the 3 multimask outputs
    x0, y0, x1, y1 = result.boxes[0]
    assert x0 < 80 < x1 and y0 < 60 < y1
    assert set(result.timings_ms) == {"decode", "postprocess"}
    assert runtime.encodes == 1


def test_boxes_use_single_mask_output_in_one_batch_and_label_order():
    seg, prompts, runtime = _segmenter()
    seg.encode(_image(), (1, 0))
    prompts.set_boxes([[0, 0, 150, 110], [10, 10, 30, 30]], class_ids=["big", "small"])
    _bind(prompts, (1, 0))
    calls = runtime.decode_calls
    result = seg.segment((1, 0))
    assert runtime.decode_calls - calls == 1  # both boxes in one decoder call
    assert result.class_ids == ["big", "small"]
    np.testing.assert_allclose(result.scores, [0.5, 0.5])
    # larger objects are drawn first: the small box keeps its id on top of the big one
    assert result.labels[20, 20] == 2 and result.labels[100, 140] == 1
    assert result.union_mask()[20, 20]


def test_min_score_drops_objects():
    seg, prompts, _ = _segmenter(min_score=0.8)
    seg.encode(_image(), (1, 0))
    prompts.set_boxes([[0, 0, 50, 50]])  # 0.5
    prompts.add_point(100, 100)  # 0.9
    _bind(prompts, (1, 0))
    result = seg.segment((1, 0))
    assert len(result) == 1 and result.scores[0] == pytest.approx(0.9)
    assert any("min_score" in p for p in result.problems)


def test_no_prompts_gives_an_empty_result():
    seg, _, _ = _segmenter()
    seg.encode(_image(), (1, 0))
    result = seg.segment((1, 0))
    assert len(result) == 0 and result.labels.shape == (H, W) and not result.labels.any()


def test_cache_keeps_the_last_frames_and_unstamped_frames_get_private_keys():
    seg, _, _ = _segmenter(cache=2)
    for sec in (1, 2, 3):
        seg.encode(_image(sec), (sec, 0))
    assert seg.cached_keys() == [(2, 0), (3, 0)]
    entry, _ = seg.encode(_image(), None)
    assert entry.key not in ((2, 0), (3, 0)) and seg.latest_key == entry.key
    seg.encode(_image(9), (3, 0))  # the same stamp again: newest image wins
    assert seg.frame((3, 0)).image[0, 0, 0] == 9


def test_invalid_prompt_for_a_smaller_frame_is_skipped_not_fatal():
    seg, prompts, _ = _segmenter()
    seg.encode(np.zeros((400, 400, 3), np.uint8), (1, 0))
    prompts.add_point(300, 300)
    prompts.set_boxes([[0, 0, 20, 20]])
    _bind(prompts, (1, 0))
    seg.encode(_image(), (2, 0))  # 160x120: the point is now outside
    result = seg.segment((2, 0))
    assert len(result) == 1 and result.class_ids == [""]
    assert result.problems and "outside" in result.problems[0]


# --- the worker -----------------------------------------------------------------------------------
class _Harness:
    def __init__(self, persistence="sticky", encode_delay=0.0, publish_empty=True):
        self.seg, self.prompts, self.runtime = _segmenter(FakeRuntime(encode_delay), persistence)
        self.slot = FrameSlot()
        self.stats = NodeStats()
        self.logged: list[tuple[str, str]] = []
        self.errors = ThrottledLog(lambda level, msg: self.logged.append((level, msg)), self.stats)
        self.published = []
        self.worker = StreamWorker(self.seg, self.slot, self.convert, self.published.append, self.stats,
                                   self.errors, publish_empty=publish_empty)

    @staticmethod
    def convert(payload):
        key, image = payload
        if image is None:
            raise FrameError("bad frame")
        return image, key, f"header{key}"

    def frame(self, sec, image=None):
        self.slot.put((( sec, 0), _image(sec) if image is None else image), key=(sec, 0))


def test_worker_takes_only_the_newest_frame_of_a_burst():
    h = _Harness()
    for sec in range(1, 6):
        h.frame(sec)
    h.worker.step()
    assert [r.frame.key for r in h.published] == [(5, 0)]
    assert h.runtime.encodes == 1 and h.slot.dropped == 4


def test_worker_bad_frame_is_reported_and_the_next_one_served():
    h = _Harness()
    h.slot.put(((1, 0), None), key=(1, 0))
    h.worker.step()
    h.slot.put(((2, 0), None), key=(2, 0))
    h.worker.step()
    h.frame(3)
    h.worker.step()
    assert [r.frame.key for r in h.published] == [(3, 0)]
    assert h.stats.counters["frame_errors"] == 2
    assert len([m for _, m in h.logged if "bad frame" in m]) == 1  # repeats are throttled


def test_worker_prompt_stamped_with_a_cached_frame_is_decoded_on_that_frame():
    h = _Harness()
    h.frame(1)
    h.worker.step()
    h.frame(2)
    h.worker.step()
    h.prompts.add_point(50, 50, stamp=(1, 0))
    h.slot.notify()
    h.worker.step()
    result = h.published[-1]
    assert result.trigger == "prompt" and result.frame.header == "header(1, 0)" and len(result) == 1
    h.frame(3)  # sticky: later frames get it too
    h.worker.step()
    assert h.published[-1].frame.key == (3, 0) and len(h.published[-1]) == 1


def test_worker_prompt_with_unknown_stamp_goes_to_the_latest_frame():
    h = _Harness(persistence="once")
    h.frame(1)
    h.worker.step()
    h.prompts.add_point(50, 50, stamp=(77, 0))
    h.slot.notify()
    h.worker.step()
    assert h.published[-1].frame.key == (1, 0) and len(h.published[-1]) == 1
    h.frame(2)  # once: not applied to the next frame
    h.worker.step()
    assert h.published[-1].frame.key == (2, 0) and len(h.published[-1]) == 0


def test_worker_prompt_for_the_waiting_frame_is_decoded_with_it():
    h = _Harness(persistence="once")
    h.frame(1)
    h.worker.step()
    h.frame(2)  # waiting in the slot
    h.prompts.set_boxes([[0, 0, 40, 40]], stamp=(2, 0))
    h.worker.step()
    assert [(r.frame.key, r.trigger, len(r)) for r in h.published[1:]] == [((2, 0), "frame", 1)]


def test_worker_prompt_for_a_waiting_frame_that_is_dropped_goes_to_the_next_frame():
    h = _Harness(persistence="once")
    h.frame(1)
    h.worker.step()
    h.frame(2)  # waiting in the slot
    h.prompts.set_boxes([[0, 0, 40, 40]], stamp=(2, 0))
    h.slot.notify()
    h.worker._handle_prompt_changes()  # the prompt is resolved while frame 2 waits
    h.frame(3)  # frame 2 is replaced (dropped) before the worker takes it
    h.worker.step()
    # not lost: it applies to the latest frame instead of the one that never came
    assert [(r.frame.key, len(r)) for r in h.published[1:]] == [((3, 0), 1)]
    h.frame(4)  # once: only that frame
    h.worker.step()
    assert (h.published[-1].frame.key, len(h.published[-1])) == ((4, 0), 0)


def test_worker_prompt_before_any_frame_is_skipped():
    h = _Harness()
    h.prompts.add_point(5, 5)
    h.slot.notify()
    h.worker.step()
    assert h.published == [] and h.stats.counters["prompt_errors"] == 1
    assert "before any image frame" in h.logged[0][1]
    h.frame(1)
    h.worker.step()
    assert len(h.published[-1]) == 0  # the skipped prompt does not come back


def test_worker_clear_republishes_the_latest_frame_empty():
    h = _Harness()
    h.frame(1)
    h.prompts.add_point(5, 5)
    h.worker.step()
    h.worker.step()
    assert len(h.published[-1]) == 1
    h.prompts.clear()
    h.slot.notify()
    h.worker.step()
    assert h.published[-1].trigger == "prompt" and len(h.published[-1]) == 0


def test_worker_publish_empty_false_skips_frames_without_objects():
    h = _Harness(publish_empty=False)
    h.frame(1)
    h.worker.step()
    assert h.published == []


def test_worker_survives_a_failing_runtime():
    h = _Harness()

    def boom(*_):
        raise RuntimeError("engine exploded")

    h.runtime.encode = boom
    h.frame(1)
    h.worker.step()
    assert h.stats.counters["worker_errors"] == 1 and "engine exploded" in h.stats.last_error
    del h.runtime.encode
    h.frame(2)
    h.worker.step()
    assert h.published[-1].frame.key == (2, 0)


def test_producer_never_waits_for_inference():
    h = _Harness(encode_delay=0.3)
    h.worker.start()
    try:
        h.frame(1)
        time.sleep(0.05)  # the worker is now encoding frame 1
        t0 = time.perf_counter()
        for sec in range(2, 40):
            h.frame(sec)
        assert time.perf_counter() - t0 < 0.1
        deadline = time.monotonic() + 5
        while (not h.published or h.published[-1].frame.key != (39, 0)) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        h.worker.stop()
    keys = [r.frame.key for r in h.published]
    assert keys[-1] == (39, 0) and len(keys) <= 3 and h.runtime.encodes <= 3
    assert h.stats.counters["frames_processed"] == len(keys)
    assert not any(t.name == "mobilesam-worker" and t.is_alive() for t in threading.enumerate())


def test_everything_mode_with_the_grid_strategy():
    everything = pytest.importorskip("mobilesam_ros.everything")
    runtime = FakeRuntime()
    predictor = SamPredictor(runtime)
    prompts = PromptState()
    config = everything.EverythingConfig(strategy="grid", points_per_side=2, pred_iou_thresh=0.0,
                                         stability_score_thresh=0.0)
    seg = StreamSegmenter(predictor, prompts, "everything", everything.EverythingSegmenter(predictor, config))
    seg.encode(_image(), (1, 0))
    result = seg.segment((1, 0))
    assert len(result) >= 1 and result.labels.max() == len(result)
    assert result.boxes.shape == (len(result), 4)


def test_everything_boxes_strategy_without_detector_waits_for_boxes():
    everything = pytest.importorskip("mobilesam_ros.everything")
    predictor = SamPredictor(FakeRuntime())
    prompts = PromptState()
    seg = StreamSegmenter(predictor, prompts, "everything",
                          everything.EverythingSegmenter(predictor, everything.EverythingConfig(strategy="boxes")))
    seg.encode(_image(), (1, 0))
    assert len(seg.segment((1, 0))) == 0
    prompts.set_boxes([[0, 0, 60, 60], [100, 50, 150, 110]], class_ids=["a", "b"])
    _bind(prompts, (1, 0))
    result = seg.segment((1, 0))
    assert len(result) == 2 and sorted(result.class_ids) == ["a", "b"]


def test_prompt_arriving_during_encoding_applies_to_that_frame():
    h = _Harness()
    h.frame(1)
    h.prompts.add_point(5, 5)
    h.worker.step()
    h.worker.step()
    original_encode = h.runtime.encode

    def encode_and_prompt(image):
        h.prompts.add_point(50, 50)  # a new point arrives while frame 2 is being encoded
        return original_encode(image)

    h.runtime.encode = encode_and_prompt
    h.frame(2)
    h.worker.step()
    result = h.published[-1]
    assert result.frame.key == (2, 0) and result.trigger == "frame"
    np.testing.assert_array_equal(result.prompt_points, [[50, 50]])
    h.worker.step()
    assert h.published[-1] is result  # no second decode of the same frame


def test_stop_reports_a_worker_still_busy():
    h = _Harness(encode_delay=0.6)
    h.worker.start()
    h.frame(1)
    time.sleep(0.2)  # the worker is inside the slow encode
    assert h.worker.stop(timeout=0.05) is False  # the node then leaves the engine open
    assert h.worker.stop(timeout=5.0) is True


def test_prompt_before_the_first_unstamped_frame_waits_for_it():
    h = _Harness()
    h.slot.put(((0, 0), _image()), key=None)  # a camera that leaves stamps at zero
    h.prompts.add_point(50, 50)
    h.worker.step()
    assert h.stats.counters.get("prompt_errors", 0) == 0
    assert len(h.published[-1]) == 1
