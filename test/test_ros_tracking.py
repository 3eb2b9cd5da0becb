"""Track ids over real DDS with the real vision_msgs types: a detector-like stream of
jittered, shuffled boxes for 3 moving objects keeps 3 distinct, constant ids in
~/detections (and ~/labels) over 30 frames; ~/prompt/remove ends one of them.

The node runs a synthetic-weight model: its masks mean nothing (they cover the whole
frame), so only the boxes can identify the objects. Each object has its own class id, which
~/detections carries: that is how the test knows which object a detection is (the
tracker's association by boxes alone is tested exactly in test_tracking.py). Frames
are encoded every 5th box list (the model is slow on a CPU); every box list is stamped
with the latest frame, so the node decodes it on that cached frame at once, and the
test waits for its answer before the next one.
"""

from __future__ import annotations

import numpy as np
import pytest

import vision_msgs_build

rclpy = pytest.importorskip("rclpy")

vision_msgs_build.require_module()

from sensor_msgs.msg import Image
from std_msgs.msg import UInt16
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from ros_harness import Client, NodeProcess, domain_for, image_msg, ros_environment

DOMAIN = domain_for(__name__)
NS = "/mobilesam"
H, W = 240, 320
FRAMES = 30
RNG = np.random.default_rng(5)
BACKGROUND = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
STARTS = np.array([[30, 40, 100, 110], [140, 120, 210, 200], [230, 20, 300, 90]], np.float64)
VELOCITY = np.array([[3, 1], [1, -2], [-2, 3]], np.float64)  # px per frame


def truth_boxes(i: int) -> np.ndarray:
    return STARTS + np.tile(VELOCITY * i, 2)


def _detection(box, class_id="thing"):
    det = Detection2D()
    det.bbox.center.position.x, det.bbox.center.position.y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    det.bbox.size_x, det.bbox.size_y = box[2] - box[0], box[3] - box[1]
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id, hyp.hypothesis.score = class_id, 0.8
    det.results = [hyp]
    return det


@pytest.fixture(scope="module")
def client():
    c = Client(DOMAIN, name="tracking_test_client")
    yield c
    c.close()


@pytest.fixture(scope="module")
def node(exported_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("tracking_node") / "node.log"
    proc = NodeProcess(
        ["-p", f"model:={exported_model}", "-p", "backend:=onnxruntime", "-p", "overlay.enabled:=false",
         "-p", "tracking.max_lost_frames:=3", "-r", "image:=/trk/image"],
        ros_environment(DOMAIN), log,
    )
    assert proc.wait_for_log("ready:", 90), proc.log()
    yield proc
    assert proc.stop() == 0, proc.log()


CLASSES = ["cup", "bottle", "book"]


def _object_of(det) -> int:
    return CLASSES.index(det.results[0].hypothesis.class_id)


def test_detector_boxes_keep_three_constant_ids_and_remove_ends_one(node, client):
    detections = client.subscribe(Detection2DArray, f"{NS}/detections")
    labels = client.subscribe(Image, f"{NS}/labels")
    image = client.publisher(Image, "/trk/image", depth=1)
    boxes = client.publisher(Detection2DArray, f"{NS}/prompt/boxes")
    remove = client.publisher(UInt16, f"{NS}/prompt/remove")
    for pub in (image, boxes, remove):
        assert client.wait_matched(pub)
    assert client.wait_publishers([f"{NS}/detections", f"{NS}/labels"])

    # a detector's stream: boxes jittered by 2 px, in a new order every time
    answers = []
    frame = 0
    for i in range(1, FRAMES + 1):
        if i % 5 == 1:  # a new camera frame
            frame = i
            image.publish(image_msg(BACKGROUND, "rgb8", frame, "cam"))
            assert client.wait_until(lambda: any(m.header.stamp.sec == frame for m in labels)
                                     and any(m.header.stamp.sec == frame for m in detections), 120), node.log()[-3000:]
        msg = Detection2DArray()
        msg.header.stamp.sec, msg.header.frame_id = frame, "cam"
        jittered = truth_boxes(i) + RNG.normal(0, 2.0, (3, 4))
        msg.detections = [_detection(jittered[k], CLASSES[k]) for k in RNG.permutation(3)]
        count = len(detections)
        boxes.publish(msg)
        assert client.wait_until(lambda: len(detections) > count, 60), node.log()[-3000:]
        answers.append(detections[-1])

    ids_of = {}
    for m in answers:
        assert len(m.detections) == 3, [d.id for d in m.detections]
        seen = {_object_of(det): det.id for det in m.detections}
        assert sorted(seen) == [0, 1, 2] and len(set(seen.values())) == 3, seen
        for obj, det_id in seen.items():
            ids_of.setdefault(obj, set()).add(det_id)
    assert all(len(v) == 1 for v in ids_of.values()), ids_of  # constant over the whole stream
    ids = {obj: int(next(iter(v))) for obj, v in ids_of.items()}
    assert sorted(ids.values()) == [1, 2, 3]
    # ~/labels carries the same ids: the last frame's label image holds track ids only (not
    # indices 0..2), each object's pixels inside the box its detection reports for its mask
    last = labels[-1]
    label_image = np.frombuffer(last.data, np.uint16).reshape(last.height, last.width)
    present = set(np.unique(label_image).tolist()) - {0}
    assert present and present <= set(ids.values()), (present, ids)
    final = {int(d.id): d for d in detections[-1].detections}
    for track_id in present:
        ys, xs = np.nonzero(label_image == track_id)
        box = final[track_id].bbox
        cx, cy, hw, hh = box.center.position.x, box.center.position.y, box.size_x / 2, box.size_y / 2
        assert cx - hw <= xs.min() and xs.max() + 1 <= cx + hw and cy - hh <= ys.min() and ys.max() + 1 <= cy + hh
    assert "ended" not in node.log()

    # remove object 0's track: the latest frame is published again without it
    before = len(detections)
    remove.publish(UInt16(data=ids[0]))
    assert client.wait_until(lambda: len(detections) > before, 30), node.log()[-3000:]
    assert {d.id for d in detections[-1].detections} == {str(ids[1]), str(ids[2])}
    assert f"track {ids[0]} (boxes) ended: removed" in node.log()
