"""ROS messages <-> numpy, without ROS: what the node (``ros/``) and ``mobilesam-ros bag``
(``bag/``) both read and build, in one place.

Every function takes messages, and the message classes it builds, by duck typing
(any object with the fields): rclpy messages in the node, ``rosbags`` messages in
``bag/``, simple stand-ins in tests where a message package (vision_msgs) is not
installed. Nothing here imports rclpy or a message package.

``images`` (Image / CompressedImage -> RGB, stamps as frame keys, reused outgoing
Images), ``detections`` (vision_msgs 2D: box and object prompts in, ``~/detections``
out), ``objects3d`` (3D objects from depth + CameraInfo, ``~/detections_3d``,
``~/points``, ``~/markers``).
"""
