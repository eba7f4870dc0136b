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
from types import MappingProxyType
from typing import Any, Mapping, Optional, Union

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

    def reset_is_deterministic(self, initial_range: Any, target_range: Any) -> bool:
        """True when every reset with these initial/target ranges gives the same state (e.g.
        D'Claw turn fixed): one deterministic episode then stands for any number of them."""
        return False

    def goal_error(self, next_obs: Array) -> Any:
        """The task's distance to its goal at ``next_obs`` (D'Claw: |valve angle error| in rad;
        D'Kitty orient: facing error in rad; stand: mean joint pose error); None if undefined."""
        return None

    # -- policy features --------------------------------------------------------------------
    #: observation slots holding wrapped angles: the policy and value networks read them as
    #: (cos, sin) inside the network (the ONNX input stays the task observation)
    angle_slots: tuple[int, ...] = ()
    #: (cos_slot, sin_slot, k): an angle given as (cos, sin) whose world is symmetric under turns
    #: of 2 pi / k; with ``policy_symmetry`` the networks read (cos k theta, sin k theta) there
    policy_harmonics: tuple[tuple[int, int, int], ...] = ()
    #: a reflection of the robot that maps the task onto itself, as
    #: ``(obs_index, obs_sign, act_index, act_sign)`` (``(M s)[i] = obs_sign[i] * s[obs_index[i]]``);
    #: with ``policy_mirror`` the policy's mean is made equivariant under it; None: no mirror
    policy_mirror: Optional[tuple[tuple[int, ...], tuple[float, ...], tuple[int, ...], tuple[float, ...]]] = None
    #: every episode starts in its own reflection (D'Claw turn fixed: valve at 0, target at pi):
    #: a mirrored policy must act symmetrically there and can never pick a turning direction
    mirror_symmetric_start: bool = False

    # -- model-only state -------------------------------------------------------------------
    #: measured quantities that are not in the observation but that the reward depends on
    #: (D'Claw: the claw's joint velocities). They travel with every transition, the dynamics
    #: model predicts them, and model rollouts compute the reward from the predicted values.
    aux_names: tuple[str, ...] = ()

    @property
    def aux_dim(self) -> int:
        return len(self.aux_names)

    def aux_observation(self, state: Mapping[str, Any]) -> np.ndarray:
        """The model-only measurements (shape (aux_dim,)) from the same robot state dict."""
        return np.zeros(0)

    # -- model space ----------------------------------------------------------------------
    #: model-state slots holding angles in [-pi, pi), with the order k of the physics' rotational
    #: symmetry: the dynamics ensemble predicts their wrapped change and reads them as
    #: (cos k theta, sin k theta); k = 0: carried but not read (see DynamicsEnsemble)
    model_angle_dims: Mapping[int, int] = MappingProxyType({})
    #: model-state slots the task's goal is measured on (D'Claw: the valve angle): the fit can
    #: give them a fixed share of its loss (``model_goal_share``)
    model_goal_dims: tuple[int, ...] = ()

    @property
    def model_dim(self) -> int:
        """Size of the wrap-free state the dynamics model predicts."""
        return self.info.obs_dim

    def to_model(self, obs: Array, aux: Any = None) -> Array:
        """Observation (and model-only measurements) -> wrap-free model state (identity unless a
        task has wrapping angles or model-only state)."""
        return obs

    def from_model(self, z: Array) -> Array:
        """Model state -> task observation."""
        return z

    def aux_from_model(self, z: Array) -> Any:
        """Model state -> the model-only measurements (None for a task without any)."""
        return None

    def model_reward(self, obs: Array, action: Array, next_obs: Array, next_aux: Any = None) -> Array:
        """The reward of a model transition; tasks with model-only state use the predicted values."""
        return self.reward(obs, action, next_obs)

    def fix_known(self, obs: Array, action: Array, next_obs: Array) -> Array:
        """Overwrite the parts of a predicted observation that are known exactly (default: none)."""
        return next_obs


def is_torch(x: Any) -> bool:
    """True for a torch tensor (the batched task functions accept numpy or torch)."""
    return torch is not None and isinstance(x, torch.Tensor)


class _NumpyOps:
    """The few array functions the batched task functions need, for numpy arrays.

    Speed note: numpy iterates the last axis in its inner loop, so element-wise work on strided
    ``(N, 9)`` views of an observation batch runs 100k tiny loops. The task functions therefore
    gather the columns they need once (``columns``: contiguous copy) and reduce rows with
    ``einsum`` (``rowsum``/``rowdot``), which keeps 100k transitions at a few milliseconds.
    """

    abs = staticmethod(np.abs)
    sqrt = staticmethod(np.sqrt)
    cos = staticmethod(np.cos)
    sin = staticmethod(np.sin)
    atan2 = staticmethod(np.arctan2)
    arccos = staticmethod(np.arccos)
    mod = staticmethod(np.mod)  # Python-style modulo: result has the sign of the divisor
    where = staticmethod(np.where)

    # The 1-D branches serve the simulator's per-step call (one observation), where numpy's
    # per-call overhead, not memory traffic, is the cost.
    @staticmethod
    def columns(x, idx):
        """``x[..., idx]`` as a contiguous ``(*batch, len(idx))`` copy (one gather pass).

        ``idx`` is a slice or a list of indices; a single observation gets a view."""
        if isinstance(idx, slice):
            return x[idx] if x.ndim == 1 else np.ascontiguousarray(x[..., idx])
        return np.take(x, idx, axis=-1)

    @staticmethod
    def rowsum(x):
        """Sum over the last axis."""
        return x.sum() if x.ndim == 1 else np.einsum("...i->...", x)

    @staticmethod
    def rowdot(a, b):
        """Dot product over the last axis."""
        return np.dot(a, b) if a.ndim == 1 and b.ndim == 1 else np.einsum("...i,...i->...", a, b)

    @staticmethod
    def sumsq(x):
        """Sum of squares over the last axis."""
        return np.dot(x, x) if x.ndim == 1 else np.einsum("...i,...i->...", x, x)

    @staticmethod
    def clip(x, lo, hi):
        # np.maximum/np.minimum: same result as np.clip on finite bounds, far less call overhead.
        if lo is not None:
            x = np.maximum(x, lo)
        return x if hi is None else np.minimum(x, hi)

    @staticmethod
    def concat(xs, axis: int = -1):
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def copy(x):
        return np.array(x, copy=True)

    @staticmethod
    def asarray_like(value, like):
        return np.asarray(value, dtype=like.dtype)

    @staticmethod
    def zeros_bool(shape, like):
        return np.zeros(shape, dtype=bool)

    @staticmethod
    def to_float(mask, like):
        """A boolean mask as 0/1 in the float dtype of ``like`` (keeps float32 float32)."""
        return mask.astype(like.dtype if like.dtype.kind == "f" else np.float64)


