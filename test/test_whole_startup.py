"""Start-up of a one-shot command: the two ONNX Runtime sessions are built at the same
time (``onnx_backend._load_sessions``); a broken graph is still one clear error."""

from __future__ import annotations

import json
import threading

import pytest

from mobilesam_ros.runtime import RuntimeUnavailable
from mobilesam_ros.runtime.onnx_backend import OnnxRuntime


def _identity_graph() -> bytes:
    """A valid one-node ONNX graph: the other session loads, only ``broken`` fails."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()


def _model_dir(tmp_path, broken: str):
    """A model directory whose ``broken`` graph ('encoder' or 'decoder') is not ONNX."""
    (tmp_path / "model.json").write_text(json.dumps({
        "format": "mobilesam_ros.onnx", "num_mask_outputs": 4,
        "encoder": {"file": "encoder.onnx"}, "decoder": {"file": "decoder.onnx"},
    }))
    for part in ("encoder", "decoder"):
        (tmp_path / f"{part}.onnx").write_bytes(b"not a graph" if part == broken else _identity_graph())
    return tmp_path


@pytest.mark.parametrize("broken", ["encoder", "decoder"])
def test_a_broken_graph_is_one_runtime_error_and_no_thread_stays(tmp_path, broken):
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(RuntimeUnavailable, match="ONNX Runtime could not load"):
        OnnxRuntime(_model_dir(tmp_path, broken))
    assert not [t.name for t in threading.enumerate() if t.name.startswith("ort-session") and t.name not in before]
