"""3D message building (mobilesam_ros.messages.objects3d) without DDS: Detection3DArray
(the real vision_msgs when built, else stand-ins with its 4.x layout), PointCloud2 and
MarkerArray (real sensor_msgs / visualization_msgs from pip), CameraInfo intrinsics."""

from __future__ import annotations

from types import SimpleNamespace as NS

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")
pytest.importorskip("visualization_msgs.msg")

from sensor_msgs.msg import CameraInfo, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from mobilesam_ros.live.rgbd import DepthError, objects_from_depth
from mobilesam_ros.messages.objects3d import (
    POINT_DTYPE,
    camera_info_intrinsics,
    detections_3d_msg,
    has_distortion,
    markers_msg,
    object_ids,
    point_buffer,
    pointcloud_msg,
)

try:
    import vision_msgs.msg as VISION  # the real 4.x messages (scripts/build_vision_msgs.sh)
except ImportError:  # stand-ins with the 4.x layout
    def _pose():
        return NS(position=NS(x=0.0, y=0.0, z=0.0), orientation=NS(x=0.0, y=0.0, z=0.0, w=1.0))

    class _Det3D:
        def __init__(self):
            self.header, self.id, self.results = None, "", []
            self.bbox = NS(center=_pose(), size=NS(x=0.0, y=0.0, z=0.0))

    class _Hyp:
        def __init__(self):
            self.hypothesis = NS(class_id="", score=0.0)
            self.pose = NS(pose=_pose(), covariance=[0.0] * 36)

    VISION = NS(Detection3DArray=lambda: NS(header=None, detections=[]), Detection3D=_Det3D,
                ObjectHypothesisWithPose=_Hyp)

H, W = 120, 160
K = np.array([[150.0, 0, 79.5], [0, 150.0, 59.5], [0, 0, 1]])


@pytest.fixture(scope="module")
def scene():
    """Two objects on a plane at 1.5 m, a third with no depth; an RGB image of known colours."""
    depth = np.full((H, W), 1500, np.uint16)
    masks = np.zeros((3, H, W), bool)
    masks[0, 20:60, 20:70] = True
    masks[1, 70:110, 90:150] = True
    masks[2, 5:15, 140:155] = True
    depth[5:15, 140:155] = 0  # object 3: a hole in the depth
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = np.arange(W, dtype=np.uint8)[None, :]  # red = column
    image[..., 1] = np.arange(H, dtype=np.uint8)[:, None]  # green = row
    image[..., 2] = 7
    objects = objects_from_depth(masks, depth, K)
    result = NS(masks=masks, track_ids=np.array([4, 9, 12]), class_ids=["cup", "", "box"],
                scores=np.array([0.9, 0.5, 0.7], np.float32), frame=NS(image=image))
    header = Header(frame_id="cam_optical")
    header.stamp.sec, header.stamp.nanosec = 42, 5
    return NS(objects=objects, result=result, header=header, image=image)


def test_ids_are_the_track_ids_or_label_values():
    assert object_ids(NS(masks=np.zeros((2, 1, 1)), track_ids=np.array([7, 3]))) == ["7", "3"]
    assert object_ids(NS(masks=np.zeros((2, 1, 1)))) == ["1", "2"]


def test_detections_3d_one_per_object_with_3d(scene):
    assert scene.objects[2] is None
    ids = object_ids(scene.result)
    msg = detections_3d_msg(scene.objects, ids, scene.result.class_ids, scene.result.scores, scene.header, VISION)
    assert msg.header is scene.header
    assert [d.id for d in msg.detections] == ["4", "9"]
    for det, obj, class_id, score in zip(msg.detections, scene.objects, ("cup", ""), (0.9, 0.5)):
        c = det.bbox.center.position
        np.testing.assert_allclose([c.x, c.y, c.z], obj.center)
        s = det.bbox.size
        np.testing.assert_allclose([s.x, s.y, s.z], obj.size)
        assert det.bbox.center.orientation.w == 1.0
        (hyp,) = det.results
        assert hyp.hypothesis.class_id == class_id and hyp.hypothesis.score == pytest.approx(score)
        p = hyp.pose.pose.position
        np.testing.assert_allclose([p.x, p.y, p.z], obj.centroid)
        assert p.z == pytest.approx(1.5)


