"""The GPU check: the torch backend on CUDA in fp32, fp16 and bf16, in one call.

Made for a machine that is lent by chance and must be used at once (NVIDIA GPU,
PyTorch with CUDA, this repository, no internet, no TensorRT): ``scripts/gpu_check.sh``
runs ``python -m mobilesam_ros.bench.gpu_check`` and it

* writes a synthetic (seeded random-weight) checkpoint: timings need no real weights;
* per precision (fp32, fp16, bf16), with and without ``torch.compile`` where asked:
  encoder ms; decoder ms for 1 / 20 / 100 box prompts on one embedding; a 1280x720
  frame with 20 boxes end to end, both as ``SamPredictor`` runs it (CPU resize and
  full-size masks on the CPU) and all on the device (resize, encoder, decoder,
  upscale and threshold on the GPU, masks left there, as Isaac ROS leaves its
  TensorList); peak GPU memory;
* agreement on the parity fixture (``../shared/fixtures/parity`` from the repository
  root, or ``--fixture``): fp32 against the fixture's reference outputs, fp16 / bf16
  against fp32 (max |logit difference|, full-size mask IoU);
* int8 (on by default with CUDA, ``--int8`` on CPU): the parity checkpoint exported
  and quantised (``export --quantize int8``), its agreement with fp32 and its speed on
  ONNX Runtime CPU, and, where TensorRT is installed, the int8 engine built from the
  same QDQ graph (explicit quantisation) against the fp32 engine (``_int8_check``);
* writes ``gpu_check.json`` into ``$OUT`` when set, else ``out/`` (or ``--out``).

``--device cpu`` runs the same code with small settings (timings in fp32 only, one
run each, a 640x360 frame; fp32 and, where the CPU has bf16 instructions, bf16 in the
agreement) so CI keeps it working. Timings are medians of synchronised
wall-clock runs after warm-up. Uses torch APIs available since 2.1 (the lent machine
has 2.11).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from functools import partial
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_FIXTURE = REPO.parent / "shared" / "fixtures" / "parity"
GOAL_MS = 10.0  # the goal on a Hopper-class GPU: a 720p frame, 20 boxes


def cpu_bf16_instructions() -> list[str]:
    """The CPU's native bf16 instructions (Linux /proc/cpuinfo flags); [] elsewhere or without them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16"))


# Without native bf16 instructions, torch emulates bf16 autocast: one encoder call took 59 s
# (fp32: 2 s) on a 2-core AVX2-only AMD EPYC, so the CPU check measures bf16 only where it is native.
BF16_NOT_NATIVE = "this CPU has no bf16 instructions (avx512_bf16, amx_bf16): torch would emulate bf16 (~30x fp32)"


def _settings(device: str) -> dict:
    if device == "cpu":  # CI: small and quick, same code paths (bf16 autocast runs in the agreement where native)
        bf16 = ["bf16"] if cpu_bf16_instructions() else []
        return {"precisions": ["fp32"], "agreement_precisions": ["fp32", *bf16], "boxes": [1, 4],
                "frame": [360, 640], "frame_boxes": 4, "warmup": 0, "repeats": 1, "fixture_images": ["picture1.jpg"],
                "int8": False, "int8_calibration_images": 2, "int8_rounds": 1, "int8_boxes": 4}
    return {"precisions": ["fp32", "fp16", "bf16"], "agreement_precisions": ["fp32", "fp16", "bf16"],
            "boxes": [1, 20, 100], "frame": [720, 1280], "frame_boxes": 20, "warmup": 3, "repeats": 10,
            "fixture_images": ["picture1.jpg", "picture4.jpg"],
            "int8": True, "int8_calibration_images": 4, "int8_rounds": 5, "int8_boxes": 100}


