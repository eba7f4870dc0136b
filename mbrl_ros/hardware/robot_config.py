"""Per-robot hardware configuration: ``hardware/<robot>.yaml`` -> :class:`RobotConfig`.

One YAML file per robot holds everything the driver needs that is not a task fact: the port
and baud rate, the motor IDs in the task's joint order, their calibration (ROBEL's
``q = scale * q_raw + offset``), hard position limits (the mechanical range; the task's tighter
action range is applied on top by the safety layer), the unit conversion factors and the
safety parameters (parsed by :class:`mbrl_ros.hardware.safety.SafetyConfig`).

Angles in the YAML may be numbers or simple multiples of pi written as text, e.g. ``-pi/2``,
``-3pi/2``, ``1.5*pi``; they are parsed without ``eval``.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import yaml

from mbrl_ros.hardware import control_table as ct

ROBOTS = ("dclaw", "dkitty")

_PI_EXPR = re.compile(r"^\s*([+-]?)\s*(\d*\.?\d*)\s*\*?\s*pi\s*(?:/\s*(\d+(?:\.\d+)?))?\s*$")


def parse_angle(value: Union[float, int, str], what: str = "angle") -> float:
    """A float, or a multiple of pi written as ``[-][k][*]pi[/n]`` (e.g. ``-3pi/2``)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        m = _PI_EXPR.match(value)
        if m:
            sign = -1.0 if m.group(1) == "-" else 1.0
            k = float(m.group(2)) if m.group(2) not in ("", ".") else 1.0
            n = float(m.group(3)) if m.group(3) else 1.0
            return sign * k * math.pi / n
    raise ValueError(f"{what}: cannot parse {value!r} (use a number or e.g. '-pi/2', '3pi/2')")


@dataclass(frozen=True)
class MotorConfig:
    """One servo: its bus ID, the joint it drives and its calibration."""

    name: str
    dxl_id: int
    scale: float = 1.0  # q = scale * raw_angle + offset  (scale is +1 or -1 for mirrored joints)
    offset: float = 0.0  # rad
    lower: float = -math.pi  # hard position limits of the joint (rad), the final clamp
    upper: float = math.pi

    def __post_init__(self) -> None:
        if not 0 <= self.dxl_id <= 252:
            raise ValueError(f"motor {self.name}: Dynamixel ID must be in 0..252, got {self.dxl_id}")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError(f"motor {self.name}: scale must be a non-zero finite number")
        if not self.lower < self.upper:
            raise ValueError(f"motor {self.name}: lower limit {self.lower} must be below upper {self.upper}")


@dataclass(frozen=True)
class Units:
    """Raw register unit -> SI conversion factors (ROBEL defaults)."""

    position_rad: float = ct.POSITION_RAD_PER_UNIT
    velocity_rad_s: float = ct.VELOCITY_RAD_S_PER_UNIT
    current_ma: float = ct.CURRENT_MA_PER_UNIT


@dataclass(frozen=True)
class RobotConfig:
    """The hardware description of one robot (see ``hardware/dclaw.yaml``)."""

    robot: str
    port: str = "/dev/ttyUSB0"
    baud: int = 1_000_000
    latency_timer_ms: float = 16.0  # FTDI latency timer, used for packet timeouts if sysfs is unreadable
    read_mode: str = "sync"  # "sync" (GroupSyncRead) | "bulk" (GroupBulkRead), both of 126..135
    model: Optional[str] = None  # expected model name (e.g. "XH430-W350"); None = any
    joints: tuple[MotorConfig, ...] = ()  # in the task's actuated-joint order
    object_motor: Optional[MotorConfig] = None  # D'Claw valve sensor (ID 50)
    units: Units = field(default_factory=Units)
    safety: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""  # file it was read from

    def __post_init__(self) -> None:
        if self.robot not in ROBOTS:
            raise ValueError(f"robot must be one of {ROBOTS}, got {self.robot!r}")
        if self.baud not in ct.BAUD_CODES:
            raise ValueError(f"baud {self.baud} is not a Dynamixel baud rate; valid: {sorted(ct.BAUD_CODES)}")
        if self.read_mode not in ("sync", "bulk"):
            raise ValueError(f"read_mode must be 'sync' or 'bulk', got {self.read_mode!r}")
        if self.model is not None and self.model not in ct.MODEL_NUMBERS:
            raise ValueError(f"unknown model {self.model!r}; valid: {sorted(ct.MODEL_NUMBERS)}")
        ids = [m.dxl_id for m in self.motors]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.robot}: duplicate motor IDs in {ids}")
        if self.latency_timer_ms < 0:
            raise ValueError("latency_timer_ms must be >= 0")

    @property
    def motors(self) -> tuple[MotorConfig, ...]:
        """Every motor on the bus: joints, then the object motor if any."""
        return self.joints + ((self.object_motor,) if self.object_motor else ())

    @property
    def joint_ids(self) -> tuple[int, ...]:
        return tuple(m.dxl_id for m in self.joints)

    @property
    def all_ids(self) -> tuple[int, ...]:
        return tuple(m.dxl_id for m in self.motors)

    def motor(self, dxl_id: int) -> MotorConfig:
        for m in self.motors:
            if m.dxl_id == dxl_id:
                return m
        raise ValueError(f"{self.robot}: no motor with ID {dxl_id}; IDs: {self.all_ids}")

    @property
    def lower(self) -> np.ndarray:
        return np.array([m.lower for m in self.joints])

    @property
    def upper(self) -> np.ndarray:
        return np.array([m.upper for m in self.joints])

    # -- calibration (ROBEL hardware_robot.py): q = scale*raw + offset, qd = scale*raw_vel ----
    def raw_to_rad(self, motor: MotorConfig, raw_position: int) -> float:
        return motor.scale * raw_position * self.units.position_rad + motor.offset

    def rad_to_raw(self, motor: MotorConfig, q: float) -> int:
        """Joint angle -> Goal Position units, rounded to the nearest unit (ROBEL truncates)."""
        return int(round((q - motor.offset) / motor.scale / self.units.position_rad))

    def raw_to_rad_s(self, motor: MotorConfig, raw_velocity: int) -> float:
        return motor.scale * raw_velocity * self.units.velocity_rad_s

    def raw_to_ma(self, motor: MotorConfig, raw_current: int) -> float:
        return motor.scale * raw_current * self.units.current_ma

    def with_overrides(self, **kwargs: Any) -> "RobotConfig":
        """A copy with top-level fields replaced (e.g. ``port=emulator.port_path``)."""
        return replace(self, **kwargs)


