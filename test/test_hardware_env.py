"""HardwareEnv end to end: driver + safety + scripted reset against the MuJoCo-backed servo emulator."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

pytest.importorskip("dynamixel_sdk")
pytest.importorskip("mujoco")

from mbrl_ros.hardware import control_table as ct  # noqa: E402
from mbrl_ros.hardware.dynamixel_bus import MissingMotorError  # noqa: E402
from mbrl_ros.hardware.emulator import ServoEmulator  # noqa: E402
from mbrl_ros.hardware.reset import ResetConfig, ResetError  # noqa: E402
from mbrl_ros.hardware.robot_env import HardwareEnv, TrackerError  # noqa: E402

UNIT = ct.POSITION_RAD_PER_UNIT
FAST_RESET = ResetConfig(period_s=0.02, object_settle_s=0.2, move_timeout_s=1.5, rest_s=0.1, retries=1)


def wrap(x: float) -> float:
    return float(np.mod(x + math.pi, 2 * math.pi) - math.pi)


@pytest.fixture
def claw_emu():
    e = ServoEmulator("dclaw", physics="mujoco", realtime=True)
    e.start()
    yield e
    e.stop()


def claw_env(emu: ServoEmulator, **kw) -> HardwareEnv:
    env = HardwareEnv("dclaw-turn-fixed", port=emu.port_path, reset_config=FAST_RESET, **kw)
    env.connect()
    return env


def test_dclaw_env_observes_the_simulated_robot_and_the_valve_turns(claw_emu) -> None:
    assert claw_emu.physics == "mujoco"
    env = claw_env(claw_emu)  # ROBEL's 10 Hz
    try:
        obs, info = env.reset(options={"initial": 0.6, "target": 1.0})
        theta = claw_emu.object_angle()
        assert abs(theta - 0.6) < 0.03  # the valve motor drove the valve to the initial angle
        assert obs.shape == (21,) and info["reset"].max_error_rad < math.radians(5)
        np.testing.assert_allclose(obs[9:11], [math.cos(theta), math.sin(theta)], atol=3 * UNIT)
        assert obs[20] == pytest.approx(wrap(1.0 - theta), abs=3 * UNIT)
        np.testing.assert_allclose(obs[0:9], claw_emu.joint_positions(), atol=0.01)
        # curl the fingers in, then sweep them: they push the valve, and the sensor (ID 50) follows
        thetas = [theta]
        t0 = time.monotonic()
        for k in range(25):
            a = np.tile([1.0, 1.0, -1.0], 3) if k < 10 else np.tile([-1.0, 0.2, 0.5], 3)
            obs, reward, terminated, truncated, info = env.step(a)
            assert not info["aborted"] and not terminated and not truncated
            assert reward == pytest.approx(math.fsum(info["reward_terms"].values()))
            sensed = math.atan2(obs[10], obs[9])
            assert abs(wrap(sensed - claw_emu.object_angle())) < 0.05
            thetas.append(claw_emu.object_angle())
        elapsed = time.monotonic() - t0
        assert 2.4 < elapsed < 3.0  # 25 steps at 10 Hz, deadline-based
        assert max(thetas) - min(thetas) > 0.1, thetas
        np.testing.assert_allclose(obs[11:20], np.tile([-1.0, 0.2, 0.5], 3))  # last_action
        js = env.joint_state()
        assert js["name"][0] == "FFJ10" and js["name"][-1] == "valve" and len(js["position"]) == 10
        d = env.diagnostics()
        assert d["bus"]["read_failures"] == 0 and d["loop"]["steps"] == 25 and d["episodes"] == 1
        assert d["loop"]["overruns"] <= 1  # a 100 ms period is never missed unless the machine stalls
    finally:
        env.close()


def test_a_fault_mid_episode_aborts_the_step_and_reset_recovers(claw_emu) -> None:
    env = claw_env(claw_emu, control_hz=100, safety={"error_timeout_s": 0.1})
    try:
        env.reset()
        t0 = time.monotonic()
        truncated = [env.step(np.zeros(9))[3] for _ in range(40)]
        assert truncated == [False] * 39 + [True]  # the task horizon, 40 steps
        assert 0.38 < time.monotonic() - t0 < 1.0  # at 100 Hz (overruns re-phase, never run ahead)
        env.reset()
        env.step(np.zeros(9))
        claw_emu.inject("no_response", [32])
        obs, reward, terminated, truncated, info = env.step(np.zeros(9))
        assert info["aborted"] and truncated and reward == 0.0 and "ID 32" in info["abort_reason"]
        assert env.step(np.zeros(9))[4]["aborted"]  # stays aborted until reset
        claw_emu.clear_faults()
        env.reset()
        assert not env.step(np.zeros(9))[4]["aborted"]
        d = env.diagnostics()
        assert d["aborted_episodes"] == 1 and d["limit_hits"]["comm"] == 1 and d["episodes"] == 3
        latency, verified = env.estop()
        assert verified and latency < 0.05
        assert env.step(np.zeros(9))[4]["abort_reason"].endswith("e-stop")
        with pytest.raises(Exception, match="clear_estop"):
            env.reset()
    finally:
        env.close()


def test_reset_asks_the_operator_when_a_finger_is_stuck(claw_emu) -> None:
    asked: list[str] = []
    env = claw_env(claw_emu, operator=lambda msg: asked.append(msg) or False,
                   safety={"severity": {"current": "warn"}})
    try:
        # drive FFJ11 away from the reset pose, then it gets stuck there: the reset cannot finish
        env.enable_torque()
        goal = env.safety.hold_target()
        goal[1] = 0.5
        for _ in range(60):
            env.safety.command_targets(goal)
            time.sleep(0.02)
        env.safety.read_state()
        claw_emu.inject("stuck", [11])
        with pytest.raises(ResetError, match="operator gave up"):
            env.reset()
        assert len(asked) == 1 and "FFJ11 (ID 11)" in asked[0]
    finally:
        env.close()


def test_missing_motor_at_connect_is_reported_by_id(claw_emu) -> None:
    claw_emu.inject("no_response", [50])
    env = HardwareEnv("dclaw-turn-fixed", port=claw_emu.port_path)
    with pytest.raises(MissingMotorError, match="ID 50"):
        env.connect()


def test_dkitty_needs_a_tracker_pose_and_aborts_when_it_goes_stale() -> None:
    with ServoEmulator("dkitty", physics="mujoco", realtime=True) as emu:
        env = HardwareEnv("dkitty-orient-random", port=emu.port_path, control_hz=50, reset_mode="manual-auto",
                          reset_config=FAST_RESET)
        env.connect()
        try:
            with pytest.raises(TrackerError, match="set_tracker_pose"):
                env.reset()
            stop = threading.Event()

            def feed() -> None:  # the motion-capture tracker, here read from the simulation
                while not stop.is_set():
                    pos, quat = emu.torso_pose()
                    env.set_tracker_pose(pos, quat)
                    time.sleep(0.01)

            feeder = threading.Thread(target=feed)
            feeder.start()
            time.sleep(0.05)
            obs, info = env.reset(seed=3)
            assert obs.shape == (53,)
            obs, *_ , info = env.step(np.zeros(12))
            assert not info["aborted"]
            pos, quat = emu.torso_pose()
            np.testing.assert_allclose(obs[0:3], pos, atol=0.02)
            assert obs[48] == pytest.approx(1 - 2 * (quat[1] ** 2 + quat[2] ** 2), abs=0.02)  # upright = R[2,2]
            np.testing.assert_allclose(obs[6:18], emu.joint_positions(), atol=0.02)
            stop.set()
            feeder.join()
            time.sleep(0.25)
            *_, info = env.step(np.zeros(12))
            assert info["aborted"] and info["abort_reason"].startswith("tracker")
        finally:
            env.close()


def test_an_estop_during_a_reset_is_never_undone_by_the_reset(claw_emu) -> None:
    # the D'Claw reset waits object_settle_s with the valve motor engaged, then turns the claw's
    # torque on: an e-stop inside that wait must leave every motor off, whatever the reset does next
    cfg = ResetConfig(period_s=0.02, object_settle_s=0.6, move_timeout_s=1.0, rest_s=0.1, retries=0)
    env = HardwareEnv("dclaw-turn-fixed", port=claw_emu.port_path, reset_config=cfg)
    env.connect()
    errors: list[BaseException] = []

    def reset() -> None:
        try:
            env.reset(options={"initial": claw_emu.object_angle()})  # the valve is there already
        except BaseException as exc:  # noqa: BLE001 - the reset must fail; the test checks how
            errors.append(exc)

    try:
        t = threading.Thread(target=reset)
        t.start()
        time.sleep(0.25)  # inside the settle wait
        assert claw_emu.torque_enabled()[50], "the valve motor should be engaged while the valve settles"
        latency, verified = env.estop()
        assert verified and latency < 0.05
        t.join(timeout=10)
        assert not t.is_alive() and errors and "e-stop" in str(errors[0])
        time.sleep(0.2)
        assert not any(claw_emu.torque_enabled().values()), claw_emu.torque_enabled()
        env.clear_estop()
        env.reset(options={"initial": claw_emu.object_angle()})  # an operator's clear: the robot works again
        assert all(on for i, on in claw_emu.torque_enabled().items() if i != 50)
    finally:
        env.close()


def test_reboot_faulted_reboots_only_the_faulted_motors_and_the_next_reset_recovers(claw_emu) -> None:
    env = claw_env(claw_emu)
    try:
        env.reset()
        assert not env.step(np.zeros(9))[4]["aborted"]
        claw_emu.inject("hardware_error", [22], errors=["overload"])  # a shutdown error: the servo drops torque
        info = env.step(np.zeros(9))[4]
        assert info["aborted"] and "ID 22" in info["abort_reason"]
        assert env.diagnostics()["hardware_errors"] == {22: ["overload"]}
        assert env.reboot_faulted() == {22: ["overload"]}
        assert env.diagnostics()["hardware_errors"] == {} and env.bus.read_hardware_errors() == {}
        assert env.reboot_faulted() == {}  # nothing left to reboot
        env.reset()
        assert not env.step(np.zeros(9))[4]["aborted"] and claw_emu.torque_enabled()[22]
        claw_emu.inject("no_response", [31])
        with pytest.raises(Exception, match=r"\[31\] do not answer"):
            env.reboot_faulted()
    finally:
        claw_emu.clear_faults()
        env.close()