def _sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(torch, device, fn, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        fn()
    _sync(torch, device)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        _sync(torch, device)
        samples.append((time.perf_counter() - started) * 1000.0)
    return {"median": round(statistics.median(samples), 3), "min": round(min(samples), 3), "n": len(samples)}


def _environment(torch, device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads(),
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                    "gpu_memory_gb": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
                    "cudnn": torch.backends.cudnn.version()})
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
        env["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        env["onnxruntime"] = None
    return env


class DevicePipeline:
    """One frame all on the device: uint8 HxWx3 -> resize (antialiased bilinear, like
    PIL's), normalise, pad -> encoder -> decoder -> masks upsampled as the reference
    does (F.interpolate to 1024, crop, to the frame size) and thresholded, left on the
    device (a consumer on the GPU takes them from there)."""

    def __init__(self, runtime, torch) -> None:
        from ..transforms import PIXEL_MEAN, PIXEL_STD

        self.rt, self.torch = runtime, torch
        self.mean = torch.tensor(PIXEL_MEAN, device=runtime.device).reshape(1, 3, 1, 1)
        self.std = torch.tensor(PIXEL_STD, device=runtime.device).reshape(1, 3, 1, 1)
        self.padded = torch.zeros(1, 3, 1024, 1024, device=runtime.device)
        self.labels = None

    def __call__(self, frame, boxes):
        """frame: (H, W, 3) uint8 device tensor; boxes: (B, 4) float32 device tensor."""
        import torch.nn.functional as F

        from ..transforms import preprocess_shape

        torch = self.torch
        height, width = frame.shape[:2]
        h_in, w_in = preprocess_shape(height, width)
        with torch.inference_mode():
            x = frame.permute(2, 0, 1).unsqueeze(0).float()
            x = F.interpolate(x, (h_in, w_in), mode="bilinear", align_corners=False, antialias=True)
            self.padded[:, :, :h_in, :w_in] = (x.round().clamp(0, 255) - self.mean) / self.std
            embedding = self.rt.encode_tensor(self.padded)
            scale = torch.tensor([w_in / width, h_in / height], device=frame.device)
            corners = boxes.reshape(-1, 2, 2) * scale
            batch = corners.shape[0]
            labels = torch.tensor([[2.0, 3.0]], device=frame.device).expand(batch, 2)
            no_mask = torch.zeros(1, 1, 256, 256, device=frame.device)
            _, low_res = self.rt.decode_tensors(embedding, corners, labels, no_mask, torch.zeros(1, device=frame.device))
            masks = F.interpolate(low_res[:, :1], (1024, 1024), mode="bilinear", align_corners=False)
            masks = F.interpolate(masks[..., :h_in, :w_in], (height, width), mode="bilinear", align_corners=False)
            return masks > 0.0


def _measure_precision(torch, checkpoint: str, device_name: str, precision: str, settings: dict,
                       compile_mode: str | None, log) -> dict:
    from ..predictor import SamPredictor
    from ..runtime.torch_backend import TorchRuntime
    from .model import bench_boxes, synthetic_image

    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    rt = TorchRuntime(checkpoint, device=device_name, precision=precision, compile_mode=compile_mode)
    row: dict = {"runtime": rt.describe()}
    warmup, repeats = settings["warmup"], settings["repeats"]
    image = torch.randn(1, 3, 1024, 1024, device=device)
    # the first call compiles (torch.compile) or picks kernels: timed on its own
    first = time.perf_counter()
    embedding = rt.encode_tensor(image)
    _sync(torch, device)
    row["encoder_first_call_ms"] = round((time.perf_counter() - first) * 1000.0, 1)
    if warmup or repeats > 1:
        row["encoder_ms"] = _time(torch, device, lambda: rt.encode_tensor(image), warmup, repeats)
    else:  # CI's single run: the first call is the measurement
        row["encoder_ms"] = {"median": row["encoder_first_call_ms"], "min": row["encoder_first_call_ms"], "n": 1}
    row["decode_ms"] = {}
    no_mask = torch.zeros(1, 1, 256, 256, device=device)
    no_flag = torch.zeros(1, device=device)
    for count in settings["boxes"]:
        corners = torch.from_numpy(bench_boxes(count, (1024, 1024)).reshape(-1, 2, 2)).to(device)
        labels = torch.tensor([[2.0, 3.0]], device=device).expand(count, 2).contiguous()
        row["decode_ms"][str(count)] = _time(
            torch, device, lambda: rt.decode_tensors(embedding, corners, labels, no_mask, no_flag),
            max(warmup, 1 if compile_mode else 0), repeats)
    height, width = settings["frame"]
    frame = synthetic_image(height, width)
    boxes = bench_boxes(settings["frame_boxes"], (height, width))
    predictor = SamPredictor(rt, max_batch=max(64, len(boxes)))

    def host_frame():
        predictor.set_image(frame)
        return predictor.predict_boxes(boxes).masks

    row["frame"] = {"size": f"{width}x{height}", "boxes": len(boxes)}
    row["frame"]["predictor_ms"] = _time(torch, device, host_frame, warmup, repeats)
    pipeline = DevicePipeline(rt, torch)
    frame_t = torch.from_numpy(frame).to(device)
    boxes_t = torch.from_numpy(boxes).to(device)
    row["frame"]["device_ms"] = _time(torch, device, lambda: pipeline(frame_t, boxes_t), warmup, repeats)
    if device.type == "cuda":
        row["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        row["peak_gpu_reserved_mb"] = round(torch.cuda.max_memory_reserved(device) / 2**20, 1)
    row["seconds"] = round(time.perf_counter() - started, 1)
    rt.close()
    log(f"{precision}{' compiled ' + compile_mode if compile_mode else ''}: encoder {row['encoder_ms']['median']:.2f} ms, "
        + ", ".join(f"{n} boxes {v['median']:.2f} ms" for n, v in row["decode_ms"].items())
        + f"; {row['frame']['size']} x {len(boxes)} boxes: predictor {row['frame']['predictor_ms']['median']:.1f} ms,"
        f" on device {row['frame']['device_ms']['median']:.1f} ms")
    return row


def _agreement(torch, fixture: Path, device_name: str, precisions: list[str], images: list[str], log) -> dict:
    """fp32 vs the fixture's reference outputs, and each lower precision vs fp32."""
    from ..postprocess import get_postprocessor
    from ..predictor import Prompt, SamPredictor
    from ..runtime.torch_backend import TorchRuntime
    from ..transforms import read_rgb

    expected = np.load(fixture / "expected.npz")
    cases = [c for c in json.loads((fixture / "cases.json").read_text())["cases"]
             if c["image"] in images and c["id"] in ("point", "box", "boxes_batch", "points_fg_bg")]
    outputs: dict[str, dict] = {}
    for precision in precisions:
        rt = TorchRuntime(str(fixture / "checkpoint.pt"), device=device_name, precision=precision)
        predictor = SamPredictor(rt)
        per_case = {}
        for image in images:
            resized = read_rgb(fixture / "images" / f"{image}.resized.png")  # the reference's resize
            original = next(tuple(c["image_size"]) for c in cases if c["image"] == image)
            emb = predictor.set_resized_image(resized, original)
            per_case[f"{image}/embedding"] = emb.embedding
            for c in (c for c in cases if c["image"] == image):
                if "boxes" in c:
                    prompts = [Prompt(box=np.asarray(b, np.float32)) for b in c["boxes"]]
                    multimask = False
                else:
                    pts = np.asarray(c["points"], np.float32) if "points" in c else None
                    lbl = np.asarray(c["labels"], np.float32) if "labels" in c else None
                    box = np.asarray(c["box"], np.float32) if "box" in c else None
                    prompts = [Prompt(pts, lbl, box)]
                    multimask = bool(c.get("multimask"))
                _, logits = predictor.decode_low_res(prompts, multimask, emb)
                per_case[f"{image}/{c['id']}"] = logits
        outputs[precision] = per_case
        rt.close()

    def iou(a, b):
        union = np.logical_or(a, b).sum()
        return float(np.logical_and(a, b).sum() / union) if union else 1.0

    result: dict = {"fixture": str(fixture), "cases": [f"{c['image']}/{c['id']}" for c in cases]}
    ref = outputs["fp32"]
    worst = 0.0
    for c in cases:
        key = f"{c['image']}/{c['id']}"
        want = expected[f"{key}/low_res_logits"].reshape(ref[key].shape)
        worst = max(worst, float(np.abs(ref[key] - want).max()))
    result["fp32_vs_reference_max_logit_diff"] = worst
    result["fp32_vs_reference_embedding_max_diff"] = max(
        float(np.abs(ref[f"{i}/embedding"] - expected[f"{i}/embedding"]).max()) for i in images)
    for precision in precisions:
        if precision == "fp32":
            continue
        low = outputs[precision]
        diffs, ious = [], []
        for c in cases:
            key = f"{c['image']}/{c['id']}"
            diffs.append(float(np.abs(low[key] - ref[key]).max()))
            post = get_postprocessor(tuple(c["image_size"]), _input_size(c["image_size"]))
            a = post.masks(ref[key]).copy()
            b = post.masks(low[key])
            ious.extend(iou(x, y) for x, y in zip(a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])))
        emb_diff = max(float(np.abs(low[f"{i}/embedding"] - ref[f"{i}/embedding"]).max()) for i in images)
        result[precision] = {"max_logit_diff_vs_fp32": round(max(diffs), 5),
                             "embedding_max_diff_vs_fp32": round(emb_diff, 5),
                             "mask_iou_vs_fp32_min": round(min(ious), 5),
                             "mask_iou_vs_fp32_mean": round(float(np.mean(ious)), 5), "masks": len(ious)}
        log(f"{precision} vs fp32 on the parity fixture: max |logit diff| {max(diffs):.4f}, "
            f"mask IoU min {min(ious):.4f} mean {np.mean(ious):.4f} ({len(ious)} masks)")
    log(f"fp32 vs the reference outputs: max |logit diff| {worst:.2e}")
    return result


