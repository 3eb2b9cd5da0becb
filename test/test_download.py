"""The real-weights path: download with checksum, tested on local files (file:// URLs)."""

from __future__ import annotations

import hashlib

import pytest

from mobilesam_ros import weights
from mobilesam_ros.cli import main


@pytest.fixture
def fake_official(tmp_path, monkeypatch):
    """A local file standing in for mobile_sam.pt, with its size and sha256 as 'official'."""
    source = tmp_path / "source.pt"
    source.write_bytes(b"mobilesam" * 1000)
    monkeypatch.setattr(weights, "MOBILE_SAM_SIZE", source.stat().st_size)
    monkeypatch.setattr(weights, "MOBILE_SAM_SHA256", hashlib.sha256(source.read_bytes()).hexdigest())
    return source


def test_download_verifies_and_writes(fake_official, tmp_path, capsys):
    out = tmp_path / "models" / "mobile_sam.pt"
    assert main(["download", "--url", fake_official.as_uri(), "--out", str(out)]) == 0
    assert out.read_bytes() == fake_official.read_bytes()
    assert "verified" in capsys.readouterr().out
    assert main(["download", "--verify-only", "--out", str(out)]) == 0
    assert main(["download", "--url", "file:///nonexistent", "--out", str(out)]) == 0  # already there: no fetch


def test_download_rejects_a_wrong_file(fake_official, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"x" * fake_official.stat().st_size)
    out = tmp_path / "mobile_sam.pt"
    assert main(["download", "--url", bad.as_uri(), "--out", str(out)]) == 2
    assert "sha256" in capsys.readouterr().err
    assert not out.exists() and out.with_suffix(".rejected").exists()


def test_verify_only_reports_size(tmp_path, capsys):
    small = tmp_path / "mobile_sam.pt"
    small.write_bytes(b"abc")
    assert main(["download", "--verify-only", "--out", str(small)]) == 2
    assert "has 3 bytes, the official mobile_sam.pt has 40,728,226" in capsys.readouterr().err


def test_unreachable_url_is_one_line(tmp_path, capsys):
    assert main(["download", "--url", (tmp_path / "absent.pt").as_uri(), "--out", str(tmp_path / "m.pt")]) == 2
    assert "download from" in capsys.readouterr().err
