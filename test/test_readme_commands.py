"""The README's commands, run exactly as written: every fenced bash block preceded by
``<!-- readme-test: WHERE -->`` in README.md or docs/*.md runs in bash (``set -e``: a
failing command fails it; a block repeated word for word runs once).

WHERE: ``clone`` runs it in this clone (setup re-runs cheaply there: pip skips what is
installed, the command line is cached), ``scratch`` in an empty folder; ``HOME=scratch``
also gives it a scratch home (``~/ws`` then lands in a temporary folder). The blocks run
in the environment of the test run (after ``source scripts/ros_env.sh``, as the README
goes on from its Install section).

Blocks that use ``ros2`` need the command line (scripts/install_ros_cli.sh): skipped
without it on a developer machine, a failure in CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ros_harness import domain_for

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^([ \t]*)<!-- readme-test: ([^>]*?) -->\n\1```bash\n(.*?)^\1```", re.M | re.S)
DOMAIN = domain_for(__name__)


def readme_blocks(path: Path = REPO / "README.md") -> list[tuple[str, str, int]]:
    """(where, code, line number) of each marked block."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in MARKER.finditer(text):
        indent, where, body = match.groups()
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((where.strip(), textwrap.dedent(body) if indent else body, line))
    return blocks


def doc_blocks() -> list[tuple[str, str, str]]:
    """(where, code, "file:line") of the marked blocks of README.md and docs/*.md; a block
    that the docs repeat word for word (the README's quick start) runs once."""
    seen, blocks = set(), []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for where, code, line in readme_blocks(path):
            if (where, code) not in seen:
                seen.add((where, code))
                blocks.append((where, code, f"{path.relative_to(REPO)}:{line}"))
    return blocks


BLOCKS = readme_blocks()
DOC_BLOCKS = doc_blocks()


def test_the_readme_marks_its_setup_workspace_and_first_commands():
    codes = "\n".join(code for _, code, _ in BLOCKS)
    assert len(BLOCKS) >= 4, BLOCKS
    for command in ("scripts/setup_env.sh", "source scripts/ros_env.sh", "colcon build",
                    "ros2 launch mobilesam_ros segment.launch.py", "mobilesam-ros synthetic-checkpoint --toy"):
        assert command in codes, command


def _checks(code: str, out: str, cwd: Path, home: Path | None) -> None:
    """What a block's commands must have done, beyond exiting 0."""
    if "--show-args" in code:
        assert "'model':" in out and "'lifecycle':" in out, out
    if "ros2 pkg executables mobilesam_ros" in code:
        assert "mobilesam_ros segment_node" in out and "mobilesam_ros segment_lifecycle_node" in out, out
    if "ros2 pkg prefix mobilesam_ros" in code and home is not None:
        assert f"{home}/ws/install/mobilesam_ros" in out, out
    if "synthetic-checkpoint --toy models/toy_world.pt" in code:
        assert (cwd / "models" / "toy_world.pt").stat().st_size > 30e6


@pytest.mark.parametrize("where,code,line", DOC_BLOCKS, ids=[line for _, _, line in DOC_BLOCKS])
def test_readme_block_runs_as_written(where, code, line, tmp_path):
    options = [o.strip() for o in where.split(",")]
    cwd = REPO if "clone" in options else tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    env = dict(os.environ, ROS_DOMAIN_ID=str(DOMAIN), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    home = None
    if "HOME=scratch" in options:
        home = tmp_path / "home"
        home.mkdir()
        env["HOME"] = str(home)
    if re.search(r"^\s*ros2 ", code, re.M) and not (Path(sys.executable).parent / "ros2").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{line} uses ros2, which setup did not install in {sys.prefix}")
        pytest.skip("no ros2 command line in this venv (scripts/setup_env.sh installs it where vendored)")
    result = subprocess.run(["bash", "-c", "set -e -o pipefail\n" + code], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, f"{line} failed (exit {result.returncode}):\n{code}\n---\n{out[-4000:]}"
    _checks(code, out, cwd, home)
