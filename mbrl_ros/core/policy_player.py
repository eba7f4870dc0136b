"""The policy player: improves pi by model-based NPG in the model player's ensemble.

``improve(ensemble, start_obs, n_steps)`` runs ``n_steps`` of paper Subroutine 1: synthetic
rollouts of the stochastic policy from real start states in every member, task rewards,
GAE advantages with the value MLP (whitened), one normalised NPG step, value refit. A policy
leader (PAL, GDA) takes a few such steps per iteration; a policy follower (MAL, BR) many.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch

from mbrl_ros.core.config import GameConfig
from mbrl_ros.core.dynamics_ensemble import DynamicsEnsemble
from mbrl_ros.core.model_rollout import SyntheticRollouts, rollout_policy
from mbrl_ros.core.networks import GaussianMLPPolicy, ValueMLP, adam
from mbrl_ros.core.npg import fit_value, gae, npg_update


def resolve_device(device: Optional[str]) -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


@dataclass
class StartStates:
    """Real states that model rollouts start from, and the data the networks normalise on.

    ``initial_obs``/``initial_aux``: the first step of real episodes (every episode the learner
    was ever given, as the paper's code keeps them); ``obs``/``aux``: the real observations now
    in the buffer (normalisation statistics, and intermediate start states for
    ``start_state_mix``). ``*_aux`` are the task's model-only measurements (None without any).
    """

    initial_obs: np.ndarray
    initial_aux: Optional[np.ndarray] = None
    obs: Optional[np.ndarray] = None
    aux: Optional[np.ndarray] = None

    @classmethod
    def from_buffer(cls, buffer: Any) -> "StartStates":
        """Every initial state the buffer has seen, and its current observations."""
        initial_obs, initial_aux = buffer.initial_states()
        d = buffer.arrays()
        return cls(initial_obs, initial_aux, d["obs"], d.get("aux"))

    def check(self, task: Any) -> None:
        """ValueError on shapes that do not fit ``task`` or non-finite values."""
        obs_dim, aux_dim = task.info.obs_dim, getattr(task, "aux_dim", 0)
        pairs = [("initial_obs", self.initial_obs, obs_dim), ("obs", self.obs, obs_dim)]
        if aux_dim:
            if self.initial_aux is None or (self.obs is not None and self.aux is None):
                raise ValueError(f"{task.info.task_id} needs the model-only state (aux) of every start state")
            pairs += [("initial_aux", self.initial_aux, aux_dim), ("aux", self.aux, aux_dim)]
        for name, x, dim in pairs:
            if x is None:
                continue
            x = np.asarray(x)
            if x.ndim != 2 or x.shape[1] != dim or len(x) == 0:
                raise ValueError(f"{name} must be [n>0, {dim}], got {x.shape}")
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{name} contain non-finite values")
        if aux_dim and self.initial_aux is not None and len(self.initial_aux) != len(self.initial_obs):
            raise ValueError("initial_obs and initial_aux differ in length")
        if aux_dim and self.obs is not None and self.aux is not None and len(self.aux) != len(self.obs):
            raise ValueError("obs and aux differ in length")


def policy_harmonics(task: Any, cfg: GameConfig) -> tuple[tuple[int, int, int], ...]:
    """The task's symmetric angles the policy and value networks read mod their period
    (``task.policy_harmonics`` when ``cfg.policy_symmetry``, else none)."""
    return tuple(getattr(task, "policy_harmonics", ())) if cfg.policy_symmetry else ()


def new_policy(task: Any, cfg: GameConfig) -> GaussianMLPPolicy:
    """The policy network the policy player builds for ``task`` and ``cfg`` (on the CPU)."""
    info = task.info
    mirror = getattr(task, "policy_mirror", None) if cfg.policy_mirror else None
    if mirror is not None and getattr(task, "mirror_symmetric_start", False):
        raise ValueError(
            f"policy_mirror: {info.task_id} starts in its own mirror image, where a mirrored policy "
            "must act symmetrically and cannot pick a turning direction; use it on a task with "
            "random starts (e.g. dclaw-turn-random)"
        )
    return GaussianMLPPolicy(
        info.obs_dim,
        info.act_dim,
        cfg.policy_hidden,
        cfg.policy_init_log_std,
        cfg.policy_min_log_std,
        cfg.policy_max_log_std,
        angle_slots=getattr(task, "angle_slots", ()),
        harmonics=policy_harmonics(task, cfg),
        mirror=mirror,
    )


class PolicyPlayer:
    """Owns the Gaussian policy, the value MLP and its optimiser."""

    def __init__(self, task: Any, cfg: GameConfig, device: Optional[str] = None) -> None:
        self.task, self.cfg = task, cfg
        self.device = resolve_device(device or cfg.device)
        info = task.info
        self.policy = new_policy(task, cfg).to(self.device)
        self.value = ValueMLP(
            info.obs_dim, cfg.value_hidden, getattr(task, "angle_slots", ()), policy_harmonics(task, cfg)
        ).to(self.device)
        self.value_optimizer = adam(self.value.parameters(), lr=cfg.value_lr)
        self.horizon = cfg.synthetic_horizon(info.horizon)
        self.n_updates = 0  # NPG steps taken so far

    # -- data --------------------------------------------------------------------------
    def set_obs_normalization(self, obs: np.ndarray) -> None:
        """Feature statistics from real data; neither the policy's nor the value's function changes."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[1] != self.task.info.obs_dim or obs.shape[0] < 1:
            raise ValueError(f"obs must be [N, {self.task.info.obs_dim}], got {obs.shape}")
        mean, std = self.policy.feature_stats(obs)
        self.policy.set_obs_normalization(mean, std)
        self.value.set_obs_normalization(mean, std)

    def _start_states(self, starts: StartStates) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """npg_trajectories start states: real initial states, a fraction from intermediate ones."""
        n = self.cfg.npg_trajectories

        def as_t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x), dtype=torch.float32, device=self.device)

        idx = torch.randint(0, len(starts.initial_obs), (n,), device=self.device)
        obs = as_t(starts.initial_obs)[idx]
        aux = as_t(starts.initial_aux)[idx] if starts.initial_aux is not None else None
        n_mid = int(round(self.cfg.start_state_mix * n)) if starts.obs is not None else 0
        if n_mid > 0 and starts.obs is not None:
            mid = torch.randint(0, len(starts.obs), (n_mid,), device=self.device)
            obs[:n_mid] = as_t(starts.obs)[mid]
            if aux is not None and starts.aux is not None:
                aux[:n_mid] = as_t(starts.aux)[mid]
        return obs, aux

    # -- the player's move -------------------------------------------------------------
    def advantages(self, ro: SyntheticRollouts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """GAE of synthetic rollouts with the value baseline: (whitened advantages of the live
        steps, returns [M, H], live-step mask [M, H], time features [M, H + 1])."""
        M, H = ro.rewards.shape
        task_H = self.task.info.horizon
        tf = (torch.arange(H + 1, device=self.device, dtype=torch.float32) / task_H).expand(M, -1)
        with torch.no_grad():
            values = self.value(ro.obs, tf)
            if H >= task_H:
                values[:, H] = 0.0  # the episode ends at the horizon: nothing to bootstrap
        adv, ret = gae(ro.rewards, values, ro.terminal, self.cfg.gamma, self.cfg.gae_lambda)
        mask = ro.alive > 0
        a = adv[mask]
        a = (a - a.mean()) / (a.std() + 1e-8)
        if self.cfg.optimism_coef != 0 and ro.disagreement is not None:
            a = a + self.cfg.optimism_coef * self._optimism(ro, mask)
        return a, ret, mask, tf

    def _optimism(self, ro: SyntheticRollouts, mask: torch.Tensor) -> torch.Tensor:
        """Whitened advantage of the ensemble's disagreement (optimism in the face of the model's
        uncertainty): its discounted sum to go, less its mean over the rollouts at the same step.
        Actions that lead where the members disagree gain; the real data collected there then
        teaches the model what it did not know (e.g. a regrasp the policy has never tried). With a
        negative ``optimism_coef`` the same term is a penalty (pessimism): a policy that
        best-responds to the model for many steps is kept from where the members part."""
        assert ro.disagreement is not None
        u = ro.disagreement * ro.alive
        togo, _ = gae(u, torch.zeros(u.shape[0], u.shape[1] + 1, device=u.device), ro.terminal, self.cfg.gamma, 1.0)
        b = (togo - togo.mean(0, keepdim=True))[mask]
        return (b - b.mean()) / (b.std() + 1e-8)

    def improve(
        self,
        ensemble: DynamicsEnsemble,
        starts: Union[StartStates, np.ndarray],
        n_steps: int,
        buffer_obs: Optional[np.ndarray] = None,
    ) -> dict:
        """``n_steps`` NPG steps in ``ensemble``; returns J_model (after the last step), KL, timings.

        ``starts``: the real start states (:class:`StartStates`; a bare ``[n, obs_dim]`` array
        of initial observations, with ``buffer_obs`` the real observations, for tasks without
        model-only state).
        """
        if not isinstance(starts, StartStates):
            starts = StartStates(np.asarray(starts, dtype=np.float64), None, buffer_obs)
        starts.check(self.task)
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        t0 = time.perf_counter()
        self.set_obs_normalization(starts.obs if starts.obs is not None else starts.initial_obs)
        ensemble.eval()
        H = self.horizon
        kls: list[float] = []
        j_before: list[float] = []
        value_losses: list[float] = []
        for _ in range(n_steps):
            start_obs, start_aux = self._start_states(starts)
            ro = rollout_policy(
                ensemble,
                self.task,
                self.policy,
                start_obs,
                H,
                start_aux=start_aux,
                with_disagreement=self.cfg.optimism_coef != 0,
            )
            j_before.append(float(ro.returns.mean()))
            a, ret, mask, tf = self.advantages(ro)
            obs, act = ro.obs[:, :H][mask], ro.actions[mask]
            step = npg_update(
                self.policy,
                obs,
                act,
                a,
                self.cfg.npg_step_size,
                self.cfg.cg_iters,
                self.cfg.cg_damping,
                self.cfg.fvp_fraction,
                entropy_coef=self.cfg.entropy_coef,
            )
            kls.append(step["kl"])
            value_losses.append(
                fit_value(
                    self.value,
                    self.value_optimizer,
                    obs,
                    tf[:, :H][mask],
                    ret[mask],
                    self.cfg.value_epochs,
                    self.cfg.value_batch_size,
                )
            )
            self.n_updates += 1
        # the leader's objective J(pi, M) of the improved policy (fresh rollouts)
        start_obs, start_aux = self._start_states(starts)
        ro = rollout_policy(ensemble, self.task, self.policy, start_obs, H, start_aux=start_aux)
        success = self.task.success(ro.obs[:, -1])
        return {
            "J_model": float(ro.returns.mean()),
            "J_model_before": j_before[0] if j_before else float(ro.returns.mean()),
            "model_success": float(torch.as_tensor(success, dtype=torch.float32).mean()),
            "kl": float(np.mean(kls)) if kls else 0.0,
            "kl_max": float(np.max(kls)) if kls else 0.0,
            "value_loss": float(np.mean(value_losses)) if value_losses else 0.0,
            "npg_steps": n_steps,
            "policy_std": float(torch.exp(self.policy.log_std.detach()).mean()),
            "npg_s": time.perf_counter() - t0,
        }

    def worst_member_return(
        self, ensemble: DynamicsEnsemble, start_obs: torch.Tensor, start_aux: Optional[torch.Tensor]
    ) -> float:
        """J(pi, M) of the stochastic policy in the member that values it lowest (same starts in each)."""
        ro = rollout_policy(ensemble, self.task, self.policy, start_obs, self.horizon, start_aux=start_aux)
        return float(ro.returns.reshape(ensemble.ensemble_size, -1).mean(1).min())

    def best_response(
        self,
        ensemble: DynamicsEnsemble,
        starts: Union[StartStates, np.ndarray],
        n_steps: int,
        restarts: int,
        buffer_obs: Optional[np.ndarray] = None,
    ) -> dict:
        """A follower's move: ``n_steps`` NPG steps from the present policy and from ``restarts``
        fresh policies; the player keeps the one whose worst member values it highest.

        Why: NPG's best response is local. On hidden-region a policy on the decoy stays there even
        once the model shows the route (docs/experiments.md), while the poster's argument assumes
        the follower best-responds globally. A fresh policy starts from a random constant intent
        (uniform in [-1, 1] per action, :meth:`GaussianMLPPolicy.set_intent`), so restarts land in
        different optima; scoring by the lowest member keeps a candidate from winning on a hole
        that only some members share. ``restarts`` 0 is :meth:`improve`. Draws come from the torch
        generator (the policy player's stream).
        """
        if restarts < 0:
            raise ValueError(f"restarts must be >= 0, got {restarts}")
        t0 = time.perf_counter()
        r = self.improve(ensemble, starts, n_steps, buffer_obs)
        if restarts == 0:
            return r
        if not isinstance(starts, StartStates):
            starts = StartStates(np.asarray(starts, dtype=np.float64), None, buffer_obs)
        start_obs, start_aux = self._start_states(starts)  # one set of starts scores every candidate
        scores = [self.worst_member_return(ensemble, start_obs, start_aux)]
        chosen, best = -1, None  # -1: the present policy
        for i in range(restarts):
            fresh = PolicyPlayer(self.task, self.cfg, str(self.device))
            fresh.policy.set_intent(torch.rand(self.task.info.act_dim) * 2.0 - 1.0)
            fr = fresh.improve(ensemble, starts, n_steps)
            scores.append(fresh.worst_member_return(ensemble, start_obs, start_aux))
            if scores[-1] > max(scores[:-1]):
                chosen, best, r = i, fresh, fr
        if best is not None:
            self.policy.load_state_dict(best.policy.state_dict())
            self.value, self.value_optimizer = best.value, best.value_optimizer
        self.n_updates += restarts * n_steps
        return {
            **r,
            "follower_restart": chosen,
            "follower_scores": [float(x) for x in scores],
            "npg_s": time.perf_counter() - t0,
        }

    # -- acting and exporting ------------------------------------------------------------
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.policy.act(obs, deterministic)

    def to_onnx_bytes(self, iteration: int, version: int) -> bytes:
        from mbrl_ros.core.onnx_export import export_policy_onnx

        return export_policy_onnx(self.policy, self.task.info, iteration, version)

    def parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.policy.parameters())
