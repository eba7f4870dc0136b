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
    disagreement: Optional[torch.Tensor] = None  # [M, H] the members' disagreement (with_disagreement)

    @property
    def returns(self) -> torch.Tensor:
        """Undiscounted return of each trajectory [M]."""
        return (self.rewards * self.alive).sum(-1)


def model_step(
    ensemble: DynamicsEnsemble, task: Any, obs: torch.Tensor, action: torch.Tensor, aux: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
    """One step of every member: obs [E, n, obs_dim] (aux [E, n, aux_dim] or None), world action
    in [-1, 1] -> (next_obs, next_aux, reward)."""
    next_obs, next_aux, reward, _z, _z_next = _model_step_z(ensemble, task, obs, action, aux)
    return next_obs, next_aux, reward


def _model_step_z(
    ensemble: DynamicsEnsemble, task: Any, obs: torch.Tensor, action: torch.Tensor, aux: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`model_step`, also returning the model states before and as predicted (z, z')."""
    z = task.to_model(obs, aux)
    z_next, reward = ensemble.predict(z, action)
    next_obs = task.fix_known(obs, action, task.from_model(z_next))
    next_aux = task.aux_from_model(z_next)
    if reward is None:
        reward = task.model_reward(obs, action, next_obs, next_aux)
    return next_obs, next_aux, reward, z, z_next


@torch.no_grad()
def rollout_policy(
    ensemble: DynamicsEnsemble,
    task: Any,
    policy: GaussianMLPPolicy,
    start_obs: torch.Tensor,
    horizon: int,
    deterministic: bool = False,
    start_aux: Optional[torch.Tensor] = None,
    with_disagreement: bool = False,
) -> SyntheticRollouts:
    """Roll ``policy`` out from ``start_obs`` [n, obs_dim] (with ``start_aux`` [n, aux_dim] for a
    task with model-only state) in every member for ``horizon`` steps.

    ``with_disagreement``: every member's trajectory from a start state draws the *same* action
    noise (common random numbers), so the members' trajectories part only where the members
    disagree; ``disagreement[., t]`` is then the spread over members of the predicted change of
    the model state at step t, in the fit's normalised output units (mean over the predicted
    dimensions of the members' standard deviation), the same for every member of a start state:
    the ensemble's epistemic uncertainty along the rollout, as optimism uses it.
    """
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
    all_dis: list[torch.Tensor] = []
    for _ in range(horizon):
        if deterministic:
            action = policy(obs)
        elif with_disagreement:  # common random numbers across members
            mean = policy(obs)
            action = mean + torch.exp(policy.log_std) * torch.randn_like(mean[0]).unsqueeze(0)
        else:
            action = policy.sample(obs)
        next_obs, aux, reward, z, z_next = _model_step_z(ensemble, task, obs, torch.clamp(action, -1.0, 1.0), aux)
        if with_disagreement:
            all_dis.append(_disagreement(ensemble, z, z_next))
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
        disagreement=torch.stack(all_dis, dim=2).reshape(M, horizon) if all_dis else None,
    )


def _disagreement(ensemble: DynamicsEnsemble, z: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
    """[E, n]: std over members of the normalised predicted change, mean over predicted dims."""
    d = ensemble.state_dim
    delta = ensemble.state_delta(z, z_next) / ensemble.out_scale[:d]
    mask = ensemble.out_mask[:d]
    spread = delta.std(dim=0, correction=0) * mask  # [n, d] (0 for a single member)
    u = spread.sum(-1) / mask.sum().clamp(min=1.0)
    return u.unsqueeze(0).expand(z.shape[0], -1)


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
    action_offset: Optional[torch.Tensor] = None,
    reduce: bool = True,
    gate_ref: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Reparameterised estimate of J(pi, M) whose gradient flows into the model's weights.

    a_t = mu(s_t) + offset + sigma * eps_t (eps fixed noise, policy weights treated as constants
    by the caller; ``action_offset`` (n, act_dim), one constant shift per rollout, none by
    default), s_{t+1} from each member, sum of discounted task rewards over a short horizon.
    Returns the mean over members and start states (a scalar), or with ``reduce=False`` each
    rollout's return, shape (members, n). ``gate_ref`` (state_dim,): the members' typical
    disagreement on the data (:meth:`DynamicsEnsemble.disagreement`); each predicted change then
    passes its gradient only in proportion ``clamp(d / gate_ref - 1, 0, 1)`` of its own
    disagreement d: none where the members agree as they do on the data, all at twice that.
    """
    E, n = ensemble.ensemble_size, start_obs.shape[0]
    obs = start_obs.unsqueeze(0).expand(E, n, -1)
    aux = start_aux.unsqueeze(0).expand(E, n, -1) if start_aux is not None else None
    alive = torch.ones(E, n, device=obs.device)
    total = torch.zeros(E, n, device=obs.device)
    guard = _FiniteGrad.apply
    for t in range(horizon):
        mean = policy(obs)
        if action_offset is not None:
            mean = mean + action_offset
        action = torch.clamp(mean + torch.exp(policy.log_std) * torch.randn_like(mean), -1.0, 1.0)
        z = task.to_model(obs, aux)
        z_next, reward = ensemble.predict(z, action)
        if gate_ref is not None:
            w = torch.clamp(ensemble.disagreement(z.detach(), action.detach()) / gate_ref - 1.0, 0.0, 1.0)
            z_next = z_next.detach() + w * (z_next - z_next.detach())
        next_obs = task.fix_known(obs, action, task.from_model(z_next))
        aux = task.aux_from_model(z_next)
        if reward is None:
            next_aux = guard(aux) if aux is not None else None
            reward = task.model_reward(guard(obs), guard(action), guard(next_obs), next_aux)
        total = total + (gamma**t) * alive * reward
        alive = alive * (~torch.as_tensor(task.done(next_obs), device=obs.device)).to(alive.dtype)
        obs = next_obs
    return total.mean() if reduce else total
