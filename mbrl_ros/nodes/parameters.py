"""Declaring ROS parameters with descriptors (description, range, read-only) in one line each.

Every tunable of every node goes through :func:`declare`, so rqt_reconfigure shows its
description and range and refuses live changes of read-only ones (those that would break a
running game: the task, the algorithm, the seed, file paths).
"""

from __future__ import annotations

from typing import Any, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.parameter import Parameter

_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


def declare(
    node,
    name: str,
    default: Any,
    description: str,
    *,
    read_only: bool = False,
    lo: Optional[float] = None,
    hi: Optional[float] = None,
) -> Any:
    """Declare ``name`` with a descriptor and return its value (parameter files override ``default``).

    ``default`` fixes the type; an empty list declares a string array. ``lo``/``hi`` set an
    inclusive integer or floating-point range that ROS enforces on every set.
    """
    desc = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if isinstance(default, list):
        desc.type = ParameterType.PARAMETER_STRING_ARRAY
        value = node.declare_parameter(name, Parameter.Type.STRING_ARRAY, desc).value
        return list(value) if value is not None else list(default)
    desc.type = _TYPES[type(default)]
    if lo is not None or hi is not None:
        if isinstance(default, bool):
            raise ValueError(f"parameter {name}: a boolean has no range")
        if isinstance(default, int):
            desc.integer_range = [
                IntegerRange(
                    from_value=int(lo if lo is not None else -(2**62)),
                    to_value=int(hi if hi is not None else 2**62),
                    step=0,
                )
            ]
        else:
            desc.floating_point_range = [
                FloatingPointRange(
                    from_value=float(lo if lo is not None else -1e300),
                    to_value=float(hi if hi is not None else 1e300),
                    step=0.0,
                )
            ]
    value = node.declare_parameter(name, default, desc).value
    if isinstance(default, float) and isinstance(value, int):
        value = float(value)
    return value


def declare_max_episode_bytes(node: Any) -> int:
    """``max_episode_bytes``: the largest episode message a node accepts or sends (collectors and
    learners share the bound, so a collector never publishes what the learners would refuse)."""
    from mbrl_ros import wire

    return declare(
        node,
        "max_episode_bytes",
        wire.MAX_EPISODE_BYTES,
        "largest episode message",
        read_only=True,
        lo=1024,
        hi=1 << 30,
    )


def declare_record_visuals(node: Any) -> bool:
    """``record_visuals``: the coordinator and the policy deployer also record the robot for
    replay in Foxglove (on by default, in simulation and on a robot; a parameter file may turn it off)."""
    return bool(
        declare(
            node,
            "record_visuals",
            True,
            "also record the robot for replay in Foxglove: /robot_description, /mbrl/<robot_id>/urdf_joint_states, "
            "/mbrl/<robot_id>/markers and /diagnostics (with record)",
            read_only=True,
        )
    )
