"""segment_node: MobileSAM on a camera stream (``ros2 run mobilesam_ros segment_node``).

Topics (relative names resolve in the node's namespace; ``~`` is the node's name,
``/mobilesam`` by default):

=========================  ==================================  ===========================
topic                      type                                meaning
=========================  ==================================  ===========================
image (param image_topic)  sensor_msgs/Image                   camera frames (transport raw)
image/compressed           sensor_msgs/CompressedImage         jpeg/png frames (compressed)
~/prompt/point             geometry_msgs/PointStamped          a point; z >= 0 fg, z < 0 bg
~/prompt/click             geometry_msgs/Point                 rqt_image_view click: fg point
~/prompt/boxes             vision_msgs/Detection2DArray        one object per box
~/prompt/clear             std_msgs/Empty                      forget all prompts
~/mask                     sensor_msgs/Image mono8             255 inside any object
~/labels                   sensor_msgs/Image mono16            instance ids, 0 background
~/detections               vision_msgs/Detection2DArray        id = label, bbox, score = IoU
~/overlay                  sensor_msgs/Image rgb8              masks drawn over the frame
/diagnostics               diagnostic_msgs/DiagnosticArray     rates, latency, timings, errors
=========================  ==================================  ===========================

All prompt coordinates are pixels of the incoming frame (x right, y down, origin at
the image's top-left corner). Outputs carry the segmented frame's header.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.logging import get_logger
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty

from ..live.frames import FrameSlot
from ..live.config import ConfigError, model_help
from ..live.stats import NodeStats, ThrottledLog, error_kind
from ..predictor import PromptError, SamPredictor
from ..live.prompts import PromptState
from ..live.segmenter import StreamSegmenter, StreamWorker
from ..visualize import draw_overlay
from .conversions import (
    ImageOut,
    compressed_msg_to_rgb,
    detections_to_boxes,
    header_key,
    image_msg_to_rgb,
    result_to_detections,
)
from .diagnostics import diagnostic_array
from .params import read_config

NODE_NAME = "mobilesam"
PROFILE_NAME = "fastdds_large_frames.xml"
#: distributions whose Fast DDS (2.x) reads FASTRTPS_DEFAULT_PROFILES_FILE
_FASTDDS2_DISTROS = ("foxy", "galactic", "humble", "iron", "jazzy")


class StartupError(RuntimeError):
    """The node cannot start (bad parameters, missing model): one clear message."""


def _import_vision_msgs():
    try:
        return importlib.import_module("vision_msgs.msg")
    except ImportError:
        return None


def find_profile() -> Path | None:
    """The Fast DDS profile shipped in config/: installed share dir, or the source tree."""
    candidates = []
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("mobilesam_ros")) / "config" / PROFILE_NAME)
    except Exception:  # noqa: BLE001 - not installed through ament (pip, source tree)
        pass
    candidates.append(Path(sys.prefix) / "share" / "mobilesam_ros" / "config" / PROFILE_NAME)
    candidates.append(Path(__file__).resolve().parents[2] / "config" / PROFILE_NAME)
    return next((c for c in candidates if c.is_file()), None)


def configure_fastdds_profile(environ=os.environ) -> str | None:
    """Use config/fastdds_large_frames.xml for this process's Fast DDS participant
    unless the user configured Fast DDS (either profiles variable set), chose
    another RMW, or set MOBILESAM_FASTDDS_PROFILE=0. Must run before rclpy.init().

    The profile enlarges the shared-memory segment so this node's outputs (masks,
    labels, overlays: large images) reach best-effort subscribers on this machine.
    Returns the profile path when it was set.
    """
    if environ.get("MOBILESAM_FASTDDS_PROFILE", "1") == "0":
        return None
    if environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        return None
    if environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return None
    profile = find_profile()
    if profile is None:
        return None
    variable = (
        "FASTRTPS_DEFAULT_PROFILES_FILE"
        if environ.get("ROS_DISTRO", "") in _FASTDDS2_DISTROS
        else "FASTDDS_DEFAULT_PROFILES_FILE"
    )
    environ[variable] = str(profile)
    return str(profile)


def _qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


class SegmentNode(Node):
    """See the module docstring. Raises StartupError when it cannot start."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._logger = self.get_logger()
        self.stats = NodeStats()
        self.errors = ThrottledLog(self._log, self.stats)
        try:
            self.config = cfg = read_config(self)
        except ConfigError as exc:
            raise StartupError("invalid parameters:\n  " + str(exc).replace("\n", "\n  ")) from exc

        # --- the model (start-up work: never per frame) --------------------------------
        t0 = time.perf_counter()
        runtime = self._open_runtime(cfg)
        self.predictor = SamPredictor(runtime, cfg["mask_threshold"], cache_size=cfg["embedding_cache_size"])
        everything = self._open_everything(cfg, self.predictor) if cfg["mode"] == "everything" else None
        self._log("info", f"model {cfg['model']} loaded: {runtime.describe()} ({time.perf_counter() - t0:.1f} s)")
        self.prompts = PromptState(
            cfg["prompt_persistence"], cfg["accumulate_points"], cfg["max_points"], cfg["max_boxes"]
        )
        self.segmenter = StreamSegmenter(
            self.predictor, self.prompts, cfg["mode"], everything, cfg["multimask_single_point"], cfg["min_score"]
        )
        self.slot = FrameSlot()
        self._out = ImageOut(Image)
        self._overlay_last = 0.0
        self._overlay_period = 1.0 / cfg["overlay.max_rate"] if cfg["overlay.max_rate"] > 0 else 0.0

        # --- vision_msgs is optional ------------------------------------------------------
        self._vision = _import_vision_msgs()
        if self._vision is None:
            self._log(
                "warn",
                "vision_msgs is not installed: ~/prompt/boxes and ~/detections are disabled "
                "(install it: sudo apt install ros-$ROS_DISTRO-vision-msgs)",
            )

        # --- outputs --------------------------------------------------------------------------
        out_qos = _qos("reliable", 2)
        self._pub_mask = self.create_publisher(Image, "~/mask", out_qos) if cfg["publish_mask"] else None
        self._pub_labels = self.create_publisher(Image, "~/labels", out_qos) if cfg["publish_labels"] else None
        self._pub_overlay = self.create_publisher(Image, "~/overlay", out_qos) if cfg["overlay.enabled"] else None
        self._pub_detections = None
        if self._vision is not None and cfg["publish_detections"]:
            self._pub_detections = self.create_publisher(self._vision.Detection2DArray, "~/detections", out_qos)
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # --- prompts ---------------------------------------------------------------------------
        prompt_qos = _qos("reliable", 10)
        self.create_subscription(PointStamped, "~/prompt/point", self._on_point, prompt_qos)
        self.create_subscription(Point, "~/prompt/click", self._on_click, prompt_qos)
        self.create_subscription(Empty, "~/prompt/clear", self._on_clear, prompt_qos)
        if self._vision is not None:
            self.create_subscription(self._vision.Detection2DArray, "~/prompt/boxes", self._on_boxes, prompt_qos)

        # --- images ----------------------------------------------------------------------------
        compressed = cfg["transport"] == "compressed"
        self._image_type = CompressedImage if compressed else Image
        self._to_rgb = compressed_msg_to_rgb if compressed else image_msg_to_rgb
        base = self.resolve_topic_name(cfg["image_topic"])
        self.image_topic = base.rstrip("/") + "/compressed" if compressed else base
        self._image_sub = None
        self._image_reliability: str | None = None
        if cfg["qos.reliability"] == "auto":
            # look often until the first publisher shows up, then every 2 s
            self._qos_ticks = 0
            self._qos_timer = self.create_timer(0.2, self._match_publishers)
            self._match_publishers()
        else:
            self._subscribe_images(cfg["qos.reliability"])

        # --- worker and diagnostics --------------------------------------------------------------
        self.worker = StreamWorker(
            self.segmenter, self.slot, self._convert, self._publish_result, self.stats, self.errors,
            publish_empty=cfg["publish_empty"], debug=lambda text: self._logger.debug(text),
        )
        self.worker.start()
        self._hardware_id = runtime.describe()
        self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics)
        outputs = [n for n, p in (("mask", self._pub_mask), ("labels", self._pub_labels),
                                  ("detections", self._pub_detections), ("overlay", self._pub_overlay)) if p]
        self._log(
            "info",
            f"ready: mode {cfg['mode']}, images on {self.image_topic} ({cfg['transport']}, qos "
            f"{cfg['qos.reliability']}), prompts on {self._fqn()}/prompt/*, "
            f"outputs {', '.join(outputs) or 'none'}",
        )

    def _fqn(self) -> str:
        return f"{self.get_namespace().rstrip('/')}/{self.get_name()}"

    # --- start-up helpers ------------------------------------------------------------------------
    def _open_runtime(self, cfg):
        from ..runtime import create_runtime

        model = str(Path(cfg["model"]).expanduser())
        try:
            return create_runtime(model, cfg["backend"], device=cfg["device"], precision=cfg["precision"],
                                  num_threads=cfg["num_threads"])
        except Exception as exc:  # noqa: BLE001 - any loading failure is one clear start-up error
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            hint = "" if "mobilesam-ros" in text else f"; {model_help()}"
            raise StartupError(f"cannot load model '{model}' (backend {cfg['backend']}): {text}{hint}") from exc

    def _open_everything(self, cfg, predictor):
        try:
            from ..everything import EverythingConfig, EverythingSegmenter, ObjectDiscovery
        except ImportError as exc:
            raise StartupError(f"mode everything is unavailable in this build: {exc}") from exc
        try:
            config = EverythingConfig(**cfg.everything_options())
            detector = None
            if cfg["everything.detector"]:
                detector = ObjectDiscovery(
                    str(Path(cfg["everything.detector"]).expanduser()), conf=config.detector_conf,
                    iou=config.detector_iou, max_det=config.max_det, num_threads=cfg["num_threads"],
                )
        except Exception as exc:  # noqa: BLE001
            raise StartupError(f"cannot set up segment-everything: {exc}") from exc
        if config.strategy == "boxes" and detector is None:
            self._log("info", "everything.strategy boxes without a detector: boxes come from ~/prompt/boxes")
        return EverythingSegmenter(predictor, config, detector)

    # --- logging -------------------------------------------------------------------------------------
    def _log(self, level: str, message: str) -> None:
        # rclpy ties a severity to each call site: one call per level
        if level == "debug":
            self._logger.debug(message)
        elif level == "info":
            self._logger.info(message)
        elif level == "error":
            self._logger.error(message)
        else:
            self._logger.warning(message)

    # --- images -------------------------------------------------------------------------------------
    def _subscribe_images(self, reliability: str) -> None:
        if self._image_sub is not None:
            self.destroy_subscription(self._image_sub)
        self._image_sub = self.create_subscription(
            self._image_type, self.image_topic, self._on_image, _qos(reliability, self.config["qos.depth"])
        )
        self._image_reliability = reliability

    def _match_publishers(self) -> None:
        """qos.reliability auto: best effort when any publisher is best effort (the only
        compatible choice), else reliable (large frames from a reliable publisher are
        then repaired instead of lost). Runs every 0.2 s until a publisher appears,
        then every 2 s."""
        self._qos_ticks += 1
        if self._image_sub is not None and self._qos_ticks % 10:
            return
        try:
            infos = self.get_publishers_info_by_topic(self.image_topic)
        except Exception:  # noqa: BLE001 - graph queries can fail during shutdown
            return
        if not infos:
            return
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
        wanted = "best_effort" if best_effort else "reliable"
        if wanted != self._image_reliability:
            self._subscribe_images(wanted)
            note = (
                " (frames over ~0.5 MB reach a best-effort subscriber only when the publisher's Fast DDS "
                "shared-memory segment can hold them: run the camera driver with config/" + PROFILE_NAME + ")"
                if best_effort else ""
            )
            self._log("info", f"{len(infos)} publisher(s) on {self.image_topic}: subscribing {wanted}{note}")

    def _on_image(self, msg) -> None:
        replaced = self.slot.put(msg, key=header_key(msg.header))
        self.stats.frame_received(replaced)

    def _convert(self, msg):
        return self._to_rgb(msg), header_key(msg.header), msg.header

    # --- prompts ---------------------------------------------------------------------------------------
    def _prompt_allowed(self, topic: str) -> bool:
        if self.config["mode"] == "everything":
            self.errors.once(f"ignored:{topic}", f"mode everything: {topic} is ignored (only prompt/boxes is used)",
                             level="warn")
            return False
        return True

    def _on_point(self, msg: PointStamped) -> None:
        self.stats.count("prompts_received")
        if not self._prompt_allowed("prompt/point"):
            return
        p = msg.point
        try:
            if not math.isfinite(p.z):
                raise PromptError(f"z must be finite (>= 0 foreground, < 0 background), got {p.z}")
            self.prompts.add_point(p.x, p.y, foreground=p.z >= 0, stamp=header_key(msg.header))
        except PromptError as exc:
            self.errors.report(error_kind("prompt/point", str(exc)), f"prompt/point skipped: {exc}",
                               counter="prompt_errors")
            return
        self.slot.notify()

    def _on_click(self, msg: Point) -> None:
        self.stats.count("prompts_received")
        if not self._prompt_allowed("prompt/click"):
            return
        try:
            self.prompts.add_point(msg.x, msg.y, foreground=True, stamp=None)
        except PromptError as exc:
            self.errors.report(error_kind("prompt/click", str(exc)), f"prompt/click skipped: {exc}",
                               counter="prompt_errors")
            return
        self.slot.notify()

    def _on_clear(self, _msg: Empty) -> None:
        self.stats.count("prompts_received")
        self.prompts.clear()
        self.slot.notify()

    def _on_boxes(self, msg) -> None:
        self.stats.count("prompts_received")
        try:
            boxes, class_ids, scores = detections_to_boxes(msg)
        except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the node
            self.errors.report(error_kind("prompt/boxes", str(exc)), f"prompt/boxes skipped: {exc}",
                               counter="prompt_errors")
            return
        if len(boxes) == 0:  # a valid clear (a detector that saw nothing): counted, not an error
            self.stats.count("empty_box_lists")
            self.errors.report("prompt/boxes:empty", "prompt/boxes: empty box list: box prompts cleared",
                               counter=None, level="info")
        for problem in self.prompts.set_boxes(boxes, header_key(msg.header), class_ids, scores):
            self.errors.report(error_kind("prompt/boxes", problem), f"prompt/boxes: {problem}", counter="prompt_errors")
        self.slot.notify()

    # --- outputs ----------------------------------------------------------------------------------------
    def _publish_result(self, result) -> None:
        header = result.frame.header
        h, w = result.labels.shape
        if self._pub_mask is not None:
            msg, view = self._out.fill("mask", header, (h, w), np.uint8, "mono8")
            np.greater(result.labels, 0, out=view.view(np.bool_))
            view *= 255
            self._pub_mask.publish(msg)
        if self._pub_labels is not None:
            msg, view = self._out.fill("labels", header, (h, w), np.uint16, "mono16")
            view[...] = result.labels
            self._pub_labels.publish(msg)
        if self._pub_detections is not None:
            self._pub_detections.publish(result_to_detections(result, header, self._vision))
        if self._pub_overlay is not None:
            self._publish_overlay(result, header)
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        if stamp_ns:
            self.stats.stage("stamp_age", (self.get_clock().now().nanoseconds - stamp_ns) / 1e6)

    def _publish_overlay(self, result, header) -> None:
        now = time.monotonic()
        if self._overlay_period and now - self._overlay_last < self._overlay_period:
            return
        if self._pub_overlay.get_subscription_count() == 0:
            return
        self._overlay_last = now
        t0 = time.perf_counter()
        image = draw_overlay(
            result.frame.image, result.masks, result.scores, result.prompt_points, result.prompt_labels,
            result.prompt_boxes, alpha=self.config["overlay.alpha"],
        )
        msg, view = self._out.fill("overlay", header, image.shape, np.uint8, "rgb8")
        view[...] = image
        self._pub_overlay.publish(msg)
        self.stats.stage("overlay", (time.perf_counter() - t0) * 1e3)

    def _publish_diagnostics(self) -> None:
        snapshot = self.stats.snapshot()
        counts = self.prompts.counts()
        extra = {
            "image_topic": self.image_topic,
            "image_reliability": self._image_reliability or "waiting for a publisher",
            "mode": self.config["mode"],
            "active_points": counts["points"],
            "active_boxes": counts["boxes"],
        }
        name = f"{self._fqn().lstrip('/')}: segmentation"
        self._pub_diagnostics.publish(
            diagnostic_array(snapshot, self.get_clock().now().to_msg(), name, self._hardware_id, extra)
        )

    def destroy_node(self) -> None:
        worker = getattr(self, "worker", None)
        stopped = worker.stop() if worker is not None else True
        runtime = getattr(getattr(self, "predictor", None), "runtime", None)
        super().destroy_node()
        # an engine still in use by a worker stuck in a long encode is left to the
        # process exit rather than freed under it
        if runtime is not None and stopped:
            runtime.close()


def main(args: list[str] | None = None) -> int:
    profile = configure_fastdds_profile()
    rclpy.init(args=args)
    logger = get_logger(NODE_NAME)
    if profile:
        logger.debug(f"Fast DDS profile: {profile}")
    node = None
    try:
        node = SegmentNode()
        rclpy.spin(node)
    except StartupError as exc:
        logger.fatal(f"cannot start: {exc}")
        return 1
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001
        if type(exc).__name__ != "ExternalShutdownException":
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
