"""ONNX export: real exports of the synthetic checkpoint, validated against PyTorch."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from mobilesam_ros.export import (
    ExportError,
    FastSamDecoder,
    export_model,
    validate_export,
    validation_prompts,
)
from mobilesam_ros.modeling import SamDecoder, load_sam
from mobilesam_ros.runtime.base import DECODER_INPUT_NAMES, DECODER_OUTPUT_NAMES
from mobilesam_ros.weights import sha256_file


@pytest.fixture(scope="module")
def sam(synthetic_checkpoint):
    return load_sam(synthetic_checkpoint)


def test_model_json_describes_the_export(exported_model, synthetic_checkpoint):
    info = json.loads((exported_model / "model.json").read_text())
    assert info["format"] == "mobilesam_ros.onnx" and info["format_version"] == 1
    assert info["variant"] == "mobilesam"
    assert info["checkpoint"]["sha256"] == sha256_file(synthetic_checkpoint)
    assert info["checkpoint"]["official"] is False
    assert info["opset"] == 17 and info["precision"] == "fp32"
    assert info["num_mask_outputs"] == 4 and info["decoder_graph"] == "fast"
    assert [i["name"] for i in info["encoder"]["inputs"]] == ["image"]
    assert info["encoder"]["inputs"][0]["shape"] == [1, 3, 1024, 1024]
    assert [o["name"] for o in info["encoder"]["outputs"]] == ["image_embeddings"]
    assert [i["name"] for i in info["decoder"]["inputs"]] == list(DECODER_INPUT_NAMES)
    assert [o["name"] for o in info["decoder"]["outputs"]] == list(DECODER_OUTPUT_NAMES)
    coords = info["decoder"]["inputs"][1]
    assert coords["shape"] == ["num_prompts", "num_points", 2]
    assert info["decoder"]["outputs"][1]["shape"] == ["num_prompts", 4, 256, 256]
    for tool in ("mobilesam_ros", "torch", "onnx", "onnxruntime"):
        assert info["exported_with"][tool]
    for part in ("encoder", "decoder"):
        assert info[part]["sha256"] == sha256_file(exported_model / info[part]["file"])
    assert info["validation"]["passed"] is True
    assert info["validation"]["encoder_max_abs_diff"] <= 1e-3
    assert max(info["validation"]["decoder_max_abs_diff"].values()) <= 1e-3


def test_graphs_are_valid_onnx_without_tile_or_onehot(exported_model):
    for name in ("encoder.onnx", "decoder.onnx"):
        model = onnx.load(str(exported_model / name))
        onnx.checker.check_model(model)
        assert model.opset_import[0].version == 17
    decoder = onnx.load(str(exported_model / "decoder.onnx"))
    ops = {n.op_type for n in decoder.graph.node}
    assert not ops & {"OneHot", "Tile", "Resize", "Upsample", "ConvTranspose"}, ops
    # the positional encoding is stored once, not once per use
    big = [i for i in decoder.graph.initializer if np.prod(i.dims) == 4096 * 256]
    assert len(big) == 1


@pytest.mark.parametrize("num_mask_outputs", [4, 1])
def test_fast_decoder_equals_sam_decoder(sam, num_mask_outputs):
    reference = SamDecoder(sam, num_mask_outputs).eval()
    fast = FastSamDecoder(sam, num_mask_outputs).eval()
    embedding = torch.randn(1, 256, 64, 64, generator=torch.Generator().manual_seed(1))
    for _, inputs in validation_prompts(seed=3):
        args = (embedding, *(torch.from_numpy(a) for a in inputs))
        with torch.no_grad():
            want_iou, want_masks = reference(*args)
            got_iou, got_masks = fast(*args)
        assert got_masks.shape == want_masks.shape == (inputs[0].shape[0], num_mask_outputs, 256, 256)
        assert (got_iou - want_iou).abs().max() <= 1e-4
        assert (got_masks - want_masks).abs().max() <= 1e-4


def test_onnx_decoder_broadcasts_one_embedding_over_prompts(exported_model, sam):
    """B prompts and N points are dynamic; each prompt's result is independent of the batch."""
    session = ort.InferenceSession(str(exported_model / "decoder.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    embedding = rng.normal(size=(1, 256, 64, 64)).astype(np.float32)
    no_mask = np.zeros((1, 1, 256, 256), np.float32), np.zeros((1,), np.float32)
    for batch, points in ((1, 1), (7, 2), (3, 5)):
        coords = rng.uniform(0, 1024, (batch, points, 2)).astype(np.float32)
        labels = rng.integers(-1, 4, (batch, points)).astype(np.float32)
        iou, masks = session.run(None, dict(zip(DECODER_INPUT_NAMES, (embedding, coords, labels, *no_mask))))
        assert iou.shape == (batch, 4) and masks.shape == (batch, 4, 256, 256)
        one_iou, one_masks = session.run(None, dict(zip(DECODER_INPUT_NAMES, (embedding, coords[-1:], labels[-1:], *no_mask))))
        assert np.abs(one_masks[0] - masks[-1]).max() <= 1e-4
        assert np.abs(one_iou[0] - iou[-1]).max() <= 1e-5


def test_single_mask_plain_decoder_through_the_cli(exported_model, synthetic_checkpoint, tmp_path):
    from mobilesam_ros.cli import main

    out = tmp_path / "single"
    out.mkdir()
    shutil.copy(exported_model / "encoder.onnx", out / "encoder.onnx")
    assert main(["export", "--checkpoint", str(synthetic_checkpoint), "--out", str(out), "--single-mask",
                 "--decoder-graph", "plain", "--decoder-only", "--quiet"]) == 0
    info = json.loads((out / "model.json").read_text())
    assert info["num_mask_outputs"] == 1 and info["decoder_graph"] == "plain"
    assert info["decoder"]["outputs"][0]["shape"] == ["num_prompts", 1]
    single = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    full = ort.InferenceSession(str(exported_model / "decoder.onnx"), providers=["CPUExecutionProvider"])
    _, inputs = validation_prompts()[1]
    embedding = np.random.default_rng(2).normal(size=(1, 256, 64, 64)).astype(np.float32)
    feeds = dict(zip(DECODER_INPUT_NAMES, (embedding, *inputs)))
    iou1, masks1 = single.run(None, feeds)
    iou4, masks4 = full.run(None, feeds)
    assert masks1.shape == (5, 1, 256, 256)
    assert np.abs(masks1[:, 0] - masks4[:, 0]).max() <= 1e-3
    assert np.abs(iou1[:, 0] - iou4[:, 0]).max() <= 1e-4


def test_validation_fails_loudly_on_a_mismatch(exported_model, parity_dir, tmp_path):
    """ONNX files from one checkpoint checked against another model's weights."""
    other = load_sam(parity_dir / "checkpoint.pt")
    with pytest.raises(ExportError, match="does not match PyTorch"):
        validate_export(other, exported_model, 4, "fast", log=lambda _m: None, encoder=False)


def test_failed_validation_leaves_no_model_json(synthetic_checkpoint, exported_model, tmp_path, monkeypatch):
    import mobilesam_ros.export as export

    out = tmp_path / "broken"
    out.mkdir()
    shutil.copy(exported_model / "encoder.onnx", out / "encoder.onnx")
    (out / "model.json").write_text("{}")  # a stale one from an earlier export

    def broken(sam, num_mask_outputs=4, graph="fast"):
        decoder = FastSamDecoder(sam, num_mask_outputs).eval()
        with torch.no_grad():
            decoder.b2 += 0.5  # a wrong bias in the second upscaling layer
        return decoder

    monkeypatch.setattr(export, "build_decoder", broken)
    with pytest.raises(ExportError, match="low_res_masks"):
        export_model(synthetic_checkpoint, out, encoder=False, log=lambda _m: None)
    assert not (out / "model.json").exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    from mobilesam_ros.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "checkpoint not found" in err[0]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "o"), "--opset", "13"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "opset" in err[0]
