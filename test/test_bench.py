"""`mobilesam-ros bench`: runs, measures what it says, writes the JSON contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mobilesam_ros.bench.model import BenchImage, bench_boxes, format_table, run_bench, stats, synthetic_image


def test_stats_and_boxes():
    s = stats([0.010, 0.020, 0.030, 0.040, 0.100])
    assert s["median"] == 30.0 and s["p90"] == pytest.approx(76.0) and s["n"] == 5
    boxes = bench_boxes(50, (480, 640))
    assert boxes.shape == (50, 4)
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 640).all() and (boxes[:, 3] <= 480).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert np.array_equal(boxes, bench_boxes(50, (480, 640)))


def test_run_bench_with_onnxruntime(exported_model):
    from mobilesam_ros.runtime import create_runtime

    runtime = create_runtime(exported_model, "onnxruntime", num_threads=2)
    images = [BenchImage("320x240", synthetic_image(240, 320)), BenchImage("200x300", synthetic_image(300, 200, 1))]
    result = run_bench(runtime, images, boxes=(1, 3), warmup=0, repeats=2, encoder_repeats=1, log=lambda _m: None)
    assert result["backend"] == "onnxruntime"
    assert set(result["encoder_ms"]) >= {"median", "p90"}
    assert set(result["decode_ms"]) == {"1", "3"}
    assert result["decode_ms"] == result["decode_ms_by_image"]["320x240"]
    row = result["decode_ms_by_image"]["200x300"]["3"]
    assert row["median"] > 0 and row["p90"] >= row["median"] and row["decoder_median"] > 0
    assert result["peak_rss_mb"] > 0
    assert "3 boxes -> 200x300 masks" in format_table(result)


def test_reference_path_gives_the_same_masks(synthetic_checkpoint, exported_model):
    """The torch mimic of the reference predictor and this package's path agree."""
    pytest.importorskip("torch")
    from mobilesam_ros.bench.model import ReferencePredictor
    from mobilesam_ros.predictor import SamPredictor
    from mobilesam_ros.runtime import create_runtime

    rgb = synthetic_image(300, 400, seed=3)
    boxes = bench_boxes(3, rgb.shape[:2], seed=1)
    reference = ReferencePredictor(synthetic_checkpoint)
    reference.set_image(rgb)
    want = reference.predict_boxes(boxes)
    predictor = SamPredictor(create_runtime(exported_model, "onnxruntime", num_threads=2))
    predictor.set_image(rgb)
    got = predictor.predict_boxes(boxes).masks
    assert got.shape == want.shape == (3, 1, 300, 400)
    inter = (got & want).reshape(3, -1).sum(1)
    union = (got | want).reshape(3, -1).sum(1)
    assert (inter / np.maximum(union, 1)).min() >= 0.99


def test_bench_command_json(exported_model, tmp_path, monkeypatch, capsys):
    from mobilesam_ros.bench import everything as everything_bench
    from mobilesam_ros.cli import main

    seen = {}

    def fake_everything(args, runtime):
        seen["runtime"] = runtime.name
        return {"strategies": {}}

    monkeypatch.setattr(everything_bench, "run_everything_bench", fake_everything)
    image = tmp_path / "scene.png"
    Image.fromarray(synthetic_image(200, 260)).save(image)
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(exported_model), "--backend", "onnxruntime", "--threads", "2",
                 "--image", str(image), "--boxes", "1,2", "--repeats", "1", "--warmup", "0",
                 "--json", str(out), "--everything"]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "onnxruntime"
    assert {"median", "p90"} <= set(result["encoder_ms"])
    assert set(result["decode_ms"]) == {"1", "2"} and {"median", "p90"} <= set(result["decode_ms"]["2"])
    assert result["everything"] == {"strategies": {}} and seen["runtime"] == "onnxruntime"
    assert "encoder" in capsys.readouterr().out
    assert main(["bench", "--model", str(exported_model), "--boxes", "0"]) == 2


def test_whole_command_comparison_runs_each_side_as_a_process(synthetic_checkpoint, exported_model, tmp_path):
    """bench.whole: our segment command and the reference's script as separate
    processes (plus `everything` with --also), timed, the JSON saying what ran."""
    pytest.importorskip("torch")
    from mobilesam_ros.bench import whole

    image = tmp_path / "scene.png"
    Image.fromarray(synthetic_image(180, 240, seed=2)).save(image)
    out = tmp_path / "whole.json"
    assert whole.main(["--model", str(exported_model), "--checkpoint", str(synthetic_checkpoint), "--image", str(image),
                       "--boxes", "2", "--rounds", "1", "--threads", "1", "--also", "everything",
                       "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["boxes"] == 2 and result["image"]["height"] == 180
    assert result["ours_s"][0] > 0 and result["reference_s"][0] > 0 and result["speedup_median"] > 0
    assert result["npz_bytes"] > 2 * 180 * 240  # the masks were written
    assert "reference: 2 masks 180x240" in result["runs"]["reference"][0]["stderr_tail"][-1]
    assert result["also"]["everything"]["median_s"] > 0
    with pytest.raises(SystemExit):
        whole.main(["--model", "m", "--checkpoint", "c", "--image", "i", "--also", "nonsense"])
