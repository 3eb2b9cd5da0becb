"""Native TensorRT 10: engines built from the exported ONNX files (cached), inference
with named tensors (``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``).

Device memory and copies go through the CUDA driver API (``libcuda``, present
wherever the NVIDIA driver is) with ctypes, so neither PyTorch nor cuda-python nor
pycuda is needed. Buffers are allocated once, for the largest shapes of the decoder's
optimisation profile; the embedding stays on the GPU between encode and decode.

No torch import: this module runs on the robot.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path

import numpy as np

from ..geometry import EMBED_DIM, EMBED_SIZE, IMAGE_SIZE, LOW_RES_SIZE
from .base import (
    DECODER_INPUT_NAMES,
    DECODER_OUTPUT_NAMES,
    ENCODER_INPUT_NAMES,
    ENCODER_OUTPUT_NAMES,
    DecoderOutput,
    Runtime,
    RuntimeUnavailable,
    check_decoder_inputs,
    thread_output_buffers,
)
from .onnx_backend import ModelDirError, read_model_info
from .tensorrt_build import BuildOptions, GpuInfo, ensure_engines, import_tensorrt, plan_engines

# CUDA driver API constants
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76
_CU_STREAM_NON_BLOCKING = 1
_LIBCUDA_NAMES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")


class CudaDriver:
    """The few CUDA driver calls this backend needs, through ctypes."""

    def __init__(self) -> None:
        lib = None
        names = list(_LIBCUDA_NAMES)
        found = ctypes.util.find_library("cuda")
        if found:
            names.insert(0, found)
        for name in names:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            raise RuntimeUnavailable(
                "no NVIDIA driver found (libcuda): the tensorrt backend needs an NVIDIA GPU; "
                "use --backend onnxruntime on this machine"
            )
        self.lib = lib
        lib.cuGetErrorName.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        lib.cuMemAlloc_v2.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        lib.cuMemcpyHtoDAsync_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        lib.cuMemcpyDtoHAsync_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t, ctypes.c_void_p]
        lib.cuStreamCreate.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_uint]
        lib.cuStreamSynchronize.argtypes = [ctypes.c_void_p]
        lib.cuStreamDestroy_v2.argtypes = [ctypes.c_void_p]
        lib.cuDevicePrimaryCtxRetain.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
        lib.cuDevicePrimaryCtxRelease_v2.argtypes = [ctypes.c_int]
        lib.cuCtxSetCurrent.argtypes = [ctypes.c_void_p]
        lib.cuDeviceGetName.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        lib.cuDeviceGetAttribute.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int]
        self.check(lib.cuInit(0), "cuInit")

    def check(self, result: int, what: str) -> None:
        if result != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(result, ctypes.byref(name))
            raise RuntimeUnavailable(f"CUDA {what} failed: {(name.value or b'?').decode()} ({result})")

    def device_count(self) -> int:
        count = ctypes.c_int(0)
        self.check(self.lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        return count.value

    def device(self, ordinal: int) -> int:
        device = ctypes.c_int(0)
        self.check(self.lib.cuDeviceGet(ctypes.byref(device), ordinal), f"cuDeviceGet({ordinal})")
        return device.value

    def gpu_info(self, device: int) -> GpuInfo:
        name = ctypes.create_string_buffer(256)
        self.check(self.lib.cuDeviceGetName(name, 256, device), "cuDeviceGetName")
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                                 device), "cuDeviceGetAttribute")
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                                 device), "cuDeviceGetAttribute")
        return GpuInfo(name.value.decode(errors="replace"), (major.value, minor.value))

    def retain_primary_context(self, device: int) -> int:
        ctx = ctypes.c_void_p()
        self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), device), "cuDevicePrimaryCtxRetain")
        return ctx.value

    def release_primary_context(self, device: int) -> None:
        self.lib.cuDevicePrimaryCtxRelease_v2(device)

    def set_current(self, ctx: int) -> None:
        self.check(self.lib.cuCtxSetCurrent(ctypes.c_void_p(ctx)), "cuCtxSetCurrent")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_uint64(0)
        self.check(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), max(int(nbytes), 1)), f"cuMemAlloc({nbytes})")
        return ptr.value

    def free(self, ptr: int) -> None:
        if ptr:
            self.lib.cuMemFree_v2(ptr)

    def stream(self) -> int:
        stream = ctypes.c_void_p()
        self.check(self.lib.cuStreamCreate(ctypes.byref(stream), _CU_STREAM_NON_BLOCKING), "cuStreamCreate")
        return stream.value

    def destroy_stream(self, stream: int) -> None:
        if stream:
            self.lib.cuStreamDestroy_v2(ctypes.c_void_p(stream))

    def to_device(self, dst: int, array: np.ndarray, stream: int) -> None:
        array = np.ascontiguousarray(array)
        self.check(self.lib.cuMemcpyHtoDAsync_v2(dst, array.ctypes.data, array.nbytes, ctypes.c_void_p(stream)),
                   "cuMemcpyHtoDAsync")

    def to_host(self, array: np.ndarray, src: int, stream: int) -> None:
        if not array.flags.c_contiguous:
            raise ValueError("host destination must be C-contiguous")
        self.check(self.lib.cuMemcpyDtoHAsync_v2(array.ctypes.data, src, array.nbytes, ctypes.c_void_p(stream)),
                   "cuMemcpyDtoHAsync")

    def synchronize(self, stream: int) -> None:
        self.check(self.lib.cuStreamSynchronize(ctypes.c_void_p(stream)), "cuStreamSynchronize")


def _nbytes(shape) -> int:
    return int(np.prod(shape)) * 4  # every tensor of these graphs is float32


class TensorRTRuntime(Runtime):
    """Encoder and decoder engines on one GPU.

    Options: ``device`` ('cuda' or 'cuda:N'), ``cache_dir`` (engine cache, default
    ``<model dir>/trt_engines``), ``fp32_layernorm`` (fp16 only, default True),
    ``max_prompts`` / ``max_points`` / ``opt_prompts`` / ``opt_points`` (the
    decoder's optimisation profile; larger batches are split), ``workspace_mb``,
    ``build`` (build missing engines at start-up, default True; otherwise
    ``mobilesam-ros build-engine`` must have run), ``log``.

    ``decode`` returns views of host buffers owned by the runtime, valid until the same
    thread's next ``decode`` call. Calls from several threads are serialised (one set
    of device buffers, one stream); each thread has its own host output buffers.
    """

    name = "tensorrt"

    def __init__(
        self,
        model_dir: str | os.PathLike,
        precision: str = "fp32",
        *,
        device: str = "cuda",
        num_threads: int = 0,  # accepted for a uniform interface; TensorRT runs on the GPU
        cache_dir: str | os.PathLike | None = None,
        fp32_layernorm: bool = True,
        max_prompts: int | None = None,
        max_points: int | None = None,
        opt_prompts: int | None = None,
        opt_points: int | None = None,
        workspace_mb: int | None = None,
        build: bool = True,
        log=None,
    ) -> None:
        del num_threads
        try:
            self.info = read_model_info(model_dir)
        except ModelDirError as exc:
            raise FileNotFoundError(str(exc)) from exc
        self.model_dir = Path(self.info["_dir"])
        defaults = BuildOptions()
        self.options = BuildOptions(
            precision=precision,
            fp32_layernorm=fp32_layernorm,
            max_prompts=max_prompts or defaults.max_prompts,
            max_points=max_points or defaults.max_points,
            opt_prompts=opt_prompts or defaults.opt_prompts,
            opt_points=opt_points or defaults.opt_points,
            workspace_mb=workspace_mb or defaults.workspace_mb,
        )
        kind, _, index = device.partition(":")
        if kind not in ("cuda", "gpu", "auto", "tensorrt"):
            raise ValueError(f"the tensorrt backend runs on a GPU: device must be cuda or cuda:N, not '{device}'")
        self.device_index = int(index) if index else 0
        self.precision = precision
        self.num_mask_outputs = int(self.info["num_mask_outputs"])
        self.variant = self.info["variant"]  # checked by read_model_info
        self.prompt_decoder = self.info.get("prompt_decoder")
        self.everything_defaults = self.info.get("everything")
        self._log = log or (lambda _msg: None)
        self._cuda = None
        self._ctx = None
        self._stream = 0
        self._buffers: dict[str, int] = {}

        trt = import_tensorrt()
        self._trt = trt
        cuda = CudaDriver()
        if cuda.device_count() <= self.device_index:
            raise RuntimeUnavailable(f"no CUDA device {self.device_index} (found {cuda.device_count()})")
        self._cuda = cuda
        self._device = cuda.device(self.device_index)
        self.gpu = cuda.gpu_info(self._device)
        self._ctx = cuda.retain_primary_context(self._device)
        cuda.set_current(self._ctx)

        plan = plan_engines(self.model_dir, self.options, trt.__version__, self.gpu, cache_dir)
        missing = plan.missing()
        if missing and not build:
            raise RuntimeUnavailable(
                f"no cached TensorRT engine for {', '.join(missing)} in {plan.cache_dir}: run "
                f"'mobilesam-ros build-engine --model {self.model_dir} --precision {precision}'"
            )
        paths = ensure_engines(plan, log=self._log)
        self.engine_paths = paths
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._trt_runtime = trt.Runtime(self._logger)
        self._engines = {}
        self._contexts = {}
        for part, path in paths.items():
            engine = self._trt_runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise RuntimeUnavailable(
                    f"TensorRT could not load {path} (built by another TensorRT version or GPU?): delete it and "
                    "run 'mobilesam-ros build-engine' again"
                )
            self._engines[part] = engine
            self._contexts[part] = engine.create_execution_context()
        self._check_tensors()
        profile = self.options.profile("decoder")
        self.max_prompts = profile["point_coords"][2][0]
        self.max_points = profile["point_coords"][2][1]
        self._allocate()
        self._lock = threading.Lock()
        self._local = threading.local()  # per-thread host output buffers
        self._embedding_source = None  # the host array whose values the device embedding holds

    # --- set-up --------------------------------------------------------------------
    def _check_tensors(self) -> None:
        trt = self._trt
        for part, inputs, outputs in (
            ("encoder", ENCODER_INPUT_NAMES, ENCODER_OUTPUT_NAMES),
            ("decoder", DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES),
        ):
            engine = self._engines[part]
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            got_in = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
            got_out = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
            if got_in != sorted(inputs) or got_out != sorted(outputs):
                raise RuntimeUnavailable(f"{part} engine has tensors {got_in} -> {got_out}, expected {inputs} -> {outputs}")
            for n in names:
                if engine.get_tensor_dtype(n) != trt.float32:
                    raise RuntimeUnavailable(f"{part} engine tensor {n} is {engine.get_tensor_dtype(n)}, expected float32")

    def _allocate(self) -> None:
        cuda = self._cuda
        k = self.num_mask_outputs
        b, n = self.max_prompts, self.max_points
        shapes = {
            "image": (1, 3, IMAGE_SIZE, IMAGE_SIZE),
            "image_embeddings": (1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE),  # encoder output = decoder input
            "point_coords": (b, n, 2),
            "point_labels": (b, n),
            "mask_input": (b, 1, LOW_RES_SIZE, LOW_RES_SIZE),
            "has_mask_input": (b,),
            "iou_predictions": (b, k),
            "low_res_masks": (b, k, LOW_RES_SIZE, LOW_RES_SIZE),
        }
        for name, shape in shapes.items():
            self._buffers[name] = cuda.malloc(_nbytes(shape))
        self._stream = cuda.stream()
        encoder, decoder = self._contexts["encoder"], self._contexts["decoder"]
        # addresses never change: set them once
        for name in ENCODER_INPUT_NAMES + ENCODER_OUTPUT_NAMES:
            encoder.set_tensor_address(name, self._buffers[name])
        for name in DECODER_INPUT_NAMES + DECODER_OUTPUT_NAMES:
            decoder.set_tensor_address(name, self._buffers[name])
        # static shapes: set once; the decoder's dynamic ones are set per call
        encoder.set_input_shape(ENCODER_INPUT_NAMES[0], shapes["image"])
        decoder.set_input_shape(DECODER_INPUT_NAMES[0], shapes["image_embeddings"])

    def describe(self) -> str:
        ln = ", LayerNorm fp32" if self.precision == "fp16" and self.options.fp32_layernorm else ""
        return (f"tensorrt {self._trt.__version__} on {self.gpu.name} ({self.precision}{ln}, "
                f"decoder profile up to {self.max_prompts} prompts x {self.max_points} points)")

    # --- inference -----------------------------------------------------------------
    def encode(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image, np.float32)
        if image.shape != (1, 3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"encoder input must be (1, 3, {IMAGE_SIZE}, {IMAGE_SIZE}), got {image.shape}")
        cuda = self._cuda
        embedding = np.empty((1, EMBED_DIM, EMBED_SIZE, EMBED_SIZE), np.float32)
        with self._lock:
            cuda.set_current(self._ctx)
            cuda.to_device(self._buffers["image"], image, self._stream)
            if not self._contexts["encoder"].execute_async_v3(self._stream):
                raise RuntimeError("TensorRT encoder execution failed")
            cuda.to_host(embedding, self._buffers["image_embeddings"], self._stream)
            cuda.synchronize(self._stream)
            self._embedding_source = embedding  # the decoder input buffer holds it already
        return embedding

    def decode(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input) -> DecoderOutput:
        embedding, coords, labels, mask_input, has_mask_input = check_decoder_inputs(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input
        )
        batch, points = coords.shape[:2]
        if points > self.max_points:
            raise ValueError(
                f"{points} points per prompt exceed the engine's profile ({self.max_points}): rebuild with "
                f"'mobilesam-ros build-engine --max-points {points}'"
            )
        iou_out, masks_out = thread_output_buffers(self._local, batch, self.num_mask_outputs)
        if batch == 0:
            return DecoderOutput(iou_out, masks_out)
        with self._lock:
            self._decode_locked(embedding, coords, labels, mask_input, has_mask_input, iou_out, masks_out)
        return DecoderOutput(iou_out, masks_out)

    def _decode_locked(self, embedding, coords, labels, mask_input, has_mask_input, iou_out, masks_out) -> None:
        batch, points = coords.shape[:2]
        cuda = self._cuda
        cuda.set_current(self._ctx)
        if self._embedding_source is not embedding:
            cuda.to_device(self._buffers["image_embeddings"], embedding, self._stream)
            self._embedding_source = embedding
        context = self._contexts["decoder"]
        shared_mask = mask_input.shape[0] == 1
        if shared_mask:
            cuda.to_device(self._buffers["mask_input"], mask_input, self._stream)
            cuda.to_device(self._buffers["has_mask_input"], has_mask_input, self._stream)
        for start in range(0, batch, self.max_prompts):
            stop = min(batch, start + self.max_prompts)
            b = stop - start
            cuda.to_device(self._buffers["point_coords"], coords[start:stop], self._stream)
            cuda.to_device(self._buffers["point_labels"], labels[start:stop], self._stream)
            if not shared_mask:
                cuda.to_device(self._buffers["mask_input"], mask_input[start:stop], self._stream)
                cuda.to_device(self._buffers["has_mask_input"], has_mask_input[start:stop], self._stream)
            m = 1 if shared_mask else b
            context.set_input_shape("point_coords", (b, points, 2))
            context.set_input_shape("point_labels", (b, points))
            context.set_input_shape("mask_input", (m, 1, LOW_RES_SIZE, LOW_RES_SIZE))
            context.set_input_shape("has_mask_input", (m,))
            if not context.execute_async_v3(self._stream):
                raise RuntimeError("TensorRT decoder execution failed")
            cuda.to_host(iou_out[start:stop], self._buffers["iou_predictions"], self._stream)
            cuda.to_host(masks_out[start:stop], self._buffers["low_res_masks"], self._stream)
        cuda.synchronize(self._stream)

    def close(self) -> None:
        cuda = self._cuda
        if cuda is None:
            return
        try:
            cuda.set_current(self._ctx)
            cuda.synchronize(self._stream)
        except RuntimeUnavailable:
            pass
        self._contexts.clear()
        self._engines.clear()
        for ptr in self._buffers.values():
            cuda.free(ptr)
        self._buffers.clear()
        cuda.destroy_stream(self._stream)
        self._stream = 0
        cuda.release_primary_context(self._device)
        self._cuda = None
