"""One camera of the segment node: its topics, prompts, segmenter, frame slot, inputs,
outputs and statistics. All cameras share the node's model (one runtime).

With the ``cameras`` parameter empty the node has one camera named "" whose topics
are exactly the single-camera ones (``image``, ``~/mask``, ``~/prompt/point``, ...);
camera ``front`` reads ``front/<image_topic>`` and uses ``~/front/mask``,
``~/front/prompt/point``, ... (relative names: remapping works as for one camera).

:func:`configure_camera` builds a camera at the node's configure (segmenter, output
publishers); :func:`activate_camera` wires it at activate (depth, prompts, images,
its worker). What activate creates, deactivate destroys (ros/entities.py).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from ..live.config import NodeConfig
from ..live.frames import FrameSlot
from ..live.prompts import PromptState
from ..live.segmenter import StreamSegmenter, StreamWorker
from ..live.stats import NodeStats, ThrottledLog
from ..live.tracking import TrackingConfig
from ..predictor import SamPredictor
from .images import ImageInput
from .outputs import CameraOutputs
from .prompts import PromptInput
from .startup import open_everything


@dataclass(eq=False)
class Camera:
    index: int
    name: str  # "" for the single camera
    stats: NodeStats
    errors: ThrottledLog
    prompts: PromptState | None = None
    segmenter: StreamSegmenter | None = None
    image_topic: str = ""  # resolved
    outputs: CameraOutputs | None = None  # configure
    slot: FrameSlot | None = None  # a new one per activation
    images: ImageInput | None = None  # activate
    depth3d: Any = None  # ros/depth3d.Depth3D, activate (with depth_topic)

    def output(self, name: str) -> str:
        """The camera's topic ``name`` under the node: ``~/name`` or ``~/<camera>/name``."""
        return f"~/{self.name}/{name}" if self.name else f"~/{name}"

    def input(self, topic: str) -> str:
        """An input topic of the camera: ``topic`` or ``<camera>/topic`` (relative)."""
        return f"{self.name}/{topic}" if self.name else topic


def configure_camera(node, index: int, name: str, cfg: NodeConfig, runtime, vision: Any) -> Camera:
    """Camera ``name`` of the segment node ``node`` on the shared ``runtime``: its own
    prompts, tracks, embedding cache and output publishers."""
    if name:  # each camera counts and logs on its own
        stats = NodeStats()
        errors = ThrottledLog(lambda level, text: node.log(level, f"[{name}] {text}"), stats)
    else:
        stats, errors = node.stats, node.errors
    cam = Camera(index, name, stats, errors)
    predictor = SamPredictor(runtime, cfg["mask_threshold"], cache_size=cfg["embedding_cache_size"])
    everything = open_everything(cfg, predictor, node.log) if cfg["mode"] == "everything" else None
    cam.prompts = PromptState(cfg["prompt_persistence"], cfg["accumulate_points"], cfg["max_points"], cfg["max_boxes"])
    cam.segmenter = StreamSegmenter(
        predictor, cam.prompts, cfg["mode"], everything, cfg["multimask_single_point"], cfg["min_score"],
        TrackingConfig.from_config(cfg),
    )
    base = node.resolve_topic_name(cam.input(cfg["image_topic"]))
    cam.image_topic = base.rstrip("/") + "/compressed" if cfg["transport"] == "compressed" else base
    cam.outputs = CameraOutputs(node, cam, cfg, vision)
    return cam


def activate_camera(node, cam: Camera, cfg: NodeConfig, vision: Any, condition: threading.Condition) -> StreamWorker:
    """Subscribe the camera's inputs (depth, prompts, images) and return its worker, a
    new one per activation (prompts and tracks carry over); ``condition`` is the one
    every camera's slot notifies, so one thread serves them all."""
    if cfg["depth_topic"].strip():  # 3D from an aligned depth camera: ros/depth3d.py
        from .depth3d import Depth3D

        topics = {n: cam.input(cfg[n]) for n in ("depth_topic", "camera_info_topic")}
        cam.depth3d = Depth3D(node, NodeConfig({**cfg.as_dict(), **topics}), cam.stats, cam.errors, vision,
                              outputs=cam.output(""))
    PromptInput(node, cam, vision)  # its subscriptions hold it
    cam.slot = FrameSlot(condition)
    cam.images = ImageInput(node, cam)
    logger, label = node.get_logger(), f"[{cam.name}] " if cam.name else ""
    return StreamWorker(
        cam.segmenter, cam.slot, cam.images.convert, cam.outputs.publish, cam.stats, cam.errors,
        publish_empty=cfg["publish_empty"], debug=lambda text: logger.debug(label + text),
    )
