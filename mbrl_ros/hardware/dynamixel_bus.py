"""Dynamixel Protocol 2.0 bus driver on the real ``dynamixel_sdk`` (PortHandler, PacketHandler 2.0).

One :class:`DynamixelBus` owns one serial port (a U2D2 / USB2Dynamixel, or the emulator's pty)
and the motors listed in a :class:`~mbrl_ros.hardware.robot_config.RobotConfig`. Per control
step it does what ROBEL's ``DynamixelClient`` does: **one sync write** of Goal Position
(116, 4 bytes) and **one read** of the 10-byte block 126..135 (present current, velocity,
position) of every motor, as a ``GroupSyncRead`` (default) or ``GroupBulkRead``.

What it adds over ROBEL:

* ``open()`` pings every ID and raises :class:`MissingMotorError` naming the missing ones.
* A failed read raises :class:`BusReadError`; it never returns cached or invented values.
* Every goal written passes the final clamp: non-finite targets are refused (``ValueError``)
  and finite ones are clipped to the joints' hard limits from the YAML.
* The status-packet alert bit of every motor is kept from each read, and hardware error
  status bits (register 70) are decoded into names (``overload``, ``overheating``, ...).
* Torque is turned off on :meth:`close` and at interpreter exit (``atexit``).
* :meth:`emergency_torque_off` is the fast path used by e-stop: one broadcast sync write of
  Torque Enable = 0, then a verifying read, repeated until confirmed or out of time.
* Packet timeouts use the real FTDI latency timer (read from sysfs when the port is a
  ttyUSB, else ``latency_timer_ms`` from the YAML) instead of the SDK's fixed 16 ms, and the
  port is read with a short blocking timeout instead of the SDK's busy spin.

All bus traffic goes through one lock, so a watchdog or e-stop thread can use the bus while a
control loop runs.

Usage::

    cfg = load_robot_config("dclaw", port="/dev/dynamixel")
    with DynamixelBus(cfg) as bus:            # open(): port, baud, ping all
        bus.enable_torque()                   # goal := present position, then torque on
        state = bus.read_state()              # BusState, radians / rad/s / mA
        bus.write_goal_positions(state.position)
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import dynamixel_sdk as sdk
import numpy as np
import serial

from mbrl_ros.hardware import control_table as ct
from mbrl_ros.hardware.robot_config import MotorConfig, RobotConfig

log = logging.getLogger(__name__)


class BusError(RuntimeError):
    """A failure on the Dynamixel bus (port, communication or motor)."""


class MissingMotorError(BusError):
    """Motors that did not answer a ping at connect; ``missing`` holds their IDs."""

    def __init__(self, missing: Sequence[int], port: str) -> None:
        self.missing = tuple(missing)
        super().__init__(
            f"Dynamixel motor(s) with ID {', '.join(map(str, self.missing))} did not answer on {port}: check power, "
            "cabling, the ID and the baud rate of each (Dynamixel Wizard), and that nothing else holds the port"
        )


class BusReadError(BusError):
    """A read failed; no data is returned. ``dxl_id`` is the first motor that did not answer, if known."""

    def __init__(self, message: str, dxl_id: Optional[int] = None, result: Optional[int] = None) -> None:
        self.dxl_id = dxl_id
        self.result = result
        super().__init__(message)


class BusWriteError(BusError):
    """A write could not be sent (or a motor refused it)."""


@dataclass(frozen=True)
class BusState:
    """One read of every motor, calibrated (joint order of the config)."""

    stamp: float  # time.monotonic() when the read completed
    position: np.ndarray  # rad
    velocity: np.ndarray  # rad/s
    current: np.ndarray  # mA
    object_position: Optional[float] = None  # D'Claw valve angle (rad), continuous
    object_velocity: Optional[float] = None
    alerts: tuple[int, ...] = ()  # IDs whose status packet had the hardware-alert bit set
    read_s: float = 0.0  # duration of the read transaction


@dataclass
class BusStats:
    """Counters for diagnostics."""

    reads: int = 0
    read_failures: int = 0
    writes: int = 0
    write_failures: int = 0
    last_error: str = ""
    last_error_id: Optional[int] = None
    failures_by_id: dict[int, int] = field(default_factory=dict)


class _PortHandler(sdk.PortHandler):
    """``PortHandler`` with the real latency timer in its timeouts and no busy spin on reads."""

    def __init__(self, port_name: str, latency_ms: float) -> None:
        super().__init__(port_name)
        self.latency_ms = latency_ms

    def setupPort(self, cflag_baud):  # noqa: N802 (SDK name)
        ok = super().setupPort(cflag_baud)
        # The SDK polls a non-blocking port in a tight loop; a 0.5 ms blocking read returns as
        # soon as the bytes asked for are there and leaves the CPU (and the GIL) to others.
        self.ser.timeout = 0.0005
        return ok

    def setPacketTimeout(self, packet_length):  # noqa: N802
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = self.tx_time_per_byte * packet_length + 2.0 * self.latency_ms + 2.0


class _StatusKeepingSyncRead(sdk.GroupSyncRead):
    """``GroupSyncRead`` that keeps each motor's status error byte and the first silent ID."""

    def rxPacket(self) -> int:  # noqa: N802
        self.last_result = False
        self.errors: dict[int, int] = {}
        self.failed_id: Optional[int] = None
        result = sdk.COMM_RX_FAIL
        for dxl_id in self.data_dict:
            data, result, error = self.ph.readRx(self.port, dxl_id, self.data_length)
            if result != sdk.COMM_SUCCESS or len(data) != self.data_length:
                self.failed_id = dxl_id
                return result if result != sdk.COMM_SUCCESS else sdk.COMM_RX_CORRUPT
            self.data_dict[dxl_id] = data
            self.errors[dxl_id] = error
        self.last_result = True
        return result


