"""Object discovery: YOLOv8-layout ONNX detectors built here with known outputs.

Each graph ignores its input (or reads only channel means) and emits a constant head
that places boxes where the test chooses, so the decoding, letterbox undo, NMS and
border snap are checked exactly on square and non-square images.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper

from mobilesam_ros.everything.discovery import ObjectDiscovery, decode_yolo, letterbox


def head_from_boxes(boxes_xyxy, class_scores, num_mask_coeffs=0, coeff_value=5.0, anchors=84) -> np.ndarray:
    """Boxes xyxy (input pixels) and per-box class scores (K, nc) -> head (4 + nc + nm, N):
    the boxes first, then empty anchors up to ``anchors`` (84 = a YOLOv8 head at 64x64)."""
    b = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    s = np.asarray(class_scores, np.float32).reshape(len(b), -1)
    if len(b) < anchors:
        b = np.concatenate([b, np.tile([[0, 0, 1, 1]], (anchors - len(b), 1))]).astype(np.float32)
        s = np.concatenate([s, np.zeros((anchors - len(s), s.shape[1]), np.float32)])
    xywh = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])
    parts = [xywh, s.T]
    if num_mask_coeffs:
        parts.append(np.full((num_mask_coeffs, len(b)), coeff_value, np.float32))
    return np.concatenate(parts).astype(np.float32)


def make_detector(path, head, input_hw=(64, 64), protos=False, names=None, transposed=False, dynamic=False,
                  metadata=None):
    """A constant-head detector: output0 = head (+ 0 * mean(images)), optional prototypes."""
    h, w = input_hw
    head = head.T if transposed else head
    shape = ["batch", 3, "height", "width"] if dynamic else [1, 3, h, w]
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)
    const = numpy_helper.from_array(head[None].astype(np.float32), "head_const")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["head_const", "nothing"], ["output0"]),
    ]
    inits = [const, zero]
    outputs = [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(head[None].shape))]
    if protos:
        inits.append(numpy_helper.from_array(np.zeros((1, 32, 16, 16), np.float32), "proto_const"))
        nodes.append(helper.make_node("Add", ["proto_const", "nothing"], ["output1"]))
        outputs.append(helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, 32, 16, 16]))
    graph = helper.make_graph(nodes, "detector", [images], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    props = dict(metadata or {})
    if names is not None:
        props["names"] = repr(names)
    if props:
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_probe_detector(path, size=64):
    """One box whose cx, cy, w come from the mean of the R, G, B input channels:
    cx = 20 + 20 mean(R), cy = 20 + 20 mean(G), w = 10 + 20 mean(B), h = 10, score 0.9."""
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    inits = [
        numpy_helper.from_array(np.array([20, 20, 20], np.float32).reshape(1, 3, 1), "scale"),
        numpy_helper.from_array(np.array([20, 20, 10], np.float32).reshape(1, 3, 1), "offset"),
        numpy_helper.from_array(np.array([10, 0.9], np.float32).reshape(1, 2, 1), "tail"),
        numpy_helper.from_array(np.array([1, 3, 1], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["means"], axes=[2, 3], keepdims=0),
        helper.make_node("Reshape", ["means", "shape"], ["means3"]),
        helper.make_node("Mul", ["means3", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["xyw"]),
        helper.make_node("Concat", ["xyw", "tail"], ["probe"], axis=1),
        helper.make_node("Concat", ["probe", "empty"], ["output0"], axis=2),  # + 83 empty anchors
    ]
    inits.append(numpy_helper.from_array(np.zeros((1, 5, 83), np.float32), "empty"))
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, 84])
    model = helper.make_model(helper.make_graph(nodes, "probe", [images], [out], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def image(h, w, colour=(90, 120, 150)):
    return np.full((h, w, 3), colour, np.uint8)


def test_letterbox_matches_ultralytics_rules():
    img = np.arange(300 * 600 * 3, dtype=np.uint8).reshape(300, 600, 3)
    tensor, lb = letterbox(img, 256)
    assert tensor.shape == (1, 3, 256, 256) and tensor.dtype == np.float32
    assert lb.gain == pytest.approx(256 / 600)
    assert lb.new_size == (128, 256) and (lb.pad_x, lb.pad_y) == (0, 64)
    gray = 114 / 255
    assert np.allclose(tensor[0, :, :64], gray) and np.allclose(tensor[0, :, 192:], gray)
    # odd padding: round(d/2 - 0.1) on top, the rest at the bottom
    _, lb = letterbox(np.zeros((63, 64, 3), np.uint8), 64)
    assert (lb.pad_y, lb.new_size) == (0, (63, 64))
    _, lb = letterbox(np.zeros((61, 64, 3), np.uint8), 64)
    assert (lb.pad_y, lb.new_size) == (1, (61, 64))
    # small images are scaled up (ultralytics scaleup=True)
    _, lb = letterbox(np.zeros((16, 32, 3), np.uint8), 64)
    assert lb.gain == 2.0 and (lb.pad_x, lb.pad_y) == (0, 16)


def test_square_image_constant_head(tmp_path):
    boxes_in = [[10, 12, 30, 40], [40, 5, 60, 25], [2, 2, 8, 8]]
    scores = [[0.9], [0.6], [0.3]]  # the last is under conf 0.4
    path = make_detector(tmp_path / "det.onnx", head_from_boxes(boxes_in, scores), (64, 64))
    det = ObjectDiscovery(path, border_snap=0)
    assert det.input_size == (64, 64)
    found = det.detect(image(128, 128))  # gain 0.5, no padding
    np.testing.assert_allclose(found.boxes, np.array(boxes_in[:2], np.float32) * 2)
    np.testing.assert_allclose(found.scores, [0.9, 0.6])
    np.testing.assert_array_equal(found.class_ids, [0, 0])
    assert found.num_candidates == 2


def test_non_square_image_undo_letterbox_and_snap(tmp_path):
    # 300x600 image into 256x256: gain 256/600, resized 128x256, 64 px padding on top
    gain = 256 / 600
    boxes_in = [
        [98, 108, 158, 148],  # well inside
        [10, 70, 60, 100],  # within 20 input px of the image's left and top edges (not of the padding's)
        [200, 150, 250, 185],  # within 20 input px of the right and bottom edges
    ]
    path = make_detector(tmp_path / "det.onnx", head_from_boxes(boxes_in, [[0.9], [0.8], [0.7]]), (256, 256))
    found = ObjectDiscovery(path).detect(image(300, 600))
    want = (np.array(boxes_in, np.float64) - [0, 64, 0, 64]) / gain
    want[1, 0] = want[1, 1] = 0.0  # snapped
    want[2, 2], want[2, 3] = 600.0, 300.0
    np.testing.assert_allclose(found.boxes, want, atol=1e-3)
    # no snapping: plain undo of the letterbox, clipped to the image
    found = ObjectDiscovery(path, border_snap=0).detect(image(300, 600))
    want = np.clip((np.array(boxes_in, np.float64) - [0, 64, 0, 64]) / gain, 0, [600, 300, 600, 300])
    np.testing.assert_allclose(found.boxes, want, atol=1e-3)
    # portrait image: padding left and right
    found = ObjectDiscovery(path, border_snap=0).detect(image(600, 300))
    want = np.clip((np.array(boxes_in, np.float64) - [64, 0, 64, 0]) / gain, 0, [300, 600, 300, 600])
    np.testing.assert_allclose(found.boxes, want, atol=1e-3)


def test_confidence_nms_class_agnostic_and_max_det(tmp_path):
    boxes_in = [
        [0, 0, 20, 20],  # class 1, 0.95
        [0, 0, 20, 19],  # class 0, IoU 0.95 with the first: suppressed although another class
        [30, 30, 50, 50],  # 0.8
        [31, 31, 51, 51],  # IoU 361/439 = 0.82 < 0.9: kept
        [0, 40, 10, 50],  # exactly 0.4: not above conf
        [40, 0, 50, 10],  # 0.41
    ]
    scores = [[0.1, 0.95], [0.9, 0.2], [0.8, 0.0], [0.0, 0.7], [0.4, 0.4], [0.41, 0.0]]
    path = make_detector(tmp_path / "det.onnx", head_from_boxes(boxes_in, scores), (64, 64))
    found = ObjectDiscovery(path, border_snap=0).detect(image(64, 64))
    np.testing.assert_allclose(found.scores, [0.95, 0.8, 0.7, 0.41])
    np.testing.assert_array_equal(found.class_ids, [1, 0, 1, 0])
    np.testing.assert_allclose(found.boxes, np.array(boxes_in)[[0, 2, 3, 5]])
    assert found.num_candidates == 5
    found = ObjectDiscovery(path, border_snap=0, max_det=2).detect(image(64, 64))
    np.testing.assert_allclose(found.scores, [0.95, 0.8])
    found = ObjectDiscovery(path, border_snap=0, iou=0.8, conf=0.5).detect(image(64, 64))
    np.testing.assert_allclose(found.scores, [0.95, 0.8])


def test_segmentation_head_with_prototypes_and_mask_coefficients(tmp_path):
    # MobileSAMv2's object-aware model is a -seg model: [1, 4 + nc + 32, N] plus prototypes
    boxes_in = [[4, 4, 20, 20], [30, 30, 60, 60]]
    head = head_from_boxes(boxes_in, [[0.5, 0.1], [0.2, 0.45]], num_mask_coeffs=32, coeff_value=7.0)
    path = make_detector(tmp_path / "seg.onnx", head, (64, 64), protos=True)
    det = ObjectDiscovery(path, border_snap=0)
    assert det.num_classes(head.shape[0]) == 2  # 38 rows - 4 - 32: coefficients are not scores
    found = det.detect(image(64, 64))
    np.testing.assert_allclose(found.scores, [0.5, 0.45])
    np.testing.assert_array_equal(found.class_ids, [0, 1])


def test_metadata_names_transposed_and_dynamic_input(tmp_path):
    boxes_in = [[4, 4, 20, 20], [30, 30, 60, 60]]
    # stored [1, N, 4 + nc + nm]: recognised by N > rows; 32 coefficients but no prototypes output
    head = head_from_boxes(boxes_in, [[0.9], [0.6]], num_mask_coeffs=32)
    path = make_detector(tmp_path / "t.onnx", head, (64, 64), names={0: "object"}, transposed=True, dynamic=True)
    det = ObjectDiscovery(path, imgsz=64, border_snap=0)
    assert det.input_size == (64, 64) and det.names == {0: "object"}
    found = det.detect(image(32, 32))  # gain 2
    np.testing.assert_allclose(found.boxes, np.array(boxes_in) / 2)
    # a static model refuses another imgsz
    static = make_detector(tmp_path / "s.onnx", head_from_boxes(boxes_in, [[0.9], [0.6]]), (64, 64))
    with pytest.raises(ValueError, match="imgsz"):
        ObjectDiscovery(static, imgsz=1024)
    with pytest.raises(FileNotFoundError, match="export"):
        ObjectDiscovery(tmp_path / "missing.onnx")
    # an export with NMS in the graph outputs final boxes, not the raw head: refused
    nms = make_detector(tmp_path / "nms.onnx", head_from_boxes(boxes_in, [[0.9], [0.6]]), (64, 64),
                        metadata={"args": "{'batch': 1, 'nms': True}"})
    with pytest.raises(ValueError, match="nms=True"):
        ObjectDiscovery(nms)


def test_input_is_rgb_zero_to_one_with_gray_padding(tmp_path):
    det = ObjectDiscovery(make_probe_detector(tmp_path / "probe.onnx"), border_snap=0)
    # square, no padding: means R, G, B = 1.0, 0.2, 0.0 -> cx 40, cy 24, w 10, h 10
    found = det.detect(image(64, 64, (255, 51, 0)))
    np.testing.assert_allclose(found.boxes, [[35, 19, 45, 29]], atol=1e-4)
    # 32x64: half the input is 114 gray padding (16 rows top and bottom)
    found = det.detect(image(32, 64, (255, 51, 0)))
    gray = 114 / 255
    r, g, b = (1 + gray) / 2, (0.2 + gray) / 2, gray / 2
    cx, cy, w = 20 + 20 * r, 20 + 20 * g, 10 + 20 * b
    want = [cx - w / 2, cy - 5 - 16, cx + w / 2, cy + 5 - 16]
    np.testing.assert_allclose(found.boxes, [want], atol=1e-4)


def test_decode_yolo_directly():
    head = head_from_boxes([[0, 0, 10, 10], [100, 100, 110, 110]], [[0.3], [0.5]], anchors=2)
    boxes, scores, classes, n = decode_yolo(head, 1, conf=0.25)
    np.testing.assert_allclose(boxes, [[100, 100, 110, 110], [0, 0, 10, 10]])
    assert n == 2 and scores.tolist() == pytest.approx([0.5, 0.3])
    boxes, *_ = decode_yolo(head, 1, conf=0.6)
    assert boxes.shape == (0, 4)
    with pytest.raises(ValueError):
        decode_yolo(head, 5)
