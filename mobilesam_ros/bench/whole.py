"""Whole commands, timed as a user times them: the reference predictor vs ``segment``.

Each side runs as its own process, start to exit (interpreter start, imports, model
load, image read, encoder, decoder, full-size masks, and for ours the ``.npz``
written), alternating in rounds so that both see the same machine load::

    python -m mobilesam_ros.bench.whole --model DIR --checkpoint CKPT --image IMG \\
        --boxes 100 --rounds 3 --json out/whole.json

The reference side (``reference`` sub-mode) is what a user of the reference MobileSAM
predictor runs: PyTorch, boxes batched (``predict_torch``), masks upsampled with
``F.interpolate`` and thresholded, not saved (``bench.model.ReferencePredictor``).

``--also everything,bench`` times, in the same rounds, what a user waits for with the
other two commands: ``everything`` on the same boxes (``--boxes-json``, ``--save-npz``)
and a one-pass ``bench`` (``--boxes 1,10,100 --warmup 0 --repeats 1``).

Before each run the file system is synced: the previous run's 300 MB ``.npz`` would
otherwise be written back to disk during the next run, on the same two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path


def reference_process(checkpoint: str, image: str, boxes_json: str, threads: int = 0) -> int:
    """The reference user's script: load, encode, decode the boxes, full-size masks."""
    import numpy as np

    from ..transforms import read_rgb
    from .model import ReferencePredictor

    predictor = ReferencePredictor(checkpoint, num_threads=threads)
    rgb = read_rgb(image)
    predictor.set_image(rgb)
    masks = predictor.predict_boxes(np.asarray(json.loads(Path(boxes_json).read_text()), np.float32))
    print(f"reference: {masks.shape[0]} masks {masks.shape[-2]}x{masks.shape[-1]}, {int(masks.sum())} pixels set",
          file=sys.stderr)
    return 0


ALSO = ("everything", "bench")


def _timed_run(cmd: list[str]) -> dict:
    os.sync()
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds (user + system, all threads): on a loaded machine the wall clock
    # measures the other jobs as much as this one; the CPU time much less so
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3), "load1_before": round(load_before, 2),
            "load1_after": round(os.getloadavg()[0], 2), "stderr_tail": proc.stderr.strip().splitlines()[-2:]}


