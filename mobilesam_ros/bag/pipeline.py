"""Segment every frame of a recorded bag, in order, and write the node's outputs.

The frames go through the live pipeline's :class:`~mobilesam_ros.live.segmenter.StreamSegmenter`
and :class:`~mobilesam_ros.live.prompts.PromptState` (the node's code), one frame at a
time with nothing dropped; messages are converted as the node converts them
(:mod:`mobilesam_ros.messages`).

Pairing recorded detections (``prompts_topic``) with frames, as the node pairs them:
a Detection2DArray applies to the frame with the same header stamp, wherever it
lies in the bag (a detector's output is usually logged after the next frame);
one whose stamp matches no frame (or is zero) applies to the latest frame logged
before it, as the node binds it on arrival. ``persistence`` then works as in the
node: ``sticky`` keeps the boxes on later frames until the next detections
replace them (an empty array clears them), ``once`` uses them on their frame only.
"""

from __future__ import annotations

import bisect
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np

from ..live.frames import FrameError
from ..live.prompts import PromptState
from ..live.segmenter import SegmentationResult, StreamSegmenter
from ..messages.detections import detections_to_boxes
from ..messages.images import compressed_msg_to_rgb, header_key, image_msg_to_rgb
from ..visualize import draw_overlay
from .coco import CocoWriter
from .io import BagError, InputBag, OutputBag
from .typestore import CAMERA_INFO, COMPRESSED_IMAGE, DETECTION_2D_ARRAY, IMAGE, OutputMessages, cdr_stamp, default_typestore

#: output name -> (message type, encoding) under the namespace, as the node's ~/...
OUTPUTS = {
    "mask": (IMAGE, "mono8"),
    "labels": (IMAGE, "mono16"),
    "detections": (DETECTION_2D_ARRAY, ""),
    "overlay": (IMAGE, "rgb8"),
}


@dataclass
class BagOptions:
    image_topic: str
    ns: str = "/mobilesam"
    prompts_topic: str | None = None
    persistence: str = "sticky"
    #: fixed prompt applied from the first frame: points (N, 2) + labels (N,), and/or boxes (B, 4)
    points: np.ndarray | None = None
    point_labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    overlay: bool = False
    overlay_alpha: float = 0.5
    copy_input: bool = False
    storage: str | None = None  # None: as the input
    overwrite: bool = False
    min_score: float = 0.0
    multimask_single_point: bool = True
    #: follow objects from frame to frame (the node's tracking.*); None: every frame on its own
    tracking: Any = None
    #: 3D outputs from recorded depth (16UC1 / 32FC1 aligned to the frames) and CameraInfo
    depth_topic: str | None = None
    camera_info_topic: str | None = None
    depth_max_dt: float | None = None  # None: the node's depth.max_dt

    def topic(self, name: str) -> str:
        ns = "/" + self.ns.strip("/") if self.ns.strip("/") else ""
        return f"{ns}/{name}"


@dataclass
class Detections:
    """One recorded Detection2DArray, as prompts."""

    logtime: int
    key: Hashable
    boxes: np.ndarray
    class_ids: list[str]
    scores: list[float | None]


