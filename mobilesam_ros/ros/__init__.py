"""The ROS 2 layer: the only part of mobilesam_ros that imports rclpy and messages.

``node.py`` is the ``segment_node`` executable; ``conversions.py`` turns messages
into arrays and back; ``params.py`` declares the parameters of
:mod:`mobilesam_ros.live.config`; ``diagnostics.py`` builds /diagnostics messages.
"""