def _int8_check(fixture: Path, device: str, settings: dict, log, fp32_dir: Path | None = None,
                int8_dir: Path | None = None) -> dict:
    """int8 (``export --quantize int8``): the parity checkpoint exported (or ``fp32_dir``)
    and quantised here (QDQ, output-MSE calibration on toy scenes); its agreement with
    fp32 and its speed on ONNX Runtime CPU (this machine's CPU: another CPU measured);
    with TensorRT installed and a GPU, the int8 engine built from the same QDQ graph
    (explicit quantisation) against the fp32 engine, agreement and speed."""
    try:
        import onnx  # noqa: F401 - only checked to be importable
        from onnxruntime import quantization  # noqa: F401 - only checked to be importable
    except ImportError as exc:
        return {"skipped": f"needs onnx and onnxruntime ({exc.name} is missing)"}
    from ..quantize import QuantizeOptions, compare_parity, compare_speed, quantize_model_dir

    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="int8_check_") as tmp:
        started = time.perf_counter()
        if fp32_dir is None:
            from ..export import export_model

            fp32_dir = Path(tmp) / "fp32"
            export_model(fixture / "checkpoint.pt", fp32_dir, validate=False, log=lambda _m: None)
        if int8_dir is None:  # (tests pass one quantised already)
            int8_dir = Path(tmp) / "int8"
            info = quantize_model_dir(fp32_dir, int8_dir,
                                      QuantizeOptions(num_images=settings["int8_calibration_images"]), log=log)
        else:
            info = json.loads((Path(int8_dir) / "model.json").read_text())
        result["quantization"] = {k: info["quantization"][k] for k in ("scheme", "calibration", "parts")}
        result["prepare_seconds"] = round(time.perf_counter() - started, 1)
        result["onnxruntime_cpu"] = {"agreement": compare_parity(fp32_dir, int8_dir, fixture)}
        result["onnxruntime_cpu"]["speed"] = compare_speed(fp32_dir, int8_dir, settings["int8_rounds"], 0,
                                                           settings["int8_boxes"], log)
        if device != "cpu":
            try:
                import tensorrt  # noqa: F401 - only checked to be importable
            except ImportError:
                result["tensorrt"] = {"skipped": "tensorrt is not installed on this machine"}
            else:
                trt: dict = {}
                result["tensorrt"] = trt
                try:
                    trt["agreement"] = compare_parity(fp32_dir, int8_dir, fixture, backend="tensorrt", device=device)
                    log(f"TensorRT int8 vs fp32 (parity fixture): {trt['agreement']}")
                    trt["speed"] = compare_speed(fp32_dir, int8_dir, settings["int8_rounds"], 0, settings["int8_boxes"],
                                                 log, backend="tensorrt", device=device)
                except Exception as exc:  # noqa: BLE001 - any TensorRT failure: the CPU figures above stay
                    trt["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
    agreement = result["onnxruntime_cpu"]["agreement"]
    log(f"int8 vs fp32 on ONNX Runtime CPU (parity fixture): embedding cosine {agreement['embedding_cosine_min']}, "
        f"mask IoU min {agreement['mask_iou_min']} mean {agreement['mask_iou_mean']}")
    return result


def _input_size(image_size) -> tuple[int, int]:
    from ..transforms import preprocess_shape

    return preprocess_shape(*image_size)


def run_gpu_check(device: str, out_dir: Path, fixture: Path | None, compile_mode: str | None,
                  log=print, int8: bool | None = None) -> dict:
    import torch

    from ..modeling import write_synthetic_checkpoint

    settings = _settings("cpu" if device == "cpu" else "cuda")
    if int8 is not None:
        settings["int8"] = int8
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: this PyTorch ({torch.__version__}) sees no CUDA GPU")
    report: dict = {"check": "mobilesam_ros gpu_check", "device": device, "environment": _environment(torch, dev),
                    "settings": settings, "goal_frame_ms": GOAL_MS, "errors": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        checkpoint = str(write_synthetic_checkpoint(Path(tmp) / "synthetic.pt", seed=0))
        report["precisions"] = {}
        for precision in settings["precisions"]:
            try:
                report["precisions"][precision] = _measure_precision(torch, checkpoint, device, precision, settings,
                                                                     None, log)
            except Exception as exc:  # noqa: BLE001 - one failing precision must not lose the others' figures
                report["errors"][precision] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                log(f"{precision}: FAILED {report['errors'][precision]}")
        if compile_mode:
            report["compiled"] = {"mode": compile_mode}
            for precision in [p for p in settings["precisions"] if p != "fp32"][:1] or ["fp32"]:
                key = f"{precision}+compile"
                try:
                    report["compiled"][precision] = _measure_precision(torch, checkpoint, device, precision, settings,
                                                                       compile_mode, log)
                except Exception as exc:  # noqa: BLE001 - a failing compile must not lose the other figures
                    report["errors"][key] = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
                    log(f"{key}: FAILED {report['errors'][key]}")
    if fixture is not None and (fixture / "expected.npz").exists():
        try:
            report["agreement"] = _agreement(torch, fixture, device, settings["agreement_precisions"],
                                             settings["fixture_images"], log)
            if device == "cpu" and "bf16" not in settings["agreement_precisions"]:
                report["agreement"]["bf16"] = {"not_run": BF16_NOT_NATIVE}
                log(f"bf16: not run: {BF16_NOT_NATIVE}")
        except Exception as exc:  # noqa: BLE001 - recorded in the report with the timings kept
            report["errors"]["agreement"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    else:
        report["agreement"] = {"skipped": f"no parity fixture at {fixture}"}
    if settings["int8"] and fixture is not None and (fixture / "checkpoint.pt").exists():
        try:
            report["int8"] = _int8_check(fixture, device, settings, log)
        except Exception as exc:  # noqa: BLE001 - recorded in the report with the other figures kept
            report["errors"]["int8"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()[-2000:]
            log(f"int8: FAILED {report['errors']['int8']}")
    best = [row["frame"]["device_ms"]["median"] for row in report["precisions"].values()]
    if best:
        report["best_frame_device_ms"] = min(best)
    report["seconds"] = round(time.perf_counter() - started, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {path} ({report['seconds']:.0f} s{', errors: ' + ', '.join(report['errors']) if report['errors'] else ''})")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (CI: small settings; default cuda)")
    p.add_argument("--out", help="directory for gpu_check.json (default: $OUT, else out/)")
    p.add_argument("--fixture", default=str(DEFAULT_FIXTURE), help=f"parity fixture (default {DEFAULT_FIXTURE})")
    p.add_argument("--compile", default=None, choices=("default", "reduce-overhead", "max-autotune"),
                   help="also measure torch.compile in this mode (reduce-overhead replays CUDA graphs)")
    p.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                   help="the int8 check (export --quantize int8: ONNX Runtime CPU, and TensorRT where installed); "
                        "default: on with CUDA, off with --device cpu")
    a = p.parse_args(argv)
    out_dir = Path(a.out or os.environ.get("OUT") or REPO / "out")
    log = partial(print, file=sys.stderr, flush=True)
    try:
        report = run_gpu_check(a.device, out_dir, Path(a.fixture) if a.fixture else None, a.compile, log, a.int8)
    except RuntimeError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    return 1 if set(report["errors"]) & set(report["settings"]["precisions"]) else 0


if __name__ == "__main__":
    sys.exit(main())
