"""Measure segment-everything thresholds for a model on toy-world scenes with known truth.

    python -m mobilesam_ros.toy.calibrate_everything                      # the shipped toy-world model
    python -m mobilesam_ros.toy.calibrate_everything --scenes 12 --points-per-side 16 --json cal.json

Every grid candidate (three masks per point, no filter, no NMS) of ``--scenes`` scenes
(the demo's style, seeds ``CALIBRATION_SEED0 + i``: never used in training or in the
toy evaluation) is kept with its predicted IoU, stability score, box and IoU with each
true object. Then every pair of thresholds on a small grid is applied as the segmenter
applies them (predicted IoU above, stability at least, box NMS 0.7 by predicted IoU),
and the pairs are ranked by recall (true objects covered by a kept mask at IoU >= 0.5)
plus precision (kept masks that lie on a true object at IoU >= 0.5). The chosen pair
goes into ``weights.TOY_EVERYTHING_THRESHOLDS`` by hand; check it on held-out scenes
(``--seed0``) with the segmenter itself (``--check``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .scenes import make_scene

CALIBRATION_SEED0 = 4_000_000
HELD_OUT_SEED0 = 5_000_000
IOU_GRID = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88)
STABILITY_GRID = (0.0, 0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.95)


def _box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Inclusive boxes (last pixel), as the segmenter's box NMS."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1, y1 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0 + 1, 0, None) * np.clip(y1 - y0 + 1, 0, None)

    def area(b):
        return (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)

    return inter / (area(box) + area(boxes) - inter)


def truth_iou(masks: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(K, H, W) and (N, H, W) bool -> (K, N) mask IoU."""
    a, b = masks.reshape(len(masks), -1).astype(np.float32), truth.reshape(len(truth), -1).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    return inter / np.maximum(union, 1.0)


def score(masks: np.ndarray, truth: np.ndarray, match: float = 0.5) -> dict:
    """Recall (true objects covered at IoU >= match), precision (masks on an object), mean best IoU."""
    ious = truth_iou(masks, truth) if len(masks) else np.zeros((0, len(truth)))
    best = ious.max(0) if len(masks) else np.zeros(len(truth))
    return {"objects": len(truth), "masks": len(masks), "found": int((best >= match).sum()),
            "on_objects": int((ious.max(1) >= match).sum()) if len(masks) else 0,
            "best_iou": best.tolist()}


def apply(rows: list[dict], iou_thresh: float, stab_thresh: float, nms: float = 0.7) -> dict:
    """What the segmenter keeps at these thresholds, scored against the truth."""
    found = objects = kept_total = on_objects = 0
    best: list[float] = []
    for r in rows:
        iou, stab, boxes = np.asarray(r["iou"]), np.asarray(r["stab"]), np.asarray(r["box"]).reshape(-1, 4)
        gt = np.asarray(r["gt_iou"]).reshape(len(iou), r["objects"])
        ok = np.flatnonzero((iou > iou_thresh) & (stab >= stab_thresh) & (np.asarray(r["area"]) > 0))
        order = ok[np.argsort(-iou[ok], kind="stable")]
        alive = np.ones(len(iou), bool)
        kept = []
        for i in order:
            if not alive[i]:
                continue
            kept.append(i)
            alive[i] = False
            rest = order[alive[order]]
            if len(rest):
                alive[rest[_box_iou(boxes[i], boxes[rest]) > nms]] = False
        objects += r["objects"]
        kept_total += len(kept)
        if kept:
            g = gt[np.asarray(kept)]
            on_objects += int((g.max(1) >= 0.5).sum())
            found += int((g.max(0) >= 0.5).sum())
            best += g.max(0).tolist()
        else:
            best += [0.0] * r["objects"]
    return {"pred_iou_thresh": iou_thresh, "stability_score_thresh": stab_thresh, "recall": found / max(1, objects),
            "precision": on_objects / max(1, kept_total), "masks": kept_total, "objects": objects,
            "mean_best_iou": float(np.mean(best)) if best else 0.0}


def collect(predictor, seeds: list[int], points_per_side: int, log=print) -> list[dict]:
    """Every grid candidate of each scene, unfiltered, with its IoU against the truth."""
    from ..everything import EverythingConfig, EverythingSegmenter

    cfg = EverythingConfig(strategy="grid", pred_iou_thresh=0.0, stability_score_thresh=0.0, nms_thresh=1.0,
                           points_per_side=points_per_side)
    segmenter = EverythingSegmenter(predictor, cfg)
    rows = []
    for seed in seeds:
        scene = make_scene(seed, 640, 480, "gradient")
        t = time.perf_counter()
        result = segmenter.segment(scene.image)
        rows.append({"seed": seed, "objects": len(scene.masks), "iou": result.iou_predictions.tolist(),
                     "stab": result.stability_scores.tolist(), "box": result.boxes.tolist(),
                     "area": result.areas.tolist(), "gt_iou": truth_iou(result.masks, scene.masks).tolist()})
        log(f"scene {seed}: {len(scene.masks)} objects, {len(result)} candidates ({time.perf_counter() - t:.1f} s)")
    return rows


def check(predictor, seeds: list[int], strategy: str, points_per_side: int, **thresholds) -> dict:
    """The segmenter itself (thresholds left unset: the model's recorded ones) on held-out scenes."""
    from ..everything import EverythingConfig, EverythingSegmenter

    segmenter = EverythingSegmenter(predictor, EverythingConfig(strategy=strategy, points_per_side=points_per_side,
                                                                **thresholds))
    totals = {"objects": 0, "masks": 0, "found": 0, "on_objects": 0, "best_iou": []}
    for seed in seeds:
        scene = make_scene(seed, 640, 480, "gradient")
        s = score(segmenter.segment(scene.image).masks, scene.masks)
        for key in totals:
            totals[key] += s[key]
    totals["recall"] = totals["found"] / max(1, totals["objects"])
    totals["precision"] = totals["on_objects"] / max(1, totals["masks"])
    totals["mean_best_iou"] = float(np.mean(totals.pop("best_iou")))
    return totals


def main(argv: list[str] | None = None) -> int:
    from ..predictor import SamPredictor
    from ..runtime import create_runtime
    from .model import write_toy_checkpoint

    parser = argparse.ArgumentParser(prog="python -m mobilesam_ros.toy.calibrate_everything", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint or exported model (default: the shipped toy-world model)")
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--seed0", type=int, default=CALIBRATION_SEED0)
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--check", action="store_true",
                        help="run the segmenter (grid and hierarchical, the model's recorded thresholds) instead")
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(write_toy_checkpoint(Path(tmp) / "toy_world.pt"))
        predictor = SamPredictor(create_runtime(model, num_threads=args.threads))
        seeds = [args.seed0 + i for i in range(args.scenes)]
        if args.check:
            out = {s: check(predictor, seeds, s, args.points_per_side) for s in ("grid", "hierarchical")}
            print(json.dumps(out, indent=2))
        else:
            rows = collect(predictor, seeds, args.points_per_side, log=lambda m: print(m, file=sys.stderr))
            ranked = sorted((apply(rows, i, s) for i in IOU_GRID for s in STABILITY_GRID),
                            key=lambda d: -(d["recall"] + d["precision"]))
            for d in ranked[:15]:
                print(json.dumps(d))
            out = {"candidates": rows, "ranked": ranked}
    if args.json:
        Path(args.json).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
