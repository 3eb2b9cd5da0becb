"""The segment node's parameters, without ROS: one table (name, default, meaning,
allowed values) used to declare them, validate them at start-up, document them
(config/segment.yaml, the README table) and test that all three agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .prompts import PERSISTENCE

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

    @property
    def kind(self) -> type:
        return type(self.default)


P = ParamSpec
PARAMETERS: tuple[ParamSpec, ...] = (
    # --- model ---
    P("model", "", "MobileSAM checkpoint (mobile_sam.pt, torch backend) or a directory written by "
      "'mobilesam-ros export' (onnxruntime / tensorrt). Required."),
    P("backend", "auto", "inference engine; auto: torch for a checkpoint, tensorrt for an exported "
      "directory when TensorRT and a GPU are present, else onnxruntime", BACKENDS),
    P("device", "cpu", "cpu, cuda or cuda:N"),
    P("precision", "fp32", "fp32 or fp16 (fp16 needs a GPU)", PRECISIONS),
    P("num_threads", 0, "CPU threads for the engine; 0 = the engine's default (all cores)", None, 0),
    # --- input ---
    P("image_topic", "image", "camera topic (relative names resolve in the node's namespace and follow "
      "remapping, e.g. image:=/camera/image_raw); compressed transport subscribes to <image_topic>/compressed"),
    P("transport", "raw", "raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage (jpeg/png)", TRANSPORTS),
    P("qos.reliability", "auto", "image subscription reliability; auto: reliable when every publisher on the "
      "topic is reliable, best_effort when any is best effort (re-checked while running)", RELIABILITY),
    P("qos.depth", 1, "image subscription queue depth (KEEP_LAST); only the newest frame is processed", None, 1, 100),
    # --- prompts ---
    P("mode", "prompt", "prompt: segment the prompted objects; everything: segment every object", MODES),
    P("prompt_persistence", "sticky", "sticky: prompts apply to their frame and every later frame until "
      "cleared or replaced; once: only to the frame they were resolved to", PERSISTENCE),
    P("accumulate_points", False, "true: points (prompt/point, prompt/click) add up into one object until "
      "prompt/clear; false: a new point replaces the previous one"),
    P("max_points", 32, "most points in the point object", None, 1, 1024),
    P("max_boxes", 64, "most box prompts per message (extra boxes are dropped with a warning)", None, 1, 4096),
    P("embedding_cache_size", 4, "frames whose embedding is kept, so a prompt stamped with one of them is "
      "decoded on that frame", None, 1, 64),
    P("multimask_single_point", True, "an object prompted by one point takes the best of SAM's three "
      "candidate masks (by predicted IoU); other objects use the single-mask output"),
    # --- masks ---
    P("mask_threshold", 0.0, "logit threshold that binarises masks (SAM: 0.0)", None, -20.0, 20.0),
    P("min_score", 0.0, "objects whose predicted IoU is below this are dropped; 0 keeps every object", None, 0.0, 1.0),
    # --- outputs ---
    P("publish_mask", True, "publish ~/mask (mono8, 255 inside any object)"),
    P("publish_labels", True, "publish ~/labels (mono16 instance ids, 0 = background)"),
    P("publish_detections", True, "publish ~/detections (vision_msgs/Detection2DArray; needs vision_msgs)"),
    P("publish_empty", True, "publish outputs (empty masks) for frames that have no prompts"),
    P("overlay.enabled", True, "publish ~/overlay (rgb8 image with masks, outlines, prompts, scores) while "
      "someone subscribes"),
    P("overlay.max_rate", 5.0, "most overlays per second; 0 = one per result", None, 0.0),
    P("overlay.alpha", 0.5, "mask opacity in the overlay", None, 0.0, 1.0),
    P("diagnostics_period", 1.0, "seconds between /diagnostics messages", None, 0.05, 60.0),
    # --- segment everything (mode: everything) ---
    P("everything.strategy", "boxes", "boxes: MobileSAMv2 (detector ONNX or boxes from prompt/boxes); "
      "grid: SAM's point grid; hierarchical: TinySAM's sparse-then-dense grid", STRATEGIES),
    P("everything.detector", "", "object-aware detector ONNX (YOLOv8 layout, e.g. MobileSAMv2's "
      "ObjectAwareModel exported by ultralytics) for the boxes strategy; empty: boxes only from prompt/boxes"),
    P("everything.detector_conf", 0.4, "detector confidence threshold", None, 0.0, 1.0),
    P("everything.detector_iou", 0.9, "detector NMS IoU threshold", None, 0.0, 1.0),
    P("everything.max_det", 300, "most detector boxes", None, 1),
    P("everything.points_per_side", 32, "grid points per side (grid; hierarchical: dense grid)", None, 1, 256),
    P("everything.points_per_batch", 64, "grid points per decoder call", None, 1, 4096),
    P("everything.pred_iou_thresh", -1.0, "drop masks with predicted IoU not above this; -1 = strategy "
      "default (0.88 grid/hierarchical, 0 boxes)", None, -1.0, 1.0),
    P("everything.stability_score_thresh", -1.0, "drop masks with a lower stability score; -1 = strategy "
      "default (0.95 grid/hierarchical, 0 boxes)", None, -1.0, 1.0),
    P("everything.nms_thresh", 0.7, "box NMS IoU threshold between masks (1.0 = off)", None, 0.0, 1.0),
    P("everything.min_area", 0, "drop masks with fewer pixels", None, 0),
)
del P

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
            "nms_thresh": self["everything.nms_thresh"],
            "min_area": self["everything.min_area"],
            "mask_threshold": self["mask_threshold"],
        }
        for name in ("pred_iou_thresh", "stability_score_thresh"):
            value = self[f"everything.{name}"]
            out[name] = None if value < 0 else value
        return out


def _coerce(spec: ParamSpec, value: Any) -> tuple[Any, str | None]:
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


def validate(values: dict[str, Any], check_files: bool = True) -> NodeConfig:
    """Check every value (type, choices, range, files); raise ConfigError listing all
    problems, or return the NodeConfig. Unknown names are ignored (ROS may pass its
    own, e.g. use_sim_time)."""
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
    if not problems:
        problems += _cross_checks(out, check_files)
    if problems:
        raise ConfigError("\n".join(problems))
    return NodeConfig(out)


def model_help() -> str:
    return (
        "get the official weights with 'mobilesam-ros download' (writes models/mobile_sam.pt), "
        "or export them for ONNX Runtime with 'mobilesam-ros export --checkpoint models/mobile_sam.pt "
        "--out models/mobile_sam_onnx'; for a quick test without weights: "
        "'mobilesam-ros synthetic-checkpoint models/synthetic.pt' (random weights, meaningless masks)"
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
    if v["precision"] == "fp16" and v["device"] == "cpu":
        problems.append("precision: fp16 needs a GPU device (device: cuda); use fp32 on the CPU")
    if not (v["device"] == "cpu" or v["device"] == "cuda" or v["device"].startswith("cuda:")):
        problems.append(f"device: '{v['device']}' is not cpu, cuda or cuda:N")
    if not v["image_topic"].strip():
        problems.append("image_topic: empty")
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


def spec_table(names: Iterable[str] | None = None) -> str:
    """The parameter table as Markdown (for the README)."""
    rows = ["| parameter | default | meaning |", "| --- | --- | --- |"]
    for spec in PARAMETERS:
        if names is not None and spec.name not in names:
            continue
        default = spec.default
        shown = f'"{default}"' if isinstance(default, str) else str(default).lower() if isinstance(default, bool) else default
        choices = " (" + " \\| ".join(spec.choices) + ")" if spec.choices else ""
        rows.append(f"| `{spec.name}` | `{shown}` | {spec.description}{choices} |")
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
        for text in textwrap.wrap(spec.description + allowed, 96 - len(indent)):
            lines.append(f"{indent}# {text}")
        lines.append(f"{indent}{parts[-1]}: {_yaml_value(spec.default)}")
    return "\n".join(lines) + "\n"