def config_dirs() -> list[Path]:
    """Where ``<robot>.yaml`` is looked up: the source tree, then an installed ``share/mbrl_ros/hardware``
    (a colcon install prefix above this file, or the Python prefix)."""
    here = Path(__file__).resolve()
    dirs = [here.parents[2] / "hardware"]
    dirs += [p / "share" / "mbrl_ros" / "hardware" for p in here.parents]
    dirs.append(Path(sys.prefix) / "share" / "mbrl_ros" / "hardware")
    seen: list[Path] = []
    for d in dirs:
        if d.is_dir() and d not in seen:
            seen.append(d)
    return seen


def _motor(entry: Mapping[str, Any], where: str) -> MotorConfig:
    if not isinstance(entry, Mapping) or "id" not in entry or "name" not in entry:
        raise ValueError(f"{where}: each motor needs at least 'name' and 'id', got {entry!r}")
    unknown = set(entry) - {"name", "id", "scale", "offset", "lower", "upper"}
    if unknown:
        raise ValueError(f"{where}: unknown motor keys {sorted(unknown)}")
    name = str(entry["name"])
    return MotorConfig(
        name=name,
        dxl_id=int(entry["id"]),
        scale=parse_angle(entry.get("scale", 1.0), f"{where} {name}.scale"),
        offset=parse_angle(entry.get("offset", 0.0), f"{where} {name}.offset"),
        lower=parse_angle(entry.get("lower", -math.pi), f"{where} {name}.lower"),
        upper=parse_angle(entry.get("upper", math.pi), f"{where} {name}.upper"),
    )


def robot_config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> RobotConfig:
    """Build a :class:`RobotConfig` from parsed YAML; raises ``ValueError`` with the file name."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping at the top level")
    known = {
        "robot",
        "port",
        "baud",
        "latency_timer_ms",
        "read_mode",
        "model",
        "joints",
        "object_motor",
        "units",
        "safety",
    }
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}; valid: {sorted(known)}")
    joints = data.get("joints") or []
    if not isinstance(joints, Sequence) or not joints:
        raise ValueError(f"{source}: 'joints' must be a non-empty list")
    units = data.get("units") or {}
    obj = data.get("object_motor")
    return RobotConfig(
        robot=str(data.get("robot", "")),
        port=str(data.get("port", "/dev/ttyUSB0")),
        baud=int(data.get("baud", 1_000_000)),
        latency_timer_ms=float(data.get("latency_timer_ms", 16.0)),
        read_mode=str(data.get("read_mode", "sync")),
        model=data.get("model"),
        joints=tuple(_motor(j, f"{source} joints") for j in joints),
        object_motor=_motor(obj, f"{source} object_motor") if obj else None,
        units=Units(
            position_rad=float(units.get("position_rad", ct.POSITION_RAD_PER_UNIT)),
            velocity_rad_s=float(units.get("velocity_rad_s", ct.VELOCITY_RAD_S_PER_UNIT)),
            current_ma=float(units.get("current_ma", ct.CURRENT_MA_PER_UNIT)),
        ),
        safety=dict(data.get("safety") or {}),
        source=source,
    )


def load_robot_config(robot_or_path: Union[str, Path], **overrides: Any) -> RobotConfig:
    """Load ``hardware/<robot>.yaml`` (``robot_or_path`` = "dclaw" | "dkitty" | a YAML path).

    Keyword ``overrides`` replace top-level fields (``port=``, ``baud=``, ...).
    """
    path = Path(robot_or_path)
    if str(robot_or_path) in ROBOTS:
        for d in config_dirs():
            if (d / f"{robot_or_path}.yaml").is_file():
                path = d / f"{robot_or_path}.yaml"
                break
        else:
            raise ValueError(f"no hardware/{robot_or_path}.yaml found in {config_dirs()}")
    elif not path.is_file():
        raise ValueError(f"hardware config {robot_or_path!r} is neither a robot ({', '.join(ROBOTS)}) nor a file")
    data = yaml.safe_load(path.read_text())
    cfg = robot_config_from_dict(data, source=str(path))
    return cfg.with_overrides(**overrides) if overrides else cfg
