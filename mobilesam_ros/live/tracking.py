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
when neither answers: see ``motion.Motion.locate_by_colour``), or
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

**Where the parts are.** :class:`Tracker` (here) plans every track's prompt and judges
the decoded masks; it builds on ``track_book.TrackBook`` (ids, counters, user and
detector prompts, losses). ``motion.Motion`` keeps the recent frames (stamp times,
colours, grey images) and predicts where an object went; ``track_state`` holds the
settings, constants and per-track records, ``track_geometry`` the IoUs, matching and
the low-res grid. The public names are all importable from here.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..geometry import LOW_RES_SIZE
from ..predictor import Prompt
from .motion import Blob, Motion
from .track_book import TrackBook
from .track_geometry import LowRes, _clip, _iou, _low_res_box, _overlap, _slope, box_iou, greedy_match, mask_iou
from .track_state import (
    BOX_SLACK,
    COLOUR_BIN_MIN,
    HIST_GAIN,
    HIST_LEARN,
    MATCH_SIZE,
    MIN_APPEARANCE,
    MOTIONS,
    SAME_OBJECT_IOU,
    SEARCH_MAX,
    SEARCH_WIDEN,
    SOURCES,
    STAY_HYPOTHESIS,
    STEADY_AREA,
    TRACK_ID_MAX,
    VELOCITY_HISTORY,
    IdAllocator,
    Planned,
    Track,
    TrackedObject,
    TrackingConfig,
    _Obs,
)

#: moved to their own modules, still imported from here by the rest of the package and the tests
__all__ = ["MOTIONS", "SOURCES", "TRACK_ID_MAX", "IdAllocator", "LowRes", "Planned", "Track", "TrackedObject",
           "Tracker", "TrackingConfig", "box_iou", "greedy_match", "mask_iou", "source_waits"]


