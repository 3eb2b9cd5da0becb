"""Benchmark: encoder, and the decoder for 1 / 10 / 100 boxes including post-processing
to full-size masks, after warm-up; median and p90; peak memory.

``run_bench`` measures this package's path (``SamPredictor`` with any runtime).
``ReferencePredictor`` mimics the reference predictor's batched path in PyTorch
(segment_anything's ``SamPredictor.predict_torch`` + ``postprocess_masks``: the
embedding repeated per box with ``repeat_interleave``, every mask upsampled with
``F.interpolate`` to 1024 and then to the image size) for side-by-side numbers on
the same machine. Only that class imports torch.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

DEFAULT_BOXES = (1, 10, 100)
DEFAULT_SIZES = ((1080, 1920), (480, 640))  # (h, w)


# ---------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------
def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB scene (gradients, rectangles, discs, noise), uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([xx / width * 200 + 30, yy / height * 200 + 30, 128 + 60 * np.sin(xx / 50 + yy / 70)], -1)
    for _ in range(25):
        y0, x0 = rng.uniform(0, height), rng.uniform(0, width)
        h, w = rng.uniform(0.05, 0.3) * height, rng.uniform(0.05, 0.3) * width
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.5:
            image[int(y0) : int(y0 + h), int(x0) : int(x0 + w)] = colour
        else:
            image[(yy - y0) ** 2 / max(h, 1) ** 2 + (xx - x0) ** 2 / max(w, 1) ** 2 < 1] = colour
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def bench_boxes(count: int, original_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``count`` deterministic boxes (x0, y0, x1, y1) inside the image, 10-50% of each side."""
    height, width = original_size
    rng = np.random.default_rng(seed)
    bw = rng.uniform(0.1, 0.5, count) * width
    bh = rng.uniform(0.1, 0.5, count) * height
    x0 = rng.uniform(0, 1, count) * (width - bw)
    y0 = rng.uniform(0, 1, count) * (height - bh)
    return np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)


# ---------------------------------------------------------------------------------
# timing helpers
# ---------------------------------------------------------------------------------
def stats(samples_s: Sequence[float]) -> dict:
    """Seconds -> {"median", "p90", "min", "n"} in milliseconds."""
    ms = np.asarray(samples_s, np.float64) * 1000.0
    return {
        "median": round(float(np.median(ms)), 2),
        "p90": round(float(np.percentile(ms, 90)), 2),
        "min": round(float(ms.min()), 2),
        "n": int(ms.size),
    }


def _timed(fn: Callable[[], object], warmup: int, repeats: int) -> tuple[list[float], object]:
    result = None
    for _ in range(warmup):
        result = fn()
    samples = []
    for _ in range(repeats):
        result = None  # let the previous result go first, as a caller would
        t = time.perf_counter()
        result = fn()
        samples.append(time.perf_counter() - t)
    return samples, result


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-memory high-water mark (Linux), so that phases run
    one after another in this process get their own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory (MB) since the last ``reset_peak_rss`` (or process start)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1024.0 if platform.system() != "Darwin" else peak / 1e6, 1)


def current_rss_mb() -> float | None:
    return _status_mb("VmRSS")


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other processes competing for the CPU)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not Unix
        return None


def machine_info() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        pass
    cpu = cpu_model()
    if cpu:
        info["cpu"] = cpu
    load = load_average()
    if load is not None:
        info["load_average"] = load
    return info


