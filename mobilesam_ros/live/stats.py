"""Counters, rates, stage timings and throttled error reporting for the node, without
ROS (the node turns :meth:`NodeStats.snapshot` into a DiagnosticArray)."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from typing import Callable

STAGES = ("convert", "encode", "decode", "postprocess", "publish")


class _Window:
    """The last N samples of a quantity (ms)."""

    def __init__(self, size: int = 50) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.last = 0.0

    def add(self, value: float) -> None:
        self.values.append(value)
        self.last = value

    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else 0.0

    def max(self) -> float:
        return max(self.values) if self.values else 0.0


class _Rate:
    """Events per second over the last ``span`` seconds."""

    def __init__(self, span: float = 5.0) -> None:
        self.span = span
        self.times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self.times.append(now)
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self.times and now - self.times[0] > self.span:
            self.times.popleft()

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self.times) < 2:
            return 0.0
        elapsed = max(now - self.times[0], 1e-6)
        return (len(self.times) - 1) / elapsed if now - self.times[-1] < self.span else 0.0


class NodeStats:
    """Thread-safe statistics of the segmentation node."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.counters = {
            "frames_received": 0,
            "frames_processed": 0,
            "frames_dropped": 0,
            "frame_errors": 0,
            "prompts_received": 0,
            "prompt_errors": 0,
            "results_published": 0,
            "worker_errors": 0,
            "stream_restarts": 0,  # time went backwards or the image size changed
            "prompts_unmatched_stamp": 0,  # stamped prompts whose frame was gone or not seen yet
        }
        self.stages = {name: _Window() for name in STAGES}
        self.latency = _Window()  # frame received -> results published (ms)
        self._in_rate = _Rate()
        self._out_rate = _Rate()
        self.last_error = ""
        self.last_error_time: float | None = None
        self.last_frame_time: float | None = None
        self._processed_first: float | None = None
        self._processed_last: float | None = None
        self.started = clock()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def frame_received(self, dropped: bool) -> None:
        now = self._clock()
        with self._lock:
            self.counters["frames_received"] += 1
            if dropped:
                self.counters["frames_dropped"] += 1
            self._in_rate.tick(now)
            self.last_frame_time = now

    def frame_processed(self) -> None:
        now = self._clock()
        with self._lock:
            self.counters["frames_processed"] += 1
            self._out_rate.tick(now)
            if self._processed_first is None:
                self._processed_first = now
            self._processed_last = now

    def stage(self, name: str, ms: float) -> None:
        with self._lock:
            self.stages.setdefault(name, _Window()).add(ms)

    def published(self, latency_ms: float) -> None:
        with self._lock:
            self.counters["results_published"] += 1
            self.latency.add(latency_ms)

    def error(self, counter: str, message: str) -> None:
        with self._lock:
            self.counters[counter] = self.counters.get(counter, 0) + 1
            self.last_error = message
            self.last_error_time = self._clock()

    def snapshot(self) -> dict:
        now = self._clock()
        with self._lock:
            out = dict(self.counters)
            out["input_rate_hz"] = round(self._in_rate.rate(now), 3)
            out["output_rate_hz"] = round(self._out_rate.rate(now), 3)  # the last 5 s: 0 once idle
            # over the whole run (first to last processed frame): what a summary reports
            n, first, last = self.counters["frames_processed"], self._processed_first, self._processed_last
            out["output_rate_hz_run"] = round((n - 1) / (last - first), 3) if n > 1 and last > first else 0.0
            out["latency_ms_mean"] = round(self.latency.mean(), 2)
            out["latency_ms_max"] = round(self.latency.max(), 2)
            for name, window in self.stages.items():
                out[f"{name}_ms_mean"] = round(window.mean(), 2)
                out[f"{name}_ms_last"] = round(window.last, 2)
            out["last_error"] = self.last_error
            out["seconds_since_error"] = None if self.last_error_time is None else round(now - self.last_error_time, 1)
            out["seconds_since_frame"] = None if self.last_frame_time is None else round(now - self.last_frame_time, 1)
            out["uptime_s"] = round(now - self.started, 1)
        return out


def error_kind(prefix: str, text: str) -> str:
    """A throttling key for a message: its words without the numbers, so the same
    problem with other values (coordinates, sizes) counts as a repeat."""
    return prefix + ":" + re.sub(r"-?\d[\d.e+-]*|nan|inf", "#", text)[:60]


class ThrottledLog:
    """Log the first occurrence of each kind of problem at once, then at most once
    per ``period`` seconds with the number of repeats in between; every occurrence
    is counted in ``stats`` (under ``counter``) and becomes its last error."""

    def __init__(self, log: Callable[[str, str], None], stats: NodeStats | None = None, period: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = log  # (level, message)
        self._stats = stats
        self._period = period
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def report(self, kind: str, message: str, counter: str | None = "worker_errors", level: str = "warn") -> bool:
        """Returns True when the message was logged (not throttled)."""
        if self._stats is not None and counter:
            self._stats.error(counter, message)
        now = self._clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self._period:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            repeats = self._suppressed.pop(kind, 0)
            self._last[kind] = now
        suffix = f" ({repeats} more like this in the last {self._period:g} s)" if repeats else ""
        self._log(level, message + suffix)
        return True

    def once(self, kind: str, message: str, level: str = "info") -> bool:
        """Log ``message`` the first time ``kind`` is seen, never again."""
        with self._lock:
            if kind in self._last:
                return False
            self._last[kind] = float("inf")
        self._log(level, message)
        return True
