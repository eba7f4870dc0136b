"""The model player: fits the dynamics ensemble to the world's data.

``fit(buffer, aggressive)``: a follower (PAL, BR) best-responds, i.e. fits to convergence
(``model_epochs_aggressive`` epochs, early stopping on a held-out split); a leader (MAL, GDA)
takes a conservative step (``model_epochs_conservative`` epochs, warm start). Every fit takes
between ``model_min_steps`` and ``model_max_steps`` gradient steps (paper: 1e2 .. 1e5).

MAL + agent reward: the objective becomes ``alpha * l(M, D) - (1 - alpha) * l_ref * J_hat(pi, M)/R``,
with ``J_hat`` a differentiable short-horizon reparameterised return of the current policy
through every member (see :func:`mbrl_ros.core.model_rollout.differentiable_return`; a
minibatch of real start states, fixed noise per step), ``R`` the mean absolute per-step
reward in the buffer times that horizon (so ``J_hat/R`` is of order 1 whatever the task's
reward units), and ``l_ref`` the model's loss per output dimension (the mean normalised
squared error over the unmasked outputs, the quantity ``l`` is) on the fit's data, floored at
``AGENT_REWARD_MIN_LOSS``. So the return term is measured in units of the prediction loss per
output dimension: a change of the normalised return by 1 is worth the whole per-dimension loss.
Where ``l_ref`` is read (``agent_reward_scale``):

- ``fitted``: the first half of the fit's steps minimise ``l`` alone, ``l_ref`` is the loss
  after them, the second half minimise the mixed objective. ``l_ref`` is then the loss the model
  reaches on these data.
- ``loss``: before the fit. A fresh model's loss is about 1.5 on hidden-region's first data
  (normalised targets), 30-80x what a fit reaches, so the first fit of a game bought optimism at any price (hidden-region: loss
  0.78-1.25 after it against plain MAL's 0.019-0.051; D'Claw: J(pi, M) +1,700 against a world
  return of -750).
- ``unit``: no ``l_ref`` (order 1 against a loss of 0.02-0.06: swamps it; issue 17).

Whose return (``agent_reward_follower``): ``policy``, the present policy's from buffer states;
``soft``, a soft best response over intent-shifted copies of it from the episodes' starts
(:meth:`ModelPlayer._agent_reward_term`).
"""

from __future__ import annotations

import json
import math
import time
import zlib
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mbrl_ros.core.buffers import EpisodeBuffer
from mbrl_ros.core.config import GameConfig
from mbrl_ros.core.dynamics_ensemble import DynamicsEnsemble, fit_ensemble
from mbrl_ros.core.model_rollout import differentiable_return
from mbrl_ros.core.networks import GaussianMLPPolicy, adam
from mbrl_ros.core.policy_player import resolve_device
from mbrl_ros.core.schedule import ModelObjective, game_spec

MODEL_FORMAT = "mbrl_ros.dynamics_ensemble/1"
LOSS_SUBSAMPLE = 20000  # transitions used to report l(M, D) (a subsample keeps it cheap)
AGENT_REWARD_EVAL_BATCHES = 4  # batches of start states averaged to report the agent-reward objective
AGENT_REWARD_MIN_LOSS = 1e-3  # floor of l_ref: a near-perfect model still feels the return term


