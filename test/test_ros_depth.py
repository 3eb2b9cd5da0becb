"""3D from an aligned depth camera over real DDS with the real vision_msgs types: colour,
depth and camera info in; ~/detections_3d, ~/points and ~/markers out with the colour
frame's stamp and the camera's frame_id, ids equal to the 2D ids; depth that arrives
after its colour frame is paired, a frame without depth is published without 3D and
counted.

The scene: a plane at 1.5 m (so every object's z is known whatever mask the synthetic
model draws); each object's expected 3D is computed from the node's own ~/labels for
that frame with the library function.
"""

from __future__ import annotations

import numpy as np
import pytest

import vision_msgs_build

rclpy = pytest.importorskip("rclpy")

vision_msgs_build.require_module()

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Empty
from vision_msgs.msg import Detection2D, Detection2DArray, Detection3DArray, ObjectHypothesisWithPose
from visualization_msgs.msg import Marker, MarkerArray

from mobilesam_ros.live.rgbd import objects_from_depth
from mobilesam_ros.messages.objects3d import POINT_DTYPE

from ros_harness import Client, NodeProcess, domain_for, image_msg, ros_environment

DOMAIN = domain_for(__name__)
NS = "/mobilesam"
H, W = 240, 320
K = np.array([[280.0, 0, 159.5], [0, 280.0, 119.5], [0, 0, 1]])
FRAME = np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
PLANE_MM = 1500


def _info(sec):
    msg = CameraInfo(width=W, height=H, distortion_model="plumb_bob")
    msg.k = [float(v) for v in K.ravel()]
    msg.d = [0.0] * 5
    msg.header.stamp.sec, msg.header.frame_id = sec, "cam_color_optical_frame"
    return msg


def _depth_16(sec, nanosec=0):
    msg = image_msg(np.full((H, W), PLANE_MM, np.uint16), "16UC1", sec, "cam_depth")
    msg.header.stamp.nanosec = nanosec
    return msg


def _depth_32(sec, nanosec=0):
    metres = np.full((H, W), PLANE_MM / 1000, np.float32)
    metres[:10] = np.nan  # no data in the top rows
    msg = image_msg(metres, "32FC1", sec, "cam_depth")
    msg.header.stamp.nanosec = nanosec
    return msg


@pytest.fixture(scope="module")
def client():
    c = Client(DOMAIN, name="depth_test_client")
    yield c
    c.close()


