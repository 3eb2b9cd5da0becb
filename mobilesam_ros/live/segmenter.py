"""Segmenting a live frame stream, without ROS: encode each frame once, keep the last
few embeddings, decode the active prompts (or segment everything) in batched calls.

The ROS node converts messages to arrays and hands them here; everything that does
not depend on a message type lives in this module and in :mod:`.prompts` /
:mod:`.frames` / :mod:`.tracking`, so it is unit-tested without rclpy.

With tracking (the default), every published object carries a track id
(``SegmentationResult.track_ids``, ``.objects()``): prompts start objects and the
:class:`~.tracking.Tracker` follows them; all propagated objects of a frame are
decoded in one batched decoder call.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np

from ..geometry import LOW_RES_SIZE
from ..postprocess import get_postprocessor
from ..predictor import ImageEmbedding, Prompt, PromptError, SamPredictor, validate_prompt
from ..visualize import mask_boxes, masks_to_label_image
from .frames import FrameError
from .prompts import BOXES, CLEAR, POINTS, REMOVE, ObjectPrompt, PromptState, StreamClock, resolve_target, stamp_seconds
from .stats import error_kind
from .tracking import TrackedObject, Tracker, TrackingConfig


@dataclass
class FrameEntry:
    """An encoded frame: its key (stamp), the caller's header object, the RGB image."""

    key: Hashable
    header: Any
    image: np.ndarray
    received: float  # time.monotonic() when the frame arrived
    embedding: ImageEmbedding
    seq: int = 0  # 1, 2, ... in encoding order (the tracker's frame clock)

    @property
    def size(self) -> tuple[int, int]:
        return self.embedding.original_size


@dataclass
class SegmentationResult:
    """What one decode produced for one frame, ready to be turned into messages."""

    frame: FrameEntry
    masks: np.ndarray  # (K, H, W) bool
    scores: np.ndarray  # (K,) predicted IoU
    boxes: np.ndarray  # (K, 4) float32 x0, y0, x1, y1 of each mask (x1/y1 exclusive)
    labels: np.ndarray  # (H, W) uint16: 0 background, object i -> track_ids[i] (larger drawn first)
    class_ids: list[str]
    trigger: str  # "frame" (new frame encoded) or "prompt" (prompts changed)
    prompt_points: np.ndarray | None = None  # (N, 2)
    prompt_labels: np.ndarray | None = None  # (N,)
    prompt_boxes: np.ndarray | None = None  # (B, 4)
    timings_ms: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # prompts that were skipped, and why
    track_ids: np.ndarray | None = None  # (K,) int: the objects' ids (1..K without tracking)
    sources: list[str] = field(default_factory=list)  # per object: point, object, boxes, everything
    states: list[str] = field(default_factory=list)  # per object: new, tracked, reacquired
    events: list[str] = field(default_factory=list)  # tracks lost / re-acquired / ended (logged)

    def __post_init__(self) -> None:
        if self.track_ids is None:
            self.track_ids = np.arange(1, len(self.masks) + 1, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.masks)

    def objects(self) -> list[TrackedObject]:
        """One :class:`~.tracking.TrackedObject` per object, in label order (the
        contract documented in :mod:`.tracking`)."""
        return [
            TrackedObject(
                int(self.track_ids[i]), self.masks[i], self.boxes[i], float(self.scores[i]),
                self.class_ids[i] if i < len(self.class_ids) else "",
                self.sources[i] if i < len(self.sources) else "",
                self.states[i] if i < len(self.states) else "tracked",
            )
            for i in range(len(self.masks))
        ]

    def union_mask(self) -> np.ndarray:
        """(H, W) bool: inside any object."""
        return self.labels > 0


def _upscale(low_res: np.ndarray, embedding: ImageEmbedding, threshold: float) -> np.ndarray:
    """(K, 256, 256) logits -> (K, H, W) bool masks (the same masks as
    transforms.logits_to_masks, upsampled only where they can be True)."""
    return get_postprocessor(embedding.original_size, embedding.input_size, threshold).masks(low_res)


