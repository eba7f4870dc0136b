"""A Dynamixel Protocol 2.0 servo emulator on a pseudo-terminal, backed by the MuJoCo robot.

``mbrl-ros emulate --robot dclaw`` (or :class:`ServoEmulator` in-process) opens a pty, prints
its slave path (``/dev/pts/N``) and answers Protocol 2.0 instruction packets on it as the
robot's servos would: ping, read, write, reg write/action, sync read/write, bulk read/write and
reboot; factory reset is refused with a status error. Anything that talks to a real U2D2 port
(the driver on the real ``dynamixel_sdk``, Dynamixel Wizard through ``socat``, ...) can be
pointed at the pty instead.

Each motor has an X-series control table (:mod:`mbrl_ros.hardware.control_table`). Goal
positions drive a physics backend; present position/velocity/current are read back from it and
converted with the robot's calibration (``hardware/<robot>.yaml``), so the driver's calibrated
readings equal the simulated joint angles:

* :class:`RobelSimBackend`: the MuJoCo scene of the task layer
  (:class:`mbrl_ros.tasks.sim.RobelSim`). Commanded motion moves the simulated robot and the
  valve turns when the claw pushes it; the valve sensor (ID 50) reports the simulated valve
  angle. Torque off makes a joint limp (its position actuator's gain and bias are zeroed).
* :class:`FirstOrderBackend`: a first-order servo model with no contact, used when MuJoCo or
  the task layer is unavailable, and for fast protocol tests.

Physics advances in real time in a background thread (``realtime=True``), or only when a test
calls :meth:`ServoEmulator.advance`. Faults can be injected (API and CLI): a silent ID, corrupted
CRC, delayed replies, dropped packets, hardware error bits (with the torque drop a real servo
does on a shutdown error) and a stuck motor. Every goal position written is recorded
(:meth:`ServoEmulator.goal_writes`) so tests can check what reached the "motors".

A pty has no baud-rate timing: bytes arrive as fast as the kernel moves them. With
``wire_timing=True`` the emulator delays each reply by the time the instruction and the reply
would take on the wire at the bus baud rate (10 bits per byte), plus the motors' return delay.
"""

from __future__ import annotations

import logging
import math
import os
import random
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence, Union

import numpy as np

from mbrl_ros.hardware import control_table as ct
from mbrl_ros.hardware import protocol as p
from mbrl_ros.hardware.robot_config import MotorConfig, RobotConfig, load_robot_config

log = logging.getLogger(__name__)

FAULT_KINDS = ("no_response", "crc", "delay", "drop", "hardware_error", "stuck")

# Stall current (mA): the most a motor reports, and what a stuck motor commanded away reports.
STALL_CURRENT_MA = 1500.0
# Rough XH430-W350 torque constant, for present current from the simulated actuator force.
MA_PER_NM = 700.0


# ---------------------------------------------------------------------------------------------
# Physics backends
# ---------------------------------------------------------------------------------------------
class PhysicsBackend(Protocol):
    """What the emulator needs from a simulated robot (joint space, radians, SI units)."""

    timestep: float

    def joint_positions(self) -> np.ndarray: ...
    def joint_velocities(self) -> np.ndarray: ...
    def joint_efforts(self) -> np.ndarray: ...  # N.m, for present current
    def set_targets(self, q: np.ndarray) -> None: ...
    def set_torque(self, enabled: np.ndarray) -> None: ...
    def set_stuck(self, stuck: np.ndarray) -> None: ...
    def object_angle(self) -> Optional[float]: ...
    def object_velocity(self) -> Optional[float]: ...
    def drive_object(self, target: Optional[float]) -> None: ...  # None = object motor limp
    def step(self, n: int) -> None: ...  # advance n physics steps of ``timestep`` seconds
    def torso_pose(self) -> Optional[tuple[np.ndarray, np.ndarray]]: ...  # D'Kitty (xyz, wxyz)


