"""Segment-everything benchmark: decoder time and total time of the three strategies
on the same image and the same embedding.

``run_everything_bench(args, runtime) -> dict`` is what ``mobilesam-ros bench
--everything`` calls; ``python -m mobilesam_ros.bench.everything`` runs it alone.
Measured per strategy: decoder time (inside the runtime's decode calls), total
time of ``segment()`` with the embedding given (decoding, filtering, NMS,
upsampling; no encoder), decoder calls, prompts, masks returned. MobileSAMv2
claims at least 16x less decoder time for its boxes than for SAM's 32x32 grid.

Without a detector, the boxes strategy gets N synthetic boxes: deterministic
(seed 0), log-uniform sizes from 5 % to 60 % of the image side, aspect 1:2 to 2:1,
inside the image. The output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..everything.segmenter import EverythingConfig, EverythingSegmenter
from .model import load_average

DEFAULT_STRATEGIES = ("boxes", "grid", "hierarchical")


def add_everything_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the everything benchmark (all prefixed --everything-)."""
    g = parser.add_argument_group("segment-everything benchmark (--everything)")
    g.add_argument("--everything-image", metavar="IMAGE",
                   help="image to segment (default: --image if the command has one, else a synthetic 1280x720 scene)")
    g.add_argument("--everything-boxes", type=int, default=100, metavar="N",
                   help="synthetic boxes for the boxes strategy when no detector is given (default 100)")
    g.add_argument("--everything-detector", metavar="ONNX", help="use this detector's boxes instead of synthetic ones")
    g.add_argument("--everything-grid", type=int, default=32, metavar="N", help="points per side (default 32)")
    g.add_argument("--everything-strategies", default=",".join(DEFAULT_STRATEGIES),
                   help="comma-separated subset of boxes,grid,hierarchical (default all)")
    g.add_argument("--everything-repeat", type=int, default=1, metavar="R",
                   help="runs per strategy; the fastest is reported (default 1)")
    g.add_argument("--everything-agreement", action="store_true",
                   help="also run each strategy with SAM's exact post-processing on the same decoder outputs and "
                        "report how the low-res-first results agree with it")
    g.add_argument("--everything-pred-iou-thresh", type=float, default=None,
                   help="override the predicted-IoU filter (default: the strategy's)")
    g.add_argument("--everything-stability-thresh", type=float, default=None,
                   help="override the stability filter (default: the strategy's)")
    g.add_argument("--everything-json", metavar="OUT.json", help="write the results here")