class _TorchOps:
    """Torch twins of :class:`_NumpyOps` (same names, same semantics)."""

    def __init__(self) -> None:
        self.abs = torch.abs
        self.sqrt = torch.sqrt
        self.cos = torch.cos
        self.sin = torch.sin
        self.atan2 = torch.atan2
        self.arccos = torch.arccos
        self.mod = torch.remainder  # same sign convention as np.mod
        self.where = torch.where

    @staticmethod
    def columns(x, idx):
        if isinstance(idx, slice):
            return x[..., idx]
        return torch.index_select(x, -1, torch.as_tensor(idx, device=x.device))

    @staticmethod
    def rowsum(x):
        return torch.sum(x, dim=-1)

    @staticmethod
    def rowdot(a, b):
        return torch.sum(a * b, dim=-1)

    @staticmethod
    def sumsq(x):
        return torch.sum(x * x, dim=-1)

    @staticmethod
    def clip(x, lo, hi):
        return torch.clamp(x, lo, hi)

    @staticmethod
    def concat(xs, axis: int = -1):
        return torch.cat(xs, dim=axis)

    @staticmethod
    def copy(x):
        return x.clone()

    @staticmethod
    def asarray_like(value, like):
        if isinstance(value, np.ndarray) and not value.flags.writeable:
            value = value.copy()  # a read-only constant: torch would warn (it cannot honour read-only)
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)

    @staticmethod
    def zeros_bool(shape, like):
        return torch.zeros(shape, dtype=torch.bool, device=like.device)

    @staticmethod
    def to_float(mask, like):
        return mask.to(like.dtype if like.is_floating_point() else torch.float32)


_NUMPY_OPS = _NumpyOps()
_TORCH_OPS = _TorchOps() if torch is not None else None


def array_namespace(x: Any):
    """The array-function namespace for ``x``: one code path serves numpy and torch inputs.

    Numpy inputs are used as they are (no copy to float64 if they are float32).
    """
    return _TORCH_OPS if is_torch(x) else _NUMPY_OPS


@dataclass
class InitialState:
    """A sampled episode start, in full MuJoCo coordinates (added by the tasks engineer).

    ``qpos``/``qvel`` are the full ``MjData`` vectors; ``target`` is the task goal (D'Claw:
    valve target angle; D'Kitty orient: target yaw; D'Kitty stand: unused, 0). When
    ``settle_substeps > 0`` the simulator then holds ``ctrl`` at the actuated joint positions
    and lets physics run that many substeps (ROBEL's D'Kitty-Stand sim reset).
    """

    qpos: np.ndarray
    qvel: np.ndarray
    target: float = 0.0
    settle_substeps: int = 0


class FastActionPipeline:
    """Mixin: :meth:`TaskSpec.action_to_targets` with the same arithmetic, ~3x less overhead.

    Added by the tasks engineer for the simulator's 10 Hz step (and the hardware loop): the
    limits are precomputed and ``np.clip`` (a slow Python wrapper for 9-12 values) is replaced
    by ``np.maximum``/``np.minimum``, which give identical results on finite inputs (checked in
    test/test_tasks_env.py against ``TaskSpec.action_to_targets``).
    """

    info: TaskInfo
    limits: JointLimits

    def _prepare_action_pipeline(self) -> None:
        lim = self.limits
        self._ap = (
            lim.center.copy(),
            lim.half_range.copy(),
            lim.qpos_low.copy(),
            lim.qpos_high.copy(),
            -lim.qvel_max,
            lim.qvel_max.copy(),
            float(self.info.dt),
            (self.info.act_dim,),
        )

    def action_to_targets(self, action: np.ndarray, q_current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`TaskSpec.action_to_targets` (same contract, same results)."""
        center, half, lo, hi, vlo, vhi, dt, shape = self._ap
        try:
            a = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.info.task_id}: action must be numeric with shape {shape}: {exc}") from None
        if a.shape != shape:
            raise ValueError(f"{self.info.task_id}: action must have shape {shape}, got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{self.info.task_id}: action contains non-finite values: {a}")
        a = np.minimum(np.maximum(a, -1.0), 1.0)
        q = np.minimum(np.maximum(center + a * half, lo), hi)
        q = q_current + np.minimum(np.maximum((q - q_current) / dt, vlo), vhi) * dt
        return a, q
