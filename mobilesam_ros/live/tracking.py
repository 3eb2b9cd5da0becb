"""Object tracks for a live stream, without ROS: every object the node publishes has a
track id that stays with the object from frame to frame.

**Ids.** A track id is an integer >= 1, never reused while the process runs; the
counter wraps only past 65535 (the largest value of the mono16 ``~/labels`` image) and
then skips ids still in use. The id is the object's value in ``~/labels``, its
``Detection2D.id``, its colour and label in the overlay, and the key of 3D outputs.

**Per-frame objects (the contract for other modules, e.g. live/rgbd.py).**
``SegmentationResult.objects()`` returns one :class:`TrackedObject` per published
object, in label order: ``track_id`` (int), ``mask`` ((H, W) bool, a view into the
result), ``box`` ((4,) float32 x0, y0, x1, y1, pixel edges, x1/y1 exclusive),
``score`` (predicted IoU), ``class_id`` (str; the detector's class for a box prompt,
else ""), ``source`` ("point", "object", "boxes" or "everything") and ``state``
("new", "tracked", "reacquired"). The same values are in the result's parallel arrays
(``masks``, ``boxes``, ``scores``, ``class_ids``, ``track_ids``).

**Prompt mode.** An object starts from a user prompt (the point object of
``prompt/point``/``prompt/click``, an object added on its own, or a detector box). On
every later frame its prompt is derived from where it was: the previous mask's box
moved by the predicted motion and widened by ``box_margin``, one foreground point at
the previous mask's most interior pixel (moved the same way), and, with
``mask_input``, the previous low-res logits shifted by the motion. Motion is predicted
over the real time between the two frames (the frames' stamps; one frame period when a
stamp does not advance), so frames the node dropped do not slow the prediction down:
the median pyramidal Lucas-Kanade flow of 8 points inside the previous mask (half
resolution), unless the blob of the object's colours nearest the prediction disagrees
(flow reads no motion inside a plain object; then the blob's shift; constant velocity
when neither answers: see ``_locate_by_colour``), or
constant velocity (the least-squares slope of the last 3 steady mask centres over
time: an object that turns is predicted right again two frames later), or none
(``motion``). When the motion moves an object by more than 15 % of its size, it gets a
second prompt where it was (an object that stopped or turned is found there); of an
object's prompts the mask that fits it best is kept (predicted IoU x area agreement x
colour agreement x overlap with the prediction). All prompts share one layout, so every
object of a frame goes to the decoder in one batched call.

A propagated mask is cut to its prompt box (plus 10 %): what the decoder put elsewhere
is not the object and would widen the next box. It is checked: it is **lost** when the
mask vanishes, its predicted IoU falls below ``min_score``, its area changes by more
than ``max_area_change`` times (shrinking is fine while its predicted box crosses the
image border), most of it lies outside its prompt box, less than 75 % of its pixels
have the object's colours (a colour histogram learnt from its masks: a mask that is
mostly an occluder, a neighbour or the background is never the object), or it is
mostly (IoU > 0.5) another object's mask (the object whose colours it has, then the
one that kept closer to its prediction, keeps it). A lost object is looked for where
constant velocity puts it for ``max_lost_frames`` frames, from its last *steady*
observation (a mask that shrinks by more than 10 % a frame is being covered: it moves
neither the velocity nor that reference), with a search box that widens by 5 % of its
size per frame lost (up to 50 %), with the same checks, and **re-acquired** with its id
when found, unless the mask found lies mostly inside another object's (the occluder in
front of it); then it **ends**.

**Detector boxes** (``prompt/boxes``): each box list is associated with the tracks
that came from boxes by IoU between the boxes and the tracks' last detector boxes
moved by their constant velocity (greedy, highest IoU first, at least ``iou_match``,
class ids must agree when both are set). The boxes alone decide, so association holds
however poor the masks are. Matched tracks take the detector's box as their prompt and
are published whatever their mask (even empty), unmatched boxes start tracks,
unmatched tracks are kept (not published) for ``max_lost_frames`` box lists and then
end, or with ``propagate_unmatched`` follow their own propagation meanwhile. Between
box lists, box tracks are propagated like any other, but poor masks never end them:
only the detector does.

**Everything mode.** Masks of consecutive frames are associated by IoU on masks
subsampled to ~128 px (greedy, at least ``iou_match``); unmatched masks start tracks,
unmatched tracks end after ``max_lost_frames`` frames.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

import cv2
import numpy as np

from ..geometry import IMAGE_SIZE, LOW_RES_SIZE
from ..predictor import Prompt

TRACK_ID_MAX = 65535
MOTIONS = ("flow", "velocity", "none")
SOURCES = ("point", "object", "boxes", "everything")
#: two masks overlapping more than this are the same object
SAME_OBJECT_IOU = 0.5
#: Lucas-Kanade settings (measured: ~0.5 ms for 10 objects x 8 points at 320x240)
FLOW_SIZE = 320
FLOW_POINTS = 8
FLOW_WINDOW = (9, 9)
FLOW_LEVELS = 3
FLOW_MAX_ERROR = 30.0
#: everything mode compares masks subsampled to about this many pixels on the long side
MATCH_SIZE = 128
#: velocity smoothing for detector boxes: new = (1 - a) * old + a * measured
VELOCITY_GAIN = 0.5
#: a followed object's velocity is the least-squares slope of its last steady mask centres
#: (few: an object that changes direction is predicted right again two frames later)
VELOCITY_HISTORY = 3
#: a second prompt per object where it was last seen, when the motion model moves it by
#: more than this fraction of its size (an object that stopped or turned is found there)
STAY_HYPOTHESIS = 0.15
#: a lost object's search box widens by this fraction of its size per frame it has been
#: lost (up to SEARCH_MAX)
SEARCH_WIDEN = 0.05
SEARCH_MAX = 0.5
#: appearance: a colour histogram of the object's masks (8 levels per RGB channel, low-res
#: pixels); a mask is scored by the share of its pixels whose colour bin holds at least
#: COLOUR_BIN_MIN of the object's pixels. A mask below MIN_APPEARANCE is mostly something
#: else (an occluder, a neighbour it merged with, the background): never the object.
COLOUR_BIN_MIN = 0.01
#: locating a plain object by its colours (flow finds nothing inside it): the window reaches
#: this fraction of the object's size beyond where it was and where it is predicted; a blob of
#: its colours is the object when its area is within COLOUR_AREA of the object's (low-res
#: masks of fewer than COLOUR_MIN_AREA pixels have too few colours to be told apart)
COLOUR_SEARCH = 0.5
COLOUR_AREA = (0.5, 1.5)
COLOUR_MIN_AREA = 12
#: flow is kept where it lands within this fraction of the object's size of its colours' blob
COLOUR_AGREE = 0.2
#: a followed object's mask is cut to its prompt box widened by this fraction of its size
BOX_SLACK = 0.1
MIN_APPEARANCE = 0.75
#: the object's histogram learns from masks this much its own (blend weight HIST_GAIN)
HIST_LEARN = 0.9
HIST_GAIN = 0.3
#: a mask that keeps at least this share of its previous area is the whole object: it
#: moves the velocity and becomes the reference a lost object is looked for with (a mask
#: shrinking faster is being occluded: its box centre moves for the wrong reason)
STEADY_AREA = 0.9


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = True
    max_lost_frames: int = 15
    iou_match: float = 0.3
    propagate_unmatched: bool = False
    motion: str = "flow"
    box_margin: float = 0.1
    min_score: float = 0.3
    max_area_change: float = 2.5
    mask_input: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> "TrackingConfig":
        """From a NodeConfig (``tracking.*`` parameters)."""
        return cls(**{f: cfg[f"tracking.{f}"] for f in cls.__dataclass_fields__})


@dataclass
class TrackedObject:
    """One published object of one frame (see the module docstring)."""

    track_id: int
    mask: np.ndarray
    box: np.ndarray
    score: float
    class_id: str = ""
    source: str = ""
    state: str = "tracked"


class IdAllocator:
    """Track ids 1..65535, never reused while running; wraps past 65535 skipping live ids."""

    def __init__(self) -> None:
        self._next = 1

    def allocate(self, in_use: Iterable[int] = ()) -> int:
        in_use = set(in_use)
        for _ in range(TRACK_ID_MAX):
            value = self._next
            self._next = 1 if value >= TRACK_ID_MAX else value + 1
            if value not in in_use:
                return value
        raise RuntimeError(f"all {TRACK_ID_MAX} track ids are in use")


# --- geometry -------------------------------------------------------------------------------
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, 4) x (B, 4) boxes -> (A, B) IoU."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _iou(a, b) -> float:
    """IoU of two boxes (x0, y0, x1, y1), in plain floats (many small calls per frame)."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = min(ax1, bx1) - max(ax0, bx0)
    ih = min(ay1, by1) - max(ay0, by0)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)


