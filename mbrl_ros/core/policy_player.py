"""The policy player: improves pi by model-based NPG in the model player's ensemble.

``improve(ensemble, start_obs, n_steps)`` runs ``n_steps`` of paper Subroutine 1: synthetic
rollouts of the stochastic policy from real start states in every member, task rewards,
GAE advantages with the value MLP (whitened), one normalised NPG step, value refit. A policy
leader (PAL, GDA) takes a few such steps per iteration; a policy follower (MAL, BR) many.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np
import torch

from mbrl_ros.core.config import GameConfig
from mbrl_ros.core.dynamics_ensemble import DynamicsEnsemble
from mbrl_ros.core.model_rollout import rollout_policy
from mbrl_ros.core.networks import GaussianMLPPolicy, ValueMLP
from mbrl_ros.core.npg import fit_value, gae, npg_update


def resolve_device(device: Optional[str]) -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(device)


class PolicyPlayer:
    """Owns the Gaussian policy, the value MLP and its optimiser."""

    def __init__(self, task: Any, cfg: GameConfig, device: Optional[str] = None) -> None:
        self.task, self.cfg = task, cfg
        self.device = resolve_device(device or cfg.device)
        info = task.info
        self.policy = GaussianMLPPolicy(
            info.obs_dim, info.act_dim, cfg.policy_hidden, cfg.policy_init_log_std, cfg.policy_min_log_std
        ).to(self.device)
        self.value = ValueMLP(info.obs_dim, cfg.value_hidden).to(self.device)
        self.value_optimizer = torch.optim.Adam(self.value.parameters(), lr=cfg.value_lr)
        self.horizon = cfg.synthetic_horizon(info.horizon)
        self.n_updates = 0  # NPG steps taken so far

    # -- data --------------------------------------------------------------------------
    def set_obs_normalization(self, obs: np.ndarray) -> None:
        """Fixed observation statistics from real data (the policy's function is preserved)."""
        obs = np.asarray(obs, dtype=np.float64)
        if obs.ndim != 2 or obs.shape[1] != self.task.info.obs_dim or obs.shape[0] < 1:
            raise ValueError(f"obs must be [N, {self.task.info.obs_dim}], got {obs.shape}")
        mean, std = obs.mean(0), obs.std(0)
        self.policy.set_obs_normalization(mean, std)
        self.value.set_obs_normalization(mean, std)

    def _start_states(self, start_obs: np.ndarray, buffer_obs: Optional[np.ndarray]) -> torch.Tensor:
        """npg_trajectories start states: real initial states, a fraction from intermediate ones."""
        n = self.cfg.npg_trajectories
        starts = torch.as_tensor(np.asarray(start_obs), dtype=torch.float32, device=self.device)
        idx = torch.randint(0, starts.shape[0], (n,), device=self.device)
        out = starts[idx]
        n_mid = int(round(self.cfg.start_state_mix * n)) if buffer_obs is not None else 0
        if n_mid > 0:
            mids = torch.as_tensor(np.asarray(buffer_obs), dtype=torch.float32, device=self.device)
            out[:n_mid] = mids[torch.randint(0, mids.shape[0], (n_mid,), device=self.device)]
        return out

    # -- the player's move -------------------------------------------------------------
    def improve(
        self,
        ensemble: DynamicsEnsemble,
        start_obs: np.ndarray,
        n_steps: int,
        buffer_obs: Optional[np.ndarray] = None,
    ) -> dict:
        """``n_steps`` NPG steps in ``ensemble``; returns J_model (after the last step), KL, timings.

        ``start_obs`` [n, obs_dim]: real initial observations. ``buffer_obs`` (optional): all
        real observations, used for the policy's normalisation statistics and for
        ``start_state_mix`` intermediate start states.
        """
        start_obs = np.asarray(start_obs, dtype=np.float64)
        if start_obs.ndim != 2 or start_obs.shape[1] != self.task.info.obs_dim or len(start_obs) == 0:
            raise ValueError(f"start_obs must be [n>0, {self.task.info.obs_dim}], got {start_obs.shape}")
        if n_steps < 0:
            raise ValueError(f"n_steps must be >= 0, got {n_steps}")
        if not np.all(np.isfinite(start_obs)):
            raise ValueError("start_obs contain non-finite values")
        t0 = time.perf_counter()
        self.set_obs_normalization(buffer_obs if buffer_obs is not None else start_obs)
        ensemble.eval()
        H, task_H = self.horizon, self.task.info.horizon
        t_frac = torch.arange(H + 1, device=self.device, dtype=torch.float32) / task_H
        kls, j_before, value_losses = [], [], []
        for _ in range(n_steps):
            starts = self._start_states(start_obs, buffer_obs)
            ro = rollout_policy(ensemble, self.task, self.policy, starts, H)
            j_before.append(float(ro.returns.mean()))
            M = ro.rewards.shape[0]
            tf = t_frac.expand(M, -1)
            with torch.no_grad():
                values = self.value(ro.obs, tf)
                if H >= task_H:
                    values[:, H] = 0.0  # the episode ends at the horizon: nothing to bootstrap
            adv, ret = gae(ro.rewards, values, ro.terminal, self.cfg.gamma, self.cfg.gae_lambda)
            mask = ro.alive > 0
            obs, act, a = ro.obs[:, :H][mask], ro.actions[mask], adv[mask]
            a = (a - a.mean()) / (a.std() + 1e-8)
            step = npg_update(
                self.policy, obs, act, a, self.cfg.npg_step_size, self.cfg.cg_iters, self.cfg.cg_damping,
                self.cfg.fvp_fraction,
            )
            kls.append(step["kl"])
            value_losses.append(
                fit_value(self.value, self.value_optimizer, obs, tf[:, :H][mask], ret[mask],
                          self.cfg.value_epochs, self.cfg.value_batch_size)
            )
            self.n_updates += 1
        # the leader's objective J(pi, M) of the improved policy (fresh rollouts)
        ro = rollout_policy(ensemble, self.task, self.policy, self._start_states(start_obs, buffer_obs), H)
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

    # -- acting and exporting ------------------------------------------------------------
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.policy.act(obs, deterministic)

    def to_onnx_bytes(self, iteration: int, version: int) -> bytes:
        from mbrl_ros.core.onnx_export import export_policy_onnx

        return export_policy_onnx(self.policy, self.task.info, iteration, version)

    def parameters_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.policy.parameters())
