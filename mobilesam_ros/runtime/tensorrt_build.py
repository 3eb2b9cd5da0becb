"""TensorRT engine building and the engine cache (no torch; tensorrt imported lazily).

Supported: TensorRT 10.x (fp32 and fp16; JetPack 6 ships 10.x, and TensorRT 11 does
not support Jetson) and TensorRT 11.x for fp32 engines. TensorRT 11 removed weak
typing (``BuilderFlag.FP16`` / ``OBEY_PRECISION_CONSTRAINTS``, per-layer precision
hints): an fp16 engine there needs an ONNX graph that is fp16 itself (ModelOpt
AutoCast), which ``export`` does not write, so fp16 with TensorRT 11 is refused with
that explanation. The runtime calls used (named tensors, ``execute_async_v3``,
``build_serialized_network``, ``IProgressMonitor``, timing caches) are the same in both.

Engines are built from the exported ONNX files and cached on disk under a key made
of everything that makes an engine invalid: the ONNX file's sha256, the TensorRT
version, the GPU (name and compute capability), the precision options and the
decoder's optimisation profile. Change any of them and a new engine is built; the
old file stays until removed.

fp16: plain fp16 is reported to corrupt the TinyViT encoder (NanoSAM builds it in
fp32; OpenVINO f16 gave the same embedding for every input), so by default
LayerNorm (and the reductions of the channel LayerNorms), softmax and reductions
are pinned to fp32 (``fp32_layernorm``) and TensorRT is told to obey that.
fp32 builds disable TF32 so that "fp32" meets the parity tolerance.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..weights import sha256_file
from .base import RuntimeUnavailable
from .onnx_backend import (
    DEFAULT_TRT_MAX_POINTS,
    DEFAULT_TRT_MAX_PROMPTS,
    DEFAULT_TRT_OPT_POINTS,
    DEFAULT_TRT_OPT_PROMPTS,
    decoder_profile,
    read_model_info,
)

ENGINE_DIR = "trt_engines"
PARTS = ("encoder", "decoder")
CACHE_KEY_VERSION = 1
MIN_TENSORRT_MAJOR = 10
DEFAULT_WORKSPACE_MB = 2048

#: layer types kept in fp32 with ``fp32_layernorm`` (TensorRT LayerType names)
FP32_LAYER_TYPES = frozenset({"NORMALIZATION", "SOFTMAX", "REDUCE"})
#: layers of the channel LayerNorms written out as ops (LayerNorm2d: encoder neck,
#: prompt-encoder mask downscaling, plain decoder's upscaling), named after ONNX nodes
FP32_LAYER_NAME = re.compile(r"(/neck/neck\.[13]/|/mask_downscaling\.[14]/|/output_upscaling\.1/|norm)", re.IGNORECASE)


def keep_in_fp32(layer_type: str, layer_name: str) -> bool:
    """Whether a layer is pinned to fp32 in an fp16 build with ``fp32_layernorm``."""
    return layer_type in FP32_LAYER_TYPES or bool(FP32_LAYER_NAME.search(layer_name or ""))


@dataclass(frozen=True)
class BuildOptions:
    precision: str = "fp32"  # fp32 | fp16
    fp32_layernorm: bool = True  # fp16 only: LayerNorm / softmax / reductions in fp32
    max_prompts: int = DEFAULT_TRT_MAX_PROMPTS
    max_points: int = DEFAULT_TRT_MAX_POINTS
    opt_prompts: int = DEFAULT_TRT_OPT_PROMPTS
    opt_points: int = DEFAULT_TRT_OPT_POINTS
    workspace_mb: int = DEFAULT_WORKSPACE_MB

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"TensorRT precision must be fp32 or fp16, not '{self.precision}'")
        decoder_profile(self.max_prompts, self.max_points, self.opt_prompts, self.opt_points)  # validates
        if self.workspace_mb < 64:
            raise ValueError("workspace must be at least 64 MB")

    def profile(self, part: str) -> dict[str, tuple] | None:
        """{input: (min, opt, max)} for the decoder; None for the (static) encoder."""
        if part == "encoder":
            return None
        return decoder_profile(self.max_prompts, self.max_points, self.opt_prompts, self.opt_points)

    def key_fields(self, part: str) -> dict:
        """What about the options changes the engine (workspace does not)."""
        fields = {"precision": self.precision}
        if self.precision == "fp16":
            fields["fp32_layernorm"] = self.fp32_layernorm
        profile = self.profile(part)
        if profile:
            fields["profile"] = {name: [list(s) for s in shapes] for name, shapes in profile.items()}
        return fields


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: tuple[int, int]


def engine_cache_key(onnx_sha256: str, part: str, options: BuildOptions, tensorrt_version: str, gpu: GpuInfo) -> str:
    """Hex key of an engine: changes with the ONNX file, TensorRT, the GPU or the options."""
    material = {
        "key_version": CACHE_KEY_VERSION,
        "part": part,
        "onnx_sha256": onnx_sha256,
        "tensorrt": tensorrt_version,
        "gpu": gpu.name,
        "compute_capability": list(gpu.compute_capability),
        **options.key_fields(part),
    }
    blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def engine_path(cache_dir: str | os.PathLike, part: str, options: BuildOptions, key: str) -> Path:
    """``<cache>/<part>-<precision>[-ln32]-<key16>.engine``."""
    tag = options.precision + ("-ln32" if options.precision == "fp16" and options.fp32_layernorm else "")
    return Path(cache_dir) / f"{part}-{tag}-{key[:16]}.engine"


def default_cache_dir(model_dir: str | os.PathLike) -> Path:
    return Path(model_dir) / ENGINE_DIR


# ---------------------------------------------------------------------------------
# TensorRT and CUDA availability (clear errors when either is missing)
# ---------------------------------------------------------------------------------
def import_tensorrt():
    """``import tensorrt`` (version 10 or newer), or RuntimeUnavailable saying what to install."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise RuntimeUnavailable(
            "the tensorrt backend needs TensorRT 10 with its Python bindings (pip install tensorrt-cu12, or "
            "JetPack 6 on Jetson) and an NVIDIA GPU; without them use --backend onnxruntime"
        ) from exc
    version = getattr(trt, "__version__", "0")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_TENSORRT_MAJOR:
        raise RuntimeUnavailable(f"TensorRT {version} found; this backend needs TensorRT {MIN_TENSORRT_MAJOR} or newer")
    return trt


