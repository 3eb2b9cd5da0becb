"""Segment everything in a frame: detector boxes (MobileSAMv2), SAM's point grid, or
TinySAM's hierarchical grid, behind one interface.

All prompts of a frame go through the decoder in as few batched calls as possible
(chunked only to bound memory). Candidates are then filtered by predicted IoU and
stability score, de-duplicated by box or mask NMS and by area, and only the
survivors are upsampled to the original resolution.

Low resolution or reference post-processing
-------------------------------------------
SAM's generator upsamples EVERY candidate mask to the original size before computing
its stability score and box. By default (``exact=False``) this module does that work
on the 256x256 low-res logits instead (cropped to the part covering the image):
stability score, box (for NMS), emptiness, and TinySAM's covered map. Only the NMS
survivors are upsampled; their stability score is then recomputed on the upsampled
logits (SAM's definition, the value reported) and the threshold applied again, so
every returned mask passes the thresholds exactly as SAM defines them. What can
differ from SAM is which candidates reach NMS and which box NMS sees (a few pixels).
``exact=True`` follows SAM's order to the letter (used for the parity check against
the reference generator); see docs/readme_everything.md for measured agreement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ..geometry import IMAGE_SIZE, LOW_RES_SIZE
from ..predictor import ImageEmbedding, SamPredictor, select_best
from ..runtime.base import empty_mask_input
from ..transforms import upscale_logits
from ..variants import PROMPT_GUIDED_DECODER
from . import masks as mk
from .grid import box_prompt_arrays, grid_points, low_res_valid_size, point_prompt_arrays
from .hierarchical import CoverageMap, dense_points

STRATEGIES = ("boxes", "grid", "hierarchical")
NMS_KINDS = ("box", "mask")

#: per-strategy defaults of the thresholds left as None in EverythingConfig:
#: SAM's generator and TinySAM filter with 0.88 / 0.95; MobileSAMv2 keeps every mask
_STRATEGY_DEFAULTS = {
    "boxes": {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
    "grid": {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95},
    "hierarchical": {"pred_iou_thresh": 0.88, "stability_score_thresh": 0.95},
}


@dataclass
class EverythingConfig:
    """How to segment everything. Defaults follow MobileSAMv2 (detector, decoder
    chunk), SAM's generator (grid, filters, NMS) and TinySAM (hierarchical)."""

    #: "boxes" (MobileSAMv2: detector or given boxes), "grid" (SAM), "hierarchical" (TinySAM)
    strategy: str = "boxes"

    # --- object discovery (boxes strategy; MobileSAMv2's values) ---
    #: detector confidence threshold (a box is kept when its best class score > conf)
    detector_conf: float = 0.4
    #: detector NMS IoU threshold (class-agnostic; IoU above it suppresses)
    detector_iou: float = 0.9
    #: most boxes kept from the detector
    max_det: int = 300
    #: detector input size S (S x S letterbox); None: the ONNX model's own static size, else 1024
    imgsz: int | None = None
    #: box edges within this many network-input pixels of the image border snap onto it
    border_snap: float = 20.0

    # --- filters (None: the strategy's published default) ---
    #: drop masks whose predicted IoU is not above this (None: 0.88 grid/hierarchical, 0 boxes)
    pred_iou_thresh: float | None = None
    #: drop masks whose stability score is below this (None: 0.95 grid/hierarchical, 0 boxes)
    stability_score_thresh: float | None = None
    #: logit offset of the stability score (SAM: 1.0)
    stability_score_offset: float = 1.0
    #: logit threshold that binarises masks (SAM: 0.0)
    mask_threshold: float = 0.0
    #: duplicate removal: "box" (IoU of the masks' boxes, SAM's) or "mask" (IoU of the
    #: low-res masks; slower, better for objects sharing a box)
    nms: str = "box"
    #: NMS IoU threshold (SAM's box_nms_thresh); 1.0 or more turns NMS off. None: the
    #: model's published default: off for MobileSAMv2's prompt-guided decoder in the boxes
    #: strategy (its script keeps every mask), else SAM's 0.7
    nms_thresh: float | None = None
    #: drop masks with fewer pixels than this (original resolution); empty masks always go
    min_area: int = 0
    #: fill holes and remove islands smaller than this many pixels (SAM's
    #: min_mask_region_area), then re-run box NMS as SAM does; 0 = off
    remove_small_regions: int = 0

    # --- grids (SAM / TinySAM) ---
    #: points per side of the grid (hierarchical: of the dense grid; sparse = this // 4)
    points_per_side: int = 32
    #: points per decoder call for grid and hierarchical (SAM's points_per_batch)
    points_per_batch: int = 64
    #: TinySAM's logit threshold for the covered map of the sparse pass
    high_score_thresh: float = 8.5
    #: sparse grid = points_per_side // hierarchical_factor (TinySAM: 4)
    hierarchical_factor: int = 4
    #: grid strategies use the three multimask outputs (SAM); False: the single output
    multimask: bool = True

    # --- decoding ---
    #: boxes per decoder call in the boxes strategy (MobileSAMv2: 320); bounds memory
    decoder_chunk: int = 320
    #: reference post-processing: stability and boxes on upsampled logits for every
    #: candidate (SAM's order, slower); False: low-res first, upsample survivors only
    exact: bool = False
    #: low-res mode only: candidates whose low-res stability is below
    #: stability_score_thresh - lowres_margin are dropped before any upsampling (low-res
    #: scores run higher than full-resolution ones; every kept mask is then checked
    #: at full resolution)
    lowres_margin: float = 0.1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {self.strategy!r}")
        if self.nms not in NMS_KINDS:
            raise ValueError(f"nms must be 'box' or 'mask', not {self.nms!r}")
        for name in ("points_per_side", "points_per_batch", "decoder_chunk", "max_det", "hierarchical_factor"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.strategy == "hierarchical" and self.points_per_side // self.hierarchical_factor < 1:
            raise ValueError(
                f"hierarchical needs points_per_side >= {self.hierarchical_factor} "
                f"(sparse grid = points_per_side // {self.hierarchical_factor})"
            )

    def resolved(self, name: str, recorded: dict | None = None) -> float:
        """A threshold with None replaced by the model's recorded value for this strategy
        (``recorded``: ``model_defaults(runtime, strategy)``), else the strategy's published default."""
        value = getattr(self, name)
        if value is None and recorded and recorded.get(name) is not None:
            value = recorded[name]
        return float(_STRATEGY_DEFAULTS[self.strategy][name] if value is None else value)

    def threshold_source(self, name: str, recorded: dict | None = None) -> str:
        """Where ``resolved(name, recorded)`` comes from: "set", "model" or "published"."""
        if getattr(self, name) is not None:
            return "set"
        return "model" if recorded and recorded.get(name) is not None else "published"

    def with_(self, **changes: Any) -> "EverythingConfig":
        return replace(self, **changes)

    def to_dict(self, recorded: dict | None = None) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["pred_iou_thresh"] = self.resolved("pred_iou_thresh", recorded)
        out["stability_score_thresh"] = self.resolved("stability_score_thresh", recorded)
        return out


def model_defaults(runtime, strategy: str) -> dict | None:
    """The thresholds a model records for ``strategy`` (``runtime.everything_defaults``:
    model.json's "everything", or the toy-world model's), or None."""
    recorded = getattr(runtime, "everything_defaults", None) or {}
    return recorded.get(strategy) or None


@dataclass
class EverythingResult:
    """Masks of one frame, best first (descending predicted IoU, NMS order)."""

    masks: np.ndarray  # (K, H, W) bool, original resolution
    iou_predictions: np.ndarray  # (K,) float32
    stability_scores: np.ndarray  # (K,) float32, SAM's definition on the upsampled logits
    boxes: np.ndarray  # (K, 4) float32 x0, y0, x1, y1 of the masks, x1/y1 inclusive (last pixel)
    #: (P, 4) the prompt boxes (boxes strategy): the detector's boxes after its NMS, or the
    #: boxes given, clipped to the image, in their order (unusable ones stay, undecoded)
    prompt_boxes: np.ndarray | None
    strategy: str
    decoder_calls: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    points: np.ndarray | None = None  # (K, 2) the grid point of each mask (grid strategies)
    #: (K,) each mask's prompt: index into prompt_boxes (boxes) or into the decoded points
    prompt_index: np.ndarray | None = None
    num_prompts: int = 0  # prompts decoded (boxes or points)
    stats: dict[str, Any] = field(default_factory=dict)  # candidate counts per stage

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def areas(self) -> np.ndarray:
        return self.masks.sum(axis=(1, 2), dtype=np.int64)

    def npz_arrays(self) -> dict[str, np.ndarray]:
        """What ``--save-npz`` writes."""
        out = {
            "masks": self.masks,
            "iou_predictions": self.iou_predictions,
            "stability_scores": self.stability_scores,
            "boxes": self.boxes,
        }
        if self.prompt_boxes is not None:
            out["prompt_boxes"] = self.prompt_boxes
        if self.points is not None:
            out["points"] = self.points.astype(np.float32)
        return out

    def coco_annotations(self, image_id: int = 1) -> list[dict[str, Any]]:
        prompt_boxes = None
        if self.prompt_boxes is not None and self.prompt_index is not None:
            prompt_boxes = self.prompt_boxes[self.prompt_index]
        return mk.coco_annotations(
            self.masks,
            self.iou_predictions,
            self.stability_scores,
            image_id=image_id,
            point_coords=self.points,
            prompt_boxes=prompt_boxes,
        )


class _Candidates:
    """Masks that passed the filters so far, kept as low-res logits."""

    def __init__(self) -> None:
        self.logits: list[np.ndarray] = []
        self.iou: list[np.ndarray] = []
        self.boxes: list[np.ndarray] = []
        self.lowres_masks: list[np.ndarray] = []
        self.points: list[np.ndarray] = []
        self.prompt_index: list[np.ndarray] = []

    def __len__(self) -> int:
        return sum(len(i) for i in self.iou)

    def cat(self, name: str, empty_shape: tuple[int, ...], dtype) -> np.ndarray:
        parts = getattr(self, name)
        if not parts:
            return np.zeros(empty_shape, dtype)
        # one decoder call (the boxes strategy's usual case): no second copy of the logits
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _timer() -> float:
    return time.perf_counter()


class EverythingSegmenter:
    """Find and segment every object in a frame with one of three strategies.

    ``EverythingSegmenter(predictor, config, detector)`` then ``segment(image)``.
    The predictor's runtime decodes; its cached embedding is reused when given.
    ``boxes`` passed to ``segment`` (any detector's, original pixels) replace the
    built-in detector for that frame.
    """

    def __init__(self, predictor: SamPredictor, config: EverythingConfig | None = None, detector=None,
                 progress=None) -> None:
        self.predictor = predictor
        self.config = config or EverythingConfig()
        self.config.validate()
        self.detector = detector
        #: ``progress(stage, done, total)`` after each decoder call ("boxes", "grid",
        #: "sparse", "dense"; prompts decoded so far of the stage's total): long runs
        #: (a 32x32 grid on a CPU) report where they are
        self.progress = progress

    # --- public ---------------------------------------------------------------------
    def segment(
        self,
        image: np.ndarray | None,
        embedding: ImageEmbedding | None = None,
        boxes: np.ndarray | None = None,
        config: EverythingConfig | None = None,
    ) -> EverythingResult:
        """HxWx3 uint8 RGB (and optionally its embedding and prompt boxes) -> masks.

        ``boxes`` (K, 4) x0, y0, x1, y1 in original pixels: decode these instead of
        running the detector (boxes strategy). ``config`` overrides the segmenter's
        configuration for this call.
        """
        cfg = config or self.config
        cfg.validate()
        t_start = _timer()
        timings: dict[str, float] = {}
        if image is not None:
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")
        if embedding is None:
            if image is None:
                raise ValueError("segment() needs an image or its embedding")
            t0 = _timer()
            embedding = self.predictor.set_image(image)
            timings["encoder"] = (_timer() - t0) * 1e3
        elif image is not None and tuple(image.shape[:2]) != tuple(embedding.original_size):
            raise ValueError(
                f"the embedding is of a {embedding.original_size[1]}x{embedding.original_size[0]} image, "
                f"this image is {image.shape[1]}x{image.shape[0]}"
            )

        run = _Run(self.predictor, embedding, cfg, timings, self.progress)
        if cfg.strategy == "boxes":
            prompt_boxes = self._prompt_boxes(image, embedding, boxes, cfg, timings)
            run.run_boxes(prompt_boxes)
        elif cfg.strategy == "grid":
            prompt_boxes = None
            run.run_grid()
        else:
            prompt_boxes = None
            run.run_hierarchical()
        result = run.finish(prompt_boxes)
        timings["total"] = (_timer() - t_start) * 1e3
        result.timings_ms = {k: round(v, 3) for k, v in timings.items()}
        return result

    # --- internals --------------------------------------------------------------------
    def _prompt_boxes(self, image, embedding, boxes, cfg, timings) -> np.ndarray:
        size = tuple(embedding.original_size) if embedding is not None else tuple(image.shape[:2])
        if boxes is not None:
            return sanitize_boxes(boxes, size)[0]
        if self.detector is None:
            raise ValueError(
                "the boxes strategy needs boxes: give a detector (ObjectDiscovery, --detector ONNX) "
                "or pass boxes for the frame (--boxes-json, ~/prompt/boxes)"
            )
        if image is None:
            raise ValueError("the detector needs the image, not only its embedding")
        t0 = _timer()
        found = self.detector.detect(image)
        timings["detector"] = (_timer() - t0) * 1e3
        return sanitize_boxes(found.boxes, size)[0]


def sanitize_boxes(boxes: np.ndarray, original_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(K, 4) boxes from anywhere -> (boxes clipped to the image, indices of the usable
    ones). The boxes keep their order and count, so indices into them stay valid for
    the caller (class ids of a detector topic); non-finite boxes and boxes empty after
    clipping are not usable."""
    arr = np.asarray(boxes, np.float32)
    if arr.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        if arr.size % 4:
            raise ValueError(f"boxes must be (K, 4) x0, y0, x1, y1, got shape {np.shape(boxes)}")
        arr = arr.reshape(-1, 4)
    h, w = original_size
    arr = arr.copy()
    arr[:, [0, 2]] = np.clip(arr[:, [0, 2]], 0, w)
    arr[:, [1, 3]] = np.clip(arr[:, [1, 3]], 0, h)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(arr).all(axis=1) & (arr[:, 2] > arr[:, 0]) & (arr[:, 3] > arr[:, 1])
    return arr, np.flatnonzero(usable)


def published_nms_thresh(cfg: EverythingConfig, predictor: SamPredictor) -> float:
    """NMS as the model's authors run everything: MobileSAMv2 (boxes from the object-aware
    model through the prompt-guided decoder) keeps every mask; SAM and TinySAM use 0.7."""
    decoder = getattr(predictor.runtime, "prompt_decoder", None) or {}
    if cfg.strategy == "boxes" and decoder.get("kind") == PROMPT_GUIDED_DECODER:
        return 1.0
    return 0.7


class _Run:
    """One segment() call: decode, filter, NMS, upsample survivors."""

    def __init__(self, predictor: SamPredictor, emb: ImageEmbedding, cfg: EverythingConfig, timings: dict,
                 progress=None) -> None:
        self.predictor = predictor
        self.progress = progress or (lambda stage, done, total: None)
        self.runtime = predictor.runtime
        self.emb = emb
        self.cfg = cfg
        self.timings = timings
        for key in ("decoder", "postprocess", "upsample"):
            timings.setdefault(key, 0.0)
        self.decoder_calls = 0
        self.num_prompts = 0
        self.nms_thresh = published_nms_thresh(cfg, predictor) if cfg.nms_thresh is None else float(cfg.nms_thresh)
        recorded = model_defaults(self.runtime, cfg.strategy)
        self.iou_thresh = cfg.resolved("pred_iou_thresh", recorded)
        self.stab_thresh = cfg.resolved("stability_score_thresh", recorded)
        self.lr_h, self.lr_w = low_res_valid_size(emb.input_size)
        self.cand = _Candidates()
        self.stats = {"decoded_masks": 0, "after_iou": 0, "after_stability": 0, "upsampled": 0}
        self._no_mask, self._no_mask_flag = empty_mask_input()
        self.coverage: CoverageMap | None = None
        self._scratch = np.empty(tuple(emb.original_size), np.float32)
        self._scratch_full = np.empty((IMAGE_SIZE, IMAGE_SIZE), np.float32)

    # --- decoding ---------------------------------------------------------------------
    def decode(self, coords: np.ndarray, labels: np.ndarray, multimask: bool) -> tuple[np.ndarray, np.ndarray]:
        """One decoder call: coords (B, N, 2) model frame, labels (B, N) ->
        iou (B, M), low-res logits (B, M, 256, 256). ``multimask`` False: one mask per
        prompt as the model's authors pick it (MobileSAM / MobileSAMv2: token 0;
        TinySAM: the best-scored of tokens 1..3), so M = 1."""
        t0 = _timer()
        out = self.runtime.decode(self.emb.embedding, coords, labels, self._no_mask, self._no_mask_flag)
        self.timings["decoder"] += (_timer() - t0) * 1e3
        self.decoder_calls += 1
        multimask = multimask and self.runtime.num_mask_outputs > 1  # a single-mask export has token 0 only
        tokens = self.predictor.tokens(multimask)
        iou, logits = out.iou_predictions[:, tokens], out.low_res_masks[:, tokens]
        if not multimask:
            iou, logits = select_best(iou, logits, keepdims=True)
        return iou, logits

    # --- strategies -------------------------------------------------------------------
    def run_boxes(self, boxes: np.ndarray) -> None:
        """Decode the usable boxes (clipped, non-empty) in chunks; masks keep the index
        of their box in ``boxes``."""
        _, usable = sanitize_boxes(boxes, self.emb.original_size)
        self.num_prompts = len(usable)
        self.stats["skipped_boxes"] = len(boxes) - len(usable)
        chunk = self.cfg.decoder_chunk
        for start in range(0, len(usable), chunk):
            index = usable[start : start + chunk]
            coords, labels = box_prompt_arrays(boxes[index], self.emb.original_size, self.emb.input_size)
            iou, logits = self.decode(coords, labels, multimask=False)
            self.add(logits[:, 0], iou[:, 0], None, index)
            self.progress("boxes", min(start + chunk, len(usable)), len(usable))

    def _run_points(self, points: np.ndarray, index_offset: int = 0, stage: str = "grid") -> None:
        batch = self.cfg.points_per_batch
        for start in range(0, len(points), batch):
            part = points[start : start + batch]
            coords, labels = point_prompt_arrays(part, self.emb.original_size, self.emb.input_size)
            iou, logits = self.decode(coords, labels, multimask=self.cfg.multimask)
            m = iou.shape[1]
            index = np.repeat(np.arange(index_offset + start, index_offset + start + len(part)), m)
            self.add(
                logits.reshape(-1, LOW_RES_SIZE, LOW_RES_SIZE), iou.reshape(-1), np.repeat(part, m, axis=0), index
            )
            self.progress(stage, start + len(part), len(points))
        self.num_prompts += len(points)

    def run_grid(self) -> None:
        self._run_points(grid_points(self.cfg.points_per_side, self.emb.original_size))

    def run_hierarchical(self) -> None:
        cfg = self.cfg
        h, w = self.emb.original_size
        if cfg.exact:
            self.coverage = CoverageMap((h, w))
        else:
            h_in, w_in = self.emb.input_size
            scale = LOW_RES_SIZE / 1024
            self.coverage = CoverageMap((self.lr_h, self.lr_w), (w_in / w * scale, h_in / h * scale))
        sparse = grid_points(cfg.points_per_side // cfg.hierarchical_factor, (h, w))
        self._run_points(sparse, stage="sparse")
        coverage, self.coverage = self.coverage, None
        dense = dense_points(sparse, (h, w), cfg.points_per_side, coverage)
        self.stats["sparse_points"] = len(sparse)
        self.stats["dense_points"] = len(dense)
        self.stats["covered_fraction"] = round(coverage.fraction, 4)
        self._run_points(dense, index_offset=len(sparse), stage="dense")

    # --- filtering ----------------------------------------------------------------------
    def _upscale(self, logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return upscale_logits(logits, self.emb.original_size, self.emb.input_size, out=out, scratch=self._scratch_full)

    def _verify(self, logits: np.ndarray) -> tuple[float, np.ndarray, int, np.ndarray, np.ndarray]:
        """Upsample one candidate: (stability, inclusive box, area, mask, upsampled logits).
        The logits array is scratch space, overwritten by the next call; the mask is new."""
        t0 = _timer()
        full = self._upscale(logits, out=self._scratch)
        mask = full > self.cfg.mask_threshold
        stability = float(mk.stability_scores(full[None], self.cfg.mask_threshold, self.cfg.stability_score_offset)[0])
        box = mk.masks_to_boxes(mask[None])[0]
        area = int(np.count_nonzero(mask))
        self.stats["upsampled"] += 1
        self.timings["upsample"] += (_timer() - t0) * 1e3
        return stability, box, area, mask, full

    def _passes(self, stability: float, area: int) -> bool:
        if area < max(1, self.cfg.min_area):
            return False
        return self.stab_thresh <= 0.0 or stability >= self.stab_thresh

    def add(self, logits: np.ndarray, iou: np.ndarray, points: np.ndarray | None, index: np.ndarray) -> None:
        """Filter a batch of candidates (N, 256, 256) and keep the ones that pass."""
        t0, up0 = _timer(), self.timings["upsample"]
        cfg = self.cfg
        self.stats["decoded_masks"] += len(iou)
        keep = np.ones(len(iou), bool)
        if self.iou_thresh > 0.0:
            keep &= iou > self.iou_thresh
        self.stats["after_iou"] += int(keep.sum())
        idx = np.flatnonzero(keep)
        logits, iou, index = logits[idx], iou[idx], index[idx]
        points = None if points is None else points[idx]
        n = len(logits)
        lr = logits[:, : self.lr_h, : self.lr_w]
        if cfg.exact:
            # SAM's order: every candidate upsampled, stability and box at full resolution
            stability = np.empty(n, np.float32)
            boxes = np.empty((n, 4), np.float32)
            ok = np.empty(n, bool)
            for i in range(n):
                stab, box, area, _, full = self._verify(logits[i])
                stability[i], boxes[i], ok[i] = stab, box, self._passes(stab, area)
                if self.coverage is not None and ok[i]:
                    self.coverage.add(full > cfg.high_score_thresh)
        else:
            # low-res first: a generous pre-filter, exact checks later for NMS candidates
            stability = mk.stability_scores(lr, cfg.mask_threshold, cfg.stability_score_offset)
            lr_masks = lr > cfg.mask_threshold
            boxes = self._low_res_boxes(mk.masks_to_boxes(lr_masks))
            ok = lr_masks.any(axis=(1, 2))
            if self.stab_thresh > 0.0:
                ok &= stability >= self.stab_thresh - cfg.lowres_margin
            if self.coverage is not None:
                # TinySAM's covered map takes only masks that truly pass the filters
                for i in np.flatnonzero(ok):
                    stab, box, area, _, _ = self._verify(logits[i])
                    stability[i], boxes[i] = stab, box
                    ok[i] = self._passes(stab, area)
                    if ok[i]:
                        self.coverage.add(lr[i] > cfg.high_score_thresh)
        self.stats["after_stability"] += int(ok.sum())
        idx = np.flatnonzero(ok)
        c = self.cand
        c.logits.append(np.ascontiguousarray(logits[idx]))
        c.iou.append(iou[idx].astype(np.float32))
        c.boxes.append(boxes[idx].astype(np.float32))
        c.prompt_index.append(index[idx])
        if points is not None:
            c.points.append(points[idx])
        if cfg.nms == "mask":
            c.lowres_masks.append(lr[idx] > cfg.mask_threshold)
        self.timings["postprocess"] += (_timer() - t0) * 1e3 - (self.timings["upsample"] - up0)

    def _low_res_boxes(self, boxes_lr: np.ndarray) -> np.ndarray:
        """Inclusive boxes in low-res pixels -> approximate inclusive boxes in original pixels."""
        h, w = self.emb.original_size
        h_in, w_in = self.emb.input_size
        step = 1024 / LOW_RES_SIZE
        sx, sy = w / w_in * step, h / h_in * step
        out = np.empty_like(boxes_lr)
        out[:, 0] = boxes_lr[:, 0] * sx
        out[:, 1] = boxes_lr[:, 1] * sy
        out[:, 2] = np.minimum((boxes_lr[:, 2] + 1) * sx - 1, w - 1)
        out[:, 3] = np.minimum((boxes_lr[:, 3] + 1) * sy - 1, h - 1)
        return out

    # --- NMS and output -----------------------------------------------------------------
    def finish(self, prompt_boxes: np.ndarray | None) -> EverythingResult:
        """Greedy NMS by descending predicted IoU. A candidate is upsampled when NMS
        reaches it: it must then pass the stability and area filters exactly, or it is dropped without suppressing
        anything. Kept masks suppress the rest by their exact box (or low-res mask)."""
        cfg = self.cfg
        c = self.cand
        h, w = self.emb.original_size
        t0, up0 = _timer(), self.timings["upsample"]
        iou = c.cat("iou", (0,), np.float32)
        boxes = c.cat("boxes", (0, 4), np.float32)
        prompt_index = c.cat("prompt_index", (0,), np.int64)
        points = c.cat("points", (0, 2), np.float64) if c.points else None
        logits = c.cat("logits", (0, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
        n = len(iou)
        use_nms = self.nms_thresh < 1.0
        if cfg.nms == "mask" and use_nms:
            lr_masks = c.cat("lowres_masks", (0, self.lr_h, self.lr_w), bool)
            lr_boxes = mk.masks_to_boxes(lr_masks).astype(np.int64)
            lr_areas = lr_masks.sum(axis=(1, 2))

        order = np.argsort(-iou, kind="stable")
        alive = np.ones(n, bool)
        kept: list[int] = []
        out_masks: list[np.ndarray] = []
        out_stab: list[float] = []
        rejected = 0
        for pos, i in enumerate(order):
            if not alive[i]:
                continue
            alive[i] = False
            stab, box, area, mask, _ = self._verify(logits[i])
            if not self._passes(stab, area):  # the low-res pre-filter is generous
                rejected += 1
                continue
            kept.append(i)
            out_masks.append(mask)
            out_stab.append(stab)
            if not use_nms:
                continue
            rest = order[pos + 1 :]
            rest = rest[alive[rest]]
            if len(rest) == 0:
                continue
            if cfg.nms == "mask":
                # IoU <= smaller area / larger area: only comparable sizes can be suppressed
                small = np.minimum(lr_areas[rest], lr_areas[i])
                large = np.maximum(np.maximum(lr_areas[rest], lr_areas[i]), 1)
                rest = rest[small / large > self.nms_thresh]
                x0, y0, x1, y1 = lr_boxes[i]
                sub = lr_masks[rest, y0 : y1 + 1, x0 : x1 + 1]
                inter = np.count_nonzero(sub & lr_masks[i, y0 : y1 + 1, x0 : x1 + 1], axis=(1, 2))
                union = lr_areas[i] + lr_areas[rest] - inter
                ious = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
            else:
                ious = mk.box_iou(box[None], boxes[rest])[0]
            alive[rest[ious > self.nms_thresh]] = False
        self.stats["after_nms"] = len(kept)
        self.stats["rejected_at_full_res"] = rejected

        keep = np.asarray(kept, np.int64)
        out_m = np.stack(out_masks) if out_masks else np.zeros((0, h, w), bool)
        out_s = np.asarray(out_stab, np.float32)
        if cfg.remove_small_regions > 0 and len(keep):
            out_m, order2 = _remove_small_regions(out_m, iou[keep], cfg.remove_small_regions, self.nms_thresh)
            out_s, keep = out_s[order2], keep[order2]
            ok = out_m.sum(axis=(1, 2)) >= max(1, cfg.min_area)
            out_m, out_s, keep = out_m[ok], out_s[ok], keep[ok]
        out_boxes = mk.masks_to_boxes(out_m)
        self.stats["returned"] = len(keep)
        self.timings["postprocess"] += (_timer() - t0) * 1e3 - (self.timings["upsample"] - up0)
        return EverythingResult(
            masks=out_m,
            iou_predictions=iou[keep].astype(np.float32),
            stability_scores=out_s,
            boxes=out_boxes,
            prompt_boxes=None if prompt_boxes is None else np.asarray(prompt_boxes, np.float32),
            strategy=cfg.strategy,
            decoder_calls=self.decoder_calls,
            points=None if points is None else points[keep],
            prompt_index=prompt_index[keep],
            num_prompts=self.num_prompts,
            stats=dict(self.stats),
        )


def _remove_small_regions(
    masks: np.ndarray, scores: np.ndarray, area: int, nms_thresh: float
) -> tuple[np.ndarray, np.ndarray]:
    """SAM's ``postprocess_small_regions``: clean every mask, then box NMS preferring
    masks that did not change (ties by predicted IoU). Returns (masks, kept order)."""
    cleaned = np.empty_like(masks)
    unchanged = np.empty(len(masks), np.float64)
    for i, mask in enumerate(masks):
        cleaned[i], changed = mk.clean_mask(mask, area)
        unchanged[i] = 0.0 if changed else 1.0
    boxes = mk.masks_to_boxes(cleaned)
    keep = mk.box_nms(boxes, unchanged * 2.0 + np.asarray(scores, np.float64), nms_thresh)
    # keep the NMS survivors in their original (score) order
    keep = np.sort(keep)
    return cleaned[keep], keep
