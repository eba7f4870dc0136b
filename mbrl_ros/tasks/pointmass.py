"""A tiny 2-D point mass task for fast tests of the learning code (not a ROBEL task, not registered).

State: position p and velocity v in the plane, goal g. Action a in [-1, 1]^2 (clipped):
``v' = 0.7 v + 0.3 a``, ``p' = clip(p + 0.1 v', -1, 1)``. Observation ``[p, v, g]`` (6 values).
Reward ``-|p' - g| - 0.01 |a|^2``; success: ``|p' - g| < 0.1`` (at the final step, as the
ROBEL tasks report it). No termination; horizon 20 steps.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import gymnasium as gym
import numpy as np

from mbrl_ros.tasks.base import Array, JointLimits, TaskInfo, TaskSpec, is_torch

SUCCESS_RADIUS = 0.1


class PointMassTask(TaskSpec):
    """Batched reward/done/success of the point mass (numpy or torch)."""

    def __init__(self, fixed_goal: bool = False, horizon: int = 20) -> None:
        self.fixed_goal = fixed_goal
        self.info = TaskInfo(
            task_id="pointmass-fixed" if fixed_goal else "pointmass",
            gym_id="",
            robot="pointmass",
            obs_dim=6,
            act_dim=2,
            horizon=horizon,
            dt=0.1,
            frame_skip=1,
            obs_names=("x", "y", "vx", "vy", "goal_x", "goal_y"),
        )
        self.limits = JointLimits(qpos_low=-np.ones(2), qpos_high=np.ones(2), qvel_max=np.full(2, 10.0))

    def observation(self, state: Mapping[str, Any]) -> np.ndarray:
        return np.concatenate([state["pos"], state["vel"], state["goal"]]).astype(np.float64)

    @staticmethod
    def _dist(next_obs: Array) -> Array:
        d = next_obs[..., 0:2] - next_obs[..., 4:6]
        return (d**2).sum(-1) ** 0.5

    def reward(self, obs: Array, action: Array, next_obs: Array) -> Array:
        return -self._dist(next_obs) - 0.01 * (action**2).sum(-1)

    def done(self, next_obs: Array) -> Array:
        if is_torch(next_obs):
            import torch

            return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)
        return np.zeros(np.shape(next_obs)[:-1], dtype=bool)

    def success(self, next_obs: Array) -> Array:
        return self._dist(next_obs) < SUCCESS_RADIUS

    def fix_known(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """The goal never moves: copy it instead of trusting the model."""
        if is_torch(next_obs):
            import torch

            return torch.cat([next_obs[..., :4], obs[..., 4:6]], dim=-1)  # type: ignore[list-item]
        return np.concatenate([next_obs[..., :4], obs[..., 4:6]], axis=-1)


class PointMassEnv(gym.Env):
    """Gymnasium env of :class:`PointMassTask` following the project's env contract."""

    metadata = {"render_modes": []}

    def __init__(self, fixed_goal: bool = False, horizon: int = 20) -> None:
        self.task = PointMassTask(fixed_goal, horizon)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (6,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._goal = np.zeros(2)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return self.task.observation({"pos": self._pos, "vel": self._vel, "goal": self._goal})

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        options = options or {}
        self._pos = np.asarray(options.get("qpos", self.np_random.uniform(-0.5, 0.5, 2)), dtype=np.float64)
        self._vel = np.asarray(options.get("qvel", np.zeros(2)), dtype=np.float64)
        default_goal = np.array([0.6, -0.4]) if self.task.fixed_goal else self.np_random.uniform(-0.8, 0.8, 2)
        self._goal = np.asarray(options.get("target", default_goal), dtype=np.float64)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"pointmass: action must be 2 finite values, got {action!r}")
        a = np.clip(a, -1.0, 1.0)
        obs = self._obs()
        self._vel = 0.7 * self._vel + 0.3 * a
        self._pos = np.clip(self._pos + 0.1 * self._vel, -1.0, 1.0)
        self._t += 1
        next_obs = self._obs()
        reward = float(self.task.reward(obs, a, next_obs))
        success = bool(self.task.success(next_obs))
        info = {"success": success, "reward_terms": {"distance": -float(self.task._dist(next_obs))}}
        return next_obs, reward, False, self._t >= self.task.info.horizon, info
