"""The import rules of docs/architecture.md, checked on the code: every ``import`` of
mobilesam_ros/ (module level or inside functions) is read with ``ast`` and checked
against what its layer may import.

The code keeps the rules today except for the known exceptions in ``EXCEPTIONS``
(each names the file, what it imports, and what removing it takes); the page lists the
same ones. A new import that breaks a rule fails here; an exception that is no longer
used fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "mobilesam_ros"

# the package's units: a subpackage, a top-level module, or runtime/base.py (the runtime
# interface and the model's geometry constants, which every layer above modeling uses)
FOUNDATION = {"__init__", "errors", "variants", "weights", "runtime.base"}
CORE = FOUNDATION | {"runtime", "transforms", "postprocess", "predictor", "visualize", "everything", "live"}
# unit -> the units it may import (itself always; FOUNDATION everywhere except noted)
MAY_IMPORT: dict[str, set[str]] = {
    "__init__": set(),
    "errors": set(),
    "variants": set(),
    "weights": {"errors"},
    "runtime.base": {"errors", "variants"},
    "modeling": {"__init__", "errors", "variants", "weights"},  # PyTorch model: nothing above it
    "runtime": FOUNDATION | {"modeling"},  # the torch backend builds the model
    "transforms": FOUNDATION,
    "postprocess": FOUNDATION | {"transforms"},
    "visualize": FOUNDATION,
    "predictor": FOUNDATION | {"runtime", "transforms", "postprocess"},
    "everything": FOUNDATION | {"runtime", "transforms", "postprocess", "predictor", "visualize"},
    "live": CORE - {"live"},  # the ROS-free live pipeline: core only
    "ros": CORE,  # the node: core only (never commands, bench, bag)
    "bag": CORE,  # recorded data: core only
    "export": FOUNDATION | {"modeling", "runtime", "transforms"},
    "quantize": CORE | {"export", "toy"},
    "toy": CORE | {"modeling"},
    "commands": CORE | {"modeling", "export", "quantize", "toy", "bag", "bench", "cli"},
    "bench": CORE | {"modeling", "export", "quantize", "toy", "bag"},
    "cli": {"errors", "commands"},
    "__main__": {"cli"},
}
# ROS 2 client libraries and message packages: only ros/ imports them
ROS_MODULES = {"rclpy", "launch", "launch_ros", "ament_index_python", "rosidl_runtime_py", "message_filters",
               "tf2_ros", "builtin_interfaces", "std_msgs", "std_srvs", "sensor_msgs", "geometry_msgs",
               "vision_msgs", "visualization_msgs", "diagnostic_msgs", "lifecycle_msgs"}
ROS_ALLOWED_UNITS = {"ros"}

# (importing file, imported module) -> why it is there and what removing it takes.
# Every entry is a known break of the rules above; docs/architecture.md lists them.
EXCEPTIONS: dict[tuple[str, str], str] = {
    # to remove: move the model geometry (IMAGE_SIZE, LOW_RES_SIZE, ...) out of runtime/base.py
    # into a bottom module that modeling, transforms and runtime all import
    ("modeling/sam.py", "mobilesam_ros.runtime.base"): "geometry constants live in runtime/base.py",
    ("modeling/fast_decoder.py", "mobilesam_ros.runtime.base"): "geometry constants live in runtime/base.py",
    # to remove: move scale_to_uint8 (16-bit grey -> 8 bit) from live/frames.py down into transforms
    ("transforms.py", "mobilesam_ros.live.frames"): "read_rgb scales 16-bit PNGs as the node scales mono16",
    # to remove: make frame_size / open_runtime / add_model_arguments public in one module below
    # commands/ and bench/ (commands imports bench, so bench must not import commands)
    ("bench/bag.py", "mobilesam_ros.commands._common"): "private CLI helpers (frame_size, open_runtime, ...)",
    ("bench/depth.py", "mobilesam_ros.commands._common"): "private CLI helper frame_size",
    ("bench/tracking.py", "mobilesam_ros.commands._common"): "private CLI helper frame_size",
    # to remove: the message builders shared by the node and bag/ (duck-typed, no rclpy at
    # import time) move to one place below both, which bench/ may import too
    ("bag/messages.py", "mobilesam_ros.ros.conversions"): "detections message builder lives in ros/",
    ("bag/pipeline.py", "mobilesam_ros.ros.conversions"): "image conversions live in ros/",
    ("bag/depth.py", "mobilesam_ros.ros.objects3d"): "3D message builders live in ros/",
    ("bench/depth.py", "mobilesam_ros.ros.objects3d"): "times the node's 3D message builders",
    # to remove: move the int8-vs-fp32 speed comparison (quantize speed) into bench/
    ("quantize.py", "mobilesam_ros.bench.model"): "quantize speed reuses the model benchmark's helpers",
    # added while this test was written (per-model segment-everything thresholds): the runtime
    # and export recognise the toy-world model's weights through toy/model.py;
    # to remove: move everything_defaults (pure numpy) below runtime, e.g. beside variants.py
    ("export.py", "mobilesam_ros.toy.model"): "records the toy-world model's everything thresholds",
    ("runtime/torch_backend.py", "mobilesam_ros.toy.model"): "reads the toy-world model's everything thresholds",
    # the demo is a ROS driver by design (starts segment_node, streams frames over DDS);
    # to remove: move the driver into ros/ (e.g. ros/demo_driver.py) and import it from the command
    ("commands/demo.py", "mobilesam_ros.ros.node"): "configure_fastdds_profile for the demo's own process",
    ("commands/demo.py", "rclpy"): "the demo's ROS driver",
    ("commands/demo.py", "rclpy.node"): "the demo's ROS driver",
    ("commands/demo.py", "rclpy.qos"): "the demo's ROS driver",
    ("commands/demo.py", "diagnostic_msgs.msg"): "the demo's ROS driver",
    ("commands/demo.py", "geometry_msgs.msg"): "the demo's ROS driver",
    ("commands/demo.py", "sensor_msgs.msg"): "the demo's ROS driver",
    # to remove: with the message builders below ros/ (above), build them from the
    # installed message classes there
    ("bench/depth.py", "sensor_msgs.msg"): "checks its messages against the real classes when ROS is there",
    ("bench/depth.py", "std_msgs.msg"): "checks its messages against the real classes when ROS is there",
    ("bench/depth.py", "visualization_msgs.msg"): "checks its messages against the real classes when ROS is there",
    ("bench/depth.py", "vision_msgs.msg"): "checks its messages against the real classes when ROS is there",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(name: str) -> str:
    """The module a dotted name refers to (``mobilesam_ros.runtime.base.IMAGE_SIZE`` ->
    ``mobilesam_ros.runtime.base``; ``mobilesam_ros.__version__`` -> ``mobilesam_ros``)."""
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
    if not parts:
        return "__init__"
    if parts[:2] == ["runtime", "base"]:
        return "runtime.base"
    return parts[0]


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
            if (rel, imported) in EXCEPTIONS:
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
    stale = set(EXCEPTIONS) - used
    assert not stale, f"these exceptions are gone from the code: delete them here and in docs/architecture.md: {stale}"


def test_the_architecture_page_lists_every_exception():
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    for rel, imported in EXCEPTIONS:
        assert f"`{rel}`" in page, f"docs/architecture.md does not list the exception in {rel}"


@pytest.mark.parametrize("source,expected", [
    ("import rclpy\n", "ROS 2"),
    ("from ..commands._common import frame_size\n", "live may not import commands"),
    ("from mobilesam_ros.ros import node\n", "live may not import ros"),
])
def test_a_new_violation_is_caught(source, expected):
    """The checker itself: a (virtual) file in live/ with a forbidden import is reported."""
    probe = PACKAGE / "live" / "_import_rules_probe.py"
    problems, _ = violations({probe: source})
    assert any("live/_import_rules_probe.py" in p and expected in p for p in problems), problems
