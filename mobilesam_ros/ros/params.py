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
    descriptor = ParameterDescriptor(
        description=text,
        additional_constraints=constraints,
        read_only=True,  # read once at start-up
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


def read_config(node, check_files: bool = True) -> NodeConfig:
    """Declare, read and validate; raises live.config.ConfigError listing every problem."""
    return validate(declare_parameters(node), check_files=check_files)