def frame_time(entry: FrameEntry) -> float:
    """A frame's time in seconds for motion prediction: its stamp when the key is one
    ((sec, nanosec), as the node keys frames), else when it arrived (the tracker falls
    back to one frame period when a stamp does not advance)."""
    key = entry.key
    if isinstance(key, tuple) and len(key) == 2 and all(isinstance(v, (int, np.integer)) for v in key):
        return float(key[0]) + float(key[1]) * 1e-9
    return float(entry.received)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


class StreamSegmenter:
    """Frames in, :class:`SegmentationResult` out; see the module docstring.

    ``mode`` "prompt" decodes ``prompts.objects_for(frame)``; "everything" runs the
    ``everything`` segmenter (an ``EverythingSegmenter``) on the cached embedding,
    with the box prompts that apply to the frame replacing its detector.
    """

    def __init__(
        self,
        predictor: SamPredictor,
        prompts: PromptState,
        mode: str = "prompt",
        everything: Any = None,
        multimask_single_point: bool = True,
        min_score: float = 0.0,
        tracking: TrackingConfig | None = None,
    ) -> None:
        if mode not in ("prompt", "everything"):
            raise ValueError(f"mode must be prompt or everything, got {mode!r}")
        if mode == "everything" and everything is None:
            raise ValueError("everything mode needs an EverythingSegmenter")
        self.predictor = predictor
        self.prompts = prompts
        self.mode = mode
        self.everything = everything
        self.multimask_single_point = multimask_single_point and predictor.runtime.num_mask_outputs > 1
        self.min_score = float(min_score)
        self._history: OrderedDict[Hashable, FrameEntry] = OrderedDict()
        self._unstamped = itertools.count()
        self._seq = itertools.count(1)
        self.latest_key: Hashable = None
        #: follows objects and gives them ids (None: tracking.enabled false, ids 1..K per frame)
        self.tracker: Tracker | None = None
        if tracking is not None and tracking.enabled:
            self.tracker = Tracker(tracking, predictor.mask_threshold, prompts.persistence)
        self._generation = prompts.generation
        self._clock = StreamClock()  # of the frames encoded
        self._size: tuple[int, int] | None = None  # of the last frame encoded
        #: why the stream restarted at the last frame encoded (else None); see :meth:`encode`
        self.restart_reason: str | None = None

    # --- frames -----------------------------------------------------------------------
    @property
    def cache_size(self) -> int:
        return self.predictor._cache_size

    def cached_keys(self) -> list[Hashable]:
        return list(self._history)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._history

    def frame(self, key: Hashable) -> FrameEntry | None:
        return self._history.get(key)

    def encode(self, image: np.ndarray, key: Hashable, header: Any = None,
               received: float | None = None) -> tuple[FrameEntry, float]:
        """Encode a frame (HxWx3 uint8 RGB); returns the entry and the encode time (ms).

        ``key`` None (an unstamped frame) gets a private key: prompts can only reach
        it as "the latest frame".
        """
        self.restart_reason = self._discontinuity(key, image.shape[:2])
        if self.restart_reason is not None:
            self._restart(self.restart_reason)
        if key is None:
            key = ("unstamped", next(self._unstamped))
        elif key in self._history:
            del self._history[key]  # the same stamp again: the newest image takes the key
        t0 = time.perf_counter()
        embedding = self.predictor.set_image(image, key=key)
        encode_ms = _ms(t0)
        entry = FrameEntry(key, header, image, time.monotonic() if received is None else received, embedding,
                           next(self._seq))
        self._history[key] = entry
        while len(self._history) > self.cache_size:
            self._history.popitem(last=False)
        self.latest_key = key
        self.prompts.bounds = entry.size
        return entry, encode_ms

    def _discontinuity(self, key: Hashable, size: tuple[int, int]) -> str | None:
        """Why a frame cannot continue the stream before it: time went backwards, or the
        image size changed (a camera restarted with other settings); else None."""
        why = None
        stamp = stamp_seconds(key)
        back = self._clock.advance(stamp) if stamp is not None else None
        if back is not None:
            why = f"time went backwards by {back:.3f} s (a bag replayed in a loop, a simulator reset?)"
        if why is None and self._size is not None and tuple(size) != self._size:
            why = (f"the image size changed from {self._size[1]}x{self._size[0]} to {size[1]}x{size[0]} "
                   f"(a camera restarted?)")
        self._size = tuple(size)
        return why

    def _restart(self, why: str) -> None:
        """A new stream: cached frames and tracks belong to the old one (tf2 clears its
        buffer on a jump back the same way). Followed objects end; prompts taken by
        them are not replayed (their pixels belong to the old stream), so objects are
        found again from new prompts or the detector's next boxes."""
        self._history.clear()
        if self.tracker is not None:
            self.tracker.clear(why=f"stream restarted: {why}")

    # --- decoding -----------------------------------------------------------------------
    def segment(self, key: Hashable, trigger: str = "frame") -> SegmentationResult:
        """Decode what applies to frame ``key`` (must be cached)."""
        entry = self._history.get(key)
        if entry is None:
            raise KeyError(f"frame {key} is not cached")
        if self.mode == "everything":
            return self._segment_everything(entry, trigger)
        if self.tracker is not None:
            return self._segment_tracked(entry, trigger)
        return self._segment_prompts(entry, trigger)

    def _empty(self, entry: FrameEntry, trigger: str, **extra) -> SegmentationResult:
        h, w = entry.size
        return SegmentationResult(
            entry, np.zeros((0, h, w), bool), np.zeros((0,), np.float32), np.zeros((0, 4), np.float32),
            np.zeros((h, w), np.uint16), [], trigger, **extra,
        )

    def _segment_prompts(self, entry: FrameEntry, trigger: str) -> SegmentationResult:
        embedding = entry.embedding
        objects: list[ObjectPrompt] = []
        problems: list[str] = []
        for obj in self.prompts.objects_for(entry.key):
            try:
                validate_prompt(obj.prompt, entry.size)
                objects.append(obj)
            except PromptError as exc:
                problems.append(f"{obj.source} prompt skipped: {exc}")
        points = [o for o in objects if o.source == "points"]
        boxes = [o.prompt.box for o in objects if o.source == "boxes"]
        extra = {
            "prompt_points": points[0].prompt.points if points else None,
            "prompt_labels": points[0].prompt.labels if points else None,
            "prompt_boxes": np.stack(boxes) if boxes else None,
            "problems": problems,
        }
        if not objects:
            return self._empty(entry, trigger, **extra)

        t0 = time.perf_counter()
        n = len(objects)
        scores, low_res = self._decode([o.prompt for o in objects],
                                       [self.multimask_single_point and o.single_point for o in objects], embedding)
        decode_ms = _ms(t0)

        t0 = time.perf_counter()
        keep = np.flatnonzero(scores >= self.min_score) if self.min_score > 0 else np.arange(n)
        if len(keep) < n:
            problems.append(f"{n - len(keep)} object(s) below min_score {self.min_score} dropped")
        masks = _upscale(low_res[keep], embedding, self.predictor.mask_threshold)
        labels = masks_to_label_image(masks)
        result = SegmentationResult(
            entry, masks, scores[keep], mask_boxes(masks), labels,
            [objects[i].class_id for i in keep], trigger, **extra,
        )
        result.timings_ms = {"decode": decode_ms, "postprocess": _ms(t0)}
        return result

    def _segment_everything(self, entry: FrameEntry, trigger: str) -> SegmentationResult:
        given = self.prompts.boxes_for(entry.key)
        boxes, class_ids = (None, None) if given is None else given
        extra = {"prompt_boxes": boxes}
        cfg = self.everything.config
        if cfg.strategy == "boxes" and boxes is None and self.everything.detector is None:
            return self._empty(entry, trigger, problems=[], **extra)
        t0 = time.perf_counter()
        res = self.everything.segment(entry.image, embedding=entry.embedding, boxes=boxes)
        decode_ms = _ms(t0)
        t0 = time.perf_counter()
        masks = res.masks
        scores = np.asarray(res.iou_predictions, np.float32)
        keep = np.flatnonzero(scores >= self.min_score) if self.min_score > 0 else np.arange(len(masks))
        if len(keep) < len(masks):
            masks, scores = masks[keep], scores[keep]
        out_boxes = np.asarray(res.boxes, np.float32)[keep].copy() if len(res.boxes) else np.zeros((0, 4), np.float32)
        if len(out_boxes):
            out_boxes[:, 2:] += 1.0  # inclusive last pixel -> exclusive edge, as mask_boxes
        ids = [""] * len(masks)
        if class_ids is not None and res.prompt_index is not None:
            ids = [class_ids[int(i)] if int(i) < len(class_ids) else "" for i in np.asarray(res.prompt_index)[keep]]
        track_ids = None
        if self.tracker is not None:
            t1 = time.perf_counter()
            self._sync_tracker()
            track_ids = self.tracker.associate_masks(entry.seq, masks)
            tracking_ms = _ms(t1)
        labels = masks_to_label_image(masks, ids=track_ids)
        result = SegmentationResult(entry, masks, scores, out_boxes, labels, ids, trigger, **extra,
                                    track_ids=track_ids, sources=["everything"] * len(masks))
        result.prompt_boxes = res.prompt_boxes if res.prompt_boxes is not None else boxes
        result.timings_ms = {"decode": decode_ms, "postprocess": _ms(t0)}
        result.timings_ms.update({f"everything.{k}": v for k, v in res.timings_ms.items()})
        if self.tracker is not None:
            result.timings_ms["tracking"] = tracking_ms
            result.events = self.tracker.take_events()
        return result

    # --- tracking -------------------------------------------------------------------------------
    def _sync_tracker(self) -> list[str]:
        """Apply prompt/clear and prompt/remove to the tracks; returns problems."""
        problems = []
        generation = self.prompts.generation
        if generation != self._generation:
            self._generation = generation
            self.tracker.clear()
        for track_id in self.prompts.take_removals():
            if not self.tracker.remove(track_id):
                problems.append(f"prompt/remove: no object with id {track_id}")
        return problems

    def _take_prompts(self, entry: FrameEntry) -> list[str]:
        """Hand the prompts that are new on this frame to the tracker; returns problems."""
        tracker = self.tracker
        problems: list[str] = []
        for fresh in self.prompts.take_fresh(entry.key, self._history):
            if fresh.group == BOXES:
                keep = []
                for box in fresh.boxes:
                    try:
                        validate_prompt(Prompt(box=box), entry.size)
                        keep.append(True)
                    except PromptError as exc:
                        problems.append(f"boxes prompt skipped: {exc}")
                        keep.append(False)
                keep_arr = np.array(keep, bool)
                boxes = fresh.boxes[keep_arr] if len(keep) else fresh.boxes
                class_ids = [c for c, k in zip(fresh.class_ids, keep) if k]
                tracker.detections(entry.seq, boxes, class_ids)
                continue
            try:
                validate_prompt(fresh.prompt, entry.size)
            except PromptError as exc:
                problems.append(f"{'points' if fresh.group == POINTS else 'object'} prompt skipped: {exc}")
                continue
            if fresh.group == POINTS:
                same = self.prompts.accumulate_points and fresh.point_count > 1
                tracker.point_object(entry.seq, fresh.prompt, same_object=same)
            elif tracker.add_object(entry.seq, fresh.prompt, fresh.target_id,
                                    fresh.class_ids[0] if fresh.class_ids else "") is None:
                problems.append(f"prompt/object: no object with id {fresh.target_id} to re-prompt")
        return problems

    def _segment_tracked(self, entry: FrameEntry, trigger: str) -> SegmentationResult:
        tracker = self.tracker
        t0 = time.perf_counter()
        problems = self._sync_tracker()
        tracker.frame(entry.seq, entry.image, frame_time(entry))
        problems += self._take_prompts(entry)
        planned = tracker.plan(entry.seq, entry.size)
        tracking_ms = _ms(t0)
        if not planned:
            result = self._empty(entry, trigger, problems=problems)
            result.events = tracker.take_events()
            result.timings_ms = {"tracking": tracking_ms}
            return result

        t0 = time.perf_counter()
        scores, low_res = self._decode([p.prompt for p in planned],
                                       [self.multimask_single_point and p.multimask for p in planned], entry.embedding)
        decode_ms = _ms(t0)

        t0 = time.perf_counter()
        keep = tracker.observe(entry.seq, planned, scores, low_res)
        tracking_ms += _ms(t0)
        t0 = time.perf_counter()
        if self.min_score > 0:
            dropped = [i for i in keep if scores[i] < self.min_score]
            if dropped:
                problems.append(f"{len(dropped)} object(s) below min_score {self.min_score} dropped")
                keep = [i for i in keep if scores[i] >= self.min_score]
        ids = np.array([planned[i].track.track_id for i in keep], np.int64)
        masks = _upscale(low_res[keep], entry.embedding, self.predictor.mask_threshold)
        boxes = mask_boxes(masks)
        labels = masks_to_label_image(masks, ids=ids)
        tracker.set_boxes(ids, boxes)
        points = [planned[i].prompt for i in keep if planned[i].prompt.points is not None]
        user_boxes = [planned[i].prompt.box for i in keep
                      if planned[i].kind in ("new", "prompt", "detection") and planned[i].prompt.box is not None]
        result = SegmentationResult(
            entry, masks, scores[keep], boxes, labels,
            [planned[i].track.class_id for i in keep], trigger,
            prompt_points=np.concatenate([p.points for p in points]) if points else None,
            prompt_labels=np.concatenate([p.labels for p in points]) if points else None,
            prompt_boxes=np.stack(user_boxes) if user_boxes else None,
            problems=problems, track_ids=ids, sources=[planned[i].track.source for i in keep],
            states=tracker.states(planned, keep), events=tracker.take_events(),
        )
        result.timings_ms = {"decode": decode_ms, "tracking": tracking_ms, "postprocess": _ms(t0)}
        return result

    def _decode(self, prompts: list[Prompt], multimask: list[bool], embedding: ImageEmbedding
                ) -> tuple[np.ndarray, np.ndarray]:
        """Best score and low-res logits per prompt: those flagged ``multimask`` take the
        best of SAM's three candidates, the rest the single-mask output. Prompts of one
        layout share a batched decoder call (every propagated object has the same one)."""
        n = len(prompts)
        scores = np.empty((n,), np.float32)
        low_res = np.empty((n, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
        multi = [i for i in range(n) if multimask[i]]
        single = [i for i in range(n) if not multimask[i]]
        for indices, flag in ((single, False), (multi, True)):
            if not indices:
                continue
            iou, logits = self.predictor.decode_low_res([prompts[i] for i in indices], flag, embedding)
            best = iou.argmax(axis=1)
            rows = np.arange(len(indices))
            scores[indices] = iou[rows, best]
            low_res[indices] = logits[rows, best]
        return scores, low_res


class StreamWorker:
    """The inference loop: takes only the newest frame from a :class:`FrameSlot`,
    resolves prompt changes to frames, encodes, decodes, hands results on.

    ``convert(payload) -> (rgb, stamp_key, header)`` turns what the slot holds (a
    message) into an image (raising ``FrameError`` for a bad one);
    ``publish(result)`` sends a result out. Nothing here blocks the producer: the
    slot only ever holds the newest frame. Every failure is reported through
    ``errors`` (a ``ThrottledLog``) and counted; the loop keeps going.
    """

    def __init__(self, segmenter: StreamSegmenter, slot, convert, publish, stats, errors,
                 publish_empty: bool = True, debug=None) -> None:
        self.segmenter = segmenter
        self.slot = slot
        self.convert = convert
        self.publish = publish
        self.stats = stats
        self.errors = errors
        self.publish_empty = publish_empty
        self.debug = debug
        self._thread = None

    # --- thread -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mobilesam-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Close the slot and wait for the worker; False if it is still busy (an encode
        that outlasts ``timeout``), in which case its engine must not be closed."""
        self.slot.close()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        while not self.slot.closed:
            self.step(0.5)

    # --- one iteration ------------------------------------------------------------------
    def step(self, timeout: float | None = 0.0) -> None:
        """Wait up to ``timeout`` for work, then handle prompt changes and the newest frame."""
        self.slot.wait(timeout)
        if self.slot.closed:
            return
        try:
            self._handle_prompt_changes()
        except Exception as exc:  # noqa: BLE001 - the loop must survive anything
            self.errors.report("prompt_decode", f"decoding prompts failed: {type(exc).__name__}: {exc}")
        item = self.slot.take()
        if item is not None:
            try:
                self._handle_frame(item)
            except Exception as exc:  # noqa: BLE001 - one bad frame is counted; the stream goes on
                self.errors.report("frame_decode", f"segmenting a frame failed: {type(exc).__name__}: {exc}")

    def _handle_prompt_changes(self, current=None) -> None:
        """Resolve prompt changes to frames and decode the frames they touched, except
        ``current`` (a frame about to be segmented anyway)."""
        changes = self.segmenter.prompts.take_changes()
        if not changes:
            return
        pending = self.slot.peek_key()
        latest = self.segmenter.latest_key
        now: dict = {}
        for change in changes:
            if change.group in (CLEAR, REMOVE):
                if latest is not None:
                    now[latest] = None
                continue
            kind, key = resolve_target(change.stamp, self.segmenter, pending, latest)
            if kind == "none":
                self.segmenter.prompts.discard(change)
                self.errors.report(
                    "prompt_before_frame",
                    f"{change.group} prompt received before any image frame: skipped (publish images first)",
                    counter="prompt_errors",
                )
                continue
            if kind == "latest" and change.stamp is not None:
                self._report_unmatched_stamp(change, latest)
            self.segmenter.prompts.bind(change, key, awaiting_frame=(kind == "pending"))
            if kind != "pending":
                now[key] = None
        for key in now:
            if key in self.segmenter and key != current:
                self._emit(self.segmenter.segment(key, trigger="prompt"))

    def _report_unmatched_stamp(self, change, latest) -> None:
        """A stamped prompt whose frame is neither cached nor waiting: it goes to the
        newest frame; say how far its stamp is from that frame's (once per direction,
        every one counted)."""
        stamp, newest = stamp_seconds(change.stamp), stamp_seconds(latest)
        if stamp is None or newest is None:
            return
        after = stamp > newest
        self.errors.report(
            f"prompt_stamp:{'future' if after else 'past'}",
            f"{change.group} prompt stamped {abs(stamp - newest):.3f} s {'after' if after else 'before'} the newest "
            f"frame{'' if after else ' and older than every cached frame'}: applied to the newest frame"
            + (" (clock skew between machines?)" if after else " (embedding_cache_size holds more frames)"),
            counter="prompts_unmatched_stamp", level="warn")

    def _handle_frame(self, item) -> None:
        t0 = time.perf_counter()
        try:
            image, key, header = self.convert(item.payload)
        except FrameError as exc:
            self.errors.report(error_kind("frame", str(exc)), f"image skipped: {exc}", counter="frame_errors")
            return
        convert_ms = _ms(t0)
        self.stats.stage("convert", convert_ms)
        entry, encode_ms = self.segmenter.encode(image, key, header, item.received)
        self.stats.stage("encode", encode_ms)
        if self.segmenter.restart_reason is not None:
            self.errors.report("stream_restart", f"stream restarted at frame {entry.key}: "
                               f"{self.segmenter.restart_reason}; tracks and cached frames reset",
                               counter="stream_restarts", level="warn")
        self.segmenter.prompts.frame_encoded(entry.key)
        # prompts that arrived while encoding: bind them now, so this frame has them
        self._handle_prompt_changes(current=entry.key)
        result = self.segmenter.segment(entry.key, trigger="frame")
        result.timings_ms = {"convert": convert_ms, "encode": encode_ms, **result.timings_ms}
        self.stats.frame_processed()
        self._emit(result)

    def _emit(self, result: SegmentationResult) -> None:
        for problem in result.problems:
            self.errors.report(error_kind("prompt", problem), problem, counter="prompt_errors")
        for event in result.events:  # each is its own kind: logged once, never throttled away
            self.errors.report(f"track:{event}", event, counter=None, level="info")
        for stage in ("decode", "tracking", "postprocess"):
            if stage in result.timings_ms:
                self.stats.stage(stage, result.timings_ms[stage])
        if len(result) == 0 and not self.publish_empty and result.trigger == "frame":
            return
        if self.slot.closed:  # stop() was called: the publishers may be gone already
            return
        t0 = time.perf_counter()
        self.publish(result)
        publish_ms = _ms(t0)
        self.stats.stage("publish", publish_ms)
        self.stats.published((time.monotonic() - result.frame.received) * 1e3)
        if self.debug is not None:
            timings = dict(result.timings_ms, publish=publish_ms)
            self.debug(
                f"frame {result.frame.key} ({result.trigger}): {len(result)} object(s); "
                + ", ".join(f"{k} {v:.1f} ms" for k, v in timings.items())
            )
