"""TinySAM as its authors run it: every prompt decoded with the three multimask outputs
(tokens 1..3), reproduced end to end from the images against TinySAM's reference
predictor (../shared/fixtures/parity-tinysam), on PyTorch and ONNX Runtime, through the
API, the CLI and segment-everything."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import export_decoder_beside

from parity import IMAGES, check_case, expected_masks, load_cases, mask_ious, run_case

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from mobilesam_ros.cli import main
from mobilesam_ros.commands._common import load_image
from mobilesam_ros.predictor import Prompt, SamPredictor, output_tokens, select_best
from mobilesam_ros.runtime import create_runtime


@pytest.fixture(scope="module")
def expected(tinysam_dir):
    return np.load(tinysam_dir / "expected.npz")


@pytest.fixture(scope="module")
def tinysam_onnx(parity_onnx, parity_dir, tmp_path_factory):
    """The parity checkpoint exported with --variant tinysam (decoder beside the shared encoder)."""
    out = tmp_path_factory.mktemp("tinysam") / "tinysam_onnx"
    return export_decoder_beside(parity_onnx, out, parity_dir / "checkpoint.pt", variant="tinysam", validate=False)


@pytest.fixture(scope="module")
def predictors(parity_dir, tinysam_onnx):
    return {
        "torch": SamPredictor(create_runtime(parity_dir / "checkpoint.pt", "torch", variant="tinysam")),
        "onnxruntime": SamPredictor(create_runtime(tinysam_onnx, "onnxruntime", num_threads=2)),
    }


def test_export_records_the_variant(tinysam_onnx, predictors):
    info = json.loads((tinysam_onnx / "model.json").read_text())
    assert info["variant"] == "tinysam" and info["num_mask_outputs"] == 4 and info["prompt_decoder"] is None
    for predictor in predictors.values():
        assert predictor.runtime.variant == "tinysam" and predictor.always_three_masks


def _embed(predictor, parity_dir, image):
    """The image's embedding, encoded once per predictor (tests share them)."""
    return predictor.cached(image) or predictor.set_image(load_image(parity_dir / "images" / image), key=image)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("image", IMAGES)
def test_end_to_end_from_the_image(predictors, parity_dir, tinysam_dir, expected, backend, image):
    """No multimask flag anywhere: the model's variant alone gives three masks per prompt
    (B x 3 for a batch of boxes), equal to TinySAM's reference."""
    predictor = predictors[backend]
    emb = _embed(predictor, parity_dir, image)
    cases = [c for c in load_cases(tinysam_dir) if c.image == image]
    assert {c.id for c in cases} == {"point", "points_fg_bg", "box", "box_point", "refine", "boxes_batch"}
    for case in cases:
        iou, logits, masks = run_case(predictor, case, expected, emb)
        assert iou.shape[-1] == 3
        check_case(case, expected, iou, logits, masks)


def test_best_of_three_is_the_one_place(predictors, parity_dir, expected):
    """Prediction.best(), decode_best and select_best all keep the best-scored mask."""
    predictor = predictors["onnxruntime"]
    image = "picture1.jpg"
    emb = _embed(predictor, parity_dir, image)
    box = np.array([153.8, 192.5, 538.3, 616.0], np.float32)  # the fixture's 'box' case
    result = predictor.predict(box=box, multimask_output=False, embedding=emb)
    best = result.best()
    k = int(np.argmax(expected[f"{image}/box/iou_predictions"]))
    assert best.masks.shape == (1, *emb.original_size) and best.iou_predictions.shape == (1,)
    assert best.iou_predictions[0] == result.iou_predictions.max()
    want = expected_masks(expected, f"{image}/box", emb.original_size[1])[k]
    assert mask_ious(best.masks, want[None])[0] >= 0.99
    iou, logits = predictor.decode_best([Prompt(box=box)], embedding=emb)
    assert iou.shape == (1,) and logits.shape == (1, 256, 256)
    assert np.abs(logits[0] - result.low_res_logits[k]).max() <= 1e-5
    assert output_tokens("tinysam", 4, False) == output_tokens("tinysam", 4, True) == slice(1, 4)
    assert output_tokens("mobilesam", 4, False) == slice(0, 1)
    scores = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.3]], np.float32)
    maps = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    top, chosen = select_best(scores, maps)
    assert top.tolist() == pytest.approx([0.9, 0.7]) and (chosen == maps[[0, 1], [1, 0]]).all()