def _overlap(a: "_Obs", b: "_Obs") -> int:
    """Low-res pixels two cropped masks share."""
    u0, v0 = max(a.lbox[0], b.lbox[0]), max(a.lbox[1], b.lbox[1])
    u1, v1 = min(a.lbox[2], b.lbox[2]), min(a.lbox[3], b.lbox[3])
    if u1 <= u0 or v1 <= v0:
        return 0
    ca = a.small[v0 - a.lbox[1] : v1 - a.lbox[1], u0 - a.lbox[0] : u1 - a.lbox[0]]
    cb = b.small[v0 - b.lbox[1] : v1 - b.lbox[1], u0 - b.lbox[0] : u1 - b.lbox[0]]
    return int(np.count_nonzero(ca & cb))


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, N) x (B, N) flattened bool masks -> (A, B) IoU."""
    a = np.asarray(a, np.float32).reshape(len(a), -1)
    b = np.asarray(b, np.float32).reshape(len(b), -1)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, col), highest IoU first, each row and column at most once, IoU >= threshold.

    Greedy rather than Hungarian: with well-separated objects both give the same pairs,
    and where they differ (two tracks about equally close to two boxes) neither is
    reliably right; greedy keeps the clearest match."""
    iou = np.asarray(iou)
    if iou.size == 0:
        return []
    order = np.argsort(-iou, axis=None, kind="stable")
    rows_used: set[int] = set()
    cols_used: set[int] = set()
    pairs = []
    for flat in order:
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold or not iou[r, c] > 0:
            break
        if r in rows_used or c in cols_used:
            continue
        rows_used.add(r)
        cols_used.add(c)
        pairs.append((r, c))
    return pairs


