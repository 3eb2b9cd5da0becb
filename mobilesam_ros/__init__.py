"""mobilesam_ros: Segment Anything (MobileSAM / TinySAM / MobileSAMv2) for ROS 2.

Everything outside ``mobilesam_ros.ros`` imports without rclpy, and everything
outside ``mobilesam_ros.modeling`` and the torch runtime imports without torch.
"""

__version__ = "0.1.0"
