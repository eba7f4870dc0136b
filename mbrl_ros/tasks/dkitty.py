"""D'Kitty orient and stand (ROBEL DKittyOrientRandom-v0, DKittyStandRandom-v0).

Re-implemented from the facts of ROBEL 0.1.2 (``robel/dkitty/{base_env,orient,stand}.py``; see
docs/tasks.md). Pure: no MuJoCo here. The torso pose is 3 slide joints plus 3 nested hinges
(x, then y, then z), i.e. transforms3d's ``'rxyz'`` Euler angles; the rotation helpers below
reproduce transforms3d's formulas (it is not a dependency).

Quirks kept on purpose, because they define the task the paper's numbers were measured on:
``center_distance_cost`` uses the x, y AND z torso offset (a ROBEL batching bug), and
``desired_facing`` is normalised as ``v / ||v + 1e-8||``. One deliberate deviation: the cosine
of the facing error is clipped to [-1, 1] before ``arccos`` (ROBEL would return NaN when rounding
pushes it past 1).
"""

from __future__ import annotations

import math
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
_EPS4 = np.finfo(float).eps * 4.0

# ROBEL qpos_range per leg (FR, FL, BL, BR), each (hip abduction, hip/knee pitch, foot).
_FR = [(-0.5, 0.279), (0.0, PI / 2), (-2.0, 0.0)]
_FL = [(-0.279, 0.5), (0.0, PI / 2), (-2.0, 0.0)]
_RANGES = np.array(_FR + _FL + _FL + _FR)
KITTY_LIMITS = JointLimits(qpos_low=_RANGES[:, 0].copy(), qpos_high=_RANGES[:, 1].copy(), qvel_max=np.full(12, PI))

# MuJoCo layout of dkitty_{orient,stand}-v0.xml: Tx Ty Tz Rx Ry Rz, then 12 leg joints.
NQ = 18
ROOT_QPOS = slice(0, 6)
KITTY_QPOS = slice(6, 18)

# Observation layout (shared prefix of both tasks).
OBS_ROOT_POS = slice(0, 3)
OBS_ROOT_EULER = slice(3, 6)
OBS_KITTY_QPOS = slice(6, 18)
OBS_ROOT_VEL = slice(18, 21)
OBS_ROOT_ANGULAR_VEL = slice(21, 24)
OBS_KITTY_QVEL = slice(24, 36)
OBS_LAST_ACTION = slice(36, 48)
OBS_UPRIGHT = 48
OBS_CURRENT_FACING = slice(49, 51)  # orient
OBS_DESIRED_FACING = slice(51, 53)  # orient
OBS_POSE_ERROR = slice(49, 61)  # stand


def _names(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}[{i}]" for i in range(n))


_COMMON_NAMES = (
    _names("root_pos", 3)
    + _names("root_euler", 3)
    + _names("kitty_qpos", 12)
    + _names("root_vel", 3)
    + _names("root_angular_vel", 3)
    + _names("kitty_qvel", 12)
    + _names("last_action", 12)
    + ("upright",)
)
ORIENT_OBS_NAMES = _COMMON_NAMES + _names("current_facing", 2) + _names("desired_facing", 2)
STAND_OBS_NAMES = _COMMON_NAMES + _names("pose_error", 12)
# Columns the batched reward reads (gathered once into a contiguous block).
_ORIENT_COLS = [0, 1, 2, OBS_UPRIGHT, 49, 50, 51, 52]


# -- rotations (transforms3d 'rxyz' conventions, same floating-point formulas) --------------
def euler_rxyz_to_mat(a: float, b: float, c: float) -> np.ndarray:
    """R = Rx(a) @ Ry(b) @ Rz(c) (transforms3d ``euler2mat(a, b, c, 'rxyz')``)."""
    # transforms3d evaluates 'rxyz' as the static 'szyx' sequence with negated angles.
    ai, aj, ak = -c, -b, -a
    si, sj, sk = math.sin(ai), math.sin(aj), math.sin(ak)
    ci, cj, ck = math.cos(ai), math.cos(aj), math.cos(ak)
    cc, cs, sc, ss = ci * ck, ci * sk, si * ck, si * sk
    m = np.empty((3, 3))
    m[2, 2] = cj * ck
    m[2, 1] = sj * sc - cs
    m[2, 0] = sj * cc + ss
    m[1, 2] = cj * sk
    m[1, 1] = sj * ss + cc
    m[1, 0] = sj * cs - sc
    m[0, 2] = -sj
    m[0, 1] = cj * si
    m[0, 0] = cj * ci
    return m