class FirstOrderBackend:
    """Servos as first-order position loops with a velocity limit; no contact, no load.

    With torque on, ``qdot = clip((target - q) / tau, +-v_max)``; with torque off the joint
    stays where it is. The object (valve) only moves when its motor drives it.
    """

    def __init__(self, n_joints: int, q0: Optional[np.ndarray] = None, has_object: bool = False,
                 tau: float = 0.05, v_max: float = 4.8, timestep: float = 0.0025) -> None:
        self.timestep = timestep
        self.tau, self.v_max = tau, v_max
        self.q = np.zeros(n_joints) if q0 is None else np.array(q0, dtype=float)
        self.qd = np.zeros(n_joints)
        self.target = self.q.copy()
        self.torque = np.zeros(n_joints, dtype=bool)
        self.stuck = np.zeros(n_joints, dtype=bool)
        self.has_object = has_object
        self.theta, self.theta_d = 0.0, 0.0
        self.theta_target: Optional[float] = None

    def joint_positions(self) -> np.ndarray:
        return self.q.copy()

    def joint_velocities(self) -> np.ndarray:
        return self.qd.copy()

    def joint_efforts(self) -> np.ndarray:
        return np.where(self.torque, 2.0 * (self.target - self.q), 0.0)

    def set_targets(self, q: np.ndarray) -> None:
        self.target = np.array(q, dtype=float)

    def set_torque(self, enabled: np.ndarray) -> None:
        self.torque = np.array(enabled, dtype=bool)

    def set_stuck(self, stuck: np.ndarray) -> None:
        self.stuck = np.array(stuck, dtype=bool)

    def object_angle(self) -> Optional[float]:
        return self.theta if self.has_object else None

    def object_velocity(self) -> Optional[float]:
        return self.theta_d if self.has_object else None

    def drive_object(self, target: Optional[float]) -> None:
        self.theta_target = target

    def step(self, n: int) -> None:
        dt = self.timestep * n
        qd = np.clip((self.target - self.q) / self.tau, -self.v_max, self.v_max)
        qd = np.where(self.torque & ~self.stuck, qd, 0.0)
        # first-order: do not overshoot the target in one step
        self.q = np.where(np.abs(qd * dt) > np.abs(self.target - self.q), np.where(qd != 0, self.target, self.q), self.q + qd * dt)
        self.qd = qd
        if self.has_object and self.theta_target is not None:
            d = float(np.clip((self.theta_target - self.theta) / self.tau, -self.v_max, self.v_max))
            self.theta = self.theta_target if abs(d * dt) >= abs(self.theta_target - self.theta) else self.theta + d * dt
            self.theta_d = d
        else:
            self.theta_d = 0.0

    def torso_pose(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        return None


class RobelSimBackend:
    """The MuJoCo robot of the task layer (:class:`mbrl_ros.tasks.sim.RobelSim`).

    Torque off zeroes the joint's position-actuator gain and bias (limp joint, no control
    force); a stuck joint is pinned at its position after each physics step; the object motor
    (D'Claw valve, ID 50) is normally limp and, when its torque is on, drives the valve joint
    kinematically towards its goal at the servo's speed (ROBEL's scripted reset uses it so).
    """

    def __init__(self, robot: str, task_id: Optional[str] = None, v_max: float = 4.8) -> None:
        from mbrl_ros.tasks.sim import RobelSim  # imported lazily: the tasks layer loads MuJoCo

        self.sim = RobelSim(robot, task_id=task_id)
        self.sim.reset()
        model = self.sim.model
        self.timestep = float(model.opt.timestep)
        self.v_max = v_max
        self.n = len(self.sim.actuated_qpos())
        self._gain = model.actuator_gainprm[: self.n, 0].copy()
        self._bias = model.actuator_biasprm[: self.n, :3].copy()
        self.torque = np.ones(self.n, dtype=bool)
        self.stuck = np.zeros(self.n, dtype=bool)
        self._stuck_q = np.zeros(self.n)
        self.target = np.array(self.sim.actuated_qpos(), dtype=float)
        self.sim.set_ctrl(self.target)
        self._qadr = self._joint_qadr()
        self.has_object = robot == "dclaw"
        self._valve_q, self._valve_v = self._valve_adr() if self.has_object else (None, None)
        self.theta_target: Optional[float] = None
        self.set_torque(np.zeros(self.n, dtype=bool))

    def _joint_qadr(self) -> np.ndarray:
        """qpos/qvel addresses of the actuated joints (the joint each actuator drives)."""
        m = self.sim.model
        jnt = m.actuator_trnid[: self.n, 0]
        return np.stack([m.jnt_qposadr[jnt], m.jnt_dofadr[jnt]], axis=1)

    def _valve_adr(self) -> tuple[Optional[int], Optional[int]]:
        import mujoco

        m = self.sim.model
        jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "valve_OBJRx")
        if jid < 0:
            return None, None
        return int(m.jnt_qposadr[jid]), int(m.jnt_dofadr[jid])

    def joint_positions(self) -> np.ndarray:
        return np.array(self.sim.actuated_qpos(), dtype=float)

    def joint_velocities(self) -> np.ndarray:
        return np.array(self.sim.actuated_qvel(), dtype=float)

    def joint_efforts(self) -> np.ndarray:
        return np.array(self.sim.data.actuator_force[: self.n], dtype=float)

    def set_targets(self, q: np.ndarray) -> None:
        self.target = np.array(q, dtype=float)
        self.sim.set_ctrl(self.target)

    def set_torque(self, enabled: np.ndarray) -> None:
        self.torque = np.array(enabled, dtype=bool)
        m = self.sim.model
        for i in range(self.n):
            if self.torque[i]:
                m.actuator_gainprm[i, 0] = self._gain[i]
                m.actuator_biasprm[i, :3] = self._bias[i]
            else:
                m.actuator_gainprm[i, 0] = 0.0
                m.actuator_biasprm[i, :3] = 0.0

    def set_stuck(self, stuck: np.ndarray) -> None:
        stuck = np.array(stuck, dtype=bool)
        newly = stuck & ~self.stuck
        self._stuck_q[newly] = self.joint_positions()[newly]
        self.stuck = stuck

    def object_angle(self) -> Optional[float]:
        return float(self.sim.object_qpos()) if self.has_object else None

    def object_velocity(self) -> Optional[float]:
        return float(self.sim.object_qvel()) if self.has_object else None

    def drive_object(self, target: Optional[float]) -> None:
        self.theta_target = target

    def step(self, n: int) -> None:
        d = self.sim.data
        if not self.stuck.any() and self.theta_target is None:
            self.sim.advance(n)  # one mj_step call for all n steps
            return
        for _ in range(n):
            self.sim.advance(1)
            if self.stuck.any():
                qa, va = self._qadr[self.stuck, 0], self._qadr[self.stuck, 1]
                d.qpos[qa] = self._stuck_q[self.stuck]
                d.qvel[va] = 0.0
            if self.theta_target is not None and self._valve_q is not None:
                theta = d.qpos[self._valve_q]
                step = float(np.clip(self.theta_target - theta, -self.v_max * self.timestep, self.v_max * self.timestep))
                d.qpos[self._valve_q] = theta + step
                d.qvel[self._valve_v] = step / self.timestep
        if self.stuck.any() or self.theta_target is not None:
            import mujoco

            mujoco.mj_forward(self.sim.model, d)

    def torso_pose(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """D'Kitty torso position and orientation (w, x, y, z), as a motion-capture tracker sees it."""
        if self.has_object:
            return None
        import mujoco

        m, d = self.sim.model, self.sim.data
        bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "A:dkitty")
        if bid < 0:
            bid = 1
        # position in the task frame (the torso slide joints), orientation as the world sees it
        return self.sim.root_qpos()[:3], d.xquat[bid].copy()


