"""The servo model of the emulator: X-series control tables, write semantics, and injected faults.

:class:`ServoBank` holds one :class:`Servo` (control table) per motor of a robot and couples them
to a physics backend: goals and torque flags go into the backend, present position, velocity and
current come back, converted with the robot's calibration so the driver's calibrated readings
equal the simulated joint angles. Faults (silent IDs, corrupted CRC, delays, drops, hardware
error bits with the torque drop of a shutdown error, a stuck motor) live here; the bus-level ones
(CRC, delay, drop) are applied by the pty server (:mod:`.server`), which owns the wire.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from mbrl_ros.hardware import control_table as ct
from mbrl_ros.hardware import protocol as p
from mbrl_ros.hardware.emulator.physics import PhysicsBackend
from mbrl_ros.hardware.robot_config import MotorConfig, RobotConfig

log = logging.getLogger(__name__)

FAULT_KINDS = ("no_response", "crc", "delay", "drop", "hardware_error", "stuck")

# Stall current (mA): the most a motor reports, and what a stuck motor commanded away reports.
STALL_CURRENT_MA = 1500.0
# Rough XH430-W350 torque constant, for present current from the simulated actuator force.
MA_PER_NM = 700.0


@dataclass
class GoalWrite:
    """One Goal Position write that reached a motor."""

    t: float  # time.monotonic()
    dxl_id: int
    raw: int
    rad: float  # joint angle through the robot calibration


class Servo:
    """One motor's control table plus its power-on behaviour (X-series semantics)."""

    def __init__(self, cfg: MotorConfig, model_number: int, baud_code: int) -> None:
        self.cfg = cfg
        self.table = bytearray(ct.TABLE_SIZE)
        for reg in ct.REGISTERS.values():
            self._put(reg, reg.default)
        self._put(ct.REGISTERS["model_number"], model_number)
        self._put(ct.REGISTERS["id"], cfg.dxl_id)
        self._put(ct.REGISTERS["baud_rate"], baud_code)
        self._put(ct.REGISTERS["return_delay_time"], 0)  # a configured robot (first-run checklist)
        self.registered: Optional[tuple[int, bytes]] = None
        self.persistent_error = 0
        self.unresponsive_until = 0.0  # rebooting

    # -- raw table access ----------------------------------------------------------------------
    def _put(self, reg: ct.Register, value: int) -> None:
        self.table[reg.address : reg.address + reg.size] = int(value & ((1 << (8 * reg.size)) - 1)).to_bytes(
            reg.size, "little"
        )

    def get(self, name: str) -> int:
        reg = ct.REGISTERS[name]
        v = int.from_bytes(self.table[reg.address : reg.address + reg.size], "little")
        return ct.to_signed(v, reg.size) if reg.signed else v

    def set(self, name: str, value: int) -> None:
        self._put(ct.REGISTERS[name], value)

    @property
    def dxl_id(self) -> int:
        return self.table[7]

    @property
    def torque(self) -> bool:
        return bool(self.table[64])

    @property
    def hardware_error(self) -> int:
        return self.table[70]

    def error_byte(self, err: int = 0) -> int:
        return err | (p.ERR_ALERT if self.hardware_error else 0)


def _writable_range(address: int, length: int, torque_on: bool) -> bool:
    """True if every byte of [address, address+length) is a writable register byte."""
    end = address + length
    for reg in ct.REGISTERS.values():
        lo, hi = reg.address, reg.address + reg.size
        if lo < end and address < hi:
            if not reg.writable or (reg.eeprom and torque_on):
                return False
    return 0 <= address and end <= ct.TABLE_SIZE


@dataclass
class Faults:
    """Active injected faults (see :meth:`ServoEmulator.inject`)."""

    no_response: set[int] = field(default_factory=set)
    crc: dict[int, float] = field(default_factory=dict)  # id (or -1 = all) -> probability
    delay_s: float = 0.0
    delay_ids: Optional[set[int]] = None  # None = every reply
    drop_prob: float = 0.0
    stuck: set[int] = field(default_factory=set)


