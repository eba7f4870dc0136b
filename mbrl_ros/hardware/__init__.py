"""The real Dynamixel hardware path, without ROS: driver, safety layer, env, resets, emulator.

Modules (imported on first use, so ``import mbrl_ros.hardware`` stays cheap):

* :mod:`~mbrl_ros.hardware.robot_config` - ``hardware/<robot>.yaml`` -> :class:`RobotConfig`
* :mod:`~mbrl_ros.hardware.control_table` - X-series registers, error bits, units
* :mod:`~mbrl_ros.hardware.dynamixel_bus` - :class:`DynamixelBus` on the real ``dynamixel_sdk``
* :mod:`~mbrl_ros.hardware.safety` - :class:`SafetyLayer` (limits, watchdog, soft start, e-stop)
* :mod:`~mbrl_ros.hardware.reset` - scripted D'Claw / D'Kitty resets
* :mod:`~mbrl_ros.hardware.robot_env` - :class:`HardwareEnv`, the gymnasium world on hardware
* :mod:`~mbrl_ros.hardware.protocol` - Protocol 2.0 packets (servo side, used by the emulator)
* :mod:`~mbrl_ros.hardware.emulator` - :class:`ServoEmulator` on a pty (``mbrl-ros emulate``): physics
  backend, servo model with faults, pty server

Nothing here imports rclpy: the ROS hardware collector wraps :class:`HardwareEnv`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RobotConfig": "robot_config",
    "load_robot_config": "robot_config",
    "DynamixelBus": "dynamixel_bus",
    "BusState": "dynamixel_bus",
    "BusError": "dynamixel_bus",
    "BusReadError": "dynamixel_bus",
    "BusWriteError": "dynamixel_bus",
    "MissingMotorError": "dynamixel_bus",
    "SafetyLayer": "safety",
    "SafetyConfig": "safety",
    "SafetyError": "safety",
    "Severity": "safety",
    "HardwareEnv": "robot_env",
    "TrackerError": "robot_env",
    "ResetConfig": "reset",
    "ResetError": "reset",
    "ServoEmulator": "emulator",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mbrl_ros.hardware.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mbrl_ros.hardware' has no attribute {name!r}")
