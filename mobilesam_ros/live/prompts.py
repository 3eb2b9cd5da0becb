"""Prompt state for a live stream, without ROS: which objects to segment on which frame.

Coordinates are image pixels of the incoming frame: x to the right, y down, origin
at the top-left corner of the top-left pixel (SAM's convention; the centre of pixel
(i, j) is (i + 0.5, j + 0.5) but integer click positions work as they are).

Two prompt groups are kept:

* **points**: one object made of foreground / background points. With
  ``accumulate_points`` every new point is added to the object (until ``clear``);
  without it a new point replaces the previous ones.
* **boxes**: one object per box (x0, y0, x1, y1); a new box list replaces the
  previous one (a detector's latest detections), an empty list clears them.
* **objects** (``add_object``): one group per object added on its own (a point or a
  box, optionally aimed at an existing track id), so adding one disturbs no other.

With tracking (:mod:`.tracking`), a group is a *prompt*, not a standing order: the
segmenter takes each group once, on the frame it is bound to (``take_fresh``), and
the tracker follows the object from there. ``remove(track_id)`` queues the removal of
one tracked object; ``clear`` (which bumps ``generation``) ends them all.

Every change records the stamp it carries. The consumer (the inference worker)
takes the changes, resolves each stamp to a frame with :func:`resolve_target`
(the frame with that stamp while its embedding is cached, else the latest frame)
and binds the group to it. ``persistence`` then says which objects a frame gets:

* ``sticky``: every bound group, on its own frame and on all later frames, until
  cleared or replaced;
* ``once``: a group only on the frame it was bound to.

All methods are thread-safe: producers are ROS callbacks, the consumer a worker.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Container, Hashable, Sequence

import numpy as np

from ..predictor import Prompt, PromptError

PERSISTENCE = ("sticky", "once")
POINTS, BOXES, CLEAR, REMOVE = "points", "boxes", "clear", "remove"
OBJECT = "object:"  # prefix of the groups of objects added on their own

__all__ = [
    "BOXES",
    "CLEAR",
    "FreshPrompt",
    "OBJECT",
    "REMOVE",
    "PERSISTENCE",
    "POINTS",
    "Change",
    "ObjectPrompt",
    "PromptError",
    "PromptState",
    "resolve_target",
    "StreamClock",
    "stamp_key",
    "stamp_seconds",
]


def stamp_key(sec: int, nanosec: int) -> tuple[int, int] | None:
    """A frame / prompt stamp as a hashable key; the zero stamp means "no stamp"."""
    if sec == 0 and nanosec == 0:
        return None
    return (int(sec), int(nanosec))


def stamp_seconds(key: Hashable) -> float | None:
    """The time of a :func:`stamp_key` key in seconds; None for any other key (an
    unstamped frame's private key)."""
    if isinstance(key, tuple) and len(key) == 2 and all(isinstance(v, int) for v in key):
        return key[0] + key[1] * 1e-9
    return None


class StreamClock:
    """The newest stamp of a stream, and whether a new stamp jumped back in time.

    A stamp more than ``jump_back_s`` before the newest one means time went backwards
    (a bag replayed with --loop, a simulator reset under use_sim_time), not a late
    message: what was kept by stamp belongs to the old timeline."""

    #: seconds: a message this much older than the newest starts a new timeline
    JUMP_BACK_S = 1.0

    def __init__(self, jump_back_s: float = JUMP_BACK_S) -> None:
        self.jump_back_s = float(jump_back_s)
        self.newest: float | None = None

    def advance(self, stamp: float) -> float | None:
        """Take a stamp (seconds); returns how far time went back when it did, else None."""
        if self.newest is not None and self.newest - stamp > self.jump_back_s:
            back, self.newest = self.newest - stamp, stamp
            return back
        self.newest = stamp if self.newest is None else max(self.newest, stamp)
        return None


@dataclass(frozen=True)
class Change:
    """A prompt group changed; ``stamp`` is the key it carried (None: latest frame)."""

    group: str
    stamp: Hashable = None
    serial: int = 0


@dataclass
class ObjectPrompt:
    """One object to segment, with where it came from (for outputs and overlays)."""

    prompt: Prompt
    source: str  # "points" or "boxes"
    class_id: str = ""
    score: float | None = None  # the detector's score for a box prompt

    @property
    def single_point(self) -> bool:
        return self.prompt.box is None and self.prompt.points is not None and len(self.prompt.points) == 1


@dataclass
class FreshPrompt:
    """A group taken once by the tracker: the point object or an added object
    (``prompt``), or a detector's box list (``boxes``, possibly empty)."""

    group: str
    prompt: Prompt | None = None
    boxes: np.ndarray | None = None
    class_ids: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    target_id: int = 0
    point_count: int = 0


@dataclass
class _Group:
    bound: Hashable = None  # frame key the group was last bound to
    is_bound: bool = False
    # bound to a frame still waiting to be encoded: if that frame is dropped (replaced
    # in the slot, or undecodable) the group moves to the next frame that is encoded
    awaiting_frame: bool = False
    serial: int = 0
    points: list = field(default_factory=list)  # [(x, y)]
    labels: list = field(default_factory=list)  # [1 | 0]
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    class_ids: list = field(default_factory=list)
    scores: list = field(default_factory=list)
    target_id: int = 0  # objects: the track a prompt is for (0: a new object)
    taken: int = -1  # serial last taken by take_fresh

    def empty(self) -> bool:
        return not self.points and len(self.boxes) == 0


def resolve_target(
    stamp: Hashable, cached: Container, pending: Hashable, latest: Hashable
) -> tuple[str, Hashable]:
    """Which frame a prompt stamped ``stamp`` applies to.

    Returns ``("cached", stamp)`` when that frame's embedding is cached, ``("pending",
    stamp)`` when that frame is waiting to be encoded (it is then decoded right after
    it), else ``("latest", latest)``; before the first frame is encoded, the frame
    waiting to be (``("pending", pending)``); ``("none", None)`` before any frame.
    """
    if stamp is not None:
        if stamp in cached:
            return "cached", stamp
        if stamp == pending:
            return "pending", stamp
    if latest is not None:
        return "latest", latest
    if pending is not None:
        return "pending", pending  # no frame encoded yet, but one has arrived
    return "none", None


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float, np.floating, np.integer)) and math.isfinite(v) for v in values)


