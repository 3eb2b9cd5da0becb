"""One inference thread for one or several cameras, without ROS.

Each camera has its own :class:`~.segmenter.StreamWorker` (its frame slot, prompts,
tracks, cached embeddings); all of them share one model. Their slots share one
``threading.Condition``, so the thread sleeps until any camera has a frame or a prompt
change, then serves the cameras round robin: after camera i it looks at i+1 first.
Each slot only holds its camera's newest frame, so a 30 Hz camera can never make a
5 Hz one wait more than one frame of every other camera: with N cameras every camera
with a waiting frame is served within N encodes.

Between two frames the thread also runs what :meth:`CameraScheduler.call_soon` queued
(run-time parameter changes): the segmenters are only ever touched by this thread.

:meth:`CameraScheduler.pause` (the node's ``~/enable`` false) drops waiting frames
and stops serving until resumed; prompt changes wait in the prompt state and are
applied on the first frame after resuming.

Batching: one encoder call per frame today. Several cameras' frames in one encoder
call would take ``Runtime.encode`` accepting (B, 3, 1024, 1024) (an ONNX encoder
exported with a dynamic batch axis, a TensorRT profile with B > 1) and a step that
takes the newest frame of *every* ready camera, encodes them together, then runs
each camera's ``StreamSegmenter.segment`` on its own embedding; the round-robin loop
here is where that step would go (see the README, "Several cameras").
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Sequence

from .segmenter import StreamWorker


class CameraScheduler:
    """Drives ``workers`` (one per camera, slots sharing ``condition``) from one thread."""

    def __init__(self, workers: Sequence[StreamWorker], condition: threading.Condition, errors=None) -> None:
        self.workers = list(workers)
        self._cond = condition
        self._errors = errors
        self._next = 0
        self._paused = False
        self._closed = False
        self._calls: deque[Callable[[], None]] = deque()
        self._thread: threading.Thread | None = None
        #: frames or prompt changes handled per camera (diagnostics, tests)
        self.served = [0] * len(self.workers)
        #: frames dropped because they arrived while paused, per camera
        self.dropped_paused = [0] * len(self.workers)

    # --- thread ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mobilesam-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Close every slot and wait for the thread; False if it is still busy (an encode
        that outlasts ``timeout``), in which case the engine must not be closed. Queued
        calls that did not run yet run here."""
        with self._cond:
            self._closed = True
            for worker in self.workers:
                worker.slot.close()
            self._cond.notify_all()
        stopped = True
        if self._thread is not None:
            self._thread.join(timeout)
            stopped = not self._thread.is_alive()
        if stopped:
            self._run_calls()
        return stopped

    def _run(self) -> None:
        while not self._closed:
            self.step(0.5)

    # --- control (any thread) -----------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, paused: bool) -> None:
        """Stop (True) or resume (False) segmenting; frames waiting now are dropped."""
        with self._cond:
            self._paused = paused
            if paused:
                for i, worker in enumerate(self.workers):
                    if worker.slot.take() is not None:
                        self.dropped_paused[i] += 1
            self._cond.notify_all()

    def frame_dropped_paused(self, camera: int) -> None:
        """Count a frame the node did not hand over because segmentation is paused."""
        self.dropped_paused[camera] += 1

    def call_soon(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the worker thread between two frames (at once when no thread runs)."""
        with self._cond:
            if self.running and not self._closed:
                self._calls.append(call)
                self._cond.notify_all()
                return
        call()

    # --- one iteration ----------------------------------------------------------------------------
    def _work_waiting(self) -> bool:
        return self._closed or bool(self._calls) or (
            not self._paused and any(w.slot.ready() for w in self.workers))

    def _run_calls(self) -> None:
        while True:
            with self._cond:
                if not self._calls:
                    return
                call = self._calls.popleft()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - the loop must survive anything
                if self._errors is None:
                    raise
                self._errors.report("reconfigure", f"applying a parameter change failed: {type(exc).__name__}: {exc}")

    def step(self, timeout: float | None = 0.0) -> int | None:
        """Wait up to ``timeout`` for work, run queued calls, then serve the next camera
        (round robin) that has a frame or prompt change; returns its index, or None."""
        with self._cond:
            self._cond.wait_for(self._work_waiting, timeout)
        self._run_calls()
        if self._closed or self._paused:
            return None
        n = len(self.workers)
        for k in range(n):
            i = (self._next + k) % n
            if self.workers[i].slot.ready():
                self._next = (i + 1) % n
                self.workers[i].step(0.0)
                self.served[i] += 1
                return i
        return None
