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
here is where that step would go (see docs/ros-node.md, "Several cameras, one model").
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
        self._held = False  # hold(): no new work is started
        self._busy = False  # the thread is inside a worker step or a queued call (the engine may be in use)
        self._calls: deque[Callable[[], None]] = deque()
        self._thread: threading.Thread | None = None
        #: frames or prompt changes handled per camera (diagnostics, tests)
        self.served = [0] * len(self.workers)

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

    def hold(self, timeout: float) -> bool:
        """Start no new work and wait up to ``timeout`` for the work in progress to end.
        True: the thread is idle and stays so (until :meth:`release` or :meth:`stop`), so
        nothing uses the engine. False: the work outlasted ``timeout``; the hold is lifted
        and the thread goes on as before (a deactivate that fails leaves the node active)."""
        with self._cond:
            self._held = True
            idle = self._cond.wait_for(lambda: not self._busy, timeout)
            if not idle:
                self._held = False
                self._cond.notify_all()
            return idle

    def release(self) -> None:
        """Lift :meth:`hold`."""
        with self._cond:
            self._held = False
            self._cond.notify_all()

    @property
    def busy(self) -> bool:
        """Inside a worker step or a queued call now (a snapshot)."""
        return self._busy

    # --- control (any thread) -----------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self, paused: bool) -> None:
        """Stop (True) or resume (False) segmenting; frames waiting now are dropped."""
        with self._cond:
            self._paused = paused
            if paused:
                for worker in self.workers:
                    worker.slot.take()
            self._cond.notify_all()

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
        return self._closed or (not self._held and (bool(self._calls) or (
            not self._paused and any(w.slot.ready() for w in self.workers))))

    def _idle(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()  # a hold() may be waiting for this

    def _run_calls(self) -> None:
        while True:
            with self._cond:  # taken and marked busy at once: a hold() sees either or neither
                if not self._calls or (self._held and not self._closed):
                    return
                call = self._calls.popleft()
                self._busy = True
            try:
                call()
            except Exception as exc:  # the loop must survive anything
                if self._errors is None:
                    raise
                self._errors.report("reconfigure", f"applying a parameter change failed: {type(exc).__name__}: {exc}")
            finally:
                self._idle()

    def _take_turn(self) -> int | None:
        """The next camera (round robin) with a frame or prompt change, marked busy; None
        when there is none or no work may start (closed, paused, held). Under the lock."""
        if self._closed or self._paused or self._held:
            return None
        n = len(self.workers)
        for k in range(n):
            i = (self._next + k) % n
            if self.workers[i].slot.ready():
                self._next = (i + 1) % n
                self._busy = True
                return i
        return None

    def step(self, timeout: float | None = 0.0) -> int | None:
        """Wait up to ``timeout`` for work, run queued calls, then serve the next camera
        (round robin) that has a frame or prompt change; returns its index, or None."""
        with self._cond:
            self._cond.wait_for(self._work_waiting, timeout)
        self._run_calls()
        with self._cond:
            i = self._take_turn()
        if i is None:
            return None
        try:
            self.workers[i].step(0.0)
        finally:
            self._idle()
        self.served[i] += 1
        return i
