"""Message <-> numpy conversions, with duck-typed stand-ins for the messages (vision_msgs
is not installable everywhere) and, where installed, the real sensor_msgs."""

from __future__ import annotations

import array
from types import SimpleNamespace as NS

import numpy as np
import pytest

from mobilesam_ros.messages.detections import detections_to_boxes, result_to_detections
from mobilesam_ros.messages.images import ImageOut, header_key, image_msg_to_rgb


# --- vision_msgs stand-ins (4.x layout: bbox.center.position, results[].hypothesis) -------
class Detection2DArray:
    def __init__(self):
        self.header = None
        self.detections = []


class Detection2D:
    def __init__(self):
        self.header = None
        self.results = []
        self.id = ""
        self.bbox = NS(center=NS(position=NS(x=0.0, y=0.0), theta=0.0), size_x=0.0, size_y=0.0)


class ObjectHypothesisWithPose:
    def __init__(self):
        self.hypothesis = NS(class_id="", score=0.0)
        self.pose = None


VISION = NS(Detection2DArray=Detection2DArray, Detection2D=Detection2D, ObjectHypothesisWithPose=ObjectHypothesisWithPose)


def _det(cx, cy, w, h, hyps=(), legacy=False):
    det = Detection2D()
    det.bbox.center = NS(x=cx, y=cy, theta=0.0) if legacy else NS(position=NS(x=cx, y=cy), theta=0.0)
    det.bbox.size_x, det.bbox.size_y = w, h
    det.results = [NS(hypothesis=NS(class_id=c, score=s)) for c, s in hyps]
    return det


def test_detections_to_boxes_centre_size_to_corners():
    msg = Detection2DArray()
    msg.detections = [
        _det(50, 40, 20, 10, [("cup", 0.3), ("mug", 0.8)]),
        _det(5, 5, 4, 4),
        _det(100, 100, 10, 30, [("x", 0.5)], legacy=True),  # vision_msgs 3.x layout
    ]
    boxes, ids, scores = detections_to_boxes(msg)
    np.testing.assert_allclose(boxes, [[40, 35, 60, 45], [3, 3, 7, 7], [95, 85, 105, 115]])
    assert ids == ["mug", "", "x"]
    assert scores == [0.8, None, 0.5]


def test_empty_detection_array():
    boxes, ids, scores = detections_to_boxes(Detection2DArray())
    assert boxes.shape == (0, 4) and ids == [] and scores == []


def test_result_to_detections_ids_are_label_values():
    result = NS(
        masks=np.zeros((2, 10, 10), bool),
        boxes=np.array([[1, 2, 5, 8], [0, 0, 10, 10]], np.float32),
        scores=np.array([0.9, 0.4], np.float32),
        class_ids=["cup", ""],
    )
    header = NS(frame_id="cam")
    msg = result_to_detections(result, header, VISION)
    assert msg.header is header and len(msg.detections) == 2
    d0 = msg.detections[0]
    assert d0.id == "1" and d0.header is header
    assert (d0.bbox.center.position.x, d0.bbox.center.position.y) == (3.0, 5.0)
    assert (d0.bbox.size_x, d0.bbox.size_y) == (4.0, 6.0)
    assert d0.results[0].hypothesis.class_id == "cup"
    assert d0.results[0].hypothesis.score == pytest.approx(0.9)
    assert msg.detections[1].id == "2"


def test_boxes_round_trip_through_detections():
    result = NS(masks=np.zeros((1, 4, 4), bool), boxes=np.array([[10, 20, 30, 60]], np.float32),
                scores=np.array([0.7]), class_ids=["a"])
    boxes, ids, _ = detections_to_boxes(result_to_detections(result, None, VISION))
    np.testing.assert_allclose(boxes, result.boxes)
    assert ids == ["a"]


def test_header_key():
    assert header_key(NS(stamp=NS(sec=0, nanosec=0))) is None
    assert header_key(NS(stamp=NS(sec=3, nanosec=4))) == (3, 4)


def test_image_msg_to_rgb_is_zero_copy_for_rgb8():
    h, w = 4, 6
    step = w * 3 + 2
    data = array.array("B", np.arange(step * h, dtype=np.uint8).tobytes())
    msg = NS(data=data, encoding="rgb8", height=h, width=w, step=step, is_bigendian=0)
    out = image_msg_to_rgb(msg)
    assert out.shape == (h, w, 3) and np.shares_memory(out, np.frombuffer(data, np.uint8))
    assert out[1, 0, 0] == step  # row 1 starts after the padding


class _FakeImage:
    def __init__(self):
        self.header = None
        self.data = None


def test_image_out_reuses_its_buffer():
    out = ImageOut(_FakeImage)
    msg, view = out.fill("labels", "h1", (3, 4), np.uint16, "mono16")
    view[...] = 7
    buffer = msg.data
    assert (msg.height, msg.width, msg.step, msg.encoding) == (3, 4, 8, "mono16")
    assert np.frombuffer(msg.data, np.uint16).tolist() == [7] * 12
    msg2, view2 = out.fill("labels", "h2", (3, 4), np.uint16, "mono16")
    assert msg2 is msg and msg2.data is buffer and msg2.header == "h2"
    msg3, _ = out.fill("labels", "h3", (5, 4), np.uint16, "mono16")  # a new size: a new buffer
    assert msg3.data is not buffer and len(msg3.data) == 40
    rgb, view = out.fill("overlay", "h", (2, 2, 3), np.uint8, "rgb8")
    assert rgb.step == 6 and view.shape == (2, 2, 3)


def test_image_out_with_real_sensor_msgs():
    image_mod = pytest.importorskip("sensor_msgs.msg")
    out = ImageOut(image_mod.Image)
    msg, view = out.fill("mask", image_mod.Image().header, (2, 3), np.uint8, "mono8")
    view[...] = 255
    assert isinstance(msg.data, array.array) and list(msg.data) == [255] * 6 and msg.step == 3
