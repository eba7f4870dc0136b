"""The task contract shared by the simulator, the hardware driver and the learner.

A :class:`TaskSpec` is pure: it holds no MuJoCo or bus state. It knows how to turn a robot
state (from MuJoCo or from the Dynamixel bus) into the task observation, how to map a
normalised action to joint targets (clip, denormalise, clip to the range, rate limit), and
the batched reward / termination / success functions used inside learned-model rollouts.

Model space: learned dynamics are fitted on a wrap-free representation of the observation
(angles as cos/sin), because a model fitted on raw wrapped angles averages across the +-pi
jump (see shared ALGORITHMS.md, "Measured here"). ``to_model`` / ``from_model`` convert
between the two, and ``fix_known`` overwrites observation parts that are known exactly
(e.g. ``last_action``) after a model prediction.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import numpy as np

try:  # torch is optional for the pure task layer
    import torch

    Array = Union[np.ndarray, "torch.Tensor"]
except ImportError:  # pragma: no cover - torch is a hard dependency of the package
    torch = None  # type: ignore[assignment]
    Array = np.ndarray  # type: ignore[misc]


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits of the actuated group, in radians and rad/s (ROBEL's qpos/qvel ranges)."""

    qpos_low: np.ndarray
    qpos_high: np.ndarray
    qvel_max: np.ndarray  # symmetric: |qdot| <= qvel_max

    @property
    def center(self) -> np.ndarray:
        return 0.5 * (self.qpos_low + self.qpos_high)

    @property
    def half_range(self) -> np.ndarray:
        return 0.5 * (self.qpos_high - self.qpos_low)


@dataclass(frozen=True)
class TaskInfo:
    """Static facts of a task, printed by ``mbrl-ros tasks`` and stored in policy contracts."""

    task_id: str  # short CLI id, e.g. "dclaw-turn-fixed"
    gym_id: str  # e.g. "mbrl_ros/DClawTurnFixed-v0"
    robot: str  # "dclaw" | "dkitty"
    obs_dim: int
    act_dim: int
    horizon: int  # episode length in control steps
    dt: float = 0.1  # control period (s)
    frame_skip: int = 40
    obs_names: tuple[str, ...] = field(default_factory=tuple)  # one name per obs slot


class TaskSpec(abc.ABC):
    """Observation, action map and batched reward/done/success of one ROBEL task."""

    info: TaskInfo
    limits: JointLimits

    # -- action pipeline (shared by sim and hardware) -------------------------------------
    def action_to_targets(self, action: np.ndarray, q_current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map a normalised action to joint position targets, exactly as ROBEL does.

        Returns ``(clipped_action, q_target)``: ``a = clip(a, -1, 1)``; ``q = center + a*half``;
        ``q = clip(q, qpos_range)``; ``q = q_cur + clip((q - q_cur)/dt, +-qvel_max)*dt``.
        Raises ``ValueError`` on a wrong shape or a non-finite value.
        """
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (self.info.act_dim,):
            raise ValueError(f"{self.info.task_id}: action must have shape ({self.info.act_dim},), got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{self.info.task_id}: action contains non-finite values: {a}")
        a = np.clip(a, -1.0, 1.0)
        lim = self.limits
        q = np.clip(lim.center + a * lim.half_range, lim.qpos_low, lim.qpos_high)
        dt = self.info.dt
        q = q_current + np.clip((q - q_current) / dt, -lim.qvel_max, lim.qvel_max) * dt
        return a, q

    # -- observation ----------------------------------------------------------------------
    @abc.abstractmethod
    def observation(self, state: Mapping[str, Any]) -> np.ndarray:
        """Task observation (float64, shape (obs_dim,)) from a robot state dict.

        The state dict is produced by the sim or the hardware driver; its keys are task
        specific and documented on the concrete class.
        """

    # -- batched functions for model rollouts (numpy or torch, leading batch dims) --------
    @abc.abstractmethod
    def reward(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """Batched reward of transitions, shape ``obs.shape[:-1]``."""

    @abc.abstractmethod
    def done(self, next_obs: Array) -> Array:
        """Batched termination flags (bool)."""

    @abc.abstractmethod
    def success(self, next_obs: Array) -> Array:
        """Batched success flags (bool)."""

    # -- model space ----------------------------------------------------------------------
    @property
    def model_dim(self) -> int:
        """Size of the wrap-free state the dynamics model predicts."""
        return self.info.obs_dim

    def to_model(self, obs: Array) -> Array:
        """Observation -> wrap-free model state (identity unless a task has wrapping angles)."""
        return obs

    def from_model(self, z: Array) -> Array:
        """Model state -> task observation."""
        return z

    def fix_known(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """Overwrite the parts of a predicted observation that are known exactly (default: none)."""
        return next_obs


def is_torch(x: Any) -> bool:
    """True for a torch tensor (the batched task functions accept numpy or torch)."""
    return torch is not None and isinstance(x, torch.Tensor)
