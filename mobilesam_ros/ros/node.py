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
~/prompt/boxes             vision_msgs/Detection2DArray        detector boxes (stable ids)
~/prompt/add               geometry_msgs/PointStamped          add one object (fg point)
~/prompt/object            vision_msgs/Detection2D             add one object, or re-prompt
                                                               track ``id`` (box; 0x0: point)
~/prompt/remove            std_msgs/UInt16                     remove the object with this id
~/prompt/clear             std_msgs/Empty                      forget all prompts and objects
~/mask                     sensor_msgs/Image mono8             255 inside any object
~/labels                   sensor_msgs/Image mono16            track ids, 0 background
~/detections               vision_msgs/Detection2DArray        id = track id, bbox, score
~/overlay                  sensor_msgs/Image rgb8              masks drawn over the frame
depth (param depth_topic)  sensor_msgs/Image 16UC1 / 32FC1     aligned depth (3D; optional)
camera_info (param)        sensor_msgs/CameraInfo              colour K, optical frame (3D)
~/detections_3d            vision_msgs/Detection3DArray        3D box, centroid; id = 2D id
~/points                   sensor_msgs/PointCloud2             object points: xyz, rgb, label
~/markers                  visualization_msgs/MarkerArray      3D box + "id class distance"
/diagnostics               diagnostic_msgs/DiagnosticArray     rates, latency, timings, errors
~/enable (service)         std_srvs/SetBool                    false: pause (model kept)
~/clear (service)          std_srvs/Trigger                    as prompt/clear, with a reply
=========================  ==================================  ===========================

With ``cameras`` set (e.g. [front, rear]) one model serves several cameras: camera
``front`` reads ``front/image`` and uses ``~/front/prompt/...``, ``~/front/mask``, ...
(ros/camera.py; the worker serves them round robin: live/scheduler.py). Run-time
parameters (``ros2 param set``) are applied between frames: live/reconfigure.py.
segment_lifecycle_node (ros/lifecycle_node.py) is this node as a managed node.

