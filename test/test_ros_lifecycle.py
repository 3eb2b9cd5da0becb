"""segment_lifecycle_node over real DDS, driven from this process the way a lifecycle
manager (``ros2 lifecycle set``), ``ros2 param set`` and ``ros2 service call`` do it:
transitions through ~/change_state and ~/get_state (a failed configure included),
parameters through ~/set_parameters, ~/enable and ~/clear.

One node process, the checks in order (each relies on the state the previous one
left). Tracking is off so that every frame decodes the sticky prompt afresh: the
synthetic model's predicted IoU for it is about -0.2, so ``min_score`` 0.5 drops it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from sensor_msgs.msg import Image
from std_srvs.srv import SetBool, Trigger

from ros_harness import Client, NodeProcess, diagnostic, domain_for, image_msg, ros_environment

DOMAIN = domain_for(__name__)
NS = "/mobilesam"
FRAME = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model(request):
    path = os.environ.get("MOBILESAM_TEST_EXPORTED")  # a model exported beforehand (faster reruns)
    return path or request.getfixturevalue("exported_model")


@pytest.fixture(scope="module")
def client():
    c = Client(DOMAIN, "lifecycle_test_client")
    yield c
    c.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    log = tmp_path_factory.mktemp("lifecycle") / "node.log"
    proc = NodeProcess(
        ["-p", "model:=/does/not/exist", "-p", "backend:=onnxruntime", "-p", "tracking.enabled:=false",
         "-p", "overlay.enabled:=false", "-p", "diagnostics_period:=0.3", "-r", "image:=/lc/image"],
        ros_environment(DOMAIN), log, module="mobilesam_ros.ros.lifecycle_node",
    )
    assert proc.wait_for_log("unconfigured: waiting", 60), proc.log()
    yield proc
    assert proc.stop(60) == 0, proc.log()


@pytest.fixture(scope="module")
def io(node, client):
    out = {
        "labels": client.subscribe(Image, f"{NS}/labels"),
        "diagnostics": client.subscribe(DiagnosticArray, "/diagnostics"),
        "image": client.publisher(Image, "/lc/image", depth=1),
        "point": client.publisher(PointStamped, f"{NS}/prompt/point"),
    }
    return out


def _state(client) -> str:
    return client.call(GetState, f"{NS}/get_state", GetState.Request()).current_state.label


def _transition(client, transition_id: int) -> bool:
    request = ChangeState.Request()
    request.transition = Transition(id=transition_id)
    return client.call(ChangeState, f"{NS}/change_state", request, timeout=300).success


def _set(client, **values):
    """``ros2 param set`` for each value (one SetParameters call); the results."""
    request = SetParameters.Request()
    for name, value in values.items():
        name = name.replace("__", ".")
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(value))
        request.parameters.append(Parameter(name=name, value=pv))
    return client.call(SetParameters, f"{NS}/set_parameters", request).results


def _objects(msg) -> int:
    labels = np.frombuffer(msg.data, np.uint16)
    return len(set(np.unique(labels)) - {0})


def _frame(io, client, sec: int, timeout: float = 120.0):
    """Publish a frame stamped ``sec``; its labels message, or None when none comes."""
    io["image"].publish(image_msg(FRAME, "rgb8", sec))
    found = []
    client.wait_until(lambda: found.extend(m for m in io["labels"] if m.header.stamp.sec == sec) or found, timeout)
    return found[-1] if found else None


def _no_image_subscription(client) -> bool:
    """Nothing subscribes to the image topic (so no frame can reach the node): the ROS
    graph says so, once the node's change has been discovered."""
    return client.wait_until(lambda: client.node.count_subscribers("/lc/image") == 0, 20)


def _counter(io, key: str) -> int | None:
    value = diagnostic(io["diagnostics"], key)
    return None if value is None else int(value)


