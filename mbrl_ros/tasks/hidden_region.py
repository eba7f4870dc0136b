"""``hidden-region``: a point-mass world whose best room a model can hide (the poster's MDP, continuous).

The poster (Cremer, Ozieblowski, Zengaffinen 2024) builds a finite MDP where a tempting action
pays a small reward and another leads, through states with no reward of their own, to a large
one; a model that predicts that second route as a dead end is never contradicted by the data
of the policy that best-responds to it. This task is the same construction in a continuous
world (docs/tasks.md, "hidden-region"):

- a point mass in the box [-1, 1]^2, ``v' = 0.7 v + 0.3 a``, ``p' = p + SPEED v'`` (a in
  [-1, 1]^2, clipped; the box stops the mass and zeroes the velocity component into it);
- a wall along x = 0 that blocks every crossing below ``GAP_LOW``: the only way from the left
  half (where every episode starts) to the right half is the *entrance*, the gap
  ``GAP_LOW <= y <= 1`` at x = 0;
- the *hidden region*: the disc of radius ``GOAL_RADIUS`` around ``GOAL`` in the right half,
  straight across the wall from the start. Success = the mass is in it at the final step;
- the reward (known to the agent, as in the paper): a potential ``1 - geo(p)/geo(start)``
  that rises along the shortest path to the goal *through the entrance* (so a model that knows
  the entrance also knows the way), plus a bonus inside the hidden region, plus a *decoy*: a
  bump of ``DECOY_REWARD`` on the way up, left of the wall, minus a small action cost.

Returns over the 40 steps (measured with the scripted policies in test/test_hidden_region.py):
through the entrance to the region about 2x the decoy's; the decoy well above pushing at the
wall where the entrance is. So a model that predicts the entrance as wall (what a network fitted
on wall hits below the entrance predicts there) makes the decoy the best response, the decoy
policy never comes near the entrance, and no data contradicts the model.

Observation ``[x, y, vx, vy]``; no termination; horizon 40 steps at 10 Hz.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import gymnasium as gym
import numpy as np

from mbrl_ros.tasks.base import Array, JointLimits, TaskInfo, TaskSpec, array_namespace, is_torch

HORIZON = 40
SPEED = 0.15  # position change per step at unit velocity
DAMPING, GAIN = 0.7, 0.3  # v' = DAMPING v + GAIN a
GAP_LOW = 0.3  # the wall x = 0 blocks crossings with y < GAP_LOW; the entrance is GAP_LOW..1
WALL_EPS = 1e-3  # a blocked mass stays this far from the wall on its own side
START = (-0.6, -0.6)
START_NOISE = 0.05  # uniform +- per coordinate
GOAL = (0.6, -0.6)
GOAL_RADIUS = 0.2
ENTRANCE = (0.0, 0.65)  # the waypoint of the geodesic (middle of the entrance)
DECOY = (-0.6, 0.2)
DECOY_WIDTH = 0.15  # std of the decoy's Gaussian bump
DECOY_REWARD = 0.6
GOAL_BONUS = 1.0
ACTION_COST = 0.01

_LEG = math.hypot(GOAL[0] - ENTRANCE[0], GOAL[1] - ENTRANCE[1])  # entrance -> goal
GEO_START = math.hypot(START[0] - ENTRANCE[0], START[1] - ENTRANCE[1]) + _LEG


class HiddenRegionTask(TaskSpec):
    """Batched reward / done / success of the hidden-region world (numpy or torch)."""

    def __init__(self) -> None:
        self.info = TaskInfo(
            task_id="hidden-region",
            gym_id="mbrl_ros/HiddenRegion-v0",
            robot="pointmass",
            obs_dim=4,
            act_dim=2,
            horizon=HORIZON,
            dt=0.1,
            frame_skip=1,
            obs_names=("x", "y", "vx", "vy"),
        )
        self.limits = JointLimits(qpos_low=-np.ones(2), qpos_high=np.ones(2), qvel_max=np.full(2, 10.0))

    def observation(self, state: Mapping[str, Any]) -> np.ndarray:
        return np.concatenate([state["pos"], state["vel"]]).astype(np.float64)

    # -- geometry (batched) -------------------------------------------------------------
    @staticmethod
    def goal_distance(obs: Array) -> Array:
        """Euclidean distance of the mass to the centre of the hidden region."""
        return ((obs[..., 0] - GOAL[0]) ** 2 + (obs[..., 1] - GOAL[1]) ** 2) ** 0.5

    @staticmethod
    def geodesic(obs: Array) -> Array:
        """Length of the shortest route to the goal: straight in the right half, through the
        entrance's middle from the left half."""
        xp = array_namespace(obs)
        to_entrance = ((obs[..., 0] - ENTRANCE[0]) ** 2 + (obs[..., 1] - ENTRANCE[1]) ** 2) ** 0.5
        return xp.where(obs[..., 0] >= 0.0, HiddenRegionTask.goal_distance(obs), to_entrance + _LEG)

    def reward_terms(self, obs: Array, action: Array, next_obs: Array) -> dict[str, Array]:
        """The reward's parts (they sum to :meth:`reward`)."""
        xp = array_namespace(next_obs)
        d2 = (next_obs[..., 0] - DECOY[0]) ** 2 + (next_obs[..., 1] - DECOY[1]) ** 2
        decoy = DECOY_REWARD * math.e ** (-d2 / (2 * DECOY_WIDTH**2))  # float ** array: numpy and torch
        inside = xp.to_float(self.goal_distance(next_obs) < GOAL_RADIUS, next_obs)
        return {
            "progress": 1.0 - self.geodesic(next_obs) / GEO_START,
            "decoy": decoy,
            "region_bonus": GOAL_BONUS * inside,
            "action_cost": -ACTION_COST * (xp.clip(action, -1.0, 1.0) ** 2).sum(-1),
        }

    def reward(self, obs: Array, action: Array, next_obs: Array) -> Array:
        t = self.reward_terms(obs, action, next_obs)
        return t["progress"] + t["decoy"] + t["region_bonus"] + t["action_cost"]

    def done(self, next_obs: Array) -> Array:
        if is_torch(next_obs):
            import torch

            return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)
        return np.zeros(np.shape(next_obs)[:-1], dtype=bool)

    def success(self, next_obs: Array) -> Array:
        return self.goal_distance(next_obs) < GOAL_RADIUS

    def goal_error(self, next_obs: Array) -> Any:
        return self.goal_distance(next_obs)

    # -- the world's step (numpy, batched: the env and the tests share it) ----------------
    @staticmethod
    def step_state(pos: np.ndarray, vel: np.ndarray, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """True dynamics for ``pos``, ``vel``, ``action`` of shape ``(..., 2)``."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        v = DAMPING * np.asarray(vel, dtype=np.float64) + GAIN * a
        p0 = np.asarray(pos, dtype=np.float64)
        p = p0 + SPEED * v
        # the box: stop at the edge, lose the velocity into it
        out = (p < -1.0) | (p > 1.0)
        p = np.clip(p, -1.0, 1.0)
        v = np.where(out, 0.0, v)
        # the wall x = 0 below GAP_LOW: a crossing there is stopped on the side it came from
        x0, x1 = p0[..., 0], p[..., 0]
        crosses = (x0 < 0.0) != (x1 < 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(crosses, -x0 / np.where(crosses, x1 - x0, 1.0), 0.0)
        y_cross = p0[..., 1] + frac * (p[..., 1] - p0[..., 1])
        blocked = crosses & (y_cross < GAP_LOW)
        p[..., 0] = np.where(blocked, np.where(x0 < 0.0, -WALL_EPS, WALL_EPS), x1)
        v[..., 0] = np.where(blocked, 0.0, v[..., 0])
        return p, v


def scripted_action(obs: np.ndarray, through_entrance: bool = True) -> np.ndarray:
    """A hand-written controller: through the entrance into the hidden region, or (False) to the
    decoy. Used by the tests and the experiment's probes."""
    p, v = obs[..., 0:2], obs[..., 2:4]
    if not through_entrance:
        target = np.broadcast_to(np.asarray(DECOY), p.shape)
    else:
        left = p[..., 0] < 0.0
        low = p[..., 1] < ENTRANCE[1] - 0.1
        # left half: rise along x = -0.2 to the entrance's height, then cross; right half: the goal
        target = np.where(
            (left & low)[..., None],
            np.array([-0.2, ENTRANCE[1] + 0.05]),
            np.where(left[..., None], np.array([0.25, ENTRANCE[1]]), np.asarray(GOAL)),
        )
    return np.clip(4.0 * (target - p) - 1.5 * v, -1.0, 1.0)


class HiddenRegionEnv(gym.Env):
    """Gymnasium env of :class:`HiddenRegionTask` following the project's env contract."""

    metadata = {"render_modes": []}
    deterministic_reset = False

    def __init__(self, task_id: str = "hidden-region", **_: Any) -> None:
        self.task = HiddenRegionTask()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return self.task.observation({"pos": self._pos, "vel": self._vel})

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        options = options or {}
        start = np.asarray(START) + self.np_random.uniform(-START_NOISE, START_NOISE, 2)
        self._pos = np.asarray(options.get("qpos", start), dtype=np.float64).copy()
        self._vel = np.asarray(options.get("qvel", np.zeros(2)), dtype=np.float64).copy()
        if self._pos.shape != (2,) or self._vel.shape != (2,):
            raise ValueError("hidden-region: options qpos and qvel must have 2 values each")
        self._t = 0
        return self._obs(), {"target": np.asarray(GOAL, dtype=np.float64), "success": False}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"hidden-region: action must be 2 finite values, got {action!r}")
        a = np.clip(a, -1.0, 1.0)
        obs = self._obs()
        self._pos, self._vel = self.task.step_state(self._pos, self._vel, a)
        self._t += 1
        next_obs = self._obs()
        terms = {k: float(v) for k, v in self.task.reward_terms(obs, a, next_obs).items()}
        reward = float(self.task.reward(obs, a, next_obs))
        info = {"success": bool(self.task.success(next_obs)), "reward_terms": terms, "sim_warning": None}
        return next_obs, reward, False, self._t >= self.task.info.horizon, info
