"""D'Claw turn: rotate a three-spoke valve to a target angle (ROBEL DClawTurnFixed/Random-v0).

Re-implemented from the facts of ROBEL 0.1.2 (``robel/dclaw/turn.py``, ``robel/dclaw/base_env.py``;
see docs/tasks.md for the table). Pure: no MuJoCo here. The simulator (``tasks/sim.py``) and the
hardware driver both build the state dict that :meth:`DClawTurn.observation` reads.

Observation (21): ``claw_qpos(9), object_x=cos(theta), object_y=sin(theta), last_action(9),
target_error = wrap(target - theta)``.
Reward: ``-5 d - ||q - RESET_POSE|| - ||qdot[|qdot| >= 0.5]|| + 10 (d < 0.25) + 50 (d < 0.10)``,
``d = |target_error|``. Success: ``d < 0.1``. No termination; 40 steps of 0.1 s.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Mapping, Optional

import numpy as np

from mbrl_ros.tasks.base import (
    Array,
    FastActionPipeline,
    InitialState,
    JointLimits,
    TaskInfo,
    TaskSpec,
    array_namespace,
)

PI = math.pi
_PI_F32 = float(np.float32(PI))  # 3.14159274 > pi

# Claw reset pose: [top, middle, bottom] x 3 fingers (ROBEL RESET_POSE).
# The one definition: the simulator, the hardware reset and the servo emulator all read it.
RESET_POSE = np.array([0.0, -PI / 3, PI / 3] * 3)
RESET_POSE.setflags(write=False)
_QPOS_HALF = np.array([0.48, PI / 3, PI / 2] * 3)  # ROBEL qpos_range, centred at 0
CLAW_LIMITS = JointLimits(qpos_low=-_QPOS_HALF, qpos_high=_QPOS_HALF.copy(), qvel_max=np.full(9, 2 * PI / 3))

# MuJoCo layout of dclaw3xh_valve3_v0.xml: 9 claw joints, 9 ghost "overlay" joints, the valve.
NQ = 19
CLAW_QPOS = slice(0, 9)
VALVE_QPOS = 18

# Observation layout.
OBS_CLAW_QPOS = slice(0, 9)
OBS_OBJECT_X = 9
OBS_OBJECT_Y = 10
OBS_LAST_ACTION = slice(11, 20)
OBS_TARGET_ERROR = 20
OBS_NAMES = (
    tuple(f"claw_qpos[{i}]" for i in range(9))
    + ("object_x", "object_y")
    + tuple(f"last_action[{i}]" for i in range(9))
    + ("target_error",)
)
_CLAW_COLS = slice(0, 9)
# Model space (29 values): claw_qpos, the valve angle theta (slot 9), last_action, the target
# angle (slot 19), the measured claw joint velocities (slots 20..28). The dynamics ensemble
# predicts theta's wrapped change and reads theta as (cos 3 theta, sin 3 theta): the valve's
# three spokes sit 2 pi / 3 apart, as do the claw's three fingers, so the contacts at theta and
# at theta + 2 pi / 3 are the same (valve3.xml). The target is carried, never read (the physics
# does not depend on it); the observation's (cos, sin) of theta and the target error are
# recomputed from theta and the target.
MODEL_DIM = 29
MODEL_THETA = 9
MODEL_LAST_ACTION = slice(10, 19)
MODEL_TARGET = 19
MODEL_QVEL = slice(20, 29)
VALVE_SYMMETRY = 3  # spokes of valve3
AUX_NAMES = tuple(f"claw_qvel[{i}]" for i in range(9))

# The claw's mirror: the vertical plane through the thumb (THJ3x) swaps the first two fingers
# (FFJ1x <-> MFJ2x) and maps the valve angle theta to -theta (valve3.xml has a spoke in that
# plane, so the valve is mapped onto itself). Each top joint (x0) turns about its finger's
# radial axis and changes sign; the middle and bottom joints (x1, x2) turn about tangential axes
# and keep theirs (chain3xh.xml; test_policy_mirror.py checks it against the simulator).
CLAW_MIRROR_INDEX = (3, 4, 5, 0, 1, 2, 6, 7, 8)
CLAW_MIRROR_SIGN = (-1.0, 1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0)
OBS_MIRROR_INDEX = CLAW_MIRROR_INDEX + (9, 10) + tuple(11 + i for i in CLAW_MIRROR_INDEX) + (20,)
OBS_MIRROR_SIGN = CLAW_MIRROR_SIGN + (1.0, -1.0) + CLAW_MIRROR_SIGN + (-1.0,)  # cos, -sin; -error

# Reward constants (ROBEL get_reward_dict).
VEL_COST_THRESHOLD = 0.5  # only |qdot| >= 0.5 rad/s is penalised
BONUS_SMALL_DIST, BONUS_BIG_DIST = 0.25, 0.10
SUCCESS_THRESHOLD = 0.1

# Reset distributions (ROBEL): fixed 0 -> pi; random U(-pi/3, pi/3) -> pi + U(-pi/3, pi/3).
FIXED_INITIAL = (0.0, 0.0)
FIXED_TARGET = (PI, PI)
RANDOM_INITIAL = (-PI / 3, PI / 3)
RANDOM_TARGET = (2 * PI / 3, 4 * PI / 3)


def wrap_angle(x: Any, xp: Any = None) -> Any:
    """Wrap angles into [-pi, pi) exactly as ROBEL does: ``mod(x + pi, 2 pi) - pi``."""
    xp = xp or array_namespace(x)
    return xp.mod(x + PI, 2 * PI) - PI


def _wrap_scalar(x: float) -> float:
    # Python's float % and np.mod share the same definition (fmod, then sign fix-up).
    return (x + PI) % (2 * PI) - PI


def _sample(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    # A degenerate range is a fixed value: draw nothing, as ROBEL's *Fixed tasks do.
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


class DClawTurn(FastActionPipeline, TaskSpec):
    """ROBEL D'Claw turn (fixed or random initial/target valve angle).

    State dict keys read by :meth:`observation`: ``claw_qpos`` (9), ``object_qpos`` (valve angle,
    rad), ``last_action`` (9, normalised) and ``target`` (valve target angle, rad). ``claw_qvel``
    is needed by the exact per-step reward (pass it as ``next_qvel`` to :meth:`reward_terms`).
    """

    robot = "dclaw"
    scene = "dclaw-valve3"
    nq = NQ
    RESET_POSE = RESET_POSE
    angle_slots = (OBS_TARGET_ERROR,)
    policy_harmonics = ((OBS_OBJECT_X, OBS_OBJECT_Y, VALVE_SYMMETRY),)  # the valve's three spokes
    policy_mirror = (OBS_MIRROR_INDEX, OBS_MIRROR_SIGN, CLAW_MIRROR_INDEX, CLAW_MIRROR_SIGN)
    aux_names = AUX_NAMES
    model_angle_dims = MappingProxyType({MODEL_THETA: VALVE_SYMMETRY, MODEL_TARGET: 0})
    model_goal_dims = (MODEL_THETA,)

    def __init__(self, random: bool, success_threshold: float = SUCCESS_THRESHOLD) -> None:
        if not (math.isfinite(success_threshold) and success_threshold > 0):
            raise ValueError(f"success_threshold must be a positive number, got {success_threshold}")
        name = "random" if random else "fixed"
        self.info = TaskInfo(
            task_id=f"dclaw-turn-{name}",
            gym_id=f"mbrl_ros/DClawTurn{name.capitalize()}-v0",
            robot="dclaw",
            obs_dim=21,
            act_dim=9,
            horizon=40,
            dt=0.1,
            frame_skip=40,
            obs_names=OBS_NAMES,
        )
        self.limits = CLAW_LIMITS
        self._prepare_action_pipeline()
        self.random = random
        self.mirror_symmetric_start = not random  # 0 -> pi: the claw, the valve and the target are symmetric
        self.success_threshold = float(success_threshold)
        self.initial_range = RANDOM_INITIAL if random else FIXED_INITIAL
        self.target_range = RANDOM_TARGET if random else FIXED_TARGET

    # -- reset -------------------------------------------------------------------------
    def initial_state(
        self,
        rng: np.random.Generator,
        initial_range: Optional[tuple[float, float]] = None,
        target_range: Optional[tuple[float, float]] = None,
    ) -> InitialState:
        """Sample ROBEL's reset: claw at RESET_POSE at rest, valve at the initial angle, a target."""
        initial = _sample(rng, initial_range or self.initial_range)
        # ROBEL's _set_target_object_pos: wrap to [-pi, pi), store as float32.
        target = float(np.float32(_wrap_scalar(_sample(rng, target_range or self.target_range))))
        qpos = np.zeros(NQ)
        qpos[CLAW_QPOS] = RESET_POSE
        qpos[VALVE_QPOS] = initial
        return InitialState(qpos=qpos, qvel=np.zeros(NQ), target=target)

    @staticmethod
    def canonical_target(target: float) -> float:
        """The stored form of a target: float32, within [-pi, pi] (ROBEL stores float32(wrap(t))).

        A value already in that form (e.g. ROBEL's stored -pi, float32(-pi) < -pi) is kept as
        is, so that a saved target round-trips exactly; anything else is wrapped first.
        """
        t = float(target)
        if abs(t) <= _PI_F32 and float(np.float32(t)) == t:
            return t
        return float(np.float32(_wrap_scalar(t)))

    # -- observation -------------------------------------------------------------------
    def observation(self, state: Mapping[str, Any]) -> np.ndarray:
        theta = float(state["object_qpos"])
        obs = np.empty(21)
        obs[OBS_CLAW_QPOS] = state["claw_qpos"]
        obs[OBS_OBJECT_X] = math.cos(theta)
        obs[OBS_OBJECT_Y] = math.sin(theta)
        obs[OBS_LAST_ACTION] = state["last_action"]
        obs[OBS_TARGET_ERROR] = _wrap_scalar(float(state["target"]) - theta)
        return obs

    def reset_is_deterministic(self, initial_range: Any, target_range: Any) -> bool:
        return initial_range[0] == initial_range[1] and target_range[0] == target_range[1]

    def goal_error(self, next_obs: Array) -> Array:
        """|valve angle - target| in rad (success: below the success threshold)."""
        xp = array_namespace(next_obs)
        return xp.abs(wrap_angle(next_obs[..., OBS_TARGET_ERROR], xp))

    def aux_observation(self, state: Mapping[str, Any]) -> np.ndarray:
        """The claw's measured joint velocities (sim: qvel; hardware: present velocity)."""
        return np.array(state["claw_qvel"], dtype=np.float64).reshape(9)

    # -- batched reward / done / success -------------------------------------------------
    def reward_terms(
        self, obs: Array, action: Array, next_obs: Array, next_qvel: Optional[Array] = None
    ) -> dict[str, Array]:
        """ROBEL's reward terms, batched over leading dims (numpy or torch, dtype preserved).

        ``next_qvel`` is the claw joint velocity after the step. ROBEL penalises it but it is not
        in the observation: when it is not given (model rollouts), it is estimated by the finite
        difference ``(next_claw_qpos - claw_qpos) / dt``, the mean velocity over the step.
        """
        return self._terms(array_namespace(next_obs), obs, next_obs, next_qvel)[0]

    def _terms(self, xp: Any, obs: Array, next_obs: Array, next_qvel: Optional[Array]) -> tuple[dict, Array]:
        q = xp.columns(next_obs, _CLAW_COLS)  # contiguous (*batch, 9)
        d = xp.abs(wrap_angle(next_obs[..., OBS_TARGET_ERROR], xp))
        pose_err = q - xp.asarray_like(RESET_POSE, q)
        if next_qvel is None:
            v = (q - xp.columns(obs, _CLAW_COLS)) * (1.0 / self.info.dt)
        else:
            v = next_qvel
        fast = v * xp.to_float(xp.abs(v) >= VEL_COST_THRESHOLD, v)
        terms = {
            "target_dist_cost": -5.0 * d,
            "pose_diff_cost": -xp.sqrt(xp.sumsq(pose_err)),
            "joint_vel_cost": -xp.sqrt(xp.sumsq(fast)),
            "bonus_small": 10.0 * xp.to_float(d < BONUS_SMALL_DIST, d),
            "bonus_big": 50.0 * xp.to_float(d < BONUS_BIG_DIST, d),
        }
        return terms, d

    def evaluate(
        self, obs: Array, action: Array, next_obs: Array, next_qvel: Optional[Array] = None
    ) -> tuple[dict[str, Array], Array, Array]:
        """``(reward_terms, done, success)`` in one pass (what the simulator calls per step)."""
        xp = array_namespace(next_obs)
        terms, d = self._terms(xp, obs, next_obs, next_qvel)
        return terms, xp.zeros_bool(d.shape, d), d < self.success_threshold

    def reward(self, obs: Array, action: Array, next_obs: Array) -> Array:
        t = self.reward_terms(obs, action, next_obs)
        return t["target_dist_cost"] + t["pose_diff_cost"] + t["joint_vel_cost"] + t["bonus_small"] + t["bonus_big"]

    def done(self, next_obs: Array) -> Array:
        # ROBEL's turn task never terminates early; episodes end at the time limit.
        return array_namespace(next_obs).zeros_bool(next_obs.shape[:-1], next_obs)

    def success(self, next_obs: Array) -> Array:
        xp = array_namespace(next_obs)
        return xp.abs(wrap_angle(next_obs[..., OBS_TARGET_ERROR], xp)) < self.success_threshold

    # -- model space -------------------------------------------------------------------
    @property
    def model_dim(self) -> int:
        return MODEL_DIM

    def to_model(self, obs: Array, aux: Any = None) -> Array:
        """``[claw_qpos, theta, last_action, target, claw_qvel]`` (29), angles in [-pi, pi)."""
        if aux is None:
            raise ValueError(f"{self.info.task_id}: the model state needs the measured claw joint velocities (aux)")
        xp = array_namespace(obs)
        theta = xp.atan2(obs[..., OBS_OBJECT_Y : OBS_OBJECT_Y + 1], obs[..., OBS_OBJECT_X : OBS_OBJECT_X + 1])
        target = wrap_angle(theta + obs[..., OBS_TARGET_ERROR : OBS_TARGET_ERROR + 1], xp)
        return xp.concat([obs[..., OBS_CLAW_QPOS], theta, obs[..., OBS_LAST_ACTION], target, aux], -1)

    def from_model(self, z: Array) -> Array:
        """Inverse of :meth:`to_model` (observation part): (cos, sin) of theta and the wrapped
        target error."""
        xp = array_namespace(z)
        theta = z[..., MODEL_THETA : MODEL_THETA + 1]
        err = wrap_angle(z[..., MODEL_TARGET : MODEL_TARGET + 1] - theta, xp)
        return xp.concat([z[..., :MODEL_THETA], xp.cos(theta), xp.sin(theta), z[..., MODEL_LAST_ACTION], err], -1)

    def aux_from_model(self, z: Array) -> Array:
        """The predicted claw joint velocities."""
        return z[..., MODEL_QVEL]

    def model_reward(self, obs: Array, action: Array, next_obs: Array, next_aux: Any = None) -> Array:
        """ROBEL's reward with the joint-velocity cost computed from ``next_aux`` (the model's
        predicted velocities), not from a finite difference of positions."""
        t = self.reward_terms(obs, action, next_obs, next_qvel=next_aux)
        return t["target_dist_cost"] + t["pose_diff_cost"] + t["joint_vel_cost"] + t["bonus_small"] + t["bonus_big"]

    def fix_known(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """``last_action`` of the next observation is the clipped action, exactly."""
        xp = array_namespace(next_obs)
        out = xp.copy(next_obs)
        out[..., OBS_LAST_ACTION] = xp.clip(action, -1.0, 1.0)
        return out
