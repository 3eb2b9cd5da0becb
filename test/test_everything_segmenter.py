"""EverythingSegmenter (boxes and hierarchical), the `everything` command and the bench."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest
from PIL import Image
from test_everything_discovery import head_from_boxes, make_detector
from test_everything_grid import CachingRuntime

from parity import expected_masks, mask_ious

pytest.importorskip("torch")

from mobilesam_ros.everything import EverythingConfig, EverythingSegmenter, ObjectDiscovery
from mobilesam_ros.everything import masks as mk

H, W = 770, 769


@pytest.fixture(scope="module")
def expected(parity_dir):
    return np.load(parity_dir / "expected.npz")


@pytest.fixture(scope="module")
def predictor(parity_dir):
    from mobilesam_ros.predictor import SamPredictor
    from mobilesam_ros.runtime import create_runtime

    return SamPredictor(CachingRuntime(create_runtime(parity_dir / "checkpoint.pt", "torch")))


@pytest.fixture(scope="module")
def emb(predictor, expected):
    return predictor.set_embedding(expected["picture1.jpg/embedding"], (H, W), key="picture1.jpg")


@pytest.fixture(scope="module")
def boxes_batch(parity_dir):
    cases = json.loads((parity_dir / "cases.json").read_text())["cases"]
    case = next(c for c in cases if c["image"] == "picture1.jpg" and c["id"] == "boxes_batch")
    return np.asarray(case["boxes"], np.float32)


@pytest.fixture(scope="module")
def picture1(parity_dir):
    return np.asarray(Image.open(parity_dir / "images" / "picture1.jpg").convert("RGB"))


def test_boxes_batched_decoding_matches_reference(predictor, emb, expected, boxes_batch):
    cfg = EverythingConfig(strategy="boxes", nms_thresh=1.0, decoder_chunk=2)
    result = EverythingSegmenter(predictor, cfg).segment(None, embedding=emb, boxes=boxes_batch)
    assert result.decoder_calls == 3  # 5 boxes in chunks of 2
    assert len(result) == 5 and result.num_prompts == 5
    np.testing.assert_array_equal(result.prompt_boxes, boxes_batch)
    assert (np.diff(result.iou_predictions) <= 0).all()  # best first
    want = expected_masks(expected, "picture1.jpg/boxes_batch", W)[result.prompt_index]
    assert mask_ious(result.masks, want).min() >= 0.99
    want_iou = expected["picture1.jpg/boxes_batch/iou_predictions"][result.prompt_index, 0]
    np.testing.assert_allclose(result.iou_predictions, want_iou, atol=1e-3)
    np.testing.assert_allclose(result.boxes, mk.masks_to_boxes(result.masks))
    for k, mask in enumerate(result.masks):  # reported stability is SAM's, on the upsampled logits
        assert 0.0 < result.stability_scores[k] <= 1.0
    assert set(result.timings_ms) >= {"decoder", "postprocess", "upsample", "total"}
    arrays = result.npz_arrays()
    assert set(arrays) == {"masks", "iou_predictions", "stability_scores", "boxes", "prompt_boxes"}


@pytest.mark.parametrize("nms", ["box", "mask"])
def test_duplicates_removed_and_filters(predictor, emb, boxes_batch, nms):
    boxes = np.concatenate([boxes_batch[:2], boxes_batch[:1], [[-50, -50, 2000, 3000], [10, 10, 10, 40]]])
    cfg = EverythingConfig(strategy="boxes", nms=nms, nms_thresh=0.95)
    result = EverythingSegmenter(predictor, cfg).segment(None, embedding=emb, boxes=boxes)
    # the oversized box is clipped to the image, the empty one kept in place but not decoded
    np.testing.assert_array_equal(result.prompt_boxes[3], [0, 0, W, H])
    assert len(result.prompt_boxes) == 5 and 4 not in result.prompt_index
    assert result.num_prompts == 4 and result.decoder_calls == 1 and result.stats["skipped_boxes"] == 1
    assert not {0, 2} <= set(result.prompt_index.tolist())  # the same box twice: one mask
    # thresholds drop everything when set above what the model predicts
    strict = cfg.with_(pred_iou_thresh=float(result.iou_predictions.max()) + 0.01)
    assert len(EverythingSegmenter(predictor, strict).segment(None, embedding=emb, boxes=boxes)) == 0
    big = cfg.with_(min_area=int(result.areas.max()))
    only = EverythingSegmenter(predictor, big).segment(None, embedding=emb, boxes=boxes)
    assert len(only) == 1 and only.areas[0] == result.areas.max()


def test_remove_small_regions(predictor, emb, boxes_batch):
    cfg = EverythingConfig(strategy="boxes", nms_thresh=1.0, remove_small_regions=500)
    result = EverythingSegmenter(predictor, cfg).segment(None, embedding=emb, boxes=boxes_batch)
    assert len(result) >= 1
    for mask in result.masks:
        _, holes_changed = mk.remove_small_regions(mask, 500, "holes")
        assert not holes_changed
        _, islands_changed = mk.remove_small_regions(mask, 500, "islands")
        n_islands = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)[0] - 1
        assert not islands_changed or n_islands == 1  # all small: the largest one stays


def test_boxes_from_detector(tmp_path, predictor, emb, picture1):
    # a 64x64 detector: 770x769 -> gain 64/770
    boxes_in = [[10, 5, 40, 50], [30, 20, 60, 60], [12, 6, 41, 50]]  # IoU(first, third) = 0.88
    path = make_detector(tmp_path / "det.onnx", head_from_boxes(boxes_in, [[0.9], [0.8], [0.7]]), (64, 64))
    det = ObjectDiscovery(path, iou=0.9, border_snap=0)
    found = det.detect(picture1)
    assert len(found) == 3  # 0.88 is not above the detector's NMS IoU 0.9
    seg = EverythingSegmenter(predictor, EverythingConfig(strategy="boxes", nms_thresh=1.0), det)
    result = seg.segment(picture1, embedding=emb)
    np.testing.assert_allclose(result.prompt_boxes, found.boxes)
    assert result.decoder_calls == 1 and result.num_prompts == 3 and "detector" in result.timings_ms
    # boxes given per frame replace the detector
    result = seg.segment(picture1, embedding=emb, boxes=found.boxes[:1])
    assert result.num_prompts == 1
    with pytest.raises(ValueError, match="needs boxes"):
        EverythingSegmenter(predictor, EverythingConfig()).segment(picture1, embedding=emb)
    with pytest.raises(ValueError, match="embedding is of a"):
        seg.segment(picture1[:100], embedding=emb)


@pytest.mark.parametrize("exact", [False, True])
def test_hierarchical_counts_decoder_calls(predictor, emb, exact):
    # points_per_side 4: one sparse point, up to 15 dense points around it
    cfg = EverythingConfig(strategy="hierarchical", points_per_side=4, pred_iou_thresh=0.0,
                           stability_score_thresh=0.0, exact=exact, high_score_thresh=1e9)
    result = EverythingSegmenter(predictor, cfg).segment(None, embedding=emb)
    assert result.stats["sparse_points"] == 1 and result.stats["dense_points"] == 15
    assert result.num_prompts == 16 and result.decoder_calls == 2
    assert result.points.shape == (len(result), 2)
    # a covered map over everything (any logit above -1e9) leaves no dense point to decode
    covered = EverythingSegmenter(predictor, cfg.with_(high_score_thresh=-1e9)).segment(None, embedding=emb)
    assert covered.stats["dense_points"] == 0 and covered.decoder_calls == 1
    assert covered.stats["covered_fraction"] == 1.0


def test_config_validation():
    with pytest.raises(ValueError, match="strategy"):
        EverythingConfig(strategy="all")
    with pytest.raises(ValueError, match="nms"):
        EverythingConfig(nms="soft")
    with pytest.raises(ValueError, match="points_per_side"):
        EverythingConfig(strategy="hierarchical", points_per_side=3)
    assert EverythingConfig(strategy="grid").resolved("pred_iou_thresh") == 0.88
    assert EverythingConfig(strategy="grid").resolved("stability_score_thresh") == 0.95
    assert EverythingConfig(strategy="boxes").resolved("pred_iou_thresh") == 0.0
    assert EverythingConfig(strategy="boxes", pred_iou_thresh=0.5).resolved("pred_iou_thresh") == 0.5


def test_everything_command(parity_dir, tmp_path, boxes_batch, capsys):
    from mobilesam_ros.cli import main

    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(boxes_batch.tolist()))
    npz, overlay, coco = tmp_path / "out.npz", tmp_path / "overlay.png", tmp_path / "coco.json"
    image = str(parity_dir / "images" / "picture1.jpg")
    rc = main(["everything", image, "--model", str(parity_dir / "checkpoint.pt"), "--strategy", "boxes",
               "--boxes-json", str(boxes), "--nms-thresh", "1", "--save-npz", str(npz), "--overlay", str(overlay),
               "--coco-json", str(coco)])
    assert rc == 0
    got = np.load(npz)
    assert got["masks"].shape == (5, H, W) and got["masks"].dtype == bool
    assert got["iou_predictions"].shape == (5,) and got["stability_scores"].shape == (5,)
    np.testing.assert_allclose(got["prompt_boxes"], boxes_batch)
    doc = json.loads(coco.read_text())
    anns = doc["annotations"]
    assert len(anns) == 5 and doc["images"][0]["height"] == H
    for k, ann in enumerate(anns):
        np.testing.assert_array_equal(mk.rle_to_mask(ann["segmentation"]), got["masks"][k])
        assert ann["area"] == got["masks"][k].sum()
        assert ann["predicted_iou"] == pytest.approx(float(got["iou_predictions"][k]))
        assert ann["stability_score"] == pytest.approx(float(got["stability_scores"][k]))
    assert Image.open(overlay).size == (W, H)
    assert "5 mask(s)" in capsys.readouterr().err


def test_everything_command_errors(parity_dir, tmp_path, capsys):
    from mobilesam_ros.cli import main

    image = str(parity_dir / "images" / "picture1.jpg")
    ckpt = str(parity_dir / "checkpoint.pt")
    assert main(["everything", image, "--model", ckpt, "--save-npz", str(tmp_path / "x.npz")]) == 2
    assert "needs boxes" in capsys.readouterr().err
    assert main(["everything", image, "--model", ckpt, "--strategy", "grid", "--detector", "d.onnx",
                 "--save-npz", str(tmp_path / "x.npz")]) == 2
    assert "--strategy boxes" in capsys.readouterr().err
    assert main(["everything", image, "--model", ckpt, "--detector", str(tmp_path / "missing.onnx"),
                 "--save-npz", str(tmp_path / "x.npz")]) == 2
    assert "detector not found" in capsys.readouterr().err
    assert main(["everything", image, "--model", ckpt, "--strategy", "grid"]) == 2
    assert "nothing to write" in capsys.readouterr().err


def test_everything_bench(parity_dir, tmp_path):
    from mobilesam_ros.bench.everything import add_everything_arguments, format_table, run_everything_bench
    from mobilesam_ros.runtime import create_runtime

    parser = argparse.ArgumentParser()
    add_everything_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--everything-image", str(parity_dir / "images" / "picture1.jpg"),
                              "--everything-boxes", "3", "--everything-grid", "4", "--everything-json", str(out)])
    result = run_everything_bench(args, create_runtime(parity_dir / "checkpoint.pt", "torch"))
    assert set(result["results"]) == {"boxes", "grid4x4", "hierarchical4"}
    assert "synthetic" in result["boxes_source"]
    assert result["results"]["boxes"]["prompts"] == 3 and result["results"]["boxes"]["decoder_calls"] == 1
    assert result["results"]["grid4x4"]["decoder_calls"] == 1 and result["results"]["grid4x4"]["prompts"] == 16
    assert result["ratios"]["grid_over_boxes_decoder"] > 0
    assert json.loads(out.read_text())["results"]["boxes"]["prompts"] == 3
    assert "| boxes | 3 | 1 |" in format_table(result)


def test_onnx_runtime_matches_torch(exported_model, synthetic_checkpoint):
    """The exported runtime returns views of buffers it reuses on the next call; several
    decoder calls per frame must still give the torch backend's masks."""
    from mobilesam_ros.predictor import SamPredictor
    from mobilesam_ros.runtime import create_runtime

    embedding = np.random.default_rng(0).standard_normal((1, 256, 64, 64)).astype(np.float32)
    cfg = EverythingConfig(strategy="grid", points_per_side=4, points_per_batch=4, pred_iou_thresh=0.0,
                           stability_score_thresh=0.0, nms_thresh=1.0)
    results = []
    for model in (synthetic_checkpoint, exported_model):
        predictor = SamPredictor(create_runtime(model))
        emb = predictor.set_embedding(embedding, (240, 320))
        results.append(EverythingSegmenter(predictor, cfg).segment(None, embedding=emb))
    torch_res, onnx_res = results
    assert torch_res.decoder_calls == onnx_res.decoder_calls == 4
    assert len(torch_res) == len(onnx_res) > 0
    np.testing.assert_allclose(onnx_res.iou_predictions, torch_res.iou_predictions, atol=1e-4)
    for k in range(len(torch_res)):  # same prompt, same mask (order by score, ties aside)
        same = np.flatnonzero(onnx_res.prompt_index == torch_res.prompt_index[k])
        assert mask_ious(onnx_res.masks[same], np.repeat(torch_res.masks[k : k + 1], len(same), 0)).max() >= 0.99
