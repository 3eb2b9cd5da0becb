"""Choosing the decoder chunk size and thread count by measurement (ONNX Runtime, CPU).

Decodes N box prompts against one embedding with every (threads, chunk) pair, in
interleaved rounds (each round visits every pair once, in a rotated order, so machine
load changes hit all pairs alike), and reports medians::

    python -m mobilesam_ros.bench.tuning --model DIR --boxes 100 --threads 0,1,2 \\
        --chunks 8,16,32,100 --rounds 3 --json out/tuning.json

``threads 0`` is ONNX Runtime's own choice (one thread per physical core), what
``--threads`` defaults to everywhere in this package.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np


def measure(model: str, boxes: int, threads: list[int], chunks: list[int], rounds: int, log=print) -> dict:
    from ..predictor import Prompt, SamPredictor
    from ..runtime.onnx_backend import OnnxRuntime
    from .model import bench_boxes, load_average, machine_info, synthetic_image

    image = synthetic_image(1080, 1920)
    runtimes = {(t, c): OnnxRuntime(model, num_threads=t, decoder_batch=c) for t in threads for c in chunks}
    first = next(iter(runtimes.values()))
    embedding = SamPredictor(first).set_image(image)
    prompts = [Prompt(box=b) for b in bench_boxes(boxes, embedding.original_size)]
    samples: dict[tuple[int, int], list[float]] = {key: [] for key in runtimes}
    keys = list(runtimes)
    for key in keys:  # warm-up: arenas, kernels
        SamPredictor(runtimes[key], max_batch=boxes).decode_low_res(prompts[: min(8, boxes)], False, embedding)
    loads = []
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[: r % len(keys)]
        for key in order:
            predictor = SamPredictor(runtimes[key], max_batch=boxes)
            started = time.perf_counter()
            predictor.decode_low_res(prompts, False, embedding)
            samples[key].append(time.perf_counter() - started)
        loads.append(load_average())
        log(f"round {r + 1}/{rounds} done, load {loads[-1]}")
    rows = []
    for (t, c), values in samples.items():
        rows.append({"threads": t, "chunk": c, "median_s": round(statistics.median(values), 3),
                     "min_s": round(min(values), 3), "samples_s": [round(v, 3) for v in values]})
        log(f"threads {t or 'auto':>4}, chunk {c:>3}: median {rows[-1]['median_s']:.2f} s, min {rows[-1]['min_s']:.2f} s")
    best = min(rows, key=lambda row: row["median_s"])
    return {"boxes": boxes, "rounds": rounds, "rows": rows, "best": best, "load_average_per_round": loads,
            "machine": machine_info(), "runtime": first.describe()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mobilesam_ros.bench.tuning", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="exported model directory")
    p.add_argument("--boxes", type=int, default=100)
    p.add_argument("--threads", default="0,1,2", help="intra-op thread counts (0: ONNX Runtime's choice)")
    p.add_argument("--chunks", default="8,16,32", help="prompts per decoder run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", metavar="OUT")
    a = p.parse_args(argv)
    log = partial(print, file=sys.stderr, flush=True)
    result = measure(a.model, a.boxes, [int(v) for v in a.threads.split(",")], [int(v) for v in a.chunks.split(",")],
                     a.rounds, log)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