def parse_fault(spec: str) -> tuple[str, dict]:
    """Parse a CLI fault spec into ``(kind, kwargs)`` for :meth:`ServoEmulator.inject`.

    Forms: ``no-response:11[,12]``, ``crc:11|all[:PROB]``, ``delay:SECONDS[:ID,..]``,
    ``drop:PROB``, ``hw-error:ID:overload[+overheating]``, ``stuck:ID[,ID]``.
    """
    parts = spec.strip().split(":")
    kind = parts[0].replace("-", "_")
    try:
        if kind == "no_response" and len(parts) == 2:
            return kind, {"ids": [int(x) for x in parts[1].split(",")]}
        if kind == "crc" and len(parts) in (2, 3):
            ids = None if parts[1] == "all" else [int(x) for x in parts[1].split(",")]
            return kind, {"ids": ids, "probability": float(parts[2]) if len(parts) == 3 else 1.0}
        if kind == "delay" and len(parts) in (2, 3):
            ids = [int(x) for x in parts[2].split(",")] if len(parts) == 3 else None
            return kind, {"seconds": float(parts[1]), "ids": ids}
        if kind == "drop" and len(parts) == 2:
            return kind, {"probability": float(parts[1])}
        if kind in ("hw_error", "hardware_error") and len(parts) == 3:
            return "hardware_error", {"ids": [int(parts[1])], "errors": parts[2].split("+")}
        if kind == "stuck" and len(parts) == 2:
            return kind, {"ids": [int(x) for x in parts[1].split(",")]}
    except ValueError as exc:
        raise ValueError(f"bad fault spec {spec!r}: {exc}") from exc
    raise ValueError(
        f"bad fault spec {spec!r}; forms: no-response:ID[,ID] | crc:ID|all[:PROB] | delay:SECONDS[:ID,..] | "
        "drop:PROB | hw-error:ID:overload[+overheating+input_voltage] | stuck:ID[,ID]"
    )