@pytest.fixture(scope="module")
def node(exported_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("depth_node") / "node.log"
    proc = NodeProcess(
        ["-p", f"model:={exported_model}", "-p", "backend:=onnxruntime", "-p", "overlay.enabled:=false",
         "-p", "diagnostics_period:=0.5", "-p", "depth_topic:=/d/depth", "-p", "camera_info_topic:=/d/camera_info",
         "-p", "depth.wait:=0.3", "-p", "depth.erode_px:=1", "-p", "depth.min_points:=5",
         # the synthetic model's masks do not follow anything: each frame decodes the sticky boxes afresh
         "-p", "tracking.enabled:=false",
         "-r", "image:=/d/image"],
        ros_environment(DOMAIN), log,
    )
    assert proc.wait_for_log("ready:", 90), proc.log()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.fixture(scope="module")
def io(node, client):
    out = {
        "labels": client.subscribe(Image, f"{NS}/labels"),
        "det2d": client.subscribe(Detection2DArray, f"{NS}/detections"),
        "det3d": client.subscribe(Detection3DArray, f"{NS}/detections_3d"),
        "points": client.subscribe(PointCloud2, f"{NS}/points"),
        "markers": client.subscribe(MarkerArray, f"{NS}/markers"),
        "diagnostics": client.subscribe(DiagnosticArray, "/diagnostics"),
        "image": client.publisher(Image, "/d/image", depth=1),
        "depth": client.publisher(Image, "/d/depth", depth=5),
        "info": client.publisher(CameraInfo, "/d/camera_info", depth=5),
        "boxes": client.publisher(Detection2DArray, f"{NS}/prompt/boxes"),
    }
    for name in ("image", "depth", "info", "boxes"):
        assert client.wait_matched(out[name]), name
    assert client.wait_publishers([f"{NS}/labels", f"{NS}/detections_3d", f"{NS}/points", f"{NS}/markers"])
    assert "no 3D" not in node.log() and "detections_3d, points, markers (3D from /d/depth" in node.log()
    return out


def _at(messages, sec, nanosec=0):
    """The messages stamped (sec, nanosec); a MarkerArray by its first marker's header."""
    def stamp(m):
        header = m.markers[0].header if isinstance(m, MarkerArray) else m.header
        return header.stamp.sec, header.stamp.nanosec

    return [m for m in messages if not (isinstance(m, MarkerArray) and not m.markers) and stamp(m) == (sec, nanosec)]


def _counter(io, key):
    for msg in reversed(io["diagnostics"]):
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if key in values:
                return values[key]
    return None


def _box(cx, cy, w, h, class_id):
    det = Detection2D()
    det.bbox.center.position.x, det.bbox.center.position.y = float(cx), float(cy)
    det.bbox.size_x, det.bbox.size_y = float(w), float(h)
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id, hyp.hypothesis.score = class_id, 0.8
    det.results = [hyp]
    return det


def _expected(labels_msg, ids):
    """The library's 3D for the masks in the node's ~/labels (values = ids)."""
    labels = np.frombuffer(labels_msg.data, np.uint16).reshape(H, W)
    masks = np.stack([labels == int(i) for i in ids])
    return objects_from_depth(masks, np.full((H, W), PLANE_MM, np.uint16), K, erode_px=1, min_points=5)


def _send(io, client, sec, depth=None, depth_first=True):
    io["info"].publish(_info(sec))
    if depth is not None and depth_first:
        io["depth"].publish(depth)
        client.spin_for(0.05)
    io["image"].publish(image_msg(FRAME, "rgb8", sec, "cam_color_optical_frame"))
    if depth is not None and not depth_first:
        client.spin_for(0.1)
        io["depth"].publish(depth)


def test_empty_frame_gives_empty_3d_and_a_markers_clear(node, io, client):
    _send(io, client, 11, _depth_16(11))
    assert client.wait_until(lambda: _at(io["det3d"], 11) and _at(io["markers"], 11), 60), node.log()
    assert _at(io["det3d"], 11)[-1].detections == []
    assert [m.action for m in _at(io["markers"], 11)[-1].markers] == [Marker.DELETEALL]


def test_box_prompts_give_3d_with_the_colour_stamp_frame_and_2d_ids(node, io, client):
    prompt = Detection2DArray()
    prompt.header.stamp.sec = 11  # the cached frame: decoded on it, outputs published again
    prompt.detections = [_box(80, 60, 100, 80, "cup"), _box(240, 170, 80, 100, "bottle")]
    io["boxes"].publish(prompt)

    def answered():
        return [m for m in _at(io["det2d"], 11) if m.detections]

    assert client.wait_until(lambda: answered() and len(_at(io["det3d"], 11)) >= 2
                             and len(_at(io["markers"], 11)) >= 2, 60), node.log()
    det2d = answered()[-1]
    det3d = _at(io["det3d"], 11)[-1]
    ids2d = [d.id for d in det2d.detections]
    assert det3d.header.frame_id == "cam_color_optical_frame"
    with_3d = [d.id for d in det3d.detections]
    assert with_3d and set(with_3d) <= set(ids2d)  # ids equal the 2D ids
    assert [i for i in ids2d if i in with_3d] == with_3d  # in the same order
    boxes2d = {d.id: d for d in det2d.detections}
    for det in det3d.detections:
        assert det.header.stamp.sec == 11 and det.header.frame_id == "cam_color_optical_frame"
        d2 = boxes2d[det.id]
        assert det.results[0].hypothesis.class_id == d2.results[0].hypothesis.class_id
        p = det.results[0].pose.pose.position
        assert p.z == pytest.approx(1.5, abs=1e-3)
        # the centroid projects into the object's 2D box; the 3D box spans at most the 2D box
        u, v = p.x * K[0, 0] / p.z + K[0, 2], p.y * K[1, 1] / p.z + K[1, 2]
        c2, half_w, half_h = d2.bbox.center.position, d2.bbox.size_x / 2, d2.bbox.size_y / 2
        assert abs(u - c2.x) <= half_w + 0.5 and abs(v - c2.y) <= half_h + 0.5
        assert det.bbox.size.x * K[0, 0] / 1.5 <= d2.bbox.size_x + 1 and det.bbox.size.z == pytest.approx(0, abs=1e-3)
    labels = np.frombuffer(_at(io["labels"], 11)[-1].data, np.uint16).reshape(H, W)
    assert set(np.unique(labels)) - {0} <= {int(i) for i in ids2d}
    markers = _at(io["markers"], 11)[-1].markers
    assert markers[0].action == Marker.DELETEALL
    assert sorted({m.id for m in markers[1:]}) == sorted(int(i) for i in with_3d)
    assert all(m.header.frame_id == "cam_color_optical_frame" for m in markers)
    # points: labels are the ids, z on the plane, colours from the frame
    assert client.wait_until(lambda: any(m.width > 0 for m in _at(io["points"], 11)), 20)
    cloud_msg = [m for m in _at(io["points"], 11) if m.width > 0][-1]
    assert cloud_msg.header.frame_id == "cam_color_optical_frame"
    cloud = np.frombuffer(cloud_msg.data, POINT_DTYPE)
    assert {str(v) for v in np.unique(cloud["label"])} == set(with_3d)
    np.testing.assert_allclose(cloud["z"], 1.5, atol=1e-3)
    u = np.rint(cloud["x"] * K[0, 0] / cloud["z"] + K[0, 2]).astype(int)
    v = np.rint(cloud["y"] * K[1, 1] / cloud["z"] + K[1, 2]).astype(int)
    rgb = FRAME[v, u].astype(np.uint32)
    assert np.array_equal(cloud["rgb"], (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2])


def test_one_object_equals_the_library_on_its_mask(node, io, client):
    """With one object ~/labels is its whole mask: the node's 3D is the library's on it."""
    clear = client.publisher(Empty, f"{NS}/prompt/clear")
    assert client.wait_matched(clear)
    n3d = len(_at(io["det3d"], 11))
    clear.publish(Empty())  # forget the two boxes
    assert client.wait_until(lambda: len(_at(io["det3d"], 11)) > n3d and not _at(io["det3d"], 11)[-1].detections, 60)
    n3d = len(_at(io["det3d"], 11))
    prompt = Detection2DArray()
    prompt.header.stamp.sec = 11
    prompt.detections = [_box(150, 110, 120, 100, "cup")]
    io["boxes"].publish(prompt)
    assert client.wait_until(lambda: len(_at(io["det3d"], 11)) > n3d
                             and len(_at(io["det3d"], 11)[-1].detections) == 1, 60), node.log()
    (det,) = _at(io["det3d"], 11)[-1].detections
    labels = [m for m in _at(io["labels"], 11) if np.frombuffer(m.data, np.uint16).max() == int(det.id)][-1]
    (expected,) = _expected(labels, [det.id])
    p, c, s = det.results[0].pose.pose.position, det.bbox.center.position, det.bbox.size
    np.testing.assert_allclose([p.x, p.y, p.z], expected.centroid, atol=1e-4)
    np.testing.assert_allclose([c.x, c.y, c.z, s.x, s.y, s.z], [*expected.center, *expected.size], atol=1e-4)


def test_32fc1_depth_a_few_ms_off_is_paired(node, io, client):
    _send(io, client, 21, _depth_32(21, 5_000_000))  # 5 ms after the colour stamp, within max_dt 0.02
    assert client.wait_until(lambda: any(m.detections for m in _at(io["det3d"], 21)), 60), node.log()
    det = _at(io["det3d"], 21)[-1].detections[0]
    assert det.results[0].pose.pose.position.z == pytest.approx(1.5, abs=1e-3)


def test_late_depth_is_paired_and_missing_depth_is_published_without_3d_and_counted(node, io, client):
    _send(io, client, 31, _depth_16(31), depth_first=False)  # the depth frame arrives 0.1 s after the colour
    assert client.wait_until(lambda: any(m.detections for m in _at(io["det3d"], 31)), 60), node.log()
    _send(io, client, 41, _depth_16(41, 500_000_000))  # 0.5 s off: outside max_dt
    assert client.wait_until(lambda: _at(io["labels"], 41), 60), node.log()
    client.spin_for(1.0)
    assert _at(io["det3d"], 41) == [] and _at(io["markers"], 41) == []  # 2D out, no 3D
    assert node.wait_for_log("3D skipped: no depth frame within depth.max_dt", 10), node.log()
    assert client.wait_until(lambda: int(_counter(io, "frames_without_3d") or 0) >= 1, 10)
    assert int(_counter(io, "frames_with_3d")) >= 3
    assert _counter(io, "depth_topic") == "/d/depth"
    assert float(_counter(io, "depth3d_ms_mean")) > 0
    assert node.proc.poll() is None
