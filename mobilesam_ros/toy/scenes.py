"""Procedural toy-world scenes with exact instance masks.

Solid-coloured shapes (disks, ellipses, rectangles, triangles, polygons) on smooth
backgrounds, drawn with OpenCV from a seeded generator, so every pixel's truth is
known. The toy-world model is trained and evaluated on these; behaviour tests
(tracking, depth, segment-everything) use them for scenes with known truth.

Background styles: ``gradient`` (the demo's style: a colour ramp with mild noise),
``blotches`` (low-frequency colour blobs) -- both used in training --, ``texture``
(multi-scale random cells and grain, aperiodic: used only by the second training
phase, :mod:`mobilesam_ros.toy.finetune`) and ``stripes`` (a periodic texture never
used in training: held out to report how the model generalises).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

#: the first training phase's styles (also what int8 calibration draws from)
TRAIN_STYLES = ("gradient", "blotches")
ALL_STYLES = ("gradient", "blotches", "texture", "stripes")
KINDS = ("disk", "ellipse", "rectangle", "triangle", "polygon")


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    masks: np.ndarray  # (N, H, W) bool, visible part of each shape (occlusion applied)
    kinds: list[str] = field(default_factory=list)
    colours: list[tuple[int, int, int]] = field(default_factory=list)

    def boxes(self) -> np.ndarray:
        """(N, 4) tight x0, y0, x1, y1 boxes of the visible masks (pixel edges)."""
        out = np.zeros((len(self.masks), 4), np.float32)
        for i, mask in enumerate(self.masks):
            ys, xs = np.nonzero(mask)
            out[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        return out


def background(rng: np.random.Generator, width: int, height: int, style: str) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if style == "gradient":
        c0, c1 = rng.uniform(30, 200, 3), rng.uniform(30, 200, 3)
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * xx / width + np.sin(angle) * yy / height + 1.0) / 2.0
        img = c0 + (c1 - c0) * t[..., None]
        noise_sigma = rng.uniform(2, 8)
    elif style == "blotches":
        small = rng.uniform(30, 210, (rng.integers(3, 7), rng.integers(3, 7), 3)).astype(np.float32)
        img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        noise_sigma = rng.uniform(2, 10)
    elif style == "stripes":
        c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
        period = rng.uniform(12, 40)
        angle = rng.uniform(0, np.pi)
        phase = (np.cos(angle) * xx + np.sin(angle) * yy) / period
        t = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
        img = c0 + (c1 - c0) * t[..., None]
        noise_sigma = rng.uniform(2, 8)
    elif style == "texture":
        # cells of three sizes (4-48 px) summed: as busy as stripes, but without their period or direction
        field_ = np.zeros((height, width), np.float32)
        for cell in (rng.uniform(4, 8), rng.uniform(10, 20), rng.uniform(24, 48)):
            grid = rng.standard_normal((max(2, round(height / cell)), max(2, round(width / cell)))).astype(np.float32)
            interpolation = cv2.INTER_NEAREST if rng.random() < 0.4 else cv2.INTER_LINEAR
            field_ += cv2.resize(grid, (width, height), interpolation=interpolation)
        t = np.clip(0.5 + field_ / (4 * float(field_.std()) + 1e-6), 0, 1)
        c0, c1 = rng.uniform(30, 210, 3), rng.uniform(30, 210, 3)
        img = c0 + (c1 - c0) * t[..., None]
        noise_sigma = rng.uniform(2, 8)
    else:
        raise ValueError(f"unknown background style {style!r} (one of {', '.join(ALL_STYLES)})")
    img = img + rng.normal(0, noise_sigma, (height, width, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _distinct_colour(rng: np.random.Generator, image: np.ndarray, center: tuple[int, int]) -> tuple[int, int, int]:
    """A saturated colour far (in RGB) from the background where the shape goes."""
    x, y = center
    h, w = image.shape[:2]
    local = image[max(0, y - 20):min(h, y + 20), max(0, x - 20):min(w, x + 20)].reshape(-1, 3).mean(0)
    best, best_d = None, -1.0
    for _ in range(12):
        colour = rng.uniform(0, 255, 3)
        colour[rng.integers(0, 3)] = rng.choice([rng.uniform(0, 60), rng.uniform(195, 255)])
        d = float(np.linalg.norm(colour - local))
        if d > best_d:
            best, best_d = colour, d
        if d > 120:
            break
    return tuple(int(c) for c in best)


def draw_shape(canvas: np.ndarray, kind: str, center: tuple[float, float], size: float, angle: float,
               colour: tuple[int, int, int], rng: np.random.Generator | None = None, aspect: float = 1.0,
               vertices: np.ndarray | None = None) -> np.ndarray:
    """Draw one filled shape of about ``size`` px across; return its (H, W) bool mask.

    Shapes are drawn without anti-aliasing so the mask is exactly the painted pixels.
    """
    h, w = canvas.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    cx, cy = center
    r = size / 2.0
    if kind == "disk":
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
    elif kind == "ellipse":
        axes = (int(round(r)), int(round(r * aspect)))
        cv2.ellipse(mask, (int(round(cx)), int(round(cy))), axes, np.degrees(angle), 0, 360, 1, -1)
    else:
        if vertices is None:
            if kind == "rectangle":
                unit = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], np.float64)
            elif kind == "triangle":
                a = np.array([np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3])
                unit = np.stack([np.cos(a), np.sin(a) * aspect], 1)
            elif kind == "polygon":
                n = 5 if rng is None else int(rng.integers(5, 8))
                a = np.sort((np.arange(n) + (0 if rng is None else rng.uniform(-0.3, 0.3, n))) * 2 * np.pi / n)
                radius = 1.0 if rng is None else rng.uniform(0.7, 1.0, n)
                unit = np.stack([np.cos(a) * radius, np.sin(a) * radius], 1)
            else:
                raise ValueError(f"unknown shape {kind!r}")
            vertices = unit
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = (vertices @ rot.T) * r + np.array([cx, cy])
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    bool_mask = mask.astype(bool)
    canvas[bool_mask] = colour
    return bool_mask


def make_scene(seed: int, width: int = 640, height: int = 480, style: str = "gradient",
               num_objects: tuple[int, int] = (1, 5), size_range: tuple[float, float] = (50, 180),
               min_visible: float = 0.5) -> Scene:
    """One seeded scene. Shapes may overlap: later shapes occlude earlier ones and the
    earlier masks keep only their visible pixels; a shape left with less than
    ``min_visible`` of its area is dropped from the truth (and from the picture)."""
    rng = np.random.default_rng(seed)
    image = background(rng, width, height, style)
    masks: list[np.ndarray] = []
    kinds: list[str] = []
    colours: list[tuple[int, int, int]] = []
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    scale = min(width / 640.0, height / 480.0) if min(width, height) < 480 else 1.0
    for _ in range(count):
        kind = str(rng.choice(KINDS))
        size = rng.uniform(*size_range) * scale
        cx = rng.uniform(size / 2, width - size / 2)
        cy = rng.uniform(size / 2, height - size / 2)
        colour = _distinct_colour(rng, image, (int(cx), int(cy)))
        aspect = rng.uniform(0.45, 1.0) if kind != "disk" else 1.0
        trial = image.copy()
        mask = draw_shape(trial, kind, (cx, cy), size, rng.uniform(0, np.pi), colour, rng, aspect)
        visible_before = [m & ~mask for m in masks]
        if mask.sum() < 100 or any(v.sum() < min_visible * m.sum() for v, m in zip(visible_before, masks)):
            continue  # would hide too much of an earlier shape: skip it
        image = trial
        masks = visible_before + [mask]
        kinds.append(kind)
        colours.append(colour)
    if not masks:  # always at least one object
        colour = _distinct_colour(rng, image, (width // 2, height // 2))
        masks = [draw_shape(image, "disk", (width / 2, height / 2), 100 * max(scale, 0.5), 0.0, colour)]
        kinds, colours = ["disk"], [colour]
    return Scene(image, np.stack(masks), kinds, colours)


def add_occluder(scene: Scene, rng: np.random.Generator, target: int, min_visible: float = 0.35,
                 tries: int = 6) -> Scene:
    """``scene`` with one more shape drawn over part of object ``target`` (a partly
    occluded target, as tracking sees behind a passing object), or unchanged when no try
    leaves every object at least ``min_visible`` of its area and 100 px."""
    h, w = scene.image.shape[:2]
    x0, y0, x1, y1 = scene.boxes()[target]
    extent = float(max(x1 - x0, y1 - y0))
    areas = scene.masks.reshape(len(scene.masks), -1).sum(1)
    for _ in range(tries):
        kind = str(rng.choice(KINDS))
        size = extent * rng.uniform(0.5, 1.1)
        # centred near the target's edge: half in, half out
        angle = rng.uniform(0, 2 * np.pi)
        cx = (x0 + x1) / 2 + np.cos(angle) * (x1 - x0) / 2 * rng.uniform(0.6, 1.2)
        cy = (y0 + y1) / 2 + np.sin(angle) * (y1 - y0) / 2 * rng.uniform(0.6, 1.2)
        image = scene.image.copy()
        colour = _distinct_colour(rng, image, (int(np.clip(cx, 0, w - 1)), int(np.clip(cy, 0, h - 1))))
        aspect = rng.uniform(0.45, 1.0) if kind != "disk" else 1.0
        mask = draw_shape(image, kind, (cx, cy), size, rng.uniform(0, np.pi), colour, rng, aspect)
        visible = scene.masks & ~mask
        kept = visible.reshape(len(visible), -1).sum(1)
        if mask.sum() < 100 or (kept < np.maximum(100, min_visible * areas)).any() or kept[target] == areas[target]:
            continue
        return Scene(image, np.concatenate([visible, mask[None]]), scene.kinds + [kind], scene.colours + [colour])
    return scene


# --- moving sequences (tracking with known truth) ---------------------------------------------------
def bounce(v: float, lo: float, hi: float) -> float:
    """``v`` folded into [lo, hi] as a ball bouncing between two walls."""
    if hi <= lo:
        return (lo + hi) / 2.0
    span = hi - lo
    m = (v - lo) % (2 * span)
    return lo + (m if m <= span else 2 * span - m)


@dataclass
class Mover:
    """One shape of a :class:`Sequence`: drawn as :func:`draw_shape` draws it, moving from
    ``start`` at ``velocity`` px per frame, bouncing off the image borders (``margin``
    px inside them), or following ``path(t) -> (x, y)`` when given."""

    kind: str
    size: float
    colour: tuple[int, int, int]
    start: tuple[float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    aspect: float = 1.0
    vertices: np.ndarray | None = None
    path: object = None  # callable t -> (x, y), overrides start/velocity
    prompt: str = "object_point"  # how a benchmark prompts it: point | object_point | object_box
    margin: float = 0.0

    def centre(self, t: float, width: int, height: int) -> tuple[float, float]:
        if self.path is not None:
            return self.path(t)
        half = self.size / 2.0 + self.margin
        return (bounce(self.start[0] + self.velocity[0] * t, half, width - half),
                bounce(self.start[1] + self.velocity[1] * t, half, height - half))


@dataclass
class Sequence:
    """Toy-world shapes moving over a static background of one style (drawn back to
    front: later movers occlude earlier ones). ``render(t)`` gives the image and each
    mover's visible mask (occlusion applied), for any (also fractional) time ``t``.

    The interface of the tracking benchmark's scenes (``width``, ``height``,
    ``frames``, ``shapes`` with ``.prompt``, ``render``)."""

    width: int
    height: int
    frames: int
    movers: list[Mover]
    style: str = "gradient"
    seed: int = 0
    name: str = ""
    _background: np.ndarray | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def shapes(self) -> list[Mover]:
        return self.movers

    def background(self) -> np.ndarray:
        if self._background is None:
            self._background = background(np.random.default_rng(self.seed), self.width, self.height, self.style)
        return self._background

    def render(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """(image (H, W, 3) uint8 RGB, visible masks (N, H, W) bool) at time ``t`` (frames)."""
        if t in self._cache:
            return self._cache[t]
        image = self.background().copy()
        masks = np.zeros((len(self.movers), self.height, self.width), bool)
        for i, m in enumerate(self.movers):
            mask = draw_shape(image, m.kind, m.centre(t, self.width, self.height), m.size, m.angle, m.colour,
                              aspect=m.aspect, vertices=m.vertices)
            masks[:i] &= ~mask
            masks[i] = mask
        if len(self._cache) > 4:
            self._cache.clear()
        self._cache[t] = (image, masks)
        return image, masks


def random_mover(rng: np.random.Generator, width: int, height: int, size: float, speed: float,
                 image: np.ndarray | None = None, kind: str | None = None) -> Mover:
    """A shape of about ``size`` px at a random place, moving at ``speed`` px per frame in a
    random direction (its colour far from the background there, when ``image`` is given)."""
    kind = kind or str(rng.choice(KINDS))
    cx = rng.uniform(size / 2, width - size / 2)
    cy = rng.uniform(size / 2, height - size / 2)
    if image is not None:
        colour = _distinct_colour(rng, image, (int(cx), int(cy)))
    else:
        colour = tuple(int(c) for c in rng.integers(30, 256, 3))
    aspect = float(rng.uniform(0.55, 1.0)) if kind != "disk" else 1.0
    vertices = None
    if kind == "polygon":  # fixed vertices: the shape must not change from frame to frame
        n = int(rng.integers(5, 8))
        a = np.sort((np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n)
        radius = rng.uniform(0.7, 1.0, n)
        vertices = np.stack([np.cos(a) * radius, np.sin(a) * radius], 1)
    heading = rng.uniform(0, 2 * np.pi)
    return Mover(kind, float(size), colour, (float(cx), float(cy)),
                 (float(speed * np.cos(heading)), float(speed * np.sin(heading))),
                 float(rng.uniform(0, np.pi)), aspect, vertices)
