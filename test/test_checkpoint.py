"""Strict checkpoint loading: real files, real errors."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from mobilesam_ros.modeling import CheckpointError, load_sam, synthetic_state_dict
from mobilesam_ros.modeling.checkpoint import check_state_dict
from mobilesam_ros.modeling.sam import Sam


def test_official_layout_key_count_and_sizes():
    state = Sam().state_dict()
    assert len(state) == 439
    encoder = sum(v.numel() for k, v in state.items() if k.startswith("image_encoder.") and v.dtype.is_floating_point
                  and "running" not in k)
    decoder = sum(v.numel() for k, v in state.items() if k.startswith("mask_decoder."))
    prompt = sum(v.numel() for k, v in state.items() if k.startswith("prompt_encoder.") and "gaussian" not in k)
    assert abs(encoder - 6.07e6) < 0.01e6  # facts: 6.07 M in the checkpoint
    assert abs(decoder - 4.058e6) < 0.001e6
    assert prompt == 6220


def test_fixture_checkpoint_loads_strictly(parity_dir):
    sam = load_sam(parity_dir / "checkpoint.pt")
    assert not sam.training


def test_synthetic_checkpoint_is_seeded_and_loads(tmp_path, synthetic_checkpoint):
    a, b = synthetic_state_dict(3), synthetic_state_dict(3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mask_decoder.iou_token.weight"], synthetic_state_dict(4)["mask_decoder.iou_token.weight"])
    sam = load_sam(synthetic_checkpoint)
    _assert_holds(sam, synthetic_state_dict(0))  # conftest writes seed 0


def _assert_holds(sam, state: dict) -> None:
    """Every tensor of ``state`` is in ``sam``, unchanged."""
    loaded = sam.state_dict()
    assert set(state) <= set(loaded)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_wrapped_state_dict_is_accepted(tmp_path, wrapper):
    path = tmp_path / "wrapped.pt"
    state = synthetic_state_dict(1)
    torch.save({wrapper: state, "epoch": 3}, path)
    _assert_holds(load_sam(path), state)


def test_truncated_file_is_refused(tmp_path, synthetic_checkpoint):
    data = synthetic_checkpoint.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_sam(path)


def test_renamed_key_names_missing_and_unexpected(tmp_path):
    state = synthetic_state_dict(1)
    state["mask_decoder.iou_token.weight_renamed"] = state.pop("mask_decoder.iou_token.weight")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_sam(path)
    message = str(info.value)
    assert "1 missing keys: mask_decoder.iou_token.weight" in message
    assert "1 unexpected keys: mask_decoder.iou_token.weight_renamed" in message


def test_shape_mismatch_is_named(tmp_path):
    state = synthetic_state_dict(1)
    state["mask_decoder.mask_tokens.weight"] = torch.zeros(3, 256)
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"mask_decoder.mask_tokens.weight: file \(3, 256\) vs model \(4, 256\)"):
        load_sam(path)


def test_many_missing_keys_are_summarised():
    expected = Sam().state_dict()
    with pytest.raises(CheckpointError, match=r"439 missing keys: .* \(\+434 more\)"):
        check_state_dict({}, expected)


def test_pickled_module_is_refused_with_reason(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module, as Q-TinySAM ships
    with pytest.raises(CheckpointError, match="could|arbitrary code") as info:
        load_sam(path)
    assert "state_dict()" in str(info.value)  # says how to convert


def test_not_a_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_sam(tmp_path / "absent.pt")