def mat_to_euler_rxyz(m: np.ndarray) -> tuple[float, float, float]:
    """Inverse of :func:`euler_rxyz_to_mat` (transforms3d ``mat2euler(m, 'rxyz')``)."""
    cy = math.sqrt(m[2, 2] * m[2, 2] + m[1, 2] * m[1, 2])
    if cy > _EPS4:
        ax = math.atan2(m[0, 1], m[0, 0])
        ay = math.atan2(-m[0, 2], cy)
        az = math.atan2(m[1, 2], m[2, 2])
    else:  # gimbal lock
        ax = math.atan2(-m[1, 0], m[1, 1])
        ay = math.atan2(-m[0, 2], cy)
        az = 0.0
    return -az, -ay, -ax


def _upright_and_facing(xp: Any, euler: Array) -> tuple[Array, Array, Array]:
    """Batched R[2,2], R[0,1], R[1,1] of R = Rx(a) Ry(b) Rz(c) from root_euler (exact)."""
    a, b, c = euler[..., 0:1], euler[..., 1:2], euler[..., 2:3]
    ca, sa, cb, sb, cc, sc = xp.cos(a), xp.sin(a), xp.cos(b), xp.sin(b), xp.cos(c), xp.sin(c)
    return ca * cb, -cb * sc, ca * cc - sa * sb * sc