def test_failed_configure_reports_the_startup_error_and_stays_unconfigured(node, client, io):
    assert _state(client) == "unconfigured"
    assert _transition(client, Transition.TRANSITION_CONFIGURE) is False
    assert node.wait_for_log("cannot configure: invalid parameters", 10), node.log()
    assert "model: /does/not/exist does not exist" in node.log()
    assert _state(client) == "unconfigured" and node.proc.poll() is None


def test_configure_then_activate_with_frames_flowing(node, client, io, model):
    # unconfigured: start-up parameters may change (checked at configure)
    assert [r.successful for r in _set(client, model=str(model))] == [True]
    assert _transition(client, Transition.TRANSITION_CONFIGURE) is True
    assert _state(client) == "inactive"
    assert client.wait_publishers([f"{NS}/labels"])
    assert _no_image_subscription(client)  # inactive: frames cannot arrive
    assert _transition(client, Transition.TRANSITION_ACTIVATE) is True
    assert _state(client) == "active"
    assert client.wait_matched(io["image"]) and client.wait_matched(io["point"])
    assert _frame(io, client, 2) is not None


def test_runtime_parameter_changes_behaviour_on_the_next_frame(node, client, io):
    point = PointStamped()
    point.point.x, point.point.y, point.point.z = 160.0, 120.0, 1.0
    io["point"].publish(point)
    client.spin_for(0.5)
    assert _objects(_frame(io, client, 3)) == 1
    assert [r.successful for r in _set(client, min_score=0.5)] == [True]
    assert _objects(_frame(io, client, 4)) == 0  # predicted IoU ~ -0.2 < 0.5: dropped
    bad_value, fixed = _set(client, min_score=2.0), _set(client, model="/other/model")
    assert not bad_value[0].successful and "min_score: 2.0 is above the maximum 1.0" in bad_value[0].reason
    assert not fixed[0].successful and "model: cannot change while the node runs" in fixed[0].reason
    assert [r.successful for r in _set(client, min_score=0.0)] == [True]
    assert _objects(_frame(io, client, 5)) == 1


def test_enable_false_stops_outputs_and_true_resumes(node, client, io):
    reply = client.call(SetBool, f"{NS}/enable", SetBool.Request(data=False))
    assert reply.success and "paused" in reply.message
    assert client.wait_until(lambda: diagnostic(io["diagnostics"], "enabled") == "False", 5)
    processed = _counter(io, "frames_processed")
    io["image"].publish(image_msg(FRAME, "rgb8", 6))
    # the frame arrived and was not decoded: counted as received while paused, none processed
    assert client.wait_until(lambda: (_counter(io, "frames_while_paused") or 0) >= 1, 10)
    assert _counter(io, "frames_processed") == processed
    paused = [s.message for s in io["diagnostics"][-1].status]
    assert any("paused" in text for text in paused), paused
    reply = client.call(SetBool, f"{NS}/enable", SetBool.Request(data=True))
    assert reply.success and "resumed" in reply.message
    assert _objects(_frame(io, client, 7)) == 1


def test_clear_service_replies_and_clears(node, client, io):
    reply = client.call(Trigger, f"{NS}/clear", Trigger.Request())
    assert reply.success and "cleared 1 point(s)" in reply.message, reply.message
    assert _objects(_frame(io, client, 8)) == 0


def test_deactivate_activate_cycles_and_cleanup_shutdown(node, client, io):
    for cycle in range(2):
        assert _transition(client, Transition.TRANSITION_DEACTIVATE) is True
        assert _state(client) == "inactive"
        assert _no_image_subscription(client)
        assert _transition(client, Transition.TRANSITION_ACTIVATE) is True
        assert client.wait_matched(io["image"])
        assert _frame(io, client, 30 + cycle) is not None
    assert _transition(client, Transition.TRANSITION_DEACTIVATE) is True
    assert _transition(client, Transition.TRANSITION_CLEANUP) is True
    assert _state(client) == "unconfigured"
    assert client.wait_until(lambda: client.node.count_publishers(f"{NS}/labels") == 0, 10)
    assert _transition(client, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN) is True
    assert _state(client) == "finalized" and node.proc.poll() is None