def synthetic_boxes(n: int, original_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """N plausible boxes (x0, y0, x1, y1) inside an image of ``original_size`` (h, w)."""
    h, w = original_size
    rng = np.random.default_rng(seed)
    side = np.exp(rng.uniform(np.log(0.05), np.log(0.6), n)) * min(h, w)
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    bw = np.minimum(side * np.sqrt(aspect), w)
    bh = np.minimum(side / np.sqrt(aspect), h)
    x0 = rng.uniform(0, 1, n) * (w - bw)
    y0 = rng.uniform(0, 1, n) * (h - bh)
    return np.stack([x0, y0, x0 + bw, y0 + bh], axis=1).astype(np.float32)


def synthetic_scene(height: int = 720, width: int = 1280, seed: int = 0) -> np.ndarray:
    """A deterministic RGB test scene: gradient background with filled shapes."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 200 // width, yy * 200 // height, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    for _ in range(24):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(20, min(height, width) // 5))
        if rng.random() < 0.5:
            cv2.circle(image, (cx, cy), r, colour, -1)
        else:
            cv2.rectangle(image, (cx - r, cy - r // 2), (cx + r, cy + r // 2), colour, -1)
    return image


def _arg(args: Any, name: str, default: Any = None) -> Any:
    value = getattr(args, name, None)
    return default if value is None else value


def _load_image(path: str | None) -> tuple[np.ndarray, str]:
    if not path:
        return synthetic_scene(), "synthetic 1280x720 scene (seed 0)"
    from ..transforms import read_rgb

    return read_rgb(path), str(path)


def _record(result, seconds: float) -> dict[str, Any]:
    t = result.timings_ms
    return {
        "decoder_ms": round(t.get("decoder", 0.0), 1),
        "total_ms": round(seconds * 1e3, 1),
        "postprocess_ms": round(t.get("postprocess", 0.0), 1),
        "upsample_ms": round(t.get("upsample", 0.0), 1),
        "decoder_calls": result.decoder_calls,
        "prompts": result.num_prompts,
        "masks": len(result),
        "stats": result.stats,
    }


def run_everything_bench(args: Any, runtime) -> dict[str, Any]:
    """Time boxes, grid and hierarchical on one image and one embedding; returns a dict
    (and writes it to ``--everything-json`` when given). Progress goes to stderr."""
    from ..predictor import SamPredictor

    image_path = _arg(args, "everything_image") or _arg(args, "image")
    image, image_name = _load_image(image_path)
    n_boxes = int(_arg(args, "everything_boxes", 100))
    grid = int(_arg(args, "everything_grid", 32))
    repeat = max(1, int(_arg(args, "everything_repeat", 1)))
    listed = str(_arg(args, "everything_strategies", ",".join(DEFAULT_STRATEGIES)))
    strategies = [s.strip() for s in listed.split(",") if s.strip()]
    detector_path = _arg(args, "everything_detector")
    agreement = bool(_arg(args, "everything_agreement", False))
    overrides = {
        "pred_iou_thresh": _arg(args, "everything_pred_iou_thresh"),
        "stability_score_thresh": _arg(args, "everything_stability_thresh"),
    }

    load_start = load_average()
    predictor = SamPredictor(runtime)
    t0 = time.perf_counter()
    embedding = predictor.set_image(image)
    encoder_ms = (time.perf_counter() - t0) * 1e3
    h, w = image.shape[:2]
    out: dict[str, Any] = {
        "benchmark": "everything",
        "runtime": runtime.describe(),
        "image": image_name,
        "image_size": [h, w],
        "encoder_ms": round(encoder_ms, 1),
        "note": "decoder_ms: time inside the runtime's decode calls; total_ms: segment() with the embedding "
        "given (decoding, filters, NMS, upsampling; no encoder)",
        "results": {},
    }
    boxes = None
    if "boxes" in strategies:
        if detector_path:
            from ..everything.discovery import ObjectDiscovery

            detector = ObjectDiscovery(detector_path)
            t0 = time.perf_counter()
            boxes = detector.detect(image).boxes
            out["detector_ms"] = round((time.perf_counter() - t0) * 1e3, 1)
            out["boxes_source"] = f"detector {detector.describe()}: {len(boxes)} boxes"
        else:
            boxes = synthetic_boxes(n_boxes, (h, w))
            out["boxes_source"] = f"synthetic: {n_boxes} deterministic boxes (seed 0), no detector"
    for strategy in strategies:
        config = EverythingConfig(strategy=strategy, points_per_side=grid, **overrides)
        segmenter = EverythingSegmenter(predictor, config)
        best = None
        for _ in range(repeat):
            t0 = time.perf_counter()
            result = segmenter.segment(image, embedding=embedding, boxes=boxes if strategy == "boxes" else None)
            seconds = time.perf_counter() - t0
            if best is None or seconds < best[1]:
                best = (result, seconds)
        name = strategy if strategy != "grid" else f"grid{grid}x{grid}"
        if strategy == "hierarchical":
            name = f"hierarchical{grid}"
        rec = _record(*best)
        out["results"][name] = rec
        print(
            f"everything {name}: decoder {rec['decoder_ms']:.0f} ms in {rec['decoder_calls']} call(s), total "
            f"{rec['total_ms']:.0f} ms, {rec['prompts']} prompts, {rec['masks']} masks",
            file=sys.stderr,
        )
        if agreement:
            rec["agreement"] = measure_agreement(
                runtime, embedding, config, boxes if strategy == "boxes" else None, image
            )
            print(f"everything {name} low-res first vs exact: {rec['agreement']}", file=sys.stderr)
    res = out["results"]
    grid_key, hier_key = f"grid{grid}x{grid}", f"hierarchical{grid}"
    ratios = {}
    if grid_key in res and "boxes" in res and res["boxes"]["decoder_ms"] > 0:
        ratios["grid_over_boxes_decoder"] = round(res[grid_key]["decoder_ms"] / res["boxes"]["decoder_ms"], 2)
        ratios["grid_over_boxes_total"] = round(res[grid_key]["total_ms"] / res["boxes"]["total_ms"], 2)
    if grid_key in res and hier_key in res and res[hier_key]["decoder_ms"] > 0:
        ratios["grid_over_hierarchical_decoder"] = round(res[grid_key]["decoder_ms"] / res[hier_key]["decoder_ms"], 2)
        ratios["grid_over_hierarchical_total"] = round(res[grid_key]["total_ms"] / res[hier_key]["total_ms"], 2)
    out["ratios"] = ratios
    out["machine"] = {"cpus": os.cpu_count(), "load_average_start": load_start, "load_average_end": load_average()}
    if ratios:
        print("everything ratios: " + ", ".join(f"{k} {v}" for k, v in ratios.items()), file=sys.stderr)
    print(format_table(out), file=sys.stderr)
    json_path = _arg(args, "everything_json")
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(out, indent=2))
        print(f"wrote {json_path}", file=sys.stderr)
    return out


class _CachingRuntime:
    """Decode each distinct batch once, so two post-processing modes see the same
    decoder outputs (and the second pays no decoder time)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.num_mask_outputs = inner.num_mask_outputs
        self._cache: dict = {}

    def encode(self, image):
        return self.inner.encode(image)

    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input):
        key = (point_coords.tobytes(), point_labels.tobytes())
        if key not in self._cache:
            out = self.inner.decode(image_embeddings, point_coords, point_labels, mask_input, has_mask_input)
            # runtimes may return views of buffers they reuse on the next call: copy
            self._cache[key] = type(out)(out.iou_predictions.copy(), out.low_res_masks.copy())
        return self._cache[key]

    def describe(self) -> str:
        return self.inner.describe()