@dataclass
class BagSummary:
    frames_total: int = 0  # image messages in the input
    frames_read: int = 0
    segmented: int = 0
    objects: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> frames
    prompt_problems: Counter = field(default_factory=Counter)
    written: Counter = field(default_factory=Counter)  # output topic -> messages
    coco_images: int = 0
    not_copied: list = field(default_factory=list)  # --copy-input topics whose type is unknown
    frames_3d: int = 0  # frames with 3D outputs (--depth-topic)
    skipped_3d: Counter = field(default_factory=Counter)  # reason -> frames without 3D
    model_s: float = 0.0  # encoder + decoder + masks (+ tracking)
    decode_s: float = 0.0  # deserialising and converting the frames
    write_s: float = 0.0  # building, serialising and writing the outputs (and the COCO files)
    total_s: float = 0.0  # the whole loop (reading, converting, model, writing)
    #: CPU time of this thread outside the model (reading, converting, writing): what the
    #: overhead costs however busy the machine is (wall times grow with the load)
    overhead_cpu_s: float = 0.0
    _model_cpu_s: float = 0.0
    storage: str = ""

    @property
    def overhead(self) -> float:
        """Time beyond the model's, as a fraction of the model's."""
        return (self.total_s - self.model_s) / self.model_s if self.model_s > 0 else 0.0

    def lines(self) -> list[str]:
        skipped = sum(self.skipped.values())
        out = [
            f"{self.segmented} of {self.frames_total} frame(s) segmented, {self.objects} object(s); "
            f"{skipped} skipped" + (f" ({', '.join(f'{n} {r}' for r, n in self.skipped.most_common())})" if skipped else "")
        ]
        if self.segmented:
            out.append(
                f"{self.segmented / max(self.total_s, 1e-9):.2f} frames/s; "
                f"model {1e3 * self.model_s / self.segmented:.1f} ms/frame, "
                f"reading + converting + writing {1e3 * (self.total_s - self.model_s) / self.segmented:.1f} ms/frame "
                f"({100 * self.overhead:.1f}% over model time; CPU {1e3 * self.overhead_cpu_s / self.segmented:.1f} ms/frame)"
            )
        if self.frames_3d or self.skipped_3d:
            out.append(f"3D: {self.frames_3d} frame(s) with objects measured"
                       + (f"; none for {', '.join(f'{n} ({r})' for r, n in self.skipped_3d.most_common())}"
                          if self.skipped_3d else ""))
        if self.not_copied:
            out.append("not copied (no message definition in the bag or in rosbags): " + ", ".join(self.not_copied))
        if self.prompt_problems:
            out.append("prompt problems: " + "; ".join(f"{n}x {p}" for p, n in self.prompt_problems.most_common(5)))
        return out


def pair_detections(frames: list[tuple[int, Hashable]], detections: list[Detections]) -> dict[int, list[Detections]]:
    """Frame index -> the detections that apply to it, in log order (module docstring).

    ``frames`` are (log time, stamp key) in log order."""
    by_stamp: dict[Hashable, list[int]] = {}
    for i, (_, key) in enumerate(frames):
        if key is not None:
            by_stamp.setdefault(key, []).append(i)
    logtimes = [t for t, _ in frames]
    plan: dict[int, list[Detections]] = {}
    for det in detections:
        targets = by_stamp.get(det.key) if det.key is not None else None
        if not targets:
            targets = [max(0, bisect.bisect_right(logtimes, det.logtime) - 1)]
        for i in targets:
            plan.setdefault(i, []).append(det)
    for dets in plan.values():
        dets.sort(key=lambda d: d.logtime)
    return plan


class Progress:
    """Frames done, rate and time left on one line (a terminal) or a line every
    ``interval`` seconds (a log)."""

    def __init__(self, total: int, stream: Any, tty: bool | None = None, interval: float | None = None) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.5 if self.tty else 10.0)
        self.start = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate > 0 else float("nan")
        eta = "--:--" if not np.isfinite(left) else f"{int(left // 60)}:{int(left % 60):02d}"
        text = f"{done}/{self.total} frames ({100 * done / max(self.total, 1):.0f}%), {rate:.2f} frames/s, {eta} left"
        if self.tty:
            self.stream.write("\r" + text.ljust(72))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\n")
            self.stream.flush()


def output_names(options: BagOptions) -> list[str]:
    """The outputs written, as the node's topic names relative to ``--ns``."""
    from .recorded_depth import OUTPUTS_3D

    names = [n for n in OUTPUTS if n != "overlay" or options.overlay]
    return names + (list(OUTPUTS_3D) if options.depth_topic else [])