def make_backend(robot: str, n_joints: int, q0: np.ndarray, physics: str = "auto",
                 task_id: Optional[str] = None) -> PhysicsBackend:
    """``physics``: "mujoco" (RobelSim), "first-order", or "auto" (MuJoCo when available)."""
    if physics not in ("auto", "mujoco", "first-order"):
        raise ValueError(f"physics must be auto, mujoco or first-order, got {physics!r}")
    if physics in ("auto", "mujoco"):
        try:
            return RobelSimBackend(robot, task_id=task_id)
        except ImportError as exc:
            if physics == "mujoco":
                raise ValueError(f"MuJoCo physics unavailable: {exc}") from exc
            log.warning("RobelSim unavailable (%s); using the first-order servo model", exc)
    return FirstOrderBackend(n_joints, q0=q0, has_object=(robot == "dclaw"))


# ---------------------------------------------------------------------------------------------
# Servos
# ---------------------------------------------------------------------------------------------
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
        self.table[reg.address : reg.address + reg.size] = int(value & ((1 << (8 * reg.size)) - 1)).to_bytes(reg.size, "little")

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


def _wait(seconds: float) -> None:
    """Sleep ``seconds`` precisely enough for wire timing (sleep, then spin the last millisecond)."""
    end = time.perf_counter() + seconds
    if seconds > 0.002:
        time.sleep(seconds - 0.001)
    while time.perf_counter() < end:
        pass


