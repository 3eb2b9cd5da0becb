"""The segment node's parameters, without ROS: one table (name, default, meaning,
allowed values) used to declare them, validate them at start-up, document them
(config/segment.yaml, the table in docs/ros-node.md, generated at the docs build) and
test that they agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..variants import VARIANTS
from .prompts import PERSISTENCE
from .tracking import MOTIONS

MODES = ("prompt", "everything")
TRANSPORTS = ("raw", "compressed")
RELIABILITY = ("auto", "reliable", "best_effort")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")
STRATEGIES = ("boxes", "grid", "hierarchical")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: Any
    description: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: may change while the node runs (``ros2 param set``): applied between frames;
    #: the others are read when the node starts (segment_lifecycle_node: at configure)
    runtime: bool = False
    #: a list of names: a string array, or one string with the names separated by
    #: commas or spaces (what a launch argument can pass); validated into a tuple
    listed: bool = False

    @property
    def kind(self) -> type:
        return type(self.default)


P = ParamSpec


def R(*args: Any, **kwargs: Any) -> ParamSpec:
    """A parameter that can change while the node runs."""
    return ParamSpec(*args, runtime=True, **kwargs)


PARAMETERS: tuple[ParamSpec, ...] = (
    # --- model ---
    P("model", "", "MobileSAM checkpoint (mobile_sam.pt, torch backend) or a directory written by "
      "'mobilesam-ros export' (onnxruntime / tensorrt). Required."),
    P("variant", "auto", "which SAM the model is; auto: what model.json says for an exported model, mobilesam "
      "for a checkpoint; tinysam: every prompt is decoded with TinySAM's three masks and the best-scored is kept",
      ("auto",) + VARIANTS),
    P("decoder_checkpoint", "", "MobileSAMv2: its Prompt_guided_Mask_Decoder.pt, combined with the checkpoint's image "
      "encoder (a .pt model, torch backend); an exported model has it built in (export --decoder-checkpoint)"),
    P("backend", "auto", "inference engine; auto: torch for a checkpoint, tensorrt for an exported "
      "directory when TensorRT and a GPU are present, else onnxruntime", BACKENDS),
    P("device", "cpu", "cpu, cuda or cuda:N"),
    P("precision", "fp32", "fp32 or fp16 (fp16 needs a GPU)", PRECISIONS),
    P("num_threads", 0, "CPU threads for the engine; 0 = the engine's default (all cores)", None, 0),
    # --- input ---
    P("image_topic", "image", "camera topic (relative names resolve in the node's namespace and follow "
      "remapping, e.g. image:=/camera/image_raw); compressed transport subscribes to <image_topic>/compressed"),
    P("cameras", "", "several cameras, one model: their names, e.g. [front, rear]; camera NAME reads NAME/<image_topic> "
      "(with depth NAME/<depth_topic>, NAME/<camera_info_topic>), takes prompts on ~/NAME/prompt/* and publishes "
      "~/NAME/mask, ~/NAME/labels, ...; empty: one camera on image_topic with the topics directly under the node",
      listed=True),
    P("transport", "raw", "raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage (jpeg/png)", TRANSPORTS),
    P("qos.reliability", "auto", "image subscription reliability; auto: reliable when every publisher on the "
      "topic is reliable, best_effort when any is best effort (re-checked while running)", RELIABILITY),
    P("qos.depth", 1, "image subscription queue depth (KEEP_LAST); only the newest frame is processed", None, 1, 100),
    # --- prompts ---
    R("mode", "prompt", "prompt: segment the prompted objects; everything: segment every object", MODES),
    R("prompt_persistence", "sticky", "sticky: prompts apply to their frame and every later frame until "
      "cleared or replaced; once: only to the frame they were resolved to", PERSISTENCE),
    R("accumulate_points", False, "true: points (prompt/point, prompt/click) add up into one object until "
      "prompt/clear; false: a new point replaces the previous one"),
    R("max_points", 32, "most points in the point object", None, 1, 1024),
    R("max_boxes", 64, "most box prompts per message (extra boxes are dropped with a warning)", None, 1, 4096),
    P("embedding_cache_size", 4, "frames whose embedding is kept, so a prompt stamped with one of them is "
      "decoded on that frame", None, 1, 64),
    R("multimask_single_point", True, "an object prompted by one point takes the best of SAM's three "
      "candidate masks (by predicted IoU); other objects use the single-mask output"),
    # --- masks ---
    R("mask_threshold", 0.0, "logit threshold that binarises masks (SAM: 0.0)", None, -20.0, 20.0),
    R("min_score", 0.0, "objects whose predicted IoU is below this are dropped; 0 keeps every object", None, 0.0, 1.0),
    # --- tracking ---
    R("tracking.enabled", True, "follow every prompted object from frame to frame and give each published object "
      "a track id (its ~/labels value, Detection2D.id, overlay colour); false: every frame on its own, ids 1..N "
      "in prompt order"),
    R("tracking.max_lost_frames", 15, "frames a lost object is looked for where it should be (and box lists a "
      "detector's object may be missing from) before its track ends", None, 0, 100000),
    R("tracking.iou_match", 0.3, "IoU at which a detector box matches a track's predicted box, consecutive "
      "segment-everything masks match, and a followed mask still fits its predicted box", None, 0.01, 1.0),
    R("tracking.propagate_unmatched", False, "a detector's object missing from a box list is followed on its own "
      "(true) or hidden until the detector reports it again (false)"),
    R("tracking.motion", "flow", "how a followed object's next box is predicted: flow (Lucas-Kanade optical flow "
      "of points inside its mask, constant velocity where too few points track), velocity (constant velocity), "
      "none", MOTIONS),
    R("tracking.box_margin", 0.1, "the predicted box is widened by this fraction of its size on each side",
      None, 0.0, 1.0),
    R("tracking.min_score", 0.3, "a followed object whose predicted IoU falls below this is lost", None, 0.0, 1.0),
    R("tracking.max_area_change", 2.5, "a followed object whose mask area changes by more than this factor from "
      "one frame to the next is lost", None, 1.0, 100.0),
    R("tracking.mask_input", False, "also give the decoder the previous low-res mask logits (shifted by the "
      "motion) as mask_input"),
    # --- outputs ---
    P("publish_mask", True, "publish ~/mask (mono8, 255 inside any object)"),
    P("publish_labels", True, "publish ~/labels (mono16 instance ids, 0 = background)"),
    P("publish_detections", True, "publish ~/detections (vision_msgs/Detection2DArray; needs vision_msgs)"),
    R("publish_empty", True, "publish outputs (empty masks) for frames that have no prompts"),
    P("overlay.enabled", True, "publish ~/overlay (rgb8 image with masks, outlines, prompts, scores) while "
      "someone subscribes"),
    R("overlay.max_rate", 5.0, "most overlays per second; 0 = one per result", None, 0.0),
    R("overlay.alpha", 0.5, "mask opacity in the overlay", None, 0.0, 1.0),
    P("diagnostics_period", 1.0, "seconds between /diagnostics messages", None, 0.05, 60.0),
    P("deactivate_timeout", 10.0, "seconds deactivate, shutdown and Ctrl-C wait for the frame in progress; "
      "segment_lifecycle_node: a frame that takes longer fails the deactivate transition (the node stays active)",
      None, 0.0, 600.0),
    # --- segment everything (mode: everything) ---
    R("everything.strategy", "boxes", "boxes: MobileSAMv2 (detector ONNX or boxes from prompt/boxes); "
      "grid: SAM's point grid; hierarchical: TinySAM's sparse-then-dense grid", STRATEGIES),
    P("everything.detector", "", "object-aware detector ONNX (YOLOv8 layout, e.g. MobileSAMv2's "
      "ObjectAwareModel exported by ultralytics) for the boxes strategy; empty: boxes only from prompt/boxes"),
    R("everything.detector_conf", 0.4, "detector confidence threshold", None, 0.0, 1.0),
    R("everything.detector_iou", 0.9, "detector NMS IoU threshold", None, 0.0, 1.0),
    R("everything.max_det", 300, "most detector boxes", None, 1),
    R("everything.points_per_side", 32, "grid points per side (grid; hierarchical: dense grid)", None, 1, 256),
    R("everything.points_per_batch", 64, "grid points per decoder call", None, 1, 4096),
    R("everything.pred_iou_thresh", -1.0, "drop masks with predicted IoU not above this; -1 = the model's "
      "recorded value (model.json 'everything'; the toy-world model's), else the strategy default (0.88 "
      "grid/hierarchical, 0 boxes)", None, -1.0, 1.0),
    R("everything.stability_score_thresh", -1.0, "drop masks with a lower stability score; -1 = the model's "
      "recorded value (model.json 'everything'; the toy-world model's), else the strategy default (0.95 "
      "grid/hierarchical, 0 boxes)", None, -1.0, 1.0),
    R("everything.nms_thresh", -1.0, "box NMS IoU threshold between masks (1.0 = off); -1 = the model's published "
      "default (0.7; off for MobileSAMv2's prompt-guided decoder with boxes, as its script)", None, -1.0, 1.0),
    R("everything.min_area", 0, "drop masks with fewer pixels", None, 0),
    # --- 3D from an aligned depth camera ---
    P("depth_topic", "", "depth image registered to the colour image (sensor_msgs/Image 16UC1 or 32FC1, e.g. "
      "/camera/aligned_depth_to_color/image_raw); empty: no 3D outputs"),
    P("camera_info_topic", "camera_info", "CameraInfo of the colour camera (K, frame_id of the outputs); used "
      "with depth_topic"),
    R("depth.scale", 0.001, "metres per unit of 16UC1 depth (0.001: millimetres, REP 118)", None, 1e-9),
    R("depth.float_scale", 1.0, "metres per unit of 32FC1 depth (1.0: metres, REP 118)", None, 1e-9),
    P("depth.max_dt", 0.02, "a colour frame takes the depth frame with the same stamp, else the nearest within "
      "this many seconds; none: the frame is published without 3D and counted", None, 0.0, 10.0),
    R("depth.wait", 0.05, "seconds a segmented frame waits for its depth frame when none at or after its stamp has "
      "arrived yet", None, 0.0, 5.0),
    P("depth.queue_size", 10, "depth frames kept for colour frames that arrive after their depth", None, 1, 1000),
    R("depth.min", 0.1, "depth nearer than this (m) is invalid", None, 1e-6),
    R("depth.max", 10.0, "depth farther than this (m) is invalid", None, 1e-6),
    R("depth.erode_px", 3, "masks are eroded by this many pixels before depth is read (flying pixels and "
      "background live on mask edges)", None, 0, 50),
    R("depth.min_points", 20, "an object with fewer valid depth points has no 3D output that frame", None, 1),
    R("depth.max_points_per_object", 2000, "most points per object in ~/points (evenly subsampled)", None, 1),
)
del P, R

SPEC = {p.name: p for p in PARAMETERS}


class ConfigError(ValueError):
    """Invalid parameters; the message lists every problem, one per line."""


class NodeConfig:
    """Validated parameter values: ``config["qos.depth"]`` or ``config.get(...)``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)

    @classmethod
    def defaults(cls) -> "NodeConfig":
        return cls({p.name: p.default for p in PARAMETERS})

    def everything_options(self) -> dict[str, Any]:
        """Keyword arguments for ``EverythingConfig`` (detector path excluded)."""
        out: dict[str, Any] = {
            "strategy": self["everything.strategy"],
            "detector_conf": self["everything.detector_conf"],
            "detector_iou": self["everything.detector_iou"],
            "max_det": self["everything.max_det"],
            "points_per_side": self["everything.points_per_side"],
            "points_per_batch": self["everything.points_per_batch"],
            "nms_thresh": None if self["everything.nms_thresh"] < 0 else self["everything.nms_thresh"],
            "min_area": self["everything.min_area"],
            "mask_threshold": self["mask_threshold"],
        }
        for name in ("pred_iou_thresh", "stability_score_thresh"):
            value = self[f"everything.{name}"]
            out[name] = None if value < 0 else value
        return out