class Tracker(TrackBook):
    """Track state of one stream (see the module docstring). Not thread-safe: the
    worker thread alone calls it."""

    def __init__(self, config: TrackingConfig | None = None, mask_threshold: float = 0.0,
                 persistence: str = "sticky") -> None:
        super().__init__(config, mask_threshold, persistence)
        self.motion = Motion()  # the recent frames, flow, colour location

    @property
    def _geometry(self) -> LowRes | None:
        return self.motion.geometry

    def _geom(self, size: tuple[int, int]) -> LowRes:
        return self.motion.geom(size)

    # --- frames ------------------------------------------------------------------------------------
    def frame(self, seq: int, image: np.ndarray, time: float | None = None) -> None:
        """Frame ``seq`` is about to be segmented: keep its time (the stamp, in any unit:
        motion is predicted over the time between frames; None: frames are equally
        spaced), its low-res colours (to tell objects apart) and its small grey image
        for flow."""
        self.motion.frame(seq, image, time, self.config.motion == "flow")

    def time_of(self, seq: int) -> float:
        return self.motion.time_of(seq)

    # --- prompt mode: plan, decode (the caller), observe --------------------------------------------
    def plan(self, seq: int, size: tuple[int, int]) -> list[Planned]:
        """The prompt of every track that is segmented on frame ``seq``."""
        geom = self._geom(size)
        planned, propagate = self._given_prompts(seq)
        model = self.config.motion
        flows = self.motion.flow([(t, a) for t, a in propagate if t.lost == 0], seq) if model == "flow" else {}
        now = self.time_of(seq)
        for track, anchor in propagate:
            shift, blob = self.motion.shift(track, anchor, seq, now - anchor.t, flows, model)
            prompts = self._propagation_prompts(track, anchor, shift, blob, size, geom)
            if not prompts:
                self._miss(track, seq, "left the image")
                continue
            planned.extend(prompts)
            track.predicted = (seq, prompts[0].predicted)
        return planned

    def _given_prompts(self, seq: int) -> tuple[list[Planned], list[tuple[Track, _Obs]]]:
        """The prompts frame ``seq`` already has (a user's / detector's, or the same as the
        last time this frame was decoded), and the tracks to propagate with their anchors
        (the observation they are followed from)."""
        planned: list[Planned] = []
        propagate: list[tuple[Track, _Obs]] = []
        for track in list(self.tracks.values()):
            if track.pending is not None and track.pending_seq <= seq:
                planned.append(Planned(track, track.pending, track.pending_kind))
                continue
            if track.used is not None and track.used[0] == seq:  # this frame again: the same prompt
                kind = track.used[2]
                anchor = track.prev if track.obs is not None and track.obs.seq == seq else track.obs
                planned.append(Planned(track, track.used[1], kind,
                                       self.motion.predict_box(track, anchor, seq, None), anchor))
                continue
            if source_waits(track, self):
                continue
            anchor = track.obs if track.obs is not None and track.obs.seq < seq else track.prev
            if track.lost and track.ref is not None and track.ref.seq < seq:
                anchor = track.ref  # look for the whole object where it would be now
            if anchor is None or track.source == "everything":
                continue
            propagate.append((track, anchor))
        return planned, propagate

    def _propagation_prompts(self, track: Track, anchor: _Obs, shift: np.ndarray, blob: Blob | None,
                             size: tuple[int, int], geom: LowRes) -> list[Planned]:
        """The prompts of a followed object moved by ``shift``: the first where the motion
        puts it, a second where it was when the motion is large (none: it left the image).
        Located by its colours (``blob``), the prompt is the blob's box and centre: the
        anchor's box moved by the centroids' shift would carry along the offset of an anchor
        mask that covered only part of the object, and prompt the wrong part."""
        h, w = size
        x0, y0, x1, y1 = (float(v) for v in (anchor.box if blob is None else blob.box))
        point = anchor.point if blob is None else blob.centre
        bw, bh = x1 - x0, y1 - y0
        margin = self.config.box_margin + (min(SEARCH_MAX, SEARCH_WIDEN * track.lost) if track.lost else 0.0)
        if blob is not None:  # its colours show where it is: its box needs no moving, and no second guess
            shifts = [np.zeros(2, np.float32)]
        else:
            shifts = [shift]
            if float(np.hypot(*shift)) > STAY_HYPOTHESIS * max(1.0, min(bw, bh)):
                shifts.append(np.zeros(2, np.float32))  # it stopped or turned: where it was
        out: list[Planned] = []
        for sh in shifts:
            dx, dy = float(sh[0]), float(sh[1])
            predicted = np.array([x0 + dx, y0 + dy, x1 + dx, y1 + dy], np.float32)
            mx, my = margin * bw, margin * bh
            box = np.array([max(0.0, x0 + dx - mx), max(0.0, y0 + dy - my), min(w, x1 + dx + mx),
                            min(h, y1 + dy + my)], np.float32)
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            px = min(max(float(point[0]) + dx, box[0]), box[2] - 1e-3)
            py = min(max(float(point[1]) + dy, box[1]), box[3] - 1e-3)
            moved = sh if blob is None else sh + shift  # the anchor's logits move as the object did
            prompt = Prompt(points=np.array([[px, py]], np.float32), labels=np.ones(1, np.int64), box=box,
                            mask_input=self._shifted_logits(anchor, moved, geom))
            out.append(Planned(track, prompt, "reacquire" if track.lost else "propagate", predicted, anchor,
                               primary=not out))
        return out

    def _shifted_logits(self, anchor: _Obs, shift: np.ndarray, geom: LowRes) -> np.ndarray | None:
        """With ``mask_input``: the anchor's low-res logits moved by ``shift`` (None: not used)."""
        if not (self.config.mask_input and anchor.logits is not None):
            return None
        du, dv = shift * geom.factor
        return cv2.warpAffine(anchor.logits, np.float32([[1, 0, du], [0, 1, dv]]), (LOW_RES_SIZE, LOW_RES_SIZE),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=-20.0)

    def observe(self, seq: int, planned: list[Planned], scores: np.ndarray, low_res: np.ndarray) -> list[int]:
        """Judge the decoded masks (scores (n,), low-res logits (n, 256, 256)); update the
        tracks; return the indices of ``planned`` whose objects are published (at most
        one per track: of an object's prompts, the mask that fits it best)."""
        if not planned:
            return []
        geom = self._geometry
        jumped = _cut_to_prompt_boxes(planned, low_res, geom.factor, self.mask_threshold)
        crops = geom.crops(low_res, self.mask_threshold)
        areas = [int(np.count_nonzero(c[0])) if c is not None else 0 for c in crops]
        time = self.time_of(seq)
        leaving = _leaving(planned, geom.size)
        obs = [self._observation(seq, p, crops[i], areas[i], low_res[i], time, geom) for i, p in enumerate(planned)]
        verdict = [self._judge(p, scores[i], areas[i], obs[i], jumped[i], leaving[i], geom)
                   for i, p in enumerate(planned)]  # None: accepted, else why not
        _resolve_conflicts(planned, obs, verdict)
        return self._update_tracks(seq, planned, _best_per_track(planned, verdict), obs, verdict)

    def _observation(self, seq: int, p: Planned, crop_box: tuple | None, area: int, logits: np.ndarray,
                     time: float, geom: LowRes) -> _Obs | None:
        """A decoded mask as an observation of ``p``'s track (None: empty), with its colour
        histogram and how much of it has the object's colours."""
        if crop_box is None:
            return None
        crop, lbox = crop_box
        logits = logits.copy() if self.config.mask_input else None
        o = _Obs(seq, geom.to_pixels(lbox), crop, lbox, area, geom.interior_point(crop, lbox), logits, time)
        colours = self.motion.colours(seq, crop, lbox)
        if colours is not None and len(colours):
            o.hist = np.bincount(colours, minlength=512).astype(np.float32) / len(colours)
            if p.track.hist is not None:
                o.appearance = float((p.track.hist[colours] >= COLOUR_BIN_MIN).mean())
        return o

    def _judge(self, p: Planned, score, area: int, o: _Obs | None, jumped: bool, leaving: bool,
               geom: LowRes) -> str | None:
        """Why a decoded mask is not ``p``'s object (None: it is; then ``p.fit`` says how
        well it fits). A user's / detector's prompt is taken as it comes."""
        cfg = self.config
        if p.kind in ("new", "prompt", "detection"):
            p.fit = float(score)
            return None if area else "empty mask"
        ref = p.anchor
        low_area = 1.0 / cfg.max_area_change
        if not area:
            return "mask vanished"
        if score < cfg.min_score:
            return f"predicted IoU {score:.2f} below {cfg.min_score:g}"
        if not (low_area <= area / max(ref.area, 1) <= cfg.max_area_change) and not (leaving and area < ref.area):
            return f"area changed {area / max(ref.area, 1):.2f}x"
        if jumped:
            return "box jumped away from the prediction"
        if o.appearance < MIN_APPEARANCE:
            return f"only {o.appearance:.0%} of its mask has its colours"
        whole = p.track.ref.area if p.track.ref is not None else ref.area
        area_fit = min(area, whole) / max(area, whole, 1)
        box_fit = _iou(o.box, _clip(p.predicted, geom.size))
        p.fit = float(score) * area_fit * o.appearance ** 2 * (0.5 + 0.5 * box_fit)
        return None

    def _update_tracks(self, seq: int, planned: list[Planned], chosen: dict[int, int], obs: list[_Obs | None],
                       verdict: list[str | None]) -> list[int]:
        """Each track learns from its chosen mask (or loses / ends); the indices of the
        published ones."""
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