# ---------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------
def _make_progress_monitor(trt, log: Callable[[str], None]):
    """A trt.IProgressMonitor printing phases (TensorRT >= 10.0); None if unsupported."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Progress(base):
        def __init__(self) -> None:
            base.__init__(self)
            self._depth: dict[str, int] = {}
            self._steps: dict[str, int] = {}
            self._started = time.perf_counter()

        def phase_start(self, phase_name, parent_phase, num_steps):
            depth = self._depth.get(parent_phase, -1) + 1 if parent_phase else 0
            self._depth[phase_name] = depth
            self._steps[phase_name] = num_steps
            if depth <= 1:
                log(f"{'  ' * depth}[{time.perf_counter() - self._started:6.1f} s] {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            if self._depth.get(phase_name, 9) == 0:
                elapsed = time.perf_counter() - self._started
                log(f"  [{elapsed:6.1f} s] {phase_name}: step {step + 1}/{self._steps.get(phase_name, '?')}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            if self._depth.get(phase_name, 9) == 0:
                log(f"[{time.perf_counter() - self._started:6.1f} s] {phase_name} done")

    return Progress()


def check_precision_supported(trt, precision: str) -> None:
    """RuntimeUnavailable for fp16 on a TensorRT without weak typing (11.x)."""
    if precision == "fp16" and getattr(trt.BuilderFlag, "FP16", None) is None:
        raise RuntimeUnavailable(
            f"fp16 engines need TensorRT 10.x: TensorRT {trt.__version__} removed BuilderFlag.FP16 (strongly typed "
            "networks only; an fp16 engine needs an fp16 ONNX graph, e.g. from ModelOpt AutoCast). Build fp32, or "
            "use TensorRT 10 (JetPack 6), or ONNX Runtime's TensorRT execution provider"
        )


def mark_fp32_layers(trt, network) -> int:
    """Pin LayerNorm / softmax / reduction layers to fp32. Returns how many."""
    floats = {trt.float32, trt.float16}
    count = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not keep_in_fp32(layer.type.name, layer.name):
            continue
        outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outputs:
            continue  # shape computations
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        count += 1
    return count


def count_qdq_layers(trt, network) -> int:
    """Quantize / dequantize layers in a parsed network: an int8 model directory's graphs
    (``export --quantize int8``) carry them, with the scales calibration chose."""
    kinds = {getattr(trt.LayerType, name, None) for name in ("QUANTIZE", "DEQUANTIZE")} - {None}
    return sum(network.get_layer(i).type in kinds for i in range(network.num_layers))


def enable_explicit_int8(trt, config) -> bool:
    """Explicit quantisation: TensorRT 10 builds Q/DQ layers in int8 only with the INT8
    builder flag on a weakly typed network (no calibrator: the scales are in the graph);
    TensorRT 11 has no such flag (strongly typed networks follow the Q/DQ types).
    Returns whether the flag was set."""
    flag = getattr(trt.BuilderFlag, "INT8", None)
    if flag is None:
        return False
    config.set_flag(flag)
    return True


def build_engine(
    onnx_path: str | os.PathLike,
    output: str | os.PathLike,
    part: str,
    options: BuildOptions,
    log: Callable[[str], None] = print,
    progress: bool = True,
    timing_cache: str | os.PathLike | None = None,
) -> Path:
    """Build a serialized TensorRT engine from ``onnx_path`` and write it to ``output``."""
    trt = import_tensorrt()
    check_precision_supported(trt, options.precision)
    onnx_path, output = Path(onnx_path), Path(output)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode since TensorRT 10 (11: strongly typed)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if options.precision == "fp16":
        if not getattr(builder, "platform_has_fast_fp16", True):
            log("warning: this GPU has no fast fp16; the fp16 engine may be slower than fp32")
        config.set_flag(trt.BuilderFlag.FP16)
        if options.fp32_layernorm:
            pinned = mark_fp32_layers(trt, network)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            log(f"{part}: {pinned} LayerNorm / softmax / reduction layers kept in fp32")
    elif getattr(trt.BuilderFlag, "TF32", None) is not None:
        config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32 (parity tolerance 1e-3)
    qdq = count_qdq_layers(trt, network)
    if qdq:
        flagged = enable_explicit_int8(trt, config)
        log(f"{part}: {qdq} Q/DQ layers: explicit int8 quantisation with the graph's scales"
            f"{' (INT8 builder flag set)' if flagged else ''}; the other layers in {options.precision}")
    profile_shapes = options.profile(part)
    if profile_shapes:
        profile = builder.create_optimization_profile()
        for name, (low, opt, high) in profile_shapes.items():
            profile.set_shape(name, low, opt, high)
        config.add_optimization_profile(profile)
    cache = None
    if timing_cache is not None:
        timing_cache = Path(timing_cache)
        cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.exists() else b"")
        config.set_timing_cache(cache, False)
    if progress:
        monitor = _make_progress_monitor(trt, log)
        if monitor is not None:
            config.progress_monitor = monitor
    started = time.perf_counter()
    log(f"building the {part} engine ({options.precision}) from {onnx_path.name}; this takes minutes ...")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build the {part} engine (see the messages above)")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(plan)
    os.replace(tmp, output)
    if cache is not None:
        with open(timing_cache, "wb") as f:
            f.write(cache.serialize())
    log(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - started:.0f} s)")
    return output


@dataclass
class EnginePlan:
    """Where each part's engine lives and whether it must be built."""

    model_dir: Path
    cache_dir: Path
    options: BuildOptions
    tensorrt_version: str
    gpu: GpuInfo
    engines: dict[str, Path] = field(default_factory=dict)
    onnx: dict[str, Path] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    def missing(self) -> list[str]:
        return [part for part in PARTS if not self.engines[part].is_file()]


