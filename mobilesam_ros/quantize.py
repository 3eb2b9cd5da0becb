"""int8 model directories: an exported fp32 model quantised with ONNX Runtime.

``mobilesam-ros export --quantize int8`` (or :func:`quantize_model_dir` on a directory
``export`` wrote) writes a directory with the same files (``encoder.onnx``,
``decoder.onnx``, ``model.json``) that every ONNX Runtime path runs unchanged, and that
native TensorRT builds an int8 engine from (explicit quantisation: the Q/DQ nodes carry
the scales). What is quantised: the layers with weights whose weight is a constant
(``MatMul`` / ``Gemm`` with a 2-D weight, and, where ``ops`` says so, ``Conv``): their
weights per output channel, symmetric int8, and their activation inputs per tensor.
Everything else stays float: LayerNorm, softmax, GELU, the attention products of two
activations (query x key, attention x value), the positional encodings, the image
normalisation, and the decoder's upscaling and hypernetwork product.

Two schemes (``scheme``):

* ``qdq`` (default): static quantisation in QDQ format, symmetric int8 activations with
  scales fixed by calibration. The one format ONNX Runtime (CPU, CUDA, TensorRT EP) and
  native TensorRT all accept; on an x86 CPU ONNX Runtime shifts the activations to
  uint8 itself.
* ``dynamic``: weights int8, activations quantised per call from their own range (no
  calibration). ONNX Runtime only (TensorRT has no dynamic quantisation).

Calibration (``qdq``): the user's own images (a folder), else seeded toy-world scenes;
for the decoder, the fp32 encoder's embeddings of those images with box, point and
mask-input prompts. Methods:

* ``minmax``: each activation's range is the min..max seen;
* ``entropy``: ONNX Runtime's KL-divergence threshold (TensorRT's classic choice);
* ``percentile``: the 99.999th percentile of |x|;
* ``output-mse`` (TinySAM's idea, Q-TinySAM's "hierarchical" search reduced to its
  core): for every quantised layer, the activation's clipping range is the one, out of
  a grid of fractions of its largest magnitude, that minimises the mean squared error
  of the *layer's output* (the quantised activation times the quantised weight, against
  the float product), summed over the layer's consumers and the calibration data.
  Outliers that min/max would keep cost resolution everywhere else; cutting them costs
  error on those few values. Which matters more is read off the layer's output, not
  guessed from the activation's histogram.

No torch import: this module runs wherever ONNX Runtime does.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .geometry import LOW_RES_SIZE
from .runtime.base import DECODER_INPUT_NAMES, ENCODER_INPUT_NAMES

MODEL_JSON = "model.json"
SCHEMES = ("qdq", "dynamic")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "output-mse")
DEFAULT_SCHEME = "qdq"
DEFAULT_CALIBRATION = "output-mse"
DEFAULT_CALIBRATION_IMAGES = 4
#: toy-world calibration scenes (training uses 10_000 + i, held-out checks 1_000_000 + i,
#: the evaluation 3_000_000 + i): never scored on
CALIBRATION_SEED0 = 4_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: the clipping fractions ``output-mse`` tries (1.0 = min/max)
OUTPUT_MSE_GRID = (0.25, 0.35, 0.45, 0.55, 0.65, 0.72, 0.8, 0.86, 0.92, 0.96, 1.0)
#: rows (tokens, pixels) of each activation ``output-mse`` keeps per calibration run
OUTPUT_MSE_ROWS = 2048
#: which layer types are quantised, per part (see docs/deployment.md, "int8 models": Conv in int8 measured no
#: faster on CPU here, and the first convolutions see the image itself)
DEFAULT_OPS = {"encoder": ("MatMul", "Gemm"), "decoder": ("MatMul", "Gemm")}
WEIGHTED_OPS = ("MatMul", "Gemm", "Conv")


class QuantizeError(RuntimeError):
    """Quantisation failed (bad calibration input, a graph ONNX Runtime cannot quantise)."""


@dataclass(frozen=True)
class QuantizeOptions:
    scheme: str = DEFAULT_SCHEME
    calibration: str = DEFAULT_CALIBRATION
    calibration_images: str | None = None  # a folder; None: toy-world scenes
    num_images: int = DEFAULT_CALIBRATION_IMAGES
    encoder_ops: tuple[str, ...] = DEFAULT_OPS["encoder"]
    decoder_ops: tuple[str, ...] = DEFAULT_OPS["decoder"]

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"int8 scheme must be one of {', '.join(SCHEMES)}, not '{self.scheme}'")
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}, not '{self.calibration}'")
        if not 1 <= self.num_images <= 1000:
            raise ValueError(f"calibration images must be 1..1000, not {self.num_images}")
        for ops in (self.encoder_ops, self.decoder_ops):
            bad = [op for op in ops if op not in WEIGHTED_OPS]
            if bad or not ops:
                raise ValueError(f"quantised layer types must be among {', '.join(WEIGHTED_OPS)}, not {list(ops)}")
        if self.calibration_images is not None and self.scheme == "dynamic":
            raise ValueError("--calibration-images needs the qdq scheme: dynamic quantisation is not calibrated")

    def ops(self, part: str) -> tuple[str, ...]:
        return self.encoder_ops if part == "encoder" else self.decoder_ops


# ---------------------------------------------------------------------------------
# the graph: which layers are quantised
# ---------------------------------------------------------------------------------
def weighted_nodes(model, op_types: Iterable[str]) -> list:
    """Nodes of ``op_types`` whose weight (input 1) is a constant initializer; a MatMul
    or Gemm only with a 2-D weight (the products of two activations stay float)."""
    inits = {init.name: init for init in model.graph.initializer}
    wanted = set(op_types)
    chosen = []
    for node in model.graph.node:
        if node.op_type not in wanted or len(node.input) < 2 or node.input[1] not in inits:
            continue
        dims = list(inits[node.input[1]].dims)
        if node.op_type in ("MatMul", "Gemm") and len(dims) != 2:
            continue
        if node.op_type == "Conv" and len(dims) != 4:
            continue
        chosen.append(node)
    return chosen


def _name_nodes(model, prefix: str) -> None:
    """Give every unnamed node a name (nodes_to_quantize selects by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{prefix}_{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


# ---------------------------------------------------------------------------------
# calibration data
# ---------------------------------------------------------------------------------
@dataclass
class CalibrationImage:
    name: str
    rgb: np.ndarray  # HxWx3 uint8
    boxes: np.ndarray | None = None  # (N, 4) known objects (toy scenes), original pixels


def load_calibration_images(folder: str | os.PathLike | None, count: int) -> tuple[list[CalibrationImage], dict]:
    """``count`` images from ``folder`` (spread over its sorted files), else toy scenes.
    Returns the images and their description for model.json."""
    if folder is None:
        from .toy.scenes import TRAIN_STYLES, make_scene

        images = []
        for i in range(count):
            seed = CALIBRATION_SEED0 + i
            scene = make_scene(seed, 640, 480, TRAIN_STYLES[i % len(TRAIN_STYLES)])
            images.append(CalibrationImage(f"toy scene {seed}", scene.image, scene.boxes()))
        return images, {"source": "toy-world scenes", "seeds": [CALIBRATION_SEED0, CALIBRATION_SEED0 + count - 1],
                        "images": count}
    from .transforms import read_rgb

    path = Path(folder)
    if not path.is_dir():
        raise ValueError(f"--calibration-images {path}: not a directory of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--calibration-images {path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    # spread over the folder (a recording's frames are in time order); an unreadable file is
    # skipped and the next one in that order taken instead
    spread = [int(i) for i in np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).round())]
    order = [files[i] for i in spread] + [f for i, f in enumerate(files) if i not in set(spread)]
    images, skipped = [], []
    for file in order:
        if len(images) == count:
            break
        try:
            images.append(CalibrationImage(file.name, read_rgb(file)))
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a broken file
            skipped.append(f"{file.name} ({type(exc).__name__})")
    if not images:
        raise ValueError(f"--calibration-images {path}: none of the images could be read: {', '.join(skipped)}")
    return images, {"source": str(path.resolve()), "images": len(images), "files": [im.name for im in images],
                    "unreadable": skipped}


def encoder_feeds(images: list[CalibrationImage]) -> list[dict[str, np.ndarray]]:
    from .transforms import ImagePreprocessor, resize_longest_side

    pre = ImagePreprocessor()
    return [{ENCODER_INPUT_NAMES[0]: pre(resize_longest_side(im.rgb)).copy()} for im in images]


def _prompt_sets(image: CalibrationImage, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(coords, labels) in model-input pixels: the image's boxes (known objects, else
    seeded boxes of 5-60% of the image), single clicks, and clicks with a background point."""
    from .transforms import preprocess_shape

    rng = np.random.default_rng(seed)
    height, width = image.rgb.shape[:2]
    new_h, new_w = preprocess_shape(height, width)
    scale = np.array([new_w / width, new_h / height], np.float32)
    if image.boxes is not None and len(image.boxes):
        boxes = image.boxes.astype(np.float32)
    else:
        sizes = rng.uniform(0.05, 0.6, (8, 2)) * (width, height)
        corner = rng.uniform(0, 1, (8, 2)) * ((width, height) - sizes)
        boxes = np.concatenate([corner, corner + sizes], 1).astype(np.float32)
    box_coords = boxes.reshape(-1, 2, 2) * scale
    box_labels = np.tile(np.array([[2, 3]], np.float32), (len(boxes), 1))
    centres = box_coords.mean(axis=1, keepdims=True)  # (N, 1, 2)
    clicks = np.concatenate([centres, np.zeros_like(centres)], 1)  # padding point, as the predictor adds
    click_labels = np.tile(np.array([[1, -1]], np.float32), (len(boxes), 1))
    other = rng.uniform(0, 1, (len(boxes), 1, 2)).astype(np.float32) * (new_w, new_h)
    fg_bg = np.concatenate([centres, other, np.zeros_like(centres)], 1)
    fg_bg_labels = np.tile(np.array([[1, 0, -1]], np.float32), (len(boxes), 1))
    return [(box_coords.astype(np.float32), box_labels), (clicks.astype(np.float32), click_labels),
            (fg_bg.astype(np.float32), fg_bg_labels)]


#: prompts per calibration batch when every decoder feed must have one shape
UNIFORM_BOXES = 8


def decoder_feeds(encoder_path: Path, decoder_path: Path, images: list[CalibrationImage],
                  enc_inputs: list[dict], uniform: bool = False) -> list[dict[str, np.ndarray]]:
    """Decoder inputs on the fp32 encoder's embeddings: every prompt set without a mask,
    then the box prompts again with their own first-pass low-res logits as mask input.

    ``uniform``: only box prompts, ``UNIFORM_BOXES`` per image (repeated or cut), no mask
    input: ONNX Runtime's histogram calibrators (entropy, percentile) stack each tensor
    over all feeds and fail on differing shapes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    encoder = ort.InferenceSession(str(encoder_path), options, providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(decoder_path), options, providers=["CPUExecutionProvider"])
    no_mask = np.zeros((1, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
    feeds = []
    for i, (image, enc) in enumerate(zip(images, enc_inputs)):
        (embedding,) = encoder.run(None, enc)
        sets = _prompt_sets(image, i)
        if uniform:
            coords, labels = sets[0]
            pick = np.resize(np.arange(len(coords)), UNIFORM_BOXES)
            feeds.append(dict(zip(DECODER_INPUT_NAMES, (embedding, coords[pick], labels[pick], no_mask,
                                                        np.zeros(1, np.float32)))))
            continue
        for j, (coords, labels) in enumerate(sets):
            feed = dict(zip(DECODER_INPUT_NAMES, (embedding, coords, labels, no_mask, np.zeros(1, np.float32))))
            feeds.append(feed)
            if j == 0:
                _, low_res = decoder.run(None, feed)
                best = low_res[:, :1]  # (N, 1, 256, 256)
                feeds.append(dict(zip(DECODER_INPUT_NAMES, (embedding, coords, labels, np.ascontiguousarray(best),
                                                            np.ones(len(coords), np.float32)))))
    return feeds


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: list[dict]) -> None:
        self._feeds = feeds
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


# ---------------------------------------------------------------------------------
# output-MSE calibration
# ---------------------------------------------------------------------------------
def _fake_quant(x: np.ndarray, amax: float, levels: int = 127) -> np.ndarray:
    scale = max(amax, 1e-12) / levels
    return np.clip(np.round(x / scale), -levels, levels) * scale


def _weight_per_channel(weight: np.ndarray, axis: int) -> np.ndarray:
    """Symmetric int8 per output channel, as the QDQ export quantises weights."""
    moved = np.moveaxis(weight, axis, 0)
    amax = np.abs(moved.reshape(len(moved), -1)).max(axis=1)
    scale = np.maximum(amax, 1e-12) / 127.0
    shape = (-1,) + (1,) * (moved.ndim - 1)
    q = np.clip(np.round(moved / scale.reshape(shape)), -127, 127) * scale.reshape(shape)
    return np.moveaxis(q, 0, axis)


def _conv_patches(x: np.ndarray, node, weight_shape, rows: int, rng) -> np.ndarray:
    """Input patches at ``rows`` random output positions of a Conv: (P, G, Cin/G*kh*kw)."""
    attrs = {a.name: a for a in node.attribute}
    kh, kw = weight_shape[2:]
    group = attrs["group"].i if "group" in attrs else 1
    strides = list(attrs["strides"].ints) if "strides" in attrs else [1, 1]
    dil = list(attrs["dilations"].ints) if "dilations" in attrs else [1, 1]
    pads = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
    if "auto_pad" in attrs and attrs["auto_pad"].s not in (b"NOTSET", b""):
        raise QuantizeError(f"{node.name}: auto_pad convolutions are not handled by output-mse")
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    out_h = (xp.shape[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    out_w = (xp.shape[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    count = min(rows, n * out_h * out_w)
    flat = rng.choice(n * out_h * out_w, count, replace=False)
    b, rest = np.divmod(flat, out_h * out_w)
    oy, ox = np.divmod(rest, out_w)
    ky, kx = np.meshgrid(np.arange(kh) * dil[0], np.arange(kw) * dil[1], indexing="ij")
    ys = oy[:, None] * strides[0] + ky.reshape(1, -1)
    xs = ox[:, None] * strides[1] + kx.reshape(1, -1)
    patches = xp[b[:, None, None], np.arange(c)[None, :, None], ys[:, None, :], xs[:, None, :]]  # (P, C, k)
    return patches.reshape(count, group, (c // group) * kh * kw)


class _Consumer:
    """One quantised layer reading an activation: its float and quantised outputs on samples."""

    def __init__(self, node, weight: np.ndarray) -> None:
        self.node = node
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Conv":
            group = attrs["group"].i if "group" in attrs else 1
            cout = weight.shape[0]
            # (G, Cin/G*kh*kw, Cout/G)
            self.w = weight.reshape(group, cout // group, -1).transpose(0, 2, 1)
            self.wq = _weight_per_channel(weight, 0).reshape(group, cout // group, -1).transpose(0, 2, 1)
            self.weight_shape = weight.shape
        else:
            trans_b = node.op_type == "Gemm" and "transB" in attrs and attrs["transB"].i == 1
            w = weight.T if trans_b else weight  # (K, N)
            self.w, self.wq = w, _weight_per_channel(w, 1)
            if node.op_type == "Gemm" and "transA" in attrs and attrs["transA"].i == 1:
                raise QuantizeError(f"{node.name}: Gemm with transA is not handled by output-mse")
        self.samples: list[np.ndarray] = []

    def collect(self, x: np.ndarray, rows: int, rng) -> None:
        if self.node.op_type == "Conv":
            self.samples.append(_conv_patches(x, self.node, self.weight_shape, rows, rng))
        else:
            flat = x.reshape(-1, x.shape[-1])
            pick = rng.choice(len(flat), min(rows, len(flat)), replace=False)
            self.samples.append(flat[pick])

    def errors(self, grid_amax: np.ndarray) -> np.ndarray:
        """Output MSE of the quantised layer for each clipping magnitude."""
        x = np.concatenate(self.samples).astype(np.float32)
        if self.node.op_type == "Conv":
            ref = np.einsum("pgk,gkn->pgn", x, self.w)
        else:
            ref = x @ self.w
        out = np.empty(len(grid_amax))
        for i, amax in enumerate(grid_amax):
            xq = _fake_quant(x, float(amax))
            got = np.einsum("pgk,gkn->pgn", xq, self.wq) if self.node.op_type == "Conv" else xq @ self.wq
            out[i] = float(np.mean((got - ref) ** 2))
        return out


def output_mse_ranges(model_path: Path, nodes: list, feeds: list[dict], rows: int = OUTPUT_MSE_ROWS,
                      grid: Iterable[float] = OUTPUT_MSE_GRID, seed: int = 0) -> tuple[dict, dict]:
    """Per activation feeding ``nodes``: the symmetric range minimising the summed output
    MSE of its consumers. Returns ({tensor: amax}, a summary for model.json)."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[_Consumer]] = {}
    for node in nodes:
        weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        consumers.setdefault(node.input[0], []).append(_Consumer(node, weight))
    graph_outputs = {o.name for o in model.graph.output}
    for name in consumers:
        if name not in graph_outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # no fusion: the tensors asked for must exist as written
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = list(consumers)
    rng = np.random.default_rng(seed)
    peak = {name: 0.0 for name in names}
    per_run = max(1, rows // max(1, len(feeds)))
    for feed in feeds:
        values = session.run(names, feed)
        for name, value in zip(names, values):
            peak[name] = max(peak[name], float(np.abs(value).max()) if value.size else 0.0)
            for consumer in consumers[name]:
                consumer.collect(value, per_run, rng)
        del values
    grid = np.asarray(tuple(grid), np.float64)
    ranges, fractions, gains = {}, [], []
    for name in names:
        if peak[name] <= 0.0:
            continue
        amaxes = grid * peak[name]
        total = sum(c.errors(amaxes) for c in consumers[name])
        best = int(np.argmin(total))
        ranges[name] = float(amaxes[best])
        fractions.append(float(grid[best]))
        minmax_error = float(total[-1]) if grid[-1] == 1.0 else float("nan")
        if minmax_error > 0:
            gains.append(float(total[best]) / minmax_error)
    summary = {"tensors": len(ranges), "grid": [float(grid[0]), float(grid[-1]), len(grid)],
               "rows_per_tensor": per_run * len(feeds),
               "clip_fraction_median": round(float(np.median(fractions)), 3) if fractions else None,
               "clip_fraction_min": round(float(min(fractions)), 3) if fractions else None,
               "output_mse_vs_minmax_median": round(float(np.median(gains)), 4) if gains else None}
    return ranges, summary


# ---------------------------------------------------------------------------------
# quantising one graph
# ---------------------------------------------------------------------------------
def quantize_graph(src: Path, dst: Path, part: str, options: QuantizeOptions, feeds: list[dict] | None,
                   log: Callable[[str], None] = print) -> dict:
    """Quantise one ONNX graph; returns what model.json records about it."""
    import logging

    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    started = time.perf_counter()
    # onnxruntime.quantization logs advice ("consider pre-processing": measured here, see
    # docs/deployment.md) on the root logger; the command prints its own lines
    logging.disable(logging.WARNING)
    model = onnx.load(str(src))
    _name_nodes(model, part)
    named = dst.with_suffix(".named.onnx")
    onnx.save(model, str(named))
    try:
        nodes = weighted_nodes(model, options.ops(part))
        if not nodes:
            raise QuantizeError(f"{src.name}: no {'/'.join(options.ops(part))} layer with constant weights to quantise")
        names = [n.name for n in nodes]
        ops = sorted({n.op_type for n in nodes})
        record: dict = {"quantized_layers": {op: sum(n.op_type == op for n in nodes) for op in ops}}
        if options.scheme == "dynamic":
            quantize_dynamic(str(named), str(dst), op_types_to_quantize=ops, nodes_to_quantize=names,
                             per_channel=True, weight_type=QuantType.QInt8)
            record["activations"] = "int8 per call from each tensor's own range (dynamic)"
        else:
            extra = {"ActivationSymmetric": True, "WeightSymmetric": True}
            method = {"minmax": CalibrationMethod.MinMax, "output-mse": CalibrationMethod.MinMax,
                      "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[
                options.calibration]
            if options.calibration == "percentile":
                extra["CalibPercentile"] = 99.999
            if options.calibration == "output-mse":
                t = time.perf_counter()
                ranges, summary = output_mse_ranges(named, nodes, feeds)
                extra["TensorQuantOverrides"] = {name: [{"rmin": np.float32(-amax), "rmax": np.float32(amax)}]
                                                 for name, amax in ranges.items()}
                record["output_mse"] = summary
                log(f"  {part}: output-MSE ranges for {len(ranges)} activations ({time.perf_counter() - t:.0f} s; "
                    f"median clip {summary['clip_fraction_median']} of the largest value, output MSE "
                    f"x{summary['output_mse_vs_minmax_median']} of min/max's)")
            # output-mse sets every quantised activation's range itself: ONNX Runtime's own min/max pass
            # (which it needs to run) then only has to see one input
            reader = _Reader(feeds[:1] if options.calibration == "output-mse" else feeds)
            quantize_static(str(named), str(dst), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=ops,
                            nodes_to_quantize=names, per_channel=True, reduce_range=False,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=method, extra_options=extra)
            record["activations"] = "int8 per tensor, symmetric, fixed by calibration"
        record["weights"] = "int8 per output channel, symmetric"
        record["seconds"] = round(time.perf_counter() - started, 1)
    finally:
        logging.disable(logging.NOTSET)
        named.unlink(missing_ok=True)
        for leftover in dst.parent.glob(dst.stem + "*-augmented*"):
            leftover.unlink(missing_ok=True)
    log(f"  {part}: {sum(record['quantized_layers'].values())} layers int8 "
        f"({', '.join(f'{v} {k}' for k, v in record['quantized_layers'].items())}), {record['seconds']:.0f} s")
    return record


# ---------------------------------------------------------------------------------
# the model directory
# ---------------------------------------------------------------------------------
def quantize_model_dir(src_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       options: QuantizeOptions = QuantizeOptions(),
                       log: Callable[[str], None] = print) -> dict:
    """Write an int8 model directory from the fp32 one ``export`` wrote; returns model.json.

    On failure nothing this call wrote stays behind. ``src_dir`` and ``out_dir`` may not
    be the same directory.
    """
    from .export import _io_spec
    from .runtime.onnx_backend import read_model_info
    from .weights import sha256_file

    started = time.perf_counter()
    info = read_model_info(src_dir)
    src = Path(info.pop("_dir"))
    out = Path(out_dir)
    if out.resolve() == src.resolve():
        raise ValueError("the int8 model needs its own directory (it would overwrite the fp32 files)")
    if info.get("precision", "fp32") != "fp32":
        raise ValueError(f"{src} is already {info.get('precision')}: quantise the fp32 export")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a directory")
    images, calibration = (None, None)
    if options.scheme == "qdq":
        images, calibration = load_calibration_images(options.calibration_images, options.num_images)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        (out / MODEL_JSON).unlink(missing_ok=True)
        record = {"dtype": "int8", "scheme": options.scheme, "format": "QDQ" if options.scheme == "qdq" else
                  "QOperator (DynamicQuantizeLinear + MatMulInteger)",
                  "calibration": {"method": options.calibration, **calibration} if calibration else None,
                  "stays_float": ["LayerNormalization", "Softmax", "GELU (Erf)", "products of two activations "
                                  "(attention scores, attention x value, the decoder's hypernetwork x upscaled "
                                  "embedding)", "Conv" if "Conv" not in options.encoder_ops else None,
                                  "element-wise ops, positional encodings, resizing and normalisation"],
                  "source": {"encoder_sha256": info["encoder"]["sha256"], "decoder_sha256": info["decoder"]["sha256"]},
                  "runs_on": ["onnxruntime CPU", "onnxruntime CUDA", "TensorRT (explicit quantisation)"]
                  if options.scheme == "qdq" else ["onnxruntime CPU"]}
        record["stays_float"] = [s for s in record["stays_float"] if s]
        enc_inputs = dec_inputs = None
        if options.scheme == "qdq":
            log(f"calibrating on {len(images)} image{'s' if len(images) != 1 else ''} "
                f"({calibration['source']}), method {options.calibration} ...")
            enc_inputs = encoder_feeds(images)
            uniform = options.calibration in ("entropy", "percentile")
            dec_inputs = decoder_feeds(src / info["encoder"]["file"], src / info["decoder"]["file"], images, enc_inputs,
                                       uniform)
            if uniform:
                record["calibration"]["decoder_prompts"] = (f"{UNIFORM_BOXES} box prompts per image, no mask input "
                                                            "(ONNX Runtime's histogram calibration needs equal shapes)")
        parts = {}
        for part, feeds in (("encoder", enc_inputs), ("decoder", dec_inputs)):
            target = out / info[part]["file"]
            written.append(target)
            parts[part] = quantize_graph(src / info[part]["file"], target, part, options, feeds, log)
        record["parts"] = parts
        for part in ("encoder", "decoder"):
            spec = _io_spec(out / info[part]["file"])
            spec.pop("ops")
            info[part] = {"file": info[part]["file"], "sha256": sha256_file(out / info[part]["file"]), **spec}
        info["precision"] = "int8"
        info["quantization"] = record
        info["quantized_at"] = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        info["validation"] = {"skipped": True, "note": "int8: see quantization and 'python -m mobilesam_ros.quantize "
                                                       "accuracy' for its agreement with fp32"}
        tmp = out / (MODEL_JSON + ".tmp")
        written.append(tmp)
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, out / MODEL_JSON)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    log(f"wrote {out / MODEL_JSON} (int8 {options.scheme}, {time.perf_counter() - started:.0f} s in all)")
    return info


def export_int8(checkpoint: str | os.PathLike, out_dir: str | os.PathLike, options: QuantizeOptions = QuantizeOptions(),
                log: Callable[[str], None] = print, **export_options) -> dict:
    """``export`` to a temporary fp32 directory beside ``out_dir``, then quantise into
    ``out_dir`` (needs torch, as export does); the fp32 files are removed afterwards."""
    import tempfile

    from .export import export_model

    out = Path(out_dir)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fp32-", dir=parent) as tmp:
        export_model(checkpoint, Path(tmp) / "fp32", log=log, **export_options)
        return quantize_model_dir(Path(tmp) / "fp32", out, options, log=log)


# ---------------------------------------------------------------------------------
# measuring an int8 directory against its fp32 source
# ---------------------------------------------------------------------------------
def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def compare_speed(fp32_dir, int8_dir, rounds: int = 5, threads: int = 2, boxes: int = 100,
                  log: Callable[[str], None] = print, backend: str = "onnxruntime", device: str = "cpu") -> dict:
    """fp32 and int8 side by side in one process, alternating, ``rounds`` times each:
    encoder and a ``boxes``-box decode (the runtime's own chunks) through ONNX Runtime
    (CPU). Wall-clock and process CPU time: on a shared machine the CPU time (the work
    done) is the steadier figure; the load average is recorded with them."""
    import statistics

    from .bench.model import bench_boxes, cpu_model, load_average, synthetic_image
    from .runtime import create_runtime
    from .transforms import ImagePreprocessor, preprocess_shape, resize_longest_side

    runtimes = {name: create_runtime(d, backend, device=device, num_threads=threads)
                for name, d in (("fp32", fp32_dir), ("int8", int8_dir))}
    height, width = 1365, 2048
    image = ImagePreprocessor()(resize_longest_side(synthetic_image(height, width))).copy()
    new_h, new_w = preprocess_shape(height, width)
    corners = bench_boxes(boxes, (height, width)).reshape(-1, 2, 2) * np.array([new_w / width, new_h / height],
                                                                              np.float32)
    labels = np.tile(np.array([[2, 3]], np.float32), (boxes, 1))
    no_mask = np.zeros((1, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32)
    no_flag = np.zeros(1, np.float32)
    embeddings = {name: rt.encode(image) for name, rt in runtimes.items()}  # warm-up
    for name, rt in runtimes.items():
        rt.decode(embeddings[name], corners, labels, no_mask, no_flag)
    samples = {name: {"encoder": [], "encoder_cpu": [], "decode": [], "decode_cpu": []} for name in runtimes}
    loads = [load_average()]
    for _ in range(rounds):
        for name, rt in runtimes.items():
            wall, cpu = time.perf_counter(), time.process_time()
            rt.encode(image)
            samples[name]["encoder"].append(time.perf_counter() - wall)
            samples[name]["encoder_cpu"].append(time.process_time() - cpu)
            wall, cpu = time.perf_counter(), time.process_time()
            rt.decode(embeddings[name], corners, labels, no_mask, no_flag)
            samples[name]["decode"].append(time.perf_counter() - wall)
            samples[name]["decode_cpu"].append(time.process_time() - cpu)
        loads.append(load_average())
    result: dict = {"runtime": runtimes["int8"].describe(), "cpu": cpu_model(), "threads": threads,
                    "rounds": rounds, "boxes": boxes,
                    "load_average_1min": [round(x[0], 2) for x in loads if x], "ms": {}, "speedup": {}}
    for name in runtimes:
        result["ms"][name] = {k: {"median": round(statistics.median(v) * 1000, 1), "min": round(min(v) * 1000, 1)}
                              for k, v in samples[name].items()}
    for key in ("encoder", "encoder_cpu", "decode", "decode_cpu"):
        for stat in ("median", "min"):
            result["speedup"][f"{key}_{stat}"] = round(result["ms"]["fp32"][key][stat] / result["ms"]["int8"][key][stat], 3)
    for rt in runtimes.values():
        rt.close()
    log(f"{result['cpu']}, {threads} threads, {rounds} rounds, load {result['load_average_1min']}")
    for key, label in (("encoder", "encoder"), ("decode", f"{boxes}-box decode")):
        f, q = result["ms"]["fp32"], result["ms"]["int8"]
        log(f"  {label}: wall median fp32 {f[key]['median']:.0f} / int8 {q[key]['median']:.0f} ms "
            f"({result['speedup'][key + '_median']:.2f}x; min {result['speedup'][key + '_min']:.2f}x), CPU time "
            f"{f[key + '_cpu']['median']:.0f} / {q[key + '_cpu']['median']:.0f} ms "
            f"({result['speedup'][key + '_cpu_median']:.2f}x)")
    return result


def compare_toy(fp32_dir, int8_dir, scenes: int = 20, styles=("gradient",), threads: int = 0) -> dict:
    """Toy-world held-out scenes: box and point IoU against truth for both models, and
    the int8 masks' IoU with the fp32 masks (agreement), through the real predictor."""
    from .predictor import SamPredictor
    from .runtime.onnx_backend import OnnxRuntime
    from .toy.evaluate import eval_scene, interior_point

    preds = {name: SamPredictor(OnnxRuntime(d, num_threads=threads)) for name, d in (("fp32", fp32_dir),
                                                                                     ("int8", int8_dir))}
    scores = {name: {"box": [], "point": []} for name in preds}
    agree = {"box": [], "point": []}
    for style in styles:
        for index in range(scenes):
            scene = eval_scene(index, style)
            boxes = scene.boxes()
            masks = {}
            for name, predictor in preds.items():
                predictor.set_image(scene.image)
                result = predictor.predict_boxes(boxes)
                best = np.argmax(result.iou_predictions, axis=1)
                box_masks = [result.masks[k, best[k]] for k in range(len(boxes))]
                point_masks = []
                for truth in scene.masks:
                    p = predictor.predict(point_coords=interior_point(truth), point_labels=[1], multimask_output=True)
                    point_masks.append(p.masks[int(np.argmax(p.iou_predictions))])
                for k, truth in enumerate(scene.masks):
                    scores[name]["box"].append(_mask_iou(box_masks[k], truth))
                    scores[name]["point"].append(_mask_iou(point_masks[k], truth))
                masks[name] = (box_masks, point_masks)
            for k in range(len(boxes)):
                agree["box"].append(_mask_iou(masks["fp32"][0][k], masks["int8"][0][k]))
                agree["point"].append(_mask_iou(masks["fp32"][1][k], masks["int8"][1][k]))
    out = {"scenes": scenes * len(styles), "styles": list(styles), "objects": len(agree["box"])}
    for name in preds:
        out[name] = {k: round(float(np.mean(v)), 4) for k, v in scores[name].items()}
    out["box_iou_loss"] = round(out["fp32"]["box"] - out["int8"]["box"], 4)
    out["point_iou_loss"] = round(out["fp32"]["point"] - out["int8"]["point"], 4)
    out["agreement"] = {k: {"mean": round(float(np.mean(v)), 4), "min": round(float(np.min(v)), 4)}
                        for k, v in agree.items()}
    return out


def compare_parity(fp32_dir, int8_dir, fixture, threads: int = 0, backend: str = "onnxruntime",
                   device: str = "cpu") -> dict:
    """The parity fixture (``../shared/fixtures/parity``; fp32_dir exported from its
    checkpoint): embedding agreement (cosine, relative error) and full-size mask IoU of
    int8 against fp32 over its point, box, box-batch and multi-point cases."""
    from .predictor import Prompt, SamPredictor
    from .runtime import create_runtime
    from .transforms import read_rgb

    fixture = Path(fixture)
    cases = [c for c in json.loads((fixture / "cases.json").read_text())["cases"]
             if c["id"] in ("point", "box", "boxes_batch", "points_fg_bg", "points_multi", "box_point")]
    images = sorted({c["image"] for c in cases})
    preds = {name: SamPredictor(create_runtime(d, backend, device=device, num_threads=threads))
             for name, d in (("fp32", fp32_dir), ("int8", int8_dir))}
    cosines, rel, ious = [], [], []
    for image in images:
        rgb = read_rgb(fixture / "images" / image)
        emb = {name: p.set_image(rgb) for name, p in preds.items()}
        a, b = emb["fp32"].embedding.ravel().astype(np.float64), emb["int8"].embedding.ravel().astype(np.float64)
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
        rel.append(float(np.linalg.norm(a - b) / np.linalg.norm(a)))
        for c in (c for c in cases if c["image"] == image):
            if "boxes" in c:
                prompts = [Prompt(box=np.asarray(box, np.float32)) for box in c["boxes"]]
            else:
                prompts = [Prompt(np.asarray(c["points"], np.float32) if "points" in c else None,
                                  np.asarray(c["labels"], np.float32) if "labels" in c else None,
                                  np.asarray(c["box"], np.float32) if "box" in c else None)]
            masks = {}
            for name, p in preds.items():
                _, logits = p.decode_low_res(prompts, bool(c.get("multimask")), emb[name])
                masks[name] = p.postprocessor(emb[name]).masks(logits).copy()
            f, q = masks["fp32"], masks["int8"]
            ious.extend(_mask_iou(x, y) for x, y in zip(f.reshape(-1, *f.shape[-2:]), q.reshape(-1, *q.shape[-2:])))
    describe = preds["int8"].runtime.describe() if hasattr(preds["int8"], "runtime") else backend
    for p in preds.values():
        if hasattr(p, "runtime"):
            p.runtime.close()
    return {"runtime": describe, "images": images, "cases": len(cases), "masks": len(ious),
            "embedding_cosine_min": round(min(cosines), 5), "embedding_rel_error_max": round(max(rel), 5),
            "mask_iou_min": round(min(ious), 4), "mask_iou_mean": round(float(np.mean(ious)), 4)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mobilesam_ros.quantize",
                                     description="measure an int8 model directory against its fp32 source")
    parser.add_argument("what", choices=("speed", "toy", "parity"))
    parser.add_argument("fp32", help="the fp32 model directory (export)")
    parser.add_argument("int8", help="the int8 model directory (export --quantize int8)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--boxes", type=int, default=100)
    parser.add_argument("--scenes", type=int, default=20, help="toy scenes per style")
    parser.add_argument("--styles", default="gradient,stripes")
    parser.add_argument("--fixture", default=str(Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "parity"))
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    if args.what == "speed":
        result = compare_speed(args.fp32, args.int8, args.rounds, args.threads, args.boxes)
    elif args.what == "toy":
        result = compare_toy(args.fp32, args.int8, args.scenes, tuple(args.styles.split(",")), args.threads)
    else:
        result = compare_parity(args.fp32, args.int8, args.fixture, args.threads)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
