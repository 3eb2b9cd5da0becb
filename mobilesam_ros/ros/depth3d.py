"""The segment node's 3D part, from an aligned depth camera: subscribes depth and
CameraInfo, pairs depth with each segmented colour frame and publishes
``~/detections_3d``, ``~/points`` and ``~/markers``. The measuring and the messages
are :mod:`mobilesam_ros.messages.objects3d` (shared with ``mobilesam-ros bag``); this
is the part that talks to rclpy. Everything is in the camera's optical frame
(CameraInfo's ``frame_id``), stamped with the colour frame's stamp.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from ..live.rgbd import DepthError, DepthPairer, Objects3D
from ..live.stats import error_kind
from ..messages.images import header_stamp_ns
from ..messages.objects3d import (
    depth_options,
    detections_3d_msg,
    has_distortion,
    markers_msg,
    object_ids,
    point_buffer,
    pointcloud_msg,
    result_objects,
)
from .qos import ReliabilityMatcher, qos_profile


class Depth3D:
    """3D for the segment node: subscribes ``depth_topic`` and ``camera_info_topic``,
    pairs depth with each segmented colour frame, publishes the 3D outputs.

    The node calls :meth:`colour_arrived` from its image callback, :meth:`frame_taken`
    when the worker takes a frame, :meth:`publish` after the 2D outputs of a result
    and :meth:`diagnostics` for /diagnostics.
    """

    def __init__(self, node, cfg, stats, errors, vision, outputs: str = "~/") -> None:
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
        from std_msgs.msg import Header
        from visualization_msgs.msg import Marker, MarkerArray

        self.node, self.stats, self.errors, self.vision = node, stats, errors, vision
        self._classes = SimpleNamespace(Header=Header, PointCloud2=PointCloud2, PointField=PointField,
                                        Marker=Marker, MarkerArray=MarkerArray)
        self.options = depth_options(cfg)
        self.depth_scale = cfg["depth.scale"]
        self.wait = cfg["depth.wait"]
        self.pairer = DepthPairer(cfg["depth.max_dt"], depth_queue=cfg["depth.queue_size"],
                                  pinned=cfg["embedding_cache_size"] + 2)
        self._info = None
        self._info_lock = threading.Lock()
        self.last_skip = ""  # why the last object or frame had no 3D
        self.depth_topic = node.resolve_topic_name(cfg["depth_topic"])
        self.info_topic = node.resolve_topic_name(cfg["camera_info_topic"])
        self._image_cls = Image
        self._depth_sub = None
        self._reliability: str | None = None
        self._depth_frames = 0
        # CameraInfo is small: best effort takes it from reliable and best-effort publishers alike
        node.create_subscription(CameraInfo, self.info_topic, self._on_info, qos_profile("best_effort", 5))
        if cfg["qos.reliability"] == "auto":
            ReliabilityMatcher(node, self.depth_topic, lambda: self._reliability, self._subscribe,
                               self._announce).start()
        else:
            self._subscribe(cfg["qos.reliability"])
        out_qos = qos_profile("reliable", 2)
        self.pub_detections = None
        if vision is not None and cfg["publish_detections"]:
            self.pub_detections = node.create_publisher(vision.Detection3DArray, outputs + "detections_3d", out_qos)
        self.pub_points = node.create_publisher(PointCloud2, outputs + "points", out_qos)
        self.pub_markers = node.create_publisher(MarkerArray, outputs + "markers", out_qos)  # outputs: ~/ or ~/<camera>/

    def describe(self) -> str:
        outputs = "detections_3d, points, markers" if self.pub_detections is not None else "points, markers"
        return f"{outputs} (3D from {self.depth_topic} + {self.info_topic})"

    # --- subscriptions (executor thread) -----------------------------------------------------
    def _subscribe(self, reliability: str) -> None:
        if self._depth_sub is not None:
            self.node.destroy_subscription(self._depth_sub)
        self._depth_sub = self.node.create_subscription(self._image_cls, self.depth_topic, self._on_depth,
                                                        qos_profile(reliability, 5))
        self._reliability = reliability

    def _announce(self, reliability: str, _publishers: int) -> None:
        self.errors.once(f"depth_qos:{reliability}", f"depth on {self.depth_topic}: subscribing {reliability}")

    def _on_depth(self, msg) -> None:
        self.stats.count("depth_frames_received")
        self._depth_frames += 1
        self.pairer.add_depth(header_stamp_ns(msg.header), msg)

    def _on_info(self, msg) -> None:
        with self._info_lock:
            first = self._info is None
            self._info = msg
        if first:
            self.errors.once("camera_info", f"camera_info from {self.info_topic}: frame '{msg.header.frame_id}', "
                             f"{msg.width}x{msg.height}")
            if has_distortion(msg):
                self.errors.once(
                    "camera_info:distortion",
                    f"camera_info on {self.info_topic} has distortion ({msg.distortion_model}): 3D back-projects "
                    "with K as for rectified images (errors grow towards the image corners); for exact 3D use "
                    "the rectified colour image and depth aligned to it", level="warn",
                )

    def colour_arrived(self, header) -> None:
        stamp = header_stamp_ns(header)
        if stamp:
            self.pairer.colour_arrived(stamp)

    def frame_taken(self, header) -> None:
        stamp = header_stamp_ns(header)
        if stamp:
            self.pairer.pin(stamp)

    # --- per result (worker thread) ----------------------------------------------------------------
    def _skip(self, kind: str, message: str, counter: str = "frames_without_3d", level: str = "warn") -> None:
        self.last_skip = message
        self.errors.report(f"depth:{kind}", message, counter=counter, level=level)

    def publish(self, result, header) -> None:
        """The 3D outputs of one result (after its 2D outputs), or a counted reason why not."""
        with self._info_lock:
            info = self._info
        if len(result) == 0:  # nothing to measure: empty 3D outputs (and markers cleared) with the 2D ones
            self._publish(Objects3D(), [], result, self._header(header, info), None)
            return
        stamp = header_stamp_ns(header)
        if not stamp:
            self._skip("unstamped", "3D skipped: the colour frame has no stamp, so no depth frame can be paired")
            return
        if info is None:
            self._skip("no_info", f"3D skipped: no camera_info received yet on {self.info_topic}")
            return
        paired = self.pairer.lookup(stamp, self.wait)
        if paired is None:
            self._skip("no_depth", f"3D skipped: no depth frame within depth.max_dt {self.pairer.max_dt:g} s of the "
                       f"colour frame on {self.depth_topic} (waited {self.wait:g} s)")
            return
        t0 = time.perf_counter()
        depth_msg, _dt = paired
        try:
            objects, scale = result_objects(result, depth_msg, info, self.depth_scale, self.options)
        except DepthError as exc:
            self._skip(error_kind("bad_depth", str(exc)), f"3D skipped: {exc}", counter="depth_errors")
            return
        missing = [(i, why) for i, why in enumerate(objects.reasons) if why]
        self.stats.count("frames_with_3d")
        self.stats.count("objects_3d", len(objects) - len(missing))
        if missing:
            self.stats.count("objects_without_3d", len(missing))
            self.last_skip = f"object {missing[0][0] + 1}: {missing[0][1]}"
        self._publish(objects, object_ids(result), result, self._header(header, info), scale)
        self.stats.stage("depth3d", (time.perf_counter() - t0) * 1e3)

    def _header(self, header, info):
        """The colour frame's stamp, the camera's optical frame (CameraInfo's frame_id)."""
        out = self._classes.Header()
        out.stamp = header.stamp
        out.frame_id = (info.header.frame_id if info is not None else "") or header.frame_id
        return out

    def _publish(self, objects, ids, result, header, pixel_scale) -> None:
        if self.pub_detections is not None:
            self.pub_detections.publish(
                detections_3d_msg(objects, ids, result.class_ids, result.scores, header, self.vision))
        if self.pub_points.get_subscription_count() > 0:
            points = point_buffer(objects, ids, result.frame.image, pixel_scale or (1.0, 1.0))
            self.pub_points.publish(pointcloud_msg(points, header, self._classes.PointCloud2, self._classes.PointField))
        if self.pub_markers.get_subscription_count() > 0:  # for people (rviz): only while watched
            self.pub_markers.publish(markers_msg(objects, ids, result.class_ids, header, self._classes.MarkerArray,
                                                 self._classes.Marker))

    def diagnostics(self) -> dict[str, Any]:
        return {
            "depth_topic": self.depth_topic,
            "depth_reliability": self._reliability or "waiting for a publisher",
            "camera_info": "received" if self._info is not None else f"waiting on {self.info_topic}",
            "depth": f"{self._depth_frames} received" if self._depth_frames else f"none received yet on {self.depth_topic}",
            "depth_last_skip": self.last_skip,
        }
