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

import signal
import sys
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from ..live.config import ConfigError, NodeConfig
from ..live.scheduler import CameraScheduler
from ..live.stats import NodeStats, ThrottledLog
from ..variants import model_name
from .advice import vision_msgs_advice
from .camera import Camera, activate_camera, configure_camera
from .control import NodeControl
from .diagnostics import cameras_diagnostics
from .entities import EntityScope
from .fastdds import configure_fastdds_profile
from .params import declare_parameters, read_config
from .startup import StartupError, import_vision_msgs, open_runtime, warm_up

NODE_NAME = "mobilesam"

__all__ = ["NODE_NAME", "SegmentNode", "StartupError", "configure_fastdds_profile", "main", "run"]


class SegmentNode(Node):
    """See the module docstring. Raises StartupError when it cannot start.

    Start-up is four steps that :class:`~.lifecycle_node.SegmentLifecycleNode` runs as
    its transitions (``managed=True``); the plain node runs the first two at once:
    :meth:`configure` (parameters, model loaded and warmed, publishers),
    :meth:`activate` (subscriptions, worker), :meth:`deactivate`, :meth:`cleanup`.

    The stages are parts: each camera (ros/camera.py) has its image input
    (ros/images.py), prompt topics (ros/prompts.py), 2D outputs (ros/outputs.py) and
    3D outputs (ros/depth3d.py); parameters and services are ros/control.py;
    start-up work is ros/startup.py.
    """

    def __init__(self, node_name: str = NODE_NAME, *, managed: bool = False, startup_log: tuple[str, str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._logger = self.get_logger()
        if startup_log is not None:  # (level, line) from run(): under this node's own logger and level
            self.log(*startup_log)
        self.stats = NodeStats()
        self.errors = ThrottledLog(self.log, self.stats)
        self.config: NodeConfig | None = None  # set by configure
        self.runtime = None  # the model, shared by every camera
        self.cameras: list[Camera] = []  # set by configure
        self.worker: CameraScheduler | None = None  # set by activate
        self.enabled = True  # ~/enable: false pauses segmentation, the model stays loaded
        self._configured = EntityScope(self)  # what configure created, destroyed by cleanup
        self._active = EntityScope(self)  # what activate created, destroyed by deactivate
        declare_parameters(self)
        # after declaring: rclpy runs the parameter callback for declarations too
        NodeControl(self)
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
        t0 = time.perf_counter()  # the model: start-up work, never per frame; one for every camera
        self.runtime = runtime = self._open_runtime(cfg)
        warm_up(runtime, cfg, self.log)
        self.log("info", f"model {cfg['model']} loaded: {model_name(runtime.variant, runtime.prompt_decoder)}, "
                         f"{runtime.describe()} ({time.perf_counter() - t0:.1f} s)")
        self._hardware_id = runtime.describe()
        self._vision = import_vision_msgs()  # optional
        if self._vision is None:
            self.log(
                "warn",
                "vision_msgs is not installed: ~/prompt/boxes and ~/detections are disabled "
                f"({vision_msgs_advice()})",
            )
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.cameras = [configure_camera(self, index, name, cfg, runtime, self._vision)
                        for index, name in enumerate(cfg["cameras"] or ("",))]

    def activate(self) -> None:
        """Subscribe (prompts, images, depth) and start the worker."""
        cfg = self.config
        condition = threading.Condition()  # one worker waits for every camera's slot
        with self._active:
            streams = [activate_camera(self, cam, cfg, self._vision, condition) for cam in self.cameras]
            self.worker = CameraScheduler(streams, condition, self.errors)
            self.worker.pause(not self.enabled)
            self.worker.start()
            self.create_timer(cfg["diagnostics_period"], self._publish_diagnostics)
        self.log("info", self._ready_line(cfg))

    def _ready_line(self, cfg: NodeConfig) -> str:
        cam = self.cameras[0]
        outputs = cam.outputs.names()
        if cam.depth3d is not None:
            outputs.append(cam.depth3d.describe())
        images = ", ".join(c.image_topic for c in self.cameras)
        prompts = ", ".join(f"{self._fqn()}/{c.output('prompt/*')[2:]}" for c in self.cameras)
        cameras = f"{len(self.cameras)} cameras ({', '.join(c.name for c in self.cameras)}), " if cam.name else ""
        return (
            f"ready: {cameras}mode {cfg['mode']}, images on {images} ({cfg['transport']}, qos "
            f"{cfg['qos.reliability']}), prompts on {prompts}, "
            f"outputs {', '.join(outputs) or 'none'}" + ("" if self.enabled else "; paused (~/enable false)")
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
            cam.images = cam.depth3d = None
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
        self.log("warn", f"the worker is still busy with a frame after {self.config['deactivate_timeout']} s "
                          "(deactivate_timeout): it stops after that frame; the model is not released under it")
        self.worker.stop(timeout=0.0)
        self._active.destroy()
        self._configured.destroy()
        return False

    def _fqn(self) -> str:
        return f"{self.get_namespace().rstrip('/')}/{self.get_name()}"

    def _open_runtime(self, cfg: NodeConfig):
        """The model (tests replace this with a stand-in runtime)."""
        return open_runtime(cfg)

    def log(self, level: str, message: str) -> None:
        """Log under the node's logger; the parts log through here."""
        # rclpy ties a severity to each call site: one call per level
        if level == "debug":
            self._logger.debug(message)
        elif level == "info":
            self._logger.info(message)
        elif level == "error":
            self._logger.error(message)
        else:
            self._logger.warning(message)

    def _publish_diagnostics(self) -> None:
        self._pub_diagnostics.publish(cameras_diagnostics(
            self.cameras, self.get_clock().now().to_msg(), self._fqn().lstrip("/"), self._hardware_id,
            self.config["mode"], self.enabled))

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