def compare(model: str, checkpoint: str, image: str, boxes: int, rounds: int, threads: int = 0,
            extra: list[str] | None = None, log=print, also: tuple[str, ...] = ()) -> dict:
    from ..transforms import read_rgb
    from .model import bench_boxes, machine_info

    rgb = read_rgb(image)
    height, width = rgb.shape[:2]
    with tempfile.TemporaryDirectory(prefix="mobilesam_whole_") as tmp:
        boxes_json = Path(tmp) / "boxes.json"
        boxes_json.write_text(json.dumps(bench_boxes(boxes, (height, width)).tolist()))
        ours = [sys.executable, "-m", "mobilesam_ros", "segment", image, "--model", model, "--boxes-json",
                str(boxes_json), "--save-npz", str(Path(tmp) / "out.npz"), "--threads", str(threads), *(extra or [])]
        reference = [sys.executable, "-m", "mobilesam_ros.bench.whole", "reference", checkpoint, image,
                     str(boxes_json), "--threads", str(threads)]
        others = {
            "everything": [sys.executable, "-m", "mobilesam_ros", "everything", image, "--model", model, "--boxes-json",
                           str(boxes_json), "--save-npz", str(Path(tmp) / "everything.npz"), "--threads", str(threads)],
            "bench": [sys.executable, "-m", "mobilesam_ros", "bench", "--model", model, "--boxes", "1,10,100",
                      "--warmup", "0", "--repeats", "1", "--threads", str(threads)],
        }
        runs: dict[str, list[dict]] = {"ours": [], "reference": [], **{name: [] for name in also}}
        for i in range(rounds):
            # alternate who goes first, so a load change hits both sides alike
            order = [("ours", ours), ("reference", reference)]
            order = order if i % 2 == 0 else order[::-1]
            for name, cmd in order + [(name, others[name]) for name in also]:
                run = _timed_run(cmd)
                runs[name].append(run)
                log(f"round {i + 1}/{rounds}: {name:<9} {run['seconds']:6.2f} s, CPU {run['cpu_seconds']:6.2f} s "
                    f"(load {run['load1_before']:.1f})")
            if i == 0:
                npz_bytes = (Path(tmp) / "out.npz").stat().st_size
    ours_s = [r["seconds"] for r in runs["ours"]]
    ref_s = [r["seconds"] for r in runs["reference"]]
    pairs = [r / o for r, o in zip(ref_s, ours_s)]
    result = {
        "image": {"file": str(image), "height": height, "width": width},
        "boxes": boxes,
        "rounds": rounds,
        "ours_cmd": " ".join(ours[1:]).replace(tmp, "TMP"),
        "reference_cmd": " ".join(reference[1:]).replace(tmp, "TMP"),
        "ours_s": ours_s,
        "reference_s": ref_s,
        "ours_median_s": round(statistics.median(ours_s), 3),
        "reference_median_s": round(statistics.median(ref_s), 3),
        "speedup_median": round(statistics.median(ref_s) / statistics.median(ours_s), 2),
        "speedup_per_round": [round(p, 2) for p in pairs],
        "ours_cpu_s": [r["cpu_seconds"] for r in runs["ours"]],
        "reference_cpu_s": [r["cpu_seconds"] for r in runs["reference"]],
        "cpu_speedup_median": round(statistics.median(r["cpu_seconds"] for r in runs["reference"])
                                    / statistics.median(r["cpu_seconds"] for r in runs["ours"]), 2),
        "npz_bytes": npz_bytes,
        "also": {name: {"cmd": " ".join(others[name][1:]).replace(tmp, "TMP"),
                        "median_s": round(statistics.median(r["seconds"] for r in runs[name]), 3),
                        "median_cpu_s": round(statistics.median(r["cpu_seconds"] for r in runs[name]), 3)}
                 for name in also},
        "runs": runs,
        "machine": machine_info(),
    }
    log(f"whole process, {boxes} boxes on {width}x{height}: reference median {result['reference_median_s']:.2f} s, "
        f"ours {result['ours_median_s']:.2f} s: {result['speedup_median']:.2f}x "
        f"(per round {', '.join(f'{p:.2f}x' for p in pairs)}); CPU time {result['cpu_speedup_median']:.2f}x")
    for name, row in result["also"].items():
        log(f"{name}: median {row['median_s']:.2f} s, CPU {row['median_cpu_s']:.2f} s ({row['cmd']})")
    return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["reference"]:
        p = argparse.ArgumentParser(prog="python -m mobilesam_ros.bench.whole reference")
        p.add_argument("checkpoint")
        p.add_argument("image")
        p.add_argument("boxes_json")
        p.add_argument("--threads", type=int, default=0)
        a = p.parse_args(argv[1:])
        return reference_process(a.checkpoint, a.image, a.boxes_json, a.threads)
    p = argparse.ArgumentParser(prog="python -m mobilesam_ros.bench.whole", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="exported model directory (our side)")
    p.add_argument("--checkpoint", required=True, help="the same weights as a .pt (the reference side)")
    p.add_argument("--image", required=True)
    p.add_argument("--boxes", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for both sides (0: all cores)")
    p.add_argument("--also", default="", metavar="LIST",
                   help=f"also time these commands in every round: {', '.join(ALSO)} (comma-separated)")
    p.add_argument("--json", metavar="OUT", help="write the result as JSON")
    p.add_argument("ours_extra", nargs="*", help="extra arguments for our segment command (after --)")
    a = p.parse_args(argv)
    also = tuple(name for name in a.also.split(",") if name)
    unknown = [name for name in also if name not in ALSO]
    if unknown:
        p.error(f"--also: unknown command(s) {', '.join(unknown)} (choose from {', '.join(ALSO)})")
    log = partial(print, file=sys.stderr, flush=True)
    result = compare(a.model, a.checkpoint, a.image, a.boxes, a.rounds, a.threads, a.ours_extra, log, also)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n")
        log(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