def _baud_of_termios(speed: int) -> Optional[int]:
    for name in dir(termios):
        if name.startswith("B") and name[1:].isdigit() and getattr(termios, name) == speed:
            return int(name[1:])
    return None


# ---------------------------------------------------------------------------------------------
# The emulator
# ---------------------------------------------------------------------------------------------
class ServoEmulator:
    """The servos of one robot on a pseudo-terminal.

    Usage (tests)::

        emu = ServoEmulator("dclaw", realtime=False, physics="first-order")
        emu.start()                      # serves the pty in a background thread
        bus = DynamixelBus(load_robot_config("dclaw", port=emu.port_path))
        ...
        emu.advance(0.1)                 # step physics explicitly when realtime=False
        emu.stop()

    Args:
        robot: "dclaw" | "dkitty", or a :class:`RobotConfig` (IDs and calibration).
        baud: bus baud rate; a client whose port is set to another rate gets no answer.
        physics: "auto" | "mujoco" | "first-order" (see :func:`make_backend`).
        realtime: advance physics in a thread at wall-clock rate.
        wire_timing: delay replies by their on-wire duration at ``baud`` (a pty has none).
        model: motor model name answered to ping and in register 0.
        seed: seed of the random faults (drops, CRC corruption with probability < 1).
        missing_ids: IDs that are absent from the bus from the start.
        q0: initial joint angles for the first-order model (default: ROBEL's reset pose).
    """

    def __init__(self, robot: Union[str, RobotConfig] = "dclaw", baud: int = 1_000_000, physics: str = "auto",
                 realtime: bool = True, wire_timing: bool = False, model: str = "XH430-W350",
                 seed: int = 0, missing_ids: Sequence[int] = (), q0: Optional[Sequence[float]] = None,
                 task_id: Optional[str] = None, reboot_s: float = 0.05) -> None:
        self.config = robot if isinstance(robot, RobotConfig) else load_robot_config(robot)
        if baud not in ct.BAUD_CODES:
            raise ValueError(f"baud {baud} is not a Dynamixel baud rate; valid: {sorted(ct.BAUD_CODES)}")
        if model not in ct.MODEL_NUMBERS:
            raise ValueError(f"unknown model {model!r}; valid: {sorted(ct.MODEL_NUMBERS)}")
        self.robot = self.config.robot
        self.baud = baud
        self.realtime = realtime
        self.wire_timing = wire_timing
        self.reboot_s = reboot_s
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self.servos: dict[int, Servo] = {
            m.dxl_id: Servo(m, ct.MODEL_NUMBERS[model], ct.BAUD_CODES[baud]) for m in self.config.motors
        }
        self._joint_ids = list(self.config.joint_ids)
        self._object_id = self.config.object_motor.dxl_id if self.config.object_motor else None
        if q0 is None:
            q0 = [0.0, -math.pi / 3, math.pi / 3] * 3 if self.robot == "dclaw" else [0.0] * len(self._joint_ids)
        self.backend: PhysicsBackend = make_backend(self.robot, len(self._joint_ids), np.asarray(q0, float), physics, task_id)
        self.physics = "mujoco" if isinstance(self.backend, RobelSimBackend) else "first-order"
        self.faults = Faults(no_response=set(int(i) for i in missing_ids))
        self.sim_time = 0.0
        self._goal_log: list[GoalWrite] = []
        self.stats = {"rx_packets": 0, "tx_packets": 0, "crc_errors_rx": 0, "dropped": 0, "refused": 0, "collisions": 0}
        # goal positions start at the present positions (what a powered-up servo reports)
        with self._lock:
            self._sync_present()
            for dxl_id, s in self.servos.items():
                s.set("goal_position", s.get("present_position"))
        self._master: Optional[int] = None
        self._slave: Optional[int] = None
        self._wake_r, self._wake_w = -1, -1
        self._threads: list[threading.Thread] = []
        self._running = threading.Event()
        self.port_path = ""

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> str:
        """Open the pty and start serving (and the physics thread when ``realtime``)."""
        if self._running.is_set():
            return self.port_path
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing, no CR/LF translation
        tty.setraw(self._master)
        self.port_path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._running.set()
        self._threads = [threading.Thread(target=self._serve, name="servo-emulator-bus", daemon=True)]
        if self.realtime:
            self._threads.append(threading.Thread(target=self._physics_loop, name="servo-emulator-physics", daemon=True))
        for t in self._threads:
            t.start()
        return self.port_path

    def stop(self) -> None:
        """Stop the threads and close the pty."""
        if not self._running.is_set():
            return
        self._running.clear()
        os.write(self._wake_w, b"x")
        for t in self._threads:
            t.join(timeout=2.0)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            if fd is not None and fd >= 0:
                os.close(fd)
        self._master = self._slave = None
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> "ServoEmulator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- physics -------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Advance physics by ``seconds`` (rounded to whole physics steps) and refresh the tables."""
        n = max(1, int(round(seconds / self.backend.timestep)))
        with self._lock:
            self.backend.step(n)
            self.sim_time += n * self.backend.timestep
            self._sync_present()

    def _physics_loop(self) -> None:
        dt = self.backend.timestep
        tick = max(dt, 0.005)  # wake every 5 ms, step as many physics steps as wall time passed
        last = time.monotonic()
        owed = 0.0
        while self._running.is_set():
            time.sleep(tick)
            now = time.monotonic()
            owed += min(now - last, 0.1)  # never try to catch up more than 100 ms after a stall
            last = now
            n = int(owed / dt)
            if n:
                owed -= n * dt
                with self._lock:
                    self.backend.step(n)
                    self.sim_time += n * dt
                    self._sync_present()

    def _sync_present(self) -> None:
        """Copy the backend state into every motor's present registers (raw units)."""
        cfg = self.config
        q, qd, eff = self.backend.joint_positions(), self.backend.joint_velocities(), self.backend.joint_efforts()
        for i, dxl_id in enumerate(self._joint_ids):
            s = self.servos[dxl_id]
            # the sim's position servos can exert more torque than an XH430: saturate at stall
            cur_ma = float(np.clip(eff[i] * MA_PER_NM, -STALL_CURRENT_MA, STALL_CURRENT_MA))
            if dxl_id in self.faults.stuck and s.torque:
                err = self._goal_rad(s) - q[i]
                cur_ma = math.copysign(STALL_CURRENT_MA, err) if abs(err) > 0.02 else cur_ma
            self._set_present(s, q[i], qd[i], cur_ma)
        if self._object_id is not None:
            theta = self.backend.object_angle()
            if theta is not None:
                self._set_present(self.servos[self._object_id], theta, self.backend.object_velocity() or 0.0, 0.0)
        for s in self.servos.values():
            s.set("realtime_tick", int(self.sim_time * 1000) % 32768)

    def _set_present(self, s: Servo, q: float, qd: float, cur_ma: float) -> None:
        m, u = s.cfg, self.config.units
        s.set("present_position", int(round((q - m.offset) / m.scale / u.position_rad)))
        s.set("present_velocity", int(round(qd / m.scale / u.velocity_rad_s)))
        s.set("present_current", int(round(np.clip(cur_ma / m.scale / u.current_ma, -32768, 32767))))
        s.set("moving", int(abs(qd) > 0.02))

    def _goal_rad(self, s: Servo) -> float:
        return self.config.raw_to_rad(s.cfg, s.get("goal_position"))

    def _apply_outputs(self) -> None:
        """Push torque flags, goals and stuck flags of the joint motors into the backend."""
        torque = np.array([self.servos[i].torque and self._tracks_position(self.servos[i]) for i in self._joint_ids])
        self.backend.set_torque(torque)
        self.backend.set_targets(np.array([self._goal_rad(self.servos[i]) for i in self._joint_ids]))
        self.backend.set_stuck(np.array([i in self.faults.stuck for i in self._joint_ids]))
        if self._object_id is not None:
            s = self.servos[self._object_id]
            self.backend.drive_object(self._goal_rad(s) if s.torque and self._tracks_position(s) else None)

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
                raise ValueError(f"no motor with ID {i} on the emulated {self.robot}; IDs: {sorted(self.servos)}")
        with self._lock:
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
                self._apply_outputs()
            elif kind == "stuck":
                f.stuck |= set(ids or [])
                self._apply_outputs()

    def clear_faults(self, kind: Optional[str] = None) -> None:
        """Remove injected faults (all, or one kind). Hardware errors stay until a reboot."""
        with self._lock:
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
            self._apply_outputs()

    # -- records for tests ---------------------------------------------------------------------
    def goal_writes(self, dxl_id: Optional[int] = None) -> list[GoalWrite]:
        """Every Goal Position write that reached a motor (optionally of one ID), oldest first."""
        with self._lock:
            return [g for g in self._goal_log if dxl_id is None or g.dxl_id == dxl_id]

    def clear_goal_writes(self) -> None:
        with self._lock:
            self._goal_log.clear()

    def torque_enabled(self) -> dict[int, bool]:
        with self._lock:
            return {i: s.torque for i, s in self.servos.items()}

    def joint_positions(self) -> np.ndarray:
        """Simulated joint angles (rad), in the task's joint order."""
        with self._lock:
            return self.backend.joint_positions()

    def object_angle(self) -> Optional[float]:
        with self._lock:
            return self.backend.object_angle()

    def torso_pose(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """D'Kitty torso (xyz, wxyz) from the simulation, to feed ``HardwareEnv.set_tracker_pose``."""
        with self._lock:
            return self.backend.torso_pose()

    # -- the bus -------------------------------------------------------------------------------
    def _serve(self) -> None:
        parser = p.PacketParser()
        assert self._master is not None
        while self._running.is_set():
            try:
                ready, _, _ = select.select([self._master, self._wake_r], [], [], 0.5)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                return
            if self._master not in ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                time.sleep(0.01)
                continue
            if not self._client_baud_ok():
                parser.reset()  # at the wrong baud rate the servos see only garbage
                continue
            for pkt in parser.feed(data):
                self.stats["rx_packets"] += 1
                replies = self._handle(pkt)
                rx_len = 10 + len(pkt.params)  # the instruction's bytes on the wire (unstuffed)
                if replies:
                    self._send(replies, rx_len)
                elif self.wire_timing:
                    _wait(rx_len * 10.0 / self.baud)  # the bus is busy while the packet is on the wire

    def _client_baud_ok(self) -> bool:
        try:
            speed = termios.tcgetattr(self._slave)[4]
        except (termios.error, TypeError):
            return True
        baud = _baud_of_termios(speed)
        return baud is None or baud == self.baud or baud == 0

    def _send(self, replies: list[tuple[int, bytes]], rx_len: int) -> None:
        f = self.faults
        delay = 0.0
        if f.delay_s > 0 and (f.delay_ids is None or any(i in f.delay_ids for i, _ in replies)):
            delay += f.delay_s
        out = bytearray()
        for dxl_id, pkt in replies:
            prob = f.crc.get(dxl_id, f.crc.get(-1, 0.0))
            if prob > 0 and self._rng.random() < prob:
                pkt = pkt[:-2] + bytes(((pkt[-2] ^ 0x5A), pkt[-1]))
            out += pkt
            self.stats["tx_packets"] += 1
        if self.wire_timing:
            delay += (rx_len + len(out)) * 10.0 / self.baud
            delay += max((self.servos[i].get("return_delay_time") * 2e-6 for i, _ in replies if i in self.servos), default=0.0)
        if delay > 0:
            _wait(delay)
            # Half-duplex bus: if the host gave up waiting and already sent its next instruction,
            # this late reply collides with it and is lost (it is not delivered as a stale answer).
            if self.faults.delay_s > 0 and self._master is not None and select.select([self._master], [], [], 0)[0]:
                self.stats["collisions"] += 1
                return
        if self._master is not None:
            os.write(self._master, bytes(out))

    def _responders(self, ids: Sequence[int]) -> list[Servo]:
        now = time.monotonic()
        out = []
        for i in ids:
            s = self.servos.get(i)
            if s is None or i in self.faults.no_response or now < s.unresponsive_until:
                continue
            if s.get("baud_rate") != ct.BAUD_CODES[self.baud]:
                continue  # a motor set to another baud rate does not hear this bus
            out.append(s)
        return out

    def _status(self, s: Servo, err: int = 0, params: bytes = b"", instruction: int = 0) -> Optional[tuple[int, bytes]]:
        level = s.get("status_return_level")
        if instruction != p.PING and (level == 0 or (level == 1 and instruction != p.READ)):
            return None
        return s.dxl_id, p.encode_status(s.dxl_id, s.error_byte(err), params)

    def _handle(self, pkt: p.Packet) -> list[tuple[int, bytes]]:
        """Answer one instruction packet; returns the status packets to send, in order."""
        if self.faults.drop_prob > 0 and self._rng.random() < self.faults.drop_prob:
            self.stats["dropped"] += 1
            return []
        broadcast = pkt.dxl_id == p.BROADCAST_ID
        with self._lock:
            if not pkt.crc_ok:
                self.stats["crc_errors_rx"] += 1
                if broadcast:
                    return []
                return [r for s in self._responders([pkt.dxl_id]) if (r := self._status(s, p.ERR_CRC))]
            targets = self._responders(sorted(self.servos) if broadcast else [pkt.dxl_id])
            inst = pkt.instruction
            out: list[Optional[tuple[int, bytes]]] = []
            if inst == p.PING:
                for s in targets:
                    out.append(self._status(s, 0, p.u16(s.get("model_number")) + bytes((s.get("firmware_version"),)), p.PING))
            elif inst == p.READ and not broadcast:
                out += [self._read(s, pkt.params) for s in targets]
            elif inst in (p.WRITE, p.REG_WRITE):
                for s in targets:
                    r = self._write(s, pkt.params, register=(inst == p.REG_WRITE))
                    if not broadcast:
                        out.append(r)
            elif inst == p.ACTION:
                for s in targets:
                    if s.registered:
                        addr, data = s.registered
                        s.registered = None
                        self._apply_write(s, addr, data)
            elif inst == p.SYNC_READ and broadcast:
                out += self._sync_read(pkt.params)
            elif inst == p.SYNC_WRITE and broadcast:
                self._sync_write(pkt.params)
            elif inst == p.BULK_READ and broadcast:
                out += self._bulk_read(pkt.params)
            elif inst == p.BULK_WRITE and broadcast:
                self._bulk_write(pkt.params)
            elif inst == p.REBOOT:
                for s in targets:
                    r = self._status(s, 0, b"", p.REBOOT)
                    self._reboot(s)
                    if not broadcast:
                        out.append(r)
            elif inst == p.FACTORY_RESET:
                # Refused: a factory reset would forget IDs and baud rate and strand the robot.
                self.stats["refused"] += 1
                log.warning("refused factory reset for ID %d", pkt.dxl_id)
                if not broadcast:
                    out += [self._status(s, p.ERR_RESULT_FAIL) for s in targets]
            else:
                if not broadcast:
                    out += [self._status(s, p.ERR_INSTRUCTION) for s in targets]
            if inst in (p.WRITE, p.SYNC_WRITE, p.BULK_WRITE, p.ACTION, p.REBOOT):
                self._apply_outputs()
            return [r for r in out if r is not None]

    def _read(self, s: Servo, params: bytes, length: Optional[int] = None) -> Optional[tuple[int, bytes]]:
        if length is None:
            if len(params) != 4:
                return self._status(s, p.ERR_DATA_LENGTH, b"", p.READ)
            addr, length = p.le_uint(params[:2]), p.le_uint(params[2:4])
        else:
            addr = p.le_uint(params[:2])
        if addr + length > ct.TABLE_SIZE or length == 0:
            return self._status(s, p.ERR_ACCESS, b"", p.READ)
        return self._status(s, 0, bytes(s.table[addr : addr + length]), p.READ)

    def _write(self, s: Servo, params: bytes, register: bool = False) -> Optional[tuple[int, bytes]]:
        if len(params) < 3:
            return self._status(s, p.ERR_DATA_LENGTH)
        addr, data = p.le_uint(params[:2]), bytes(params[2:])
        err = self._check_write(s, addr, data)
        if err:
            return self._status(s, err)
        if register:
            s.registered = (addr, data)
        else:
            err = self._apply_write(s, addr, data)
        return self._status(s, err)

    def _check_write(self, s: Servo, addr: int, data: bytes) -> int:
        if not _writable_range(addr, len(data), s.torque):
            return p.ERR_ACCESS
        return 0

    def _apply_write(self, s: Servo, addr: int, data: bytes) -> int:
        """Write ``data`` at ``addr`` with the servo's side effects; returns a status error number."""
        if self._check_write(s, addr, data):
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
            self._goal_log.append(GoalWrite(time.monotonic(), s.dxl_id, raw, self._goal_rad(s)))
        if s.dxl_id != old_id:  # ID changed (EEPROM write with torque off)
            self.servos.pop(old_id, None)
            self.servos[s.dxl_id] = s
        return 0

    def _reboot(self, s: Servo) -> None:
        """Reboot: RAM back to defaults, torque off, hardware error cleared unless it persists."""
        for reg in ct.REGISTERS.values():
            if not reg.eeprom and reg.writable:
                s.set(reg.name, reg.default)
        s.set("hardware_error_status", s.persistent_error)
        s.set("goal_position", s.get("present_position"))
        s.registered = None
        s.unresponsive_until = time.monotonic() + self.reboot_s

    def _sync_read(self, params: bytes) -> list[Optional[tuple[int, bytes]]]:
        if len(params) < 5:
            return []
        addr, length = p.le_uint(params[:2]), p.le_uint(params[2:4])
        ids = list(params[4:])
        # Each motor answers in the order listed; a silent motor leaves a gap.
        return [self._read(s, params[:2], length) for s in self._responders(ids)]

    def _sync_write(self, params: bytes) -> None:
        if len(params) < 5:
            return
        addr, length = p.le_uint(params[:2]), p.le_uint(params[2:4])
        blocks = p.split_id_blocks(params[4:], 1 + length)
        if blocks is None:
            return
        present = {s.dxl_id for s in self._responders([b[0] for b in blocks])}
        for b in blocks:
            if b[0] in present:
                self._apply_write(self.servos[b[0]], addr, bytes(b[1:]))

    def _bulk_read(self, params: bytes) -> list[Optional[tuple[int, bytes]]]:
        blocks = p.split_id_blocks(params, 5)
        if blocks is None:
            return []
        out = []
        for b in blocks:
            for s in self._responders([b[0]]):
                out.append(self._read(s, b[1:3], p.le_uint(b[3:5])))
        return out

    def _bulk_write(self, params: bytes) -> None:
        i = 0
        while i + 5 <= len(params):
            dxl_id, addr, length = params[i], p.le_uint(params[i + 1 : i + 3]), p.le_uint(params[i + 3 : i + 5])
            data = bytes(params[i + 5 : i + 5 + length])
            i += 5 + length
            for s in self._responders([dxl_id]):
                self._apply_write(s, addr, data)


def serve_forever(emulator: ServoEmulator, on_ready: Optional[Callable[[str], None]] = None) -> None:
    """Start ``emulator`` and block until Ctrl-C (used by ``mbrl-ros emulate``)."""
    path = emulator.start()
    if on_ready:
        on_ready(path)
    try:
        while True:
            time.sleep(0.5)
    finally:
        emulator.stop()
