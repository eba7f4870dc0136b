"""Contextual followers for the finite games (Gerstgrasser & Parkes, "Oracles & Followers", ICML 2023).

Instead of recomputing the follower's best response for every leader (the inner loop), the
follower is a network that sees the leader only through its answers to a fixed set of queries,
the leader description omega, and outputs its best response to that leader:

- MAL (model leader): :class:`ContextualPolicyFollower`. Queries are (s, a) pairs; the answers
  are the model's predicted next-state distributions M(.|s, a); the output is a policy
  pi[t, s, a] (softmax of the network's logits).

(PAL's follower, the model, is not contextualised here: on these worlds its exact response
M*(pi) is the true model wherever a softmax policy goes, a constant a network only blurs.)

Each follower is pretrained once on randomly drawn leaders against the exact best response
(DP or closed form), then frozen; the leader is then trained by gradient steps *through* the
frozen follower (autograd), i.e. on the Stackelberg objective with the follower's reaction
differentiated, which the exact best responses (piecewise constant) do not allow.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from mbrl_ros.core.finite_mdp import FiniteMDP
from mbrl_ros.core.schedule import ModelObjective, Player


def _mlp(n_in: int, n_out: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, n_out)
    )


# -- exact quantities in batched numpy / torch ------------------------------------------------
def batched_greedy_responses(mdp: FiniteMDP, models: np.ndarray) -> np.ndarray:
    """Exact DP best response (one-hot, ties to the lowest action) for each model in [n, S, A, S]."""
    n = models.shape[0]
    H, S, A = mdp.policy_shape
    r = np.einsum("nijk,ijk->nij", models, mdp.R)
    r[:, mdp.terminal_mask] = 0.0
    V = np.zeros((n, S))
    pi = np.zeros((n, H, S, A))
    for t in range(H - 1, -1, -1):
        Q = r + mdp.gamma * np.einsum("nijk,nk->nij", models, V)
        Q[:, mdp.terminal_mask] = 0.0
        idx = Q.argmax(-1)
        np.put_along_axis(pi[:, t], idx[..., None], 1.0, axis=-1)
        V = Q.max(-1)
    return pi


def torch_occupancy(mdp: FiniteMDP, pi: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Differentiable occupancy x[t, s, a] (see :meth:`FiniteMDP.occupancy`)."""
    live = torch.as_tensor(~mdp.terminal_mask, dtype=M.dtype)
    p = torch.as_tensor(mdp.start, dtype=M.dtype) * live
    xs = []
    for t in range(mdp.horizon):
        x = p[:, None] * pi[t]
        xs.append(x)
        p = torch.einsum("ij,ijk->k", x, M) * live
    return torch.stack(xs)