class ServoBank:
    """The motors of one robot: control tables, their coupling to the physics, and faults.

    Every method takes :attr:`lock` itself or expects the caller (the pty server) to hold it.
    """

    def __init__(
        self,
        config: RobotConfig,
        backend: PhysicsBackend,
        model_number: int,
        baud: int,
        missing_ids: Sequence[int] = (),
        reboot_s: float = 0.05,
    ) -> None:
        self.config = config
        self.backend = backend
        self.reboot_s = reboot_s
        self.lock = threading.RLock()
        self.servos: dict[int, Servo] = {m.dxl_id: Servo(m, model_number, ct.BAUD_CODES[baud]) for m in config.motors}
        self.joint_ids = list(config.joint_ids)
        self.object_id = config.object_motor.dxl_id if config.object_motor else None
        self.faults = Faults(no_response=set(int(i) for i in missing_ids))
        self.sim_time = 0.0
        self.goal_log: list[GoalWrite] = []
        # goal positions start at the present positions (what a powered-up servo reports)
        with self.lock:
            self.sync_present()
            for s in self.servos.values():
                s.set("goal_position", s.get("present_position"))

    # -- physics -------------------------------------------------------------------------------
    def step(self, n: int) -> None:
        """Advance the physics ``n`` steps and refresh every present register."""
        with self.lock:
            self.backend.step(n)
            self.sim_time += n * self.backend.timestep
            self.sync_present()

    def sync_present(self) -> None:
        """Copy the backend state into every motor's present registers (raw units)."""
        q, qd, eff = self.backend.joint_positions(), self.backend.joint_velocities(), self.backend.joint_efforts()
        for i, dxl_id in enumerate(self.joint_ids):
            s = self.servos[dxl_id]
            # the sim's position servos can exert more torque than an XH430: saturate at stall
            cur_ma = float(np.clip(eff[i] * MA_PER_NM, -STALL_CURRENT_MA, STALL_CURRENT_MA))
            if dxl_id in self.faults.stuck and s.torque:
                err = self.goal_rad(s) - q[i]
                cur_ma = math.copysign(STALL_CURRENT_MA, err) if abs(err) > 0.02 else cur_ma
            self._set_present(s, q[i], qd[i], cur_ma)
        if self.object_id is not None:
            theta = self.backend.object_angle()
            if theta is not None:
                self._set_present(self.servos[self.object_id], theta, self.backend.object_velocity() or 0.0, 0.0)
        for s in self.servos.values():
            s.set("realtime_tick", int(self.sim_time * 1000) % 32768)

    def _set_present(self, s: Servo, q: float, qd: float, cur_ma: float) -> None:
        m, u = s.cfg, self.config.units
        s.set("present_position", int(round((q - m.offset) / m.scale / u.position_rad)))
        s.set("present_velocity", int(round(qd / m.scale / u.velocity_rad_s)))
        s.set("present_current", int(round(np.clip(cur_ma / m.scale / u.current_ma, -32768, 32767))))
        s.set("moving", int(abs(qd) > 0.02))

    def goal_rad(self, s: Servo) -> float:
        return self.config.raw_to_rad(s.cfg, s.get("goal_position"))

    def apply_outputs(self) -> None:
        """Push torque flags, goals and stuck flags of the joint motors into the backend."""
        torque = np.array([self.servos[i].torque and self._tracks_position(self.servos[i]) for i in self.joint_ids])
        self.backend.set_torque(torque)
        self.backend.set_targets(np.array([self.goal_rad(self.servos[i]) for i in self.joint_ids]))
        self.backend.set_stuck(np.array([i in self.faults.stuck for i in self.joint_ids]))
        if self.object_id is not None:
            s = self.servos[self.object_id]
            self.backend.drive_object(self.goal_rad(s) if s.torque and self._tracks_position(s) else None)

    @staticmethod
    def _tracks_position(s: Servo) -> bool:
        return s.get("operating_mode") in (3, 4, 5)

    # -- fault injection -----------------------------------------------------------------------
    def inject(self, kind: str, ids: Optional[Sequence[int]] = None, **params) -> None:
        """Inject a fault; ``kind`` in :data:`FAULT_KINDS`.

        * ``no_response`` (ids): these IDs never answer (a missing or dead motor).
        * ``crc`` (ids or None = all, probability=1.0): their replies carry a wrong CRC.
        * ``delay`` (seconds, ids or None = all): replies are sent ``seconds`` late.
        * ``drop`` (probability): instruction packets are lost before any motor sees them.
        * ``hardware_error`` (ids, errors=["overload", ...], persistent=False): sets Hardware
          Error Status bits; bits in the Shutdown mask turn the torque off, as a real servo does,
          and torque cannot be enabled again until a reboot (which clears a non-persistent error).
        * ``stuck`` (ids): the joint no longer moves; a commanded motor reports stall current.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; valid: {FAULT_KINDS}")
        ids = None if ids is None else [int(i) for i in ids]
        for i in ids or []:
            if i not in self.servos:
                raise ValueError(
                    f"no motor with ID {i} on the emulated {self.config.robot}; IDs: {sorted(self.servos)}"
                )
        with self.lock:
            f = self.faults
            if kind == "no_response":
                f.no_response |= set(ids or [])
            elif kind == "crc":
                prob = float(params.get("probability", 1.0))
                for i in ids if ids is not None else [-1]:
                    f.crc[i] = prob
            elif kind == "delay":
                f.delay_s = float(params["seconds"])
                f.delay_ids = None if ids is None else set(ids)
            elif kind == "drop":
                f.drop_prob = float(params["probability"])
            elif kind == "hardware_error":
                mask = ct.encode_hardware_error(params.get("errors", ["overload"]))
                for i in ids or []:
                    s = self.servos[i]
                    s.set("hardware_error_status", s.hardware_error | mask)
                    if params.get("persistent", False):
                        s.persistent_error |= mask
                    if s.hardware_error & s.get("shutdown"):
                        s.set("torque_enable", 0)
                self.apply_outputs()
            elif kind == "stuck":
                f.stuck |= set(ids or [])
                self.apply_outputs()

    def clear_faults(self, kind: Optional[str] = None) -> None:
        """Remove injected faults (all, or one kind). Hardware errors stay until a reboot."""
        with self.lock:
            f = self.faults
            if kind in (None, "no_response"):
                f.no_response.clear()
            if kind in (None, "crc"):
                f.crc.clear()
            if kind in (None, "delay"):
                f.delay_s, f.delay_ids = 0.0, None
            if kind in (None, "drop"):
                f.drop_prob = 0.0
            if kind in (None, "stuck"):
                f.stuck.clear()
            if kind == "hardware_error":
                for s in self.servos.values():
                    s.persistent_error = 0
            self.apply_outputs()

    # -- records for tests ---------------------------------------------------------------------
    def goal_writes(self, dxl_id: Optional[int] = None) -> list[GoalWrite]:
        """Every Goal Position write that reached a motor (optionally of one ID), oldest first."""
        with self.lock:
            return [g for g in self.goal_log if dxl_id is None or g.dxl_id == dxl_id]

    def clear_goal_writes(self) -> None:
        with self.lock:
            self.goal_log.clear()

    def torque_enabled(self) -> dict[int, bool]:
        with self.lock:
            return {i: s.torque for i, s in self.servos.items()}

    def joint_positions(self) -> np.ndarray:
        """Simulated joint angles (rad), in the task's joint order."""
        with self.lock:
            return self.backend.joint_positions()

    def object_angle(self) -> Optional[float]:
        with self.lock:
            return self.backend.object_angle()

    def torso_pose(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """D'Kitty torso (xyz, wxyz) from the simulation, to feed ``HardwareEnv.set_tracker_pose``."""
        with self.lock:
            return self.backend.torso_pose()

    # -- the servos' side of the bus -----------------------------------------------------------
    def responders(self, ids: Sequence[int], baud: int) -> list[Servo]:
        """The servos among ``ids`` that answer on a bus at ``baud`` (not silent, not rebooting)."""
        now = time.monotonic()
        out = []
        for i in ids:
            s = self.servos.get(i)
            if s is None or i in self.faults.no_response or now < s.unresponsive_until:
                continue
            if s.get("baud_rate") != ct.BAUD_CODES[baud]:
                continue  # a motor set to another baud rate does not hear this bus
            out.append(s)
        return out

    def check_write(self, s: Servo, addr: int, data: bytes) -> int:
        if not _writable_range(addr, len(data), s.torque):
            return p.ERR_ACCESS
        return 0

    def apply_write(self, s: Servo, addr: int, data: bytes) -> int:
        """Write ``data`` at ``addr`` with the servo's side effects; returns a status error number."""
        if self.check_write(s, addr, data):
            return p.ERR_ACCESS
        end = addr + len(data)
        te = ct.ADDR_TORQUE_ENABLE
        if addr <= te < end:
            want = data[te - addr]
            if want not in (0, 1):
                return p.ERR_DATA_RANGE
            if want and s.hardware_error & s.get("shutdown"):
                return p.ERR_RESULT_FAIL  # a shut-down servo needs a reboot first
        gp = ct.ADDR_GOAL_POSITION
        if addr <= gp and gp + 4 <= end:
            raw = ct.to_signed(p.le_uint(data[gp - addr : gp - addr + 4]), 4)
            if s.get("operating_mode") == ct.POSITION_MODE and not (
                s.get("min_position_limit") <= raw <= s.get("max_position_limit")
            ):
                return p.ERR_DATA_LIMIT
        old_id = s.dxl_id
        s.table[addr:end] = data
        if addr <= gp and gp + 4 <= end:
            raw = s.get("goal_position")
            self.goal_log.append(GoalWrite(time.monotonic(), s.dxl_id, raw, self.goal_rad(s)))
        if s.dxl_id != old_id:  # ID changed (EEPROM write with torque off)
            self.servos.pop(old_id, None)
            self.servos[s.dxl_id] = s
        return 0

    def reboot(self, s: Servo) -> None:
        """Reboot: RAM back to defaults, torque off, hardware error cleared unless it persists."""
        for reg in ct.REGISTERS.values():
            if not reg.eeprom and reg.writable:
                s.set(reg.name, reg.default)
        s.set("hardware_error_status", s.persistent_error)
        s.set("goal_position", s.get("present_position"))
        s.registered = None
        s.unresponsive_until = time.monotonic() + self.reboot_s