def _names(spec: ParamSpec, value: Any) -> tuple[Any, str | None]:
    if isinstance(value, str):
        items = value.replace(",", " ").split()
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [v.strip() for v in value if v.strip()]
    else:
        return value, f"{spec.name}: expected a list of names, got {value!r}"
    bad = [n for n in items if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", n)]
    if bad:
        return value, f"{spec.name}: {', '.join(map(repr, bad))} is not a valid name (a letter, then letters, digits, _)"
    if len(set(items)) != len(items):
        return value, f"{spec.name}: names repeat: {', '.join(items)}"
    return tuple(items), None


def _coerce(spec: ParamSpec, value: Any) -> tuple[Any, str | None]:
    if spec.listed:
        return _names(spec, value)
    kind = spec.kind
    if kind is bool:
        if isinstance(value, bool):
            return value, None
        return value, f"{spec.name}: expected true or false, got {value!r}"
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value), None
            return value, f"{spec.name}: expected an integer, got {value!r}"
        return value, None
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value, f"{spec.name}: expected a number, got {value!r}"
        if not math.isfinite(value):
            return value, f"{spec.name}: expected a finite number, got {value!r}"
        return float(value), None
    if not isinstance(value, str):
        return value, f"{spec.name}: expected a string, got {value!r}"
    return value, None


