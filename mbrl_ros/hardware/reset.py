"""Scripted hardware resets (ROBEL's ``scripted_reset.py`` procedures), through the safety layer.

Every motion here is a :meth:`SafetyLayer.command_targets` call (hard-limit clamp, speed limit,
watchdog fed), inside :meth:`SafetyLayer.reset_mode` so the position check uses the joints' hard
limits rather than the task's action range. When a reset cannot finish, the ``operator``
callback is asked (a message in, ``True`` = "fixed, go on" / ``False`` = give up); without an
operator the reset raises :class:`ResetError`.

* :func:`dclaw_reset` (ROBEL D'Claw): fingers top/bottom limp, the valve motor (ID 50) drives
  the valve to the episode's initial angle, wait, claw to its reset pose; if a joint is more than
  5 degrees off, up to 3 disentangle retries (tops up, then middles, then bottoms), then the
  operator; finally the valve motor is released for the episode.
* :func:`dkitty_reset`: ``"scripted"`` (up to 5 attempts: flatten, tuck, stand up through
  ROBEL's pose sequence, until the tracker says upright), ``"manual-auto"`` (wait until the
  tracker says upright), ``"manual"`` (ask the operator); then the standing pose (orient) or the
  episode's initial pose (stand).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from mbrl_ros.hardware.safety import SafetyLayer
from mbrl_ros.tasks.dclaw_turn import RESET_POSE as DCLAW_RESET_POSE  # the task's pose: one definition

log = logging.getLogger(__name__)

Operator = Callable[[str], bool]  # message -> True when the operator fixed it, False to give up
UprightProbe = Callable[[], Optional[float]]  # the tracker's upright value (R[2,2]), None if unknown

PI = math.pi
DCLAW_TOP, DCLAW_MIDDLE, DCLAW_BOTTOM = [0, 3, 6], [1, 4, 7], [2, 5, 8]
DKITTY_STAND_POSE = np.zeros(12)
# Our own tuck / stand-up poses, after ROBEL's sequence (its exact numbers are not reproduced).
DKITTY_FLAT_POSE = np.array([0.0, 0.0, 0.0] * 4)
DKITTY_TUCK_POSE = np.array([0.0, PI / 2, -1.5] * 4)
DKITTY_CROUCH_POSE = np.array([0.0, PI / 6, -PI / 6] * 4)
DKITTY_RESET_MODES = ("scripted", "manual-auto", "manual")


class ResetError(RuntimeError):
    """A scripted reset could not bring the robot to its start state."""


@dataclass
class ResetConfig:
    """Reset timing and tolerances (ROBEL's values where it has them)."""

    period_s: float = 0.05  # command / poll period of reset motions
    velocity_rad_s: float = 1.5  # joint speed of reset motions
    tolerance_rad: float = math.radians(1.0)  # set_state tolerance
    check_tolerance_rad: float = math.radians(5.0)  # final check per joint
    move_timeout_s: float = 3.0
    object_timeout_s: float = 10.0
    object_settle_s: float = 1.0
    retries: int = 3  # D'Claw disentangle retries
    rest_s: float = 0.75
    dkitty_attempts: int = 5
    upright_min: float = 0.9
    manual_auto_timeout_s: float = 60.0


@dataclass
class ResetReport:
    """What a reset did (returned in ``info["reset"]``)."""

    ok: bool = True
    retries: int = 0
    operator_calls: int = 0
    duration_s: float = 0.0
    max_error_rad: float = 0.0
    notes: list[str] = field(default_factory=list)


def move_to(
    safety: SafetyLayer,
    target: np.ndarray,
    cfg: ResetConfig,
    joints: Optional[Sequence[int]] = None,
    timeout_s: Optional[float] = None,
    tolerance: Optional[float] = None,
) -> float:
    """Drive ``joints`` (default all) to ``target`` (others keep their targets); returns the max error.

    Polls every ``period_s``; stops at ``tolerance``, at the timeout, or when the joints stop
    moving short of the target (ROBEL's early stop, e.g. a finger blocked by the valve).
    """
    target = np.asarray(target, dtype=float)
    timeout_s = cfg.move_timeout_s if timeout_s is None else timeout_s
    tolerance = cfg.tolerance_rad if tolerance is None else tolerance
    idx = np.arange(target.size) if joints is None else np.asarray(joints)
    t_end = time.monotonic() + timeout_s
    stalled_since: Optional[float] = None
    err = math.inf
    while True:
        goal = safety.hold_target()
        goal[idx] = target[idx]
        res = safety.command_targets(goal, max_velocity=cfg.velocity_rad_s)
        if res.aborted:
            raise ResetError(f"safety abort during reset: {safety.abort_reason}")
        time.sleep(cfg.period_s)
        state = safety.read_state()
        if state is None:
            raise ResetError(f"safety abort during reset: {safety.abort_reason}")
        err = float(np.max(np.abs(state.position[idx] - target[idx])))
        if err <= tolerance:
            return err
        now = time.monotonic()
        commanded_there = np.allclose(res.target[idx], target[idx], atol=1e-6)
        if commanded_there and np.max(np.abs(state.velocity[idx])) < 0.05:
            stalled_since = stalled_since or now
            if now - stalled_since > 0.25:
                return err
        else:
            stalled_since = None
        if now > t_end:
            return err


def _ask(operator: Optional[Operator], message: str, report: ResetReport) -> None:
    report.operator_calls += 1
    report.notes.append(message)
    if operator is None:
        raise ResetError(message + " (no operator callback to ask)")
    log.warning("asking the operator: %s", message)
    if not operator(message):
        raise ResetError(f"operator gave up: {message}")


def dclaw_reset(
    safety: SafetyLayer, initial_angle: float, cfg: Optional[ResetConfig] = None, operator: Optional[Operator] = None
) -> ResetReport:
    """ROBEL's D'Claw hardware reset (``robel/dclaw/scripted_reset.py``), step by step."""
    cfg = cfg or ResetConfig()
    bus = safety.bus
    report = ResetReport()
    t0 = time.monotonic()
    if bus.object_motor is None:
        raise ResetError("the D'Claw configuration has no object (valve) motor")
    valve_id = bus.object_motor.dxl_id
    ids = bus.config.joint_ids
    with safety.reset_mode():
        if not safety.active:
            safety.activate()
        # 1. tops and bottoms limp so the fingers give way while the valve turns
        bus.disable_torque([ids[i] for i in DCLAW_TOP + DCLAW_BOTTOM])
        # 2. engage the valve motor and turn the valve to the initial angle
        safety.enable_torque([valve_id])  # (refused after an e-stop, like every torque-on here)
        try:
            t_end = time.monotonic() + cfg.object_timeout_s
            while True:
                bus.write_object_goal(initial_angle)
                safety.command_targets(safety.hold_target())  # keep the watchdog fed
                time.sleep(cfg.period_s)
                state = safety.read_state()
                if state is None:
                    raise ResetError(f"safety abort during reset: {safety.abort_reason}")
                if (
                    state.object_position is not None
                    and abs(state.object_position - initial_angle) <= cfg.tolerance_rad
                ):
                    break
                if time.monotonic() > t_end:
                    report.notes.append(f"valve reached {state.object_position:.3f} rad, wanted {initial_angle:.3f}")
                    break
            # 3. wait at least object_settle_s
            t_settle = time.monotonic() + cfg.object_settle_s
            while time.monotonic() < t_settle:
                safety.command_targets(safety.hold_target())
                time.sleep(cfg.period_s)
            # 4. engage the whole claw and go to the reset pose
            safety.enable_torque()
            safety.read_state()
            err = move_to(safety, DCLAW_RESET_POSE, cfg)
            # 5. check; disentangle retries; then the operator
            while err > cfg.check_tolerance_rad:
                if report.retries < cfg.retries:
                    report.retries += 1
                    log.warning("D'Claw reset: %.1f deg off, disentangle retry %d", math.degrees(err), report.retries)
                    _rest(safety, cfg)
                    lifted = safety.hold_target()
                    lifted[DCLAW_TOP] = PI / 4
                    move_to(safety, lifted, cfg, DCLAW_TOP, timeout_s=cfg.rest_s)
                    move_to(safety, DCLAW_RESET_POSE, cfg, DCLAW_MIDDLE, timeout_s=cfg.rest_s)
                    move_to(safety, DCLAW_RESET_POSE, cfg, DCLAW_BOTTOM, timeout_s=cfg.rest_s)
                    err = move_to(safety, DCLAW_RESET_POSE, cfg)
                else:
                    last = safety.last_state
                    assert last is not None  # move_to read the joints at least once
                    bad = np.flatnonzero(np.abs(last.position - DCLAW_RESET_POSE) > cfg.check_tolerance_rad)
                    names = ", ".join(f"{bus.joints[i].name} (ID {bus.joints[i].dxl_id})" for i in bad)
                    _ask(
                        operator,
                        f"D'Claw did not reach its reset pose after {cfg.retries} retries: {names} "
                        f"more than {math.degrees(cfg.check_tolerance_rad):.0f} deg off. Free the "
                        "fingers, then confirm",
                        report,
                    )
                    err = move_to(safety, DCLAW_RESET_POSE, cfg)
                    if err > cfg.check_tolerance_rad:
                        continue
            report.max_error_rad = err
        finally:
            # 6. release the valve for the episode (it is a sensor while the policy acts)
            bus.disable_torque([valve_id])
    report.duration_s = time.monotonic() - t0
    return report


def _rest(safety: SafetyLayer, cfg: ResetConfig) -> None:
    t_end = time.monotonic() + cfg.rest_s
    while time.monotonic() < t_end:
        safety.command_targets(safety.hold_target())
        time.sleep(cfg.period_s)


def dkitty_reset(
    safety: SafetyLayer,
    final_pose: np.ndarray,
    upright: UprightProbe,
    mode: str = "scripted",
    cfg: Optional[ResetConfig] = None,
    operator: Optional[Operator] = None,
) -> ResetReport:
    """D'Kitty reset: get the robot standing (``mode``), then move to ``final_pose``."""
    if mode not in DKITTY_RESET_MODES:
        raise ValueError(f"D'Kitty reset mode must be one of {DKITTY_RESET_MODES}, got {mode!r}")
    cfg = cfg or ResetConfig()
    report = ResetReport()
    t0 = time.monotonic()
    with safety.reset_mode():
        if not safety.active:
            safety.activate()
        if mode == "manual":
            _ask(operator, "Put the D'Kitty on its feet, then confirm", report)
        elif mode == "manual-auto":
            t_end = time.monotonic() + cfg.manual_auto_timeout_s
            while not _is_upright(upright, cfg):
                if time.monotonic() > t_end:
                    raise ResetError(f"D'Kitty not upright after {cfg.manual_auto_timeout_s} s (manual-auto reset)")
                safety.command_targets(safety.hold_target())
                time.sleep(cfg.period_s)
        else:
            # ROBEL: loop while not standing, up to 5 attempts of flatten, tuck, stand up.
            for attempt in range(cfg.dkitty_attempts + 1):
                if _is_upright(upright, cfg):
                    break
                if attempt == cfg.dkitty_attempts:
                    _ask(
                        operator,
                        f"D'Kitty not upright after {cfg.dkitty_attempts} scripted attempts; stand it up, then confirm",
                        report,
                    )
                    break
                report.retries = attempt + 1
                for pose in (
                    DKITTY_FLAT_POSE,
                    DKITTY_TUCK_POSE,
                    DKITTY_STAND_POSE,
                    DKITTY_CROUCH_POSE,
                    DKITTY_STAND_POSE,
                ):
                    move_to(safety, pose, cfg, tolerance=cfg.check_tolerance_rad, timeout_s=2.0)
        report.max_error_rad = move_to(safety, np.asarray(final_pose, float), cfg, tolerance=cfg.check_tolerance_rad)
    report.duration_s = time.monotonic() - t0
    return report


def _is_upright(upright: UprightProbe, cfg: ResetConfig) -> bool:
    u = upright()
    return u is not None and u >= cfg.upright_min