def plan_engines(model_dir: str | os.PathLike, options: BuildOptions, tensorrt_version: str, gpu: GpuInfo,
                 cache_dir: str | os.PathLike | None = None) -> EnginePlan:
    """Cache keys and engine paths for an exported model directory (no GPU work)."""
    info = read_model_info(model_dir)
    model_dir = Path(info["_dir"])
    plan = EnginePlan(model_dir, Path(cache_dir) if cache_dir else default_cache_dir(model_dir), options,
                      tensorrt_version, gpu)
    for part in PARTS:
        onnx_path = model_dir / info[part]["file"]
        key = engine_cache_key(sha256_file(onnx_path), part, options, tensorrt_version, gpu)
        plan.onnx[part] = onnx_path
        plan.keys[part] = key
        plan.engines[part] = engine_path(plan.cache_dir, part, options, key)
    return plan


def ensure_engines(plan: EnginePlan, log: Callable[[str], None] = print, force: bool = False,
                   progress: bool = True) -> dict[str, Path]:
    """Build the engines the cache lacks (or all, with ``force``); return their paths."""
    for part in PARTS:
        path = plan.engines[part]
        if path.is_file() and not force:
            log(f"{part}: cached engine {path}")
            continue
        build_engine(plan.onnx[part], path, part, plan.options, log=log, progress=progress,
                     timing_cache=plan.cache_dir / "timing.cache")
        meta = {
            "part": part,
            "onnx": str(plan.onnx[part]),
            "key": plan.keys[part],
            "tensorrt": plan.tensorrt_version,
            "gpu": plan.gpu.name,
            "compute_capability": list(plan.gpu.compute_capability),
            **plan.options.key_fields(part),
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return dict(plan.engines)