def test_pointcloud_fields_points_colours_and_labels(scene):
    ids = object_ids(scene.result)
    points = point_buffer(scene.objects, ids, scene.image)
    msg = pointcloud_msg(points, scene.header, PointCloud2, PointField)
    assert (msg.height, msg.width, msg.point_step) == (1, len(points), 20)
    assert msg.row_step == 20 * len(points) and len(msg.data) == msg.row_step and msg.is_dense
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1), ("y", 4, PointField.FLOAT32, 1), ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1), ("label", 16, PointField.UINT32, 1)]
    cloud = np.frombuffer(msg.data, POINT_DTYPE)
    assert set(np.unique(cloud["label"])) == {4, 9}
    assert len(cloud) == sum(o.num_points for o in scene.objects if o is not None)
    np.testing.assert_allclose(cloud["z"], 1.5)
    # each point's colour is the image pixel it was seen at
    u = np.rint(cloud["x"] * K[0, 0] / cloud["z"] + K[0, 2]).astype(int)
    v = np.rint(cloud["y"] * K[1, 1] / cloud["z"] + K[1, 2]).astype(int)
    assert np.array_equal(cloud["rgb"], (u.astype(np.uint32) << 16) | (v.astype(np.uint32) << 8) | 7)
    # rviz reads rgb as a float32 whose bits are 0x00RRGGBB
    assert cloud["rgb"].view(np.float32).dtype == np.float32


def test_pointcloud_of_depth_at_half_resolution_takes_colours_from_the_colour_pixels(scene):
    from mobilesam_ros.live.rgbd import fit_masks_to_depth

    depth = np.full((H // 2, W // 2), 1500, np.uint16)
    masks, K2 = fit_masks_to_depth(scene.result.masks[:2], K, depth.shape)
    objects = objects_from_depth(masks, depth, K2)
    cloud = point_buffer(objects, ["1", "2"], scene.image, (0.5, 0.5))
    u = np.rint(cloud["x"] * K[0, 0] / cloud["z"] + K[0, 2]).astype(np.uint32)
    red = cloud["rgb"] >> 16
    assert np.all(np.abs(red.astype(int) - u.astype(int)) <= 1)


def test_markers_delete_all_then_box_and_label_per_object(scene):
    ids = object_ids(scene.result)
    msg = markers_msg(scene.objects, ids, scene.result.class_ids, scene.header, MarkerArray, Marker)
    first, *rest = msg.markers
    assert first.action == Marker.DELETEALL
    assert [(m.ns, m.id, m.type) for m in rest] == [
        ("boxes", 4, Marker.CUBE), ("labels", 4, Marker.TEXT_VIEW_FACING),
        ("boxes", 9, Marker.CUBE), ("labels", 9, Marker.TEXT_VIEW_FACING)]
    box, text = rest[0], rest[1]
    assert box.header.frame_id == "cam_optical" and box.header.stamp.sec == 42
    assert box.scale.z >= 0.01 and 0 < box.color.a < 1  # a flat face is still drawn
    assert box.pose.position.z == pytest.approx(1.5)
    assert text.text.startswith("4 cup ") and text.text.endswith(" m")
    assert text.pose.position.y < box.pose.position.y  # above the box (y down)
    assert rest[3].text.startswith("9 ") and "  " not in rest[3].text  # no class: no gap
    empty = markers_msg([], [], [], scene.header, MarkerArray, Marker)
    assert [m.action for m in empty.markers] == [Marker.DELETEALL]


def test_camera_info_intrinsics_scale_and_errors():
    info = CameraInfo(width=640, height=480)
    info.k = [600.0, 0.0, 319.5, 0.0, 600.0, 239.5, 0.0, 0.0, 1.0]
    np.testing.assert_allclose(camera_info_intrinsics(info, (480, 640))[0], [600, 0, 319.5])
    # the colour image is published at half the calibrated resolution
    np.testing.assert_allclose(camera_info_intrinsics(info, (240, 320))[:2], [[300, 0, 159.5], [0, 300, 119.5]])
    with pytest.raises(DepthError, match="another aspect ratio"):
        camera_info_intrinsics(info, (360, 640))
    with pytest.raises(DepthError, match="not calibrated"):
        camera_info_intrinsics(CameraInfo(), (480, 640))
    assert not has_distortion(info)
    info.d = [0.1, 0.0, 0.0, 0.0, 0.0]
    assert has_distortion(info)