def cpu_model() -> str | None:
    """The CPU as /proc/cpuinfo names it, with family / model (a VM's "AMD EPYC" alone
    does not say which generation) and the widest x86 vector extension."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name")
    if not name:
        return None
    flags = set(fields.get("flags", "").split())
    vector = next((f for f in ("avx512_bf16", "avx512f", "avx2") if f in flags), None)
    parts = [f"family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields and "model" in fields
             else None, vector, "VM" if "hypervisor" in flags else None]
    return name + "".join(f", {p}" for p in parts if p)


# ---------------------------------------------------------------------------------
# this package's path
# ---------------------------------------------------------------------------------
@dataclass
class BenchImage:
    name: str
    rgb: np.ndarray


def default_images(sizes=DEFAULT_SIZES) -> list[BenchImage]:
    return [BenchImage(f"{w}x{h}", synthetic_image(h, w, seed=i)) for i, (h, w) in enumerate(sizes)]


def run_bench(
    runtime,
    images: Sequence[BenchImage] | None = None,
    boxes: Sequence[int] = DEFAULT_BOXES,
    warmup: int = 1,
    repeats: int = 5,
    encoder_repeats: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Measure ``runtime`` through ``SamPredictor``: the encoder on the first image, then
    per image and box count ``predict_boxes``'s work (batched decoder + post-processing
    to full-size masks), split into decoder and post-processing."""
    from ..postprocess import get_postprocessor
    from ..predictor import Prompt, SamPredictor
    from ..transforms import ImagePreprocessor, resize_longest_side

    images = list(images) if images else default_images()
    predictor = SamPredictor(runtime, max_batch=max(boxes))
    result: dict = {
        "backend": runtime.name,
        "runtime": runtime.describe(),
        "machine": machine_info(),
        "warmup": warmup,
        "repeats": repeats,
        "rss_after_load_mb": current_rss_mb(),
    }
    reset_peak_rss()

    first = images[0].rgb
    preprocess = ImagePreprocessor()
    samples, _ = _timed(lambda: preprocess(resize_longest_side(first)), warmup, repeats)
    result["preprocess_ms"] = stats(samples)
    tensor = preprocess(resize_longest_side(first)).copy()
    samples, _ = _timed(lambda: runtime.encode(tensor), max(1, warmup), encoder_repeats or repeats)
    result["encoder_ms"] = stats(samples)
    log(f"encoder: median {result['encoder_ms']['median']:.0f} ms, p90 {result['encoder_ms']['p90']:.0f} ms")

    by_image: dict = {}
    for image in images:
        emb = predictor.set_image(image.rgb)
        post = get_postprocessor(emb.original_size, emb.input_size, predictor.mask_threshold)
        rows = {}
        for count in boxes:
            prompts = [Prompt(box=b) for b in bench_boxes(count, emb.original_size)]
            split: list[tuple[float, float]] = []

            def once():
                t0 = time.perf_counter()
                iou, logits = predictor.decode_low_res(prompts, False, emb)
                t1 = time.perf_counter()
                masks = post.masks(logits)
                split.append((t1 - t0, time.perf_counter() - t1))
                return masks

            samples, masks = _timed(once, warmup, repeats)
            measured = split[warmup:]
            row = stats(samples)
            row["decoder_median"] = stats([d for d, _ in measured])["median"]
            row["post_median"] = stats([p for _, p in measured])["median"]
            rows[str(count)] = row
            assert masks.shape == (count, 1, *image.rgb.shape[:2])
            log(f"{image.name}: {count:>3} boxes: median {row['median']:.0f} ms (decoder {row['decoder_median']:.0f}"
                f" + masks {row['post_median']:.0f}), p90 {row['p90']:.0f} ms")
            del masks
        by_image[image.name] = rows
    result["decode_ms"] = by_image[images[0].name]
    result["decode_ms_by_image"] = by_image
    result["images"] = [{"name": i.name, "height": int(i.rgb.shape[0]), "width": int(i.rgb.shape[1])} for i in images]
    result["peak_rss_mb"] = peak_rss_mb()
    result["machine"]["load_average_end"] = load_average()
    return result


# ---------------------------------------------------------------------------------
# the reference predictor's path, mimicked in PyTorch
# ---------------------------------------------------------------------------------
class ReferencePredictor:
    """The reference MobileSAM predictor's batched-box path, for comparison only.

    Encoder: the PyTorch TinyViT. Boxes: ``predict_torch`` semantics — the prompt
    encoder embeds the corners; ``mask_decoder.predict_masks`` repeats the image
    embedding and positional encoding once per box (``torch.repeat_interleave``) and
    runs every prompt through the full two-way transformer (no shared image
    projections) and the ConvTranspose upscaling; ``postprocess_masks`` upsamples
    every mask with ``F.interpolate`` to 1024x1024, crops, upsamples to the image
    size and thresholds.
    """

    name = "reference-torch"

    def __init__(self, checkpoint, num_threads: int = 0) -> None:
        import torch

        from ..modeling import load_sam

        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.torch = torch
        self.sam = load_sam(checkpoint)
        self.image_pe = self.sam.prompt_encoder.get_dense_pe()
        self._embedding = None
        self._sizes = None

    def describe(self) -> str:
        return f"reference predictor path in torch {self.torch.__version__} (CPU, {self.torch.get_num_threads()} threads)"

    def encode(self, image: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.sam.image_encoder(self.torch.from_numpy(image)).numpy()

    def set_image(self, rgb: np.ndarray) -> None:
        from ..transforms import ImagePreprocessor, preprocess_shape, resize_longest_side

        tensor = ImagePreprocessor()(resize_longest_side(rgb))
        self._embedding = self.torch.from_numpy(self.encode(tensor))
        self._sizes = (rgb.shape[:2], preprocess_shape(*rgb.shape[:2]))

    def predict_boxes(self, boxes: np.ndarray) -> np.ndarray:
        import torch.nn.functional as F

        from ..transforms import apply_boxes

        torch = self.torch
        original_size, input_size = self._sizes
        with torch.inference_mode():
            corners = torch.from_numpy(apply_boxes(boxes, original_size, input_size))  # (B, 2, 2)
            batch = corners.shape[0]
            labels = torch.tensor([[2.0, 3.0]]).expand(batch, 2)
            sparse = self.sam.prompt_encoder.embed_points(corners, labels)
            dense = self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, 64, 64)
            src = torch.repeat_interleave(self._embedding, batch, dim=0)
            pos = torch.repeat_interleave(self.image_pe, batch, dim=0)
            masks, iou = self.sam.mask_decoder(src, pos, sparse, dense)
            masks = masks[:, 0:1]
            masks = F.interpolate(masks, (1024, 1024), mode="bilinear", align_corners=False)
            masks = masks[..., : input_size[0], : input_size[1]]
            masks = F.interpolate(masks, original_size, mode="bilinear", align_corners=False)
            return (masks > 0.0).numpy()


