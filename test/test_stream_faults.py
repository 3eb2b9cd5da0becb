"""Faults a robot's streams have, in the ROS-free core: time going backwards (a bag
replayed with --loop, a simulator reset), a camera restarting at another resolution,
prompts stamped in the future or far in the past. (Over DDS: test_ros_faults.py.)"""

from __future__ import annotations

import numpy as np

from mobilesam_ros.live.frames import FrameSlot
from mobilesam_ros.live.prompts import PromptState, StreamClock
from mobilesam_ros.live.rgbd import DepthPairer
from mobilesam_ros.live.segmenter import StreamSegmenter, StreamWorker
from mobilesam_ros.live.stats import NodeStats, ThrottledLog
from mobilesam_ros.live.tracking import TrackingConfig
from mobilesam_ros.predictor import SamPredictor

from test_stream import FakeRuntime


def test_stream_clock_tells_a_jump_back_from_a_late_message():
    clock = StreamClock()
    assert clock.advance(100.0) is None and clock.advance(101.0) is None
    assert clock.advance(100.5) is None and clock.newest == 101.0  # late by 0.5 s: the same timeline
    assert clock.advance(5.0) == 96.0 and clock.newest == 5.0  # back by 96 s: a new one
    assert clock.advance(5.1) is None


class _Stream:
    """A tracked stream (fake runtime: a disk around each click) and its worker."""

    def __init__(self, persistence="sticky"):
        self.runtime = FakeRuntime()
        self.prompts = PromptState(persistence)
        self.seg = StreamSegmenter(SamPredictor(self.runtime, cache_size=4), self.prompts, tracking=TrackingConfig())
        self.slot = FrameSlot()
        self.stats = NodeStats()
        self.logged: list[tuple[str, str]] = []
        self.published = []
        self.worker = StreamWorker(self.seg, self.slot, lambda p: p, self.published.append, self.stats,
                                   ThrottledLog(lambda level, text: self.logged.append((level, text)), self.stats))

    def frame(self, sec: int, h: int = 120, w: int = 160):
        image = np.full((h, w, 3), 90, np.uint8)
        image[40:80, 60:100] = 200
        self.slot.put((image, (sec, 0), f"header {sec}"), key=(sec, 0))
        self.worker.step()
        return self.published[-1]

    def log(self, word: str) -> list[str]:
        return [text for _, text in self.logged if word in text]


def test_time_going_backwards_resets_tracks_and_cached_frames():
    s = _Stream()
    s.frame(100)
    s.prompts.add_point(80, 60)
    s.slot.notify()
    s.worker.step()
    followed = s.frame(101)
    assert len(followed) == 1 and s.seg.tracker.counts()["tracks_active"] == 1
    assert s.seg.cached_keys() == [(100, 0), (101, 0)]

    looped = s.frame(5)  # the bag starts again
    assert len(looped) == 0 and s.seg.tracker.tracks == {}  # the old lap's track ended, not dragged on
    assert s.seg.cached_keys() == [(5, 0)]  # no frame of the old lap can take a prompt
    assert s.stats.counters["stream_restarts"] == 1
    (line,) = s.log("tracks and cached frames reset")
    assert "time went backwards by 96.000 s" in line and "tracks and cached frames reset" in line
    assert any("ended: stream restarted" in event for event in looped.events)

    # the new lap is served, and a new click is followed as before
    s.prompts.add_point(80, 60)
    s.slot.notify()
    s.worker.step()
    assert len(s.frame(6)) == 1 and s.seg.tracker.counts()["tracks_active"] == 1
    assert s.frame(6).frame.key == (6, 0) and s.stats.counters["stream_restarts"] == 1  # same stamp: no restart


def test_a_late_frame_is_not_a_restart():
    s = _Stream()
    s.frame(100)
    s.slot.put((np.zeros((120, 160, 3), np.uint8), (99, 600_000_000), "late"), key=(99, 600_000_000))
    s.worker.step()
    assert s.stats.counters["stream_restarts"] == 0 and len(s.seg.cached_keys()) == 2


def test_camera_restarting_at_another_resolution():
    s = _Stream()
    s.frame(1)
    s.prompts.add_point(80, 60)
    s.slot.notify()
    s.worker.step()
    assert len(s.frame(2)) == 1
    bigger = s.frame(3, h=240, w=320)  # the driver came back at 320x240
    assert bigger.masks.shape[1:] == (240, 320) and bigger.labels.shape == (240, 320)
    assert s.stats.counters["stream_restarts"] == 1 and s.stats.counters["worker_errors"] == 0
    assert "the image size changed from 160x120 to 320x240" in s.log("tracks and cached frames reset")[0]
    assert len(bigger) == 0  # the old click's pixels belong to the old stream: its track ended
    s.prompts.add_point(160, 120)  # a click on the new stream is followed at the new size
    s.slot.notify()
    s.worker.step()
    followed = s.frame(4, h=240, w=320)
    assert len(followed) == 1 and followed.masks.shape[1:] == (240, 320)


def test_prompt_stamped_in_the_future_or_far_past_goes_to_the_newest_frame_and_says_so():
    s = _Stream()
    for sec in range(10, 16):  # the cache holds 4 frames: 12..15
        s.frame(sec)
    for stamp, word in (((40, 0), "after"), ((3, 0), "before")):
        s.prompts.add_point(80, 60, stamp=stamp)
        s.slot.notify()
        s.worker.step()
        assert s.published[-1].frame.key == (15, 0) and s.published[-1].trigger == "prompt"
        assert any(f"stamped {abs(stamp[0] - 15):.3f} s {word} the newest frame" in t for t in s.log("applied to"))
    assert s.stats.counters["prompts_unmatched_stamp"] == 2 and s.stats.counters["prompt_errors"] == 0


def test_depth_pairing_follows_time_backwards():
    pairer = DepthPairer(max_dt=0.02, depth_queue=10)
    for k in range(10):  # the first lap: 100.0 .. 100.9 s
        pairer.add_depth(int((100 + k / 10) * 1e9), f"lap1 {k}")
    pairer.colour_arrived(int(100.9e9))
    assert pairer.lookup(int(100.9e9)) == ("lap1 9", 0.0)
    # the bag starts again at 0.0 s: colour first, then its depth
    pairer.colour_arrived(int(0.1e9))
    pairer.add_depth(int(0.1e9), "lap2 1")
    assert pairer.restarts == 1
    assert pairer.lookup(int(0.1e9)) == ("lap2 1", 0.0)  # not a final "no match" against the old lap
    pairer.add_depth(int(0.2e9), "lap2 2")
    pairer.colour_arrived(int(0.2e9))
    assert pairer.lookup(int(0.2e9)) == ("lap2 2", 0.0) and pairer.restarts == 1