class LowRes:
    """Geometry of the decoder's 256x256 low-res logits for one frame size: the valid
    region (the resized image, the rest is padding) and the pixel <-> low-res maps."""

    def __init__(self, size: tuple[int, int]) -> None:
        h, w = size
        scale = IMAGE_SIZE / max(h, w)
        self.size = (h, w)
        self.factor = scale * LOW_RES_SIZE / IMAGE_SIZE  # original pixels -> low-res pixels
        self.valid = (min(LOW_RES_SIZE, math.ceil(h * self.factor)), min(LOW_RES_SIZE, math.ceil(w * self.factor)))

    def masks(self, logits: np.ndarray, threshold: float) -> np.ndarray:
        vh, vw = self.valid
        return logits[..., :vh, :vw] > threshold

    def crops(self, logits: np.ndarray, threshold: float) -> list[tuple[np.ndarray, tuple[int, int, int, int]] | None]:
        """(n, 256, 256) logits -> per mask (its low-res mask cropped to its box, the box
        (u0, v0, u1, v1) in low-res pixels), or None for an empty mask."""
        masks = self.masks(logits, threshold)
        rows_any, cols_any = masks.any(axis=2), masks.any(axis=1)
        out = []
        for i in range(len(masks)):
            rows, cols = np.flatnonzero(rows_any[i]), np.flatnonzero(cols_any[i])
            if rows.size == 0:
                out.append(None)
                continue
            v0, v1, u0, u1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            out.append((masks[i, v0:v1, u0:u1].copy(), (u0, v0, u1, v1)))
        return out

    def to_pixels(self, lbox) -> np.ndarray:
        return np.asarray(lbox, np.float32) / self.factor

    def interior_point(self, crop: np.ndarray, lbox) -> np.ndarray:
        """The most interior pixel of a cropped low-res mask (distance-transform maximum), in pixels."""
        padded = cv2.copyMakeBorder(crop.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        dist = cv2.distanceTransform(padded, cv2.DIST_L2, 3)
        v, u = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return np.array([(lbox[0] + u - 1 + 0.5) / self.factor, (lbox[1] + v - 1 + 0.5) / self.factor], np.float32)


# --- tracks -------------------------------------------------------------------------------------
@dataclass
class _Obs:
    """A track's accepted observation on one frame."""

    seq: int
    box: np.ndarray  # (4,) pixels
    small: np.ndarray  # low-res bool mask cropped to ``lbox``
    lbox: tuple[int, int, int, int]  # its box (u0, v0, u1, v1) in low-res pixels
    area: int  # low-res pixels
    point: np.ndarray  # (2,) most interior pixel
    logits: np.ndarray | None = None  # (256, 256) for mask_input
    time: float | None = None  # the frame's time (stamp), None: its seq
    hist: np.ndarray | None = None  # (512,) colour histogram of the mask, sums to 1 (None: no image)
    appearance: float = 1.0  # share of its pixels in the object's colours (1.0: no image)

    @property
    def t(self) -> float:
        return float(self.seq) if self.time is None else self.time

    @property
    def centre(self) -> tuple[float, float]:
        return (float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2)


@dataclass
class Track:
    track_id: int
    source: str
    class_id: str = ""
    obs: _Obs | None = None
    prev: _Obs | None = None  # the observation before ``obs`` (used when ``obs``' frame is segmented again)
    ref: _Obs | None = None  # the last observation of the whole object (see STEADY_AREA)
    centres: list = field(default_factory=list)  # [(time, x, y)] of the last steady observations
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # px per time unit (stamps)
    lost: int = 0  # frames since the last accepted observation (0: tracked)
    lost_seq: int = -1
    pending: Prompt | None = None  # a user / detector prompt for frame ``pending_seq``
    pending_seq: int = -1
    pending_kind: str = ""  # "new" | "prompt" | "detection"
    used: tuple[int, Prompt, str] | None = None  # (seq, prompt, kind) of the last decode
    det_box: np.ndarray | None = None
    det_seq: int = -1
    det_velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))
    missed: int = 0  # detector lists without this track
    small_prev: np.ndarray | None = None  # everything mode: subsampled mask (anchor)
    small_seq: int = -1
    small_now: np.ndarray | None = None
    predicted: tuple[int, np.ndarray] | None = None  # (seq, box) of the last propagation (for measuring)
    hist: np.ndarray | None = None  # the object's colour histogram (see COLOUR_BIN_MIN)


@dataclass
class Planned:
    """A track's prompt for one frame: what the decoder gets, and how to judge the result."""

    track: Track
    prompt: Prompt
    kind: str  # "new", "prompt", "detection" (accepted as they come), "propagate", "reacquire" (checked)
    predicted: np.ndarray | None = None  # (4,) predicted box, no margin
    anchor: _Obs | None = None
    primary: bool = True  # False: a second prompt for the same object (where it was)
    fit: float = 0.0  # how well the decoded mask fits the object (set by observe)

    @property
    def multimask(self) -> bool:
        p = self.prompt
        return self.kind in ("new", "prompt") and p.box is None and p.points is not None and len(p.points) == 1