class ModelPlayer:
    """Owns the ensemble and its Adam optimiser (kept across fits: warm start)."""

    def __init__(self, task: Any, cfg: GameConfig, device: Optional[str] = None) -> None:
        self.task, self.cfg = task, cfg
        self.device = resolve_device(device or cfg.device)
        self.objective = game_spec(cfg.algo).model_objective
        self.ensemble = self._new_ensemble()
        self.optimizer = self._new_optimizer()
        self.n_fits = 0

    def _new_ensemble(self) -> DynamicsEnsemble:
        c = self.cfg
        return DynamicsEnsemble(
            self.task.model_dim,
            self.task.info.act_dim,
            c.ensemble_size,
            c.model_hidden,
            c.model_activation,
            learn_reward=c.learned_reward,
            clamp_margin=c.model_clamp_margin,
            angle_dims=self.angle_dims(),
            goal_dims=tuple(getattr(self.task, "model_goal_dims", ())),
            goal_share=c.model_goal_share,
        ).to(self.device)

    def angle_dims(self) -> dict[int, int]:
        """The task's model-state angles with their symmetry orders (order 1 for every angle the
        members read when ``model_symmetry`` is off)."""
        dims = dict(getattr(self.task, "model_angle_dims", {}))
        return dims if self.cfg.model_symmetry else {i: min(k, 1) for i, k in dims.items()}

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return adam(self.ensemble.parameters(), lr=self.cfg.model_lr, weight_decay=self.cfg.model_weight_decay)

    # -- data --------------------------------------------------------------------------
    def transitions(self, buffer: EpisodeBuffer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs [N, z+a], targets [N, dz (+1)], states [2N, z]) in model space, on the device."""
        d = buffer.arrays()
        z = np.asarray(self.task.to_model(d["obs"], d.get("aux")), dtype=np.float64)
        z_next = np.asarray(self.task.to_model(d["next_obs"], d.get("next_aux")), dtype=np.float64)
        a = np.clip(d["actions"], -1.0, 1.0)  # the world executed the clipped action

        def as_t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=self.device)

        # the members' target, in float64 on the CPU before the cast (an angle's change wrapped)
        targets = self.ensemble.state_delta(torch.from_numpy(z), torch.from_numpy(z_next)).numpy()
        if self.cfg.learned_reward:
            targets = np.concatenate([targets, d["rewards"][:, None]], axis=1)
        return as_t(np.concatenate([z, a], axis=1)), as_t(targets), as_t(np.concatenate([z, z_next]))

    def holdout_mask(self, buffer: EpisodeBuffer) -> torch.Tensor:
        """Transitions of held-out episodes (a fixed hash of the episode id, so a warm-started
        model never trained on them in an earlier fit)."""
        flags = [zlib.crc32(e.episode_id.encode()) / 2**32 < self.cfg.model_holdout for e in buffer.episodes]
        return torch.as_tensor(np.repeat(flags, [len(e) for e in buffer.episodes]), device=self.device)

    @torch.no_grad()
    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> float:
        """l(M, D): mean normalised squared error of the members on (a subsample of) the data."""
        if inputs.shape[0] > LOSS_SUBSAMPLE:
            idx = torch.linspace(0, inputs.shape[0] - 1, LOSS_SUBSAMPLE, device=inputs.device).long()
            inputs, targets = inputs[idx], targets[idx]
        E = self.ensemble.ensemble_size
        y = self.ensemble.normalized_targets(targets)
        return float(self.ensemble.loss(inputs.expand(E, -1, -1), y.expand(E, -1, -1)).mean())

    # -- the player's move -------------------------------------------------------------
    def fit(self, buffer: EpisodeBuffer, aggressive: bool, policy: Optional[GaussianMLPPolicy] = None) -> dict:
        """Fit the ensemble on the buffer; returns loss (l(M, D) after the fit), steps, timings."""
        if len(buffer) < 2:
            raise ValueError(f"the model needs at least 2 transitions, the buffer holds {len(buffer)}")
        t0 = time.perf_counter()
        c = self.cfg
        inputs, targets, states = self.transitions(buffer)
        if c.model_reinit and self.n_fits > 0:
            self.ensemble.reset_parameters()
            self.optimizer = self._new_optimizer()
        self.ensemble.train()
        self.ensemble.set_normalization(inputs, targets, states)
        n = inputs.shape[0]
        epochs = c.model_epochs_aggressive if aggressive else c.model_epochs_conservative
        steps = int(min(max(math.ceil(epochs * n / c.model_batch_size), c.model_min_steps), c.model_max_steps))
        holdout = self.holdout_mask(buffer) if aggressive and c.model_holdout > 0 else None

        def run(n_steps: int, extra: Optional[Any] = None, alpha: float = 1.0) -> dict:
            return fit_ensemble(
                self.ensemble,
                self.optimizer,
                inputs,
                targets,
                n_steps,
                c.model_batch_size,
                holdout_mask=holdout,
                eval_every=c.model_eval_every,
                patience=c.model_patience,
                min_steps=c.model_min_steps,
                extra_loss=extra,
                alpha=alpha,
                bf16=c.model_bf16,
                recent_window=c.model_recent_window,
                recent_share=c.model_recent_share,
            )

        extra, alpha, l_ref, plain, steps_left = None, 1.0, 1.0, None, steps
        if self.objective is ModelObjective.AGENT_REWARD and policy is not None:
            if c.agent_reward_scale == "fitted":
                # the first half of the step plain: l_ref is then the loss the model reaches on
                # these data, not the error of a model that has not seen them (~1.5 when fresh)
                plain = run(steps // 2)
                steps_left -= plain["steps"]
            if c.agent_reward_scale != "unit":
                l_ref = max(self.loss(inputs, targets), AGENT_REWARD_MIN_LOSS)
            extra, alpha = self._agent_reward_term(buffer, policy, l_ref), c.alpha
        was_grad = [p.requires_grad for p in policy.parameters()] if policy is not None else []
        try:
            if policy is not None:  # the policy is a constant in the model player's objective
                for p in policy.parameters():
                    p.requires_grad_(False)
            result = run(steps_left, extra, alpha)
        finally:
            for p, g in zip(policy.parameters() if policy is not None else [], was_grad):
                p.requires_grad_(g)
        self.ensemble.eval()
        self.n_fits += 1
        if plain is not None:
            result["steps"] += plain["steps"]
        result.update(loss=self.loss(inputs, targets), max_steps=steps, n_data=n, aggressive=bool(aggressive))
        if extra is not None:  # the objective the model player minimised: alpha l - (1 - alpha) J/scale
            result["l_ref"] = l_ref
            with torch.no_grad():
                j_term = float(np.mean([float(extra()) for _ in range(AGENT_REWARD_EVAL_BATCHES)]))
            result["objective"] = alpha * result["loss"] + (1.0 - alpha) * j_term
            result["return_term"] = j_term
        result["fit_s"] = time.perf_counter() - t0
        return result

    def _agent_reward_term(self, buffer: EpisodeBuffer, policy: GaussianMLPPolicy, l_ref: float = 1.0):
        """Closure: the return term of MAL + agent reward on a fresh batch of real start states.

        ``agent_reward_follower`` ``policy``: ``-l_ref * J_hat(pi, M) / R`` from random buffer
        states. ``soft``: ``-l_ref * tau * log mean_i exp(J_hat(pi + b_i, M) / (R tau))`` from the
        episodes' initial states, over copy 0 (``b_0 = 0``, the present policy) and
        ``agent_reward_intents - 1`` copies whose mean action is shifted by a constant intent
        ``b_i`` (uniform in [-1, 1] per action, fresh every batch). Why: the poster's leader is
        paid for the return of the follower's (soft) best response to the model, which puts
        weight on every action, so the finite game's model is paid to be optimistic about
        transitions the present policy never makes. Paid for the present policy's return only,
        the model can be optimistic only along that policy's path, where the data contradict
        it (hidden-region: plain MAL's outcome, docs/experiments.md). The log-mean-exp weighs
        each copy by exp(J/(R tau)): the copies the model values highest, as a best response would.
        """
        c = self.cfg
        d = buffer.arrays()
        soft = c.agent_reward_follower == "soft"
        if soft:
            start_obs, start_aux = buffer.initial_states()
        else:
            start_obs, start_aux = d["obs"], d.get("aux")
        obs = torch.as_tensor(start_obs, dtype=torch.float32, device=self.device)
        aux = None if start_aux is None else torch.as_tensor(start_aux, dtype=torch.float32, device=self.device)
        r_unit = float(np.mean(np.abs(d["rewards"]))) * c.agent_reward_horizon + 1e-6  # R
        k = c.agent_reward_intents if soft else 1
        m = max(1, c.agent_reward_batch // k)  # start states per copy: the batch is shared out
        act_dim = self.task.info.act_dim
        gate_ref = self._data_disagreement(d) if c.agent_reward_gate == "disagreement" else None

        def term() -> torch.Tensor:
            idx = torch.randint(0, obs.shape[0], (m,), device=self.device)
            s0, a0 = obs[idx], None if aux is None else aux[idx]
            if not soft:
                j = differentiable_return(
                    self.ensemble,
                    self.task,
                    policy,
                    s0,
                    c.agent_reward_horizon,
                    c.gamma,
                    start_aux=a0,
                    gate_ref=gate_ref,
                )
                return -j * l_ref / r_unit
            offsets = torch.rand(k, act_dim, device=self.device) * 2.0 - 1.0
            offsets[0] = 0.0
            per_rollout = differentiable_return(
                self.ensemble,
                self.task,
                policy,
                s0.repeat(k, 1),
                c.agent_reward_horizon,
                c.gamma,
                start_aux=None if a0 is None else a0.repeat(k, 1),
                action_offset=offsets.repeat_interleave(m, dim=0),
                reduce=False,
                gate_ref=gate_ref,
            )
            j_copies = per_rollout.reshape(per_rollout.shape[0], k, m).mean(dim=(0, 2)) / r_unit
            tau = c.agent_reward_temperature
            soft_j = tau * (torch.logsumexp(j_copies / tau, dim=0) - math.log(k))
            return -soft_j * l_ref

        return term

    def _data_disagreement(self, d: dict[str, np.ndarray]) -> torch.Tensor:
        """The members' mean disagreement per state dim on (a subsample of) the buffer's
        transitions, as the model is now: the return term's gate reference (``agent_reward_gate``)."""
        z = np.asarray(self.task.to_model(d["obs"], d.get("aux")), dtype=np.float32)
        a = np.clip(d["actions"], -1.0, 1.0).astype(np.float32)
        if z.shape[0] > LOSS_SUBSAMPLE:
            idx = np.linspace(0, z.shape[0] - 1, LOSS_SUBSAMPLE).astype(int)
            z, a = z[idx], a[idx]
        dis = self.ensemble.disagreement(torch.as_tensor(z, device=self.device), torch.as_tensor(a, device=self.device))
        return dis.mean(dim=0).clamp(min=1e-6)

    # -- exchange (safetensors, never pickle) -----------------------------------------------
    def _meta(self) -> dict:
        e = self.ensemble
        return {
            "format": MODEL_FORMAT,
            "task_id": self.task.info.task_id,
            "state_dim": e.state_dim,
            "act_dim": e.act_dim,
            "ensemble_size": e.ensemble_size,
            "hidden": e.hidden,
            "activation": e.activation,
            "learn_reward": e.learn_reward,
            "angle_dims": {str(i): k for i, k in e.angle_dims.items()},
        }

    def to_bytes(self) -> bytes:
        """The ensemble (weights + normalisation statistics) as safetensors bytes."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.ensemble.state_dict().items()}
        return st_save(tensors, metadata={"mbrl_ros": json.dumps(self._meta())})

    def load_bytes(self, blob: bytes) -> None:
        """Load an ensemble produced by :meth:`to_bytes`; raises ValueError on a mismatch."""
        if not isinstance(blob, (bytes, bytearray)) or len(blob) < 8:
            raise ValueError("model blob must be non-empty bytes")
        try:
            header_len = int.from_bytes(blob[:8], "little")
            header = json.loads(bytes(blob[8 : 8 + header_len]))
            meta = json.loads(header.get("__metadata__", {}).get("mbrl_ros", "{}"))
            tensors = st_load(bytes(blob))
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad blob
            raise ValueError(f"not a dynamics-ensemble safetensors blob: {exc}") from None
        expected = self._meta()
        for key in (
            "format",
            "task_id",
            "state_dim",
            "act_dim",
            "ensemble_size",
            "hidden",
            "activation",
            "learn_reward",
            "angle_dims",
        ):
            if meta.get(key, {} if key == "angle_dims" else None) != expected[key]:
                raise ValueError(f"model blob {key}={meta.get(key)!r}, this player expects {expected[key]!r}")
        self.ensemble.load_state_dict({k: v.to(self.device) for k, v in tensors.items()})
