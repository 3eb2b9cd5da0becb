"""Tracking on moving scenes with known truth: what it costs per frame and how well it
follows.

``MovingScene`` renders solid shapes moving over a textured background seen by a
panning camera, with each shape's visible mask (occlusion applied) as truth.
``TruthRuntime`` is a stand-in model whose masks follow objects: its decoder returns
the truth mask of the object a prompt points at (the object under a foreground point,
else the one whose box best overlaps the prompt box), blurred, jittered and confined to
the box like a real decoder's, with predicted IoU 0.9. ``run_scene`` drives the real
``StreamSegmenter`` + ``Tracker`` through a scene and scores it (id switches, IoU with
truth, re-acquisition); any runtime (a real or toy-world model) can replace the
stand-in.

``python -m mobilesam_ros.bench.tracking [--objects 10] [--size 640x480] [--frames 100]
[--json OUT]`` measures the tracker's own time per frame (prompt derivation, motion,
checks: everything beyond the decoder and the mask upsampling that any object costs)
with N objects, and each ``tracking.motion``'s box prediction and tracking quality on
the standard scene. It measures; it does not assert.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..arguments import frame_size
from ..geometry import LOW_RES_SIZE
from ..live.prompts import PromptState
from ..live.segmenter import StreamSegmenter
from ..live.tracking import TrackingConfig, box_iou
from ..predictor import SamPredictor
from ..runtime.base import DecoderOutput, Runtime
from ..transforms import preprocess_shape


# --- scenes ------------------------------------------------------------------------------------
@dataclass
class Shape:
    kind: str  # disk | rect
    size: tuple[float, float]  # disk: (r, r); rect: (w, h)
    colour: tuple[int, int, int]
    path: Callable[[int], tuple[float, float]]  # frame -> world centre (x, y)
    prompt: str = "object_point"  # how run_scene prompts it: point | object_point | object_box


@dataclass
class MovingScene:
    """Shapes drawn back to front (later ones occlude earlier ones) in world coordinates;
    the camera looks at world x in [pan(t), pan(t) + width)."""

    width: int
    height: int
    frames: int
    shapes: list[Shape]
    pan: Callable[[int], float] = lambda t: 0.0
    seed: int = 0
    textured: bool = False  # shapes carry a texture that moves with them (else solid colours, as the toy world)
    _background: np.ndarray | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    def background(self) -> np.ndarray:
        if self._background is None:
            rng = np.random.default_rng(self.seed)
            span = int(max(self.pan(t) for t in range(self.frames)) - min(0, min(self.pan(t) for t in range(self.frames))))
            w = self.width + span + 64
            noise = rng.integers(0, 256, (self.height // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
            tex = cv2.resize(noise, (w, self.height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
            ramp = np.linspace(60, 140, w, dtype=np.float32)[None, :, None]
            self._background = np.clip(0.4 * tex + ramp, 0, 255).astype(np.uint8)
        return self._background

    def _texture(self, i: int, size: int) -> np.ndarray:
        key = ("texture", i)
        if key not in self._cache:
            rng = np.random.default_rng(1000 + i)
            noise = rng.integers(0, 256, (size // 3 + 1, size // 3 + 1, 3), dtype=np.uint8)
            self._cache[key] = 0.4 * cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        return self._cache[key]

    def render(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8 RGB, visible masks (N, H, W) bool) of frame ``t``."""
        if t in self._cache:
            return self._cache[t]
        cam = self.pan(t)
        x0 = int(round(cam - min(0, min(self.pan(i) for i in range(self.frames)))))
        image = self.background()[:, x0 : x0 + self.width].copy()
        label = np.full((self.height, self.width), 255, np.uint8)
        for i, shape in enumerate(self.shapes):  # back to front: later shapes paint over earlier ones
            cx, cy = shape.path(t)
            cx -= cam
            if shape.kind == "disk":
                cv2.circle(label, (int(round(cx)), int(round(cy))), int(shape.size[0]), i, -1)
            else:
                w, h = shape.size
                cv2.rectangle(label, (int(round(cx - w / 2)), int(round(cy - h / 2))),
                              (int(round(cx + w / 2)) - 1, int(round(cy + h / 2)) - 1), i, -1)
        colours = np.array([s.colour for s in self.shapes] + [(0, 0, 0)] * (256 - len(self.shapes)), np.uint8)
        inside = label != 255
        image[inside] = colours[label[inside]]
        if self.textured:
            for i, shape in enumerate(self.shapes):
                cx, cy = shape.path(t)
                half = int(max(shape.size)) + 1
                x0, y0 = int(round(cx - cam)) - half, int(round(cy)) - half
                tex = self._texture(i, 2 * half)
                ys, xs = np.nonzero(label[max(0, y0) : y0 + 2 * half, max(0, x0) : x0 + 2 * half] == i)
                if len(ys):
                    ys, xs = ys + max(0, y0), xs + max(0, x0)
                    image[ys, xs] = np.clip(0.6 * image[ys, xs] + tex[ys - y0, xs - x0], 0, 255).astype(np.uint8)
        masks = label[None] == np.arange(len(self.shapes), dtype=np.uint8)[:, None, None]
        self._cache = {k: v for k, v in self._cache.items() if not isinstance(k, int) or k > t - 3}
        self._cache[t] = (image, masks)
        return image, masks