class Tracker:
    """Track state of one stream (see the module docstring). Not thread-safe: the
    worker thread alone calls it."""

    def __init__(self, config: TrackingConfig | None = None, mask_threshold: float = 0.0,
                 persistence: str = "sticky") -> None:
        self.config = config or TrackingConfig()
        if self.config.motion not in MOTIONS:
            raise ValueError(f"tracking.motion must be one of {MOTIONS}, got {self.config.motion!r}")
        self.mask_threshold = mask_threshold
        self.follow = persistence == "sticky"  # 'once': objects only on the frames they are prompted on
        self.ids = IdAllocator()
        self.tracks: OrderedDict[int, Track] = OrderedDict()
        self.counters = {"tracks_started": 0, "tracks_ended": 0, "tracks_lost": 0, "tracks_reacquired": 0}
        self.events: list[str] = []  # what happened since the last take_events()
        self._gray: OrderedDict[int, tuple[float, np.ndarray]] = OrderedDict()
        self._rgb: OrderedDict[int, np.ndarray] = OrderedDict()  # low-res RGB (mask colours)
        self._times: OrderedDict[int, float] = OrderedDict()  # seq -> time (stamp)
        self._geometry: LowRes | None = None

    # --- bookkeeping -------------------------------------------------------------------------
    def take_events(self) -> list[str]:
        events, self.events = self.events, []
        return events

    def counts(self) -> dict[str, int]:
        """Counters and live tracks (safe to call from another thread: copies first)."""
        out = dict(self.counters)
        tracks = list(self.tracks.values())
        out["tracks_active"] = sum(1 for t in tracks if t.lost == 0 and t.obs is not None)
        out["tracks_searching"] = sum(1 for t in tracks if t.lost > 0)
        return out

    def _start(self, source: str, class_id: str = "") -> Track:
        track = Track(self.ids.allocate(self.tracks), source, class_id)
        self.tracks[track.track_id] = track
        self.counters["tracks_started"] += 1
        return track

    def _end(self, track: Track, why: str) -> None:
        if self.tracks.pop(track.track_id, None) is not None:
            self.counters["tracks_ended"] += 1
            self.events.append(f"track {track.track_id} ({track.source}) ended: {why}")

    def clear(self, why: str = "cleared") -> None:
        """Forget every track (prompt/clear, a restarted stream); ids are not reused."""
        for track in list(self.tracks.values()):
            self._end(track, why)

    def remove(self, track_id: int) -> bool:
        track = self.tracks.get(int(track_id))
        if track is None:
            return False
        self._end(track, "removed")
        return True

    def _geom(self, size: tuple[int, int]) -> LowRes:
        if self._geometry is None or self._geometry.size != tuple(size):
            self._geometry = LowRes(size)
        return self._geometry

    # --- user prompts --------------------------------------------------------------------------
    def _prompt_track(self, track: Track, seq: int, prompt: Prompt, kind: str) -> None:
        track.pending, track.pending_seq, track.pending_kind = prompt, seq, kind

    def point_object(self, seq: int, prompt: Prompt, same_object: bool = False) -> Track:
        """The point object (prompt/point, prompt/click) was prompted on frame ``seq``.

        It keeps its id when ``same_object`` (points accumulate into one object) or when
        its first foreground point lies on the object's last mask (a re-prompt); else the
        previous point object ends and a new track starts."""
        current = next((t for t in self.tracks.values() if t.source == "point"), None)
        if current is not None and (same_object or self._contains(current, prompt)):
            self._prompt_track(current, seq, prompt, "prompt")
            return current
        if current is not None:
            self._end(current, "replaced by a new point prompt")
        track = self._start("point")
        self._prompt_track(track, seq, prompt, "new")
        return track

    def add_object(self, seq: int, prompt: Prompt, target_id: int = 0, class_id: str = "") -> Track | None:
        """An object added without disturbing the others (``target_id`` 0), or a new prompt
        for track ``target_id`` (keeps its id). None when ``target_id`` is not a live track."""
        if target_id:
            track = self.tracks.get(int(target_id))
            if track is None:
                return None
            self._prompt_track(track, seq, prompt, "prompt")
            track.class_id = class_id or track.class_id
            return track
        track = self._start("object", class_id)
        self._prompt_track(track, seq, prompt, "new")
        return track

    def _contains(self, track: Track, prompt: Prompt) -> bool:
        if track.obs is None or prompt.points is None or self._geometry is None:
            return False
        fg = np.asarray(prompt.points)[np.asarray(prompt.labels) == 1]
        if not len(fg):
            return False
        u, v = (fg[0] * self._geometry.factor).astype(int)
        obs = track.obs
        u, v = u - obs.lbox[0], v - obs.lbox[1]
        return 0 <= v < obs.small.shape[0] and 0 <= u < obs.small.shape[1] and bool(obs.small[v, u])

    def detections(self, seq: int, boxes: np.ndarray, class_ids: list[str], scores: list | None = None) -> None:
        """A detector's box list for frame ``seq`` (see the module docstring)."""
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        tracks = [t for t in self.tracks.values() if t.source == "boxes"]
        predicted = np.array([self._det_predict(t, seq) for t in tracks], np.float32).reshape(-1, 4)
        iou = box_iou(boxes, predicted)
        for i, cid in enumerate(class_ids):
            for j, t in enumerate(tracks):
                if cid and t.class_id and cid != t.class_id:
                    iou[i, j] = 0.0
        pairs = greedy_match(iou, self.config.iou_match)
        matched_boxes = {i for i, _ in pairs}
        matched_tracks = {j for _, j in pairs}
        for i, j in pairs:
            track = tracks[j]
            if track.det_seq >= 0 and seq > track.det_seq:
                centre = (boxes[i, :2] + boxes[i, 2:]) / 2
                old = (track.det_box[:2] + track.det_box[2:]) / 2
                measured = (centre - old) / (seq - track.det_seq)
                track.det_velocity = (1 - VELOCITY_GAIN) * track.det_velocity + VELOCITY_GAIN * measured
            track.det_box, track.det_seq, track.missed = boxes[i].copy(), seq, 0
            track.class_id = class_ids[i] or track.class_id
            self._prompt_track(track, seq, Prompt(box=boxes[i].copy()), "detection")
        for i in range(len(boxes)):
            if i not in matched_boxes:
                track = self._start("boxes", class_ids[i] if i < len(class_ids) else "")
                track.det_box, track.det_seq = boxes[i].copy(), seq
                self._prompt_track(track, seq, Prompt(box=boxes[i].copy()), "new")
        for j, track in enumerate(tracks):
            if j in matched_tracks:
                continue
            track.missed += 1
            if track.missed > self.config.max_lost_frames:
                self._end(track, f"not detected in {track.missed} box lists")

    def _det_predict(self, track: Track, seq: int) -> np.ndarray:
        shift = track.det_velocity * max(0, seq - track.det_seq)
        return track.det_box + np.concatenate([shift, shift])

    # --- motion ------------------------------------------------------------------------------------
    def frame(self, seq: int, image: np.ndarray, time: float | None = None) -> None:
        """Frame ``seq`` is about to be segmented: keep its time (the stamp, in any unit:
        motion is predicted over the time between frames; None: frames are equally
        spaced), its low-res colours (to tell objects apart) and its small grey image
        for flow."""
        geom = self._geom(image.shape[:2])
        self._set_time(seq, time)
        if seq in self._rgb:
            return
        h, w = image.shape[:2]
        scale = min(1.0, FLOW_SIZE / max(h, w))
        small = image if scale >= 1.0 else cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        vh, vw = geom.valid
        q = cv2.resize(small, (vw, vh), interpolation=cv2.INTER_AREA) >> 5  # 8 levels per channel
        self._rgb[seq] = (q[..., 0].astype(np.int16) << 6) | (q[..., 1].astype(np.int16) << 3) | q[..., 2]
        while len(self._rgb) > 3:
            self._rgb.popitem(last=False)
        if self.config.motion == "flow":
            self._gray[seq] = (scale, cv2.cvtColor(small, cv2.COLOR_RGB2GRAY))
            while len(self._gray) > 3:
                self._gray.popitem(last=False)

    def _set_time(self, seq: int, time: float | None) -> None:
        if seq in self._times:
            return
        earlier = [(s, t) for s, t in self._times.items() if s < seq]
        if time is None or not math.isfinite(time):
            time = None if self._times else float(seq)
        if earlier and (time is None or time <= earlier[-1][1]):
            # no usable stamp (missing, or not after the previous frame's): one frame period later
            s0, t0 = earlier[-1]
            period = (t0 - earlier[-2][1]) / (s0 - earlier[-2][0]) if len(earlier) > 1 else 1.0
            time = t0 + max(period, 1e-6) * (seq - s0)
        self._times[seq] = float(seq) if time is None else float(time)
        while len(self._times) > 64:
            self._times.popitem(last=False)

    def time_of(self, seq: int) -> float:
        return self._times.get(seq, float(seq))

    def _colours(self, seq: int, crop: np.ndarray, lbox) -> np.ndarray | None:
        """The colour bins of a cropped low-res mask's pixels (None: no image)."""
        bins = self._rgb.get(seq)
        if bins is None:
            return None
        u0, v0, u1, v1 = lbox
        region = bins[v0:v1, u0:u1]
        return region[crop] if region.shape == crop.shape else None

    def _flow(self, pairs: list[tuple[Track, _Obs]], seq: int) -> dict[int, np.ndarray]:
        """Median Lucas-Kanade displacement (pixels) per track from its anchor's frame to ``seq``."""
        out: dict[int, np.ndarray] = {}
        if seq not in self._gray:
            return out
        scale, now = self._gray[seq]
        by_frame: dict[int, list[tuple[Track, np.ndarray]]] = {}
        for track, anchor in pairs:
            if anchor.seq in self._gray and anchor.seq != seq:
                by_frame.setdefault(anchor.seq, []).append((track, self._flow_points(anchor)))
        for anchor_seq, items in by_frame.items():
            points = np.stack([p for _, p in items]) * scale  # (T, FLOW_POINTS, 2)
            moved, status, err = cv2.calcOpticalFlowPyrLK(
                self._gray[anchor_seq][1], now, points.reshape(-1, 1, 2), None, winSize=FLOW_WINDOW,
                maxLevel=FLOW_LEVELS)
            good = ((status.reshape(-1) == 1) & (err.reshape(-1) < FLOW_MAX_ERROR)).reshape(len(items), -1)
            delta = (moved.reshape(points.shape) - points) / scale
            delta[~good] = np.inf  # sorted last
            delta.sort(axis=1)
            counts = good.sum(axis=1)
            for k, (track, _) in enumerate(items):
                n = int(counts[k])
                if n >= 3:  # the median of the points that tracked
                    out[track.track_id] = ((delta[k, (n - 1) // 2] + delta[k, n // 2]) / 2).astype(np.float32)
        return out

    def _flow_points(self, obs: _Obs) -> np.ndarray:
        """FLOW_POINTS pixels inside the mask, spread over it (repeated for a tiny mask)."""
        vs, us = np.nonzero(obs.small)
        pick = (np.arange(FLOW_POINTS) * (len(vs) - 1)) // (FLOW_POINTS - 1)
        points = np.empty((FLOW_POINTS, 2), np.float32)
        points[:, 0] = us[pick] + obs.lbox[0] + 0.5
        points[:, 1] = vs[pick] + obs.lbox[1] + 0.5
        return points / self._geometry.factor

    # --- prompt mode: plan, decode (the caller), observe --------------------------------------------
    def plan(self, seq: int, size: tuple[int, int]) -> list[Planned]:
        """The prompt of every track that is segmented on frame ``seq``."""
        geom = self._geom(size)
        h, w = size
        planned: list[Planned] = []
        propagate: list[tuple[Track, _Obs]] = []
        for track in list(self.tracks.values()):
            if track.pending is not None and track.pending_seq <= seq:
                planned.append(Planned(track, track.pending, track.pending_kind))
                continue
            if track.used is not None and track.used[0] == seq:  # this frame again: the same prompt
                kind = track.used[2]
                anchor = track.prev if track.obs is not None and track.obs.seq == seq else track.obs
                planned.append(Planned(track, track.used[1], kind, self._predict_box(track, anchor, seq, None), anchor))
                continue
            if source_waits(track, self):
                continue
            anchor = track.obs if track.obs is not None and track.obs.seq < seq else track.prev
            if track.lost and track.ref is not None and track.ref.seq < seq:
                anchor = track.ref  # look for the whole object where it would be now
            if anchor is None or track.source == "everything":
                continue
            propagate.append((track, anchor))
        flows = self._flow([(t, a) for t, a in propagate if t.lost == 0], seq) if self.config.motion == "flow" else {}
        now = self.time_of(seq)
        for track, anchor in propagate:
            dt = now - anchor.t
            located = None
            if self.config.motion == "flow":  # the object's colours first: flow finds nothing inside a plain one
                located = self._locate_by_colour(track, anchor, track.velocity * dt, seq)
            if self.config.motion == "none":
                shift = np.zeros(2, np.float32)
            elif track.track_id in flows and track.lost == 0 and (located is None or float(np.hypot(
                    *(flows[track.track_id] - located))) <= COLOUR_AGREE * _size(anchor.box)):
                shift = flows[track.track_id]  # finer than the colours' low-res blob, where the two agree
            elif located is not None:
                shift = located  # flow held on to nothing (a plain object: it reads no motion)
            else:
                shift = track.velocity * dt
            x0, y0, x1, y1 = (float(v) for v in anchor.box)
            bw, bh = x1 - x0, y1 - y0
            margin = self.config.box_margin + (min(SEARCH_MAX, SEARCH_WIDEN * track.lost) if track.lost else 0.0)
            shifts = [shift]
            if float(np.hypot(*shift)) > STAY_HYPOTHESIS * max(1.0, min(bw, bh)):
                shifts.append(np.zeros(2, np.float32))  # it stopped or turned: where it was
            first = None
            for k, sh in enumerate(shifts):
                dx, dy = float(sh[0]), float(sh[1])
                predicted = np.array([x0 + dx, y0 + dy, x1 + dx, y1 + dy], np.float32)
                mx, my = margin * bw, margin * bh
                box = np.array([max(0.0, x0 + dx - mx), max(0.0, y0 + dy - my), min(w, x1 + dx + mx),
                                min(h, y1 + dy + my)], np.float32)
                if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                    continue
                px = min(max(float(anchor.point[0]) + dx, box[0]), box[2] - 1e-3)
                py = min(max(float(anchor.point[1]) + dy, box[1]), box[3] - 1e-3)
                mask_input = None
                if self.config.mask_input and anchor.logits is not None:
                    du, dv = sh * geom.factor
                    mask_input = cv2.warpAffine(anchor.logits, np.float32([[1, 0, du], [0, 1, dv]]),
                                                (LOW_RES_SIZE, LOW_RES_SIZE), flags=cv2.INTER_LINEAR,
                                                borderMode=cv2.BORDER_CONSTANT, borderValue=-20.0)
                prompt = Prompt(points=np.array([[px, py]], np.float32), labels=np.ones(1, np.int64), box=box,
                                mask_input=mask_input)
                planned.append(Planned(track, prompt, "reacquire" if track.lost else "propagate", predicted, anchor,
                                       primary=first is None))
                if first is None:
                    first = predicted
            if first is None:
                self._miss(track, seq, "left the image")
                continue
            track.predicted = (seq, first)
        return planned

    def _locate_by_colour(self, track: Track, anchor: _Obs, shift: np.ndarray, seq: int) -> np.ndarray | None:
        """The shift (pixels) from ``anchor`` to the blob of the object's colours on frame
        ``seq`` nearest the prediction, or None. Flow has nothing to hold on to inside a
        plain-coloured object, and constant velocity is wrong for two frames after the
        object turns (and more when frames are dropped): its colours show where it went.
        Looked for in a window around both where it was and where it is predicted, widened
        by half its size (more while it is lost); the blob must have about its area (a
        background of its colours is one huge blob: no answer)."""
        bins = self._rgb.get(seq)
        if bins is None or track.hist is None or anchor.area < COLOUR_MIN_AREA:
            return None
        geom = self._geometry
        f = geom.factor
        u0, v0, u1, v1 = anchor.lbox
        du, dv = float(shift[0]) * f, float(shift[1]) * f
        pad = COLOUR_SEARCH * max(u1 - u0, v1 - v0) * (1 + min(SEARCH_MAX, SEARCH_WIDEN * track.lost) * 2)
        vh, vw = geom.valid
        wu0, wv0 = max(0, int(min(u0, u0 + du) - pad)), max(0, int(min(v0, v0 + dv) - pad))
        wu1, wv1 = min(vw, int(max(u1, u1 + du) + pad) + 1), min(vh, int(max(v1, v1 + dv) + pad) + 1)
        if wu1 - wu0 < 2 or wv1 - wv0 < 2:
            return None
        match = (track.hist[bins[wv0:wv1, wu0:wu1]] >= COLOUR_BIN_MIN).view(np.uint8)
        count, _, stats, centroids = cv2.connectedComponentsWithStats(match, connectivity=4)
        whole = track.ref.area if track.ref is not None else anchor.area
        vs, us = np.nonzero(anchor.small)
        cu, cv_ = float(us.mean()) + u0 + 0.5, float(vs.mean()) + v0 + 0.5  # the anchor mask's centroid
        area = stats[1:count, cv2.CC_STAT_AREA]
        blobs = np.flatnonzero((area >= COLOUR_AREA[0] * whole) & (area <= COLOUR_AREA[1] * whole)) + 1
        if not len(blobs):
            return None
        moved = centroids[blobs] + (wu0 + 0.5 - cu, wv0 + 0.5 - cv_)  # (low-res) from where it was
        k = int(np.argmin(np.hypot(moved[:, 0] - du, moved[:, 1] - dv)))  # the blob nearest the prediction
        return (moved[k] / f).astype(np.float32)

    def _predict_box(self, track: Track, anchor: _Obs | None, seq: int, shift) -> np.ndarray | None:
        if anchor is None:
            return None
        shift = track.velocity * (self.time_of(seq) - anchor.t) if shift is None else shift
        return anchor.box + np.concatenate([shift, shift])

    def observe(self, seq: int, planned: list[Planned], scores: np.ndarray, low_res: np.ndarray) -> list[int]:
        """Judge the decoded masks (scores (n,), low-res logits (n, 256, 256)); update the
        tracks; return the indices of ``planned`` whose objects are published (at most
        one per track: of an object's prompts, the mask that fits it best)."""
        if not planned:
            return []
        geom = self._geometry
        # a followed object's mask keeps to its prompt box (with a little slack): pixels the
        # decoder put elsewhere (specks, a piece of a neighbour) are not the object, and
        # would widen the next frame's box; a mask mostly outside it jumped away
        jumped = [False] * len(planned)
        for i, p in enumerate(planned):
            if p.kind in ("propagate", "reacquire") and p.prompt.box is not None:
                u0, v0, u1, v1 = _low_res_box(p.prompt.box, geom.factor, BOX_SLACK)
                total = int(np.count_nonzero(low_res[i] > self.mask_threshold))
                inside = int(np.count_nonzero(low_res[i, v0:v1, u0:u1] > self.mask_threshold))
                jumped[i] = total > 0 and inside < 0.5 * total
                if not jumped[i] and inside < total:
                    off = min(-20.0, self.mask_threshold - 20.0)
                    low_res[i, :v0] = off
                    low_res[i, v1:] = off
                    low_res[i, v0:v1, :u0] = off
                    low_res[i, v0:v1, u1:] = off
        crops = geom.crops(low_res, self.mask_threshold)
        areas = [int(np.count_nonzero(c[0])) if c is not None else 0 for c in crops]
        cfg = self.config
        low_area = 1.0 / cfg.max_area_change
        time = self.time_of(seq)
        # an object whose predicted box crosses the image border is leaving the view: it
        # may shrink as fast as it likes
        h, w = geom.size
        leaving = [p.predicted is not None and (p.predicted[0] < 0 or p.predicted[1] < 0 or p.predicted[2] > w
                                                or p.predicted[3] > h) for p in planned]
        verdict: list[str | None] = []  # None: accepted, else why not
        obs: list[_Obs | None] = []
        for i, p in enumerate(planned):
            if crops[i] is None:
                obs.append(None)
            else:
                crop, lbox = crops[i]
                logits = low_res[i].copy() if cfg.mask_input else None
                o = _Obs(seq, geom.to_pixels(lbox), crop, lbox, areas[i], geom.interior_point(crop, lbox), logits, time)
                colours = self._colours(seq, crop, lbox)
                if colours is not None and len(colours):
                    o.hist = np.bincount(colours, minlength=512).astype(np.float32) / len(colours)
                    if p.track.hist is not None:
                        o.appearance = float((p.track.hist[colours] >= COLOUR_BIN_MIN).mean())
                obs.append(o)
            if p.kind in ("new", "prompt", "detection"):
                verdict.append(None if areas[i] else "empty mask")
                p.fit = float(scores[i])
                continue
            ref = p.anchor
            if not areas[i]:
                verdict.append("mask vanished")
            elif scores[i] < cfg.min_score:
                verdict.append(f"predicted IoU {scores[i]:.2f} below {cfg.min_score:g}")
            elif not (low_area <= areas[i] / max(ref.area, 1) <= cfg.max_area_change) and not (
                    leaving[i] and areas[i] < ref.area):
                verdict.append(f"area changed {areas[i] / max(ref.area, 1):.2f}x")
            elif jumped[i]:
                verdict.append("box jumped away from the prediction")
            elif obs[i].appearance < MIN_APPEARANCE:
                verdict.append(f"only {obs[i].appearance:.0%} of its mask has its colours")
            else:
                verdict.append(None)
                whole = p.track.ref.area if p.track.ref is not None else ref.area
                area_fit = min(areas[i], whole) / max(areas[i], whole, 1)
                box_fit = _iou(obs[i].box, _clip(p.predicted, geom.size))
                p.fit = float(scores[i]) * area_fit * obs[i].appearance ** 2 * (0.5 + 0.5 * box_fit)
        self._resolve_conflicts(planned, obs, verdict)
        # of each object's prompts, the accepted mask that fits best
        chosen: dict[int, int] = {}
        for i, p in enumerate(planned):
            tid = p.track.track_id
            j = chosen.get(tid)
            if j is None or (verdict[j] is not None and (verdict[i] is None or p.primary)) or (
                    verdict[i] is None and verdict[j] is None and p.fit > planned[j].fit):
                chosen[tid] = i
        keep = []
        for i in sorted(chosen.values()):
            p = planned[i]
            track = p.track
            if track.track_id not in self.tracks:
                continue
            track.used = (seq, p.prompt, p.kind)
            if p.kind in ("new", "prompt", "detection") and track.pending_seq <= seq:
                track.pending, track.pending_seq = None, -1
            if verdict[i] is None:
                self._accept(track, obs[i], p.kind)
                keep.append(i)
            elif p.kind == "detection" or (p.kind == "new" and track.source == "boxes"):
                keep.append(i)  # the detector says it is there: published (empty mask), nothing learnt
            elif track.obs is not None and seq < track.obs.seq:
                continue  # an older frame segmented again: not a loss on the track's current frame
            elif p.kind in ("new", "prompt") and track.obs is None:
                self._end(track, "its prompt gave an empty mask")
            else:
                self._miss(track, seq, verdict[i])
        return keep

    def _resolve_conflicts(self, planned: list[Planned], obs: list[_Obs | None], verdict: list[str | None]) -> None:
        """Two accepted masks that are mostly the same pixels belong to one object: the
        one prompted by the user / detector, else the one nearer its prediction, keeps it.
        A lost object is not re-acquired on a mask that lies mostly inside another
        object's (the occluder in front of it)."""
        live = [i for i, v in enumerate(verdict) if v is None]
        for i in live:
            if planned[i].kind != "reacquire":
                continue
            for j in live:
                if planned[j].track is planned[i].track:
                    continue
                if j != i and verdict[j] is None and _overlap(obs[i], obs[j]) > SAME_OBJECT_IOU * obs[i].area:
                    verdict[i] = f"its mask lies inside track {planned[j].track.track_id}'s"
                    break
        live = [i for i in live if verdict[i] is None]
        rank = {"new": 3, "prompt": 3, "detection": 3, "propagate": 2, "reacquire": 1}
        for a_pos, a in enumerate(live):
            for b in live[a_pos + 1 :]:
                if verdict[a] is not None or verdict[b] is not None or planned[a].track is planned[b].track:
                    continue
                inter = _overlap(obs[a], obs[b])
                if inter <= SAME_OBJECT_IOU * (obs[a].area + obs[b].area - inter):
                    continue
                key = []
                for i in (a, b):
                    p = planned[i]
                    fit = _iou(obs[i].box, p.predicted) if p.predicted is not None else 1.0
                    # the object whose colours it has keeps it (an occluder never takes an
                    # id), else the one it fits better
                    key.append((rank[p.kind], round(obs[i].appearance, 1), fit))
                loser = b if key[0] >= key[1] else a
                winner = a if loser == b else b
                if planned[loser].kind in ("new", "prompt", "detection"):
                    continue  # both prompted by the user: both stand
                verdict[loser] = f"its mask is track {planned[winner].track.track_id}'s"

    def _accept(self, track: Track, obs: _Obs, kind: str) -> None:
        old = track.obs
        if old is not None and obs.seq < old.seq:
            return  # an older frame segmented again: it does not move the track back
        steady = old is None or obs.area >= STEADY_AREA * old.area
        if old is not None and obs.seq > old.seq:
            track.prev = old
        if kind in ("new", "prompt"):  # a new mask for the object: its history says nothing about it
            track.velocity = np.zeros(2, np.float32)
            track.centres = []
        if steady and old is not None and obs.area * STEADY_AREA <= old.area or not track.centres:
            # the whole object, neither being covered nor uncovered: its centre moved because it moved
            track.centres = [c for c in track.centres if c[0] < obs.t][-(VELOCITY_HISTORY - 1) :]
            track.centres.append((obs.t, *obs.centre))
            track.velocity = _slope(track.centres)
        if steady or kind in ("new", "prompt") or track.ref is None:
            track.ref = obs
        if obs.hist is not None:
            if track.hist is None or kind in ("new", "prompt"):
                track.hist = obs.hist
            elif obs.appearance >= HIST_LEARN:
                track.hist = (1 - HIST_GAIN) * track.hist + HIST_GAIN * obs.hist
        if track.lost:
            self.counters["tracks_reacquired"] += 1
            self.events.append(f"track {track.track_id} re-acquired after {track.lost} frame(s)")
        track.obs, track.lost = obs, 0

    def _miss(self, track: Track, seq: int, why: str) -> None:
        if track.lost_seq == seq:
            return
        track.lost_seq = seq
        if track.lost == 0:
            self.counters["tracks_lost"] += 1
            self.events.append(f"track {track.track_id} lost: {why}")
        track.lost += 1
        # a detector's object ends when the detector stops reporting it (``missed``), not
        # because its masks are poor: the boxes alone identify it
        if track.lost > self.config.max_lost_frames and track.source != "boxes":
            self._end(track, f"lost for {track.lost} frames")

    def states(self, planned: list[Planned], keep: list[int]) -> list[str]:
        return ["new" if planned[i].kind == "new" else "reacquired" if planned[i].kind == "reacquire"
                else "tracked" for i in keep]

    def set_boxes(self, track_ids: Iterable[int], boxes: np.ndarray) -> None:
        """The published (full-resolution) mask boxes replace the low-res ones."""
        for tid, box in zip(track_ids, boxes):
            track = self.tracks.get(int(tid))
            if track is not None and track.obs is not None and box[2] > box[0]:
                track.obs.box = np.asarray(box, np.float32).copy()

    # --- everything mode -------------------------------------------------------------------------
    def associate_masks(self, seq: int, masks: np.ndarray) -> np.ndarray:
        """Ids for segment-everything masks (K, H, W) of frame ``seq``."""
        masks = np.asarray(masks, bool)
        h, w = masks.shape[1:] if masks.ndim == 3 else (0, 0)
        stride = max(1, round(max(h, w) / MATCH_SIZE)) if h else 1
        small = masks[:, ::stride, ::stride].reshape(len(masks), -1) if len(masks) else np.zeros((0, 1), bool)
        tracks = [t for t in self.tracks.values() if t.source == "everything"]
        refs, rows = [], []
        for t in tracks:
            ref = t.small_prev if t.small_seq == seq else t.small_now
            if ref is not None and ref.shape[0] == small.shape[1]:
                refs.append(ref)
                rows.append(t)
        iou = mask_iou(small, np.stack(refs)) if refs and len(small) else np.zeros((len(small), len(refs)))
        pairs = greedy_match(iou, self.config.iou_match)
        ids = np.zeros(len(masks), np.int64)
        matched = set()
        for i, j in pairs:
            track = rows[j]
            self._everything_update(track, seq, small[i])
            ids[i] = track.track_id
            matched.add(track.track_id)
        for i in range(len(masks)):
            if not ids[i]:
                track = self._start("everything")
                self._everything_update(track, seq, small[i])
                ids[i] = track.track_id
                matched.add(track.track_id)
        for track in tracks:
            if track.track_id not in matched:
                self._miss(track, seq, "no matching mask")
        return ids

    def _everything_update(self, track: Track, seq: int, small: np.ndarray) -> None:
        if track.small_seq != seq:
            track.small_prev = track.small_now
        track.small_now, track.small_seq = small.copy(), seq
        if track.lost:
            self.counters["tracks_reacquired"] += 1
        track.lost = 0
        track.obs = track.obs or _Obs(seq, np.zeros(4, np.float32), np.zeros((1, 1), bool), (0, 0, 1, 1), 0,
                                      np.zeros(2, np.float32))


def _low_res_box(box, factor: float, slack: float) -> tuple[int, int, int, int]:
    """A pixel box widened by ``slack`` of its size (and 2 low-res pixels) on each side,
    in low-res pixels (u0, v0, u1, v1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    mx, my = slack * (x1 - x0), slack * (y1 - y0)
    return (max(0, int(math.floor((x0 - mx) * factor)) - 2), max(0, int(math.floor((y0 - my) * factor)) - 2),
            min(LOW_RES_SIZE, int(math.ceil((x1 + mx) * factor)) + 2),
            min(LOW_RES_SIZE, int(math.ceil((y1 + my) * factor)) + 2))


def _clip(box: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = size
    return (min(max(float(box[0]), 0.0), w), min(max(float(box[1]), 0.0), h),
            min(max(float(box[2]), 0.0), w), min(max(float(box[3]), 0.0), h))


def _size(box) -> float:
    """The smaller side of a box (pixels), at least 1."""
    return max(1.0, min(float(box[2] - box[0]), float(box[3] - box[1])))


def _slope(centres: list) -> np.ndarray:
    """Least-squares velocity (px per time unit) through [(time, x, y)]; zero for one point."""
    n = len(centres)
    if n < 2:
        return np.zeros(2, np.float32)
    # plain Python: at most VELOCITY_HISTORY points, far below numpy's per-call cost
    mt = sum(c[0] for c in centres) / n
    mx = sum(c[1] for c in centres) / n
    my = sum(c[2] for c in centres) / n
    denom = sum((c[0] - mt) ** 2 for c in centres)
    vx = sum((c[0] - mt) * (c[1] - mx) for c in centres) / denom
    vy = sum((c[0] - mt) * (c[2] - my) for c in centres) / denom
    return np.array([vx, vy], np.float32)


def source_waits(track: Track, tracker: Tracker) -> bool:
    """Tracks that are not propagated on this frame: everything-mode tracks (matched,
    not prompted), detector tracks the last box list missed (unless
    propagate_unmatched), and every track with persistence 'once'."""
    if track.source == "everything":
        return True
    if not tracker.follow:
        return True
    return track.source == "boxes" and track.missed > 0 and not tracker.config.propagate_unmatched
