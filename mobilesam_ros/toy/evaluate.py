"""Measure a model on held-out toy-world scenes, through the real predictor.

    python -m mobilesam_ros.toy.evaluate                       # the shipped toy-world model
    python -m mobilesam_ros.toy.evaluate --checkpoint toy.pt --scenes 100 --json eval.json
    python -m mobilesam_ros.toy.evaluate --model DIR --backend onnxruntime

Scenes are drawn from seeds never used in training: the demo's style (solid shapes
on colour gradients with mild noise, 50-180 px at 640x480) and, to report how the
model generalises, a striped background never seen in training. Per object: a tight
box (the model's default output for a box) and one interior point (the best-scored
of the three multimask outputs); mask IoU at full resolution, and how well the
IoU head predicts the true IoU (Pearson r over every output it scored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..predictor import SamPredictor
from .scenes import ALL_STYLES, Scene, make_scene

#: evaluation scenes start here (training uses 10_000 + i; the running held-out check 1_000_000 + i)
EVAL_SEED0 = 3_000_000


def eval_scene(index: int, style: str = "gradient") -> Scene:
    offset = {"gradient": 0, "blotches": 100_000, "stripes": 200_000, "texture": 300_000}[style]
    return make_scene(EVAL_SEED0 + offset + index, 640, 480, style)


def interior_point(mask: np.ndarray) -> np.ndarray:
    """The mask pixel farthest from its edge (where a person would click)."""
    dist = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return np.array([[x + 0.5, y + 0.5]], np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@dataclass
class Scores:
    box: list[float] = field(default_factory=list)
    point: list[float] = field(default_factory=list)
    predicted: list[float] = field(default_factory=list)  # IoU head, every output scored
    actual: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        r = float(np.corrcoef(self.predicted, self.actual)[0, 1]) if len(self.actual) > 2 else float("nan")
        return {"box_iou": float(np.mean(self.box)), "point_iou": float(np.mean(self.point)),
                "iou_head_pearson_r": r, "objects": len(self.box)}


def evaluate(predictor: SamPredictor, scenes: list[Scene]) -> Scores:
    scores = Scores()
    for scene in scenes:
        predictor.set_image(scene.image)
        boxes = scene.boxes()
        result = predictor.predict_boxes(boxes)
        for k, truth in enumerate(scene.masks):
            # predict_boxes gives (B, M) masks: M is 1 for MobileSAM, 3 for TinySAM (best kept)
            best = int(np.argmax(result.iou_predictions[k]))
            scores.box.append(iou(result.masks[k, best], truth))
            point = predictor.predict(point_coords=interior_point(truth), point_labels=[1], multimask_output=True)
            for m in range(len(point.masks)):
                scores.predicted.append(float(point.iou_predictions[m]))
                scores.actual.append(iou(point.masks[m], truth))
            scores.point.append(iou(point.masks[int(np.argmax(point.iou_predictions))], truth))
            scores.predicted.append(float(result.iou_predictions[k, best]))
            scores.actual.append(scores.box[-1])
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobilesam_ros.toy.evaluate", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a checkpoint .pt (default: the shipped toy-world model)")
    source.add_argument("--model", help="a directory written by 'mobilesam-ros export'")
    parser.add_argument("--trained", help="trained tensors (.npz) to assemble instead of the shipped ones "
                                          "(a candidate: toy/finetune's WORK/toy_world.npz)")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnxruntime"))
    parser.add_argument("--scenes", type=int, default=60, help="scenes per background style (default 60)")
    parser.add_argument("--styles", default="gradient,stripes", help="background styles (default gradient,stripes)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.scenes < 1:
        parser.error("--scenes must be >= 1")
    styles = [s.strip() for s in args.styles.split(",") if s.strip()]
    for style in styles:
        if style not in ALL_STYLES:
            parser.error(f"unknown style {style!r}: one of {', '.join(ALL_STYLES)}")

    from ..runtime import create_runtime

    if args.model:
        runtime = create_runtime(args.model, backend=args.backend, num_threads=args.threads)
        name = args.model
    else:
        import tempfile
        from pathlib import Path

        from .model import write_toy_checkpoint

        if args.checkpoint:
            path, name = args.checkpoint, args.checkpoint
        else:
            path = Path(tempfile.mkdtemp()) / "toy_world.pt"
            write_toy_checkpoint(path, args.trained)
            name = f"toy-world model ({args.trained or 'shipped tensors'})"
        runtime = create_runtime(str(path), backend="torch", num_threads=args.threads)
    predictor = SamPredictor(runtime)
    report = {"model": name, "scenes_per_style": args.scenes}
    for style in styles:
        start = time.time()
        scenes = [eval_scene(i, style) for i in range(args.scenes)]
        summary = evaluate(predictor, scenes).summary()
        summary["seconds"] = round(time.time() - start, 1)
        report[style] = summary
        print(f"{style:9s} {summary['objects']:4d} objects: box IoU {summary['box_iou']:.3f}  "
              f"point IoU {summary['point_iou']:.3f}  IoU-head r {summary['iou_head_pearson_r']:.2f}  "
              f"({summary['seconds']:.0f} s)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
