"""Message types for rosbag2 files without ROS: the typestore, vision_msgs, and the
node's outputs built as ``rosbags`` messages.

``rosbags`` ships the common ROS 2 types (sensor_msgs, std_msgs, geometry_msgs)
but not vision_msgs; those are registered here from their definitions (the 4.x
layout of Humble and later). A bag that embeds its own definitions (MCAP, rosbag2
from Iron on) is read with those, so a recording made with another layout still
deserialises.
"""

from __future__ import annotations

import functools
import struct
import sys
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from ..live.prompts import stamp_key
from ..messages.detections import result_to_detections

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DETECTION_2D_ARRAY = "vision_msgs/msg/Detection2DArray"

#: vision_msgs 4.x (Humble and later), in .msg syntax
VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox3D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nvision_msgs/Detection3D[] detections\n",
}


@functools.lru_cache(maxsize=1)
def default_typestore():
    """rosbags' newest ROS 2 typestore plus vision_msgs (built once per process; shared:
    never register types into it)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.LATEST)
    types: dict = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def bag_typestore(connections) -> Any:
    """A typestore for reading ``connections``: the definitions the bag embeds, and
    :func:`default_typestore` for every type it does not (rosbag2 sqlite3 files
    before Iron carry none)."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

    embedded: dict = {}
    for conn in connections:
        msgdef = conn.msgdef
        try:
            if msgdef.format == MessageDefinitionFormat.MSG and msgdef.data:
                embedded.update(get_types_from_msg(msgdef.data, conn.msgtype))
            elif msgdef.format == MessageDefinitionFormat.IDL and msgdef.data:
                sep = "=" * 80 + "\n"
                for part in msgdef.data.split(sep):
                    if part.strip():
                        idl = part.split("\n", 1)[1] if part.startswith("IDL: ") else part
                        embedded.update(get_types_from_idl(idl))
        except Exception:  # noqa: BLE001 - an unparsable embedded definition: use ours
            continue
    defaults = default_typestore()
    types = dict(defaults.fielddefs)
    types.update(embedded)
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    return store


def cdr_stamp(raw: bytes | memoryview) -> tuple[int, int] | None:
    """The header stamp of a CDR-serialised message that starts with a std_msgs/Header
    (Image, CompressedImage, Detection2DArray ...), read without deserialising the
    message (its pixels); the stamp key as :func:`stamp_key` makes it."""
    little = raw[1] == 1  # encapsulation id: CDR_BE 0x0000, CDR_LE 0x0001
    sec, nanosec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return stamp_key(sec, nanosec)


def default_message(store, msgtype: str) -> Any:
    """A message of ``msgtype`` with every field zero / empty, as rclpy's constructors
    give (rosbags' dataclasses have no defaults)."""
    consts, fields = store.fielddefs[msgtype]
    cls = store.types[msgtype]
    values = {}
    for name, (nodetype, detail) in fields:
        values[name] = _default_value(store, int(nodetype), detail)
    return cls(**values)


_NUMPY_BASE = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
    "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
    "int64": np.int64, "uint64": np.uint64, "float32": np.float32, "float64": np.float64,
}


def _default_value(store, nodetype: int, detail) -> Any:
    if nodetype == 1:  # BASE
        name = detail[0]
        if name == "string" or name == "wstring":
            return ""
        if name == "bool":
            return False
        return 0.0 if name.startswith("float") else 0
    if nodetype == 2:  # NAME: a nested message
        return default_message(store, detail)
    # ARRAY (fixed size) or SEQUENCE
    (sub_type, sub_detail), size = detail
    if int(sub_type) == 1 and sub_detail[0] in _NUMPY_BASE:
        return np.zeros(size if nodetype == 3 else 0, _NUMPY_BASE[sub_detail[0]])
    return [_default_value(store, int(sub_type), sub_detail) for _ in range(size if nodetype == 3 else 0)]


def message_factories(store, package: str, names: tuple[str, ...]) -> SimpleNamespace:
    """``ns.Name()`` builds a default ``package/msg/Name``: the stand-in for a ROS
    message module that :mod:`mobilesam_ros.messages` builds messages with."""
    made: dict[str, Callable[[], Any]] = {}
    for name in names:
        made[name] = (lambda t: (lambda: default_message(store, t)))(f"{package}/msg/{name}")
    return SimpleNamespace(**made)


class OutputMessages:
    """The node's output messages (mask, labels, detections, overlay) as rosbags
    messages, serialised to CDR. Built with the same code as the node's where the
    message layout is involved (:func:`mobilesam_ros.messages.detections.result_to_detections`)."""

    def __init__(self, store) -> None:
        self.store = store
        self._image = store.types[IMAGE]
        self._vision = message_factories(store, "vision_msgs", ("Detection2DArray", "Detection2D", "ObjectHypothesisWithPose"))

    def image(self, header: Any, pixels: np.ndarray, encoding: str) -> bytes:
        """(H, W[, C]) uint8/uint16 pixels (native byte order) -> serialised sensor_msgs/Image."""
        pixels = np.ascontiguousarray(pixels)
        msg = self._image(
            header=header, height=int(pixels.shape[0]), width=int(pixels.shape[1]), encoding=encoding,
            is_bigendian=int(pixels.itemsize > 1 and sys.byteorder == "big"), step=int(pixels.strides[0]),
            data=pixels.reshape(-1).view(np.uint8),
        )
        return self.store.serialize_cdr(msg, IMAGE)

    def detections(self, result: Any, header: Any) -> bytes:
        return self.store.serialize_cdr(result_to_detections(result, header, self._vision), DETECTION_2D_ARRAY)
