"""Defects a new user hit (issue 9), one test (or a few) each; every one failed before
its fix. Numbers are the issue's. 2, 9: test_checkpoint / test_export; 13: the demo
tests; 15 (SIGTERM): test_ros_shutdown.py."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mobilesam_ros.cli import build_parser, join_negative_values, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "in.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    return path


def _cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


# 1. output paths are checked before the model loads: one line, exit 2 ------------------------
@pytest.mark.parametrize("command, option, target", [
    ("segment", "--overlay", "o.jpgx"),
    ("segment", "--overlay", "/proc/o.png"),
    ("segment", "--save-npz", "/proc/o.npz"),
    ("everything", "--coco-json", "/proc/x.json"),
    ("everything", "--overlay", "o.jpgx"),
])
def test_1_unwritable_outputs_fail_before_the_model(capsys, image, tmp_path, command, option, target):
    target = target if target.startswith("/") else str(tmp_path / target)
    prompt = ["--point", "10,10,1"] if command == "segment" else ["--strategy", "grid"]
    # a model that does not exist: the output check must come first
    code, err = _cli(capsys, command, image, "--model", tmp_path / "missing.pt", *prompt, option, target)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and target in lines[0], err
    assert "Traceback" not in err


def test_1_missing_directories_are_created_only_when_writing(tmp_path):
    from mobilesam_ros.commands._outputs import check_output, write_image

    target = tmp_path / "new" / "dir" / "o.png"
    assert check_output(target, "--overlay", image=True) == target
    assert not (tmp_path / "new").exists()  # a run that fails later leaves no folders behind
    write_image(target, np.zeros((4, 4, 3), np.uint8))
    assert target.is_file()


# 3. one image reader: a 16-bit grey PNG reads as the node reads it ---------------------------
def test_3_16bit_grey_png_is_scaled_like_the_node_does(tmp_path):
    from mobilesam_ros.commands._common import load_image
    from mobilesam_ros.live.frames import decode_compressed

    grey = np.linspace(1000, 3000, 48 * 64).reshape(48, 64).astype(np.uint16)  # a depth/thermal image
    ok, png = cv2.imencode(".png", grey)
    path = tmp_path / "grey16.png"
    path.write_bytes(png.tobytes())
    cli_rgb = load_image(path)
    node_rgb = decode_compressed(png.tobytes(), "png")
    np.testing.assert_array_equal(cli_rgb, node_rgb)
    assert cli_rgb.min() == 0 and cli_rgb.max() == 255 and (cli_rgb == 255).mean() < 0.01  # not all white


# 4. every array input must be finite ---------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_4_nan_or_inf_mask_input_is_refused(capsys, image, tmp_path, bad):
    logits = np.zeros((256, 256), np.float32)
    logits[3, 4] = bad
    np.save(tmp_path / "m.npy", logits)
    code, err = _cli(capsys, "segment", image, "--model", tmp_path / "missing.pt", "--point", "10,10,1",
                     "--mask-input", tmp_path / "m.npy", "--overlay", tmp_path / "o.png")
    assert code == 2 and "NaN/inf" in err and "missing.pt" not in err, err


def test_4_nan_box_in_boxes_json_is_refused(capsys, image, tmp_path):
    (tmp_path / "b.json").write_text("[[1, 2, NaN, 40]]")
    code, err = _cli(capsys, "segment", image, "--model", tmp_path / "missing.pt",
                     "--boxes-json", tmp_path / "b.json", "--overlay", tmp_path / "o.png")
    assert code == 2 and "finite" in err, err


# 5. --save-npz reports the file really written -----------------------------------------------
def test_5_save_npz_without_suffix_reports_the_real_path(capsys, image, tmp_path, exported_model):
    out = tmp_path / "out_noext"
    code, err = _cli(capsys, "segment", image, "--model", exported_model, "--backend", "onnxruntime",
                     "--point", "10,10,1", "--save-npz", out)
    assert code == 0, err
    written = re.search(r"wrote (\S+)", err).group(1)
    assert Path(written).is_file(), (written, sorted(p.name for p in tmp_path.iterdir()))
    assert "masks" in np.load(written)


# 6. numeric options are validated ------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["segment", "x.png", "--model", "m", "--threads", "-3", "--point", "1,1,1"],
    ["everything", "x.png", "--model", "m", "--points-per-side", "0"],
    ["everything", "x.png", "--model", "m", "--conf", "1.5"],
    ["everything", "x.png", "--model", "m", "--nms-thresh", "nan"],
])
def test_6_bad_numbers_are_usage_errors(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "must be" in capsys.readouterr().err


# 7. an empty --boxes-json is not blamed on a detector ----------------------------------------
def test_7_empty_boxes_json_says_so(capsys, image, tmp_path, exported_model):
    (tmp_path / "empty.json").write_text("[]")
    code, err = _cli(capsys, "everything", image, "--model", exported_model, "--backend", "onnxruntime",
                     "--boxes-json", tmp_path / "empty.json", "--save-npz", tmp_path / "e.npz")
    assert code == 0, err
    assert "empty.json holds no boxes" in err and "detector" not in err, err


# 8. negative numbers as users type them ------------------------------------------------------
def test_8_negative_box_and_point_values_parse():
    argv = ["segment", "x.png", "--model", "m", "--box", "-50,-50,100,100", "--point", "-1.5,2,1"]
    args = build_parser().parse_args(join_negative_values(argv))
    assert args.box == "-50,-50,100,100" and args.point == ["-1.5,2,1"]
    assert join_negative_values(["--threads", "-3"]) == ["--threads", "-3"]  # argparse handles plain numbers


# 10. the demo summary's rate covers the run, not the (empty) last 5 s ------------------------
def test_10_run_rate_survives_the_idle_end_of_a_run():
    from mobilesam_ros.live.stats import NodeStats

    now = [0.0]
    stats = NodeStats(clock=lambda: now[0])
    for _ in range(9):  # 9 frames at 2 Hz
        stats.frame_processed()
        now[0] += 0.5
    now[0] += 20.0  # read after the stream ended
    snap = stats.snapshot()
    assert snap["output_rate_hz"] == 0.0  # live: nothing in the last 5 s
    assert snap["output_rate_hz_run"] == pytest.approx(2.0)
    # the demo's summary reports the whole run's rate, not the live one read after the end
    from mobilesam_ros.commands.demo import DemoRecord

    record = DemoRecord(None, "prompt", REPO)
    record.on_diagnostics({"output_rate_hz": "0.0", "output_rate_hz_run": "2.0"})
    assert record.summary()["node"]["output_rate_hz"] == "2.0"


# 11. the README's install lines work from a clone --------------------------------------------
def test_11_readme_has_no_pip_install_of_an_unpublished_package():
    readme = (REPO / "README.md").read_text()
    assert not re.search(r"pip install\s+['\"]?mobilesam[_-]ros", readme), "not on the package index"
    assert "pip install -e '.[export]'" in readme


# 12. long everything runs report progress ----------------------------------------------------
def test_12_everything_reports_progress(exported_model):
    from mobilesam_ros.everything import EverythingConfig, EverythingSegmenter
    from mobilesam_ros.predictor import SamPredictor
    from mobilesam_ros.runtime import create_runtime

    calls = []
    predictor = SamPredictor(create_runtime(str(exported_model), "onnxruntime"))
    config = EverythingConfig(strategy="grid", points_per_side=4, points_per_batch=4)
    EverythingSegmenter(predictor, config, progress=lambda *a: calls.append(a)).segment(
        np.zeros((64, 64, 3), np.uint8))
    assert calls == [("grid", 4 * k, 16) for k in range(1, 5)]
    predictor.runtime.close()


def test_12_cli_progress_lines(capsys):
    from mobilesam_ros.commands.everything import _Progress

    progress = _Progress(period=0.0)  # the CLI's printer, without its 2 s throttle
    progress("grid", 8, 16)
    progress("grid", 16, 16)
    err = capsys.readouterr().err
    assert "grid: 8/16 prompts decoded" in err and "grid: 16/16 prompts decoded" in err


# 14. score labels of masks sharing a corner do not overlap -----------------------------------
def test_14_labels_at_a_shared_corner_are_all_readable():
    from mobilesam_ros.visualize import draw_overlay, place_labels

    sizes = [(40, 12)] * 4
    for anchor in ((2, 2), (195, 95)):  # top-left corner, bottom-right corner
        origins = place_labels([anchor] * 4, sizes, (100, 200))
        boxes = [(x, y - 14, x + 40, y) for x, y in origins]
        for i, a in enumerate(boxes):
            assert 0 <= a[0] and a[2] <= 200 and 0 <= a[1] and a[3] <= 100, a
            for b in boxes[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    masks = np.zeros((3, 100, 200), bool)
    masks[0, :30, :30] = masks[1, :50, :10] = masks[2, :10, :80] = True  # all touch (0, 0)
    out = draw_overlay(np.zeros((100, 200, 3), np.uint8), masks, scores=np.array([0.9, 0.8, 0.7]))
    assert out.shape == (100, 200, 3)
