"""ONNX Runtime: the default engine for an exported model directory.

Execution providers are tried in the order TensorRT EP, CUDA EP, CPU EP, keeping
those this onnxruntime build has (``device="cpu"`` uses the CPU EP only). Sessions
are created once, here; per call, inputs are bound without copies and outputs are
written into buffers allocated once and grown only when a larger batch arrives.

No torch import: this module runs on the robot.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from ..geometry import EMBED_DIM, EMBED_SIZE, IMAGE_SIZE, LOW_RES_SIZE
from ..variants import DEFAULT_VARIANT, always_three_masks, check_variant
from .base import (
    DECODER_INPUT_NAMES,
    DECODER_OUTPUT_NAMES,
    ENCODER_INPUT_NAMES,
    ENCODER_OUTPUT_NAMES,
    DecoderOutput,
    Runtime,
    RuntimeUnavailable,
    check_decoder_inputs,
    check_everything_defaults,
    thread_output_buffers,
)

MODEL_JSON = "model.json"
TRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GPU_PROVIDER_ORDER = (TRT_EP, CUDA_EP, CPU_EP)
GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

#: decoder optimisation profile for the TensorRT EP (prompts x points); a call outside
#: it makes the EP rebuild its engine, so the defaults cover typical use
DEFAULT_TRT_MAX_PROMPTS = 64
DEFAULT_TRT_MAX_POINTS = 16
DEFAULT_TRT_OPT_PROMPTS = 8
DEFAULT_TRT_OPT_POINTS = 2

#: prompts per decoder run. Measured on 2 CPU cores, 100 boxes with the fast graph:
#: chunks of 8 / 16 / 32 / 100 took 1.69 / 1.67 / 1.64 / 1.61 s, with the process's
#: peak memory at 0.79 / 1.05 / 1.58 / 4.07 GB (ONNX Runtime keeps ~35 MB of
#: intermediates per prompt in its arena), so small chunks cost almost nothing
DEFAULT_CPU_DECODER_BATCH = 8
DEFAULT_CUDA_DECODER_BATCH = 32

_shared_arena_lock = threading.Lock()
_shared_arena_ready: bool | None = None  # None: not tried yet


def shared_cpu_arena(ort) -> bool:
    """Register one CPU memory arena with ONNX Runtime's environment (once per
    process) for every session here to allocate from; False if this build refuses.

    With one arena per session, the encoder's intermediates (~280 MB) and the
    decoder's (~35 MB per prompt in a chunk) are two sets of pages; shared, the
    decoder reuses the pages the encoder has finished with. On our VMs a page touched
    for the first time costs several microseconds in the kernel (and the hypervisor),
    so this took a one-shot 100-box ``segment`` from 2.0 s to 1.2-1.5 s of decoding,
    and the process's peak memory down by the same ~0.3-0.5 GB.
    """
    global _shared_arena_ready
    with _shared_arena_lock:
        if _shared_arena_ready is None:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                # max_mem 0 (no limit), default extend strategy, chunk size and dead bytes
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
                _shared_arena_ready = True
            except Exception:  # noqa: BLE001 - an older or unusual build: per-session arenas, as before
                _shared_arena_ready = False
        return _shared_arena_ready


class ModelDirError(ValueError):
    """A directory that is not a usable exported model."""


def read_model_info(model_dir: str | os.PathLike) -> dict:
    """Read and check ``model.json`` of an exported model directory."""
    path = Path(model_dir)
    if path.is_file() and path.name == MODEL_JSON:
        path = path.parent
    if path.is_file() and path.suffix == ".onnx":
        raise ModelDirError(
            f"{path} is one ONNX file; pass the directory written by 'mobilesam-ros export' (encoder.onnx, "
            "decoder.onnx, model.json)"
        )
    meta = path / MODEL_JSON
    if not meta.is_file():
        raise ModelDirError(
            f"{path} has no {MODEL_JSON}: export a checkpoint with 'mobilesam-ros export --checkpoint CKPT --out {path}'"
        )
    try:
        info = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelDirError(f"cannot read {meta}: {exc}") from exc
    if info.get("format") != "mobilesam_ros.onnx":
        raise ModelDirError(f"{meta} was not written by 'mobilesam-ros export' (format {info.get('format')!r})")
    for part in ("encoder", "decoder"):
        file = path / info[part]["file"]
        if not file.is_file():
            raise ModelDirError(f"{file} is missing (model.json names it); re-run 'mobilesam-ros export'")
    if info.get("num_mask_outputs") not in (1, 4):
        raise ModelDirError(f"{meta}: num_mask_outputs must be 1 or 4, got {info.get('num_mask_outputs')!r}")
    try:  # exports older than the variant field are MobileSAM
        info["variant"] = check_variant(info.get("variant", DEFAULT_VARIANT), source=str(meta))
    except ValueError as exc:
        raise ModelDirError(str(exc)) from exc
    if always_three_masks(info["variant"]) and info["num_mask_outputs"] != 4:
        raise ModelDirError(f"{meta}: a {info['variant']} model needs the 4-output decoder; re-export without --single-mask")
    try:  # segment-everything thresholds recorded for this model (optional)
        info["everything"] = check_everything_defaults(info.get("everything"), str(meta))
    except ValueError as exc:
        raise ModelDirError(str(exc)) from exc
    info["_dir"] = str(path)
    return info


def _version_tuple(version: str) -> tuple[int, ...]:
    """'1.18.0rc1' -> (1, 18, 0)."""
    import re

    return tuple(int(m.group()) if (m := re.match(r"\d+", piece)) else 0 for piece in version.split(".")[:3])


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeUnavailable("the onnxruntime backend needs ONNX Runtime: pip install onnxruntime") from exc
    return ort


def profile_shapes_string(shapes: dict[str, tuple[int, ...]]) -> str:
    """{'point_coords': (8, 2, 2)} -> 'point_coords:8x2x2' (the TensorRT EP's format)."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in dims)}" for name, dims in shapes.items())


def decoder_profile(max_prompts: int, max_points: int, opt_prompts: int, opt_points: int) -> dict[str, tuple]:
    """Min / opt / max shapes of the decoder's dynamic inputs: {name: (min, opt, max)}.

    Shared by the TensorRT EP and native TensorRT. Mask inputs come as a batch of 1
    (shared) or of B (one per prompt), so their range is 1 .. max_prompts.
    """
    if not (1 <= opt_prompts <= max_prompts and 1 <= opt_points <= max_points):
        raise ValueError(
            f"need 1 <= opt <= max for prompts ({opt_prompts}, {max_prompts}) and points ({opt_points}, {max_points})"
        )
    low = LOW_RES_SIZE
    return {
        "point_coords": ((1, 1, 2), (opt_prompts, opt_points, 2), (max_prompts, max_points, 2)),
        "point_labels": ((1, 1), (opt_prompts, opt_points), (max_prompts, max_points)),
        "mask_input": ((1, 1, low, low), (1, 1, low, low), (max_prompts, 1, low, low)),
        "has_mask_input": ((1,), (1,), (max_prompts,)),
    }


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Execution providers for ``device`` ('cpu', 'cuda', 'cuda:N', 'gpu', 'tensorrt', 'auto')."""
    kind = device.split(":")[0].lower()
    if kind == "cpu":
        return [CPU_EP]
    if kind == "tensorrt":
        wanted = (TRT_EP, CUDA_EP, CPU_EP)
        if TRT_EP not in available:
            raise RuntimeUnavailable(
                "device 'tensorrt' asked for, but this onnxruntime has no TensorRT execution provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu and TensorRT 10"
            )
    elif kind in ("cuda", "gpu", "auto"):
        wanted = GPU_PROVIDER_ORDER
    else:
        raise ValueError(f"unknown device '{device}': use cpu, cuda, cuda:N, tensorrt or auto")
    chosen = [p for p in wanted if p in available]
    if kind in ("cuda", "gpu") and not any(p in chosen for p in (TRT_EP, CUDA_EP)):
        raise RuntimeUnavailable(
            f"device '{device}' asked for, but this onnxruntime has no GPU execution provider "
            f"(available: {', '.join(available)}): pip install onnxruntime-gpu, or use --device cpu"
        )
    return chosen or [CPU_EP]


def _load_sessions(ort, options, providers: list[str], encoder: tuple, decoder: tuple, model_dir: Path) -> tuple:
    """The encoder and decoder sessions, (path, provider options) each, built at the same time.

    Building a session (parsing, graph optimisation, kernel set-up) is single-threaded
    and ONNX Runtime releases the GIL while doing it: on 2 CPU cores the encoder's
    ~0.55 s and the decoder's ~0.3 s overlap instead of adding up, which is most of a
    one-shot command's start-up after the imports. With a GPU provider they are built
    one after the other: a TensorRT engine build holds GPU memory, and the encoder's
    alone already runs a 2-4 GB Jetson Nano out of memory.
    """
    from concurrent.futures import ThreadPoolExecutor

    def build(path_and_options: tuple):
        path, provider_options = path_and_options
        return ort.InferenceSession(str(path), options, providers=providers, provider_options=provider_options)

    if providers != [CPU_EP]:
        try:
            return build(encoder), build(decoder)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise RuntimeUnavailable(f"ONNX Runtime could not load {model_dir}: {exc}") from exc
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort-session") as pool:
        pending = pool.submit(build, decoder)
        try:
            sessions = build(encoder), pending.result()
        except Exception as exc:  # onnxruntime raises its own exception types
            pending.cancel()
            raise RuntimeUnavailable(f"ONNX Runtime could not load {model_dir}: {exc}") from exc
    return sessions


class OnnxRuntime(Runtime):
    """Encoder and decoder sessions over an exported model directory.

    Options (keyword arguments, all optional):

    * ``providers``: explicit provider list, overriding the choice by ``device``;
    * ``graph_optimization``: disable / basic / extended / all (default all);
    * ``cache_dir``: TensorRT EP engine and timing cache directory (default
      ``<model dir>/trt_cache``);
    * ``trt_fp32_layernorm``: with fp16, keep LayerNorm in fp32 (default True);
    * ``trt_max_prompts``, ``trt_max_points``, ``trt_opt_prompts``, ``trt_opt_points``:
      the decoder's TensorRT optimisation profile;
    * ``decoder_batch``: prompts per decoder run (default: 8 on CPU, 32 with CUDA, the
      profile's maximum with TensorRT; 0 = no split);
    * ``io_binding``: bind inputs and pre-allocated outputs (default True);
    * ``shared_arena``: with the CPU provider alone, the tensors of every session in
      the process come from one arena (``shared_cpu_arena``; default True);
    * ``log_severity``: ONNX Runtime log level (default 3, errors only).

    ``decode`` returns views of buffers owned by the runtime, valid until the same
    thread's next ``decode`` call (``SamPredictor`` copies what it keeps). Calls from
    several threads are safe: each thread has its own output buffers.
    """

    name = "onnxruntime"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        device: str = "cpu",
        precision: str = "fp32",
        num_threads: int = 0,
        *,
        providers: list[str] | None = None,
        graph_optimization: str = "all",
        cache_dir: str | os.PathLike | None = None,
        trt_fp32_layernorm: bool = True,
        trt_max_prompts: int = DEFAULT_TRT_MAX_PROMPTS,
        trt_max_points: int = DEFAULT_TRT_MAX_POINTS,
        trt_opt_prompts: int = DEFAULT_TRT_OPT_PROMPTS,
        trt_opt_points: int = DEFAULT_TRT_OPT_POINTS,
        decoder_batch: int | None = None,
        io_binding: bool = True,
        shared_arena: bool = True,
        log_severity: int = 3,
    ) -> None:
        ort = _import_ort()
        self._ort = ort
        try:
            self.info = read_model_info(model_dir)
        except ModelDirError as exc:
            raise FileNotFoundError(str(exc)) from exc
        self.model_dir = Path(self.info["_dir"])
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision must be fp32 or fp16, not '{precision}'")
        if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise ValueError(f"graph_optimization must be one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}")
        available = ort.get_available_providers()
        chosen = list(providers) if providers else choose_providers(device, available)
        missing = [p for p in chosen if p not in available]
        if missing:
            raise RuntimeUnavailable(f"execution provider(s) {missing} not in this onnxruntime ({', '.join(available)})")
        if precision == "fp16" and TRT_EP not in chosen:
            raise ValueError(
                "fp16 with ONNX Runtime needs the TensorRT execution provider (device cuda or tensorrt, "
                "onnxruntime-gpu with TensorRT); the exported graphs are fp32"
            )
        self.device = device
        self.precision = precision
        self.num_mask_outputs = int(self.info["num_mask_outputs"])
        self.variant = self.info["variant"]
        self.prompt_decoder = self.info.get("prompt_decoder")
        self.everything_defaults = self.info.get("everything")
        self.device_id = int(device.split(":")[1]) if ":" in device else 0
        self.cache_dir = Path(cache_dir) if cache_dir else self.model_dir / "trt_cache"
        self._trt_profile = decoder_profile(trt_max_prompts, trt_max_points, trt_opt_prompts, trt_opt_points)
        self._trt_fp32_layernorm = trt_fp32_layernorm

        options = ort.SessionOptions()
        options.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[graph_optimization]
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        # 0 lets ONNX Runtime use one thread per physical core
        options.intra_op_num_threads = max(0, int(num_threads))
        options.log_severity_level = log_severity
        # CPU-only sessions: there the arena holds every intermediate; with a GPU provider
        # the CPU side is small, and onnxruntime has had bugs mixing env allocators with
        # the CUDA EP's pinned one (microsoft/onnxruntime#25211)
        self.shared_arena = bool(shared_arena) and chosen == [CPU_EP] and shared_cpu_arena(ort)
        if self.shared_arena:
            options.add_session_config_entry("session.use_env_allocators", "1")
        self.num_threads = num_threads
        self.graph_optimization = graph_optimization

        encoder_path = self.model_dir / self.info["encoder"]["file"]
        decoder_path = self.model_dir / self.info["decoder"]["file"]
        self._encoder, self._decoder = _load_sessions(
            ort, options, chosen,
            (encoder_path, self._provider_options(chosen, None)),
            (decoder_path, self._provider_options(chosen, self._trt_profile)),
            self.model_dir,
        )
        self.providers = self._decoder.get_providers()
        self._check_io()

        on_gpu = self.providers[0] in (TRT_EP, CUDA_EP)
        self._gpu = on_gpu
        self._io_binding = io_binding
        if decoder_batch is None:
            decoder_batch = {TRT_EP: trt_max_prompts, CUDA_EP: DEFAULT_CUDA_DECODER_BATCH}.get(
                self.providers[0], DEFAULT_CPU_DECODER_BATCH
            )
        self.decoder_batch = int(decoder_batch)
        self._local = threading.local()  # per-thread output buffers
        # the embedding last uploaded to the GPU (the same array is decoded many times)
        self._device_embedding = None
        self._device_embedding_source = None

    # --- set-up --------------------------------------------------------------------
    def _provider_options(self, providers: list[str], profile: dict | None) -> list[dict]:
        result = []
        for provider in providers:
            if provider == TRT_EP:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                opts = {
                    "device_id": str(self.device_id),
                    "trt_fp16_enable": "True" if self.precision == "fp16" else "False",
                    "trt_layer_norm_fp32_fallback": "True" if self._trt_fp32_layernorm else "False",
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(self.cache_dir),
                    "trt_timing_cache_enable": "True",
                    "trt_timing_cache_path": str(self.cache_dir),
                }
                if self.info.get("precision") == "int8":
                    # an int8 directory's graphs carry their own Q/DQ scales (explicit quantisation)
                    opts["trt_int8_enable"] = "True"
                if profile:
                    for i, key in enumerate(("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes")):
                        opts[key] = profile_shapes_string({name: shapes[i] for name, shapes in profile.items()})
                result.append(opts)
            elif provider == CUDA_EP:
                opts = {"device_id": str(self.device_id)}
                if _version_tuple(self._ort.__version__) >= (1, 18):
                    # fp32 means fp32: TF32 matmuls would cost the parity tolerance
                    opts["use_tf32"] = "0"
                result.append(opts)
            else:
                result.append({})
        return result

    def _check_io(self) -> None:
        enc_in = [i.name for i in self._encoder.get_inputs()]
        enc_out = [o.name for o in self._encoder.get_outputs()]
        dec_in = [i.name for i in self._decoder.get_inputs()]
        dec_out = [o.name for o in self._decoder.get_outputs()]
        if enc_in != list(ENCODER_INPUT_NAMES) or enc_out != list(ENCODER_OUTPUT_NAMES):
            raise RuntimeUnavailable(f"unexpected encoder tensors {enc_in} -> {enc_out} in {self.model_dir}")
        if sorted(dec_in) != sorted(DECODER_INPUT_NAMES) or sorted(dec_out) != sorted(DECODER_OUTPUT_NAMES):
            raise RuntimeUnavailable(f"unexpected decoder tensors {dec_in} -> {dec_out} in {self.model_dir}")

    def describe(self) -> str:
        threads = self.num_threads or "auto"
        provider = self.providers[0].replace("ExecutionProvider", "")
        precision = "int8" if self.info.get("precision") == "int8" else self.precision
        return (
            f"onnxruntime {self._ort.__version__} {provider} ({precision}, "
            f"{self.info.get('decoder_graph', '?')} decoder, threads {threads}, optimisation {self.graph_optimization})"
        )

    # --- inference -----------------------------------------------------------------
    def encode(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image, np.float32)
        if image.shape != (1, 3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"encoder input must be (1, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {image.shape}")
        # a new array per frame: callers cache embeddings
        embedding = np.empty((1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE), np.float32)
        if not self._io_binding:
            (out,) = self._encoder.run(list(ENCODER_OUTPUT_NAMES), {ENCODER_INPUT_NAMES[0]: image})
            embedding[...] = out
            return embedding
        binding = self._encoder.io_binding()
        binding.bind_cpu_input(ENCODER_INPUT_NAMES[0], image)
        if self._gpu:
            # keep the embedding on the device for the decoder, and copy it out once
            binding.bind_output(ENCODER_OUTPUT_NAMES[0], "cuda", self.device_id)
            self._encoder.run_with_iobinding(binding)
            device_value = binding.get_outputs()[0]
            embedding[...] = device_value.numpy()
            self._device_embedding, self._device_embedding_source = device_value, embedding
        else:
            binding.bind_output(
                ENCODER_OUTPUT_NAMES[0], "cpu", 0, np.float32, list(embedding.shape), embedding.ctypes.data
            )
            self._encoder.run_with_iobinding(binding)
        return embedding

    def _embedding_value(self, embedding: np.ndarray):
        """The embedding as an OrtValue on the device, uploaded once per distinct array."""
        if self._device_embedding is not None and self._device_embedding_source is embedding:
            return self._device_embedding
        value = self._ort.OrtValue.ortvalue_from_numpy(embedding, "cuda", self.device_id)
        self._device_embedding, self._device_embedding_source = value, embedding
        return value

    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input) -> DecoderOutput:
        embedding, coords, labels, mask_input, has_mask_input = check_decoder_inputs(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        batch = coords.shape[0]
        iou_out, masks_out = thread_output_buffers(self._local, batch, self.num_mask_outputs)
        if batch == 0:
            return DecoderOutput(iou_out, masks_out)
        step = self.decoder_batch if self.decoder_batch > 0 else batch
        for start in range(0, batch, step):
            stop = min(batch, start + step)
            if mask_input.shape[0] == 1:
                masks_in, flags = mask_input, has_mask_input
            else:
                masks_in, flags = mask_input[start:stop], has_mask_input[start:stop]
            self._run_decoder(embedding, coords[start:stop], labels[start:stop], masks_in, flags,
                              iou_out[start:stop], masks_out[start:stop])
        return DecoderOutput(iou_out, masks_out)

    def _run_decoder(self, embedding, coords, labels, mask_input, has_mask_input, iou_out, masks_out) -> None:
        if not self._io_binding:
            feeds = dict(zip(DECODER_INPUT_NAMES, (embedding, coords, labels, mask_input, has_mask_input)))
            iou, masks = self._decoder.run(list(DECODER_OUTPUT_NAMES), feeds)
            iou_out[...] = iou
            masks_out[...] = masks
            return
        binding = self._decoder.io_binding()
        if self._gpu:
            value = self._embedding_value(embedding)
            binding.bind_ortvalue_input(DECODER_INPUT_NAMES[0], value)
        else:
            binding.bind_cpu_input(DECODER_INPUT_NAMES[0], embedding)
        for name, array in zip(DECODER_INPUT_NAMES[1:], (coords, labels, mask_input, has_mask_input)):
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        # outputs land directly in the runtime's buffers (copied back from the GPU by ORT)
        for name, array in ((DECODER_OUTPUT_NAMES[0], iou_out), (DECODER_OUTPUT_NAMES[1], masks_out)):
            binding.bind_output(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
        self._decoder.run_with_iobinding(binding)

    def close(self) -> None:
        self._device_embedding = self._device_embedding_source = None
        self._encoder = self._decoder = None
        self._local = threading.local()
