"""Physics backends of the servo emulator: what the emulated servos move (joint space, SI units).

* :class:`RobelSimBackend`: the MuJoCo scene of the task layer (:class:`mbrl_ros.tasks.sim.RobelSim`).
  Commanded motion moves the simulated robot and the valve turns when the claw pushes it.
  A joint whose torque is on never turns faster than the servo's no-load speed ``v_max``
  (an XH430-W350 at 12 V: 46 rpm = 4.8 rad/s): MuJoCo's position actuators have no such bound,
  and without it a large goal step moved a joint at 5-7 rad/s, which no real servo can.
* :class:`FirstOrderBackend`: a first-order servo model with no contact, used when MuJoCo or the
  task layer is unavailable, and for fast protocol tests.
"""

from __future__ import annotations

import logging
from typing import Optional, Protocol

import numpy as np

log = logging.getLogger(__name__)

# No-load speed of a Dynamixel XH430-W350 at 12 V (46 rpm; the XM430-W350 is the same), rad/s.
XH430_NO_LOAD_SPEED = 46.0 * 2.0 * np.pi / 60.0


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

    def __init__(
        self,
        n_joints: int,
        q0: Optional[np.ndarray] = None,
        has_object: bool = False,
        tau: float = 0.05,
        v_max: float = XH430_NO_LOAD_SPEED,
        timestep: float = 0.0025,
    ) -> None:
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
        self.q = np.where(
            np.abs(qd * dt) > np.abs(self.target - self.q), np.where(qd != 0, self.target, self.q), self.q + qd * dt
        )
        self.qd = qd
        if self.has_object and self.theta_target is not None:
            d = float(np.clip((self.theta_target - self.theta) / self.tau, -self.v_max, self.v_max))
            self.theta = (
                self.theta_target if abs(d * dt) >= abs(self.theta_target - self.theta) else self.theta + d * dt
            )
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
    A driven joint moves no faster than ``v_max`` (the servo's no-load speed; ``inf`` turns the
    bound off): MuJoCo's position actuators alone have no speed limit.
    """

    def __init__(self, robot: str, task_id: Optional[str] = None, v_max: float = XH430_NO_LOAD_SPEED) -> None:
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
        bounded = bool(np.isfinite(self.v_max)) and bool(self.torque.any())
        if not bounded and not self.stuck.any() and self.theta_target is None:
            self.sim.advance(n)  # one mj_step call for all n steps
            return
        qa, va = self._qadr[:, 0], self._qadr[:, 1]
        max_step = self.v_max * self.timestep
        touched = False
        for _ in range(n):
            q_prev = d.qpos[qa].copy()
            self.sim.advance(1)
            if bounded:
                # The servo's speed bound: a driven joint that the position actuator pushed past
                # v_max this step moves only v_max * dt (position and velocity both clipped).
                fast = self.torque & (np.abs(d.qvel[va]) > self.v_max)
                if fast.any():
                    d.qpos[qa[fast]] = q_prev[fast] + np.clip(d.qpos[qa[fast]] - q_prev[fast], -max_step, max_step)
                    d.qvel[va[fast]] = np.clip(d.qvel[va[fast]], -self.v_max, self.v_max)
                    touched = True
            if self.stuck.any():
                d.qpos[qa[self.stuck]] = self._stuck_q[self.stuck]
                d.qvel[va[self.stuck]] = 0.0
                touched = True
            if self.theta_target is not None and self._valve_q is not None:
                theta = d.qpos[self._valve_q]
                step = float(np.clip(self.theta_target - theta, -max_step, max_step))
                d.qpos[self._valve_q] = theta + step
                d.qvel[self._valve_v] = step / self.timestep
                touched = True
        if touched:
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


def make_backend(
    robot: str,
    n_joints: int,
    q0: np.ndarray,
    physics: str = "auto",
    task_id: Optional[str] = None,
    v_max: float = XH430_NO_LOAD_SPEED,
) -> PhysicsBackend:
    """``physics``: "mujoco" (RobelSim), "first-order", or "auto" (MuJoCo when available).

    ``v_max``: the servos' no-load speed (rad/s; ``inf`` = unbounded, MuJoCo's actuators alone).
    """
    if physics not in ("auto", "mujoco", "first-order"):
        raise ValueError(f"physics must be auto, mujoco or first-order, got {physics!r}")
    if physics in ("auto", "mujoco"):
        try:
            return RobelSimBackend(robot, task_id=task_id, v_max=v_max)
        except ImportError as exc:
            if physics == "mujoco":
                raise ValueError(f"MuJoCo physics unavailable: {exc}") from exc
            log.warning("RobelSim unavailable (%s); using the first-order servo model", exc)
    return FirstOrderBackend(n_joints, q0=q0, has_object=(robot == "dclaw"), v_max=v_max)