def torch_return(mdp: FiniteMDP, pi: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Differentiable J(pi, M) (via the occupancy in M; undiscounted sum for gamma = 1)."""
    R = torch.as_tensor(mdp.R, dtype=M.dtype)
    r = (M * R).sum(-1) * torch.as_tensor(~mdp.terminal_mask, dtype=M.dtype)[:, None]
    x = torch_occupancy(mdp, pi, M)
    disc = torch.as_tensor(mdp.gamma ** np.arange(mdp.horizon), dtype=M.dtype)
    return (disc[:, None, None] * x * r).sum()


def random_models(
    mdp: FiniteMDP, n: int, rng: np.random.Generator, prior: np.ndarray, dirichlet_rows: bool = False
) -> np.ndarray:
    """Random leaders for the model player: each learned row is the truth, the prior or a random
    blend of the two (the family a MAL leader moves through: accurate, hiding and in-between
    models); ``dirichlet_rows`` adds arbitrary Dirichlet(0.3) rows as a fourth kind."""
    S, A = mdp.n_states, mdp.n_actions
    out = np.repeat(prior[None], n, axis=0).copy()
    live = np.flatnonzero(~mdp.terminal_mask)
    kind = rng.integers(0, 3 if not dirichlet_rows else 4, size=(n, S, A))
    lam = rng.random((n, S, A, 1))
    dirichlet = rng.dirichlet(np.full(S, 0.3), size=(n, S, A))
    blend = lam * mdp.P[None] + (1 - lam) * prior[None]
    choice = np.where(
        (kind == 0)[..., None],
        mdp.P[None],
        np.where((kind == 1)[..., None], prior[None], np.where((kind == 2)[..., None], blend, dirichlet)),
    )
    out[:, live] = choice[:, live]
    return out


# -- the followers --------------------------------------------------------------------------
class ContextualPolicyFollower:
    """MAL's policy follower conditioned on the model's answers at fixed (s, a) queries."""

    def __init__(
        self, mdp: FiniteMDP, queries: Optional[Sequence[tuple[int, int]]] = None, hidden: int = 128, seed: int = 0
    ) -> None:
        self.mdp = mdp
        live = np.flatnonzero(~mdp.terminal_mask)
        self.queries = list(queries) if queries is not None else [(s, a) for s in live for a in range(mdp.n_actions)]
        for s, a in self.queries:
            if not (0 <= s < mdp.n_states and 0 <= a < mdp.n_actions):
                raise ValueError(f"query {(s, a)} is out of range")
        self._qs = torch.as_tensor([q[0] for q in self.queries])
        self._qa = torch.as_tensor([q[1] for q in self.queries])
        torch.manual_seed(seed)
        self.net = _mlp(len(self.queries) * mdp.n_states, int(np.prod(mdp.policy_shape)), hidden).double()

    def describe(self, models: torch.Tensor) -> torch.Tensor:
        """omega: the model's next-state predictions at the queries, flattened ([..., Q * S])."""
        return models[..., self._qs, self._qa, :].flatten(-2)

    def policy(self, models: torch.Tensor) -> torch.Tensor:
        """The follower's response pi[..., t, s, a] to model(s) [..., S, A, S] (differentiable)."""
        logits = self.net(self.describe(models)).reshape(models.shape[:-3] + self.mdp.policy_shape)
        return torch.softmax(logits, -1)

    def respond(self, model: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.policy(torch.as_tensor(model, dtype=torch.float64)).numpy()

    def pretrain(self, models: np.ndarray, epochs: int = 300, lr: float = 1e-2) -> dict[str, float]:
        """Fit to the exact best responses of ``models``: cross-entropy on the greedy actions,
        weighted by where the best response goes in that model (plus a floor for every state)."""
        br = batched_greedy_responses(self.mdp, models)
        targets = torch.as_tensor(br.argmax(-1))  # [n, H, S]
        visits = np.stack([self.mdp.occupancy(b, M).sum(-1) for b, M in zip(br, models)])  # [n, H, S]
        live = torch.as_tensor(~self.mdp.terminal_mask)
        weight = (torch.as_tensor(visits) + 1.0 / int(live.sum()))[:, :, live]
        weight = weight / weight.sum((1, 2), keepdim=True)
        X = torch.as_tensor(models, dtype=torch.float64)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        H, S, A = self.mdp.policy_shape
        loss = torch.zeros(())
        for _ in range(epochs):
            logits = self.net(self.describe(X)).reshape(-1, H, S, A)
            ce = nn.functional.cross_entropy(logits.permute(0, 3, 1, 2), targets, reduction="none")  # [n, H, S]
            loss = (weight * ce[:, :, live]).sum((1, 2)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = (self.net(self.describe(X)).reshape(-1, H, S, A).argmax(-1) == targets)[:, :, live].double().mean()
        return {"loss": float(loss.detach()), "accuracy": float(acc)}

    def regret(self, models: np.ndarray) -> np.ndarray:
        """J(pi*(M), M) - J(pi_f(M), M) for each model: how much the follower's response loses."""
        br = batched_greedy_responses(self.mdp, models)
        return np.array([self.mdp.evaluate(b, M) - self.mdp.evaluate(self.respond(M), M) for b, M in zip(br, models)])


# -- the game against a frozen contextual follower -------------------------------------------
_PRETRAINED: dict[tuple, ContextualPolicyFollower] = {}  # per process: one follower per (world, prior, seed, sizes)


def pretrained_policy_follower(
    mdp: FiniteMDP, prior: np.ndarray, seed: int, leaders: int, epochs: int, hidden: int
) -> ContextualPolicyFollower:
    """A frozen follower pretrained on ``leaders`` random models (cached: the MAL variants share it)."""
    key = (mdp.P.tobytes(), mdp.R.tobytes(), mdp.horizon, np.round(prior, 12).tobytes(), seed, leaders, epochs, hidden)
    if key not in _PRETRAINED:
        torch.set_num_threads(1)
        rng = np.random.default_rng(10_000 + seed)
        follower = ContextualPolicyFollower(mdp, hidden=hidden, seed=seed)
        follower.pretrain(random_models(mdp, leaders, rng, prior), epochs=epochs)
        for p in follower.net.parameters():
            p.requires_grad_(False)
        _PRETRAINED.clear()  # keep one: a process runs one world at a time
        _PRETRAINED[key] = follower
    return _PRETRAINED[key]


def run_contextual_game(mdp: FiniteMDP, spec, opts, seed: int, model) -> tuple[np.ndarray, list[dict]]:
    """MAL against a frozen contextual follower: the model leader's Adam steps go *through* the
    follower network (autograd), so the leader anticipates how the follower reacts.

    ``model`` is the run's :class:`~mbrl_ros.core.finite.TabularModel` (starting at the prior);
    it ends holding the leader's final model.
    """
    from mbrl_ros.core.finite import _record  # local: finite imports this module lazily

    if spec.leader is not Player.MODEL:
        raise ValueError(
            f"follower='contextual' is implemented for the MAL family (a policy follower), not {spec.name}"
        )
    torch.set_num_threads(1)
    # the prior without the run's initial noise: the follower is shared by every run of this seed
    prior = np.exp(model.prior_logits - model.prior_logits.max(-1, keepdims=True))
    prior /= prior.sum(-1, keepdims=True)
    follower = pretrained_policy_follower(
        mdp, prior, seed, opts.contextual_leaders, opts.contextual_epochs, opts.contextual_hidden
    )
    alpha = opts.mixing_weight(spec.name)
    r_range = float(mdp.R[~mdp.terminal_mask].max() - mdp.R[~mdp.terminal_mask].min()) or 1.0
    P = torch.as_tensor(mdp.P)
    logP = torch.log(P.clamp_min(1e-300))
    live = torch.as_tensor(~mdp.terminal_mask)
    phi = torch.tensor(model.logits, requires_grad=True)
    fixed = torch.as_tensor(model.logits)
    opt = torch.optim.Adam([phi], lr=opts.model_lr)
    d_uniform = torch.as_tensor(mdp.state_action_distribution(mdp.uniform_policy()))
    history: list[dict] = []
    for k in range(1, opts.iterations + 1):
        for step in range(opts.model_steps):
            M = torch.softmax(torch.where(live[:, None, None], phi, fixed), -1)
            pi = follower.policy(M)  # the follower's reaction, differentiable in M
            mu = torch_occupancy(mdp, pi, P).sum(0)  # where it goes in the world
            d = mu / mu.sum()
            if spec.model_objective is ModelObjective.RANDOM_NOISE:
                d = alpha * d + (1 - alpha) * d_uniform
            kl = torch.where(P > 0, P * (logP - torch.log(M)), torch.zeros_like(P)).sum(-1)
            obj = (d * kl).sum()
            if spec.model_objective is ModelObjective.AGENT_REWARD:
                j = torch_return(mdp, pi, M)
                if opts.agent_reward == "normalised":
                    # per transition and per value range, as agent_reward_term: the follower's
                    # episode length in M and the range are constants of the step
                    length = torch_occupancy(mdp, pi.detach(), M.detach()).sum().clamp_min(1.0)
                    j = j / (length * mdp.horizon * r_range)
                obj = alpha * obj - (1 - alpha) * j
            if step == 0:
                pi_k, M_k, objective = pi.detach().numpy(), M.detach().numpy(), float(obj.detach())
            opt.zero_grad()
            obj.backward()
            opt.step()
        history.append(_record(mdp, k, pi_k, M_k, objective))
    model.logits = torch.where(live[:, None, None], phi, fixed).detach().numpy().copy()
    return follower.respond(model.probs), history
