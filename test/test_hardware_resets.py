"""Resets that do not waste robot time: the D'Claw scripted reset never makes a joint jump, and the
emulated servos keep a real XH430's speed bound (issue 15; the long run is bench/bench_resets.py).

A PAL graph on the emulated D'Claw lost 12 of 160 episodes to ``velocity: joints ... faster than
5.0 rad/s`` during resets. Two faults: the reset re-engaged the limp tops and bottoms and then
rate-limited its first command from their stale goals (so they snapped back at the servo's full
speed), and the MuJoCo-backed servo had no speed bound (5-7 rad/s, where an XH430 reaches 4.8).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("dynamixel_sdk")
mujoco = pytest.importorskip("mujoco")

from mbrl_ros.hardware.dynamixel_bus import DynamixelBus  # noqa: E402
from mbrl_ros.hardware.emulator import XH430_NO_LOAD_SPEED, ServoEmulator  # noqa: E402
from mbrl_ros.hardware.reset import DCLAW_RESET_POSE, ResetConfig  # noqa: E402
from mbrl_ros.hardware.robot_config import load_robot_config  # noqa: E402
from mbrl_ros.hardware.robot_env import HardwareEnv  # noqa: E402
from mbrl_ros.hardware.safety import SafetyLayer  # noqa: E402
from mbrl_ros.tasks.dclaw_turn import RESET_POSE  # noqa: E402

# ROBEL's timings (the limp phase must last as on the robot for the fingers to fall), shorter timeouts.
RESET = ResetConfig(move_timeout_s=2.0, rest_s=0.1, retries=1)
BOTTOMS = [2, 5, 8]


class PeakSpeed:
    """Samples the emulated joints' speed every 2 ms in a thread (what the safety layer could see)."""

    def __init__(self, emu: ServoEmulator) -> None:
        self.emu, self.peak = emu, np.zeros(9)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.emu._lock:
                v = np.abs(self.emu.backend.joint_velocities())
            self.peak = np.maximum(self.peak, v)
            time.sleep(0.002)

    def __enter__(self) -> "PeakSpeed":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(2.0)


def test_the_reset_pose_has_one_definition() -> None:
    from mbrl_ros.hardware.emulator import default_pose

    assert DCLAW_RESET_POSE is RESET_POSE
    np.testing.assert_array_equal(default_pose("dclaw", 9), RESET_POSE)
    with pytest.raises(ValueError):
        RESET_POSE[0] = 1.0  # read-only: nobody can change it for everyone by accident


def test_engaging_a_limp_joint_commands_it_from_where_it_is_not_from_its_stale_goal() -> None:
    emu = ServoEmulator("dclaw", physics="mujoco", realtime=False, v_max=float("inf"))
    emu.start()
    bus = DynamixelBus(load_robot_config("dclaw", port=emu.port_path)).open()
    safety = SafetyLayer(bus)
    try:
        safety.activate()
        safety.command_targets(np.array(RESET_POSE))
        stale = safety.hold_target()
        bus.disable_torque([bus.joints[j].dxl_id for j in BOTTOMS])  # limp, as while the valve turns
        bus.read_state()  # a round trip: the emulator has handled the (unanswered) torque-off write
        with emu._lock:  # something (the valve, a hand) has pushed the limp bottoms to 0 rad
            emu.backend.sim.data.qpos[emu.backend._qadr[BOTTOMS, 0]] = 0.0
            mujoco.mj_forward(emu.backend.sim.model, emu.backend.sim.data)
            emu.bank.sync_present()
        present = safety.read_state().position
        assert np.all(np.abs(present[BOTTOMS] - stale[BOTTOMS]) > 0.9)
        safety.enable_torque()
        res = safety.command_targets(safety.hold_target(), max_velocity=1.5)
        # the goal sent starts from where the joints are (before the fix: their stale goal,
        # 1 rad away, which the servo then crossed at full speed)
        np.testing.assert_allclose(res.target[BOTTOMS], present[BOTTOMS], atol=0.02)
        last = {g.dxl_id: g.rad for g in emu.goal_writes()}
        np.testing.assert_allclose([last[bus.joints[j].dxl_id] for j in BOTTOMS], present[BOTTOMS], atol=0.02)
    finally:
        safety.close()
        bus.close()
        emu.stop()


def test_reset_after_an_episode_moves_no_joint_faster_than_its_reset_speed() -> None:
    # No servo speed bound here (v_max = inf): only the reset itself can keep the joints slow.
    with ServoEmulator("dclaw", physics="mujoco", realtime=True, v_max=float("inf")) as emu:
        env = HardwareEnv(
            "dclaw-turn-fixed", port=emu.port_path, reset_config=RESET, safety={"severity": {"velocity": "warn"}}
        )
        env.connect()
        try:
            env.reset()
            peaks = []
            for action in ([1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]):
                # tops out, bottoms in: the limp tops and bottoms fall away from these goals while
                # the valve turns (the old reset then sent them back at 3.1-3.5 rad/s here)
                for _ in range(8):
                    env.step(np.tile(action, 3))
                with PeakSpeed(emu) as speed:
                    obs, info = env.reset()
                peaks.append(float(speed.peak.max()))
                np.testing.assert_allclose(obs[:9], RESET_POSE, atol=np.radians(5))
            # reset motions run at 1.5 rad/s; before the fix the re-engaged joints jumped at 5-7 rad/s
            assert max(peaks) < 3.0, peaks
            assert env.diagnostics()["safety"]["limit_hits"]["velocity"] == 0
        finally:
            env.close()


@pytest.mark.parametrize("v_max", [XH430_NO_LOAD_SPEED, float("inf")])
def test_an_emulated_servo_turns_no_faster_than_its_no_load_speed(v_max: float) -> None:
    emu = ServoEmulator("dclaw", physics="mujoco", realtime=False, v_max=v_max)
    emu.start()
    bus = DynamixelBus(load_robot_config("dclaw", port=emu.port_path)).open()
    try:
        bus.enable_torque()
        emu.advance(0.2)
        goal = np.array(RESET_POSE)
        goal[[2, 5, 8]] = -1.5  # bottoms: a 2.5 rad step, which a position servo takes at full speed
        bus.write_goal_positions(goal)
        dt, peak, peak_rate = 0.005, 0.0, 0.0
        q = emu.joint_positions()
        for _ in range(200):
            emu.advance(dt)
            q_next = emu.joint_positions()
            peak_rate = max(peak_rate, float(np.max(np.abs(q_next - q))) / dt)
            q = q_next
            peak = max(peak, float(np.max(np.abs(bus.read_state().velocity))))
        assert abs(q[2] + 1.5) < 0.05  # it got there
        if np.isfinite(v_max):
            assert peak <= v_max + 0.03  # present velocity (0.024 rad/s units)
            assert peak_rate <= v_max * 1.01  # and the position itself, not only the reported speed
        else:
            assert peak > XH430_NO_LOAD_SPEED  # MuJoCo's actuator alone is faster than any XH430
    finally:
        bus.close()
        emu.stop()
