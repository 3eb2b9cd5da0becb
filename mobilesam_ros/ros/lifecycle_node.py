"""segment_lifecycle_node: the segment node as a managed (lifecycle) node
(``ros2 run mobilesam_ros segment_lifecycle_node``).

The same node as ``segment_node`` (:class:`~.node.SegmentNode`, same parameters,
topics, services); its start-up steps run as the transitions:

=============  =================================================================
transition     what happens
=============  =================================================================
configure      parameters validated, model loaded and warmed (one encode), output
               publishers created; FAILURE with the start-up error's message
               (missing model, bad parameters) and the node stays unconfigured
activate       prompt, image (and depth) subscriptions, the inference worker
deactivate     worker stopped, subscriptions removed; model, prompts, tracks kept.
               The frame in progress may finish (``deactivate_timeout``); one that
               takes longer: FAILURE, the node stays active and says why
cleanup        model released, publishers removed
shutdown       from any state: deactivate and cleanup as needed; a frame that
               outlasts ``deactivate_timeout`` is left to finish and the model is
               not released under it
=============  =================================================================

Parameters may be set freely while unconfigured (checked at configure); once
configured only the run-time ones change (see docs/ros-node.md, "Run-time parameters"). Drive it with
``ros2 lifecycle set /mobilesam configure`` / ``activate`` or the launch file's
``lifecycle:=true`` (which configures and activates it, like yolo_ros).
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn

from .node import NODE_NAME, SegmentNode, StartupError, run


class SegmentLifecycleNode(LifecycleNodeMixin, SegmentNode):
    """:class:`SegmentNode` with rclpy's lifecycle state machine and services
    (``~/change_state``, ``~/get_state``, ...)."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        SegmentNode.__init__(self, node_name, managed=True, **kwargs)
        LifecycleNodeMixin.__init__(self)
        self.log("info", "unconfigured: waiting for the configure transition")

    def _step(self, name: str, action) -> TransitionCallbackReturn:
        try:
            action()
        except StartupError as exc:
            self.log("error", f"cannot {name}: {exc}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._step("configure", self.configure)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._step("activate", self.activate)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self.deactivate():
            self.log("error", f"cannot deactivate: the frame in progress took longer than deactivate_timeout "
                               f"({self.config['deactivate_timeout']} s); the node stays active")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.cleanup()  # from inactive only: the worker has stopped
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # a transition raised: release everything and go back to unconfigured
        return TransitionCallbackReturn.SUCCESS if self.release() else TransitionCallbackReturn.FAILURE


def main(args: list[str] | None = None) -> int:
    return run(SegmentLifecycleNode, args)


if __name__ == "__main__":
    sys.exit(main())
