"""launch/segment.launch.py with lifecycle:=true (and cameras:=...), against the
stand-ins for launch / launch_ros of test_ros_config (they are not pip-installable)."""

from __future__ import annotations

import sys
import types

from test_ros_config import REPO, _load_launch, _Recorder, _run_launch


def _lifecycle_stand_ins(monkeypatch):
    actions = sys.modules["launch.actions"]
    monkeypatch.setattr(actions, "EmitEvent", lambda event: ("emit", event), raising=False)
    monkeypatch.setattr(actions, "RegisterEventHandler", lambda handler: ("handler", handler), raising=False)
    events = types.ModuleType("launch.events")
    events.matches_action = lambda action: ("matches", action)
    handlers = types.ModuleType("launch_ros.event_handlers")
    handlers.OnStateTransition = _Recorder
    lifecycle_events = types.ModuleType("launch_ros.events.lifecycle")
    lifecycle_events.ChangeState = _Recorder
    lifecycle_msgs = types.ModuleType("lifecycle_msgs.msg")
    lifecycle_msgs.Transition = types.SimpleNamespace(TRANSITION_CONFIGURE=1, TRANSITION_ACTIVATE=3)
    monkeypatch.setattr(sys.modules["launch_ros.actions"], "LifecycleNode",
                        type("LifecycleNode", (_Recorder,), {}), raising=False)
    for name, module in {"launch.events": events, "launch_ros.event_handlers": handlers,
                         "launch_ros.events": types.ModuleType("launch_ros.events"),
                         "launch_ros.events.lifecycle": lifecycle_events, "lifecycle_msgs.msg": lifecycle_msgs}.items():
        monkeypatch.setitem(sys.modules, name, module)


def test_lifecycle_true_starts_the_managed_node_configured_then_activated(monkeypatch):
    module = _load_launch(monkeypatch, REPO)
    _lifecycle_stand_ins(monkeypatch)
    args, actions = _run_launch(module, lifecycle="true", model="/m.pt")
    assert args["lifecycle"] == "false" and args["autostart"] == "true"
    node, (kind, handler), (emit, configure) = actions
    assert type(node).__name__ == "LifecycleNode"
    assert node.kwargs["executable"] == "segment_lifecycle_node" and node.kwargs["name"] == "mobilesam"
    assert (emit, configure.kwargs["transition_id"]) == ("emit", 1)
    assert configure.kwargs["lifecycle_node_matcher"] == ("matches", node)
    # activate only after a configure (not after a later manual deactivate)
    on = handler.kwargs
    assert (kind, on["target_lifecycle_node"], on["start_state"], on["goal_state"]) == \
        ("handler", node, "configuring", "inactive")
    ((_, activate),) = on["entities"]
    assert activate.kwargs["transition_id"] == 3


def test_lifecycle_without_autostart_waits_for_a_manager(monkeypatch):
    module = _load_launch(monkeypatch, REPO)
    _lifecycle_stand_ins(monkeypatch)
    _, actions = _run_launch(module, lifecycle="true", autostart="false")
    (node,) = actions
    assert node.kwargs["executable"] == "segment_lifecycle_node"


def test_plain_node_stays_the_default_and_cameras_pass_through(monkeypatch):
    module = _load_launch(monkeypatch, REPO)
    _, (node,) = _run_launch(module, cameras="front,rear")
    assert node.kwargs["executable"] == "segment_node"
    assert node.kwargs["parameters"][1] == {"cameras": "front,rear"}
