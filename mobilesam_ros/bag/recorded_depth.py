"""The node's 3D outputs from recorded depth and camera info (``--depth-topic``,
``--camera-info-topic``): ``~/detections_3d``, ``~/points``, ``~/markers``.

The measuring and the messages are the node's (:mod:`mobilesam_ros.live.rgbd`,
:mod:`mobilesam_ros.messages.objects3d`, with the node's ``depth.*`` defaults); only the
pairing is offline: a colour frame takes the depth frame with the same stamp, else
the nearest one within ``max_dt`` anywhere in the bag (the node can only wait
``depth.wait`` for it), and the CameraInfo logged last at or before it (the first
one when none was). A frame without depth or camera info, or with unusable depth,
gets no 3D outputs and is counted with the reason; a frame with no objects gets empty
ones (markers cleared), as from the node.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

import numpy as np

from ..live.config import NodeConfig
from ..live.rgbd import DepthError, Objects3D
from ..messages.images import header_key
from ..messages.objects3d import (
    depth_options,
    detections_3d_msg,
    markers_msg,
    object_ids,
    point_buffer,
    pointcloud_msg,
    result_objects,
)
from .io import InputBag
from .typestore import CAMERA_INFO, IMAGE, cdr_stamp, message_factories

#: output name under the namespace -> message type (the node's ~/...)
OUTPUTS_3D = {
    "detections_3d": "vision_msgs/msg/Detection3DArray",
    "points": "sensor_msgs/msg/PointCloud2",
    "markers": "visualization_msgs/msg/MarkerArray",
}


def _ns(key) -> int | None:
    return None if key is None else key[0] * 1_000_000_000 + key[1]


class BagDepth:
    def __init__(self, depth_topic: str, info_topic: str, store: Any, max_dt: float | None = None) -> None:
        cfg = NodeConfig.defaults()
        self.options = depth_options(cfg)
        self.scale = cfg["depth.scale"]
        self.max_dt_ns = int(round((cfg["depth.max_dt"] if max_dt is None else max_dt) * 1e9))
        self.depth_topic, self.info_topic = depth_topic, info_topic
        self.store = store
        self.vision = message_factories(store, "vision_msgs", ("Detection3DArray", "Detection3D", "ObjectHypothesisWithPose"))
        self.viz = message_factories(store, "visualization_msgs", ("MarkerArray", "Marker"))
        self.sensor = message_factories(store, "sensor_msgs", ("PointCloud2", "PointField"))
        self._header = store.types["std_msgs/msg/Header"]
        self.skipped: Counter = Counter()  # reason -> frames without 3D
        self._lookup: InputBag | None = None

    # --- plan --------------------------------------------------------------------------------
    def check(self, bag: InputBag) -> None:
        bag.connections_of(self.depth_topic, (IMAGE,), "depth")
        bag.connections_of(self.info_topic, (CAMERA_INFO,), "camera info")

    def plan(self, bag: InputBag, frames: list[tuple[int, Any]]) -> None:
        """Pair every colour frame ((log time, stamp key) in log order) with a depth
        frame (its log time) and a CameraInfo, reading only headers and camera infos."""
        self._depth_conns = bag.connections_of(self.depth_topic, (IMAGE,), "depth")
        depth = sorted((_ns(cdr_stamp(raw)) or 0, t) for _, t, raw in bag.messages(self._depth_conns))
        stamps = [s for s, _ in depth]
        self._infos = [(t, bag.deserialize(raw, CAMERA_INFO))
                       for _, t, raw in bag.messages(bag.connections_of(self.info_topic, (CAMERA_INFO,), "camera info"))]
        self._info_times = [t for t, _ in self._infos]
        self.pairs: list[tuple[int, int] | None] = []  # per frame: (depth stamp, depth log time)
        for _, key in frames:
            stamp = _ns(key)
            best = None
            if stamp is not None and stamps:
                i = bisect.bisect_left(stamps, stamp)
                for j in (i - 1, i):
                    if 0 <= j < len(stamps) and abs(stamps[j] - stamp) <= self.max_dt_ns:
                        if best is None or abs(stamps[j] - stamp) < abs(best[0] - stamp):
                            best = depth[j]
            self.pairs.append(best)
        # a reader of its own: depth frames are fetched by log time while the main one iterates
        self._lookup = InputBag(bag.path)

    def close(self) -> None:
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None

    # --- per frame ---------------------------------------------------------------------------
    def _info_for(self, logtime: int):
        if not self._infos:
            return None
        i = bisect.bisect_right(self._info_times, logtime) - 1
        return self._infos[max(i, 0)][1]

    def outputs(self, index: int, logtime: int, result: Any, header: Any) -> dict[str, bytes] | None:
        """Serialised 3D outputs of frame ``index``, or None (reason counted)."""
        info = self._info_for(logtime)
        out_header = self._header(stamp=header.stamp,
                                  frame_id=(info.header.frame_id if info is not None else "") or header.frame_id)
        if len(result) == 0:
            return self._serialise(Objects3D(), [], result, out_header, None)
        pair = self.pairs[index] if index < len(self.pairs) else None
        if _ns(header_key(header)) is None:
            return self._skip("the colour frame has no stamp")
        if info is None:
            return self._skip(f"no camera_info on {self.info_topic}")
        if pair is None:
            return self._skip(f"no depth frame within {self.max_dt_ns / 1e9:g} s")
        msg = self._fetch(pair)
        if msg is None:
            return self._skip("depth frame unreadable")
        try:
            objects, scale = result_objects(result, msg, info, self.scale, self.options)
        except DepthError as exc:
            return self._skip(str(exc).split(":")[0])
        return self._serialise(objects, object_ids(result), result, out_header, scale)

    def _fetch(self, pair: tuple[int, int]):
        stamp, logtime = pair
        conns = [c for c in self._lookup.connections if c.topic == self.depth_topic]
        for conn, _, raw in self._lookup.reader.messages(connections=conns, start=logtime, stop=logtime + 1):
            try:
                if (_ns(cdr_stamp(raw)) or 0) == stamp:
                    return self._lookup.deserialize(raw, conn.msgtype)
            except Exception:  # noqa: BLE001 - counted by the caller
                return None
        return None

    def _skip(self, reason: str) -> None:
        self.skipped[reason] += 1
        return None

    def _serialise(self, objects, ids, result, header, pixel_scale) -> dict[str, bytes]:
        s = self.store
        dets = detections_3d_msg(objects, ids, result.class_ids, result.scores, header, self.vision)
        cloud = pointcloud_msg(point_buffer(objects, ids, result.frame.image, pixel_scale or (1.0, 1.0)), header,
                               self.sensor.PointCloud2, self.sensor.PointField)
        cloud.data = np.frombuffer(cloud.data, np.uint8)  # rosbags takes uint8[] as numpy
        markers = markers_msg(objects, ids, result.class_ids, header, self.viz.MarkerArray, self.viz.Marker)
        return {
            "detections_3d": s.serialize_cdr(dets, OUTPUTS_3D["detections_3d"]),
            "points": s.serialize_cdr(cloud, OUTPUTS_3D["points"]),
            "markers": s.serialize_cdr(markers, OUTPUTS_3D["markers"]),
        }
