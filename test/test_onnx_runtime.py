"""ONNX Runtime backend: real sessions on exported models, against PyTorch and the
reference-parity fixture."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from parity import EMBEDDING_ATOL, IMAGES, check_case, expected_masks, load_cases, mask_ious, run_case

ort = pytest.importorskip("onnxruntime")

from mobilesam_ros.runtime import RuntimeUnavailable, create_runtime
from mobilesam_ros.runtime.onnx_backend import (
    CPU_EP,
    CUDA_EP,
    TRT_EP,
    OnnxRuntime,
    choose_providers,
    decoder_profile,
    profile_shapes_string,
    read_model_info,
)


@pytest.fixture(scope="module")
def runtime(exported_model):
    rt = create_runtime(exported_model, "onnxruntime", num_threads=2)
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def torch_runtime(synthetic_checkpoint):
    pytest.importorskip("torch")
    return create_runtime(synthetic_checkpoint, "torch")


@pytest.fixture(scope="module")
def parity_model(parity_onnx):
    """The parity fixture's checkpoint exported (once per session, see conftest)."""
    return parity_onnx


@pytest.fixture(scope="module")
def expected(parity_dir):
    return np.load(parity_dir / "expected.npz")


def _inputs(rng, batch, points, batched_masks=False):
    coords = rng.uniform(0, 1024, (batch, points, 2)).astype(np.float32)
    labels = rng.integers(-1, 4, (batch, points)).astype(np.float32)
    if batched_masks:
        masks = rng.normal(0, 3, (batch, 1, 256, 256)).astype(np.float32)
        flags = (np.arange(batch) % 2).astype(np.float32)
    else:
        masks, flags = np.zeros((1, 1, 256, 256), np.float32), np.zeros((1,), np.float32)
    return coords, labels, masks, flags


def test_runtime_matches_torch(runtime, torch_runtime):
    assert runtime.name == "onnxruntime" and runtime.num_mask_outputs == 4
    assert "CPU" in runtime.describe() and "fast decoder" in runtime.describe()
    from mobilesam_ros.export import validation_image
    from mobilesam_ros.transforms import ImagePreprocessor, resize_longest_side

    image = ImagePreprocessor()(resize_longest_side(validation_image(600, 900, seed=5)))
    embedding = runtime.encode(image)
    reference = torch_runtime.encode(image)
    assert embedding.shape == (1, 256, 64, 64) and embedding.dtype == np.float32
    assert np.abs(embedding - reference).max() <= 1e-3
    rng = np.random.default_rng(0)
    for batch, points, batched in ((1, 2, False), (6, 2, False), (3, 4, True)):
        inputs = _inputs(rng, batch, points, batched)
        got = runtime.decode(reference, *inputs)
        want = torch_runtime.decode(reference, *inputs)
        assert got.low_res_masks.shape == (batch, 4, 256, 256) and got.iou_predictions.shape == (batch, 4)
        assert np.abs(got.low_res_masks - want.low_res_masks).max() <= 1e-3
        assert np.abs(got.iou_predictions - want.iou_predictions).max() <= 1e-3


def test_new_embedding_per_frame_and_reused_decoder_buffers(runtime):
    image = np.zeros((1, 3, 1024, 1024), np.float32)
    first = runtime.encode(image)
    second = runtime.encode(image + 0.5)
    assert not np.shares_memory(first, second)  # callers cache embeddings: never overwritten
    rng = np.random.default_rng(1)
    big = runtime.decode(first, *_inputs(rng, 5, 2))
    big_masks = big.low_res_masks.copy()
    small = runtime.decode(first, *_inputs(rng, 2, 2))
    assert small.low_res_masks.shape == (2, 4, 256, 256)
    assert np.shares_memory(small.low_res_masks, big.low_res_masks)  # one buffer, grown as needed
    assert not np.array_equal(big_masks[:2], small.low_res_masks)


def test_chunked_and_unbound_runs_agree(exported_model, runtime):
    rng = np.random.default_rng(2)
    embedding = rng.normal(size=(1, 256, 64, 64)).astype(np.float32)
    for batched in (False, True):
        inputs = _inputs(rng, 7, 3, batched)
        want = runtime.decode(embedding, *inputs)
        want = (want.iou_predictions.copy(), want.low_res_masks.copy())
        for options in ({"decoder_batch": 3}, {"io_binding": False}, {"graph_optimization": "basic"},
                        {"shared_arena": False}):
            other = OnnxRuntime(exported_model, num_threads=2, **options)
            got = other.decode(embedding, *inputs)
            assert np.abs(got.low_res_masks - want[1]).max() <= 1e-4, options
            assert np.abs(got.iou_predictions - want[0]).max() <= 1e-5, options
            other.close()


