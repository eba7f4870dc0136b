"""The safety layer between a policy and the Dynamixel bus (not bypassable by the env).

:class:`SafetyLayer` owns the only path from an action to a Goal Position write in
:class:`~mbrl_ros.hardware.robot_env.HardwareEnv`:

``action -> TaskSpec.action_to_targets (clip to [-1, 1], task position range, per-step rate
limit) -> soft start ramp -> final clamp (task range and the joints' hard limits; non-finite
refused) -> one sync write``.

Around that path it enforces, on every state read:

* **position**: a measured joint beyond the task range by more than ``position_margin_rad``;
* **velocity**: ``|qdot| > velocity_limit_rad_s``;
* **current**: ``|I| > current_limit_ma``;
* **hardware_error**: a motor raising its alert bit (decoded from register 70; a real servo
  has already dropped its torque for shutdown errors);
* **non_finite_action**: a policy emitting NaN/inf (the action is never sent);
* **comm**: reads failing for longer than ``error_timeout_s`` (shorter faults are retried
  within the step and tolerated).

Each limit has a severity ``off`` | ``warn`` | ``abort`` (default ``abort``). ``abort`` puts
the robot in the safe state (``safe_state``: torque off, or hold the present position) and
marks the episode aborted; ``warn`` counts and logs.

A **command watchdog** thread holds the present position when no fresh command arrived for
``watchdog_hold_s``, and turns torque off after ``watchdog_torque_off_s`` without one. After
activation a **soft start** ramps the allowed joint speed from ``soft_start_min_fraction`` of
the task's limit to all of it over ``soft_start_s``, starting from the present position (the
goal registers are set to the present position before torque comes on). :meth:`estop` reaches
torque-off through the bus's fast path and reports its latency (budget ``estop_budget_s``);
after an e-stop nothing moves until :meth:`clear_estop` (an operator's decision).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from mbrl_ros.hardware.dynamixel_bus import BusError, BusReadError, BusState, DynamixelBus

log = logging.getLogger(__name__)


class Severity(str, enum.Enum):
    """What a limit violation does."""

    OFF = "off"
    WARN = "warn"
    ABORT = "abort"


LIMITS = ("position", "velocity", "current", "hardware_error", "non_finite_action", "comm")


class SafetyError(RuntimeError):
    """The safety layer refused an operation (inactive, e-stopped, torque off by the watchdog)."""


@dataclass
class SafetyConfig:
    """Every safety parameter (the ``safety:`` section of ``hardware/<robot>.yaml``)."""

    position_margin_rad: float = 0.1  # measured joint beyond the task range by more -> position event
    velocity_limit_rad_s: float = 5.0  # |measured joint velocity| above -> velocity event
    current_limit_ma: float = 1000.0  # |present current| above -> current event
    severity: dict[str, Severity] = field(default_factory=lambda: {k: Severity.ABORT for k in LIMITS})
    watchdog_hold_s: float = 0.5  # no fresh command for this long -> hold the present position
    watchdog_torque_off_s: float = 2.0  # no fresh command for this long -> torque off
    watchdog_period_s: float = 0.01  # how often the watchdog thread looks
    error_timeout_s: float = 0.5  # communication faults tolerated this long, then safe state + abort
    soft_start_s: float = 1.0  # after activation, the speed limit ramps up over this long
    soft_start_min_fraction: float = 0.1  # speed limit at activation, as a fraction of the task's
    estop_budget_s: float = 0.05  # e-stop must reach torque-off within this (measured, warned)
    safe_state: str = "torque_off"  # torque_off | hold: what an abort leaves the robot in
    tracker_timeout_s: float = 0.2  # D'Kitty: torso pose older than this is stale

    def __post_init__(self) -> None:
        sev = {k: Severity.ABORT for k in LIMITS}
        for k, v in dict(self.severity).items():
            if k not in LIMITS:
                raise ValueError(f"safety.severity: unknown limit {k!r}; valid: {LIMITS}")
            try:
                sev[k] = Severity(v)
            except ValueError as exc:
                raise ValueError(f"safety.severity.{k}: {v!r} is not one of off|warn|abort") from exc
        self.severity = sev
        positive = (
            "velocity_limit_rad_s",
            "current_limit_ma",
            "watchdog_hold_s",
            "watchdog_torque_off_s",
            "watchdog_period_s",
            "error_timeout_s",
            "estop_budget_s",
            "tracker_timeout_s",
        )
        for name in positive:
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise ValueError(f"safety.{name} must be a positive number, got {v!r}")
        if self.position_margin_rad < 0 or self.soft_start_s < 0:
            raise ValueError("safety.position_margin_rad and safety.soft_start_s must be >= 0")
        if not 0 < self.soft_start_min_fraction <= 1:
            raise ValueError("safety.soft_start_min_fraction must be in (0, 1]")
        if self.watchdog_torque_off_s <= self.watchdog_hold_s:
            raise ValueError("safety.watchdog_torque_off_s must be longer than safety.watchdog_hold_s")
        if self.safe_state not in ("torque_off", "hold"):
            raise ValueError(f"safety.safe_state must be torque_off or hold, got {self.safe_state!r}")

    @classmethod
    def from_dict(cls, data: Optional[Mapping[str, Any]] = None, **overrides: Any) -> "SafetyConfig":
        """From the YAML ``safety:`` mapping plus keyword overrides; unknown keys -> ``ValueError``."""
        merged = dict(data or {})
        sev = dict(merged.pop("severity", {}) or {})
        sev.update(overrides.pop("severity", {}) or {})
        merged.update(overrides)
        names = {f.name for f in fields(cls)}
        unknown = set(merged) - names
        if unknown:
            raise ValueError(f"unknown safety parameters {sorted(unknown)}; valid: {sorted(names)}")
        values: dict[str, Any] = {
            k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in merged.items()
        }
        return cls(severity=sev, **values)


@dataclass(frozen=True)
class SafetyEvent:
    """One limit violation."""

    t: float
    limit: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class CommandResult:
    """What :meth:`SafetyLayer.command` did with one action."""

    action: np.ndarray  # the clipped action actually used (zeros if refused)
    target: np.ndarray  # the joint targets written (rad)
    sent: bool
    aborted: bool
    events: tuple[SafetyEvent, ...] = ()


class SafetyLayer:
    """Limits, watchdog, soft start and e-stop around one :class:`DynamixelBus`.

    Args:
        bus: an open bus.
        task: the :class:`~mbrl_ros.tasks.base.TaskSpec` whose action pipeline and joint limits
            apply (``None``: hard limits only, :meth:`command` unavailable).
        config: the safety parameters.
        on_event: called with every :class:`SafetyEvent` (e.g. to publish diagnostics).
        control_period_s: the control loop's period. The task's rate limit allows
            ``qvel_max * task dt`` per action; a faster loop (e.g. 100 Hz) gets
            ``qvel_max * control_period_s`` per action, so joint speeds stay the task's.
    """

    def __init__(
        self,
        bus: DynamixelBus,
        task: Any = None,
        config: Optional[SafetyConfig] = None,
        on_event: Optional[Callable[[SafetyEvent], None]] = None,
        control_period_s: Optional[float] = None,
    ) -> None:
        self.bus = bus
        self.task = task
        self.config = config or SafetyConfig.from_dict(bus.config.safety)
        self.on_event = on_event
        n = len(bus.joints)
        self._hard_low, self._hard_high = bus.config.lower, bus.config.upper
        if task is not None:
            lim = task.limits
            if len(lim.qpos_low) != n:
                raise ValueError(f"task {task.info.task_id} has {len(lim.qpos_low)} joints, the bus {n}")
            self._task_low = np.maximum(lim.qpos_low, self._hard_low)
            self._task_high = np.minimum(lim.qpos_high, self._hard_high)
            self._qvel_max = np.asarray(lim.qvel_max, dtype=float)
            self._dt = float(task.info.dt)
        else:
            self._task_low, self._task_high = self._hard_low.copy(), self._hard_high.copy()
            self._qvel_max = np.full(n, np.pi)
            self._dt = 0.1
        self._period = self._dt if control_period_s is None else float(control_period_s)
        if not (np.isfinite(self._period) and self._period > 0):
            raise ValueError(f"control_period_s must be positive, got {control_period_s}")
        self._lock = threading.RLock()
        self.state = "inactive"  # inactive | active | holding | torque_off | faulted | estopped
        self.abort_reason = ""
        self._reset_mode = False
        self._activated_at = 0.0
        self._last_command_t = 0.0
        self._last_target: Optional[np.ndarray] = None
        self.last_state: Optional[BusState] = None
        self._comm_fault_since: Optional[float] = None
        self.events: deque[SafetyEvent] = deque(maxlen=200)
        self.counts: dict[str, int] = {k: 0 for k in LIMITS}
        self.hardware_errors: dict[int, list[str]] = {}
        self.clip_count = 0  # commands changed by the action clip, the soft start or the final clamp
        self.peak_speed_rad_s = 0.0  # the largest |joint velocity| read since construction or the last reset of it
        self.watchdog_trips = {"hold": 0, "torque_off": 0}
        self.estop_latencies: list[float] = []
        self._watchdog: Optional[threading.Thread] = None
        self._stop = threading.Event()

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return self.state in ("active", "holding")

    @property
    def aborted(self) -> bool:
        return self.state in ("faulted", "estopped")

    def activate(self) -> BusState:
        """Read the robot, set goals to the present position, torque on, start soft start and watchdog."""
        with self._lock:
            if self.state == "estopped":
                raise SafetyError("e-stopped: call clear_estop() after checking the robot")
            self.abort_reason = ""
            self._comm_fault_since = None
            state = self.read_state(trip=False)
            if state is None:
                raise SafetyError(f"cannot activate: {self.bus.stats.last_error}")
            # brief bus faults are tolerated here too; a refusal (hardware error) is not retried
            t_end = time.monotonic() + self.config.error_timeout_s
            while True:
                try:
                    self.enable_torque()
                    break
                except BusReadError:
                    if time.monotonic() > t_end:
                        raise
                    time.sleep(0.002)
            now = time.monotonic()
            self._activated_at = self._last_command_t = now
            self._last_target = np.clip(state.position, self._hard_low, self._hard_high)
            if not self._set_state("active"):  # an e-stop came in after the torque-on: it stands
                raise SafetyError("e-stopped during activation: call clear_estop() after checking the robot")
        self._start_watchdog()
        return state

    def enable_torque(self, ids: Optional[Sequence[int]] = None) -> None:
        """Torque on for ``ids`` (default: every joint), refused while e-stopped.

        The e-stop check and the torque-on packets go out under the bus lock, and :meth:`estop`
        takes that lock too, so an e-stop from another thread is always either seen here or
        sent after this torque-on: it can never be undone by a reset that was half-way through.
        """
        with self.bus.lock:
            if self.state == "estopped":
                raise SafetyError("e-stopped: torque stays off until clear_estop()")
            goals = self.bus.enable_torque(ids)
        # The bus set each engaged joint's goal to where it is. Commands are rate-limited from
        # the last target, so that target must follow: a joint that was limp (D'Claw reset,
        # tops and bottoms while the valve turns) would otherwise be sent back to its stale goal,
        # a jump the servo makes at full speed (5.3-7 rad/s measured on the emulator).
        with self._lock:
            if self._last_target is not None:
                target = self._last_target.copy()
                for j, m in enumerate(self.bus.joints):
                    if m.dxl_id in goals:
                        target[j] = goals[m.dxl_id]
                self._last_target = target

    def _set_state(self, new: str, only_from: Optional[tuple[str, ...]] = None) -> bool:
        """Move to ``new`` unless e-stopped (only :meth:`clear_estop` leaves that state); with
        ``only_from``, only from one of those states. Returns whether the state changed."""
        with self.bus.lock:
            if self.state == "estopped" or (only_from is not None and self.state not in only_from):
                return False
            self.state = new
            return True

    def deactivate(self) -> None:
        """Torque off and stop the watchdog (the normal end of a session)."""
        self._stop_watchdog()
        with self._lock:
            try:
                self.bus.disable_torque()
            finally:
                self._set_state("inactive")

    def estop(self) -> tuple[float, bool]:
        """Emergency stop: torque off on every motor now; returns ``(latency_s, verified)``.

        Callable from any thread. The robot stays e-stopped until :meth:`clear_estop`.
        ``latency_s`` runs from this call to the first torque-off packet on the wire (waiting
        for a packet in flight included).
        """
        t_call = time.monotonic()
        with self.bus.lock:  # the state and the torque-off as one step (see enable_torque)
            waited = time.monotonic() - t_call
            self.state = "estopped"
            self.abort_reason = "e-stop"
            sent, verified = self.bus.emergency_torque_off(self.config.estop_budget_s)
        latency = waited + sent
        self.estop_latencies.append(latency)
        if latency > self.config.estop_budget_s:
            log.warning("e-stop took %.1f ms (budget %.0f ms)", latency * 1e3, self.config.estop_budget_s * 1e3)
        if not verified:
            log.error("e-stop: could not verify torque off on every motor")
        self._stop.set()
        return latency, verified

    def clear_estop(self) -> None:
        """Allow :meth:`activate` again after an e-stop."""
        with self._lock, self.bus.lock:
            if self.state == "estopped":
                self.state = "inactive"
                self.abort_reason = ""

    def hardware_errors_cleared(self, ids: Sequence[int]) -> None:
        """Forget the recorded hardware errors of ``ids`` (after those motors were rebooted)."""
        with self._lock:
            for i in ids:
                self.hardware_errors.pop(int(i), None)

    @contextmanager
    def reset_mode(self) -> Iterator[None]:
        """Within: position checks use the hard limits (scripted resets leave the task range)."""
        prev = self._reset_mode
        self._reset_mode = True
        try:
            yield
        finally:
            self._reset_mode = prev

    # -- state ---------------------------------------------------------------------------------
    def read_state(self, trip: bool = True) -> Optional[BusState]:
        """Read the robot, retrying a failing bus for up to ``error_timeout_s``; check every limit.

        Returns ``None`` (and, with ``trip``, puts the robot in the safe state) when reads keep
        failing past the timeout, or when a limit with severity ``abort`` tripped.
        """
        while True:
            try:
                state = self.bus.read_state()
                break
            except BusReadError as exc:
                now = time.monotonic()
                if self._comm_fault_since is None:
                    self._comm_fault_since = now
                if now - self._comm_fault_since >= self.config.error_timeout_s:
                    sev = self.config.severity["comm"]
                    if sev is Severity.OFF or not trip:
                        return None
                    self._event("comm", f"bus reads failing for {now - self._comm_fault_since:.2f} s: {exc}")
                    return None
                time.sleep(0.002)
        self._comm_fault_since = None
        self.last_state = state
        if trip:
            self.check(state)
            if self.aborted:
                return None
        return state

    def check(self, state: BusState) -> list[SafetyEvent]:
        """Apply the position/velocity/current/hardware-error limits to one state."""
        cfg = self.config
        out = []
        if state.velocity.size:  # the fastest joint seen, for diagnostics and the reset benchmark
            self.peak_speed_rad_s = max(self.peak_speed_rad_s, float(np.max(np.abs(state.velocity))))
        low, high = (self._hard_low, self._hard_high) if self._reset_mode else (self._task_low, self._task_high)
        m = cfg.position_margin_rad
        bad = np.flatnonzero((state.position < low - m) | (state.position > high + m))
        if bad.size:
            out.append(
                self._event(
                    "position",
                    f"joints {self._names(bad)} outside their range by more than {m} rad: "
                    f"{np.round(state.position[bad], 3).tolist()}",
                )
            )
        bad = np.flatnonzero(np.abs(state.velocity) > cfg.velocity_limit_rad_s)
        if bad.size:
            out.append(
                self._event(
                    "velocity",
                    f"joints {self._names(bad)} faster than {cfg.velocity_limit_rad_s} rad/s: "
                    f"{np.round(state.velocity[bad], 2).tolist()}",
                )
            )
        bad = np.flatnonzero(np.abs(state.current) > cfg.current_limit_ma)
        if bad.size:
            out.append(
                self._event(
                    "current",
                    f"joints {self._names(bad)} above {cfg.current_limit_ma} mA: "
                    f"{np.round(state.current[bad], 0).tolist()}",
                )
            )
        if state.alerts:
            try:
                errs = self.bus.read_hardware_errors(state.alerts)
            except BusError as exc:
                errs = {i: [f"unreadable ({exc})"] for i in state.alerts}
            self.hardware_errors.update(errs)
            desc = "; ".join(f"ID {i}: {', '.join(n)}" for i, n in sorted(errs.items()))
            out.append(self._event("hardware_error", f"hardware error {desc} (reboot the motor to clear)"))
        return [e for e in out if e is not None]

    def _names(self, idx: np.ndarray) -> list[str]:
        return [f"{self.bus.joints[i].name}(ID {self.bus.joints[i].dxl_id})" for i in idx]

    def _event(self, limit: str, message: str) -> Optional[SafetyEvent]:
        sev = self.config.severity[limit]
        if sev is Severity.OFF:
            return None
        ev = SafetyEvent(time.monotonic(), limit, sev, message)
        self.events.append(ev)
        self.counts[limit] += 1
        if self.on_event:
            self.on_event(ev)
        if sev is Severity.ABORT:
            log.error("safety abort (%s): %s", limit, message)
            self._trip(f"{limit}: {message}")
        else:
            log.warning("safety warning (%s): %s", limit, message)
        return ev

    def _trip(self, reason: str) -> None:
        """Go to the safe state and mark the episode aborted."""
        with self._lock:
            if not self._set_state("faulted"):
                return  # e-stopped: torque is already off, and the e-stop's reason stands
            self.abort_reason = reason
            try:
                if self.config.safe_state == "hold" and self.last_state is not None and not reason.startswith("comm"):
                    self.bus.write_goal_positions(self.last_state.position)
                else:
                    # repeated until the motors confirm it (a faulty bus may lose one packet)
                    self.bus.emergency_torque_off(self.config.estop_budget_s)
            except (BusError, ValueError) as exc:
                log.error("could not reach the safe state: %s", exc)
                try:
                    self.bus.disable_torque()
                except BusError:
                    pass

    # -- commands ------------------------------------------------------------------------------
    def _speed_fraction(self, now: float) -> float:
        s = self.config.soft_start_s
        if s <= 0:
            return 1.0
        return float(np.clip((now - self._activated_at) / s, self.config.soft_start_min_fraction, 1.0))

    def _check_commandable(self) -> None:
        self._set_state("active", only_from=("holding",))  # a fresh command after a watchdog hold resumes control
        if self.state != "active":
            raise SafetyError(
                f"cannot command: safety state is {self.state}"
                + (f" ({self.abort_reason})" if self.abort_reason else "")
            )

    def command(self, action: np.ndarray) -> CommandResult:
        """Send one policy action through the task's action pipeline and every limit."""
        if self.task is None:
            raise SafetyError("command() needs a task; use command_targets()")
        act_dim = self.task.info.act_dim
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (act_dim,):
            raise ValueError(f"action must have shape ({act_dim},), got {np.shape(action)}")
        with self._lock:
            if self.aborted:
                return CommandResult(np.zeros(act_dim), self._last_target_or_nan(), False, True)
            self._check_commandable()
            if not np.all(np.isfinite(a)):
                ev = self._event("non_finite_action", f"policy action has non-finite values: {a.tolist()}")
                # never sent; hold the last target (and the episode is aborted if severity is abort)
                if not self.aborted:
                    self._send(self._last_target_or_hold(), time.monotonic())
                return CommandResult(
                    np.zeros(act_dim), self._last_target_or_nan(), not self.aborted, self.aborted, (ev,) if ev else ()
                )
            q_cur = self._q_current()
            if np.any(np.abs(a) > 1.0):
                self.clip_count += 1  # the policy asked for more than the action range
            clipped, q = self.task.action_to_targets(a, q_cur)
            return self._finish(clipped, q, q_cur, self._qvel_max * min(self._dt, self._period))

    def command_targets(self, q: np.ndarray, max_velocity: Optional[float] = None) -> CommandResult:
        """Send joint targets (rad) directly (scripted resets): rate-limited by ``max_velocity``
        (rad/s, default the task's limit) over the time since the previous command, then the
        soft start and the hard-limit clamp."""
        q = np.asarray(q, dtype=np.float64).reshape(-1)
        if q.shape != self._hard_low.shape:
            raise ValueError(f"expected {self._hard_low.size} joint targets, got {q.shape}")
        if not np.all(np.isfinite(q)):
            raise ValueError(f"refusing non-finite joint targets: {q.tolist()}")
        with self._lock:
            if self.aborted:
                return CommandResult(np.zeros(0), self._last_target_or_nan(), False, True)
            self._check_commandable()
            now = time.monotonic()
            elapsed = float(np.clip(now - self._last_command_t, 1e-3, self._dt))
            vmax = self._qvel_max if max_velocity is None else np.full_like(q, float(max_velocity))
            q_cur = self._last_target_or_hold()
            return self._finish(np.zeros(0), q, q_cur, vmax * elapsed, low=self._hard_low, high=self._hard_high)

    def _finish(
        self,
        clipped: np.ndarray,
        q: np.ndarray,
        q_cur: np.ndarray,
        max_step: np.ndarray,
        low: Optional[np.ndarray] = None,
        high: Optional[np.ndarray] = None,
    ) -> CommandResult:
        now = time.monotonic()
        requested = q.copy()
        # soft start: the allowed step grows from a fraction of the limit to all of it
        step = max_step * self._speed_fraction(now)
        q = q_cur + np.clip(q - q_cur, -step, step)
        # final clamp: the task range (policy) or the hard limits (reset); the bus clamps again
        low = self._task_low if low is None else low
        high = self._task_high if high is None else high
        q = np.clip(q, low, high)
        if not np.allclose(q, requested, atol=1e-9):
            self.clip_count += 1
        self._send(q, now)
        return CommandResult(clipped, q, True, False)

    def _send(self, q: np.ndarray, now: float) -> None:
        try:
            written = self.bus.write_goal_positions(q)
        except BusError as exc:
            # a sync write has no reply; a failure here is the port itself
            self._event("comm", f"goal write failed: {exc}")
            return
        self._last_target = written
        self._last_command_t = now

    def _q_current(self) -> np.ndarray:
        if self.last_state is not None:
            return self.last_state.position
        return self._last_target_or_hold()

    def hold_target(self) -> np.ndarray:
        """The joint targets that keep the robot where it is (the last goal sent, else the last reading)."""
        with self._lock:
            return self._last_target_or_hold().copy()

    def trip(self, reason: str) -> None:
        """Abort from outside (e.g. a stale tracker): safe state, episode aborted."""
        log.error("safety abort: %s", reason)
        self._trip(reason)

    def _last_target_or_hold(self) -> np.ndarray:
        if self._last_target is not None:
            return self._last_target
        if self.last_state is not None:
            return np.clip(self.last_state.position, self._hard_low, self._hard_high)
        raise SafetyError("no known position to hold (read the state first)")

    def _last_target_or_nan(self) -> np.ndarray:
        return self._last_target.copy() if self._last_target is not None else np.full(self._hard_low.size, np.nan)

    # -- watchdog ------------------------------------------------------------------------------
    def _start_watchdog(self) -> None:
        self._stop_watchdog()
        self._stop.clear()
        self._watchdog = threading.Thread(target=self._watch, name="safety-watchdog", daemon=True)
        self._watchdog.start()

    def _stop_watchdog(self) -> None:
        self._stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join(timeout=2.0)
        self._watchdog = None

    def _watch(self) -> None:
        cfg = self.config
        while not self._stop.wait(cfg.watchdog_period_s):
            if not self.bus.is_open:
                return  # the bus was closed under us (close() turned torque off)
            with self._lock:
                if not self.active:
                    if self.state in ("torque_off", "faulted", "estopped", "inactive"):
                        return
                    continue
                idle = time.monotonic() - self._last_command_t
                try:
                    if idle >= cfg.watchdog_torque_off_s:
                        self.bus.disable_torque()
                        self._set_state("torque_off")
                        self.abort_reason = f"watchdog: no command for {idle:.2f} s"
                        self.watchdog_trips["torque_off"] += 1
                        log.error("watchdog: no command for %.2f s, torque off", idle)
                        return
                    if idle >= cfg.watchdog_hold_s and self.state == "active":
                        hold = self._fresh_position()
                        self.bus.write_goal_positions(hold)
                        self._last_target = hold
                        self._set_state("holding", only_from=("active",))
                        self.watchdog_trips["hold"] += 1
                        log.warning("watchdog: no command for %.2f s, holding position", idle)
                except BusError as exc:
                    log.error("watchdog could not act on the bus: %s", exc)

    def _fresh_position(self) -> np.ndarray:
        try:
            st = self.bus.read_state()
            self.last_state = st
            return np.clip(st.position, self._hard_low, self._hard_high)
        except BusError:
            return self._last_target_or_hold()

    # -- diagnostics ---------------------------------------------------------------------------
    def diagnostics(self) -> dict[str, Any]:
        """Counters and state for ``/diagnostics`` (plain Python types)."""
        return {
            "state": self.state,
            "abort_reason": self.abort_reason,
            "limit_hits": dict(self.counts),
            "clipped_commands": self.clip_count,
            "peak_speed_rad_s": round(self.peak_speed_rad_s, 3),
            "watchdog_trips": dict(self.watchdog_trips),
            "hardware_errors": {int(k): list(v) for k, v in self.hardware_errors.items()},
            "estop_latency_ms": [round(x * 1e3, 3) for x in self.estop_latencies],
            "last_events": [f"{e.limit}/{e.severity.value}: {e.message}" for e in list(self.events)[-5:]],
        }

    def close(self) -> None:
        """Stop the watchdog and turn torque off (best effort)."""
        self._stop_watchdog()
        try:
            if self.bus.is_open:
                self.bus.disable_torque()
        except BusError as exc:
            log.error("torque off at close failed: %s", exc)
        self._set_state("inactive")