class PromptState:
    """The active prompts of a stream (see the module docstring)."""

    def __init__(
        self,
        persistence: str = "sticky",
        accumulate_points: bool = False,
        max_points: int = 32,
        max_boxes: int = 64,
    ) -> None:
        if persistence not in PERSISTENCE:
            raise ValueError(f"persistence must be one of {PERSISTENCE}, got '{persistence}'")
        self.persistence = persistence
        self.accumulate_points = accumulate_points
        self.max_points = max(1, int(max_points))
        self.max_boxes = max(1, int(max_boxes))
        self._lock = threading.Lock()
        self._groups = {POINTS: _Group(), BOXES: _Group()}
        self._changes: list[Change] = []
        self._serial = 0
        self._removals: list[int] = []
        #: bumped by every clear(): the tracker ends its tracks when it changes
        self.generation = 0
        #: (height, width) of the latest frame, set by the consumer: points outside
        #: it are refused at once (before they could spoil an accumulated object)
        self.bounds: tuple[int, int] | None = None

    # --- producers ------------------------------------------------------------------
    def _record(self, group: str, stamp: Hashable) -> None:
        self._serial += 1
        self._changes.append(Change(group, stamp, self._serial))
        if group in self._groups:
            g = self._groups[group]
            g.serial, g.is_bound, g.bound, g.awaiting_frame = self._serial, False, None, False

    def add_point(self, x: float, y: float, foreground: bool = True, stamp: Hashable = None) -> int:
        """Add (or, without accumulation, set) a point; returns the object's point count.

        Raises PromptError for NaN/inf or a point outside the latest frame; the state
        is then unchanged.
        """
        if not _finite(x, y):
            raise PromptError(f"point ({x}, {y}) is not finite")
        bounds = self.bounds
        if bounds is not None:
            height, width = bounds
            if not (0 <= x <= width and 0 <= y <= height):
                raise PromptError(f"point ({x:g}, {y:g}) is outside the {width}x{height} image")
        with self._lock:
            g = self._groups[POINTS]
            if not self.accumulate_points:
                g.points, g.labels = [], []
            if len(g.points) >= self.max_points:
                raise PromptError(
                    f"the object already has {self.max_points} points (max_points); publish on prompt/clear to start over"
                )
            g.points.append((float(x), float(y)))
            g.labels.append(1 if foreground else 0)
            self._record(POINTS, stamp)
            return len(g.points)

    def set_boxes(
        self,
        boxes: np.ndarray,
        stamp: Hashable = None,
        class_ids: Sequence[str] | None = None,
        scores: Sequence[float] | None = None,
    ) -> list[str]:
        """Replace the box prompts (one object each); returns one message per box
        that was refused (non-finite, empty) or clipped away. An empty array clears
        the boxes. Boxes beyond ``max_boxes`` are dropped (reported)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        class_ids = list(class_ids) if class_ids is not None else [""] * len(boxes)
        scores = list(scores) if scores is not None else [None] * len(boxes)
        bounds = self.bounds  # read once: the worker may update it meanwhile
        problems: list[str] = []
        keep = []
        for i, box in enumerate(boxes):
            if not np.isfinite(box).all():
                problems.append(f"box {i} {box.tolist()} is not finite")
            elif box[2] <= box[0] or box[3] <= box[1]:
                problems.append(f"box {i} {box.tolist()} is empty (need x0 < x1 and y0 < y1)")
            elif bounds is not None and (
                box[2] <= 0 or box[3] <= 0 or box[0] >= bounds[1] or box[1] >= bounds[0]
            ):
                problems.append(f"box {i} {box.tolist()} lies outside the {bounds[1]}x{bounds[0]} image")
            else:
                keep.append(i)
        if len(keep) > self.max_boxes:
            problems.append(f"{len(keep)} boxes, only the first {self.max_boxes} (max_boxes) are used")
            keep = keep[: self.max_boxes]
        kept = boxes[keep].astype(np.float32)
        if bounds is not None and len(kept):
            height, width = bounds
            np.clip(kept[:, 0::2], 0, width, out=kept[:, 0::2])
            np.clip(kept[:, 1::2], 0, height, out=kept[:, 1::2])
        if len(boxes) and not keep:
            return problems  # nothing usable: keep the previous boxes
        with self._lock:
            g = self._groups[BOXES]
            g.boxes = kept
            g.class_ids = [str(class_ids[i]) for i in keep]
            g.scores = [scores[i] for i in keep]
            self._record(BOXES, stamp)
        return problems

    def add_object(
        self,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        stamp: Hashable = None,
        target_id: int = 0,
        class_id: str = "",
    ) -> None:
        """Add one object (a point or a box) without touching the others; with
        ``target_id`` the prompt is for that tracked object instead (it keeps its id).

        Raises PromptError for a non-finite / empty prompt, one outside the latest frame,
        or more than ``max_boxes`` objects waiting."""
        pts = None if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        bx = None if box is None else np.asarray(box, np.float32).reshape(4)
        if pts is None and bx is None:
            raise PromptError("an object needs a point or a box")
        values = [] if pts is None else pts.ravel().tolist()
        values += [] if bx is None else bx.tolist()
        if not _finite(*values):
            raise PromptError(f"object prompt {values} is not finite")
        if bx is not None and (bx[2] <= bx[0] or bx[3] <= bx[1]):
            raise PromptError(f"box {bx.tolist()} is empty (need x0 < x1 and y0 < y1)")
        bounds = self.bounds
        if bounds is not None:
            height, width = bounds
            if pts is not None and ((pts[:, 0] < 0) | (pts[:, 0] > width) | (pts[:, 1] < 0) | (pts[:, 1] > height)).any():
                raise PromptError(f"point {pts[0].tolist()} is outside the {width}x{height} image")
            if bx is not None:
                if bx[2] <= 0 or bx[3] <= 0 or bx[0] >= width or bx[1] >= height:
                    raise PromptError(f"box {bx.tolist()} lies outside the {width}x{height} image")
                np.clip(bx[0::2], 0, width, out=bx[0::2])
                np.clip(bx[1::2], 0, height, out=bx[1::2])
        with self._lock:
            if sum(1 for name in self._groups if name.startswith(OBJECT)) >= self.max_boxes:
                raise PromptError(f"{self.max_boxes} objects are already waiting (max_boxes)")
            self._serial += 1
            name = f"{OBJECT}{self._serial}"
            g = _Group(target_id=int(target_id))
            if pts is not None:
                g.points = [tuple(p) for p in pts.tolist()]
                g.labels = [1] * len(pts) if labels is None else [int(v) for v in np.asarray(labels).reshape(-1)]
            if bx is not None:
                g.boxes = bx.reshape(1, 4)
            g.class_ids = [str(class_id)]
            self._groups[name] = g
            self._record(name, stamp)

    def remove(self, track_id: int) -> None:
        """Queue the removal of tracked object ``track_id``."""
        with self._lock:
            self._removals.append(int(track_id))
            self._record(REMOVE, None)

    def take_removals(self) -> list[int]:
        with self._lock:
            removals, self._removals = self._removals, []
        return removals

    def clear(self) -> None:
        """Forget every prompt (points, boxes, objects)."""
        with self._lock:
            self._groups = {POINTS: _Group(), BOXES: _Group()}
            self._removals = []
            self.generation += 1
            self._record(CLEAR, None)

    # --- consumer -------------------------------------------------------------------
    def take_changes(self) -> list[Change]:
        with self._lock:
            changes, self._changes = self._changes, []
        return changes

    def has_changes(self) -> bool:
        with self._lock:
            return bool(self._changes)

    def bind(self, change: Change, key: Hashable, awaiting_frame: bool = False) -> None:
        """Bind the group a change touched to frame ``key`` (if not changed since).

        ``awaiting_frame``: ``key`` is a frame not encoded yet (see ``frame_encoded``)."""
        with self._lock:
            g = self._groups.get(change.group)
            if g is not None and g.serial == change.serial:
                g.bound, g.is_bound, g.awaiting_frame = key, True, awaiting_frame

    def frame_encoded(self, key: Hashable) -> None:
        """Frame ``key`` was encoded: groups waiting for a frame that never came (it was
        replaced by a newer one, or could not be converted) apply to this one, the
        latest frame, instead of being lost (matters with persistence 'once')."""
        with self._lock:
            for g in self._groups.values():
                if g.is_bound and g.awaiting_frame:
                    g.bound, g.awaiting_frame = key, False

    def discard(self, change: Change) -> None:
        """Drop what a change added (a prompt that has no frame to apply to)."""
        with self._lock:
            g = self._groups.get(change.group)
            if g is not None and g.serial == change.serial:
                if change.group.startswith(OBJECT):
                    del self._groups[change.group]
                else:
                    self._groups[change.group] = _Group()

    def _applies(self, g: _Group, key: Hashable) -> bool:
        if g.empty() or not g.is_bound:
            return False
        return self.persistence == "sticky" or g.bound == key

    def objects_for(self, key: Hashable) -> list[ObjectPrompt]:
        """The objects frame ``key`` is segmented with: the points object first, then
        one object per box, then the added objects (this order is the label order)."""
        out: list[ObjectPrompt] = []
        with self._lock:
            g = self._groups[POINTS]
            if self._applies(g, key):
                out.append(ObjectPrompt(_prompt(g), POINTS))
            g = self._groups[BOXES]
            if self._applies(g, key):
                for box, cid, score in zip(g.boxes, g.class_ids, g.scores):
                    out.append(ObjectPrompt(Prompt(box=box.copy()), BOXES, cid, score))
            for name, g in self._groups.items():
                if name.startswith(OBJECT) and self._applies(g, key):
                    out.append(ObjectPrompt(_prompt(g), "object", g.class_ids[0] if g.class_ids else ""))
        return out

    def take_fresh(self, key: Hashable, cached: Container) -> list[FreshPrompt]:
        """The groups bound to frame ``key`` (or to a frame no longer in ``cached``) that
        were not taken yet, each returned once (for the tracker). Taken objects are
        forgotten here: their track owns them."""
        out: list[FreshPrompt] = []
        with self._lock:
            for name, g in list(self._groups.items()):
                if not g.is_bound or g.awaiting_frame or g.taken == g.serial:
                    continue
                if g.bound != key and g.bound in cached:
                    continue
                g.taken = g.serial
                if name == BOXES:
                    out.append(FreshPrompt(name, boxes=g.boxes.copy(), class_ids=list(g.class_ids),
                                           scores=list(g.scores)))
                elif not g.empty():
                    out.append(FreshPrompt(name, _prompt(g), class_ids=list(g.class_ids), target_id=g.target_id,
                                           point_count=len(g.points)))
                if name.startswith(OBJECT):
                    del self._groups[name]
        return out

    def boxes_for(self, key: Hashable) -> tuple[np.ndarray, list[str]] | None:
        """Box prompts that apply to frame ``key`` (for segment-everything), or None."""
        with self._lock:
            g = self._groups[BOXES]
            if not self._applies(g, key):
                return None
            return g.boxes.copy(), list(g.class_ids)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"points": len(self._groups[POINTS].points), "boxes": len(self._groups[BOXES].boxes),
                    "objects": sum(1 for name in self._groups if name.startswith(OBJECT))}


def _prompt(g: _Group) -> Prompt:
    """A group's single-object prompt (points and / or its first box)."""
    points = np.array(g.points, np.float32).reshape(-1, 2) if g.points else None
    labels = np.array(g.labels, np.int64) if g.points else None
    box = g.boxes[0].copy() if len(g.boxes) else None
    return Prompt(points=points, labels=labels, box=box)
