"""MobileSAMv2 as published: MobileSAM's image encoder with the authors' prompt-guided
decoder (Prompt_guided_Mask_Decoder.pt), boxes decoded with the single-mask output,
reproduced end to end from the images against the reference
(../shared/fixtures/parity-mobilesamv2), on PyTorch and ONNX Runtime, through the API,
the CLI and segment-everything's boxes strategy."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from parity import IMAGES, check_case, expected_masks, load_cases, mask_ious, run_case

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from mobilesam_ros.cli import main
from mobilesam_ros.commands._common import load_image
from mobilesam_ros.errors import CheckpointError
from mobilesam_ros.modeling import load_sam
from mobilesam_ros.predictor import SamPredictor
from mobilesam_ros.runtime import create_runtime

DECODER = "Prompt_guided_Mask_Decoder.pt"


@pytest.fixture(scope="module")
def expected(mobilesamv2_dir):
    return np.load(mobilesamv2_dir / "expected.npz")


@pytest.fixture(scope="module")
def v2_onnx(parity_onnx, parity_dir, mobilesamv2_dir, tmp_path_factory):
    """parity checkpoint + the fixture's decoder file, exported through the CLI (decoder
    only, beside a copy of the shared encoder; validated against PyTorch by the export)."""
    import shutil

    out = tmp_path_factory.mktemp("mobilesamv2") / "v2_onnx"
    out.mkdir()
    shutil.copy(parity_onnx / "encoder.onnx", out / "encoder.onnx")
    assert main(["export", "--checkpoint", str(parity_dir / "checkpoint.pt"), "--decoder-checkpoint",
                 str(mobilesamv2_dir / DECODER), "--out", str(out), "--decoder-only", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def predictors(parity_dir, mobilesamv2_dir, v2_onnx):
    return {
        "torch": SamPredictor(create_runtime(parity_dir / "checkpoint.pt", "torch",
                                             decoder_checkpoint=mobilesamv2_dir / DECODER)),
        "onnxruntime": SamPredictor(create_runtime(v2_onnx, "onnxruntime", num_threads=2)),
    }


def _embed(predictor, parity_dir, image):
    return predictor.cached(image) or predictor.set_image(load_image(parity_dir / "images" / image), key=image)


def test_model_json_records_the_decoder(v2_onnx, mobilesamv2_dir, predictors):
    info = json.loads((v2_onnx / "model.json").read_text())
    digest = hashlib.sha256((mobilesamv2_dir / DECODER).read_bytes()).hexdigest()
    assert info["variant"] == "mobilesam"
    assert info["prompt_decoder"] == {"kind": "mobilesamv2_prompt_guided_decoder", "file": DECODER,
                                      "sha256": digest, "official": None}
    assert info["validation"]["passed"] is True
    for predictor in predictors.values():
        assert predictor.runtime.prompt_decoder["sha256"] == digest
        assert predictor.runtime.variant == "mobilesam"


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("image", IMAGES)
def test_end_to_end_from_the_image(predictors, parity_dir, mobilesamv2_dir, expected, backend, image):
    predictor = predictors[backend]
    emb = _embed(predictor, parity_dir, image)
    (case,) = [c for c in load_cases(mobilesamv2_dir) if c.image == image]
    assert case.id == "v2_boxes" and len(case.raw["boxes"]) == 24
    iou, logits, masks = run_case(predictor, case, expected, emb)
    check_case(case, expected, iou, logits, masks)


def test_everything_boxes_is_mobilesamv2(predictors, parity_dir, mobilesamv2_dir, expected):
    """segment-everything's boxes strategy with such a model: one single-mask output per
    box, every mask kept (MobileSAMv2's script has no filter and no mask NMS)."""
    from mobilesam_ros.everything import EverythingConfig, EverythingSegmenter

    predictor = predictors["onnxruntime"]
    image = "picture1.jpg"
    rgb = load_image(parity_dir / "images" / image)
    emb = _embed(predictor, parity_dir, image)
    (case,) = [c for c in load_cases(mobilesamv2_dir) if c.image == image]
    boxes = np.asarray(case.raw["boxes"], np.float32)
    result = EverythingSegmenter(predictor, EverythingConfig(nms_thresh=1.0)).segment(rgb, embedding=emb, boxes=boxes)
    want = expected_masks(expected, case.key, case.image_size[1])[:, 0]
    index = np.asarray(result.prompt_index)
    nonempty = np.flatnonzero(want.reshape(len(want), -1).any(1))
    assert sorted(index.tolist()) == nonempty.tolist()  # empty masks are the only ones dropped
    assert mask_ious(result.masks, want[index]).min() >= 0.99
    want_iou = expected[f"{case.key}/iou_predictions"][index, 0]
    assert np.abs(np.asarray(result.iou_predictions) - want_iou).max() <= 1e-3


def test_cli_gives_the_v2_outputs(v2_onnx, parity_dir, mobilesamv2_dir, expected, tmp_path, capsys):
    image = "picture1.jpg"
    (case,) = [c for c in load_cases(mobilesamv2_dir) if c.image == image]
    boxes_json = tmp_path / "boxes.json"
    boxes_json.write_text(json.dumps({"boxes": case.raw["boxes"][:6]}))
    want = expected_masks(expected, case.key, case.image_size[1])[:6, 0]
    npz = tmp_path / "out.npz"
    assert main(["segment", str(parity_dir / "images" / image), "--model", str(v2_onnx), "--threads", "2",
                 "--boxes-json", str(boxes_json), "--save-npz", str(npz)]) == 0
    assert "MobileSAMv2 (prompt-guided decoder Prompt_guided_Mask_Decoder.pt)" in capsys.readouterr().err
    out = np.load(npz)
    assert out["masks"].shape == (6, *case.image_size)
    assert mask_ious(out["masks"], want).min() >= 0.99
    # an exported model has its decoder built in: giving the file again is an error
    assert main(["segment", str(parity_dir / "images" / image), "--model", str(v2_onnx),
                 "--decoder-checkpoint", str(mobilesamv2_dir / DECODER), "--point", "5,5,1",
                 "--save-npz", str(tmp_path / "x.npz")]) == 2
    assert "decoder is fixed at export" in capsys.readouterr().err
    # a .pt used directly: the CLI's --decoder-checkpoint reaches the torch backend
    from mobilesam_ros.arguments import open_runtime
    from mobilesam_ros.cli import build_parser

    args = build_parser().parse_args(["segment", "x.png", "--checkpoint", str(parity_dir / "checkpoint.pt"),
                                      "--decoder-checkpoint", str(mobilesamv2_dir / DECODER)])
    runtime = open_runtime(args)
    assert runtime.name == "torch" and runtime.prompt_decoder["file"] == DECODER


def test_a_wrong_decoder_file_names_its_keys(parity_dir, mobilesamv2_dir, tmp_path):
    # mobile_sam.pt's layout is not the authors' decoder layout
    with pytest.raises(CheckpointError, match=r"(?s)missing keys: PromtEncoder, MaskDecoder.*unexpected keys: image_encoder"):
        load_sam(parity_dir / "checkpoint.pt", parity_dir / "checkpoint.pt")
    parts = torch.load(mobilesamv2_dir / DECODER, weights_only=True)
    renamed = dict(parts["MaskDecoder"])
    renamed["iou_head.weight"] = renamed.pop("iou_token.weight")
    bad = tmp_path / "renamed.pt"
    torch.save({"PromtEncoder": parts["PromtEncoder"], "MaskDecoder": renamed}, bad)
    with pytest.raises(CheckpointError, match=r"(?s)\(MaskDecoder\) does not match.*1 missing keys: iou_token.weight"
                                              r".*1 unexpected keys: iou_head.weight") as info:
        load_sam(parity_dir / "checkpoint.pt", bad)
    assert "\n" in str(info.value)  # the CLI joins the lines with ' | '
    module = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), module)
    with pytest.raises(CheckpointError, match="pickled Python objects.*arbitrary code"):
        load_sam(parity_dir / "checkpoint.pt", module)
    with pytest.raises(CheckpointError, match="decoder checkpoint not found.*download prompt_guided_decoder"):
        load_sam(parity_dir / "checkpoint.pt", tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="does not go with tinysam"):
        create_runtime(parity_dir / "checkpoint.pt", "torch", variant="tinysam",
                       decoder_checkpoint=mobilesamv2_dir / DECODER)


