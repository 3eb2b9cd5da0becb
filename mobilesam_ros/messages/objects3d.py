"""3D objects from depth and camera-info messages, and the 3D output messages
``~/detections_3d`` (vision_msgs/Detection3DArray), ``~/points``
(sensor_msgs/PointCloud2) and ``~/markers`` (visualization_msgs/MarkerArray).

The measuring is :func:`mobilesam_ros.live.rgbd.objects_from_depth`; here are the
message sides, shared by the node (:mod:`mobilesam_ros.ros.depth3d`) and
``mobilesam-ros bag`` (:mod:`mobilesam_ros.bag.recorded_depth`). Everything is in the
camera's optical frame (CameraInfo's ``frame_id``).
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np

from ..live.rgbd import (
    DepthError,
    DepthOptions,
    Objects3D,
    depth_to_array,
    fit_masks_to_depth,
    intrinsics_matrix,
    objects_from_depth,
    scale_intrinsics,
)
from ..visualize import instance_colour

#: point layout of ~/points: x, y, z float32, rgb (0x00RRGGBB, declared FLOAT32 as PCL and
#: rviz expect), label uint32 (the object id)
POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4"), ("label", "<u4")])
_FLOAT32, _UINT32 = 7, 6  # sensor_msgs/PointField datatypes
#: markers: boxes thinner than this are drawn this thick (a flat face has ~0 extent in z)
MIN_MARKER_EXTENT = 0.01
TEXT_HEIGHT = 0.05  # m


# --- ids -----------------------------------------------------------------------------------------
def object_ids(result: Any) -> list[str]:
    """The id of each object as in ~/labels and ~/detections: the tracker's ids when the
    result carries them (``track_ids``), else the label value i + 1."""
    tracked = getattr(result, "track_ids", None)
    if tracked is not None and len(tracked) == len(result.masks):
        return [str(int(t)) if isinstance(t, (int, np.integer)) else str(t) for t in tracked]
    return [str(i + 1) for i in range(len(result.masks))]


def _numeric(ids: list[str]) -> np.ndarray:
    """Ids as uint32 label values / marker ids (an id that is not a number gets its position + 1)."""
    return np.array([int(v) if v.isdigit() else i + 1 for i, v in enumerate(ids)], np.uint32)


def result_objects(result: Any, depth_msg: Any, info: Any, depth_scale: float,
                   options: Any) -> tuple[Objects3D, tuple[float, float]]:
    """A frame's segmentation result + its paired depth Image and CameraInfo (ROS or
    rosbags messages alike) -> (3D objects, depth pixels per colour pixel (y, x)).
    The node and ``mobilesam-ros bag`` both go through here. Raises DepthError."""
    image_size = result.labels.shape
    K = camera_info_intrinsics(info, image_size)
    depth = depth_to_array(depth_msg.data, depth_msg.encoding, depth_msg.height, depth_msg.width,
                           depth_msg.step, bool(depth_msg.is_bigendian))
    masks, boxes = result.masks, result.boxes
    if depth.shape != image_size:
        masks, K = fit_masks_to_depth(masks, K, depth.shape)
        boxes = None  # the boxes are in colour pixels
    objects = objects_from_depth(masks, depth, K, depth_scale, boxes=boxes, options=options)
    return objects, (depth.shape[0] / image_size[0], depth.shape[1] / image_size[1])


# --- camera info ---------------------------------------------------------------------------------
def camera_info_intrinsics(info: Any, image_size: tuple[int, int]) -> np.ndarray:
    """sensor_msgs/CameraInfo -> K (3x3) for a colour image of ``image_size`` (h, w).

    K is CameraInfo.k; when the CameraInfo describes another resolution of the same
    view (width / height given and different), K is scaled to the image. Raises
    DepthError for an uncalibrated CameraInfo (K all zero) or another aspect ratio.
    """
    k = np.asarray(info.k, np.float64)
    if k.size != 9 or not np.any(k):
        raise DepthError("camera_info has no intrinsics (K is all zero): the camera is not calibrated")
    K = intrinsics_matrix(k)
    h, w = int(info.height), int(info.width)
    if h and w and (h, w) != tuple(image_size):
        try:
            K = scale_intrinsics(K, (h, w), image_size)
        except DepthError as exc:
            raise DepthError(
                f"camera_info is for {w}x{h} images but the colour image is {image_size[1]}x{image_size[0]} "
                "with another aspect ratio: use the camera_info of the colour image"
            ) from exc
    return K


def has_distortion(info: Any) -> bool:
    return any(abs(float(v)) > 1e-9 for v in (info.d or ()))


# --- messages ----------------------------------------------------------------------------------------
def detections_3d_msg(objects, ids, class_ids, scores, header, classes) -> Any:
    """vision_msgs/Detection3DArray: one Detection3D per object that has 3D.

    ``id`` = the 2D id; ``bbox`` = the axis-aligned box (centre, size; orientation
    identity, camera optical frame); ``results[0]``: the 2D detection's class id and
    score, and ``pose.pose.position`` = the centroid of the object's points.
    """
    out = classes.Detection3DArray()
    out.header = header
    detections = []
    for i, obj in enumerate(objects):
        if obj is None:
            continue
        det = classes.Detection3D()
        det.header = header
        det.id = ids[i]
        pose = det.bbox.center
        pose.position.x, pose.position.y, pose.position.z = (float(v) for v in obj.center)
        pose.orientation.x = pose.orientation.y = pose.orientation.z = 0.0
        pose.orientation.w = 1.0
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(v) for v in obj.size)
        hyp = classes.ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = class_ids[i] if i < len(class_ids) else ""
        hyp.hypothesis.score = float(scores[i]) if i < len(scores) else 0.0
        position = hyp.pose.pose.position
        position.x, position.y, position.z = (float(v) for v in obj.centroid)
        hyp.pose.pose.orientation.w = 1.0
        det.results = [hyp]
        detections.append(det)
    out.detections = detections
    return out


def point_buffer(objects, ids, image: np.ndarray | None, pixel_scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """The objects' points as one structured array (POINT_DTYPE), colours from ``image``
    (RGB uint8, the colour frame) at each point's pixel; no per-point Python."""
    labels = _numeric(ids)
    parts = [(obj, labels[i]) for i, obj in enumerate(objects) if obj is not None]
    total = sum(len(obj.points) for obj, _ in parts)
    out = np.empty(total, POINT_DTYPE)
    start = 0
    sy, sx = pixel_scale
    for obj, label in parts:
        n = len(obj.points)
        block = out[start:start + n]
        block["x"], block["y"], block["z"] = obj.points[:, 0], obj.points[:, 1], obj.points[:, 2]
        block["label"] = label
        if image is None:
            block["rgb"] = 0xFFFFFF
        else:
            rows, cols = obj.pixels[:, 0], obj.pixels[:, 1]
            if (sy, sx) != (1.0, 1.0):  # depth pixels -> colour pixels (centres)
                rows = np.clip(np.rint((rows + 0.5) / sy - 0.5), 0, image.shape[0] - 1).astype(np.intp)
                cols = np.clip(np.rint((cols + 0.5) / sx - 0.5), 0, image.shape[1] - 1).astype(np.intp)
            rgb = image[rows, cols].astype(np.uint32)
            block["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        start += n
    return out


def pointcloud_msg(points: np.ndarray, header, cloud_cls, field_cls) -> Any:
    """A POINT_DTYPE array -> sensor_msgs/PointCloud2 (one row, dense); one copy of the bytes."""
    msg = cloud_cls()
    msg.header = header
    msg.height, msg.width = 1, int(len(points))
    fields = []
    for name, datatype in (("x", _FLOAT32), ("y", _FLOAT32), ("z", _FLOAT32), ("rgb", _FLOAT32), ("label", _UINT32)):
        field = field_cls()
        field.name, field.offset, field.datatype, field.count = name, POINT_DTYPE.fields[name][1], datatype, 1
        fields.append(field)
    msg.fields = fields
    msg.is_bigendian = False  # POINT_DTYPE is little-endian on every host
    msg.point_step = POINT_DTYPE.itemsize
    msg.row_step = POINT_DTYPE.itemsize * len(points)
    data = array.array("B")
    data.frombytes(memoryview(np.ascontiguousarray(points)).cast("B"))
    msg.data = data
    msg.is_dense = True
    return msg


def markers_msg(objects, ids, class_ids, header, marker_array_cls, marker_cls) -> Any:
    """visualization_msgs/MarkerArray (the node publishes it while someone subscribes):
    DELETEALL first (markers of objects gone since the last frame disappear), then per object a
    translucent CUBE (its box, ns "boxes")
    and a TEXT_VIEW_FACING label "id class distance" above it (ns "labels"), in the
    object's overlay colour; marker id = the object id."""
    out = marker_array_cls()
    clear = marker_cls()
    clear.header = header
    clear.action = 3  # DELETEALL
    markers = [clear]
    numeric = _numeric(ids)
    for i, obj in enumerate(objects):
        if obj is None:
            continue
        r, g, b = (c / 255.0 for c in instance_colour(int(numeric[i])))  # as the overlay with track ids
        box = marker_cls()
        box.header, box.ns, box.id = header, "boxes", int(numeric[i])
        box.type, box.action = 1, 0  # CUBE, ADD
        box.pose.position.x, box.pose.position.y, box.pose.position.z = (float(v) for v in obj.center)
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = (max(float(v), MIN_MARKER_EXTENT) for v in obj.size)
        box.color.r, box.color.g, box.color.b, box.color.a = r, g, b, 0.4
        text = marker_cls()
        text.header, text.ns, text.id = header, "labels", int(numeric[i])
        text.type, text.action = 9, 0  # TEXT_VIEW_FACING, ADD
        # above the box: -y is up in the optical frame
        text.pose.position.x = float(obj.center[0])
        text.pose.position.y = float(obj.center[1] - obj.size[1] / 2 - TEXT_HEIGHT)
        text.pose.position.z = float(obj.center[2])
        text.pose.orientation.w = 1.0
        text.scale.z = TEXT_HEIGHT
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        name = class_ids[i] if i < len(class_ids) and class_ids[i] else ""
        text.text = " ".join(p for p in (ids[i], name, f"{obj.distance:.2f} m") if p)
        markers += [box, text]
    out.markers = markers
    return out


def depth_options(cfg) -> DepthOptions:
    """DepthOptions from the node's depth.* parameters (the node's values, or the
    defaults for a bag)."""
    return DepthOptions(
        min_depth=cfg["depth.min"], max_depth=cfg["depth.max"], erode_px=cfg["depth.erode_px"],
        min_points=cfg["depth.min_points"], max_points=cfg["depth.max_points_per_object"],
        float_scale=cfg["depth.float_scale"],
    )