def _sample(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(lo) if lo == hi else float(rng.uniform(lo, hi))


class _DKittyTask(FastActionPipeline, TaskSpec):
    """Shared D'Kitty logic: observation prefix, upright terms, model space.

    State dict keys read by :meth:`observation`: ``root_qpos`` (6: torso x, y, z offset and the
    'rxyz' Euler angles), ``root_qvel`` (6: their rates, as ROBEL reports them), ``kitty_qpos``
    (12), ``kitty_qvel`` (12), ``last_action`` (12); orient also reads ``target_pos`` (target xy
    in the world frame).
    """

    robot = "dkitty"
    nq = NQ
    angle_slots = (3, 4, 5)  # the torso's Euler angles
    upright_threshold: float
    upright_reward: float
    falling_reward: float

    def _prefix(self, state: Mapping[str, Any], obs: np.ndarray) -> np.ndarray:
        """Fill obs[0:49] and return the torso rotation matrix."""
        root = np.asarray(state["root_qpos"], dtype=np.float64)
        rot = euler_rxyz_to_mat(root[3], root[4], root[5])
        obs[OBS_ROOT_POS] = root[:3]
        obs[OBS_ROOT_EULER] = mat_to_euler_rxyz(rot)
        obs[OBS_KITTY_QPOS] = state["kitty_qpos"]
        root_qvel = state["root_qvel"]
        obs[OBS_ROOT_VEL] = root_qvel[:3]
        obs[OBS_ROOT_ANGULAR_VEL] = root_qvel[3:6]
        obs[OBS_KITTY_QVEL] = state["kitty_qvel"]
        obs[OBS_LAST_ACTION] = state["last_action"]
        obs[OBS_UPRIGHT] = rot[2, 2]
        return rot

    def _upright_terms(self, xp: Any, u: Array) -> dict[str, Array]:
        thr = self.upright_threshold
        return {
            "upright": self.upright_reward * (u - thr) / (1.0 - thr),
            "falling": self.falling_reward * xp.to_float(u < thr, u),
        }

    def reward_terms(self, obs: Array, action: Array, next_obs: Array) -> dict[str, Array]:
        """ROBEL's reward terms of the task (each subclass defines its own)."""
        raise NotImplementedError

    def reward(self, obs: Array, action: Array, next_obs: Array) -> Array:
        terms = list(self.reward_terms(obs, action, next_obs).values())
        total = terms[0]
        for v in terms[1:]:
            total = total + v
        return total

    def done(self, next_obs: Array) -> Array:
        return next_obs[..., OBS_UPRIGHT] < self.upright_threshold

    # -- model space: root_euler as (cos, sin) pairs -----------------------------------
    @property
    def model_dim(self) -> int:
        return self.info.obs_dim + 3

    def to_model(self, obs: Array, aux: Any = None) -> Array:
        """``[root_pos, cos/sin(rx), cos/sin(ry), cos/sin(rz), obs[6:]]`` (obs_dim + 3)."""
        xp = array_namespace(obs)
        parts = [obs[..., OBS_ROOT_POS]]
        for i in range(3, 6):
            e = obs[..., i : i + 1]
            parts += [xp.cos(e), xp.sin(e)]
        parts.append(obs[..., 6:])
        return xp.concat(parts, -1)

    def from_model(self, z: Array) -> Array:
        xp = array_namespace(z)
        eul = [xp.atan2(z[..., 4 + 2 * i : 5 + 2 * i], z[..., 3 + 2 * i : 4 + 2 * i]) for i in range(3)]
        return xp.concat([z[..., 0:3], *eul, z[..., 9:]], -1)

    def _fix_common(self, xp: Any, action: Array, next_obs: Array) -> Array:
        out: Any = xp.copy(next_obs)  # numpy or torch: slice assignment works on both
        out[..., OBS_LAST_ACTION] = xp.clip(action, -1.0, 1.0)
        u, _, _ = _upright_and_facing(xp, next_obs[..., OBS_ROOT_EULER])
        out[..., OBS_UPRIGHT] = u[..., 0]
        return out


class DKittyOrient(_DKittyTask):
    """ROBEL D'Kitty orient: turn in place to face a target 1 m away (random target yaw)."""

    scene = "dkitty-orient"
    upright_threshold = 0.9
    upright_reward = 2.0
    falling_reward = -500.0
    target_radius = 1.0  # ROBEL places the target site on the unit circle around the origin

    def __init__(self, random: bool = True) -> None:
        name = "random" if random else "fixed"
        self.info = TaskInfo(
            task_id=f"dkitty-orient-{name}",
            gym_id=f"mbrl_ros/DKittyOrient{name.capitalize()}-v0",
            robot="dkitty",
            obs_dim=53,
            act_dim=12,
            horizon=80,
            obs_names=ORIENT_OBS_NAMES,
        )
        self.limits = KITTY_LIMITS
        self._prepare_action_pipeline()
        self.random = random
        self.initial_range = (-PI / 3, PI / 3) if random else (0.0, 0.0)
        self.target_range = (2 * PI / 3, 4 * PI / 3) if random else (PI, PI)

    def reset_is_deterministic(self, initial_range: Any, target_range: Any) -> bool:
        return initial_range[0] == initial_range[1] and target_range[0] == target_range[1]

    def goal_error(self, next_obs: Array) -> Array:
        """Facing error in rad (success: below 0.087 while upright)."""
        return self.angle_error(next_obs)

    @staticmethod
    def target_position(target_yaw: float) -> np.ndarray:
        """World xy of the target site for a target yaw (the head faces +y, hence +pi/2)."""
        return np.array([math.cos(target_yaw + PI / 2), math.sin(target_yaw + PI / 2)])

    def canonical_target(self, target: float) -> float:
        return float(target)

    def initial_state(
        self,
        rng: np.random.Generator,
        initial_range: Optional[tuple[float, float]] = None,
        target_range: Optional[tuple[float, float]] = None,
    ) -> InitialState:
        """Standing pose at rest, torso at the origin (0.3 m up) rotated by the initial yaw."""
        initial = _sample(rng, initial_range or self.initial_range)
        target = _sample(rng, target_range or self.target_range)
        qpos = np.zeros(NQ)
        qpos[5] = initial
        return InitialState(qpos=qpos, qvel=np.zeros(NQ), target=target)

    def observation(self, state: Mapping[str, Any]) -> np.ndarray:
        obs = np.empty(53)
        rot = self._prefix(state, obs)
        obs[OBS_CURRENT_FACING] = rot[0:2, 1]
        v = np.asarray(state["target_pos"], dtype=np.float64)[:2] - obs[0:2]
        # ROBEL normalises by ||v + 1e-8|| (sic).
        obs[OBS_DESIRED_FACING] = v / math.hypot(v[0] + 1e-8, v[1] + 1e-8)
        return obs

    def angle_error(self, next_obs: Array) -> Array:
        """Angle between current and desired facing, in [0, pi] (batched)."""
        xp = array_namespace(next_obs)
        return self._angle_error(xp, xp.columns(next_obs, _ORIENT_COLS))

    @staticmethod
    def _angle_error(xp: Any, c: Array) -> Array:
        c0, c1, d0, d1 = c[..., 4], c[..., 5], c[..., 6], c[..., 7]
        norm = xp.sqrt(c0 * c0 + c1 * c1) * xp.sqrt(d0 * d0 + d1 * d1)
        norm = norm + xp.to_float(norm == 0, norm)  # ROBEL: a zero norm is replaced by 1
        return xp.arccos(xp.clip((c0 * d0 + c1 * d1) / norm, -1.0, 1.0))

    def reward_terms(
        self, obs: Array, action: Array, next_obs: Array, next_qvel: Optional[Array] = None
    ) -> dict[str, Array]:
        """ROBEL's orient reward terms, exact from ``next_obs`` (``next_qvel`` is unused)."""
        return self._terms(array_namespace(next_obs), next_obs)[0]

    def _terms(self, xp: Any, next_obs: Array) -> tuple[dict, Array, Array]:
        c = xp.columns(next_obs, _ORIENT_COLS)  # (*batch, 8): root_pos, upright, facings
        u = c[..., 3]
        ae = self._angle_error(xp, c)
        upright = xp.to_float(u > 0.96, u)
        terms = self._upright_terms(xp, u)
        terms["alignment_error_cost"] = -4.0 * ae
        terms["center_distance_cost"] = -4.0 * xp.sqrt(xp.sumsq(c[..., 0:3]))
        terms["bonus_small"] = 5.0 * (xp.to_float(ae < 0.26, u) + upright)
        terms["bonus_big"] = 10.0 * xp.to_float(ae < 0.087, u) * upright
        return terms, ae, u

    def evaluate(
        self, obs: Array, action: Array, next_obs: Array, next_qvel: Optional[Array] = None
    ) -> tuple[dict[str, Array], Array, Array]:
        """``(reward_terms, done, success)`` in one pass (what the simulator calls per step)."""
        terms, ae, u = self._terms(array_namespace(next_obs), next_obs)
        return terms, u < self.upright_threshold, (ae < 0.087) & (u > 0.96)

    def success(self, next_obs: Array) -> Array:
        xp = array_namespace(next_obs)
        c = xp.columns(next_obs, _ORIENT_COLS)
        return (self._angle_error(xp, c) < 0.087) & (c[..., 3] > 0.96)

    def fix_known(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """Exact parts: last_action; upright and current_facing (functions of root_euler);
        desired_facing (the target lies on the ray obs.root_xy + t * obs.desired_facing, on the
        unit circle around the origin where ROBEL puts it)."""
        xp = array_namespace(next_obs)
        out: Any = self._fix_common(xp, action, next_obs)  # numpy or torch
        _, f0, f1 = _upright_and_facing(xp, next_obs[..., OBS_ROOT_EULER])
        out[..., 49:50] = f0
        out[..., 50:51] = f1
        p, d = obs[..., 0:2], obs[..., OBS_DESIRED_FACING]
        pd = xp.rowdot(p, d)[..., None]
        disc = xp.clip(pd * pd - xp.sumsq(p)[..., None] + self.target_radius**2, 0.0, None)
        target = p + (xp.sqrt(disc) - pd) * d
        v = target - next_obs[..., 0:2]
        out[..., OBS_DESIRED_FACING] = v / xp.sqrt(xp.sumsq(v + 1e-8))[..., None]
        return out


class DKittyStand(_DKittyTask):
    """ROBEL D'Kitty stand: stand up (all joints to 0) from a random pose, staying upright."""

    scene = "dkitty-stand"
    upright_threshold = 0.0
    upright_reward = 2.0
    falling_reward = -100.0
    SETTLE_SUBSTEPS = 140  # ROBEL sim reset: one 40-substep step holding the pose + advance(100)
    FIXED_POSE = np.array([0.0, PI / 4, -PI / 2] * 4)

    def __init__(self, random: bool = True) -> None:
        name = "random" if random else "fixed"
        self.info = TaskInfo(
            task_id=f"dkitty-stand-{name}",
            gym_id=f"mbrl_ros/DKittyStand{name.capitalize()}-v0",
            robot="dkitty",
            obs_dim=61,
            act_dim=12,
            horizon=80,
            obs_names=STAND_OBS_NAMES,
        )
        self.limits = KITTY_LIMITS
        self._prepare_action_pipeline()
        self.random = random
        self.initial_range = None  # the initial pose is drawn per joint from the qpos range
        self.target_range = None  # the goal is the fixed standing pose (all joints 0)

    def canonical_target(self, target: float) -> float:
        return 0.0

    def reset_is_deterministic(self, initial_range: Any, target_range: Any) -> bool:
        return not self.random

    def goal_error(self, next_obs: Array) -> Array:
        """Mean absolute joint pose error in rad (success: below pi/12 while upright)."""
        xp = array_namespace(next_obs)
        return xp.rowsum(xp.abs(xp.columns(next_obs, OBS_POSE_ERROR))) * (1.0 / 12)

    def initial_state(
        self,
        rng: np.random.Generator,
        initial_range: Optional[tuple[float, float]] = None,
        target_range: Optional[tuple[float, float]] = None,
    ) -> InitialState:
        """Pose ~ U(qpos_range) per joint (fixed: [0, pi/4, -pi/2] x 4), torso upright at the origin,
        then 140 substeps of settling with the actuators holding the pose."""
        if self.random:
            pose = rng.uniform(KITTY_LIMITS.qpos_low, KITTY_LIMITS.qpos_high)
        else:
            pose = self.FIXED_POSE.copy()
        qpos = np.zeros(NQ)
        qpos[KITTY_QPOS] = pose
        return InitialState(qpos=qpos, qvel=np.zeros(NQ), target=0.0, settle_substeps=self.SETTLE_SUBSTEPS)

    def observation(self, state: Mapping[str, Any]) -> np.ndarray:
        obs = np.empty(61)
        self._prefix(state, obs)
        obs[OBS_POSE_ERROR] = -obs[OBS_KITTY_QPOS]  # desired pose is all zeros
        return obs

    def reward_terms(
        self, obs: Array, action: Array, next_obs: Array, next_qvel: Optional[Array] = None
    ) -> dict[str, Array]:
        """ROBEL's stand reward terms, exact from ``next_obs`` (``next_qvel`` is unused)."""
        return self._terms(array_namespace(next_obs), next_obs)[0]

    def _terms(self, xp: Any, next_obs: Array) -> tuple[dict, Array, Array]:
        u = next_obs[..., OBS_UPRIGHT]
        m = xp.rowsum(xp.abs(xp.columns(next_obs, OBS_POSE_ERROR))) * (1.0 / 12)
        terms = self._upright_terms(xp, u)
        terms["pose_error_cost"] = -4.0 * m
        terms["center_distance_cost"] = -2.0 * xp.sqrt(xp.sumsq(xp.columns(next_obs, OBS_ROOT_POS)))
        terms["bonus_small"] = 5.0 * xp.to_float(m < PI / 6, u) * u
        terms["bonus_big"] = 10.0 * xp.to_float((m < PI / 12) & (u > 0.9), u)
        return terms, m, u

    def evaluate(
        self, obs: Array, action: Array, next_obs: Array, next_qvel: Optional[Array] = None
    ) -> tuple[dict[str, Array], Array, Array]:
        """``(reward_terms, done, success)`` in one pass (what the simulator calls per step)."""
        terms, m, u = self._terms(array_namespace(next_obs), next_obs)
        return terms, u < self.upright_threshold, (m < PI / 12) & (u > 0.9)

    def success(self, next_obs: Array) -> Array:
        xp = array_namespace(next_obs)
        m = xp.rowsum(xp.abs(xp.columns(next_obs, OBS_POSE_ERROR))) * (1.0 / 12)
        return (m < PI / 12) & (next_obs[..., OBS_UPRIGHT] > 0.9)

    def fix_known(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """Exact parts: last_action, upright (from root_euler) and pose_error = -kitty_qpos."""
        xp = array_namespace(next_obs)
        out: Any = self._fix_common(xp, action, next_obs)  # numpy or torch
        out[..., OBS_POSE_ERROR] = -next_obs[..., OBS_KITTY_QPOS]
        return out
