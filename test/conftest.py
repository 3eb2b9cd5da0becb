"""Shared test fixtures: the parity fixture directory and a synthetic checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import vision_msgs_build

# in CI a skip fails the run, except the few listed in ci_skips.py
pytest_plugins = ["ci_skips"]

# before any test imports rclpy: the vision_msgs built by scripts/build_vision_msgs.sh
# (when built) becomes importable here and in the node processes the tests start
vision_msgs_build.activate()

REPO = Path(__file__).resolve().parents[1]
PARITY_DIR = Path(os.environ.get("MOBILESAM_PARITY_DIR", REPO.parent / "shared" / "fixtures" / "parity"))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The reference-parity fixture (a skip, so a failure in CI: ci_skips.py)."""
    if not (PARITY_DIR / "expected.npz").exists():
        pytest.skip(f"parity fixture not found at {PARITY_DIR}; set MOBILESAM_PARITY_DIR")
    return PARITY_DIR


def _sibling_fixture(name: str) -> Path:
    """A reference fixture beside ``parity/`` (parity-tinysam, parity-mobilesamv2): in CI
    a missing one fails (ci_skips.py); elsewhere it skips."""
    path = PARITY_DIR.parent / name
    if not (path / "expected.npz").exists() or not (PARITY_DIR / "checkpoint.pt").exists():
        pytest.skip(f"fixture not found at {path}")
    return path


@pytest.fixture(scope="session")
def tinysam_dir() -> Path:
    return _sibling_fixture("parity-tinysam")


@pytest.fixture(scope="session")
def mobilesamv2_dir() -> Path:
    return _sibling_fixture("parity-mobilesamv2")


@pytest.fixture(scope="session")
def synthetic_checkpoint(tmp_path_factory) -> Path:
    """A seeded random-weight checkpoint in the official layout (needs torch)."""
    pytest.importorskip("torch")
    from mobilesam_ros.modeling import write_synthetic_checkpoint

    return write_synthetic_checkpoint(tmp_path_factory.mktemp("ckpt") / "synthetic_mobile_sam.pt", seed=0)


@pytest.fixture(scope="session")
def toy_checkpoint(tmp_path_factory) -> Path:
    """The toy-world checkpoint: MOBILESAM_TOY_CHECKPOINT, or built from the shipped tensors."""
    given = os.environ.get("MOBILESAM_TOY_CHECKPOINT")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"MOBILESAM_TOY_CHECKPOINT={given} does not exist")
        return Path(given)
    pytest.importorskip("torch")
    from mobilesam_ros.toy.model import SHIPPED, write_toy_checkpoint

    if not SHIPPED.is_file():
        pytest.fail(f"the toy-world model's trained tensors are not in the package: {SHIPPED}")
    return write_toy_checkpoint(tmp_path_factory.mktemp("toy") / "toy_world.pt")


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


@pytest.fixture(scope="session")
def parity_onnx(parity_dir, tmp_path_factory) -> Path:
    """The parity fixture's checkpoint exported once per session (validation is covered
    by test_export); other exports of the same encoder copy its encoder.onnx."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from mobilesam_ros.export import export_model

    out = tmp_path_factory.mktemp("parity_onnx") / "mobilesam"
    export_model(parity_dir / "checkpoint.pt", out, validate=False, log=lambda _m: None)
    return out


def export_decoder_beside(encoder_dir: Path, out: Path, checkpoint: Path, **options) -> Path:
    """Export only the decoder of ``checkpoint`` into ``out``, next to a copy of
    ``encoder_dir``'s encoder.onnx (same image encoder): seconds instead of a minute."""
    import shutil

    from mobilesam_ros.export import export_model

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(encoder_dir / "encoder.onnx", out / "encoder.onnx")
    export_model(checkpoint, out, encoder=False, log=lambda _m: None, **options)
    return out
