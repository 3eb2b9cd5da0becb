"""The `mobilesam-ros segment` contract: outputs shaped like the fixture, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from parity import expected_masks, mask_ious

pytest.importorskip("torch")

from mobilesam_ros.cli import main


@pytest.fixture(scope="module")
def expected(parity_dir):
    return np.load(parity_dir / "expected.npz")


def test_point_multimask_and_overlay(parity_dir, expected, tmp_path):
    out, overlay = tmp_path / "out.npz", tmp_path / "overlay.png"
    rc = main([
        "segment", str(parity_dir / "images" / "picture1.jpg"), "--checkpoint", str(parity_dir / "checkpoint.pt"),
        "--point", "384.5,385.0,1", "--multimask", "--save-npz", str(out), "--overlay", str(overlay),
    ])
    assert rc == 0
    got = np.load(out)
    assert got["masks"].shape == (3, 770, 769) and got["masks"].dtype == bool
    assert got["iou_predictions"].shape == (3,)
    assert got["low_res_logits"].shape == (3, 256, 256)
    want = expected_masks(expected, "picture1.jpg/point", 769)
    assert mask_ious(got["masks"], want).min() >= 0.99
    assert np.abs(got["iou_predictions"] - expected["picture1.jpg/point/iou_predictions"]).max() <= 1e-3
    from PIL import Image

    assert Image.open(overlay).size == (769, 770)


def test_boxes_json_batch(parity_dir, expected, tmp_path):
    case = next(c for c in json.loads((parity_dir / "cases.json").read_text())["cases"]
                if c["image"] == "picture1.jpg" and c["id"] == "boxes_batch")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"boxes": case["boxes"]}))
    out = tmp_path / "out.npz"
    assert main(["segment", str(parity_dir / "images" / "picture1.jpg"), "--checkpoint", str(parity_dir / "checkpoint.pt"),
                 "--boxes-json", str(boxes), "--save-npz", str(out)]) == 0
    got = np.load(out)
    assert got["masks"].shape == (5, 770, 769)
    assert got["iou_predictions"].shape == (5, 1)
    assert got["low_res_logits"].shape == (5, 1, 256, 256)
    assert mask_ious(got["masks"], expected_masks(expected, "picture1.jpg/boxes_batch", 769)).min() >= 0.99
    # with an overlay the masks are made all at once, without it streamed into the
    # .npz chunk by chunk: the same bits either way
    eager = tmp_path / "eager.npz"
    assert main(["segment", str(parity_dir / "images" / "picture1.jpg"), "--checkpoint", str(parity_dir / "checkpoint.pt"),
                 "--boxes-json", str(boxes), "--save-npz", str(eager), "--overlay", str(tmp_path / "o.png")]) == 0
    with np.load(eager) as all_at_once:
        for name in ("masks", "iou_predictions", "low_res_logits"):
            assert np.array_equal(all_at_once[name], got[name]), name


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mobilesam_ros", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.jpg", "--point", "1,1,1"], "image not found: missing.jpg"),
        (["{img}", "--point", "1,one,1"], "--point must be 3 comma-separated numbers"),
        (["{img}", "--point", "5000,10,1"], "outside the 769x770 image"),
        (["{img}", "--box", "10,10,5,20"], "is empty"),
        (["{img}", "--point", "10,10,2"], "label must be 1 (foreground) or 0 (background)"),
    ],
)
def test_errors_are_one_clear_line(parity_dir, tmp_path, args, message):
    img = str(parity_dir / "images" / "picture1.jpg")
    args = [a.replace("{img}", img) for a in args]
    result = _cli("segment", *args, "--checkpoint", str(parity_dir / "checkpoint.pt"), "--save-npz", str(tmp_path / "o.npz"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_missing_model_says_how_to_get_it(parity_dir, tmp_path):
    result = _cli("segment", str(parity_dir / "images" / "picture1.jpg"), "--checkpoint", str(tmp_path / "mobile_sam.pt"),
                  "--point", "10,10,1", "--save-npz", str(tmp_path / "o.npz"))
    assert result.returncode == 2
    assert "model not found" in result.stderr and "mobilesam-ros download" in result.stderr


def test_help_lists_commands():
    result = _cli("--help")
    assert result.returncode == 0
    from mobilesam_ros.cli import COMMANDS
    from mobilesam_ros.commands import everything

    assert all(name in result.stdout for name in COMMANDS)
    assert everything.HELP[:30] in " ".join(result.stdout.split())  # each command's one-line help


def test_one_command_imports_only_its_own_module():
    """Running `segment` builds only segment's arguments: the other commands' modules
    (and what they import) are not loaded; every command is still a valid choice."""
    code = (
        "import sys; from mobilesam_ros.cli import build_parser; p = build_parser('segment'); "
        "print(sorted(m for m in sys.modules if m.startswith('mobilesam_ros.commands.'))); "
        "p.parse_args(['bench', '--help'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    loaded = result.stdout.splitlines()[0]
    assert "mobilesam_ros.commands.segment" in loaded
    for other in ("bench", "everything", "download", "export", "bag"):
        assert f"mobilesam_ros.commands.{other}'" not in loaded, loaded
    helped = _cli("segment", "--help")
    assert helped.returncode == 0 and "--boxes-json" in helped.stdout


def test_mask_input_refines_like_the_reference(parity_dir, expected, tmp_path):
    """The fixture's `refine` case through the CLI: --mask-input from the best `point` mask."""
    source = "picture1.jpg/point"
    mask_in = tmp_path / "prev.npy"
    np.save(mask_in, expected[f"{source}/low_res_logits"][np.argmax(expected[f"{source}/iou_predictions"])])
    out = tmp_path / "refined.npz"
    assert main(["segment", str(parity_dir / "images" / "picture1.jpg"), "--checkpoint", str(parity_dir / "checkpoint.pt"),
                 "--point", "384.5,385.0,1", "--point", "153.8,616.0,0", "--mask-input", str(mask_in),
                 "--save-npz", str(out)]) == 0
    got = np.load(out)
    assert got["masks"].shape == (1, 770, 769)
    assert np.abs(got["low_res_logits"] - expected["picture1.jpg/refine/low_res_logits"]).max() <= 1e-3
    assert mask_ious(got["masks"], expected_masks(expected, "picture1.jpg/refine", 769)).min() >= 0.99
