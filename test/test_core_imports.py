"""The core imports without rclpy and without torch (the runtime path stays light)."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'rclpy'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import mobilesam_ros, mobilesam_ros.predictor, mobilesam_ros.transforms, mobilesam_ros.visualize
import mobilesam_ros.runtime, mobilesam_ros.cli
from mobilesam_ros.cli import build_parser
build_parser()
print('ok')
"""


def test_core_imports_without_torch_and_rclpy():
    result = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