class _StatusKeepingBulkRead(sdk.GroupBulkRead):
    """``GroupBulkRead`` that keeps each motor's status error byte and the first silent ID."""

    def rxPacket(self) -> int:  # noqa: N802
        self.last_result = False
        self.errors = {}
        self.failed_id = None
        result = sdk.COMM_RX_FAIL
        for dxl_id, entry in self.data_dict.items():
            data, result, error = self.ph.readRx(self.port, dxl_id, entry[2])
            if result != sdk.COMM_SUCCESS or len(data) != entry[2]:
                self.failed_id = dxl_id
                return result if result != sdk.COMM_SUCCESS else sdk.COMM_RX_CORRUPT
            entry[0] = data
            self.errors[dxl_id] = error
        self.last_result = True
        return result


def _io_errors(kind: type = BusError):
    """Turn the serial layer's exceptions (port gone, I/O error) into ``kind`` (a :class:`BusError`)."""

    def wrap(method):
        @functools.wraps(method)
        def guarded(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except BusError:
                raise
            except (OSError, termios.error, serial.SerialException) as exc:
                self._reset_port_flag()
                msg = f"{method.__name__} on {self.config.port}: {exc}"
                self._fail(msg)
                raise kind(msg) from exc

        return guarded

    return wrap


def ftdi_latency_timer_ms(port: str) -> Optional[float]:
    """The FTDI latency timer of ``port`` from sysfs (``None`` if not an FTDI ttyUSB)."""
    try:
        dev = Path(os.path.realpath(port)).name
        f = Path("/sys/bus/usb-serial/devices") / dev / "latency_timer"
        return float(f.read_text().strip()) if f.is_file() else None
    except (OSError, ValueError):
        return None


class DynamixelBus:
    """The motors of one robot on one port (see the module docstring)."""

    def __init__(self, config: RobotConfig) -> None:
        self.config = config
        self.joints: tuple[MotorConfig, ...] = config.joints
        self.object_motor = config.object_motor
        self._lock = threading.RLock()
        self.stats = BusStats()
        self._port: Optional[_PortHandler] = None
        self._ph = sdk.PacketHandler(2.0)
        self._reader: Any = None  # _StatusKeepingSyncRead or _StatusKeepingBulkRead once open
        self._goal_writer: Any = None  # sdk.GroupSyncWrite once open
        self._atexit_registered = False
        self.latency_ms = config.latency_timer_ms
        ids = np.array([m.dxl_id for m in self.joints])
        self._ids = ids
        self._scale = np.array([m.scale for m in self.joints])
        self._offset = np.array([m.offset for m in self.joints])
        self._lower = config.lower
        self._upper = config.upper
        self.model_numbers: dict[int, int] = {}

    # -- connection ------------------------------------------------------------------------------
    @property
    def lock(self) -> threading.RLock:
        """The bus lock (re-entrant): every packet goes out under it. The safety layer holds it
        to make a state check and the write that depends on it one step (torque on vs e-stop)."""
        return self._lock

    @property
    def is_open(self) -> bool:
        return self._port is not None and self._port.is_open

    def open(self) -> "DynamixelBus":
        """Open the port at the configured baud rate and ping every motor.

        Raises :class:`BusError` if the port cannot be opened, :class:`MissingMotorError`
        naming every ID that does not answer, and :class:`BusError` on a wrong motor model.
        """
        with self._lock:
            if self.is_open:
                return self
            sysfs = ftdi_latency_timer_ms(self.config.port)
            if sysfs is not None:
                self.latency_ms = sysfs
                if sysfs > 1:
                    log.warning(
                        "FTDI latency timer of %s is %g ms; install hardware/99-mbrl-ros-dynamixel.rules "
                        "to set it to 1 ms",
                        self.config.port,
                        sysfs,
                    )
            port = _PortHandler(self.config.port, self.latency_ms)
            try:
                ok = port.setBaudRate(self.config.baud)  # opens the port
            except Exception as exc:  # serial.SerialException, OSError
                raise BusError(f"cannot open Dynamixel port {self.config.port}: {exc}") from exc
            if not ok:
                raise BusError(f"cannot open {self.config.port} at {self.config.baud} baud")
            self._port = port
            try:
                found = self.ping_all()
                missing = [i for i, model in found.items() if model is None]
                if missing:
                    raise MissingMotorError(missing, self.config.port)
                if self.config.model is not None:
                    want = ct.MODEL_NUMBERS[self.config.model]
                    wrong = {i: m for i, m in found.items() if m != want}
                    if wrong:
                        names = {
                            i: ct.MODEL_NAMES.get(m, str(m)) if m is not None else "silent" for i, m in wrong.items()
                        }
                        raise BusError(f"motor model mismatch (expected {self.config.model}): {names}")
                self.model_numbers = {i: int(m) for i, m in found.items() if m is not None}
                self._make_groups()
            except Exception:
                port.closePort()
                self._port = None
                raise
            if not self._atexit_registered:
                atexit.register(self._at_exit)
                self._atexit_registered = True
            return self

    def _make_groups(self) -> None:
        cfg = self.config
        if cfg.read_mode == "sync":
            self._reader = _StatusKeepingSyncRead(self._port, self._ph, ct.STATE_BLOCK_ADDRESS, ct.STATE_BLOCK_SIZE)
            for i in cfg.all_ids:
                self._reader.addParam(i)
        else:
            self._reader = _StatusKeepingBulkRead(self._port, self._ph)
            for i in cfg.all_ids:
                self._reader.addParam(i, ct.STATE_BLOCK_ADDRESS, ct.STATE_BLOCK_SIZE)
        self._goal_writer = sdk.GroupSyncWrite(self._port, self._ph, ct.ADDR_GOAL_POSITION, 4)

    def close(self) -> None:
        """Torque off (best effort) and close the port. Safe to call twice."""
        with self._lock:
            if not self.is_open:
                return
            try:
                self.disable_torque()
            except BusError as exc:
                log.error("torque off at close failed: %s", exc)
            if self._port is not None:
                self._port.closePort()
            self._port = None
            if self._atexit_registered:
                atexit.unregister(self._at_exit)
                self._atexit_registered = False

    def _at_exit(self) -> None:
        try:
            self.close()
        except Exception as exc:  # never raise at interpreter exit
            log.error("torque off at exit failed: %s", exc)

    def __enter__(self) -> "DynamixelBus":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _need_open(self) -> _PortHandler:
        if not self.is_open:
            raise BusError(f"bus on {self.config.port} is not open (call open())")
        assert self._port is not None
        return self._port

    def _fail(self, message: str, dxl_id: Optional[int] = None) -> None:
        self.stats.last_error = message
        self.stats.last_error_id = dxl_id
        if dxl_id is not None:
            self.stats.failures_by_id[dxl_id] = self.stats.failures_by_id.get(dxl_id, 0) + 1

    def _reset_port_flag(self) -> None:
        # the SDK leaves is_using set when a transaction is abandoned midway
        if self._port is not None:
            self._port.is_using = False

    # -- single-motor services ---------------------------------------------------------------
    @_io_errors(BusReadError)
    def ping(self, dxl_id: int) -> Optional[int]:
        """Model number of ``dxl_id``, or ``None`` if it does not answer."""
        with self._lock:
            port = self._need_open()
            model, result, _ = self._ph.ping(port, int(dxl_id))
            self._reset_port_flag()
            return int(model) if result == sdk.COMM_SUCCESS else None

    def ping_all(self) -> dict[int, Optional[int]]:
        """Model number (or ``None``) of every configured motor."""
        return {i: self.ping(i) for i in self.config.all_ids}

    @_io_errors(BusReadError)
    def read_register(self, dxl_id: int, name: str) -> int:
        """Read one control-table register by name (signed where the register is)."""
        reg = ct.REGISTERS.get(name)
        if reg is None:
            raise ValueError(f"unknown register {name!r}; valid: {sorted(ct.REGISTERS)}")
        with self._lock:
            port = self._need_open()
            data, result, error = self._ph.readTxRx(port, int(dxl_id), reg.address, reg.size)
            self._reset_port_flag()
            if result != sdk.COMM_SUCCESS or len(data) != reg.size:
                msg = f"read of {name} from ID {dxl_id} failed: {self._ph.getTxRxResult(result)}"
                self._fail(msg, dxl_id)
                raise BusReadError(msg, dxl_id, result)
            value = int.from_bytes(bytes(data), "little")
            return ct.to_signed(value, reg.size) if reg.signed else value

    @_io_errors(BusWriteError)
    def write_register(self, dxl_id: int, name: str, value: int) -> None:
        """Write one register (with status reply). Goal Position must go through the clamp, so
        it is refused here: use :meth:`write_goal_positions`."""
        reg = ct.REGISTERS.get(name)
        if reg is None or not reg.writable:
            raise ValueError(f"register {name!r} is unknown or read-only")
        if reg.address == ct.ADDR_GOAL_POSITION:
            raise ValueError("write goal positions with write_goal_positions() (it applies the position clamp)")
        with self._lock:
            port = self._need_open()
            data = list(int(value & ((1 << (8 * reg.size)) - 1)).to_bytes(reg.size, "little"))
            result, error = self._ph.writeTxRx(port, int(dxl_id), reg.address, reg.size, data)
            self._reset_port_flag()
            self._check_write(result, error, f"write of {name}={value} to ID {dxl_id}", dxl_id)

    def _check_write(self, result: int, error: int, what: str, dxl_id: Optional[int] = None) -> None:
        if result != sdk.COMM_SUCCESS:
            msg = f"{what} failed: {self._ph.getTxRxResult(result)}"
        elif error & 0x7F:
            msg = f"{what} refused by the motor: {self._ph.getRxPacketError(error & 0x7F)}"
        else:
            return
        self.stats.write_failures += 1
        self._fail(msg, dxl_id)
        raise BusWriteError(msg)

    @_io_errors(BusWriteError)
    def reboot(self, dxl_id: int, wait_s: float = 0.5) -> None:
        """Reboot one motor (clears a hardware error; torque comes back off) and wait until it answers."""
        with self._lock:
            port = self._need_open()
            result, error = self._ph.reboot(port, int(dxl_id))
            self._reset_port_flag()
            if result != sdk.COMM_SUCCESS:
                raise BusWriteError(f"reboot of ID {dxl_id} failed: {self._ph.getTxRxResult(result)}")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.ping(dxl_id) is not None:
                return
            time.sleep(0.02)
        raise BusError(f"ID {dxl_id} did not answer within {wait_s} s after reboot")

    def read_hardware_errors(self, ids: Optional[Sequence[int]] = None) -> dict[int, list[str]]:
        """Decoded Hardware Error Status (register 70) of each motor that has any bit set.

        A motor that does not answer is reported as ``["no_response"]``.
        """
        out: dict[int, list[str]] = {}
        for i in ids if ids is not None else self.config.all_ids:
            try:
                names = ct.decode_hardware_error(self.read_register(i, "hardware_error_status"))
            except BusReadError:
                names = ["no_response"]
            if names:
                out[i] = names
        return out

    def torque_status(self) -> dict[int, Optional[bool]]:
        """Torque Enable of every motor (``None`` when it does not answer)."""
        out: dict[int, Optional[bool]] = {}
        for i in self.config.all_ids:
            try:
                out[i] = bool(self.read_register(i, "torque_enable"))
            except BusReadError:
                out[i] = None
        return out

    # -- torque --------------------------------------------------------------------------------
    def _resolve_ids(self, ids: Optional[Sequence[int]]) -> list[int]:
        all_ids = self.config.all_ids
        if ids is None:
            return list(self.config.joint_ids)
        bad = [i for i in ids if i not in all_ids]
        if bad:
            raise ValueError(f"unknown motor IDs {bad}; configured: {all_ids}")
        return [int(i) for i in ids]

    @_io_errors(BusWriteError)
    def enable_torque(self, ids: Optional[Sequence[int]] = None) -> dict[int, float]:
        """Torque on (joints by default), after setting each goal to its present position.

        Writing the goal first matters: a servo moves to its stored Goal Position the moment
        torque comes on, and that may be a stale target from another session. Returns the goal
        written per ID (rad), so a caller that tracks targets can start from them.
        """
        ids = self._resolve_ids(ids)
        goals: dict[int, float] = {}
        with self._lock:
            for i in ids:
                present = self.read_register(i, "present_position")
                raw = self._clamp_raw(i, present)
                self._write_goal_raw({i: raw})
                goals[i] = self.config.raw_to_rad(self.config.motor(i), raw)
                port = self._need_open()
                result, error = self._ph.write1ByteTxRx(port, i, ct.ADDR_TORQUE_ENABLE, 1)
                self._reset_port_flag()
                if result == sdk.COMM_SUCCESS and error & 0x7F and error & 0x80:
                    names = ", ".join(ct.decode_hardware_error(self.read_register(i, "hardware_error_status")))
                    self._check_write(result, error, f"torque on of ID {i} (hardware error: {names}; reboot it)", i)
                self._check_write(result, error, f"torque on of ID {i}", i)
        return goals

    @_io_errors(BusWriteError)
    def disable_torque(self, ids: Optional[Sequence[int]] = None) -> None:
        """Torque off (every motor by default): one broadcast sync write, no status reply."""
        ids = list(self.config.all_ids) if ids is None else self._resolve_ids(ids)
        with self._lock:
            port = self._need_open()
            writer = sdk.GroupSyncWrite(port, self._ph, ct.ADDR_TORQUE_ENABLE, 1)
            for i in ids:
                writer.addParam(i, [0])
            result = writer.txPacket()
            self._reset_port_flag()
            if result != sdk.COMM_SUCCESS:
                raise BusWriteError(f"torque off failed: {self._ph.getTxRxResult(result)}")

    def emergency_torque_off(self, budget_s: float = 0.05) -> tuple[float, bool]:
        """E-stop: torque off on every motor, verified; returns ``(seconds, verified)``.

        Sends the broadcast torque-off, then reads Torque Enable back with one sync read;
        repeats while any motor still reports torque on and time is left in ``budget_s``.
        ``seconds`` is the time until the first torque-off packet had been written.
        """
        t0 = time.monotonic()
        sent_s: Optional[float] = None
        verified = False
        while True:
            try:
                self.disable_torque()
                if sent_s is None:
                    sent_s = time.monotonic() - t0
            except BusError as exc:
                log.error("e-stop torque off: %s", exc)
            verified = self._verify_torque_off()
            if verified or time.monotonic() - t0 > budget_s:
                break
        return (sent_s if sent_s is not None else time.monotonic() - t0), verified

    @_io_errors(BusReadError)
    def _verify_torque_off(self) -> bool:
        with self._lock:
            port = self._need_open()
            reader = _StatusKeepingSyncRead(port, self._ph, ct.ADDR_TORQUE_ENABLE, 1)
            for i in self.config.all_ids:
                reader.addParam(i)
            result = reader.txRxPacket()
            self._reset_port_flag()
            if result != sdk.COMM_SUCCESS:
                return False
            return all(reader.getData(i, ct.ADDR_TORQUE_ENABLE, 1) == 0 for i in self.config.all_ids)

    # -- per-step I/O --------------------------------------------------------------------------
    def _clamp_raw(self, dxl_id: int, raw: int) -> int:
        m = self.config.motor(dxl_id)
        q = float(np.clip(self.config.raw_to_rad(m, raw), m.lower, m.upper))
        return self.config.rad_to_raw(m, q)

    def clamp(self, q: np.ndarray) -> np.ndarray:
        """The final clamp: joint targets clipped to the hard limits; non-finite -> ``ValueError``."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (len(self.joints),):
            raise ValueError(f"expected {len(self.joints)} joint targets, got shape {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"refusing non-finite joint targets: {q}")
        return np.clip(q, self._lower, self._upper)

    def write_goal_positions(self, q: np.ndarray) -> np.ndarray:
        """One sync write of every joint's Goal Position (rad, joint order); returns what was written.

        The targets pass :meth:`clamp` first. Raises :class:`BusWriteError` if the packet
        cannot be sent (a sync write has no status reply, so delivery is checked by reads).
        """
        q = self.clamp(q)
        raw = np.round((q - self._offset) / self._scale / self.config.units.position_rad).astype(np.int64)
        self._write_goal_raw(dict(zip(self._ids.tolist(), raw.tolist())))
        return q

    def write_object_goal(self, theta: float) -> None:
        """Goal Position of the object motor (D'Claw valve, used by the scripted reset)."""
        m = self.object_motor
        if m is None:
            raise ValueError(f"{self.config.robot} has no object motor")
        if not np.isfinite(theta):
            raise ValueError(f"refusing non-finite object goal {theta}")
        theta = float(np.clip(theta, m.lower, m.upper))
        self._write_goal_raw({m.dxl_id: self.config.rad_to_raw(m, theta)})

    @_io_errors(BusWriteError)
    def _write_goal_raw(self, goals: dict[int, int]) -> None:
        with self._lock:
            self._need_open()
            w = self._goal_writer
            w.clearParam()
            for i, raw in goals.items():
                w.addParam(int(i), list(int(raw & 0xFFFFFFFF).to_bytes(4, "little")))
            result = w.txPacket()
            self._reset_port_flag()
            self.stats.writes += 1
            if result != sdk.COMM_SUCCESS:
                self.stats.write_failures += 1
                msg = f"goal position sync write failed: {self._ph.getTxRxResult(result)}"
                self._fail(msg)
                raise BusWriteError(msg)

    @_io_errors(BusReadError)
    def read_state(self) -> BusState:
        """One read of present current/velocity/position of every motor; raises :class:`BusReadError`."""
        with self._lock:
            self._need_open()
            t0 = time.monotonic()
            r = self._reader
            result = r.txRxPacket()
            self._reset_port_flag()
            self.stats.reads += 1
            if result != sdk.COMM_SUCCESS:
                self.stats.read_failures += 1
                failed = getattr(r, "failed_id", None)
                msg = f"state read failed at ID {failed}: {self._ph.getTxRxResult(result)}"
                self._fail(msg, failed)
                raise BusReadError(msg, failed, result)
            t1 = time.monotonic()
            raw = {i: self._block(r, i) for i in self.config.all_ids}
            alerts = tuple(i for i, e in r.errors.items() if e & 0x80)
        units = self.config.units
        cur = np.array([raw[i][0] for i in self._ids.tolist()], dtype=np.float64)
        vel = np.array([raw[i][1] for i in self._ids.tolist()], dtype=np.float64)
        pos = np.array([raw[i][2] for i in self._ids.tolist()], dtype=np.float64)
        obj_q = obj_v = None
        if self.object_motor is not None:
            m = self.object_motor
            c, v, p = raw[m.dxl_id]
            obj_q, obj_v = self.config.raw_to_rad(m, p), self.config.raw_to_rad_s(m, v)
        return BusState(
            stamp=t1,
            position=self._scale * pos * units.position_rad + self._offset,
            velocity=self._scale * vel * units.velocity_rad_s,
            current=self._scale * cur * units.current_ma,
            object_position=obj_q,
            object_velocity=obj_v,
            alerts=alerts,
            read_s=t1 - t0,
        )

    @staticmethod
    def _block(reader, dxl_id: int) -> tuple[int, int, int]:
        cur = ct.to_signed(reader.getData(dxl_id, ct.ADDR_PRESENT_CURRENT, 2), 2)
        vel = ct.to_signed(reader.getData(dxl_id, ct.ADDR_PRESENT_VELOCITY, 4), 4)
        pos = ct.to_signed(reader.getData(dxl_id, ct.ADDR_PRESENT_POSITION, 4), 4)
        return cur, vel, pos

    def diagnose(self) -> dict[int, str]:
        """Ping each motor and read its hardware error status: ``{id: "ok" | "no response" | errors}``."""
        out: dict[int, str] = {}
        for i in self.config.all_ids:
            if self.ping(i) is None:
                out[i] = "no response"
                continue
            try:
                names = ct.decode_hardware_error(self.read_register(i, "hardware_error_status"))
                out[i] = ", ".join(names) if names else "ok"
            except BusReadError:
                out[i] = "no response"
        return out
