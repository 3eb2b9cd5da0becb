"""Declare the node's parameters (from mobilesam_ros.live.config.PARAMETERS) and
read them back validated."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor

from ..live.config import PARAMETERS, NodeConfig, validate


def _descriptor(spec) -> ParameterDescriptor:
    text = spec.description
    constraints = ""
    if spec.choices:
        constraints = "one of: " + ", ".join(map(str, spec.choices))
    elif spec.minimum is not None or spec.maximum is not None:
        constraints = f"range [{spec.minimum if spec.minimum is not None else '-inf'}, " \
                      f"{spec.maximum if spec.maximum is not None else 'inf'}]"
    if not spec.runtime:
        constraints = "; ".join(c for c in (constraints, "read at start-up (lifecycle node: at configure)") if c)
    descriptor = ParameterDescriptor(
        description=text,
        additional_constraints=constraints,
        # not read_only: a lifecycle node takes any change before configure; while the
        # node runs the on-set-parameters callback refuses start-up parameters with a
        # reason (rclpy's read-only refusal gives none)
        read_only=False,
        # the value's type is checked by live.config.validate with a clear message
        # (and 5 is accepted where 5.0 is meant) instead of rclpy's type exception
        dynamic_typing=True,
    )
    return descriptor


def declare_parameters(node) -> dict[str, Any]:
    """Declare every parameter with its default and description; return the values."""
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        param = node.declare_parameter(spec.name, spec.default, _descriptor(spec))
        values[spec.name] = param.value
    return values


def current_values(node) -> dict[str, Any]:
    """The declared parameters' current values."""
    return {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}


def read_config(node, check_files: bool = True) -> NodeConfig:
    """Validate the declared parameters' current values; raises
    live.config.ConfigError listing every problem."""
    return validate(current_values(node), check_files=check_files)
