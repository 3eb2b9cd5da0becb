"""mobilesam_ros: an ament_python ROS 2 package that also installs with pip.

Installs three ways: ``pip install -e .`` / ``pip install .`` (console scripts on the
environment's PATH) and colcon (``colcon build [--symlink-install]``: ament_python
puts the console scripts in lib/mobilesam_ros for ``ros2 run``; the ``mobilesam-ros``
CLI is also put in the install space's bin/, which install/setup.bash adds to PATH).
"""

import shutil
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.develop import develop
from setuptools.command.install import install

PACKAGE = "mobilesam_ros"
CLI = "mobilesam-ros"
# colcon --symlink-install runs this file from build/mobilesam_ros, where only setup.py,
# setup.cfg, the packages and the data files are linked: find README.md through the
# link, and do without it where it is not there at all
_README = Path(__file__).resolve().parent / "README.md"
LONG_DESCRIPTION = _README.read_text(encoding="utf-8") if _README.is_file() else ""


def _cli_on_path(scripts_dir: str) -> None:
    """In the ament layout (setup.cfg: scripts in <prefix>/lib/mobilesam_ros, for
    ``ros2 run``), also put the CLI in <prefix>/bin, which a sourced install space has
    on PATH, so ``mobilesam-ros ...`` works as in a pip install."""
    scripts = Path(scripts_dir)
    if scripts.name != PACKAGE or scripts.parent.name != "lib" or not (scripts / CLI).is_file():
        return  # pip (wheel) installs: console scripts are on PATH already
    bin_dir = scripts.parent.parent / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(scripts / CLI, bin_dir / CLI)


class Install(install):
    def run(self):
        super().run()
        _cli_on_path(self.install_scripts)


class Develop(develop):
    def run(self):
        super().run()
        if not getattr(self, "uninstall", False):
            _cli_on_path(self.script_dir)

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Segment Anything (MobileSAM / TinySAM / MobileSAMv2) for ROS 2 robots",
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(exclude=["test", "test.*"]),
    # the toy-world model's trained tensors (mobilesam-ros synthetic / the demo)
    package_data={PACKAGE: ["toy/*.npz"]},
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
        # ONNX Runtime's CUDA (and TensorRT) execution providers. The wheel provides the
        # same `onnxruntime` module as the CPU one: uninstall `onnxruntime` first
        # (README: GPU installs); CUDA 12 wheels on PyPI, JetPack ships its own build
        "gpu": ["onnxruntime-gpu>=1.18"],
        # ROS 2 from pip wheels (Kilted); a ROS install from apt provides these instead
        "ros": [
            "ros-kilted-rclpy",
            "ros-kilted-ament-index-python",
            "ros-kilted-sensor-msgs",
            "ros-kilted-std-msgs",
            "ros-kilted-std-srvs",
            "ros-kilted-geometry-msgs",
            "ros-kilted-visualization-msgs",
            "ros-kilted-diagnostic-msgs",
            "ros-kilted-rmw-fastrtps-cpp",
        ],
        # the same on the ROS 2 Jazzy pip wheels (Fast DDS 2.14; Python 3.11 or 3.12)
        "ros-jazzy": [
            "ros-jazzy-rclpy",
            "ros-jazzy-ament-index-python",
            "ros-jazzy-sensor-msgs",
            "ros-jazzy-std-msgs",
            "ros-jazzy-std-srvs",
            "ros-jazzy-geometry-msgs",
            "ros-jazzy-visualization-msgs",
            "ros-jazzy-diagnostic-msgs",
            "ros-jazzy-rmw-fastrtps-cpp",
        ],
        # mobilesam-ros bag: rosbag2 (sqlite3, MCAP) without ROS (COCO RLE is built in;
        # the tests decode it with pycocotools)
        "bag": ["rosbags>=0.10"],
        # rosdep: test/test_rosdep.py checks package.xml against the real key database;
        # ruff: the linter CI runs (ruff.toml; pinned to a minor version: its rules change);
        # mkdocs: the documentation site (mkdocs.yml; 1.6 validates anchors)
        "test": ["pytest>=7", "onnx>=1.15", "rosbags>=0.10", "pycocotools>=2.0.7", "rosdep>=0.25",
                 "ruff>=0.17,<0.18", "mkdocs>=1.6,<2"],
    },
    cmdclass={"install": Install, "develop": Develop},
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "mobilesam-ros = mobilesam_ros.cli:main",
            "segment_node = mobilesam_ros.ros.node:main",
            "segment_lifecycle_node = mobilesam_ros.ros.lifecycle_node:main",
        ],
    },
)
