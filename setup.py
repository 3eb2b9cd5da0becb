"""mobilesam_ros: an ament_python ROS 2 package that also installs with pip."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mobilesam_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Segment Anything (MobileSAM / TinySAM / MobileSAMv2) for ROS 2 robots",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/models", ["models/README.md"]),
    ],
    install_requires=[
        "numpy>=1.22",
        "opencv-python-headless>=4.6",
        "pillow>=9.0",
        "onnxruntime>=1.16",
        "pyyaml>=5.4",
    ],
    extras_require={
        # exporting ONNX models and the PyTorch backend (torch pinned by the README/CI
        # to the CPU build; a CUDA build works the same)
        "export": ["torch>=2.1", "onnx>=1.15"],
        # ROS 2 from pip wheels (Kilted); a ROS install from apt provides these instead
        "ros": [
            "ros-kilted-rclpy",
            "ros-kilted-sensor-msgs",
            "ros-kilted-std-msgs",
            "ros-kilted-std-srvs",
            "ros-kilted-geometry-msgs",
            "ros-kilted-visualization-msgs",
            "ros-kilted-diagnostic-msgs",
            "ros-kilted-rmw-fastrtps-cpp",
        ],
        "test": ["pytest>=7", "onnx>=1.15"],
    },
    tests_require=["pytest"],
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "mobilesam-ros = mobilesam_ros.cli:main",
            "segment_node = mobilesam_ros.ros.node:main",
        ],
    },
)
