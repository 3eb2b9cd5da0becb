"""Launch the MobileSAM segmentation node (and optionally rviz2).

    ros2 launch mobilesam_ros segment.launch.py image:=/camera/image_raw model:=/path/to/mobile_sam.pt
    ros2 launch mobilesam_ros segment.launch.py image:=/camera/image_raw model:=/path/to/exported_dir \\
        backend:=onnxruntime namespace:=front rviz:=true

Arguments (``ros2 launch mobilesam_ros segment.launch.py --show-args``):
  image        camera topic, remapped onto the node's ``image`` input
  model        checkpoint (.pt) or exported model directory; empty: the params file's
  backend      auto | torch | onnxruntime | tensorrt; empty: the params file's
  transport    raw | compressed; empty: the params file's
  mode         prompt | everything; empty: the params file's
  namespace    namespace of the node (its topics become /<namespace>/<node_name>/...)
  node_name    name of the node (default mobilesam)
  params_file  parameter file (default: the installed config/segment.yaml)
  rviz         true: start rviz2 with config/segment.rviz showing camera, overlay and mask
               (and the 3D markers and points when depth_topic is set)
  log_level    debug | info | warn | error (debug prints per-frame stage timings)
  lifecycle    true: start segment_lifecycle_node (a managed node) instead of segment_node
  autostart    with lifecycle:=true: configure, then activate it once configured (like
               yolo_ros); false: it waits unconfigured for a lifecycle manager
  cameras      several cameras, one model: names, e.g. cameras:=front,rear (camera NAME reads
               NAME/image: remap those topics, see the README); empty: one camera on ``image``

Launch arguments given here override the params file; everything else is set there.
"""

import os
import tempfile

from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription

PACKAGE = "mobilesam_ros"

# (name, default, description); an empty default leaves the params file's value
ARGUMENTS = (
    ("image", "/camera/image_raw", "camera topic (sensor_msgs/Image; <image>/compressed with transport:=compressed)"),
    ("model", "", "MobileSAM checkpoint (.pt) or exported model directory (overrides the params file)"),
    ("backend", "", "auto | torch | onnxruntime | tensorrt (overrides the params file)"),
    ("transport", "", "raw | compressed (overrides the params file)"),
    ("mode", "", "prompt | everything (overrides the params file)"),
    ("namespace", "", "namespace of the node"),
    ("node_name", "mobilesam", "name of the node"),
    ("params_file", "", "parameter file (default: share/mobilesam_ros/config/segment.yaml)"),
    ("rviz", "false", "start rviz2 with config/segment.rviz"),
    ("log_level", "info", "debug | info | warn | error"),
    ("lifecycle", "false", "true: start segment_lifecycle_node (managed) instead of segment_node"),
    ("autostart", "true", "with lifecycle:=true: configure and activate the node at launch"),
    ("cameras", "", "several cameras, one model: comma-separated names (each reads <name>/image)"),
)
OVERRIDES = ("model", "backend", "transport", "mode", "cameras")
TRUE = ("true", "1", "yes", "on")
RVIZ_TOPICS = {"camera": "/camera/image_raw", "overlay": "/mobilesam/overlay", "mask": "/mobilesam/mask",
               "markers": "/mobilesam/markers", "points": "/mobilesam/points"}


def _absolute(name: str, namespace: str) -> str:
    if name.startswith("/"):
        return name
    return "/" + "/".join(p for p in (namespace.strip("/"), name.strip("/")) if p)


def _logger_name(namespace: str, node_name: str) -> str:
    return ".".join(p for p in namespace.strip("/").split("/") + [node_name] if p)


def _rviz_installed() -> bool:
    try:
        get_package_share_directory("rviz2")
        return True
    except PackageNotFoundError:
        return False


def _setup(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    share = get_package_share_directory(PACKAGE)
    params_file = value["params_file"] or os.path.join(share, "config", "segment.yaml")
    overrides = {name: value[name] for name in OVERRIDES if value[name]}
    parameters = [params_file] + ([overrides] if overrides else [])
    namespace, node_name = value["namespace"], value["node_name"]
    lifecycle = value["lifecycle"].lower() in TRUE
    node_action = Node
    if lifecycle:
        from launch_ros.actions import LifecycleNode as node_action
    node = node_action(
        package=PACKAGE,
        executable="segment_lifecycle_node" if lifecycle else "segment_node",
        name=node_name,
        namespace=namespace,
        parameters=parameters,
        remappings=[("image", value["image"])],
        # the node's logger is named <namespace with dots>.<node name>
        arguments=["--ros-args", "--log-level", f"{_logger_name(namespace, node_name)}:={value['log_level']}"],
        output="screen",
        emulate_tty=True,
    )
    actions = [node]
    if lifecycle and value["autostart"].lower() in TRUE:
        actions += _autostart(node)
    if value["rviz"].lower() in ("true", "1", "yes", "on") and not _rviz_installed():
        # rviz2 is not a dependency of the package (headless robots need no Qt)
        actions.append(LogInfo(msg="rviz:=true but rviz2 is not installed (sudo apt install "
                                   "ros-$ROS_DISTRO-rviz2): starting the node without it"))
    elif value["rviz"].lower() in ("true", "1", "yes", "on"):
        node_topic = _absolute(node_name, namespace)
        topics = {
            RVIZ_TOPICS["camera"]: _absolute(value["image"], namespace),
            RVIZ_TOPICS["overlay"]: node_topic + "/overlay",
            RVIZ_TOPICS["mask"]: node_topic + "/mask",
            RVIZ_TOPICS["markers"]: node_topic + "/markers",
            RVIZ_TOPICS["points"]: node_topic + "/points",
        }
        with open(os.path.join(share, "config", "segment.rviz"), encoding="utf-8") as f:
            text = f.read()
        for template, actual in topics.items():
            text = text.replace(f"Value: {template}\n", f"Value: {actual}\n")
        handle, rviz_config = tempfile.mkstemp(prefix="mobilesam_", suffix=".rviz")
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(text)
        actions.append(
            Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", rviz_config], output="screen")
        )
    return actions


def _autostart(node):
    """configure now, activate once configure succeeded (only after configuring, so a
    later manual deactivate is not undone)."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    def change(transition_id):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=transition_id))

    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[change(Transition.TRANSITION_ACTIVATE)],
    ))
    return [activate, change(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_setup)]
    )