def validate(values: dict[str, Any], check_files: bool = True, cross_checks: bool = True) -> NodeConfig:
    """Check every value (type, choices, range, files); raise ConfigError listing all
    problems, or return the NodeConfig. Unknown names are ignored (ROS may pass its
    own, e.g. use_sim_time). ``cross_checks`` False: each value on its own (values set
    one by one before a lifecycle configure may not agree yet)."""
    problems: list[str] = []
    out: dict[str, Any] = {}
    for spec in PARAMETERS:
        value, problem = _coerce(spec, values.get(spec.name, spec.default))
        if problem:
            problems.append(problem)
            continue
        if spec.choices is not None and value not in spec.choices:
            problems.append(f"{spec.name}: '{value}' is not one of {', '.join(map(str, spec.choices))}")
        if spec.minimum is not None and value < spec.minimum:
            problems.append(f"{spec.name}: {value} is below the minimum {spec.minimum}")
        if spec.maximum is not None and value > spec.maximum:
            problems.append(f"{spec.name}: {value} is above the maximum {spec.maximum}")
        out[spec.name] = value
    if not problems and cross_checks:
        problems += _cross_checks(out, check_files)
    if problems:
        raise ConfigError("\n".join(problems))
    return NodeConfig(out)


def model_help() -> str:
    return (
        "get the official weights with 'mobilesam-ros download' (writes models/mobile_sam.pt), "
        "or export them for ONNX Runtime with 'mobilesam-ros export --checkpoint models/mobile_sam.pt "
        "--out models/mobile_sam_onnx'; to try it without weights: "
        "'mobilesam-ros synthetic-checkpoint --toy models/toy_world.pt' (the toy-world model: masks that follow "
        "simple synthetic shapes, meaningless on real images)"
    )