def test_everything_boxes_keep_the_best_of_three(predictors, parity_dir, tinysam_dir, expected):
    """segment-everything's boxes strategy on a TinySAM model: one mask per box, the
    best-scored of TinySAM's three (never token 0)."""
    from mobilesam_ros.everything import EverythingConfig, EverythingSegmenter

    predictor = predictors["onnxruntime"]
    image = "picture1.jpg"
    rgb = load_image(parity_dir / "images" / image)
    emb = _embed(predictor, parity_dir, image)
    case = next(c for c in load_cases(tinysam_dir) if c.image == image and c.id == "boxes_batch")
    boxes = np.asarray(case.raw["boxes"], np.float32)
    # NMS off: the fixture's five boxes overlap on purpose
    result = EverythingSegmenter(predictor, EverythingConfig(nms_thresh=1.0)).segment(rgb, embedding=emb, boxes=boxes)
    key = case.key
    best = np.argmax(expected[f"{key}/iou_predictions"], axis=1)
    want = expected_masks(expected, key, case.image_size[1])[np.arange(len(boxes)), best]
    got_index = np.asarray(result.prompt_index)
    assert len(result) == len(boxes) and sorted(got_index.tolist()) == list(range(len(boxes)))
    ious = mask_ious(result.masks, want[got_index])
    assert ious.min() >= 0.99, ious
    want_scores = expected[f"{key}/iou_predictions"].max(axis=1)[got_index]
    assert np.abs(np.asarray(result.iou_predictions) - want_scores).max() <= 1e-3


def test_cli_gives_three_masks_per_prompt_without_flags(tinysam_onnx, parity_dir, tinysam_dir, expected, tmp_path):
    image = "picture1.jpg"
    case = next(c for c in load_cases(tinysam_dir) if c.image == image and c.id == "boxes_batch")
    boxes_json = tmp_path / "boxes.json"
    boxes_json.write_text(json.dumps(case.raw["boxes"]))
    npz, overlay = tmp_path / "boxes.npz", tmp_path / "overlay.png"
    assert main(["segment", str(parity_dir / "images" / image), "--model", str(tinysam_onnx), "--threads", "2",
                 "--boxes-json", str(boxes_json), "--save-npz", str(npz), "--overlay", str(overlay)]) == 0
    out = np.load(npz)
    assert out["masks"].shape == (5, 3, *case.image_size) and out["iou_predictions"].shape == (5, 3)
    want = expected_masks(expected, case.key, case.image_size[1])
    assert mask_ious(out["masks"].reshape(15, -1), want.reshape(15, -1)).min() >= 0.99
    assert overlay.is_file()

    # a .pt used directly: --variant tinysam on the torch backend, one box, three masks
    point = next(c for c in load_cases(tinysam_dir) if c.image == image and c.id == "box")
    npz = tmp_path / "box.npz"
    assert main(["segment", str(parity_dir / "images" / image), "--checkpoint", str(parity_dir / "checkpoint.pt"),
                 "--variant", "tinysam", "--box", ",".join(map(str, point.raw["box"])), "--save-npz", str(npz)]) == 0
    out = np.load(npz)
    assert out["masks"].shape == (3, *point.image_size)
    want = expected_masks(expected, point.key, point.image_size[1])
    assert mask_ious(out["masks"], want).min() >= 0.99


def test_single_mask_export_and_variant_mistakes_are_refused(tinysam_onnx, parity_dir, tmp_path, capsys):
    out = tmp_path / "new" / "single"
    assert main(["export", "--checkpoint", str(parity_dir / "checkpoint.pt"), "--out", str(out),
                 "--variant", "tinysam", "--single-mask"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--single-mask is refused for tinysam" in err[0]
    assert not (tmp_path / "new").exists()  # nothing written before the refusal

    with pytest.raises(ValueError, match="exported as tinysam"):
        create_runtime(tinysam_onnx, "onnxruntime", variant="mobilesam")
    with pytest.raises(ValueError, match="unknown model variant 'tinysam2'"):
        create_runtime(parity_dir / "checkpoint.pt", "torch", variant="tinysam2")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("encoder.onnx", "decoder.onnx"):
        (broken / name).symlink_to(tinysam_onnx / name)
    info = json.loads((tinysam_onnx / "model.json").read_text())
    (broken / "model.json").write_text(json.dumps({**info, "variant": "tinysam2"}))
    assert main(["segment", str(parity_dir / "images" / "picture1.jpg"), "--model", str(broken),
                 "--point", "100,100,1", "--save-npz", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model variant 'tinysam2'" in err[0]
    # the CLI's --variant is checked by argparse (usage error, exit 2)
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "x.png", "--checkpoint", "x.pt", "--variant", "tinysam2", "--point", "1,1,1"])
    assert exit_info.value.code == 2
