"""Shared test fixtures: the parity fixture directory and a synthetic checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("MOBILESAM_PARITY_DIR", REPO.parent / "shared" / "fixtures" / "parity"))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The reference-parity fixture. In CI a missing fixture fails; elsewhere it skips."""
    if not (PARITY_DIR / "expected.npz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"parity fixture missing at {PARITY_DIR} (CI must have ../shared beside the repo)")
        pytest.skip(f"parity fixture not found at {PARITY_DIR}; set MOBILESAM_PARITY_DIR")
    return PARITY_DIR


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory) -> Path:
    """A seeded random-weight checkpoint in the official layout (needs torch)."""
    pytest.importorskip("torch")
    from mobilesam_ros.modeling import write_synthetic_checkpoint

    return write_synthetic_checkpoint(tmp_path_factory.mktemp("ckpt") / "synthetic_mobile_sam.pt", seed=0)


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory, synthetic_checkpoint) -> Path:
    """The synthetic checkpoint exported once per session (encoder.onnx, decoder.onnx,
    model.json; validated against PyTorch by the export itself). Needs torch and onnx."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from mobilesam_ros.export import export_model

    out = tmp_path_factory.mktemp("exported") / "mobilesam_synthetic"
    export_model(synthetic_checkpoint, out, log=lambda _msg: None)
    return out
