"""A runtime stand-in whose encode blocks until released, recording every call and the
close: proof that nothing closes the engine while a call is inside it."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from mobilesam_ros.runtime.base import DecoderOutput, Runtime


class BlockingRuntime(Runtime):
    """``encode`` calls after the first ``free_calls`` block until :meth:`release` (or
    until ``release_file`` exists, for a node in another process). ``events`` lists
    ("enter", what, closed), ("exit", what) and ("close", calls inside) in order; with
    ``events_file`` they are also appended there as JSON lines."""

    name = "blocking stand-in"

    def __init__(self, free_calls: int = 1, release_file: str | None = None, events_file: str | None = None) -> None:
        self.free_calls = free_calls
        self.release_file = Path(release_file) if release_file else None
        self.events_file = Path(events_file) if events_file else None
        self.entered = threading.Event()  # a blocking call is inside
        self._released = threading.Event()
        self._lock = threading.Lock()
        self.calls = 0
        self.inside = 0
        self.closed = False
        self.events: list[tuple] = []

    def _event(self, *event) -> None:
        self.events.append(event)
        if self.events_file is not None:
            with open(self.events_file, "a") as f:
                f.write(json.dumps(event) + "\n")

    def release(self) -> None:
        self._released.set()

    def _wait_released(self, limit: float = 60.0) -> None:
        deadline = time.monotonic() + limit
        while not self._released.is_set() and time.monotonic() < deadline:
            if self.release_file is not None and self.release_file.exists():
                return
            self._released.wait(0.05)

    def _call(self, what: str, block: bool) -> None:
        with self._lock:
            self.inside += 1
            self._event("enter", what, self.closed)
        try:
            if block:
                self.entered.set()
                self._wait_released()
        finally:
            with self._lock:
                self.inside -= 1
                self._event("exit", what)

    def encode(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        self._call("encode", block=self.calls > self.free_calls)
        return np.zeros((1, 256, 64, 64), np.float32)

    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input) -> DecoderOutput:
        self._call("decode", block=False)
        batch = point_coords.shape[0]
        return DecoderOutput(np.zeros((batch, 4), np.float32), np.full((batch, 4, 256, 256), -1.0, np.float32))

    def close(self) -> None:
        with self._lock:
            self._event("close", self.inside)
            self.closed = True

    def violations(self) -> list[tuple]:
        """Closes while a call was inside, and calls after a close."""
        return [e for e in self.events if (e[0] == "close" and e[1] > 0) or (e[0] == "enter" and e[2])]


def main() -> int:
    """Run segment_node (or the lifecycle node with ``--lifecycle``) on a BlockingRuntime
    whose second encode blocks until RELEASE_FILE exists:
    ``python blocking_runtime.py EVENTS_FILE RELEASE_FILE [--lifecycle] --ros-args ...``."""
    import sys

    events, release_file, *rest = sys.argv[1:]
    lifecycle = "--lifecycle" in rest
    rest = [a for a in rest if a != "--lifecycle"]
    runtime = BlockingRuntime(release_file=release_file, events_file=events)
    from mobilesam_ros.ros import node as node_module

    node_module.SegmentNode._open_runtime = lambda self, cfg: runtime
    if lifecycle:
        from mobilesam_ros.ros.lifecycle_node import SegmentLifecycleNode

        return node_module.run(SegmentLifecycleNode, rest)
    return node_module.run(node_module.SegmentNode, rest)


if __name__ == "__main__":
    raise SystemExit(main())