def standard_scene(width: int = 640, height: int = 480, frames: int = 100, textured: bool = False) -> MovingScene:
    """The tracking proof's scene: four shapes, a shaky camera pan. A (disk) and B (square,
    in front) cross paths around frame 60; C (disk) passes behind D (a wide rectangle)
    and is completely hidden for 5 frames (36-40)."""
    sx, sy = width / 640, height / 480
    shapes = [
        Shape("disk", (36 * sx, 36 * sx), (220, 40, 40), lambda t: ((120 + 4 * t) * sx, 140 * sy), "point"),
        Shape("rect", (64 * sx, 64 * sx), (40, 60, 220), lambda t: ((560 - 3 * t) * sx, 185 * sy), "object_box"),
        Shape("disk", (26 * sx, 26 * sx), (240, 220, 40), lambda t: ((330 + 0.5 * t) * sx, 360 * sy)),
        Shape("rect", (86 * sx, 100 * sy), (40, 200, 60), lambda t: ((40 + 8 * t) * sx, 360 * sy)),
    ]
    return MovingScene(width, height, frames, shapes, lambda t: (1.5 * t + 6 * math.sin(t / 3)) * sx,
                       textured=textured)


def random_scene(objects: int = 10, width: int = 640, height: int = 480, frames: int = 100,
                 seed: int = 0, textured: bool = False) -> MovingScene:
    """``objects`` disks and rectangles (20-50 px) moving on straight lines at 1-6 px per frame
    (bouncing off the image borders), under a camera pan: for timing."""
    rng = np.random.default_rng(seed)
    shapes = []
    for i in range(objects):
        size = float(rng.uniform(20, 50))
        x, y = rng.uniform(60, width - 60), rng.uniform(60, height - 60)
        vx, vy = rng.uniform(-6, 6), rng.uniform(-6, 6)

        def path(t, x=x, y=y, vx=vx, vy=vy):
            return (_bounce(x + vx * t, 40, width - 40) + 1.0 * t, _bounce(y + vy * t, 40, height - 40))

        colour = tuple(int(c) for c in rng.integers(30, 256, 3))
        shapes.append(Shape("disk" if i % 2 else "rect", (size, size) if i % 2 else (2 * size, 1.5 * size),
                            colour, path))
    return MovingScene(width, height, frames, shapes, lambda t: 1.0 * t + 5 * math.sin(t / 4), seed, textured)


def _bounce(v: float, lo: float, hi: float) -> float:
    span = hi - lo
    m = (v - lo) % (2 * span)
    return lo + (m if m <= span else 2 * span - m)


