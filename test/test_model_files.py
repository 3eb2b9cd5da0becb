"""Bad model files and failed writes (issue 9, defects 2 and 9): a corrupt file is called
corrupt, only a real pickled module gets the 'pickled objects' message (which says
loading it runs code), and a failed export or download leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest

from mobilesam_ros.cli import main

torch = pytest.importorskip("torch")

from mobilesam_ros.errors import CheckpointError
from mobilesam_ros.modeling import load_sam


def _error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_sam(path)
    return str(info.value)


def test_text_file_named_pt_is_corrupt_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n" * 20)
    message = _error(path)
    assert "truncated or corrupt" in message and "pickled" not in message
    # through the CLI: one line, exit 2, no traceback
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "truncated or corrupt" in err[0]


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_are_corrupt_never_a_pickled_object(tmp_path, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / f"random{seed}.pt"
    path.write_bytes(rng.bytes(int(rng.integers(16, 50_000))))
    message = _error(path)
    assert "truncated or corrupt" in message
    assert "pickled" not in message and "weights_only=False" not in message


def test_truncated_checkpoint_is_corrupt(tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save({"w": torch.zeros(1000)}, whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[:1500])
    assert "truncated or corrupt" in _error(cut)


@pytest.mark.parametrize("legacy", [False, True])
def test_pickled_module_says_it_runs_code_and_what_to_run_instead(tmp_path, legacy):
    path = tmp_path / "q_tinysam.pt"
    torch.save(torch.nn.Linear(2, 2), path, _use_new_zipfile_serialization=not legacy)
    message = _error(path)
    assert "pickled Python objects (" in message and "torch.nn.modules.linear.Linear" in message
    assert "arbitrary code" in message and "refused" in message
    assert "fp32 TinySAM checkpoint" in message and "int8" in message  # Q-TinySAM: what to run instead


def test_failed_export_leaves_no_folder(tmp_path, synthetic_checkpoint, monkeypatch, capsys):
    # the checkpoint is refused before anything is written
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    assert main(["export", "--checkpoint", str(bad), "--out", str(tmp_path / "new" / "out")]) == 2
    assert not (tmp_path / "new").exists()
    capsys.readouterr()
    # a failure while writing removes what was written and the folders the export created
    import mobilesam_ros.export as export

    def failing_decoder(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "export_decoder", failing_decoder)
    monkeypatch.setattr(export, "export_encoder", lambda sam, path, opset: path.write_bytes(b"onnx"))
    assert main(["export", "--checkpoint", str(synthetic_checkpoint), "--out", str(tmp_path / "a" / "b")]) == 2
    assert "disk full" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    # in an existing folder only what the export wrote goes; other files stay
    keep = tmp_path / "existing"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    assert main(["export", "--checkpoint", str(synthetic_checkpoint), "--out", str(keep)]) == 2
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]


def test_failed_download_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "dl" / "sub" / "x.pt"
    assert main(["download", "--url", (tmp_path / "absent.pt").as_uri(), "--out", str(out)]) == 2
    assert "download from" in capsys.readouterr().err
    assert not (tmp_path / "dl").exists()
    assert main(["download", "--url", "not a url", "--out", str(out)]) == 2
    assert not (tmp_path / "dl").exists()
