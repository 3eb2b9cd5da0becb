"""The tracker's state (see live/tracking.py): its settings and constants, the per-frame
published object, track ids, and a track's observations and planned prompts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

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
