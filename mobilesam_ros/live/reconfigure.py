"""Parameters that change while the node runs (``ros2 param set``), without ROS.

Which parameters may change is marked in the parameter table (``ParamSpec.runtime``,
:mod:`.config`); a change is validated by the same :func:`~.config.validate` that
validates start-up, so a bad value is refused with the same message and nothing
changes. An accepted change is applied to each camera's
:class:`~.segmenter.StreamSegmenter` by :func:`apply_to_segmenter`, on the worker
thread between two frames (:meth:`~.scheduler.CameraScheduler.call_soon`).
"""

from __future__ import annotations

from typing import Any, Mapping

from .config import SPEC, ConfigError, NodeConfig, _coerce, validate
from .tracking import Tracker, TrackingConfig

#: why a start-up parameter is refused while the node runs
RESTART_HINT = (
    "cannot change while the node runs (it is read when the model and topics are set up): restart "
    "segment_node with the new value, or for segment_lifecycle_node deactivate, cleanup, set it and configure again"
)


def check_update(current: NodeConfig, changes: Mapping[str, Any], running: bool = True) -> NodeConfig:
    """The configuration after ``changes`` (name -> new value; names that are not the
    node's are ignored), or ConfigError listing every reason it is refused.

    ``running`` True: only run-time parameters may differ from ``current``, and the
    result must pass every cross-check. False (a lifecycle node before configure):
    anything may change; each value is checked on its own, the whole set at configure.
    """
    ours = {name: value for name, value in changes.items() if name in SPEC}
    if running:
        fixed = []
        for name, value in ours.items():
            coerced, problem = _coerce(SPEC[name], value)
            if not SPEC[name].runtime and (problem or coerced != current[name]):
                fixed.append(f"{name}: {RESTART_HINT}")
        if fixed:
            raise ConfigError("\n".join(fixed))
    merged = current.as_dict()
    merged.update(ours)
    return validate(merged, check_files=False, cross_checks=running)


def changed_names(old: NodeConfig, new: NodeConfig) -> set[str]:
    return {name for name in SPEC if old[name] != new[name]}


def needs_everything(segmenter, cfg: NodeConfig, changed: set[str]) -> bool:
    """True when applying ``cfg`` to ``segmenter`` needs an EverythingSegmenter it does
    not have yet (mode switched to everything): the caller builds it first, where a
    failure (a detector that does not load) can still refuse the change."""
    return cfg["mode"] == "everything" and segmenter.everything is None


def apply_to_segmenter(segmenter, cfg: NodeConfig, changed: set[str], everything: Any = None) -> None:
    """Apply the run-time parameters in ``changed`` to one camera's StreamSegmenter (and
    its PromptState, Tracker, EverythingSegmenter). Call between frames only.
    ``everything``: the EverythingSegmenter to use when ``needs_everything``."""
    prompts = segmenter.prompts
    if "prompt_persistence" in changed:
        prompts.persistence = cfg["prompt_persistence"]
    if "accumulate_points" in changed:
        prompts.accumulate_points = cfg["accumulate_points"]
    if "max_points" in changed:
        prompts.max_points = cfg["max_points"]
    if "max_boxes" in changed:
        prompts.max_boxes = cfg["max_boxes"]
    if "mask_threshold" in changed:
        segmenter.predictor.mask_threshold = cfg["mask_threshold"]
    if "multimask_single_point" in changed:
        segmenter.multimask_single_point = (
            cfg["multimask_single_point"] and segmenter.predictor.runtime.num_mask_outputs > 1)
    if "min_score" in changed:
        segmenter.min_score = float(cfg["min_score"])

    # tracks: a new tracker when tracking is switched or the mode changes (tracks of
    # prompted objects and of segment-everything masks do not carry over)
    tracking = TrackingConfig.from_config(cfg)
    if "tracking.enabled" in changed or "mode" in changed:
        segmenter.tracker = (Tracker(tracking, cfg["mask_threshold"], cfg["prompt_persistence"])
                             if tracking.enabled else None)
    elif segmenter.tracker is not None:
        tracker = segmenter.tracker
        tracker.config = tracking
        tracker.mask_threshold = cfg["mask_threshold"]
        tracker.follow = cfg["prompt_persistence"] == "sticky"

    # segment everything: its options, and the mode last (the segmenter is ready first)
    if everything is not None and segmenter.everything is None:
        segmenter.everything = everything
    if segmenter.everything is not None and any(
            n.startswith("everything.") or n == "mask_threshold" for n in changed):
        from ..everything import EverythingConfig

        config = EverythingConfig(**cfg.everything_options())
        config.validate()
        segmenter.everything.config = config
        detector = segmenter.everything.detector
        if detector is not None:
            detector.conf, detector.iou = float(config.detector_conf), float(config.detector_iou)
            detector.max_det = int(config.max_det)
    if "mode" in changed:
        if cfg["mode"] == "everything" and segmenter.everything is None:
            raise ValueError("mode everything needs an EverythingSegmenter (build it before applying)")
        segmenter.mode = cfg["mode"]
