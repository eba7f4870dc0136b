"""Simulated experience: roll a policy out in every member of the dynamics ensemble.

The same start states are rolled out in every member (paper Subroutine 1, step 2), batched as
one ``[E, n, .]`` computation. The model works in the task's wrap-free model space: each step
maps the observation (and the model-only measurements ``aux``, e.g. D'Claw's joint velocities)
to ``z = task.to_model(obs, aux)``, predicts ``z'``, maps back with ``task.from_model`` /
``task.aux_from_model`` and overwrites the parts of the observation that are known exactly
(``task.fix_known``, e.g. the last action). Rewards (``task.model_reward``, from the predicted
aux where the task has one) and termination come from the task's own batched torch functions
(or from the ensemble's learned reward head).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from mbrl_ros.core.dynamics_ensemble import DynamicsEnsemble
from mbrl_ros.core.networks import GaussianMLPPolicy


@dataclass
class SyntheticRollouts:
    """``M = E * n`` trajectories of length ``H`` (members stacked along the first axis)."""

    obs: torch.Tensor  # [M, H+1, obs_dim]
    actions: torch.Tensor  # [M, H, act_dim] as sampled by the policy (unclipped)
    rewards: torch.Tensor  # [M, H] (0 after termination)
    alive: torch.Tensor  # [M, H] 1.0 where the step happened (not after a termination)
    terminal: torch.Tensor  # [M, H] 1.0 where the task's termination rule fired at this step

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of each trajectory [M]."""
        return (self.rewards * self.alive).sum(-1)


def model_step(
    ensemble: DynamicsEnsemble, task: Any, obs: torch.Tensor, action: torch.Tensor, aux: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """One step of every member: obs [E, n, obs_dim] (aux [E, n, aux_dim] or None), world action
    in [-1, 1] -> (next_obs, next_aux, reward)."""
    z_next, reward = ensemble.predict(task.to_model(obs, aux), action)
    next_obs = task.fix_known(obs, action, task.from_model(z_next))
    next_aux = task.aux_from_model(z_next)
    if reward is None:
        reward = task.model_reward(obs, action, next_obs, next_aux)
    return next_obs, next_aux, reward


@torch.no_grad()
def rollout_policy(
    ensemble: DynamicsEnsemble,
    task: Any,
    policy: GaussianMLPPolicy,
    start_obs: torch.Tensor,
    horizon: int,
    deterministic: bool = False,
    start_aux: Optional[torch.Tensor] = None,
) -> SyntheticRollouts:
    """Roll ``policy`` out from ``start_obs`` [n, obs_dim] (with ``start_aux`` [n, aux_dim] for a
    task with model-only state) in every member for ``horizon`` steps."""
    if start_obs.ndim != 2 or start_obs.shape[1] != task.info.obs_dim:
        raise ValueError(f"start_obs must be [n, {task.info.obs_dim}], got {tuple(start_obs.shape)}")
    E, n = ensemble.ensemble_size, start_obs.shape[0]
    aux_dim = getattr(task, "aux_dim", 0)
    if aux_dim and (start_aux is None or tuple(start_aux.shape) != (n, aux_dim)):
        raise ValueError(
            f"start_aux must be [{n}, {aux_dim}] for {task.info.task_id}, got "
            f"{None if start_aux is None else tuple(start_aux.shape)}"
        )
    obs = start_obs.unsqueeze(0).expand(E, n, -1).contiguous()
    aux = start_aux.unsqueeze(0).expand(E, n, -1).contiguous() if aux_dim and start_aux is not None else None
    alive = torch.ones(E, n, device=obs.device)
    all_obs, all_act, all_rew, all_alive, all_term = [obs], [], [], [], []
    for _ in range(horizon):
        action = policy(obs) if deterministic else policy.sample(obs)
        next_obs, aux, reward = model_step(ensemble, task, obs, torch.clamp(action, -1.0, 1.0), aux)
        all_act.append(action)
        all_rew.append(reward * alive)
        all_alive.append(alive)
        done = torch.as_tensor(task.done(next_obs), device=obs.device).to(alive.dtype)
        all_term.append(done * alive)
        alive = alive * (1.0 - done)
        obs = next_obs
        all_obs.append(obs)
    M = E * n
    return SyntheticRollouts(
        obs=torch.stack(all_obs, dim=2).reshape(M, horizon + 1, -1),
        actions=torch.stack(all_act, dim=2).reshape(M, horizon, -1),
        rewards=torch.stack(all_rew, dim=2).reshape(M, horizon),
        alive=torch.stack(all_alive, dim=2).reshape(M, horizon),
        terminal=torch.stack(all_term, dim=2).reshape(M, horizon),
    )


class _FiniteGrad(torch.autograd.Function):
    """Identity whose backward replaces NaN/inf gradients by 0.

    Task rewards are written for evaluation, not differentiation: a Euclidean norm of an
    all-zero vector (e.g. D'Claw's joint-velocity cost when no joint is fast) has a NaN
    gradient, which would poison every model weight. Guarding the reward's inputs keeps the
    reward path's gradient finite (0 where it is undefined) without touching other paths.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


def differentiable_return(
    ensemble: DynamicsEnsemble,
    task: Any,
    policy: GaussianMLPPolicy,
    start_obs: torch.Tensor,
    horizon: int,
    gamma: float,
    start_aux: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Reparameterised estimate of J(pi, M) whose gradient flows into the model's weights.

    a_t = mu(s_t) + sigma * eps_t (eps fixed noise, policy weights treated as constants by the
    caller), s_{t+1} from each member, sum of discounted task rewards over a short horizon,
    averaged over members and start states. Returns a scalar tensor.
    """
    E, n = ensemble.ensemble_size, start_obs.shape[0]
    obs = start_obs.unsqueeze(0).expand(E, n, -1)
    aux = start_aux.unsqueeze(0).expand(E, n, -1) if start_aux is not None else None
    alive = torch.ones(E, n, device=obs.device)
    total = torch.zeros(E, n, device=obs.device)
    guard = _FiniteGrad.apply
    for t in range(horizon):
        mean = policy(obs)
        action = torch.clamp(mean + torch.exp(policy.log_std) * torch.randn_like(mean), -1.0, 1.0)
        z_next, reward = ensemble.predict(task.to_model(obs, aux), action)
        next_obs = task.fix_known(obs, action, task.from_model(z_next))
        aux = task.aux_from_model(z_next)
        if reward is None:
            next_aux = guard(aux) if aux is not None else None
            reward = task.model_reward(guard(obs), guard(action), guard(next_obs), next_aux)
        total = total + (gamma**t) * alive * reward
        alive = alive * (~torch.as_tensor(task.done(next_obs), device=obs.device)).to(alive.dtype)
        obs = next_obs
    return total.mean()
