"""The tracker's book of tracks (see live/tracking.py): ids, counters and events, the
tracks the user and a detector prompt, losses and ends. :class:`~.tracking.Tracker`
builds on it to follow the tracks from frame to frame."""

from __future__ import annotations

from collections import OrderedDict
from typing import Iterable

import numpy as np

from ..predictor import Prompt
from .track_geometry import LowRes, box_iou, greedy_match
from .track_state import MOTIONS, VELOCITY_GAIN, IdAllocator, Planned, Track, TrackingConfig


class TrackBook:
    """The tracks of one stream and what happens to them outside the decoder: started by
    prompts and detector boxes, lost, ended. Not thread-safe: the worker thread alone
    calls it."""

    #: the low-res geometry of the current frame size (the tracker's; None: no frame yet)
    _geometry: LowRes | None = None

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