def _cross_checks(v: dict[str, Any], check_files: bool) -> list[str]:
    problems = []
    model = v["model"].strip()
    if not model:
        problems.append(f"model: not set. Set it to a checkpoint file or an exported model directory; {model_help()}")
    elif check_files:
        path = Path(model).expanduser()
        if not path.exists():
            problems.append(f"model: {path} does not exist; {model_help()}")
        elif path.is_dir() and not (path / "model.json").exists() and not any(path.glob("*.onnx")):
            problems.append(f"model: {path} is a directory without an exported model (model.json, *.onnx); {model_help()}")
        elif path.is_file() and path.suffix not in (".pt", ".pth"):
            problems.append(
                f"model: {path} is neither a checkpoint (.pt/.pth) nor an exported model directory; {model_help()}"
            )
    decoder = v["decoder_checkpoint"].strip()
    if decoder:
        if model and Path(model).expanduser().suffix not in (".pt", ".pth"):
            problems.append(
                "decoder_checkpoint: goes with a checkpoint model (.pt); an exported model has its decoder built in "
                "(mobilesam-ros export --checkpoint mobile_sam.pt --decoder-checkpoint FILE --out DIR)"
            )
        elif check_files and not Path(decoder).expanduser().is_file():
            problems.append(
                f"decoder_checkpoint: {decoder} does not exist (get MobileSAMv2's decoder with "
                "'mobilesam-ros download prompt_guided_decoder')"
            )
        if v["variant"] == "tinysam":
            problems.append("decoder_checkpoint: MobileSAMv2's decoder does not go with variant tinysam")
    if v["precision"] == "fp16" and v["device"] == "cpu":
        problems.append("precision: fp16 needs a GPU device (device: cuda); use fp32 on the CPU")
    if not (v["device"] == "cpu" or v["device"] == "cuda" or v["device"].startswith("cuda:")):
        problems.append(f"device: '{v['device']}' is not cpu, cuda or cuda:N")
    if not v["image_topic"].strip():
        problems.append("image_topic: empty")
    if len(v["cameras"]) > 1:
        for name in ("image_topic", "depth_topic", "camera_info_topic"):
            if v[name].strip().startswith(("/", "~")):
                problems.append(f"{name}: '{v[name]}' must be relative with several cameras (each camera reads "
                                f"CAMERA/{name.replace('_topic', '')}; remap those topics instead)")
    if v["depth_topic"].strip() and not v["camera_info_topic"].strip():
        problems.append("camera_info_topic: empty, but depth_topic is set (3D needs the colour camera's intrinsics)")
    if v["depth.min"] >= v["depth.max"]:
        problems.append(f"depth.min ({v['depth.min']}) must be below depth.max ({v['depth.max']})")
    detector = v["everything.detector"].strip()
    if detector and check_files and not Path(detector).expanduser().is_file():
        problems.append(
            f"everything.detector: {detector} does not exist (export MobileSAMv2's ObjectAwareModel.pt to ONNX "
            "with ultralytics, or leave it empty to take boxes from prompt/boxes)"
        )
    if detector and v["everything.strategy"] != "boxes":
        problems.append(f"everything.detector is set but everything.strategy is '{v['everything.strategy']}' (needs boxes)")
    if v["mode"] == "everything" and v["everything.strategy"] == "hierarchical" and v["everything.points_per_side"] < 4:
        problems.append("everything.points_per_side: hierarchical needs at least 4 (sparse grid = points_per_side // 4)")
    return problems


