"""Motion for the tracker (see live/tracking.py): the recent frames it needs (stamp
times, low-res colour bins, small grey images), Lucas-Kanade flow, locating a plain
object by its colours, and the choice of an object's shift to the next frame."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np

from .track_geometry import LowRes, _size
from .track_state import (
    COLOUR_AGREE,
    COLOUR_AREA,
    COLOUR_BIN_MIN,
    COLOUR_MIN_AREA,
    COLOUR_SEARCH,
    FLOW_LEVELS,
    FLOW_MAX_ERROR,
    FLOW_POINTS,
    FLOW_SIZE,
    FLOW_WINDOW,
    SEARCH_MAX,
    SEARCH_WIDEN,
    Track,
    _Obs,
)


@dataclass(frozen=True)
class Blob:
    """Where an object's colours are on a frame (pixels): ``shift`` of its centroid from
    the anchor mask's, and its ``box`` and ``centre``: the whole visible object, which an
    anchor mask that covered only part of it is not."""

    shift: np.ndarray
    box: np.ndarray
    centre: np.ndarray


class Motion:
    """The frames of one stream that motion is measured on, and the motion of each
    followed object. The tracking settings are not kept here (they are reconfigured on the
    tracker): the callers pass ``tracking.motion``."""

    def __init__(self) -> None:
        self._gray: OrderedDict[int, tuple[float, np.ndarray]] = OrderedDict()
        self._rgb: OrderedDict[int, np.ndarray] = OrderedDict()  # low-res RGB (mask colours)
        self._times: OrderedDict[int, float] = OrderedDict()  # seq -> time (stamp)
        self.geometry: LowRes | None = None

    def geom(self, size: tuple[int, int]) -> LowRes:
        if self.geometry is None or self.geometry.size != tuple(size):
            self.geometry = LowRes(size)
        return self.geometry

    def frame(self, seq: int, image: np.ndarray, time: float | None, flow: bool) -> None:
        """Frame ``seq`` is about to be segmented: keep its time (the stamp, in any unit:
        motion is predicted over the time between frames; None: frames are equally
        spaced), its low-res colours (to tell objects apart) and its small grey image
        for flow (``flow``: tracking.motion is flow)."""
        geom = self.geom(image.shape[:2])
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
        if flow:
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

    def colours(self, seq: int, crop: np.ndarray, lbox) -> np.ndarray | None:
        """The colour bins of a cropped low-res mask's pixels (None: no image)."""
        bins = self._rgb.get(seq)
        if bins is None:
            return None
        u0, v0, u1, v1 = lbox
        region = bins[v0:v1, u0:u1]
        return region[crop] if region.shape == crop.shape else None

    def flow(self, pairs: list[tuple[Track, _Obs]], seq: int) -> dict[int, np.ndarray]:
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
        return points / self.geometry.factor

    def locate_by_colour(self, track: Track, anchor: _Obs, shift: np.ndarray, seq: int) -> Blob | None:
        """The blob of the object's colours on frame ``seq`` nearest the prediction (its
        shift from ``anchor``, box and centre, pixels), or None. Flow has nothing to hold on to inside a
        plain-coloured object, and constant velocity is wrong for two frames after the
        object turns (and more when frames are dropped): its colours show where it went.
        Looked for in a window around both where it was and where it is predicted, widened
        by half its size (more while it is lost); the blob must have about its area (a
        background of its colours is one huge blob: no answer)."""
        bins = self._rgb.get(seq)
        if bins is None or track.hist is None or anchor.area < COLOUR_MIN_AREA:
            return None
        geom = self.geometry
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
        b = blobs[k]
        bu, bv = wu0 + stats[b, cv2.CC_STAT_LEFT], wv0 + stats[b, cv2.CC_STAT_TOP]
        box = geom.to_pixels((bu, bv, bu + stats[b, cv2.CC_STAT_WIDTH], bv + stats[b, cv2.CC_STAT_HEIGHT]))
        centre = ((centroids[b] + (wu0 + 0.5, wv0 + 0.5)) / f).astype(np.float32)
        return Blob((moved[k] / f).astype(np.float32), box, centre)

    def predict_box(self, track: Track, anchor: _Obs | None, seq: int, shift) -> np.ndarray | None:
        if anchor is None:
            return None
        shift = track.velocity * (self.time_of(seq) - anchor.t) if shift is None else shift
        return anchor.box + np.concatenate([shift, shift])

    def shift(self, track: Track, anchor: _Obs, seq: int, dt: float, flows: dict[int, np.ndarray],
              model: str) -> tuple[np.ndarray, Blob | None]:
        """Where ``track`` moved from ``anchor`` (pixels) over ``dt`` by motion model
        ``model``: the flow (``flows``: per track id), where it agrees with the blob of the
        object's colours; the blob where flow is missing or disagrees (returned too: it is
        the object where it is now); else constant velocity."""
        located = None
        if model == "flow":  # the object's colours first: flow finds nothing inside a plain one
            located = self.locate_by_colour(track, anchor, track.velocity * dt, seq)
        if model == "none":
            return np.zeros(2, np.float32), None
        if track.track_id in flows and track.lost == 0 and (located is None or float(np.hypot(
                *(flows[track.track_id] - located.shift))) <= COLOUR_AGREE * _size(anchor.box)):
            return flows[track.track_id], None  # finer than the colours' low-res blob, where the two agree
        if located is not None:
            return located.shift, located  # flow held on to nothing (a plain object: it reads no motion)
        return track.velocity * dt, None