def measure_agreement(runtime, embedding, config: EverythingConfig, boxes=None, image=None) -> dict[str, Any]:
    """Run ``config`` with exact=True and exact=False on the same decoder outputs and
    compare: mask counts, masks matched at IoU >= 0.99, score differences, and the
    post-processing time (filters, NMS, upsampling) of each mode."""
    from ..predictor import SamPredictor

    predictor = SamPredictor(_CachingRuntime(runtime))
    emb = predictor.set_embedding(embedding.embedding, embedding.original_size)
    runs = {}
    for exact in (True, False):  # exact first: it pays the decoder, the other reuses it
        res = EverythingSegmenter(predictor, config.with_(exact=exact)).segment(image, embedding=emb, boxes=boxes)
        runs[exact] = res
    ex, fast = runs[True], runs[False]
    matched, iou_diff, stab_diff = 0, 0.0, 0.0
    if len(ex) and len(fast):
        a = ex.masks.reshape(len(ex), -1).astype(np.float32)
        b = fast.masks.reshape(len(fast), -1).astype(np.float32)
        inter = a @ b.T
        union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
        ious = inter / np.maximum(union, 1)
        for i in range(len(ex)):
            j = int(np.argmax(ious[i]))
            if ious[i, j] >= 0.99:
                matched += 1
                iou_diff = max(iou_diff, abs(float(ex.iou_predictions[i] - fast.iou_predictions[j])))
                stab_diff = max(stab_diff, abs(float(ex.stability_scores[i] - fast.stability_scores[j])))

    def post_ms(r):
        return round(r.timings_ms.get("postprocess", 0.0) + r.timings_ms.get("upsample", 0.0), 1)

    return {
        "exact_masks": len(ex),
        "lowres_masks": len(fast),
        "matched_iou_0.99": matched,
        "max_score_diff_matched": round(max(iou_diff, stab_diff), 6),
        "exact_upsampled": ex.stats.get("upsampled", 0),
        "lowres_upsampled": fast.stats.get("upsampled", 0),
        "exact_post_ms": post_ms(ex),
        "lowres_post_ms": post_ms(fast),
    }


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of a ``run_everything_bench`` result."""
    lines = [
        "| strategy | prompts | decoder calls | decoder ms | total ms | masks |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, rec in result["results"].items():
        lines.append(
            f"| {name} | {rec['prompts']} | {rec['decoder_calls']} | {rec['decoder_ms']:.0f} | "
            f"{rec['total_ms']:.0f} | {rec['masks']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobilesam_ros.bench.everything", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint (.pt) or exported model directory")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    add_everything_arguments(parser)
    args = parser.parse_args(argv)
    from ..runtime import create_runtime

    runtime = create_runtime(args.model, args.backend, num_threads=args.threads)
    result = run_everything_bench(args, runtime)
    print(json.dumps({"ratios": result["ratios"], "machine": result["machine"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