# --- the steps of observe that need no tracker ------------------------------------------------------
def _cut_to_prompt_boxes(planned: list[Planned], low_res: np.ndarray, factor: float, threshold: float) -> list[bool]:
    """A followed object's mask keeps to its prompt box (with a little slack): pixels the
    decoder put elsewhere (specks, a piece of a neighbour) are not the object, and would
    widen the next frame's box; a mask mostly outside it jumped away (True per prompt).
    Cuts ``low_res`` in place."""
    jumped = [False] * len(planned)
    for i, p in enumerate(planned):
        if p.kind in ("propagate", "reacquire") and p.prompt.box is not None:
            u0, v0, u1, v1 = _low_res_box(p.prompt.box, factor, BOX_SLACK)
            total = int(np.count_nonzero(low_res[i] > threshold))
            inside = int(np.count_nonzero(low_res[i, v0:v1, u0:u1] > threshold))
            jumped[i] = total > 0 and inside < 0.5 * total
            if not jumped[i] and inside < total:
                off = min(-20.0, threshold - 20.0)
                low_res[i, :v0] = off
                low_res[i, v1:] = off
                low_res[i, v0:v1, :u0] = off
                low_res[i, v0:v1, u1:] = off
    return jumped


def _leaving(planned: list[Planned], size: tuple[int, int]) -> list[bool]:
    """An object whose predicted box crosses the image border is leaving the view: it may
    shrink as fast as it likes."""
    h, w = size
    return [p.predicted is not None and (p.predicted[0] < 0 or p.predicted[1] < 0 or p.predicted[2] > w
                                         or p.predicted[3] > h) for p in planned]


def _resolve_conflicts(planned: list[Planned], obs: list[_Obs | None], verdict: list[str | None]) -> None:
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

def _best_per_track(planned: list[Planned], verdict: list[str | None]) -> dict[int, int]:
    """Of each object's prompts, the accepted mask that fits best (track id -> index)."""
    chosen: dict[int, int] = {}
    for i, p in enumerate(planned):
        tid = p.track.track_id
        j = chosen.get(tid)
        if j is None or (verdict[j] is not None and (verdict[i] is None or p.primary)) or (
                verdict[i] is None and verdict[j] is None and p.fit > planned[j].fit):
            chosen[tid] = i
    return chosen


def source_waits(track: Track, tracker: Tracker) -> bool:
    """Tracks that are not propagated on this frame: everything-mode tracks (matched,
    not prompted), detector tracks the last box list missed (unless
    propagate_unmatched), and every track with persistence 'once'."""
    if track.source == "everything":
        return True
    if not tracker.follow:
        return True
    return track.source == "boxes" and track.missed > 0 and not tracker.config.propagate_unmatched
