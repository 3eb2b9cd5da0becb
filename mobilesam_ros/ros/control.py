"""The segment node's controls while it runs: ``ros2 param set`` (run-time parameters
applied between frames: :mod:`mobilesam_ros.live.reconfigure`), and the ``~/enable``
and ``~/clear`` services."""

from __future__ import annotations

from functools import partial

from rcl_interfaces.msg import SetParametersResult
from std_srvs.srv import SetBool, Trigger

from ..live.config import ConfigError, NodeConfig
from ..live.reconfigure import apply_to_segmenter, changed_names, check_update, needs_everything
from ..messages.objects3d import depth_options
from .outputs import overlay_period
from .params import current_values
from .startup import StartupError, open_everything


class NodeControl:
    """Registers the parameter callback and the services on the segment node ``node``
    (its ``config``, ``cameras``, ``worker``, ``enabled``); created once, in the node's
    constructor, after the parameters are declared (rclpy runs the callback for
    declarations too)."""

    def __init__(self, node) -> None:
        self._node = node
        node.add_on_set_parameters_callback(self._on_set_parameters)
        node.create_service(SetBool, "~/enable", self._on_enable)
        node.create_service(Trigger, "~/clear", self._on_clear)

    # --- run-time parameters -------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        """``ros2 param set``: run-time parameters are validated by the start-up table and
        applied between frames; start-up parameters are refused while configured."""
        node = self._node
        changes = {p.name: p.value for p in params}
        try:
            if node.config is None:  # lifecycle node before configure: checked as a whole at configure
                check_update(NodeConfig(current_values(node)), changes, running=False)
                return SetParametersResult(successful=True)
            new = check_update(node.config, changes)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        changed = changed_names(node.config, new)
        if not changed:
            return SetParametersResult(successful=True)
        everything = {}
        for cam in node.cameras:
            if needs_everything(cam.segmenter, new, changed):
                try:  # built here, so that a detector that does not load refuses the change
                    everything[cam.index] = open_everything(new, cam.segmenter.predictor, node.log)
                except StartupError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
        node.config = new
        node.log("info", "parameters changed: " + ", ".join(f"{n}={new[n]}" for n in sorted(changed)))
        apply = partial(self._apply, new, changed, everything)
        if node.worker is not None:
            node.worker.call_soon(apply)  # between two frames, on the worker thread
        else:
            apply()
        return SetParametersResult(successful=True)

    def _apply(self, cfg: NodeConfig, changed: set[str], everything: dict) -> None:
        node = self._node
        for cam in node.cameras:
            apply_to_segmenter(cam.segmenter, cfg, changed, everything.get(cam.index))
        if "publish_empty" in changed and node.worker is not None:
            for stream in node.worker.workers:
                stream.publish_empty = cfg["publish_empty"]
        if "overlay.max_rate" in changed:
            for cam in node.cameras:
                cam.outputs.overlay_period = overlay_period(cfg)
        if any(n.startswith("depth.") for n in changed):
            for depth3d in (cam.depth3d for cam in node.cameras if cam.depth3d is not None):
                depth3d.options = depth_options(cfg)
                depth3d.depth_scale, depth3d.wait = cfg["depth.scale"], cfg["depth.wait"]

    # --- services -------------------------------------------------------------------------------
    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """~/enable: false pauses segmentation (frames are dropped, nothing is decoded,
        the model stays loaded); true resumes."""
        node = self._node
        node.enabled = bool(request.data)
        if node.worker is not None:
            node.worker.pause(not node.enabled)
        response.success = True
        response.message = ("segmentation resumed" if node.enabled
                            else "segmentation paused: frames are not segmented, the model stays loaded")
        if node.worker is None:
            response.message += " (takes effect when the node is active)"
        node.log("info", response.message)
        return response

    def _on_clear(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """~/clear: what ~/prompt/clear does (for every camera), with a reply."""
        node = self._node
        if not node.cameras:
            response.success, response.message = False, "not configured: there are no prompts"
            return response
        points = boxes = 0
        for cam in node.cameras:
            counts = cam.prompts.counts()
            points, boxes = points + counts["points"], boxes + counts["boxes"]
            cam.prompts.clear()
            if node.worker is not None:
                cam.slot.notify()
        response.success = True
        response.message = f"cleared {points} point(s), {boxes} box(es) and every tracked object"
        return response
