"""TensorRT backend without a GPU: cache keys, profiles, precision pinning, clear errors,
and the engine-build and inference data flow against stand-ins for ``tensorrt`` and
the CUDA driver (the stand-in engine runs the ONNX graph with ONNX Runtime, so what
comes out of ``TensorRTRuntime`` is checked value by value).

The real TensorRT 10 API calls are only exercised on a machine with a GPU."""

from __future__ import annotations

import enum
import importlib.util
import sys
import types

import numpy as np
import pytest

from mobilesam_ros.runtime import RuntimeUnavailable, create_runtime, tensorrt_backend, tensorrt_build
from mobilesam_ros.runtime.tensorrt_build import (
    BuildOptions,
    GpuInfo,
    engine_cache_key,
    engine_path,
    keep_in_fp32,
    plan_engines,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
GPU = GpuInfo("NVIDIA Orin", (8, 7))


def test_cache_key_changes_with_everything_that_invalidates_an_engine():
    base = BuildOptions()
    key = engine_cache_key("a" * 64, "decoder", base, "10.3.0", GPU)
    assert key == engine_cache_key("a" * 64, "decoder", BuildOptions(), "10.3.0", GPU)  # deterministic
    others = [
        engine_cache_key("b" * 64, "decoder", base, "10.3.0", GPU),
        engine_cache_key("a" * 64, "encoder", base, "10.3.0", GPU),
        engine_cache_key("a" * 64, "decoder", base, "10.4.0", GPU),
        engine_cache_key("a" * 64, "decoder", base, "10.3.0", GpuInfo("NVIDIA GeForce RTX 4090", (8, 9))),
        engine_cache_key("a" * 64, "decoder", base, "10.3.0", GpuInfo("NVIDIA Orin", (8, 6))),
        engine_cache_key("a" * 64, "decoder", BuildOptions(precision="fp16"), "10.3.0", GPU),
        engine_cache_key("a" * 64, "decoder", BuildOptions(max_prompts=128), "10.3.0", GPU),
        engine_cache_key("a" * 64, "decoder", BuildOptions(opt_points=4), "10.3.0", GPU),
    ]
    assert len({key, *others}) == len(others) + 1
    # the workspace does not change the engine; LayerNorm pinning matters only for fp16
    assert key == engine_cache_key("a" * 64, "decoder", BuildOptions(workspace_mb=512), "10.3.0", GPU)
    assert key == engine_cache_key("a" * 64, "decoder", BuildOptions(fp32_layernorm=False), "10.3.0", GPU)
    fp16 = BuildOptions(precision="fp16")
    assert engine_cache_key("a" * 64, "decoder", fp16, "10.3.0", GPU) != engine_cache_key(
        "a" * 64, "decoder", BuildOptions(precision="fp16", fp32_layernorm=False), "10.3.0", GPU)
    assert engine_path("/c", "decoder", fp16, key).name == f"decoder-fp16-ln32-{key[:16]}.engine"
    # the encoder has no profile: decoder profile options do not invalidate it
    assert engine_cache_key("a" * 64, "encoder", base, "10.3.0", GPU) == engine_cache_key(
        "a" * 64, "encoder", BuildOptions(max_prompts=8), "10.3.0", GPU)


def test_profiles_and_option_checks():
    options = BuildOptions(max_prompts=32, max_points=6, opt_prompts=4, opt_points=2)
    assert options.profile("encoder") is None
    profile = options.profile("decoder")
    assert profile["point_coords"] == ((1, 1, 2), (4, 2, 2), (32, 6, 2))
    assert profile["point_labels"] == ((1, 1), (4, 2), (32, 6))
    assert profile["mask_input"] == ((1, 1, 256, 256), (1, 1, 256, 256), (32, 1, 256, 256))
    assert profile["has_mask_input"] == ((1,), (1,), (32,))
    with pytest.raises(ValueError):
        BuildOptions(precision="int8")
    with pytest.raises(ValueError):
        BuildOptions(max_prompts=4, opt_prompts=8)


def test_fp32_pinning_rule():
    assert keep_in_fp32("NORMALIZATION", "/image_encoder/layers.1/blocks.0/attn/norm/LayerNormalization")
    assert keep_in_fp32("SOFTMAX", "/blocks.1/token_to_image/Softmax")
    assert keep_in_fp32("REDUCE", "/image_encoder/neck/neck.1/ReduceMean")
    assert keep_in_fp32("ELEMENTWISE", "/image_encoder/neck/neck.3/Sub")  # LayerNorm2d written out as ops
    assert keep_in_fp32("UNARY", "/prompt_encoder/mask_downscaling/mask_downscaling.1/Sqrt")
    assert not keep_in_fp32("MATRIX_MULTIPLY", "/image_encoder/layers.2/blocks.0/mlp/fc1/MatMul")
    assert not keep_in_fp32("CONVOLUTION", "/image_encoder/patch_embed/seq/seq.0/c/Conv")


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here")
def test_missing_tensorrt_is_a_clear_error(exported_model, capsys):
    with pytest.raises(RuntimeUnavailable, match="TensorRT 10"):
        create_runtime(exported_model, "tensorrt")
    from mobilesam_ros.cli import main

    assert main(["build-engine", "--model", str(exported_model)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT 10" in err[0] and "onnxruntime" in err[0]


def test_build_engine_command_checks_the_model_first(tmp_path, capsys):
    from mobilesam_ros.cli import main

    assert main(["build-engine", "--model", str(tmp_path)]) == 2
    assert "mobilesam-ros export" in capsys.readouterr().err
    assert main(["build-engine", "--model", str(tmp_path), "--device", "cpu"]) == 2


# --- stand-ins for tensorrt and the CUDA driver -----------------------------------------
def _fake_tensorrt(onnx_runtime):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    trt.float32, trt.float16, trt.int64 = "float32", "float16", "int64"
    trt.TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.LayerType = enum.Enum("LayerType", "NORMALIZATION SOFTMAX REDUCE ELEMENTWISE MATRIX_MULTIPLY SHAPE OTHER")
    trt.BuilderFlag = enum.Enum("BuilderFlag", "FP16 TF32 OBEY_PRECISION_CONSTRAINTS")
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.calls = []

    class Logger:
        WARNING = 2

        def __init__(self, severity=None):
            self.severity = severity

    class IProgressMonitor:
        def __init__(self):
            pass

    class Tensor:
        def __init__(self, dtype):
            self.dtype = dtype

    class Layer:
        def __init__(self, node):
            kinds = {"LayerNormalization": "NORMALIZATION", "Softmax": "SOFTMAX", "ReduceMean": "REDUCE",
                     "MatMul": "MATRIX_MULTIPLY", "Shape": "SHAPE", "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE"}
            self.type = trt.LayerType[kinds.get(node.op_type, "OTHER")]
            self.name = node.name
            self.precision = None
            self.outputs = [Tensor(trt.int64 if node.op_type == "Shape" else trt.float32) for _ in node.output]
            self.output_types = {}

        @property
        def num_outputs(self):
            return len(self.outputs)

        def get_output(self, j):
            return self.outputs[j]

        def set_output_type(self, j, dtype):
            self.output_types[j] = dtype

    class Network:
        def __init__(self):
            self.layers = []

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

    class OnnxParser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse_from_file(self, path):
            import onnx

            self.network.path = path
            self.network.layers = [Layer(n) for n in onnx.load(path, load_external_data=False).graph.node]
            return True

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class TimingCache:
        def serialize(self):
            return b"timing"

    class Config:
        def __init__(self):
            self.flags, self.cleared, self.profiles, self.pool = set(), set(), [], {}
            self.progress_monitor = None

        def set_memory_pool_limit(self, pool, size):
            self.pool[pool] = size

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.cleared.add(flag)

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

        def create_timing_cache(self, blob):
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

    class Builder:
        platform_has_fast_fp16 = True

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            assert flags == 0
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            monitor = config.progress_monitor
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                monitor.step_complete("Building engine", 0)
                monitor.step_complete("Building engine", 1)
                monitor.phase_finish("Building engine")
            trt.calls.append((network, config))
            return ("FAKE:" + network.path).encode()

    class Context:
        def __init__(self, engine):
            self.engine, self.shapes, self.addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            self.shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr):
            self.addresses[name] = ptr
            return True

        def execute_async_v3(self, stream):
            memory = trt.device_memory
            feeds = {}
            for name in self.engine.inputs:
                shape = self.shapes[name]
                count = int(np.prod(shape))
                feeds[name] = np.frombuffer(memory[self.addresses[name]], np.float32, count).reshape(shape).copy()
            for name, value in zip(self.engine.outputs, self.engine.session.run(self.engine.outputs, feeds)):
                raw = np.ascontiguousarray(value, np.float32).tobytes()
                memory[self.addresses[name]][: len(raw)] = raw
            trt.executions.append({k: feeds[k].shape for k in feeds})
            return True

    class Engine:
        def __init__(self, path):
            import onnxruntime as ort

            self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            self.inputs = [i.name for i in self.session.get_inputs()]
            self.outputs = [o.name for o in self.session.get_outputs()]

        @property
        def num_io_tensors(self):
            return len(self.inputs) + len(self.outputs)

        def get_tensor_name(self, i):
            return (self.inputs + self.outputs)[i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self.inputs else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.float32

        def create_execution_context(self):
            return Context(self)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            text = bytes(blob).decode()
            assert text.startswith("FAKE:")
            return Engine(text[5:])

    for cls in (Logger, IProgressMonitor, Builder, OnnxParser, Runtime):
        setattr(trt, cls.__name__, cls)
    trt.executions = []
    trt.device_memory = {}
    return trt


class FakeCuda:
    """Device memory as bytearrays keyed by fake pointers."""

    def __init__(self, memory):
        self.memory = memory
        self.next = 0x1000

    def device_count(self):
        return 1

    def device(self, ordinal):
        return ordinal

    def gpu_info(self, device):
        return GPU

    def retain_primary_context(self, device):
        return 1

    def release_primary_context(self, device):
        pass

    def set_current(self, ctx):
        pass

    def malloc(self, nbytes):
        self.next += 0x1000
        self.memory[self.next] = bytearray(nbytes)
        return self.next

    def free(self, ptr):
        del self.memory[ptr]

    def stream(self):
        return 7

    def destroy_stream(self, stream):
        pass

    def to_device(self, dst, array, stream):
        raw = np.ascontiguousarray(array).tobytes()
        assert len(raw) <= len(self.memory[dst]), "copy larger than the allocation"
        self.memory[dst][: len(raw)] = raw

    def to_host(self, array, src, stream):
        array[...] = np.frombuffer(self.memory[src], np.float32, array.size).reshape(array.shape)

    def synchronize(self, stream):
        pass


@pytest.fixture
def fake_trt(monkeypatch):
    trt = _fake_tensorrt(None)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tensorrt_backend, "CudaDriver", lambda: FakeCuda(trt.device_memory))
    return trt


def test_engine_build_flow_with_a_stand_in(fake_trt, exported_model, tmp_path):
    messages = []
    options = BuildOptions(precision="fp16", max_prompts=16, max_points=4, opt_prompts=4, opt_points=2)
    plan = plan_engines(exported_model, options, "10.3.0", GPU, tmp_path / "cache")
    assert plan.missing() == ["encoder", "decoder"]
    paths = tensorrt_build.ensure_engines(plan, log=messages.append)
    assert all(p.is_file() and p.with_suffix(".json").is_file() for p in paths.values())
    assert plan.missing() == []
    (enc_net, enc_cfg), (dec_net, dec_cfg) = fake_trt.calls
    for cfg in (enc_cfg, dec_cfg):
        assert fake_trt.BuilderFlag.FP16 in cfg.flags and fake_trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS in cfg.flags
        assert cfg.pool[fake_trt.MemoryPoolType.WORKSPACE] == options.workspace_mb << 20
    assert enc_cfg.profiles == []
    assert dec_cfg.profiles[0].shapes["point_coords"] == ((1, 1, 2), (4, 2, 2), (16, 4, 2))
    pinned = [layer for layer in enc_net.layers if layer.precision == fake_trt.float32]
    assert pinned and all(keep_in_fp32(layer.type.name, layer.name) for layer in pinned)
    assert any(layer.type.name == "NORMALIZATION" for layer in pinned)
    assert all(layer.precision is None for layer in enc_net.layers if layer.type.name == "SHAPE")
    assert any("Building engine" in m for m in messages)  # progress reported
    # a second plan finds the cache; fp32 builds clear TF32
    fake_trt.calls.clear()
    assert plan_engines(exported_model, options, "10.3.0", GPU, tmp_path / "cache").missing() == []
    fp32 = plan_engines(exported_model, BuildOptions(), "10.3.0", GPU, tmp_path / "cache")
    tensorrt_build.ensure_engines(fp32, log=messages.append)
    assert all(fake_trt.BuilderFlag.TF32 in cfg.cleared for _, cfg in fake_trt.calls)


def test_tensorrt_11_builds_fp32_and_refuses_fp16_clearly(fake_trt, exported_model, tmp_path):
    """TensorRT 11 removed weak typing (BuilderFlag.FP16, OBEY_PRECISION_CONSTRAINTS):
    fp32 engines build as before; fp16 is refused with the reason, before any work."""
    import enum

    from mobilesam_ros.runtime.base import RuntimeUnavailable

    fake_trt.__version__ = "11.1.0"
    fake_trt.BuilderFlag = enum.Enum("BuilderFlag", "TF32 DEBUG")
    fp32 = plan_engines(exported_model, BuildOptions(), "11.1.0", GPU, tmp_path / "cache")
    paths = tensorrt_build.ensure_engines(fp32, log=lambda _m: None)
    assert all(p.is_file() for p in paths.values())
    assert all(fake_trt.BuilderFlag.TF32 in cfg.cleared for _, cfg in fake_trt.calls)
    fake_trt.calls.clear()
    fp16 = plan_engines(exported_model, BuildOptions(precision="fp16"), "11.1.0", GPU, tmp_path / "cache")
    with pytest.raises(RuntimeUnavailable, match="TensorRT 10"):
        tensorrt_build.ensure_engines(fp16, log=lambda _m: None)
    assert fake_trt.calls == []


def test_runtime_data_flow_with_a_stand_in(fake_trt, exported_model, tmp_path):
    """Encode, then decode more prompts than the profile holds, with shared and per-prompt
    masks: the runtime's copies, shapes and chunking give ONNX Runtime's numbers."""
    from mobilesam_ros.runtime.onnx_backend import OnnxRuntime

    rt = tensorrt_backend.TensorRTRuntime(exported_model, "fp32", cache_dir=tmp_path / "engines", max_prompts=4,
                                          max_points=4, opt_prompts=2, opt_points=2)
    reference = OnnxRuntime(exported_model, num_threads=2)
    assert "NVIDIA Orin" in rt.describe() and rt.num_mask_outputs == 4
    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, 3, 1024, 1024)).astype(np.float32)
    embedding = rt.encode(image)
    assert np.abs(embedding - reference.encode(image)).max() <= 1e-5
    for batched in (False, True):
        batch = 7
        coords = rng.uniform(0, 1024, (batch, 3, 2)).astype(np.float32)
        labels = rng.integers(-1, 4, (batch, 3)).astype(np.float32)
        if batched:
            masks = rng.normal(size=(batch, 1, 256, 256)).astype(np.float32)
            flags = np.ones((batch,), np.float32)
        else:
            masks, flags = np.zeros((1, 1, 256, 256), np.float32), np.zeros((1,), np.float32)
        fake_trt.executions.clear()
        got = rt.decode(embedding, coords, labels, masks, flags)
        want = reference.decode(embedding, coords, labels, masks, flags)
        assert np.abs(got.low_res_masks - want.low_res_masks).max() <= 1e-5
        assert np.abs(got.iou_predictions - want.iou_predictions).max() <= 1e-6
        assert [e["point_coords"][0] for e in fake_trt.executions] == [4, 3]  # split at the profile's max
    other = rng.normal(size=(1, 256, 64, 64)).astype(np.float32)  # a stored embedding is uploaded
    coords, labels = coords[:2], labels[:2]
    no_mask = np.zeros((1, 1, 256, 256), np.float32), np.zeros((1,), np.float32)
    got = rt.decode(other, coords, labels, *no_mask)
    assert np.abs(got.low_res_masks - reference.decode(other, coords, labels, *no_mask).low_res_masks).max() <= 1e-5
    with pytest.raises(ValueError, match="--max-points 5"):
        rt.decode(other, np.zeros((1, 5, 2), np.float32), np.zeros((1, 5), np.float32), *no_mask)
    rt.close()
    assert fake_trt.device_memory == {}  # everything freed
    with pytest.raises(RuntimeUnavailable, match="build-engine"):
        tensorrt_backend.TensorRTRuntime(exported_model, "fp16", cache_dir=tmp_path / "engines", build=False)