# --- a model whose masks follow the objects ---------------------------------------------------------
class TruthRuntime(Runtime):
    """The scene's truth as a SAM-like model (see the module docstring). Set
    ``frame_index`` before encoding frame t; the embedding remembers it, so prompts on
    cached frames are decoded against the right truth."""

    name = "truth"
    num_mask_outputs = 4

    def __init__(self, scene: MovingScene, jitter: float = 1.0, seed: int = 0) -> None:
        self.scene = scene
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)
        self.frame_index = 0
        self.decode_calls = 0
        self._low: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        ih, iw = preprocess_shape(scene.height, scene.width)
        self._valid = (math.ceil(ih / 4), math.ceil(iw / 4))

    def encode(self, image: np.ndarray) -> np.ndarray:
        emb = np.zeros((1, 256, 64, 64), np.float32)
        emb[0, 0, 0, 0] = self.frame_index
        return emb

    def _truth(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(N, 256, 256) visible fraction of each low-res pixel, (N, 4) boxes in model-input pixels."""
        if t not in self._low:
            _, masks = self.scene.render(t)
            vh, vw = self._valid
            low = np.zeros((len(masks), LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
            boxes = np.zeros((len(masks), 4), np.float32)
            for i, m in enumerate(masks):
                low[i, :vh, :vw] = cv2.resize(m.astype(np.float32), (vw, vh), interpolation=cv2.INTER_AREA)
                ys, xs = np.nonzero(low[i] > 0.5)
                if len(ys):
                    boxes[i] = (xs.min() * 4, ys.min() * 4, xs.max() * 4 + 4, ys.max() * 4 + 4)
            self._low = {k: v for k, v in self._low.items() if k > t - 4}
            self._low[t] = (low, boxes)
        return self._low[t]

    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input) -> DecoderOutput:
        self.decode_calls += 1
        low, boxes = self._truth(int(image_embeddings[0, 0, 0, 0]))
        b = point_labels.shape[0]
        logits = np.full((b, 4, LOW_RES_SIZE, LOW_RES_SIZE), -12.0, np.float32)
        iou = np.full((b, 4), 0.1, np.float32)
        for k in range(b):
            labels, coords = point_labels[k], point_coords[k]
            box = None
            if (labels == 2).any():
                box = np.concatenate([coords[labels == 2][0], coords[labels == 3][0]])
            target = None
            for x, y in coords[labels == 1]:
                u, v = int(x // 4), int(y // 4)
                hit = [i for i in range(len(low)) if 0 <= v < 256 and 0 <= u < 256 and low[i, v, u] > 0.5]
                if hit:
                    target = hit[-1]
                    break
            if target is None and box is not None and len(boxes):
                overlap = box_iou(box[None], boxes)[0]
                if overlap.max() > 0.1:
                    target = int(overlap.argmax())
            if target is None or not boxes[target].any():
                continue
            # work on the object's low-res box (+ a margin for the blur and the jitter)
            x0, y0, x1, y1 = (int(v) for v in boxes[target] / 4)
            u0, v0, u1, v1 = max(0, x0 - 3), max(0, y0 - 3), min(LOW_RES_SIZE, x1 + 3), min(LOW_RES_SIZE, y1 + 3)
            frac = low[target, v0:v1, u0:u1]
            dx, dy = (int(v) for v in self.rng.integers(-1, 2, 2)) if self.jitter else (0, 0)
            frac = np.roll(frac, (dy, dx), axis=(0, 1))
            out = 12.0 * (cv2.GaussianBlur(frac, (3, 3), 0) - 0.5)
            out += self.rng.normal(0, self.jitter, out.shape).astype(np.float32)
            if box is not None:  # a decoder keeps to the box it is given (with a little slack)
                bu0, bv0, bu1, bv1 = box / 4
                slack = 0.1 * max(bu1 - bu0, bv1 - bv0) + 1
                uu, vv = np.arange(u0, u1), np.arange(v0, v1)
                outside = (uu[None, :] < bu0 - slack) | (uu[None, :] > bu1 + slack) | \
                          (vv[:, None] < bv0 - slack) | (vv[:, None] > bv1 + slack)
                out[outside] = -12.0
            logits[k, :, v0:v1, u0:u1] = out
            iou[k] = 0.9
        return DecoderOutput(iou, logits)


# --- running and scoring -----------------------------------------------------------------------------
@dataclass
class SceneReport:
    frames: int
    ids: dict[int, int]  # shape index -> the track id its prompt started
    id_switches: dict[int, int]  # shape index -> frames where its best match had another id
    mean_iou: float  # over every (shape, frame) where the shape is visible (missed: 0)
    iou_per_shape: dict[int, float]
    missed: dict[int, list[int]]  # shape index -> visible frames without a match (IoU < 0.5)
    hidden: dict[int, list[int]]  # shape index -> frames where it is completely hidden
    prediction_iou: float  # mean IoU of the predicted box (no margin) with the truth box
    tracking_ms: list[float]  # wall time of the tracker per frame (the segmenter's "tracking" stage)
    decode_calls: list[int]
    events: list[str]
    tracking_cpu_ms: list[float] = field(default_factory=list)  # its thread CPU time per frame

    def summary(self) -> dict:
        ms = np.array(self.tracking_ms) if self.tracking_ms else np.zeros(1)
        return {
            "frames": self.frames, "ids": self.ids, "id_switches": self.id_switches,
            "mean_iou": round(self.mean_iou, 4), "iou_per_shape": {k: round(v, 4) for k, v in self.iou_per_shape.items()},
            "missed_frames": {k: len(v) for k, v in self.missed.items()},
            "hidden_frames": {k: v for k, v in self.hidden.items() if v},
            "prediction_iou": round(self.prediction_iou, 4),
            "tracking_ms_median": round(float(np.median(ms)), 3), "tracking_ms_p90": round(float(np.percentile(ms, 90)), 3),
            "tracking_ms_max": round(float(ms.max()), 3),
            "tracking_cpu_ms_median": round(float(np.median(self.tracking_cpu_ms or [0])), 3),
            "tracking_cpu_ms_p90": round(float(np.percentile(self.tracking_cpu_ms or [0], 90)), 3),
            "decoder_calls_per_frame_max": max(self.decode_calls) if self.decode_calls else 0,
        }


def run_scene(scene: MovingScene, runtime: Runtime | None = None, tracking: TrackingConfig | None = None,
              progress: Callable[[int], None] | None = None) -> SceneReport:
    """Prompt every shape on frame 0 (as each ``Shape.prompt`` says: the point object, an
    added point or an added box), then segment every frame through the real
    StreamSegmenter with tracking, and score the published objects against the truth."""
    runtime = runtime or TruthRuntime(scene)
    predictor = SamPredictor(runtime, cache_size=2)
    prompts = PromptState("sticky")
    seg = StreamSegmenter(predictor, prompts, tracking=tracking or TrackingConfig())
    cpu = _time_tracker(seg) if seg.tracker is not None else [0.0]
    n = len(scene.shapes)
    ids: dict[int, int] = {}
    switches = {i: 0 for i in range(n)}
    ious = {i: [] for i in range(n)}
    missed: dict[int, list[int]] = {i: [] for i in range(n)}
    hidden: dict[int, list[int]] = {i: [] for i in range(n)}
    prediction: list[float] = []
    tracking_ms: list[float] = []
    tracking_cpu_ms: list[float] = []
    calls: list[int] = []
    events: list[str] = []
    for t in range(scene.frames):
        image, truth = scene.render(t)
        if hasattr(runtime, "frame_index"):
            runtime.frame_index = t
        entry, _ = seg.encode(image, (t + 1, 0))
        truth_boxes = np.array([_box(m) for m in truth], np.float32)
        if t == 0:
            for i, shape in enumerate(scene.shapes):
                ys, xs = np.nonzero(truth[i])
                inner = cv2.distanceTransform(truth[i].astype(np.uint8), cv2.DIST_L2, 3)
                y, x = np.unravel_index(int(inner.argmax()), inner.shape)
                if shape.prompt == "point":
                    prompts.add_point(float(x), float(y))
                elif shape.prompt == "object_box":
                    prompts.add_object(box=truth_boxes[i])
                else:
                    prompts.add_object(points=[[float(x), float(y)]])
            for change in prompts.take_changes():
                prompts.bind(change, entry.key)
        before = getattr(runtime, "decode_calls", 0)
        cpu[0] = 0.0
        result = seg.segment(entry.key)
        tracking_cpu_ms.append(cpu[0] * 1e3)
        calls.append(getattr(runtime, "decode_calls", 0) - before)
        tracking_ms.append(result.timings_ms.get("tracking", 0.0))
        events += result.events
        for i, tid in ids.items():  # how well the motion model predicted each followed shape
            track = seg.tracker.tracks.get(tid) if seg.tracker is not None else None
            if track is not None and track.predicted is not None and track.predicted[0] == entry.seq \
                    and truth[i].any():
                prediction.append(float(box_iou(track.predicted[1], truth_boxes[i])[0, 0]))
        if t == 0:  # which track each prompt started: the object whose mask matches the shape
            for i in range(n):
                best = _best(result.masks, result.boxes, truth[i], truth_boxes[i])
                if best is not None:
                    ids[i] = int(result.track_ids[best[0]])
        for i in range(n):
            if not truth[i].any():
                hidden[i].append(t)
                continue
            best = _best(result.masks, result.boxes, truth[i], truth_boxes[i])
            if best is None or best[1] < 0.5:
                missed[i].append(t)
                ious[i].append(0.0 if best is None else best[1])
                continue
            ious[i].append(best[1])
            if int(result.track_ids[best[0]]) != ids.get(i):
                switches[i] += 1
        if progress is not None:
            progress(t)
    every = [v for values in ious.values() for v in values]
    return SceneReport(
        scene.frames, ids, switches, float(np.mean(every)) if every else 0.0,
        {i: float(np.mean(v)) if v else 0.0 for i, v in ious.items()}, missed, hidden,
        float(np.mean(prediction)) if prediction else 0.0, tracking_ms, calls, events, tracking_cpu_ms,
    )


def _time_tracker(seg: StreamSegmenter) -> list[float]:
    """Wrap the tracker's per-frame calls to add their thread CPU time (s) into the
    returned one-element list: on a shared machine CPU time is what the work costs."""
    total = [0.0]
    tracker = seg.tracker
    for name in ("frame", "plan", "observe", "set_boxes", "states", "point_object", "add_object", "detections",
                 "associate_masks"):
        method = getattr(tracker, name)

        def timed(*args, _method=method, **kwargs):
            t0 = time.thread_time()
            try:
                return _method(*args, **kwargs)
            finally:
                total[0] += time.thread_time() - t0

        setattr(tracker, name, timed)
    return total


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return np.zeros(4, np.float32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def _best(masks: np.ndarray, boxes: np.ndarray, truth: np.ndarray, truth_box: np.ndarray) -> tuple[int, float] | None:
    """(index, IoU) of the mask that best matches ``truth`` (None: no mask touches its box)."""
    best = None
    for i in np.flatnonzero(box_iou(boxes, truth_box)[:, 0] > 0):
        x0, y0 = (int(v) for v in np.minimum(boxes[i, :2], truth_box[:2]))
        x1, y1 = (int(math.ceil(v)) for v in np.maximum(boxes[i, 2:], truth_box[2:]))
        m, g = masks[i, y0:y1, x0:x1], truth[y0:y1, x0:x1]
        iou = np.logical_and(m, g).sum() / max(1, np.logical_or(m, g).sum())
        if best is None or iou > best[1]:
            best = (int(i), float(iou))
    return best


# --- the toy-world model on toy-world sequences ----------------------------------------------------------
class CachedEncoder(Runtime):
    """A runtime whose encoder results are kept on disk, keyed by the hash of the encoder
    input (the same frame is encoded once across runs: the benchmark's scenes are
    seeded, so re-running it, or trying tracker settings, costs only the decoder)."""

    def __init__(self, runtime: Runtime, folder: str | Path | None) -> None:
        self.inner = runtime
        self.folder = Path(folder) if folder else None
        self.name = runtime.name
        self.num_mask_outputs = runtime.num_mask_outputs
        self.variant = getattr(runtime, "variant", "mobilesam")
        self.decode_calls = 0
        self.encoded = 0
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def encode(self, image: np.ndarray) -> np.ndarray:
        import hashlib

        path = None
        if self.folder is not None:
            path = self.folder / (hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:20] + ".npy")
            if path.is_file():
                return np.load(path)
        out = self.inner.encode(image)
        self.encoded += 1
        if path is not None:
            np.save(path, out)
        return out

    def decode(self, *args) -> DecoderOutput:
        self.decode_calls += 1
        return self.inner.decode(*args)

    def close(self) -> None:
        self.inner.close()


def toy_scenarios(width: int = 640, height: int = 480, frames: int = 40, seed: int = 0) -> dict:
    """The benchmark's toy-world sequences (``mobilesam_ros.toy.scenes.Sequence``), by name.
    Every object is prompted on frame 0 (one interior point, the point object for the
    first, added objects for the others); they bounce off the image borders (so they
    change direction)."""
    from ..toy.scenes import Mover, Sequence, background, random_mover

    sx = width / 640
    out = {}

    def seq(name, movers, style="gradient", seed_=seed):
        movers[0].prompt = "point"
        out[name] = Sequence(width, height, frames, movers, style, seed_, name)

    rng = np.random.default_rng(seed)
    bg = background(np.random.default_rng(seed), width, height, "gradient")

    def apart(specs):
        """Random movers (size, speed, kind) that do not overlap on frame 0 (each is clicked there)."""
        movers = []
        for size, speed, kind in specs:
            for _ in range(200):
                m = random_mover(rng, width, height, size, speed, bg, kind)
                if all(math.dist(m.start, o.start) > (m.size + o.size) / 2 + 10 for o in movers):
                    break
            movers.append(m)
        return movers
    # one clicked disk, 30 px per frame, bouncing
    seq("disk-30px", [Mover("disk", 90 * sx, (220, 40, 40), (150 * sx, 170 * sx), (30 * sx, 11 * sx))])
    # three objects at 5, 20 and 40 px per frame
    seq("speeds-5-20-40", apart([(s * sx, v * sx, k) for s, v, k in
                                 ((80, 5, "rectangle"), (90, 20, "disk"), (100, 40, "triangle"))]))
    # two objects crossing paths (the second in front), a third passing behind a static wall
    seq("crossing", [Mover("disk", 90 * sx, (230, 60, 40), (120 * sx, 240 * sx), (22 * sx, 0.0)),
                     Mover("rectangle", 100 * sx, (40, 70, 230), (520 * sx, 200 * sx), (-20 * sx, 3 * sx),
                           aspect=0.7)])
    # a disk passing fully behind a static wall (hidden for several frames), then out again
    wall = Mover("rectangle", 150 * sx, (40, 180, 70), (320 * sx, 240 * sx), aspect=1.2)
    seq("occlusion", [Mover("disk", 80 * sx, (220, 40, 40), (60 * sx, 240 * sx), (25 * sx, 0.0),
                            path=lambda t: ((60 + 25 * t) * sx, 240 * sx)), wall])
    # sizes 20 to 180 px, 10-15 px per frame
    seq("sizes-20-180", apart([(s * sx, v * sx, k) for s, v, k in
                               ((180, 10, "ellipse"), (20, 12, "disk"), (45, 15, "rectangle"), (100, 10, "polygon"))]))
    # five objects on blotches, 8-25 px per frame
    seq("five-objects", apart([(float(rng.uniform(60, 130)) * sx, float(rng.uniform(8, 25)) * sx, None)
                               for _ in range(5)]), "blotches")
    # textured backgrounds: stripes (never seen by the toy model in training)
    seq("textured-stripes", apart([(s * sx, v * sx, k) for s, v, k in ((100, 20, "disk"), (120, 12, "rectangle"))]),
        "stripes", seed + 7)
    return out


@dataclass
class ToyReport:
    """How well one sequence was followed (per object and over all)."""

    name: str
    objects: list[dict]
    tracking_cpu_ms: list[float]
    decode_calls: list[int]
    processed: list[int]
    events: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        obj = self.objects
        vis = sum(o["visible_frames"] for o in obj)
        return {
            "scenario": self.name,
            "objects": len(obj),
            "frames_processed": len(self.processed),
            "visible_frames": vis,
            "followed": round(sum(o["followed"] for o in obj) / max(1, vis), 3),
            "iou_ge_0.8": round(sum(o["iou_ge_0.8"] for o in obj) / max(1, vis), 3),
            "mean_iou": round(float(np.mean([v for o in obj for v in o["ious"]])) if vis else 0.0, 3),
            "id_switches": sum(o["id_switches"] for o in obj),
            "taken_by_another": sum(o["taken"] for o in obj),
            "reacquired": [o["reacquired"] for o in obj if o["reacquired"] is not None],
            "tracking_cpu_ms_median": round(float(np.median(self.tracking_cpu_ms or [0])), 3),
            "decoder_calls_per_frame_max": max(self.decode_calls[1:] or [0]),
        }


def run_toy(scene, runtime: Runtime, tracking: TrackingConfig | None = None, step: int = 1,
            fps: float = 30.0, on_frame: Callable | None = None) -> ToyReport:
    """Prompt every shape on frame 0 and segment every ``step``-th frame (``step`` > 1: a
    node slower than the camera, frames stamped at ``fps``) through the real
    StreamSegmenter + Tracker; score each object on the frames where >= 90 % of it is
    visible: followed (its own id's mask has IoU >= 0.5 with it), IoU (0 when not
    followed), id switches (another id's mask is the best match), taken (its id's mask
    lies on another object)."""
    predictor = SamPredictor(runtime, cache_size=2)
    prompts = PromptState("sticky")
    seg = StreamSegmenter(predictor, prompts, tracking=tracking or TrackingConfig())
    cpu = _time_tracker(seg)
    n = len(scene.shapes)
    ids: dict[int, int] = {}
    stats = [{"visible_frames": 0, "followed": 0, "iou_ge_0.8": 0, "ious": [], "id_switches": 0, "taken": 0,
              "hidden": [], "reacquired": None} for _ in range(n)]
    full = [float(_full_area(scene, i)) for i in range(n)]
    cpu_ms, calls, processed, events = [], [], [], []
    for t in range(0, scene.frames, step):
        image, truth = scene.render(t)
        stamp = t / fps
        key = (int(stamp), int(round((stamp - int(stamp)) * 1e9)))
        entry, _ = seg.encode(image, key)
        if t == 0:
            for i, shape in enumerate(scene.shapes):
                inner = cv2.distanceTransform(np.pad(truth[i], 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
                y, x = np.unravel_index(int(inner.argmax()), inner.shape)
                if shape.prompt == "point":
                    prompts.add_point(float(x) + 0.5, float(y) + 0.5)
                elif shape.prompt == "object_box":
                    prompts.add_object(box=_box(truth[i]))
                else:
                    prompts.add_object(points=[[float(x) + 0.5, float(y) + 0.5]])
            for change in prompts.take_changes():
                prompts.bind(change, entry.key)
        before = getattr(runtime, "decode_calls", 0)
        cpu[0] = 0.0
        result = seg.segment(entry.key)
        cpu_ms.append(cpu[0] * 1e3)
        calls.append(getattr(runtime, "decode_calls", 0) - before)
        processed.append(t)
        events += [f"frame {t}: {e}" for e in result.events]
        if on_frame is not None:
            on_frame(t, image, truth, result)
        track_ids = [int(v) for v in result.track_ids]
        areas = truth.sum(axis=(1, 2))
        if t == 0:
            for i in range(n):
                best = _best(result.masks, result.boxes, truth[i], _box(truth[i]))
                if best is not None:
                    ids[i] = track_ids[best[0]]
        for i in range(n):
            s = stats[i]
            if areas[i] == 0:
                s["hidden"].append(t)
                continue
            if areas[i] < 0.9 * full[i] or t == 0:
                continue
            s["visible_frames"] += 1
            own = track_ids.index(ids[i]) if ids.get(i) in track_ids else None
            iou = 0.0
            if own is not None:
                m = result.masks[own]
                iou = float((m & truth[i]).sum() / max(1, (m | truth[i]).sum()))
                for j in range(n):  # its id on another object
                    if j != i and areas[j] and (m & truth[j]).sum() > 0.5 * m.sum():
                        s["taken"] += 1
                        break
            if iou >= 0.5:
                s["followed"] += 1
                if s["hidden"] and s["reacquired"] is None:
                    s["reacquired"] = t
            s["iou_ge_0.8"] += iou >= 0.8
            s["ious"].append(iou)
            best = _best(result.masks, result.boxes, truth[i], _box(truth[i]))
            if best is not None and best[1] >= 0.5 and track_ids[best[0]] != ids.get(i):
                s["id_switches"] += 1
    for s in stats:
        s["reacquired"] = None if not s["hidden"] else s["reacquired"]
    return ToyReport(scene.name, stats, cpu_ms, calls, processed, events)


def _full_area(scene, i: int) -> int:
    """The area of shape ``i`` drawn alone and whole (the largest it has in the sequence)."""
    from ..toy.scenes import draw_shape

    m = scene.shapes[i]
    pad = int(m.size) + 2
    canvas = np.zeros((scene.height + 2 * pad, scene.width + 2 * pad, 3), np.uint8)
    cx, cy = m.centre(0, scene.width, scene.height)
    return int(draw_shape(canvas, m.kind, (cx + pad, cy + pad), m.size, m.angle, (1, 1, 1), aspect=m.aspect,
                          vertices=m.vertices).sum())


# --- command line -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobilesam_ros.bench.tracking", description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10, help="objects in the timing scene (default 10)")
    parser.add_argument("--size", type=frame_size, default="640x480", help="frame size WxH (default 640x480)")
    parser.add_argument("--frames", type=int, default=100, help="frames per scene (default 100)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    toy = parser.add_argument_group("toy world (--toy): the real predictor and tracker with the toy-world model")
    toy.add_argument("--toy", action="store_true",
                     help="run the toy-world sequences (several objects, 5-40 px per frame, crossings, an "
                          "occlusion, sizes 20-180 px, plain and textured backgrounds) with the toy-world model")
    toy.add_argument("--model", metavar="PATH", help="model for --toy (default: the shipped toy-world model)")
    toy.add_argument("--backend", default="auto", help="backend for --model (default auto)")
    toy.add_argument("--scenarios", metavar="A,B", help="only these sequences (default: all)")
    toy.add_argument("--step", type=int, default=1,
                     help="process every STEP-th frame (frames stamped at 30 fps: a node slower than the camera)")
    toy.add_argument("--cache", metavar="DIR", help="keep image embeddings here (a rerun encodes nothing)")
    args = parser.parse_args(argv)
    if args.toy:
        return _main_toy(args)
    width, height = args.size
    if args.objects < 1 or args.frames < 2:
        print("error: --objects must be >= 1 and --frames >= 2", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    out: dict = {"size": [width, height], "objects": args.objects, "frames": args.frames, "timing": {}, "quality": {}}
    for motion in ("flow", "velocity", "none"):
        cfg = TrackingConfig(motion=motion)
        t0 = time.perf_counter()
        # textured objects: every flow point tracks (the most work for flow)
        report = run_scene(random_scene(args.objects, width, height, args.frames, textured=True), tracking=cfg)
        timing = report.summary()
        out["timing"][motion] = {k: timing[k] for k in (
            "tracking_ms_median", "tracking_ms_p90", "tracking_ms_max", "tracking_cpu_ms_median", "tracking_cpu_ms_p90",
            "decoder_calls_per_frame_max", "prediction_iou", "mean_iou")}
        quality = {}
        for textured in (False, True):
            scene = standard_scene(width, height, args.frames, textured=textured)
            quality["textured" if textured else "solid"] = run_scene(scene, tracking=cfg).summary()
        out["quality"][motion] = quality
        print(f"[bench] motion {motion}: tracker {timing['tracking_ms_median']:.2f} ms median wall "
              f"(p90 {timing['tracking_ms_p90']:.2f}), {timing['tracking_cpu_ms_median']:.2f} ms CPU "
              f"(p90 {timing['tracking_cpu_ms_p90']:.2f}) for {args.objects} objects at {width}x{height}; "
              f"box prediction IoU {timing['prediction_iou']:.3f} (timing scene, textured); standard scene: "
              f"prediction IoU {quality['solid']['prediction_iou']:.3f} solid / "
              f"{quality['textured']['prediction_iou']:.3f} textured, mean IoU {quality['solid']['mean_iou']:.3f}, "
              f"id switches {sum(quality['solid']['id_switches'].values())} ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


def _main_toy(args) -> int:
    import tempfile

    from ..runtime import create_runtime

    width, height = args.size
    if args.frames < 2 or args.step < 1:
        print("error: --frames must be >= 2 and --step >= 1", file=sys.stderr)
        return 2
    scenes = toy_scenarios(width, height, args.frames)
    names = [n for n in (args.scenarios or "").split(",") if n] or list(scenes)
    unknown = [n for n in names if n not in scenes]
    if unknown:
        print(f"error: unknown scenario(s) {', '.join(unknown)} (one of {', '.join(scenes)})", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            if not Path(args.model).exists():
                print(f"error: model not found: {args.model}", file=sys.stderr)
                return 2
            model, backend = args.model, args.backend
        else:
            from ..toy.model import write_toy_checkpoint

            model, backend = str(write_toy_checkpoint(Path(tmp) / "toy_world.pt")), "torch"
        runtime = CachedEncoder(create_runtime(model, backend), args.cache)
        out: dict = {"size": [width, height], "frames": args.frames, "step": args.step, "model": model,
                     "scenarios": {}}
        for name in names:
            t0 = time.perf_counter()
            report = run_toy(scenes[name], runtime, TrackingConfig(), step=args.step)
            summary = report.summary()
            out["scenarios"][name] = summary
            print(f"[bench] {name}: {summary['objects']} object(s), {summary['frames_processed']} frames: followed "
                  f"{summary['followed']:.0%} of visible frames, IoU >= 0.8 in {summary['iou_ge_0.8']:.0%}, mean IoU "
                  f"{summary['mean_iou']:.3f}, id switches {summary['id_switches']}, ids taken by another object "
                  f"{summary['taken_by_another']}, tracker CPU {summary['tracking_cpu_ms_median']:.2f} ms/frame "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        runtime.close()
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
