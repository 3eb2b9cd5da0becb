"""The import rules of docs/architecture.md, checked on the code: every ``import`` of
mobilesam_ros/ (module level or inside functions) is read with ``ast`` and checked
against what its layer may import.

Outside the rules: the imports that are there by design (``ALLOWED``: the demo's ROS
side, a benchmark timing the real message classes) and the known exceptions still to
remove (``EXCEPTIONS``: each names the file, what it imports, and what removing it
takes); the page lists the same ones. A new import that breaks a rule fails here; an
entry that is no longer used fails too, so the lists only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mobilesam_ros"

# the package's units: a subpackage or a top-level module. The foundation (no heavy
# imports, nothing above it): errors, variants, weights (known checkpoints, the toy-world
# model recognised by its tensors) and geometry (the model's tensor sizes)
FOUNDATION = {"__init__", "errors", "variants", "weights", "geometry"}
CORE = FOUNDATION | {"runtime", "transforms", "postprocess", "predictor", "visualize", "everything", "live"}
# unit -> the units it may import (itself always)
MAY_IMPORT: dict[str, set[str]] = {
    "__init__": set(),
    "errors": set(),
    "variants": set(),
    "geometry": set(),
    "weights": {"errors"},
    "modeling": FOUNDATION,  # PyTorch model: nothing above it (never runtime/, which builds on it)
    "runtime": FOUNDATION | {"modeling"},  # the torch backend builds the model; never toy/
    "transforms": FOUNDATION,
    "postprocess": FOUNDATION | {"transforms"},
    "visualize": FOUNDATION,
    "predictor": FOUNDATION | {"runtime", "transforms", "postprocess"},
    "everything": FOUNDATION | {"runtime", "transforms", "postprocess", "predictor", "visualize"},
    "live": CORE - {"live"},  # the ROS-free live pipeline: core only
    # ROS messages <-> numpy by duck typing, shared by the node (ros/) and bag/ (and bench/)
    "messages": CORE,
    "ros": CORE | {"messages"},  # the node: never commands, bench, bag
    "bag": CORE | {"messages"},  # recorded data: never ros
    "export": FOUNDATION | {"modeling", "runtime", "transforms"},
    "quantize": CORE | {"export", "toy"},
    "toy": CORE | {"modeling"},
    # argparse types, model options, open_runtime: below commands/ and bench/, so neither
    # reaches into the other
    "arguments": FOUNDATION | {"runtime"},
    "commands": CORE | {"arguments", "messages", "modeling", "export", "quantize", "toy", "bag", "bench", "cli"},
    "bench": CORE | {"arguments", "messages", "modeling", "export", "quantize", "toy", "bag"},
    "cli": {"errors", "commands"},
    "__main__": {"cli"},
}
# ROS 2 client libraries and message packages: only ros/ imports them
ROS_MODULES = {"rclpy", "launch", "launch_ros", "ament_index_python", "rosidl_runtime_py", "message_filters",
               "tf2_ros", "builtin_interfaces", "rcl_interfaces", "std_msgs", "std_srvs", "sensor_msgs", "geometry_msgs",
               "vision_msgs", "visualization_msgs", "diagnostic_msgs", "lifecycle_msgs"}
ROS_ALLOWED_UNITS = {"ros"}

# (importing file, imported module) -> why. Imports outside the rules above that are there
# by design (docs/architecture.md, "Allowed by design"); each one is lazy or guarded, so the
# package still imports without ROS.
ALLOWED: dict[tuple[str, str], str] = {
    # the demo is a ROS driver: its transport (rclpy) is in ros/, loaded when the demo streams
    ("commands/demo.py", "mobilesam_ros.ros.demo_stream"): "the demo's ROS side, imported when it streams",
    # the benchmark times the 3D message builders with the real classes when ROS is installed
    ("bench/rgbd.py", "sensor_msgs.msg"): "times the message builders with the real classes (optional)",
    ("bench/rgbd.py", "std_msgs.msg"): "times the message builders with the real classes (optional)",
    ("bench/rgbd.py", "visualization_msgs.msg"): "times the message builders with the real classes (optional)",
    ("bench/rgbd.py", "vision_msgs.msg"): "times the message builders with the real classes (optional)",
}

# (importing file, imported module) -> why it is there and what removing it takes.
# Every entry is a known break of the rules above; docs/architecture.md lists them.
EXCEPTIONS: dict[tuple[str, str], str] = {
    # to remove: move scale_to_uint8 (16-bit grey -> 8 bit) from live/frames.py down into transforms
    ("transforms.py", "mobilesam_ros.live.frames"): "read_rgb scales 16-bit PNGs as the node scales mono16",
    # to remove: move the int8-vs-fp32 speed comparison (quantize speed) into bench/
    ("quantize.py", "mobilesam_ros.bench.model"): "quantize speed reuses the model benchmark's helpers",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str) -> str:
    """The module a dotted name refers to (``mobilesam_ros.geometry.IMAGE_SIZE`` ->
    ``mobilesam_ros.geometry``; ``mobilesam_ros.__version__`` -> ``mobilesam_ros``)."""
    parts = name.split(".")
    while len(parts) > 1:
        path = REPO.joinpath(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            break
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, source: str | None = None) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, relative ones resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    source = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            if prefix.split(".")[0] == "mobilesam_ros":  # `from . import x` may name a module
                found += [(_resolve(f"{prefix}.{alias.name}"), node.lineno) for alias in node.names]
            else:
                found.append((prefix, node.lineno))
    return found


def unit_of(module: str) -> str:
    """The unit of a mobilesam_ros module name."""
    parts = module.split(".")[1:]
    return parts[0] if parts else "__init__"


def violations(extra: dict[Path, str] | None = None) -> tuple[list[str], set[tuple[str, str]]]:
    """Broken rules, and the exceptions used. ``extra``: more files (path -> source) to check."""
    problems, used = [], set()
    files = {path: None for path in sorted(PACKAGE.rglob("*.py"))} | dict(extra or {})
    for path, source in files.items():
        rel = path.relative_to(PACKAGE).as_posix()
        own = unit_of(_module_name(path))
        for imported, line in imports_of(path, source):
            top = imported.split(".")[0]
            if top == "mobilesam_ros":
                target = unit_of(imported)
                allowed = target == own or target in MAY_IMPORT[own]
                rule = f"{own} may not import {target}"
            elif top in ROS_MODULES:
                allowed = own in ROS_ALLOWED_UNITS
                rule = "ROS 2 (rclpy, message packages) only under ros/"
            else:
                continue
            if allowed:
                continue
            if (rel, imported) in ALLOWED or (rel, imported) in EXCEPTIONS:
                used.add((rel, imported))
                continue
            problems.append(f"mobilesam_ros/{rel}:{line} imports {imported}: {rule} (docs/architecture.md)")
    return problems, used


def test_every_unit_has_a_rule():
    units = {unit_of(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert units <= set(MAY_IMPORT), f"new units without a rule in MAY_IMPORT: {units - set(MAY_IMPORT)}"


def test_imports_keep_the_architecture_rules():
    problems, _ = violations()
    assert not problems, "\n".join(problems)


def test_every_exception_is_still_needed():
    _, used = violations()
    stale = (set(EXCEPTIONS) | set(ALLOWED)) - used
    assert not stale, f"these exceptions are gone from the code: delete them here and in docs/architecture.md: {stale}"


def test_the_architecture_page_lists_every_exception():
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for rel, imported in {**ALLOWED, **EXCEPTIONS}:
        assert f"`{rel}`" in page, f"docs/architecture.md does not list the exception in {rel}"


@pytest.mark.parametrize("folder,source,expected", [
    ("live", "import rclpy\n", "ROS 2"),
    ("live", "from ..commands._common import load_image\n", "live may not import commands"),
    ("live", "from mobilesam_ros.ros import node\n", "live may not import ros"),
    ("runtime", "from ..toy.model import SHIPPED\n", "runtime may not import toy"),
    ("modeling", "from ..runtime.base import Runtime\n", "modeling may not import runtime"),
    ("bench", "from ..commands._common import load_image\n", "bench may not import commands"),
    ("commands", "from ..ros.node import main\n", "commands may not import ros"),
    ("commands", "from rclpy.node import Node\n", "ROS 2"),
    ("bag", "from ..ros import node\n", "bag may not import ros"),
])
def test_a_new_violation_is_caught(folder, source, expected):
    """The checker itself: a (virtual) file in ``folder`` with a forbidden import is reported."""
    probe = PACKAGE / folder / "_import_rules_probe.py"
    problems, _ = violations({probe: source})
    assert any(f"{folder}/_import_rules_probe.py" in p and expected in p for p in problems), problems
