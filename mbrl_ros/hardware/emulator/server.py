"""A Dynamixel Protocol 2.0 servo emulator on a pseudo-terminal, backed by the MuJoCo robot.

The pty server: it parses instruction packets, answers them from the servo model
(:mod:`.servo`) and advances the physics (:mod:`.physics`) in real time.

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
import os
import random
import select
import termios
import threading
import time
import tty
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from mbrl_ros.hardware import control_table as ct
from mbrl_ros.hardware import protocol as p
from mbrl_ros.hardware.emulator.physics import XH430_NO_LOAD_SPEED, PhysicsBackend, RobelSimBackend, make_backend
from mbrl_ros.hardware.emulator.servo import Faults, GoalWrite, Servo, ServoBank
from mbrl_ros.hardware.robot_config import RobotConfig, load_robot_config

log = logging.getLogger(__name__)


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


def default_pose(robot: str, n_joints: int) -> np.ndarray:
    """Where the first-order model's joints start: the D'Claw reset pose (defined by the task), else zeros."""
    if robot == "dclaw":
        from mbrl_ros.tasks.dclaw_turn import RESET_POSE

        return RESET_POSE.copy()
    return np.zeros(n_joints)


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

    def __init__(
        self,
        robot: Union[str, RobotConfig] = "dclaw",
        baud: int = 1_000_000,
        physics: str = "auto",
        realtime: bool = True,
        wire_timing: bool = False,
        model: str = "XH430-W350",
        seed: int = 0,
        missing_ids: Sequence[int] = (),
        q0: Optional[Sequence[float]] = None,
        task_id: Optional[str] = None,
        reboot_s: float = 0.05,
        v_max: float = XH430_NO_LOAD_SPEED,
    ) -> None:
        self.config = robot if isinstance(robot, RobotConfig) else load_robot_config(robot)
        if baud not in ct.BAUD_CODES:
            raise ValueError(f"baud {baud} is not a Dynamixel baud rate; valid: {sorted(ct.BAUD_CODES)}")
        if model not in ct.MODEL_NUMBERS:
            raise ValueError(f"unknown model {model!r}; valid: {sorted(ct.MODEL_NUMBERS)}")
        self.robot = self.config.robot
        self.baud = baud
        self.realtime = realtime
        self.wire_timing = wire_timing
        self._rng = random.Random(seed)
        n_joints = len(self.config.joint_ids)
        start = default_pose(self.robot, n_joints) if q0 is None else np.asarray(q0, float)
        backend = make_backend(self.robot, n_joints, start, physics, task_id, v_max=v_max)
        self.physics = "mujoco" if isinstance(backend, RobelSimBackend) else "first-order"
        self.bank = ServoBank(self.config, backend, ct.MODEL_NUMBERS[model], baud, missing_ids, reboot_s)
        self._lock = self.bank.lock
        self.stats = {"rx_packets": 0, "tx_packets": 0, "crc_errors_rx": 0, "dropped": 0, "refused": 0, "collisions": 0}
        self._master: Optional[int] = None
        self._slave: Optional[int] = None
        self._wake_r, self._wake_w = -1, -1
        self._threads: list[threading.Thread] = []
        self._running = threading.Event()
        self.port_path = ""

    # -- the servo model, as before the split (tests and tools use these) -----------------------
    @property
    def servos(self) -> dict[int, Servo]:
        return self.bank.servos

    @property
    def backend(self) -> PhysicsBackend:
        return self.bank.backend

    @property
    def faults(self) -> Faults:
        return self.bank.faults

    @property
    def sim_time(self) -> float:
        return self.bank.sim_time

    def inject(self, kind: str, ids: Optional[Sequence[int]] = None, **params: Any) -> None:
        """Inject a fault (see :meth:`ServoBank.inject`)."""
        self.bank.inject(kind, ids, **params)

    def clear_faults(self, kind: Optional[str] = None) -> None:
        """Remove injected faults (all, or one kind). Hardware errors stay until a reboot."""
        self.bank.clear_faults(kind)

    def goal_writes(self, dxl_id: Optional[int] = None) -> list[GoalWrite]:
        """Every Goal Position write that reached a motor (optionally of one ID), oldest first."""
        return self.bank.goal_writes(dxl_id)

    def clear_goal_writes(self) -> None:
        self.bank.clear_goal_writes()

    def torque_enabled(self) -> dict[int, bool]:
        return self.bank.torque_enabled()

    def joint_positions(self) -> np.ndarray:
        """Simulated joint angles (rad), in the task's joint order."""
        return self.bank.joint_positions()

    def object_angle(self) -> Optional[float]:
        return self.bank.object_angle()

    def torso_pose(self) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """D'Kitty torso (xyz, wxyz) from the simulation, to feed ``HardwareEnv.set_tracker_pose``."""
        return self.bank.torso_pose()

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
            self._threads.append(
                threading.Thread(target=self._physics_loop, name="servo-emulator-physics", daemon=True)
            )
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
    # -- physics -------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        """Advance physics by ``seconds`` (rounded to whole physics steps) and refresh the tables."""
        self.bank.step(max(1, int(round(seconds / self.backend.timestep))))

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
                self.bank.step(n)

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
        if self._slave is None:
            return True
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
            delay += max(
                (self.servos[i].get("return_delay_time") * 2e-6 for i, _ in replies if i in self.servos), default=0.0
            )
        if delay > 0:
            _wait(delay)
            # Half-duplex bus: if the host gave up waiting and already sent its next instruction,
            # this late reply collides with it and is lost (it is not delivered as a stale answer).
            if self.faults.delay_s > 0 and self._master is not None and select.select([self._master], [], [], 0)[0]:
                self.stats["collisions"] += 1
                return
        if self._master is not None:
            os.write(self._master, bytes(out))

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
                return [r for s in self.bank.responders([pkt.dxl_id], self.baud) if (r := self._status(s, p.ERR_CRC))]
            targets = self.bank.responders(sorted(self.servos) if broadcast else [pkt.dxl_id], self.baud)
            inst = pkt.instruction
            out: list[Optional[tuple[int, bytes]]] = []
            if inst == p.PING:
                for s in targets:
                    out.append(
                        self._status(s, 0, p.u16(s.get("model_number")) + bytes((s.get("firmware_version"),)), p.PING)
                    )
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
                        self.bank.apply_write(s, addr, data)
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
                    self.bank.reboot(s)
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
                self.bank.apply_outputs()
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
        err = self.bank.check_write(s, addr, data)
        if err:
            return self._status(s, err)
        if register:
            s.registered = (addr, data)
        else:
            err = self.bank.apply_write(s, addr, data)
        return self._status(s, err)

    def _sync_read(self, params: bytes) -> list[Optional[tuple[int, bytes]]]:
        if len(params) < 5:
            return []
        length = p.le_uint(params[2:4])
        ids = list(params[4:])
        # Each motor answers in the order listed; a silent motor leaves a gap.
        return [self._read(s, params[:2], length) for s in self.bank.responders(ids, self.baud)]

    def _sync_write(self, params: bytes) -> None:
        if len(params) < 5:
            return
        addr, length = p.le_uint(params[:2]), p.le_uint(params[2:4])
        blocks = p.split_id_blocks(params[4:], 1 + length)
        if blocks is None:
            return
        present = {s.dxl_id for s in self.bank.responders([b[0] for b in blocks], self.baud)}
        for b in blocks:
            if b[0] in present:
                self.bank.apply_write(self.servos[b[0]], addr, bytes(b[1:]))

    def _bulk_read(self, params: bytes) -> list[Optional[tuple[int, bytes]]]:
        blocks = p.split_id_blocks(params, 5)
        if blocks is None:
            return []
        out = []
        for b in blocks:
            for s in self.bank.responders([b[0]], self.baud):
                out.append(self._read(s, b[1:3], p.le_uint(b[3:5])))
        return out

    def _bulk_write(self, params: bytes) -> None:
        i = 0
        while i + 5 <= len(params):
            dxl_id, addr, length = params[i], p.le_uint(params[i + 1 : i + 3]), p.le_uint(params[i + 3 : i + 5])
            data = bytes(params[i + 5 : i + 5 + length])
            i += 5 + length
            for s in self.bank.responders([dxl_id], self.baud):
                self.bank.apply_write(s, addr, data)


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