def test_sessions_share_one_cpu_arena(exported_model, runtime):
    """Every session in the process allocates from one registered arena (so the decoder
    reuses the encoder's pages); two runtimes on it decode alike, from two threads too."""
    import threading

    assert runtime.shared_arena
    other = OnnxRuntime(exported_model, num_threads=1)
    assert other.shared_arena
    rng = np.random.default_rng(4)
    embedding = other.encode(rng.normal(size=(1, 3, 1024, 1024)).astype(np.float32))
    inputs = _inputs(rng, 5, 2)
    want = runtime.decode(embedding, *inputs).low_res_masks.copy()
    results = {}

    def decode(name, rt):
        results[name] = rt.decode(embedding, *inputs).low_res_masks.copy()

    threads = [threading.Thread(target=decode, args=(n, rt)) for n, rt in (("a", runtime), ("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert np.abs(results["a"] - want).max() <= 1e-5 and np.abs(results["b"] - want).max() <= 1e-4
    other.close()


def test_bad_inputs_are_refused(runtime):
    emb = np.zeros((1, 256, 64, 64), np.float32)
    coords, labels, masks, flags = _inputs(np.random.default_rng(0), 2, 2)
    with pytest.raises(ValueError, match="encoder input"):
        runtime.encode(np.zeros((1, 3, 512, 512), np.float32))
    with pytest.raises(ValueError, match="point_labels"):
        runtime.decode(emb, coords, labels[:, :1], masks, flags)
    with pytest.raises(ValueError, match="mask_input"):
        runtime.decode(emb, coords, labels, np.zeros((3, 1, 256, 256), np.float32), np.zeros((3,), np.float32))


def test_provider_order_and_options():
    everything = [TRT_EP, CUDA_EP, CPU_EP]
    assert choose_providers("cpu", everything) == [CPU_EP]
    assert choose_providers("cuda", everything) == [TRT_EP, CUDA_EP, CPU_EP]
    assert choose_providers("cuda:1", [CUDA_EP, CPU_EP]) == [CUDA_EP, CPU_EP]
    assert choose_providers("auto", [CPU_EP]) == [CPU_EP]
    with pytest.raises(RuntimeUnavailable, match="onnxruntime-gpu"):
        choose_providers("cuda", [CPU_EP])
    with pytest.raises(RuntimeUnavailable, match="TensorRT"):
        choose_providers("tensorrt", [CUDA_EP, CPU_EP])
    with pytest.raises(ValueError, match="unknown device"):
        choose_providers("tpu", everything)
    profile = decoder_profile(64, 16, 8, 2)
    assert profile["point_coords"] == ((1, 1, 2), (8, 2, 2), (64, 16, 2))
    assert profile["mask_input"][2] == (64, 1, 256, 256)
    assert profile_shapes_string({k: v[2] for k, v in profile.items()}) == (
        "point_coords:64x16x2,point_labels:64x16,mask_input:64x1x256x256,has_mask_input:64"
    )
    with pytest.raises(ValueError):
        decoder_profile(4, 4, 8, 2)


def test_gpu_provider_options(tmp_path):
    """What the TensorRT and CUDA EPs are given (built without creating a GPU session)."""
    import onnxruntime

    rt = OnnxRuntime.__new__(OnnxRuntime)
    rt._ort, rt.device_id, rt.precision, rt.cache_dir = onnxruntime, 1, "fp16", tmp_path / "cache"
    rt._trt_fp32_layernorm = True
    rt.info = {"precision": "fp32"}  # model.json of an fp32 export
    trt, cuda, cpu = rt._provider_options([TRT_EP, CUDA_EP, CPU_EP], decoder_profile(32, 8, 4, 2))
    assert "trt_int8_enable" not in trt
    assert trt["device_id"] == "1" and trt["trt_fp16_enable"] == "True"
    assert trt["trt_layer_norm_fp32_fallback"] == "True"
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert trt["trt_profile_max_shapes"].startswith("point_coords:32x8x2,point_labels:32x8,")
    assert trt["trt_profile_opt_shapes"].startswith("point_coords:4x2x2,")
    assert cuda["device_id"] == "1" and cuda["use_tf32"] == "0" and cpu == {}
    encoder_trt = rt._provider_options([TRT_EP], None)[0]
    assert not any(k.startswith("trt_profile") for k in encoder_trt)  # static encoder: no profile
    rt.info = {"precision": "int8"}  # export --quantize int8: TensorRT builds its int8 engine from the QDQ graph
    assert rt._provider_options([TRT_EP], None)[0]["trt_int8_enable"] == "True"


def test_clear_errors(exported_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="mobilesam-ros export"):
        create_runtime(tmp_path, "onnxruntime")
    if CUDA_EP not in ort.get_available_providers():
        with pytest.raises(RuntimeUnavailable, match="no GPU execution provider"):
            create_runtime(exported_model, "onnxruntime", device="cuda")
    with pytest.raises(ValueError, match="fp16"):
        create_runtime(exported_model, "onnxruntime", device="cpu", precision="fp16")
    broken = tmp_path / "broken"
    shutil.copytree(exported_model, broken)
    (broken / "decoder.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="decoder.onnx is missing"):
        create_runtime(broken, "onnxruntime")
    assert read_model_info(exported_model / "model.json")["num_mask_outputs"] == 4


# --- reference parity ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def parity_predictor(parity_model):
    from mobilesam_ros.predictor import SamPredictor

    return SamPredictor(create_runtime(parity_model, "onnxruntime", num_threads=2))


def test_parity_decoder_on_stored_embedding(parity_predictor, parity_dir, expected):
    cases = load_cases(parity_dir)
    assert len(cases) == 12
    for case in cases:
        emb = parity_predictor.set_embedding(expected[f"{case.image}/embedding"], case.image_size)
        check_case(case, expected, *run_case(parity_predictor, case, expected, emb))


@pytest.mark.parametrize("image", IMAGES)
def test_parity_encoder_on_reference_resize(parity_predictor, parity_dir, expected, image):
    resized = np.asarray(Image.open(parity_dir / "images" / f"{image}.resized.png").convert("RGB"))
    original_size = next(c.image_size for c in load_cases(parity_dir) if c.image == image)
    emb = parity_predictor.set_resized_image(resized, original_size)
    assert np.abs(emb.embedding - expected[f"{image}/embedding"]).max() <= EMBEDDING_ATOL


def test_parity_end_to_end(parity_predictor, parity_dir, expected):
    from mobilesam_ros.commands._common import load_image

    image = "picture4.jpg"
    emb = parity_predictor.set_image(load_image(parity_dir / "images" / image))
    for case in (c for c in load_cases(parity_dir) if c.image == image):
        check_case(case, expected, *run_case(parity_predictor, case, expected, emb))


def test_parity_through_segment_command(parity_model, parity_dir, expected, tmp_path):
    """`mobilesam-ros segment --model DIR --backend onnxruntime` on the fixture's cases."""
    pytest.importorskip("mobilesam_ros.commands.segment")
    from mobilesam_ros.cli import main

    image = "picture4.jpg"
    width = 2048
    for case in (c for c in load_cases(parity_dir) if c.image == image and c.id in ("box_point", "refine", "boxes_batch")):
        c = case.raw
        args = ["segment", str(parity_dir / "images" / image), "--model", str(parity_model), "--backend", "onnxruntime",
                "--threads", "2", "--save-npz", str(tmp_path / f"{case.id}.npz")]
        for (x, y), label in zip(c.get("points", []), c.get("labels", [])):
            args += ["--point", f"{x},{y},{label}"]
        if "box" in c:
            args += ["--box", ",".join(str(v) for v in c["box"])]
        if "boxes" in c:
            (tmp_path / "boxes.json").write_text(json.dumps(c["boxes"]))
            args += ["--boxes-json", str(tmp_path / "boxes.json")]
        if "mask_from" in c:
            source = f"{image}/{c['mask_from']}"
            best = expected[f"{source}/low_res_logits"][np.argmax(expected[f"{source}/iou_predictions"])]
            np.save(tmp_path / "mask.npy", best)
            args += ["--mask-input", str(tmp_path / "mask.npy")]
        if c.get("multimask"):
            args.append("--multimask")
        assert main(args) == 0, case.id
        got = np.load(tmp_path / f"{case.id}.npz")
        want_logits = expected[f"{case.key}/low_res_logits"]
        assert np.abs(got["low_res_logits"].reshape(want_logits.shape) - want_logits).max() <= 1e-3, case.id
        want = expected_masks(expected, case.key, width)
        assert mask_ious(got["masks"].reshape(want.shape), want).min() >= 0.99, case.id


TORCH_FREE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'rclpy'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np
import mobilesam_ros.runtime.tensorrt_backend, mobilesam_ros.runtime.tensorrt_build, mobilesam_ros.bench.model
from mobilesam_ros.predictor import SamPredictor
from mobilesam_ros.runtime import create_runtime
predictor = SamPredictor(create_runtime(sys.argv[1], 'onnxruntime', num_threads=2))
predictor.set_image(np.full((120, 160, 3), 90, np.uint8))
result = predictor.predict_boxes(np.array([[10, 10, 80, 60], [50, 40, 150, 110]], np.float32))
assert result.masks.shape == (2, 1, 120, 160), result.masks.shape
print('ok')
"""


def test_onnx_path_runs_without_torch_or_onnx(exported_model):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", TORCH_FREE, str(exported_model)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