def input_connections(bag: InputBag, options: BagOptions) -> list[Any]:
    """The image topic's connections, after checking every topic ``options`` name
    (cheap: call it before loading the model, so a wrong topic fails at once)."""
    topic = options.image_topic
    topics = bag.topics()
    if topic not in topics and f"{topic.rstrip('/')}/compressed" in topics:
        topic = f"{topic.rstrip('/')}/compressed"  # the node's transport naming
    conns = bag.connections_of(topic, (IMAGE, COMPRESSED_IMAGE), "image")
    if options.prompts_topic:
        bag.connections_of(options.prompts_topic, (DETECTION_2D_ARRAY,), "prompts")
    if bool(options.depth_topic) != bool(options.camera_info_topic):
        raise BagError("3D outputs need both --depth-topic and --camera-info-topic")
    if options.depth_topic:
        bag.connections_of(options.depth_topic, (IMAGE,), "depth")
        bag.connections_of(options.camera_info_topic, (CAMERA_INFO,), "camera info")
    if options.copy_input:
        names = {options.topic(n) for n in output_names(options)}
        clash = sorted({c.topic for c in bag.connections} & names)
        if clash:
            raise BagError(f"the input already has {', '.join(clash)}: give another --ns for the outputs")
    return conns


class BagSegmenter:
    """Runs one bag through the model; see the module docstring.

    ``summary`` is kept up to date while running, so a caller that catches an
    interruption can report what was done. Start-up work (model, message classes,
    output topics) happens once, in the constructor and before the first frame.
    """

    def __init__(self, predictor: Any, options: BagOptions, everything: Any = None) -> None:
        self.options = options
        self.prompts = PromptState(options.persistence)
        self.segmenter = StreamSegmenter(
            predictor, self.prompts, "everything" if everything is not None else "prompt", everything,
            options.multimask_single_point, options.min_score, tracking=options.tracking,
        )
        self.store = default_typestore()
        self.messages = OutputMessages(self.store)
        self.summary = BagSummary()
        self.output: OutputBag | None = None
        self.coco: CocoWriter | None = None
        self.depth = None
        if options.depth_topic:
            from .recorded_depth import BagDepth

            self.depth = BagDepth(options.depth_topic, options.camera_info_topic, self.store, options.depth_max_dt)

    # --- plan -------------------------------------------------------------------------
    @staticmethod
    def _frame_stamps(bag: InputBag, image_conns: list[Any]) -> list[tuple[int, Hashable]]:
        """(log time, stamp key) of every frame, from their headers only (no pixels
        deserialised)."""
        frames = []
        for _, t, raw in bag.messages(image_conns):
            try:
                key = cdr_stamp(raw)
            except Exception:  # noqa: BLE001 - a broken frame: skipped (and counted) later
                key = None
            frames.append((t, key))
        return frames

    def _read_detections(self, bag: InputBag, frames: list[tuple[int, Hashable]]) -> dict[int, list[Detections]]:
        conns = bag.connections_of(self.options.prompts_topic, (DETECTION_2D_ARRAY,), "prompts")
        detections = []
        for conn, t, raw in bag.messages(conns):
            try:
                msg = bag.deserialize(raw, conn.msgtype)
                boxes, class_ids, scores = detections_to_boxes(msg)
            except Exception as exc:  # noqa: BLE001 - one bad message is counted, not fatal
                self.summary.prompt_problems[f"undecodable Detection2DArray ({type(exc).__name__})"] += 1
                continue
            detections.append(Detections(t, header_key(msg.header), boxes, class_ids, scores))
        return pair_detections(frames, detections)

    # --- run ----------------------------------------------------------------------------
    def run(self, bag: InputBag, out_path: str | Path, coco: CocoWriter | None = None,
            progress: Callable[[int, int], None] | None = None) -> BagSummary:
        """Segment every frame of ``bag`` into a new bag at ``out_path``.

        ``progress(done, total)`` is called after every frame. OUTPUT (and the COCO
        JSON) is closed however this ends: normally, Ctrl-C, or an error.
        """
        opts = self.options
        s = self.summary
        image_conns = input_connections(bag, opts)
        s.frames_total = sum(c.msgcount for c in image_conns)
        frames = self._frame_stamps(bag, image_conns) if opts.prompts_topic or self.depth else []
        plan = self._read_detections(bag, frames) if opts.prompts_topic else {}
        if self.depth is not None:
            self.depth.plan(bag, frames)
        out_names = output_names(opts)
        if opts.points is not None or opts.boxes is not None:
            self._set_fixed_prompts()

        storage = opts.storage or bag.storage
        s.storage = storage
        try:
            self.output = out = OutputBag(out_path, storage, self.store, overwrite=opts.overwrite)
        except BaseException:
            if self.depth is not None:
                self.depth.close()
            raise
        self.coco = coco
        try:
            from .recorded_depth import OUTPUTS_3D

            types = {**{n: t for n, (t, _) in OUTPUTS.items()}, **OUTPUTS_3D}
            out_conns = {n: out.add(opts.topic(n), types[n]) for n in out_names}
            copies = {}
            if opts.copy_input:
                for c in bag.connections:
                    try:
                        copies[c.id] = out.add(c.topic, c.msgtype, typestore=bag.typestore,
                                               qos=c.ext.offered_qos_profiles)
                    except Exception:  # noqa: BLE001 - a type the bag does not define and rosbags does not know
                        s.not_copied.append(f"{c.topic} ({c.msgtype})")
            image_ids = {c.id for c in image_conns}
            reading = [c for c in bag.connections if c.id in image_ids or c.id in copies]
            self._prime(bag, image_conns)
            started, cpu_started = time.perf_counter(), time.thread_time()
            frame_index = -1
            for conn, t, raw in bag.messages(reading):
                if conn.id in copies:
                    out.write(copies[conn.id], t, raw)
                if conn.id not in image_ids:
                    continue
                frame_index += 1
                s.frames_read += 1
                self._frame(bag, conn, t, raw, frame_index, plan.get(frame_index, ()), out_conns)
                s.total_s = time.perf_counter() - started
                s.overhead_cpu_s = time.thread_time() - cpu_started - s._model_cpu_s
                if progress is not None:
                    progress(s.frames_read, s.frames_total)
        finally:
            out.close()
            s.written = Counter(out.counts)
            if self.depth is not None:
                self.depth.close()
            if coco is not None:
                coco.close()
        return s

    def _prime(self, bag: InputBag, image_conns: list[Any]) -> None:
        """Start-up work once, before the first frame: rosbags generates each type's
        (de)serialiser on first use (~50 ms a type)."""
        from .typestore import default_message

        for msgtype in {c.msgtype for c in image_conns}:
            bag.typestore.deserialize_cdr(bag.typestore.serialize_cdr(default_message(bag.typestore, msgtype), msgtype),
                                          msgtype)
        from .recorded_depth import OUTPUTS_3D

        for msgtype in {IMAGE, DETECTION_2D_ARRAY, *(OUTPUTS_3D.values() if self.depth else ())}:
            self.store.serialize_cdr(default_message(self.store, msgtype), msgtype)

    def _set_fixed_prompts(self) -> None:
        """--point / --box: one object from the points, one per box, from the first
        frame on (sticky: the same prompts on every frame)."""
        opts = self.options
        if opts.points is not None:
            for (x, y), label in zip(opts.points, opts.point_labels):
                self.prompts.add_point(float(x), float(y), foreground=bool(label))
        if opts.boxes is not None:
            self.prompts.set_boxes(opts.boxes)

    def _bind_changes(self, key: Hashable) -> None:
        for change in self.prompts.take_changes():
            self.prompts.bind(change, key)

    def _frame(self, bag: InputBag, conn: Any, t: int, raw: bytes, index: int, detections,
               out_conns: dict[str, Any]) -> None:
        s = self.summary
        t0 = time.perf_counter()
        try:
            msg = bag.deserialize(raw, conn.msgtype)
        except Exception as exc:  # noqa: BLE001 - a broken message is skipped and counted
            s.skipped[f"undecodable {conn.msgtype.split('/')[-1]} ({type(exc).__name__})"] += 1
            return
        compressed = conn.msgtype == COMPRESSED_IMAGE
        try:
            image = compressed_msg_to_rgb(msg) if compressed else image_msg_to_rgb(msg)
        except FrameError as exc:
            s.skipped[_reason(str(exc))] += 1
            return
        t1 = time.perf_counter()
        s.decode_s += t1 - t0

        t0, c0 = t1, time.thread_time()
        entry, _ = self.segmenter.encode(image, header_key(msg.header), msg.header)
        for det in detections:
            for problem in self.prompts.set_boxes(det.boxes, entry.key, det.class_ids, det.scores):
                s.prompt_problems[_reason(problem)] += 1
        self._bind_changes(entry.key)
        result = self.segmenter.segment(entry.key)
        s.model_s += time.perf_counter() - t0
        s._model_cpu_s += time.thread_time() - c0
        for problem in result.problems:
            s.prompt_problems[_reason(problem)] += 1
        s.segmented += 1
        s.objects += len(result)
        t0 = time.perf_counter()
        self._write(result, msg.header, t, out_conns)
        if self.depth is not None:
            outputs = self.depth.outputs(index, t, result, msg.header)
            if outputs is not None:
                s.frames_3d += 1
                for name, data in outputs.items():
                    self.output.write(out_conns[name], t, data)
            s.skipped_3d = self.depth.skipped
        if self.coco is not None and self.coco.wants():
            encoded = None
            if compressed:
                fmt = msg.format.lower()
                encoded = (msg.data, ".png" if "png" in fmt else ".jpg")
            self.coco.add(image, result.masks, result.boxes, result.scores, result.class_ids,
                          self.track_ids(result), entry.key if isinstance(entry.key, tuple) and len(entry.key) == 2
                          and all(isinstance(v, int) for v in entry.key) else None, encoded)
            s.coco_images += 1
        s.write_s += time.perf_counter() - t0

    def track_ids(self, result: SegmentationResult) -> list[int] | None:
        """Object identities across frames: the tracker's ids; without tracking, fixed
        prompts alone (the same prompt list decoded on every frame, object i is the
        same object on all of them); else unknown (None)."""
        fixed_only = (self.options.points is not None or self.options.boxes is not None) and not self.options.prompts_topic
        if self.segmenter.tracker is not None or fixed_only:
            return [int(v) for v in result.track_ids]
        return None

    def _write(self, result: SegmentationResult, header: Any, t: int, conns: dict[str, Any]) -> None:
        out, m = self.output, self.messages
        labels = result.labels
        mask = np.greater(labels, 0).view(np.uint8)
        mask *= 255
        out.write(conns["mask"], t, m.image(header, mask, "mono8"))
        out.write(conns["labels"], t, m.image(header, labels, "mono16"))
        out.write(conns["detections"], t, m.detections(result, header))
        if "overlay" in conns:
            overlay = draw_overlay(
                result.frame.image, result.masks, result.scores, result.prompt_points, result.prompt_labels,
                result.prompt_boxes, alpha=self.options.overlay_alpha, ids=result.track_ids,
            )
            out.write(conns["overlay"], t, m.image(header, overlay, "rgb8"))


def _reason(text: str) -> str:
    """A message without its numbers, so the same problem is counted once."""

    # numbers become N, except inside quotes (an encoding name such as 'bayer_rggb8')
    return re.sub(r"'[^']*'|(\d+(\.\d+)?)", lambda m: m.group(0) if m.group(1) is None else "N",
                  text.split(" (supported:")[0])