def spec_table() -> str:
    """The parameter table as Markdown (docs/ros-node.md, filled in by scripts/docs_hooks.py)."""
    rows = ["| parameter | default | meaning (run time: changeable with `ros2 param set` while running) |",
            "| --- | --- | --- |"]
    for spec in PARAMETERS:
        default = spec.default
        shown = f'"{default}"' if isinstance(default, str) else str(default).lower() if isinstance(default, bool) else default
        choices = " (" + " \\| ".join(spec.choices) + ")" if spec.choices else ""
        when = " **Run time.**" if spec.runtime else ""
        rows.append(f"| `{spec.name}` | `{shown}` | {spec.description}{choices}{when} |")
    return "\n".join(rows)


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def yaml_text() -> str:
    """config/segment.yaml: every parameter with its default and meaning."""
    import textwrap

    lines = [
        "# Parameters of mobilesam_ros segment_node (generated from mobilesam_ros/live/config.py;",
        "# test/test_ros_config.py checks that this file and the code agree).",
        "# Use: ros2 run mobilesam_ros segment_node --ros-args --params-file config/segment.yaml",
        "#      ros2 launch mobilesam_ros segment.launch.py params_file:=<this file> model:=<model>",
        "# '/**' applies to the node whatever its name and namespace.",
        "# [run time]: can change while the node runs (ros2 param set), applied between frames; the",
        "# others are read at start-up (segment_lifecycle_node: at configure) and are refused while it runs.",
        "/**:",
        "  ros__parameters:",
    ]
    group = None
    for spec in PARAMETERS:
        parts = spec.name.split(".")
        indent = "    "
        if len(parts) == 2:
            if group != parts[0]:
                lines.append(f"    {parts[0]}:")
                group = parts[0]
            indent = "      "
        else:
            group = None
        allowed = f" [{' | '.join(map(str, spec.choices))}]" if spec.choices else ""
        allowed += " [run time]" if spec.runtime else ""
        for text in textwrap.wrap(spec.description + allowed, 96 - len(indent)):
            lines.append(f"{indent}# {text}")
        lines.append(f"{indent}{parts[-1]}: {_yaml_value(spec.default)}")
    return "\n".join(lines) + "\n"