All prompt coordinates are pixels of the incoming frame (x right, y down, origin at
the image's top-left corner). Outputs carry the segmented frame's header. With
``tracking.enabled`` (default) every object keeps its track id (>= 1, never reused)
from frame to frame: see mobilesam_ros.live.tracking.
"""

from __future__ import annotations

import importlib
import math
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Empty, UInt16
from std_srvs.srv import SetBool, Trigger

from ..live.config import ConfigError, NodeConfig, model_help
from ..live.frames import FrameSlot
from ..live.prompts import PromptState
from ..live.reconfigure import apply_to_segmenter, changed_names, check_update, needs_everything
from ..live.scheduler import CameraScheduler
from ..live.segmenter import StreamSegmenter, StreamWorker
from ..live.stats import NodeStats, ThrottledLog, error_kind
from ..live.tracking import TrackingConfig
from ..predictor import PromptError, SamPredictor
from ..variants import model_name
from ..visualize import draw_overlay
from .advice import vision_msgs_advice
from .camera import Camera
from .conversions import (
    ImageOut,
    compressed_msg_to_rgb,
    detection_to_object,
    detections_to_boxes,
    header_key,
    image_msg_to_rgb,
    result_to_detections,
)
from .diagnostics import diagnostic_array
from .entities import EntityScope
from .fastdds import PROFILE_NAME, configure_fastdds_profile
from .params import current_values, declare_parameters, read_config

NODE_NAME = "mobilesam"


class StartupError(RuntimeError):
    """The node cannot start (bad parameters, missing model): one clear message."""


def _import_vision_msgs():
    try:
        return importlib.import_module("vision_msgs.msg")
    except ImportError:
        return None


def _qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


class SegmentNode(Node):
    """See the module docstring. Raises StartupError when it cannot start.

    Start-up is four steps that :class:`~.lifecycle_node.SegmentLifecycleNode` runs as
    its transitions (``managed=True``); the plain node runs the first two at once:
    :meth:`configure` (parameters, model loaded and warmed, publishers),
    :meth:`activate` (subscriptions, worker), :meth:`deactivate`, :meth:`cleanup`.
    """

    def __init__(self, node_name: str = NODE_NAME, *, managed: bool = False, startup_log: tuple[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._logger = self.get_logger()
        if startup_log is not None:  # (level, line) from run(): under this node's own logger and level
            self._log(*startup_log)
        self.stats = NodeStats()
        self.errors = ThrottledLog(self._log, self.stats)
        self.config: NodeConfig | None = None  # set by configure
        self.runtime = None  # the model, shared by every camera
        self.cameras: list[Camera] = []  # set by configure
        self.worker: CameraScheduler | None = None  # set by activate
        self.enabled = True  # ~/enable: false pauses segmentation, the model stays loaded
        self._configured = EntityScope(self)  # what configure created, destroyed by cleanup
        self._active = EntityScope(self)  # what activate created, destroyed by deactivate
        declare_parameters(self)
        # after declaring: rclpy runs these callbacks for declarations too
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.create_service(SetBool, "~/enable", self._on_enable)
        self.create_service(Trigger, "~/clear", self._on_clear_service)
        if not managed:
            self.configure()
            self.activate()

    # --- lifecycle steps ---------------------------------------------------------------------------
    def configure(self) -> None:
        """Validate the parameters, load and warm the model, create the publishers.
        Raises StartupError (nothing is left half set up)."""
        try:
            cfg = read_config(self)
        except ConfigError as exc:
            raise StartupError("invalid parameters:\n  " + str(exc).replace("\n", "\n  ")) from exc
        try:
            with self._configured:
                self._configure(cfg)
        except BaseException:
            self.cleanup()
            raise
        self.config = cfg

    def _configure(self, cfg: NodeConfig) -> None:
        # --- the model (start-up work: never per frame): one for every camera ---------------
        t0 = time.perf_counter()
        self.runtime = runtime = self._open_runtime(cfg)
        self._warm_up(runtime, cfg)
        self._log("info", f"model {cfg['model']} loaded: {model_name(runtime.variant, runtime.prompt_decoder)}, "
                          f"{runtime.describe()} ({time.perf_counter() - t0:.1f} s)")
        self._hardware_id = runtime.describe()
        self._overlay_period = 1.0 / cfg["overlay.max_rate"] if cfg["overlay.max_rate"] > 0 else 0.0

        # --- vision_msgs is optional ------------------------------------------------------
        self._vision = _import_vision_msgs()
        if self._vision is None:
            self._log(
                "warn",
                "vision_msgs is not installed: ~/prompt/boxes and ~/detections are disabled "
                f"({vision_msgs_advice()})",
            )
        compressed = cfg["transport"] == "compressed"
        self._image_type = CompressedImage if compressed else Image
        self._to_rgb = compressed_msg_to_rgb if compressed else image_msg_to_rgb
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # --- the cameras: own prompts, tracks, embeddings, topics ------------------------------
        names = cfg["cameras"] or ("",)
        self.cameras = []
        for index, name in enumerate(names):
            if name:  # each camera counts and logs on its own
                stats = NodeStats()
                errors = ThrottledLog(lambda level, text, name=name: self._log(level, f"[{name}] {text}"), stats)
            else:
                stats, errors = self.stats, self.errors
            cam = Camera(index, name, stats, errors)
            predictor = SamPredictor(runtime, cfg["mask_threshold"], cache_size=cfg["embedding_cache_size"])
            everything = self._open_everything(cfg, predictor) if cfg["mode"] == "everything" else None
            cam.prompts = PromptState(
                cfg["prompt_persistence"], cfg["accumulate_points"], cfg["max_points"], cfg["max_boxes"]
            )
            cam.segmenter = StreamSegmenter(
                predictor, cam.prompts, cfg["mode"], everything, cfg["multimask_single_point"], cfg["min_score"],
                TrackingConfig.from_config(cfg),
            )
            base = self.resolve_topic_name(cam.input(cfg["image_topic"]))
            cam.image_topic = base.rstrip("/") + "/compressed" if compressed else base

            # --- outputs ----------------------------------------------------------------------
            out_qos = _qos("reliable", 2)
            cam.out = ImageOut(Image)
            cam.pub_mask = self.create_publisher(Image, cam.output("mask"), out_qos) if cfg["publish_mask"] else None
            if cfg["publish_labels"]:
                cam.pub_labels = self.create_publisher(Image, cam.output("labels"), out_qos)
            if cfg["overlay.enabled"]:
                cam.pub_overlay = self.create_publisher(Image, cam.output("overlay"), out_qos)
            if self._vision is not None and cfg["publish_detections"]:
                cam.pub_detections = self.create_publisher(self._vision.Detection2DArray, cam.output("detections"),
                                                           out_qos)
            self.cameras.append(cam)

    def _warm_up(self, runtime, cfg: NodeConfig) -> None:
        """One encode of a blank image at configure: engines that build or allocate on
        their first call (TensorRT, CUDA) do it here, not on the first camera frame."""
        t0 = time.perf_counter()
        try:
            runtime.encode(np.zeros((1, 3, 1024, 1024), np.float32))
        except Exception as exc:  # a model that loads but cannot run is a start-up error
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StartupError(f"model '{cfg['model']}' loaded but its first encode failed: {text}") from exc
        self._log("debug", f"warm-up encode {time.perf_counter() - t0:.2f} s")

    def activate(self) -> None:
        """Subscribe (prompts, images, depth) and start the worker."""
        cfg = self.config
        condition = threading.Condition()  # one worker waits for every camera's slot
        streams = []
        with self._active:
            for cam in self.cameras:
                # 3D from an aligned depth camera (depth_topic set): ros/objects3d.py
                if cfg["depth_topic"].strip():
                    from .objects3d import Depth3D

                    topics = {n: cam.input(cfg[n]) for n in ("depth_topic", "camera_info_topic")}
                    cam.depth3d = Depth3D(self, NodeConfig({**cfg.as_dict(), **topics}), cam.stats, cam.errors,
                                          self._vision, _qos, outputs=cam.output(""))

                # --- prompts -------------------------------------------------------------------
                prompt_qos = _qos("reliable", 10)
                for msg_type, topic, handler in (
                    (PointStamped, "prompt/point", self._on_point), (Point, "prompt/click", self._on_click),
                    (Empty, "prompt/clear", self._on_clear), (PointStamped, "prompt/add", self._on_add),
                    (UInt16, "prompt/remove", self._on_remove),
                ) + ((
                    (self._vision.Detection2DArray, "prompt/boxes", self._on_boxes),
                    (self._vision.Detection2D, "prompt/object", self._on_object),
                ) if self._vision is not None else ()):
                    self.create_subscription(msg_type, cam.output(topic), partial(handler, cam), prompt_qos)

                # --- a new worker per activation (prompts and tracks carry over) -----------------
                cam.slot = FrameSlot(condition)
                streams.append(StreamWorker(
                    cam.segmenter, cam.slot, partial(self._convert, cam), partial(self._publish_result, cam),
                    cam.stats, cam.errors, publish_empty=cfg["publish_empty"],
                    debug=lambda text, label=f"[{cam.name}] " if cam.name else "": self._logger.debug(label + text),
                ))

                # --- images ------------------------------------------------------------------------
                cam.image_sub, cam.image_reliability = None, None
                if cfg["qos.reliability"] == "auto":
                    # look often until the first publisher shows up, then every 2 s
                    cam.qos_ticks = 0
                    self.create_timer(0.2, partial(self._match_publishers, cam))
                    self._match_publishers(cam)
                else:
                    self._subscribe_images(cam, cfg["qos.reliability"])
            self.worker = CameraScheduler(streams, condition, self.errors)
            self.worker.pause(not self.enabled)
            self.worker.start()
            self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics)

        cam = self.cameras[0]
        outputs = [n for n, p in (("mask", cam.pub_mask), ("labels", cam.pub_labels),
                                  ("detections", cam.pub_detections), ("overlay", cam.pub_overlay)) if p]
        if cam.depth3d is not None:
            outputs.append(cam.depth3d.describe())
        images = ", ".join(c.image_topic for c in self.cameras)
        prompts = ", ".join(f"{self._fqn()}/{c.output('prompt/*')[2:]}" for c in self.cameras)
        cameras = f"{len(self.cameras)} cameras ({', '.join(c.name for c in self.cameras)}), " if cam.name else ""
        self._log(
            "info",
            f"ready: {cameras}mode {cfg['mode']}, images on {images} ({cfg['transport']}, qos "
            f"{cfg['qos.reliability']}), prompts on {prompts}, "
            f"outputs {', '.join(outputs) or 'none'}" + ("" if self.enabled else "; paused (~/enable false)"),
        )

    def deactivate(self) -> bool:
        """Stop the worker and every subscription; the model, prompts and tracks stay.

        The frame in progress may finish first, within ``deactivate_timeout``: a frame
        that takes longer makes this return False with nothing changed (the node stays
        active and keeps serving), so the model is never released under a running call."""
        if self.worker is not None:
            timeout = self.config["deactivate_timeout"] if self.config is not None else 0.0
            if not self.worker.hold(timeout):
                return False
            self.worker.stop()  # held and idle: the thread ends at once
            self.worker = None
        self._active.destroy()
        for cam in self.cameras:
            cam.image_sub = cam.depth3d = None
        return True

    def cleanup(self) -> None:
        """Release the model and the publishers (back to before configure). The model is
        closed only once no worker can call it (after a successful deactivate)."""
        if self.worker is not None:
            raise RuntimeError("cleanup while the worker runs: deactivate first")
        self._configured.destroy()
        runtime, self.runtime = self.runtime, None
        self.cameras = []
        self.config = None
        if runtime is not None:
            runtime.close()

    def release(self) -> bool:
        """Deactivate and clean up, for shutdown, a failed transition, ``destroy_node``
        and Ctrl-C. When the frame in progress outlasts ``deactivate_timeout``, the worker
        is told to stop after it and the model is left open (a process exit frees it):
        False then."""
        if self.deactivate():
            self.cleanup()
            return True
        self._log("warn", f"the worker is still busy with a frame after {self.config['deactivate_timeout']} s "
                          "(deactivate_timeout): it stops after that frame; the model is not released under it")
        self.worker.stop(timeout=0.0)
        self._active.destroy()
        self._configured.destroy()
        return False

    def _fqn(self) -> str:
        return f"{self.get_namespace().rstrip('/')}/{self.get_name()}"

    # --- start-up helpers ------------------------------------------------------------------------
    def _open_runtime(self, cfg):
        from ..runtime import create_runtime

        model = str(Path(cfg["model"]).expanduser())
        try:
            decoder = cfg["decoder_checkpoint"].strip()
            return create_runtime(model, cfg["backend"], device=cfg["device"], precision=cfg["precision"],
                                  num_threads=cfg["num_threads"],
                                  variant=None if cfg["variant"] == "auto" else cfg["variant"],
                                  decoder_checkpoint=str(Path(decoder).expanduser()) if decoder else None)
        except Exception as exc:  # any loading failure is one clear start-up error
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
        except Exception as exc:
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
    def _subscribe_images(self, cam: Camera, reliability: str) -> None:
        if cam.image_sub is not None:
            self.destroy_subscription(cam.image_sub)
        cam.image_sub = self.create_subscription(
            self._image_type, cam.image_topic, partial(self._on_image, cam), _qos(reliability, self.config["qos.depth"])
        )
        cam.image_reliability = reliability

    def _match_publishers(self, cam: Camera) -> None:
        """qos.reliability auto: best effort when any publisher is best effort (the only
        compatible choice), else reliable (large frames from a reliable publisher are
        then repaired instead of lost). Runs every 0.2 s until a publisher appears,
        then every 2 s."""
        cam.qos_ticks += 1
        if cam.image_sub is not None and cam.qos_ticks % 10:
            return
        try:
            infos = self.get_publishers_info_by_topic(cam.image_topic)
        except Exception:  # noqa: BLE001 - graph queries can fail during shutdown
            return
        if not infos:
            return
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
        wanted = "best_effort" if best_effort else "reliable"
        if wanted != cam.image_reliability:
            self._subscribe_images(cam, wanted)
            note = (
                " (frames over ~0.5 MB reach a best-effort subscriber only when the publisher's Fast DDS "
                "shared-memory segment can hold them: run the camera driver with config/" + PROFILE_NAME + ")"
                if best_effort else ""
            )
            self._log("info", f"{len(infos)} publisher(s) on {cam.image_topic}: subscribing {wanted}{note}")

    def _on_image(self, cam: Camera, msg) -> None:
        if not self.enabled:  # ~/enable false: nothing is decoded
            cam.stats.count("frames_while_paused")
            return
        replaced = cam.slot.put(msg, key=header_key(msg.header))
        cam.stats.frame_received(replaced)
        if cam.depth3d is not None:
            cam.depth3d.colour_arrived(msg.header)

    def _convert(self, cam: Camera, msg):
        if cam.depth3d is not None:
            cam.depth3d.frame_taken(msg.header)
        return self._to_rgb(msg), header_key(msg.header), msg.header

    # --- prompts ---------------------------------------------------------------------------------------
    def _prompt_allowed(self, cam: Camera, topic: str) -> bool:
        if self.config["mode"] == "everything":
            cam.errors.once(f"ignored:{topic}", f"mode everything: {topic} is ignored (only prompt/boxes is used)",
                             level="warn")
            return False
        return True

    def _on_point(self, cam: Camera, msg: PointStamped) -> None:
        cam.stats.count("prompts_received")
        if not self._prompt_allowed(cam, "prompt/point"):
            return
        p = msg.point
        try:
            if not math.isfinite(p.z):
                raise PromptError(f"z must be finite (>= 0 foreground, < 0 background), got {p.z}")
            cam.prompts.add_point(p.x, p.y, foreground=p.z >= 0, stamp=header_key(msg.header))
        except PromptError as exc:
            cam.errors.report(error_kind("prompt/point", str(exc)), f"prompt/point skipped: {exc}",
                               counter="prompt_errors")
            return
        cam.slot.notify()

    def _on_click(self, cam: Camera, msg: Point) -> None:
        cam.stats.count("prompts_received")
        if not self._prompt_allowed(cam, "prompt/click"):
            return
        try:
            cam.prompts.add_point(msg.x, msg.y, foreground=True, stamp=None)
        except PromptError as exc:
            cam.errors.report(error_kind("prompt/click", str(exc)), f"prompt/click skipped: {exc}",
                               counter="prompt_errors")
            return
        cam.slot.notify()

    def _on_clear(self, cam: Camera, _msg: Empty) -> None:
        cam.stats.count("prompts_received")
        cam.prompts.clear()
        cam.slot.notify()

    def _on_add(self, cam: Camera, msg: PointStamped) -> None:
        """A new object from one foreground point; the other objects are left alone."""
        cam.stats.count("prompts_received")
        if not self._prompt_allowed(cam, "prompt/add"):
            return
        try:
            cam.prompts.add_object(points=[[msg.point.x, msg.point.y]], stamp=header_key(msg.header))
        except PromptError as exc:
            cam.errors.report(error_kind("prompt/add", str(exc)), f"prompt/add skipped: {exc}",
                               counter="prompt_errors")
            return
        cam.slot.notify()

    def _on_object(self, cam: Camera, msg) -> None:
        """Add one object (Detection2D ``id`` empty) or re-prompt track ``id``; a box, or a
        point where the box has zero size."""
        cam.stats.count("prompts_received")
        if not self._prompt_allowed(cam, "prompt/object"):
            return
        try:
            point, box, target, class_id = detection_to_object(msg)
            if target and cam.segmenter.tracker is None:
                raise PromptError("a track id needs tracking.enabled")
            cam.prompts.add_object(points=point, box=box, stamp=header_key(msg.header), target_id=target,
                                    class_id=class_id)
        except (PromptError, ValueError, AttributeError, TypeError) as exc:
            cam.errors.report(error_kind("prompt/object", str(exc)), f"prompt/object skipped: {exc}",
                               counter="prompt_errors")
            return
        cam.slot.notify()

    def _on_remove(self, cam: Camera, msg: UInt16) -> None:
        cam.stats.count("prompts_received")
        if cam.segmenter.tracker is None:
            cam.errors.once("remove:untracked", "prompt/remove needs tracking.enabled: ignored", level="warn")
            return
        cam.prompts.remove(int(msg.data))
        cam.slot.notify()

    def _on_boxes(self, cam: Camera, msg) -> None:
        cam.stats.count("prompts_received")
        try:
            boxes, class_ids, scores = detections_to_boxes(msg)
        except Exception as exc:  # noqa: BLE001 - a malformed message must not stop the node
            cam.errors.report(error_kind("prompt/boxes", str(exc)), f"prompt/boxes skipped: {exc}",
                               counter="prompt_errors")
            return
        if len(boxes) == 0:  # a valid clear (a detector that saw nothing): counted, not an error
            cam.stats.count("empty_box_lists")
            cam.errors.report("prompt/boxes:empty", "prompt/boxes: empty box list: box prompts cleared",
                               counter=None, level="info")
        for problem in cam.prompts.set_boxes(boxes, header_key(msg.header), class_ids, scores):
            cam.errors.report(error_kind("prompt/boxes", problem), f"prompt/boxes: {problem}", counter="prompt_errors")
        cam.slot.notify()

    # --- outputs ----------------------------------------------------------------------------------------
    def _publish_result(self, cam: Camera, result) -> None:
        header = result.frame.header
        h, w = result.labels.shape
        if cam.pub_mask is not None:
            msg, view = cam.out.fill("mask", header, (h, w), np.uint8, "mono8")
            np.greater(result.labels, 0, out=view.view(np.bool_))
            view *= 255
            cam.pub_mask.publish(msg)
        if cam.pub_labels is not None:
            msg, view = cam.out.fill("labels", header, (h, w), np.uint16, "mono16")
            view[...] = result.labels
            cam.pub_labels.publish(msg)
        if cam.pub_detections is not None:
            cam.pub_detections.publish(result_to_detections(result, header, self._vision))
        if cam.pub_overlay is not None:
            self._publish_overlay(cam, result, header)
        stamp_ns = header.stamp.sec * 1_000_000_000 + header.stamp.nanosec
        if stamp_ns:
            cam.stats.stage("stamp_age", (self.get_clock().now().nanoseconds - stamp_ns) / 1e6)
        if cam.depth3d is not None:  # after the 2D outputs: it may wait depth.wait for a late depth frame
            cam.depth3d.publish(result, header)

    def _publish_overlay(self, cam: Camera, result, header) -> None:
        now = time.monotonic()
        if self._overlay_period and now - cam.overlay_last < self._overlay_period:
            return
        if cam.pub_overlay.get_subscription_count() == 0:
            return
        cam.overlay_last = now
        t0 = time.perf_counter()
        image = draw_overlay(
            result.frame.image, result.masks, result.scores, result.prompt_points, result.prompt_labels,
            result.prompt_boxes, alpha=self.config["overlay.alpha"], ids=result.track_ids,
        )
        msg, view = cam.out.fill("overlay", header, image.shape, np.uint8, "rgb8")
        view[...] = image
        cam.pub_overlay.publish(msg)
        cam.stats.stage("overlay", (time.perf_counter() - t0) * 1e3)

    def _publish_diagnostics(self) -> None:
        stamp = self.get_clock().now().to_msg()
        out = DiagnosticArray()
        out.header.stamp = stamp
        for cam in self.cameras:  # one status per camera
            snapshot = cam.stats.snapshot()
            counts = cam.prompts.counts()
            extra = {
                "image_topic": cam.image_topic,
                "image_reliability": cam.image_reliability or "waiting for a publisher",
                "mode": self.config["mode"],
                "enabled": self.enabled,
                "active_points": counts["points"],
                "active_boxes": counts["boxes"],
            }
            tracker = cam.segmenter.tracker
            if tracker is not None:
                extra.update(tracker.counts())  # read from another thread: plain ints, a snapshot is good enough
            if cam.depth3d is not None:
                extra.update(cam.depth3d.diagnostics())
            name = f"{self._fqn().lstrip('/')}: segmentation" + (f" {cam.name}" if cam.name else "")
            out.status += diagnostic_array(snapshot, stamp, name, self._hardware_id, extra).status
        self._pub_diagnostics.publish(out)

    # --- run-time parameters and services -----------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        """``ros2 param set``: run-time parameters are validated by the start-up table and
        applied between frames; start-up parameters are refused while configured."""
        changes = {p.name: p.value for p in params}
        try:
            if self.config is None:  # lifecycle node before configure: checked as a whole at configure
                check_update(NodeConfig(current_values(self)), changes, running=False)
                return SetParametersResult(successful=True)
            new = check_update(self.config, changes)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        changed = changed_names(self.config, new)
        if not changed:
            return SetParametersResult(successful=True)
        everything = {}
        for cam in self.cameras:
            if needs_everything(cam.segmenter, new, changed):
                try:  # built here, so that a detector that does not load refuses the change
                    everything[cam.index] = self._open_everything(new, cam.segmenter.predictor)
                except StartupError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        self.config = new
        self._log("info", "parameters changed: " + ", ".join(f"{n}={new[n]}" for n in sorted(changed)))
        apply = partial(self._apply_parameters, new, changed, everything)
        if self.worker is not None:
            self.worker.call_soon(apply)  # between two frames, on the worker thread
        else:
            apply()
        return SetParametersResult(successful=True)

    def _apply_parameters(self, cfg: NodeConfig, changed: set[str], everything: dict) -> None:
        for cam in self.cameras:
            apply_to_segmenter(cam.segmenter, cfg, changed, everything.get(cam.index))
        if "publish_empty" in changed and self.worker is not None:
            for stream in self.worker.workers:
                stream.publish_empty = cfg["publish_empty"]
        if "overlay.max_rate" in changed:
            self._overlay_period = 1.0 / cfg["overlay.max_rate"] if cfg["overlay.max_rate"] > 0 else 0.0
        if any(n.startswith("depth.") for n in changed):
            from .objects3d import depth_options

            for depth3d in (cam.depth3d for cam in self.cameras if cam.depth3d is not None):
                depth3d.options = depth_options(cfg)
                depth3d.depth_scale, depth3d.wait = cfg["depth.scale"], cfg["depth.wait"]

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """~/enable: false pauses segmentation (frames are dropped, nothing is decoded,
        the model stays loaded); true resumes."""
        self.enabled = bool(request.data)
        if self.worker is not None:
            self.worker.pause(not self.enabled)
        response.success = True
        response.message = ("segmentation resumed" if self.enabled
                            else "segmentation paused: frames are not segmented, the model stays loaded")
        if self.worker is None:
            response.message += " (takes effect when the node is active)"
        self._log("info", response.message)
        return response

    def _on_clear_service(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """~/clear: what ~/prompt/clear does (for every camera), with a reply."""
        if not self.cameras:
            response.success, response.message = False, "not configured: there are no prompts"
            return response
        points = boxes = 0
        for cam in self.cameras:
            counts = cam.prompts.counts()
            points, boxes = points + counts["points"], boxes + counts["boxes"]
            cam.prompts.clear()
            if self.worker is not None:
                cam.slot.notify()
        response.success = True
        response.message = f"cleared {points} point(s), {boxes} box(es) and every tracked object"
        return response

    def destroy_node(self) -> None:
        self.release()
        super().destroy_node()


def _stop_on_signal(_signum, _frame) -> None:
    raise KeyboardInterrupt  # SIGINT (Ctrl-C, launch) and SIGTERM (systemd, docker stop) stop alike


def _spin(node: Node) -> None:
    """rclpy.spin with a bounded wait, so that a signal is handled within 0.25 s."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.25)
    finally:
        executor.shutdown(timeout_sec=0)


def main(args: list[str] | None = None) -> int:
    return run(SegmentNode, args)


def run(node_class: type[SegmentNode], args: list[str] | None = None) -> int:
    """Run ``node_class`` (segment_node, segment_lifecycle_node) until Ctrl-C / SIGTERM."""
    profile = configure_fastdds_profile()
    # rclpy's own signal handlers would shut the context down at once, while the worker
    # thread may be about to publish a result ("publisher's context is invalid"): this
    # process handles SIGINT/SIGTERM itself and stops the worker before the context.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # both set explicitly: a process started in the background by a non-interactive shell
    # inherits SIGINT ignored, and Python then installs no Ctrl-C handler of its own, so
    # the node would never stop on the SIGINT that launch and our tests send
    signal.signal(signal.SIGINT, _stop_on_signal)
    signal.signal(signal.SIGTERM, _stop_on_signal)
    logger = get_logger(NODE_NAME)
    node = None
    try:
        # the profile line is logged by the node (its name, namespace and log level)
        node = node_class(startup_log=("warn" if profile.warning else "info", profile.message))
        _spin(node)
    except StartupError as exc:
        logger.fatal(f"cannot start: {exc}")
        return 1
    except KeyboardInterrupt:
        pass
    except Exception as exc:
        if type(exc).__name__ != "ExternalShutdownException":
            raise
    finally:
        if node is not None:
            node.destroy_node()  # stops the worker first (waits up to its timeout)
            worker = getattr(node, "worker", None)
            if worker is not None and not worker.stop(timeout=60.0):
                logger.warning("the worker is still busy after 60 s: exiting anyway")
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
