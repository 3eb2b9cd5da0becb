"""The ROS 2 layer: the only part of mobilesam_ros that imports rclpy and messages.

``node.py`` is the ``segment_node`` executable, composed of parts by stage:
``camera.py`` (one camera, wired at configure and activate), ``images.py`` (image
input, QoS matching in ``qos.py``), ``prompts.py`` (prompt topics), ``outputs.py``
(2D outputs), ``depth3d.py`` (3D outputs), ``control.py`` (run-time parameters and
services), ``startup.py`` (model, segment-everything), ``diagnostics.py``
(/diagnostics); ``params.py`` declares the parameters of
:mod:`mobilesam_ros.live.config`; ``lifecycle_node.py`` is the managed node. The
message conversions the node shares with ``bag/`` are :mod:`mobilesam_ros.messages`.
"""