def test_download_verifies_the_decoder_by_layout(mobilesamv2_dir, tmp_path, capsys):
    """No official size or sha256 is published for the decoder file: download checks its
    layout and prints its sha256 (here on the fixture's file, served as a file:// URL)."""
    out = tmp_path / "models" / DECODER
    source = mobilesamv2_dir / DECODER
    assert main(["download", "prompt_guided_decoder", "--url", source.as_uri(), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_bytes() == source.read_bytes()
    assert "layout verified" in text and hashlib.sha256(source.read_bytes()).hexdigest() in text
    wrong = tmp_path / "wrong.pt"
    torch.save({"PromtEncoder": {}, "MaskDecoder": {}}, wrong)
    bad_out = tmp_path / "dl" / "sub" / DECODER
    assert main(["download", "prompt_guided_decoder", "--url", wrong.as_uri(), "--out", str(bad_out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mobilesam-ros download: error:") and "missing keys" in err[-1] and "kept as" in err[-1]
    assert bad_out.with_suffix(".rejected").exists() and not bad_out.exists()


def test_node_parameters_take_the_decoder(parity_dir, mobilesamv2_dir, tmp_path):
    from mobilesam_ros.live.config import ConfigError, validate

    cfg = validate({"model": str(parity_dir / "checkpoint.pt"), "decoder_checkpoint": str(mobilesamv2_dir / DECODER),
                    "variant": "auto"})
    assert cfg["decoder_checkpoint"].endswith(DECODER)
    with pytest.raises(ConfigError, match="decoder_checkpoint: .* does not exist"):
        validate({"model": str(parity_dir / "checkpoint.pt"), "decoder_checkpoint": str(tmp_path / "none.pt")})
    with pytest.raises(ConfigError, match="variant"):
        validate({"model": str(parity_dir / "checkpoint.pt"), "variant": "tinysam2"})
