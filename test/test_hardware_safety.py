"""The safety layer against the servo emulator: limits, watchdog, e-stop, error timeout, faults."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("dynamixel_sdk")

from mbrl_ros.hardware import control_table as ct  # noqa: E402
from mbrl_ros.hardware.dynamixel_bus import DynamixelBus  # noqa: E402
from mbrl_ros.hardware.emulator import ServoEmulator, parse_fault  # noqa: E402
from mbrl_ros.hardware.robot_config import load_robot_config  # noqa: E402
from mbrl_ros.hardware.safety import SafetyConfig, SafetyError, SafetyLayer  # noqa: E402
from mbrl_ros.tasks import get_task  # noqa: E402

UNIT = ct.POSITION_RAD_PER_UNIT
CLAW_IDS = [10, 11, 12, 20, 21, 22, 30, 31, 32]


@pytest.fixture
def emu():
    e = ServoEmulator("dclaw", physics="first-order", realtime=True)
    e.start()
    yield e
    e.stop()


@pytest.fixture
def bus(emu):
    b = DynamixelBus(load_robot_config("dclaw", port=emu.port_path)).open()
    yield b
    b.close()


def make_safety(bus, **overrides) -> SafetyLayer:
    cfg = SafetyConfig.from_dict(bus.config.safety, **overrides)
    return SafetyLayer(bus, get_task("dclaw-turn-fixed"), cfg)


def wait_until(cond, timeout: float = 1.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


def test_huge_and_non_finite_actions_never_reach_the_motors_out_of_limits(bus, emu) -> None:
    task = get_task("dclaw-turn-fixed")
    safety = make_safety(bus, soft_start_s=0.0, severity={"non_finite_action": "warn"})
    safety.activate()
    rng = np.random.default_rng(0)
    bad = [np.full(9, 1e9), np.full(9, -1e30), np.full(9, np.inf), np.full(9, np.nan),
           np.array([np.nan, 1e6, -np.inf, 0, 0, 0, 0, 0, 5.0])]
    checked = 0
    for k in range(40):
        a = bad[k % len(bad)] if k % 2 else rng.normal(0, 1e3, 9)
        q_meas = safety.read_state().position
        n_before = len(emu.goal_writes())
        res = safety.command(a)
        assert not res.aborted
        assert wait_until(lambda: len(emu.goal_writes()) >= n_before + 9)
        written = np.array([g.rad for g in emu.goal_writes()[-9:]])
        # what reached the motors: inside the task range, and within one step of the rate limit
        assert np.all(written >= task.limits.qpos_low - UNIT) and np.all(written <= task.limits.qpos_high + UNIT)
        if np.all(np.isfinite(a)):
            assert np.all(np.abs(written - q_meas) <= task.limits.qvel_max * task.info.dt + UNIT)
            checked += 1
        time.sleep(0.01)
    assert checked == 28 and safety.counts["non_finite_action"] == 12
    safety.close()
    for g in emu.goal_writes():
        assert np.isfinite(g.rad)


def test_non_finite_action_aborts_by_default_and_sends_nothing(bus, emu) -> None:
    safety = make_safety(bus)
    safety.activate()
    n = len(emu.goal_writes())
    res = safety.command(np.full(9, np.nan))
    assert res.aborted and safety.state == "faulted" and "non_finite_action" in safety.abort_reason
    assert wait_until(lambda: not any(emu.torque_enabled()[i] for i in CLAW_IDS))
    assert len(emu.goal_writes()) == n  # the NaN action produced no goal at all
    assert safety.command(np.zeros(9)).aborted  # stays aborted until re-activated


def test_soft_start_ramps_from_the_present_position(bus, emu) -> None:
    safety = make_safety(bus, soft_start_s=1.0, soft_start_min_fraction=0.1)
    q0 = safety.activate().position
    assert np.allclose([g.rad for g in emu.goal_writes()[-9:]], q0, atol=UNIT)  # goal := present before torque
    res = safety.command(np.ones(9))
    step = np.abs(res.target - q0)
    full = 2 * np.pi / 3 * 0.1
    assert np.all(step <= 0.15 * full + UNIT) and np.any(step > 0)  # ~10 % of the task's step


def test_watchdog_holds_then_turns_torque_off(bus, emu) -> None:
    safety = make_safety(bus, watchdog_hold_s=0.15, watchdog_torque_off_s=0.4, soft_start_s=0.0)
    safety.activate()
    safety.read_state()
    safety.command(np.full(9, 0.3))
    t0 = time.monotonic()
    assert wait_until(lambda: safety.state == "holding", 1.0)
    assert 0.14 <= time.monotonic() - t0 < 0.4
    time.sleep(0.02)
    held = np.array([g.rad for g in emu.goal_writes()[-9:]])
    np.testing.assert_allclose(held, emu.joint_positions(), atol=0.05)  # held where it was
    assert all(emu.torque_enabled()[i] for i in CLAW_IDS)
    assert wait_until(lambda: safety.state == "torque_off", 1.0)
    assert 0.38 <= time.monotonic() - t0 < 0.8
    assert wait_until(lambda: not any(emu.torque_enabled().values()))
    with pytest.raises(SafetyError, match="torque_off"):
        safety.command(np.zeros(9))
    assert safety.diagnostics()["watchdog_trips"] == {"hold": 1, "torque_off": 1}
    safety.activate()  # recovery: re-activation brings torque back
    assert safety.state == "active" and all(emu.torque_enabled()[i] for i in CLAW_IDS)
    safety.close()


def test_estop_reaches_torque_off_within_50_ms_during_a_control_loop(bus, emu) -> None:
    safety = make_safety(bus)
    latencies = []
    for _ in range(5):
        safety.clear_estop()
        safety.activate()
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                if safety.read_state() is None:
                    break
                try:
                    safety.command(np.zeros(9))
                except SafetyError:
                    break
                time.sleep(0.005)

        th = threading.Thread(target=loop)
        th.start()
        time.sleep(0.05)
        t0 = time.monotonic()
        latency, verified = safety.estop()
        wall = time.monotonic() - t0
        stop.set()
        th.join()
        assert verified and not any(emu.torque_enabled().values())
        latencies.append(wall)
        assert latency <= wall
    assert max(latencies) <= 0.05, latencies
    with pytest.raises(SafetyError, match="e-stop"):
        safety.activate()  # stays down until an operator clears it
    safety.clear_estop()
    safety.activate()


def test_brief_comm_faults_are_tolerated_long_ones_abort_and_recovery_works(bus, emu) -> None:
    safety = make_safety(bus, error_timeout_s=0.3)
    safety.activate()
    emu.inject("no_response", [31])
    threading.Timer(0.1, emu.clear_faults).start()
    t0 = time.monotonic()
    assert safety.read_state() is not None  # retried until the motor answered again
    assert 0.09 < time.monotonic() - t0 < 0.3 and safety.state == "active"
    emu.inject("no_response", [31])
    t0 = time.monotonic()
    assert safety.read_state() is None
    assert 0.29 < time.monotonic() - t0 < 0.6
    assert safety.state == "faulted" and "comm" in safety.abort_reason and "ID 31" in safety.abort_reason
    assert wait_until(lambda: not any(v for i, v in emu.torque_enabled().items() if i != 31))
    emu.clear_faults()
    safety.activate()
    assert safety.state == "active" and safety.read_state() is not None


@pytest.mark.parametrize("fault", ["crc:all", "drop:1.0", "delay:0.05"])
def test_injected_bus_faults_end_in_the_safe_state_with_a_diagnostic(bus, emu, fault) -> None:
    safety = make_safety(bus, error_timeout_s=0.1)
    safety.activate()
    kind, kwargs = parse_fault(fault)
    emu.inject(kind, **kwargs)
    assert safety.read_state() is None
    assert safety.aborted and safety.abort_reason.startswith("comm: bus reads failing")
    emu.clear_faults()
    time.sleep(0.06)
    bus.disable_torque()  # with drop/crc faults the safe-state packet may itself have been lost
    assert wait_until(lambda: not any(emu.torque_enabled().values()))
    safety.activate()
    assert safety.read_state() is not None


def test_hardware_error_aborts_with_the_decoded_error(bus, emu) -> None:
    safety = make_safety(bus)
    safety.activate()
    emu.inject("hardware_error", [22], errors=["overheating"])
    assert safety.read_state() is None
    assert safety.abort_reason.startswith("hardware_error: hardware error ID 22: overheating")
    assert safety.diagnostics()["hardware_errors"] == {22: ["overheating"]}
    assert wait_until(lambda: not any(emu.torque_enabled().values()))
    bus.reboot(22)  # recovery: a reboot clears the error, re-activation brings torque back
    safety.activate()
    assert safety.read_state() is not None and all(emu.torque_enabled()[i] for i in CLAW_IDS)
    safety.close()


def test_stuck_motor_trips_the_current_limit(bus, emu) -> None:
    safety = make_safety(bus, soft_start_s=0.0)
    safety.activate()
    emu.inject("stuck", [21])
    safety.read_state()
    safety.command(np.ones(9))
    time.sleep(0.05)
    assert safety.read_state() is None
    assert safety.abort_reason.startswith("current:") and "ID 21" in safety.abort_reason
    emu.clear_faults("stuck")
    safety.activate()
    safety.command(np.zeros(9))
    time.sleep(0.05)
    assert safety.read_state() is not None and safety.state == "active"
    safety.close()


def test_severity_warn_counts_and_off_ignores(bus, emu) -> None:
    safety = make_safety(bus, velocity_limit_rad_s=0.05, soft_start_s=0.0, severity={"velocity": "warn"})
    safety.activate()
    safety.read_state()
    safety.command(np.ones(9))
    time.sleep(0.03)
    assert safety.read_state() is not None and safety.counts["velocity"] >= 1 and safety.state == "active"
    quiet = make_safety(bus, velocity_limit_rad_s=0.05, soft_start_s=0.0, severity={"velocity": "off"})
    quiet.activate()
    quiet.read_state()
    quiet.command(-np.ones(9))
    time.sleep(0.03)
    assert quiet.read_state() is not None and quiet.counts["velocity"] == 0
    safety.close()
    quiet.close()
