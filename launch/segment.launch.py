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
  log_level    debug | info | warn | error (debug prints per-frame stage timings)

Launch arguments given here override the params file; everything else is set there.
"""

import os
import tempfile

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

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
)
OVERRIDES = ("model", "backend", "transport", "mode")
RVIZ_TOPICS = {"camera": "/camera/image_raw", "overlay": "/mobilesam/overlay", "mask": "/mobilesam/mask"}


def _absolute(name: str, namespace: str) -> str:
    if name.startswith("/"):
        return name
    return "/" + "/".join(p for p in (namespace.strip("/"), name.strip("/")) if p)


def _logger_name(namespace: str, node_name: str) -> str:
    return ".".join(p for p in namespace.strip("/").split("/") + [node_name] if p)


def _setup(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    share = get_package_share_directory(PACKAGE)
    params_file = value["params_file"] or os.path.join(share, "config", "segment.yaml")
    overrides = {name: value[name] for name in OVERRIDES if value[name]}
    parameters = [params_file] + ([overrides] if overrides else [])
    namespace, node_name = value["namespace"], value["node_name"]
    node = Node(
        package=PACKAGE,
        executable="segment_node",
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
    if value["rviz"].lower() in ("true", "1", "yes", "on"):
        node_topic = _absolute(node_name, namespace)
        topics = {
            RVIZ_TOPICS["camera"]: _absolute(value["image"], namespace),
            RVIZ_TOPICS["overlay"]: node_topic + "/overlay",
            RVIZ_TOPICS["mask"]: node_topic + "/mask",
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


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS]
        + [OpaqueFunction(function=_setup)]
    )