def run_reference_bench(
    reference: ReferencePredictor,
    images: Sequence[BenchImage] | None = None,
    boxes: Sequence[int] = DEFAULT_BOXES,
    warmup: int = 1,
    repeats: int = 5,
    encoder_repeats: int | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    from ..transforms import ImagePreprocessor, resize_longest_side

    images = list(images) if images else default_images()
    result: dict = {"backend": reference.name, "runtime": reference.describe(), "machine": machine_info(),
                    "warmup": warmup, "repeats": repeats, "rss_after_load_mb": current_rss_mb()}
    reset_peak_rss()
    tensor = ImagePreprocessor()(resize_longest_side(images[0].rgb)).copy()
    samples, _ = _timed(lambda: reference.encode(tensor), max(1, warmup), encoder_repeats or repeats)
    result["encoder_ms"] = stats(samples)
    log(f"reference encoder: median {result['encoder_ms']['median']:.0f} ms")
    by_image: dict = {}
    for image in images:
        reference.set_image(image.rgb)
        rows = {}
        for count in boxes:
            prompt_boxes = bench_boxes(count, image.rgb.shape[:2])
            samples, masks = _timed(lambda: reference.predict_boxes(prompt_boxes), warmup, repeats)
            assert masks.shape == (count, 1, *image.rgb.shape[:2])
            rows[str(count)] = stats(samples)
            log(f"reference {image.name}: {count:>3} boxes: median {rows[str(count)]['median']:.0f} ms")
            del masks
        by_image[image.name] = rows
    result["decode_ms"] = by_image[images[0].name]
    result["decode_ms_by_image"] = by_image
    result["peak_rss_mb"] = peak_rss_mb()
    return result


# ---------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------
def format_table(result: dict, reference: dict | None = None) -> str:
    """A plain-text table of one run (and the reference run, with speed-ups)."""
    lines = [f"{result['runtime']}"]
    head = f"{'what':<28}{'median ms':>11}{'p90 ms':>9}"
    if reference:
        head += f"{'reference':>12}{'speed-up':>10}"
    lines.append(head)
    lines.append("-" * len(head))

    def row(label, ours, ref=None, extra=""):
        text = f"{label:<28}{ours['median']:>11.1f}{ours['p90']:>9.1f}"
        if reference:
            if ref:
                text += f"{ref['median']:>12.1f}{ref['median'] / max(ours['median'], 1e-9):>9.1f}x"
            else:
                text += f"{'':>12}{'':>10}"
        return text + extra

    lines.append(row("encoder", result["encoder_ms"], reference["encoder_ms"] if reference else None))
    for image, rows in result["decode_ms_by_image"].items():
        for count, ours in rows.items():
            ref = reference["decode_ms_by_image"].get(image, {}).get(count) if reference else None
            extra = f"   (decoder {ours['decoder_median']:.0f} + masks {ours['post_median']:.0f})"
            lines.append(row(f"{count} boxes -> {image} masks", ours, ref, extra))
    lines.append(f"peak RSS {result['peak_rss_mb']:.0f} MB" + (f"; reference run peak RSS {reference['peak_rss_mb']:.0f} MB"
                                                               if reference else ""))
    return "\n".join(lines)
