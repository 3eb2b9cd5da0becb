"""Segmenting a live frame stream, without ROS: encode each frame once, keep the last
few embeddings, decode the active prompts (or segment everything) in batched calls.

The ROS node converts messages to arrays and hands them here; everything that does
not depend on a message type lives in this module and in :mod:`.prompts` /
:mod:`.frames`, so it is unit-tested without rclpy.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np

from .frames import FrameError
from .stats import error_kind
from ..predictor import ImageEmbedding, PromptError, SamPredictor, validate_prompt
from .prompts import CLEAR, ObjectPrompt, PromptState, resolve_target
from ..postprocess import get_postprocessor
from ..runtime.base import LOW_RES_SIZE
from ..visualize import mask_boxes, masks_to_label_image


@dataclass
class FrameEntry:
    """An encoded frame: its key (stamp), the caller's header object, the RGB image."""

    key: Hashable
    header: Any
    image: np.ndarray
    received: float  # time.monotonic() when the frame arrived
    embedding: ImageEmbedding

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
    labels: np.ndarray  # (H, W) uint16: 0 background, object i -> i + 1 (larger drawn first)
    class_ids: list[str]
    trigger: str  # "frame" (new frame encoded) or "prompt" (prompts changed)
    prompt_points: np.ndarray | None = None  # (N, 2)
    prompt_labels: np.ndarray | None = None  # (N,)
    prompt_boxes: np.ndarray | None = None  # (B, 4)
    timings_ms: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # prompts that were skipped, and why

    def __len__(self) -> int:
        return len(self.masks)

    def union_mask(self) -> np.ndarray:
        """(H, W) bool: inside any object."""
        return self.labels > 0


def _upscale(low_res: np.ndarray, embedding: ImageEmbedding, threshold: float) -> np.ndarray:
    """(K, 256, 256) logits -> (K, H, W) bool masks (the same masks as
    transforms.logits_to_masks, upsampled only where they can be True)."""
    return get_postprocessor(embedding.original_size, embedding.input_size, threshold).masks(low_res)


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
        self.latest_key: Hashable = None

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

    def encode(self, image: np.ndarray, key: Hashable, header: Any = None, received: float | None = None) -> tuple[FrameEntry, float]:
        """Encode a frame (HxWx3 uint8 RGB); returns the entry and the encode time (ms).

        ``key`` None (an unstamped frame) gets a private key: prompts can only reach
        it as "the latest frame".
        """
        if key is None:
            key = ("unstamped", next(self._unstamped))
        elif key in self._history:
            del self._history[key]  # the same stamp again: the newest image takes the key
        t0 = time.perf_counter()
        embedding = self.predictor.set_image(image, key=key)
        encode_ms = _ms(t0)
        entry = FrameEntry(key, header, image, time.monotonic() if received is None else received, embedding)
        self._history[key] = entry
        while len(self._history) > self.cache_size:
            self._history.popitem(last=False)
        self.latest_key = key
        self.prompts.bounds = entry.size
        return entry, encode_ms

    # --- decoding -----------------------------------------------------------------------
    def segment(self, key: Hashable, trigger: str = "frame") -> SegmentationResult:
        """Decode what applies to frame ``key`` (must be cached)."""
        entry = self._history.get(key)
        if entry is None:
            raise KeyError(f"frame {key} is not cached")
        if self.mode == "everything":
            return self._segment_everything(entry, trigger)
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
        scores = np.empty((n,), np.float32)
        low_res = np.empty((n, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
        multi = [i for i, o in enumerate(objects) if self.multimask_single_point and o.single_point]
        single = [i for i, o in enumerate(objects) if not (self.multimask_single_point and o.single_point)]
        for indices, multimask in ((single, False), (multi, True)):
            if not indices:
                continue
            iou, logits = self.predictor.decode_low_res([objects[i].prompt for i in indices], multimask, embedding)
            best = iou.argmax(axis=1)
            rows = np.arange(len(indices))
            scores[indices] = iou[rows, best]
            low_res[indices] = logits[rows, best]
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
        labels = masks_to_label_image(masks)
        result = SegmentationResult(entry, masks, scores, out_boxes, labels, ids, trigger, **extra)
        result.prompt_boxes = res.prompt_boxes if res.prompt_boxes is not None else boxes
        result.timings_ms = {"decode": decode_ms, "postprocess": _ms(t0)}
        result.timings_ms.update({f"everything.{k}": v for k, v in res.timings_ms.items()})
        return result


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
            except Exception as exc:  # noqa: BLE001
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
            if change.group == CLEAR:
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
            self.segmenter.prompts.bind(change, key, awaiting_frame=(kind == "pending"))
            if kind != "pending":
                now[key] = None
        for key in now:
            if key in self.segmenter and key != current:
                self._emit(self.segmenter.segment(key, trigger="prompt"))

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
        for stage in ("decode", "postprocess"):
            if stage in result.timings_ms:
                self.stats.stage(stage, result.timings_ms[stage])
        if len(result) == 0 and not self.publish_empty and result.trigger == "frame":
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
