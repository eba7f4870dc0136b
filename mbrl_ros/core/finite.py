"""Exact Stackelberg games on small finite MDPs (PAL, MAL, GDA, BR and the poster's MAL fixes).

The neural game of the paper (ensembles, NPG, sampled data) has a tabular twin in which every
quantity is exact: J(pi, M) and the occupancy mu^pi by dynamic programming, the model loss
l(M, mu) = E_mu KL(P_W || P_M) in closed form, the follower's best response by value iteration
(policy follower) or maximum likelihood (model follower). On it we can watch the failure the
poster describes (MAL's model hides a rewarding region) without sampling noise, and check the
two fixes. Everything here is numpy; the contextual follower (Gerstgrasser & Parkes) is in
:mod:`mbrl_ros.core.finite_contextual` (torch).

Two formulations (``run_game(..., formulation=...)``):

- ``"bilevel"`` (default): the game itself. Each iteration the follower best-responds exactly
  to the leader, and the leader takes a conservative step on its objective *at the follower's
  response*. PAL: the model follower is the maximum-likelihood model on the policy's exact
  occupancy (the true row where the policy goes, the previous model where it never goes), the
  policy leader takes an NPG step on J(pi, M*(pi)). MAL: the policy follower is the optimal
  policy in M (DP, greedy), the model leader takes Adam steps on l(M, mu_W^{pi*(M)}) (+ the
  fixes). Both best responses are locally constant in the leader (M*(pi) changes only when a
  pair's occupancy becomes zero; pi*(M) only when an argmax flips), so the gradient "through the
  follower's response" equals the partial gradient almost everywhere: these are exact leader
  gradients. No samples are drawn (``samples == 0``).
- ``"practical"``: the paper's Algorithms 3 (PAL) and 4 (MAL) with sampled data: N real
  transitions per iteration from the deployed policy, a counts-based model (maximum likelihood
  on a FIFO buffer for PAL: aggressive; Adam steps on the negative log-likelihood of all data
  for MAL: conservative), K NPG steps of the policy in the model (few and small for PAL, many
  and large for MAL). ``samples`` counts the real transitions.

Players' steps (shared by both formulations):

- conservative policy step: NPG for a tabular softmax policy, theta_t(s, a) += eta * A_t(s, a) / r_range
  (the natural gradient of a tabular softmax policy is its advantage; r_range = max R - min R
  makes the step size mean the same at every reward scale);
- aggressive policy step: the DP-optimal (greedy) policy in the model;
- conservative model step: Adam on the logits of M = softmax(phi), warm-started;
- aggressive model step: the closed-form maximum-likelihood rows where data exists; rows with
  no data keep their previous value (the prior at first). The prior says "an action nobody has
  tried leaves the state unchanged" (``model_prior="self-loop"``).

The MAL fixes (poster), with mixing weight ``alpha``:

- ``mal-agent-reward``: the model leader minimises alpha * l(M, mu^pi) - (1 - alpha) * J_n(M),
  where J_n(M) = J(pi_tau, M) / (L * H * r_range) is the return of the soft follower
  pi_tau = softmax(Q / (tau * r_range)) in the model, per transition (L: its expected episode
  length in M) and per value range (H * r_range) so that it is on the likelihood's scale (see
  :func:`agent_reward_term`; ``agent_reward="raw"`` is the earlier unscaled J_tau). tau > 0 makes
  the follower stochastic, like the paper's Gaussian NPG policy; the return gradient then reaches
  actions the greedy follower does not take, which is what lets the model become optimistic
  about an untried door. With tau -> 0 the return term only sees the greedy path and cannot
  reveal a hidden region.
- ``mal-noise``: the model's loss is taken under alpha * mu^pi + (1 - alpha) * mu^uniform
  (bilevel), or a fraction 1 - alpha of each iteration's samples comes from the uniform random
  policy (practical).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np

from mbrl_ros.core.finite_mdp import (  # re-exported: the finite-game API lives here
    FiniteMDP,
    HiddenRegion,
    greedy_policy,
    hidden_region_mdp,
    model_loss,
    optimal_value_avoiding,
)
from mbrl_ros.core.schedule import GAMES, ModelObjective, Player, game_spec

__all__ = [
    "ALGOS",
    "FiniteMDP",
    "FiniteGameOptions",
    "GameResult",
    "HiddenRegion",
    "TabularModel",
    "greedy_policy",
    "hidden_region_mdp",
    "model_loss",
    "optimal_value_avoiding",
    "run_game",
    "agent_reward_term",
    "reward_range",
    "softmax",
]

ALGOS: tuple[str, ...] = tuple(GAMES)
FORMULATIONS = ("bilevel", "practical")
AGENT_REWARD_TERMS = ("normalised", "raw")
_DEFAULT_ALPHA = {"mal-agent-reward": 0.9, "mal-noise": 0.5}


@dataclass
class FiniteGameOptions:
    """Hyper-parameters of a finite game (``run_game(**options)``); defaults hold across the trap family."""

    iterations: int = 60  # game iterations (one follower response + one leader update each)
    policy_lr: float = 0.05  # NPG step size eta of a conservative policy step (advantages / reward range)
    follower_policy_lr: float = 1.0  # practical: NPG step size of the aggressive (follower) policy
    policy_steps: Optional[int] = None  # practical: NPG steps per iteration K (None: PAL 4, MAL 25)
    model_lr: float = 0.5  # Adam step size on the model logits (conservative model steps)
    model_steps: int = 10  # Adam steps per conservative model update
    alpha: Optional[float] = None  # weight of the model loss in the MAL fixes (None: agent reward 0.9, noise 0.5)
    tau: float = 1.0  # temperature of the soft follower in mal-agent-reward, in units of the reward range
    agent_reward: str = "normalised"  # return term: "normalised" J / (episode length x value range) or "raw" J_tau
    model_prior: Union[str, np.ndarray] = "self-loop"  # model of never-seen pairs: self-loop | uniform | array
    prior_logit: float = 8.0  # self-loop prior: logit of s' = s (others 0): P(stay) ~ 0.998 for 8 states
    init_noise: float = 0.1  # std of the seeded noise on the initial policy and model logits
    min_occupancy: float = 0.0  # model follower: pairs with d(s,a) <= this count as never visited
    follower: str = "exact"  # "exact" best responses or "contextual" (pretrained, Gerstgrasser & Parkes)
    # practical formulation
    samples_per_iteration: int = 100  # N real transitions per iteration
    n_init: Optional[int] = None  # initial samples by the uniform policy (None: N for PAL/GDA/BR, 0 for MAL)
    buffer: Optional[str] = None  # "fifo" | "aggregate" (None: the game's buffer: PAL fifo, others aggregate)
    buffer_size: Optional[int] = None  # FIFO capacity B in transitions (None: 2 N)
    # contextual follower
    contextual_leaders: int = 1000  # random leaders the follower is pretrained on
    contextual_epochs: int = 200  # full-batch Adam epochs of pretraining
    contextual_hidden: int = 128  # width of the follower MLP

    def validate(self, algo: str, formulation: str) -> None:
        positive_ints = (
            "iterations",
            "model_steps",
            "samples_per_iteration",
            "contextual_leaders",
            "contextual_epochs",
            "contextual_hidden",
        )
        for name in positive_ints:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"option {name} must be a positive integer, got {v!r}")
        for name in ("policy_steps", "buffer_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1):
                raise ValueError(f"option {name} must be a positive integer or None, got {v!r}")
        if self.n_init is not None and (not isinstance(self.n_init, (int, np.integer)) or self.n_init < 0):
            raise ValueError(f"option n_init must be a non-negative integer or None, got {self.n_init!r}")
        for name in ("policy_lr", "follower_policy_lr", "model_lr", "tau"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (np.isfinite(v) and v > 0):
                raise ValueError(f"option {name} must be a positive number, got {v!r}")
        if not (np.isfinite(self.init_noise) and self.init_noise >= 0):
            raise ValueError(f"option init_noise must be >= 0, got {self.init_noise!r}")
        if not 0 <= self.min_occupancy < 1:
            raise ValueError(f"option min_occupancy must be in [0, 1), got {self.min_occupancy!r}")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"option alpha must be in [0, 1], got {self.alpha!r}")
        if self.follower not in ("exact", "contextual"):
            raise ValueError(f"option follower must be 'exact' or 'contextual', got {self.follower!r}")
        if self.follower == "contextual" and formulation != "bilevel":
            raise ValueError("follower='contextual' is defined for formulation='bilevel' only")
        if self.follower == "contextual" and game_spec(algo).leader is not Player.MODEL:
            raise ValueError(
                f"follower='contextual' is implemented for the model-leader games "
                f"(mal, mal-agent-reward, mal-noise), not {algo}"
            )
        if self.buffer not in (None, "fifo", "aggregate"):
            raise ValueError(f"option buffer must be 'fifo' or 'aggregate', got {self.buffer!r}")
        if self.agent_reward not in AGENT_REWARD_TERMS:
            raise ValueError(
                f"option agent_reward must be one of {', '.join(AGENT_REWARD_TERMS)}, got {self.agent_reward!r}"
            )
        if isinstance(self.model_prior, str) and self.model_prior not in ("self-loop", "uniform"):
            raise ValueError(f"option model_prior must be 'self-loop', 'uniform' or an array, got {self.model_prior!r}")

    def mixing_weight(self, algo: str) -> float:
        return self.alpha if self.alpha is not None else _DEFAULT_ALPHA.get(algo, 1.0)


@dataclass
class GameResult:
    """What a finite game ends with. ``history`` holds one dict per iteration."""

    algo: str
    formulation: str
    seed: int
    policy: np.ndarray  # final deployed policy pi[t, s, a], shape (H, S, A)
    model: np.ndarray  # final model M[s, a, s'], shape (S, A, S)
    real_return: float  # exact J(policy, world)
    model_return: float  # exact J(policy, model): what the players believe
    optimal_return: float  # exact optimum of the world (for reference)
    samples: int  # real transitions drawn (0 for the exact bilevel game)
    history: list[dict[str, float]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def curve(self, key: str) -> np.ndarray:
        """One history column as an array (e.g. ``result.curve("real_return")``)."""
        return np.array([h[key] for h in self.history], dtype=np.float64)


# -- small building blocks ------------------------------------------------------------------
def softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


class _Adam:
    """Adam on one numpy array (the model leader's optimiser, as for the paper's neural models)."""

    def __init__(self, shape: tuple[int, ...], lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = np.zeros(shape)
        self.v = np.zeros(shape)
        self.t = 0

    def step(self, param: np.ndarray, grad: np.ndarray) -> None:
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        mhat = self.m / (1 - self.b1**self.t)
        vhat = self.v / (1 - self.b2**self.t)
        param -= self.lr * mhat / (np.sqrt(vhat) + self.eps)


class TabularModel:
    """The model player's transition table M = softmax(phi), rows of terminal states fixed."""

    def __init__(
        self,
        mdp: FiniteMDP,
        prior: Union[str, np.ndarray],
        prior_logit: float,
        lr: float,
        noise: Optional[np.ndarray] = None,
    ) -> None:
        S, A = mdp.n_states, mdp.n_actions
        self.mdp = mdp
        if isinstance(prior, str):
            logits = np.zeros((S, A, S))
            if prior == "self-loop":
                logits[np.arange(S), :, np.arange(S)] = prior_logit
        else:
            prior = mdp.check_model(prior)
            logits = np.log(np.maximum(prior, 1e-12))
        self.prior_logits = logits.copy()
        if noise is not None:
            logits = logits + noise
        self.live = ~mdp.terminal_mask  # rows that are learned
        self.logits = logits
        self.opt = _Adam(logits.shape, lr)
        self._fix_terminal_rows()

    def _fix_terminal_rows(self) -> None:
        for s in np.flatnonzero(~self.live):
            self.logits[s] = -30.0
            self.logits[s, :, s] = 0.0

    @property
    def probs(self) -> np.ndarray:
        return softmax(self.logits)

    def best_response_rows(self, d: np.ndarray, target: np.ndarray, min_occupancy: float = 0.0) -> None:
        """Aggressive update: rows with data (d > min_occupancy) become ``target``, others stay."""
        seen = (d > min_occupancy) & self.live[:, None]
        self.logits[seen] = np.log(np.maximum(target[seen], 1e-12))
        self.opt = _Adam(self.logits.shape, self.opt.lr)  # a new fit, not a continuation

    def adam_step(self, grad_logits: np.ndarray) -> None:
        grad_logits = grad_logits * self.live[:, None, None]
        self.opt.step(self.logits, grad_logits)


def _loss_grad_logits(M: np.ndarray, d: np.ndarray, target: np.ndarray) -> np.ndarray:
    """d/dphi of sum d(s,a) KL(target(s,a) || softmax(phi)(s,a)) = d (M - target)."""
    return d[:, :, None] * (M - target)


def reward_range(mdp: FiniteMDP) -> float:
    """max R - min R over the live (non-terminal) rows: the reward scale the agent-reward defaults are relative to."""
    R = mdp.R[~mdp.terminal_mask]
    spread = float(R.max() - R.min())
    return spread if spread > 0 else 1.0


def _soft_return_and_grad(mdp: FiniteMDP, M: np.ndarray, tau: float) -> tuple[float, np.ndarray]:
    """J_tau(M) and its gradient w.r.t. the model logits (envelope theorem at the soft-optimal policy)."""
    pi, V = mdp.soft_optimal(tau, M)
    g = mdp.return_gradient_wrt_model(pi, V, M)
    g_logits = M * (g - (M * g).sum(-1, keepdims=True))
    return float(mdp.start @ V[0]), g_logits


def agent_reward_term(mdp: FiniteMDP, M: np.ndarray, tau: float, kind: str = "normalised") -> tuple[float, np.ndarray]:
    """The return term of MAL + agent reward and its gradient w.r.t. the model logits.

    ``"raw"``: J_tau(M), the soft optimal value (return + tau * entropy) at temperature ``tau``.
    Its gradient at a pair scales with the pair's summed occupancy (up to H) times a
    value-to-go (up to H x the reward scale), while the likelihood term's scales with d(s, a) <= 1
    times a probability error, so on long or large-reward worlds the return term outweighs the
    data even where there is data: the model can lie about a pair the follower visits.

    ``"normalised"`` (default): J(pi_tau, M) / (L * H * r_range): the return of the soft follower
    pi_tau = softmax(Q / (tau * r_range)) (no entropy bonus: the model is paid for reward, not for
    long episodes), divided by its expected episode length L in M (a per-transition quantity,
    like the loss, which averages over d) and by the value range H * r_range. Its gradient at a
    pair is then at most the pair's share of the soft follower's visits (like d), so on pairs
    with data the likelihood term holds the model within about (1 - alpha) / alpha of the data,
    and on pairs without data (the door) it is the only term, which Adam follows at full step.
    L and the range are held constant within a step (not differentiated). tau is in units of
    the reward range, so the soft follower is as stochastic at reward scale 0.1 as at 10.
    """
    r_range = reward_range(mdp)
    if kind == "raw":
        return _soft_return_and_grad(mdp, M, tau)
    pi, _ = mdp.soft_optimal(tau * r_range, M)
    _, V = mdp.q_values(pi, M)
    x = mdp.occupancy(pi, M)
    length = max(float(x.sum()), 1.0)
    scale = length * mdp.horizon * r_range
    # dJ/dM = sum_t gamma^t x_t(s, a) (R + gamma V_{t+1}(s')), as return_gradient_wrt_model, reusing x
    disc = mdp.gamma ** np.arange(mdp.horizon)
    g = np.einsum("t,tij,ijk->ijk", disc, x, mdp.R) + mdp.gamma * np.einsum("t,tij,tk->ijk", disc, x, V[1:])
    g /= scale
    g_logits = M * (g - (M * g).sum(-1, keepdims=True))
    return float(mdp.start @ V[0]) / scale, g_logits


def _npg_step(mdp: FiniteMDP, theta: np.ndarray, M: np.ndarray, eta: float) -> None:
    """Natural policy gradient for tabular softmax: theta += eta * A^pi_M / r_range (in place).

    The advantage is measured in units of the reward range so that a step size means the same
    on a world whose rewards are 0.1x or 10x another's (the paper's NPG is scale-free through
    its normalised step size; a fixed eta on raw advantages is not).
    """
    pi = softmax(theta)
    Q, V = mdp.q_values(pi, M)
    theta += (eta / reward_range(mdp)) * (Q - V[:-1, :, None])


# -- the game ---------------------------------------------------------------------------------
def run_game(mdp: FiniteMDP, algo: str, seed: int = 0, formulation: str = "bilevel", **options: Any) -> GameResult:
    """Play one finite Stackelberg (or independent) game and return its result.

    Args:
        mdp: the world.
        algo: one of ``pal, mal, gda, br, mal-agent-reward, mal-noise``.
        seed: seeds the initial-parameter noise and (practical) the sampled data.
        formulation: ``"bilevel"`` (exact game) or ``"practical"`` (sampled Algorithms 3/4).
        **options: fields of :class:`FiniteGameOptions`.
    """
    if not isinstance(mdp, FiniteMDP):
        raise ValueError(f"mdp must be a FiniteMDP, got {type(mdp).__name__}")
    spec = game_spec(algo)
    if formulation not in FORMULATIONS:
        raise ValueError(f"unknown formulation {formulation!r}; choose one of {', '.join(FORMULATIONS)}")
    known = {f.name for f in dataclasses.fields(FiniteGameOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    opts = FiniteGameOptions(**options)
    opts.validate(algo, formulation)
    rng = np.random.default_rng(seed)
    noise_pi = rng.normal(0.0, opts.init_noise, mdp.policy_shape) if opts.init_noise > 0 else np.zeros(mdp.policy_shape)
    noise_m = rng.normal(0.0, opts.init_noise, mdp.P.shape) if opts.init_noise > 0 else None
    model = TabularModel(mdp, opts.model_prior, opts.prior_logit, opts.model_lr, noise_m)
    if opts.follower == "contextual":
        from mbrl_ros.core.finite_contextual import run_contextual_game

        policy, history = run_contextual_game(mdp, spec, opts, seed, model)
        samples = 0
    elif formulation == "bilevel":
        policy, history = _bilevel(mdp, spec, opts, noise_pi, model)
        samples = 0
    else:
        policy, history, samples = _practical(mdp, spec, opts, rng, noise_pi, model)
    M = model.probs
    _, v_opt = mdp.optimal()
    return GameResult(
        algo=algo,
        formulation=formulation,
        seed=seed,
        policy=policy,
        model=M,
        real_return=mdp.evaluate(policy),
        model_return=mdp.evaluate(policy, M),
        optimal_return=v_opt,
        samples=samples,
        history=history,
        options=dataclasses.asdict(opts) | {"alpha": opts.mixing_weight(algo)},
    )


def _record(mdp: FiniteMDP, k: int, pi: np.ndarray, M: np.ndarray, leader_objective: float, **extra: float) -> dict:
    d = mdp.state_action_distribution(pi)
    row = {
        "iteration": k,
        "leader_objective": float(leader_objective),
        "real_return": mdp.evaluate(pi),
        "model_return": mdp.evaluate(pi, M),
        "model_loss": model_loss(mdp, M, d),  # exact l(M, mu_W^pi) of the deployed policy
    }
    row.update({key: float(v) for key, v in extra.items()})
    return row


def _mal_model_objective(
    mdp: FiniteMDP, spec, opts: FiniteGameOptions, model: TabularModel, d: np.ndarray, target: np.ndarray
) -> float:
    """One conservative update of the model leader (``model_steps`` Adam steps); returns its objective."""
    alpha = opts.mixing_weight(spec.name)
    objective = 0.0
    for _ in range(opts.model_steps):
        M = model.probs
        grad = _loss_grad_logits(M, d, target)
        objective = model_loss(mdp, M, d, target)
        if spec.model_objective is ModelObjective.AGENT_REWARD:
            j_soft, g_j = agent_reward_term(mdp, M, opts.tau, opts.agent_reward)
            grad = alpha * grad - (1.0 - alpha) * g_j
            objective = alpha * objective - (1.0 - alpha) * j_soft
        model.adam_step(grad)
    return objective


def _bilevel(
    mdp: FiniteMDP, spec, opts: FiniteGameOptions, noise_pi: np.ndarray, model: TabularModel
) -> tuple[np.ndarray, list[dict]]:
    """The exact game: exact occupancies, exact best responses, conservative leader steps."""
    history: list[dict] = []
    theta = noise_pi.copy()
    alpha = opts.mixing_weight(spec.name)
    d_uniform = mdp.state_action_distribution(mdp.uniform_policy())
    pi = softmax(theta)
    for k in range(1, opts.iterations + 1):
        if spec.leader is Player.POLICY:  # PAL
            pi = softmax(theta)
            d = mdp.state_action_distribution(pi)
            model.best_response_rows(d, mdp.P, opts.min_occupancy)  # M*(pi): ML on mu_W^pi
            M = model.probs
            leader_obj = mdp.evaluate(pi, M)  # J(pi, M*(pi))
            history.append(_record(mdp, k, pi, M, leader_obj))
            _npg_step(mdp, theta, M, opts.policy_lr)
            pi = softmax(theta)
        elif spec.leader is Player.MODEL:  # MAL and its fixes
            M = model.probs
            pi, _ = mdp.optimal(M)  # pi*(M): the follower best-responds
            d = mdp.state_action_distribution(pi)
            if spec.model_objective is ModelObjective.RANDOM_NOISE:
                d = alpha * d + (1.0 - alpha) * d_uniform
            leader_obj = _mal_model_objective(mdp, spec, opts, model, d, mdp.P)
            history.append(_record(mdp, k, pi, M, leader_obj))
        elif spec.policy_aggressive:  # BR: both best-respond to iteration-k quantities
            M = model.probs
            d = mdp.state_action_distribution(pi)
            history.append(_record(mdp, k, pi, M, float("nan")))
            new_pi, _ = mdp.optimal(M)
            model.best_response_rows(d, mdp.P, opts.min_occupancy)
            pi = new_pi
        else:  # GDA: both take conservative steps from iteration-k quantities
            pi = softmax(theta)
            M = model.probs
            d = mdp.state_action_distribution(pi)
            history.append(_record(mdp, k, pi, M, float("nan")))
            _npg_step(mdp, theta, M, opts.policy_lr)  # uses M_k
            for _ in range(opts.model_steps):  # uses mu^{pi_k}
                model.adam_step(_loss_grad_logits(model.probs, d, mdp.P))
            pi = softmax(theta)
    if spec.leader is Player.MODEL:  # the final deployed policy is the follower's response to the final model
        pi, _ = mdp.optimal(model.probs)
    return pi, history


# -- practical (sampled) formulation ----------------------------------------------------------
class _Sampler:
    """Draws transitions (s, a, s') from the world, episode after episode."""

    def __init__(self, mdp: FiniteMDP, rng: np.random.Generator) -> None:
        self.mdp, self.rng = mdp, rng
        self.cumP = np.cumsum(mdp.P, axis=-1)
        self.cum_start = np.cumsum(mdp.start)

    def collect(self, policy: np.ndarray, n: int) -> np.ndarray:
        """Exactly n transitions as an int array [n, 3]; episodes start fresh at each call."""
        out = np.zeros((n, 3), dtype=np.int64)
        cum_pi = np.cumsum(policy, axis=-1)
        i, t = 0, 0
        s = int(np.searchsorted(self.cum_start, self.rng.random(), side="right"))
        H = self.mdp.horizon
        while i < n:
            a = min(int(np.searchsorted(cum_pi[t, s], self.rng.random(), side="right")), self.mdp.n_actions - 1)
            s2 = min(int(np.searchsorted(self.cumP[s, a], self.rng.random(), side="right")), self.mdp.n_states - 1)
            out[i] = (s, a, s2)
            i += 1
            t += 1
            if self.mdp.terminal_mask[s2] or t >= H:
                t = 0
                s = int(np.searchsorted(self.cum_start, self.rng.random(), side="right"))
            else:
                s = s2
        return out


def _empirical(mdp: FiniteMDP, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d_emp[s, a], P_emp[s, a, s']) of a transition array; P_emp rows without data are 0."""
    counts = np.zeros(mdp.P.shape)
    np.add.at(counts, (data[:, 0], data[:, 1], data[:, 2]), 1.0)
    n_sa = counts.sum(-1)
    P_emp = np.divide(counts, n_sa[:, :, None], out=np.zeros_like(counts), where=n_sa[:, :, None] > 0)
    return n_sa / max(len(data), 1), P_emp


def _practical(
    mdp: FiniteMDP, spec, opts: FiniteGameOptions, rng: np.random.Generator, noise_pi: np.ndarray, model: TabularModel
) -> tuple[np.ndarray, list[dict], int]:
    """Algorithms 3 (PAL) and 4 (MAL) of the paper on sampled data from the tabular world."""
    sampler = _Sampler(mdp, rng)
    N = opts.samples_per_iteration
    buffer_kind = opts.buffer or spec.buffer
    capacity = (opts.buffer_size or 2 * N) if buffer_kind == "fifo" else None
    K = opts.policy_steps or (25 if spec.policy_aggressive else 4)
    eta = opts.follower_policy_lr if spec.policy_aggressive else opts.policy_lr
    n_init = opts.n_init if opts.n_init is not None else (0 if spec.leader is Player.MODEL else N)
    alpha = opts.mixing_weight(spec.name)
    uniform = mdp.uniform_policy()
    theta = noise_pi.copy()
    buffer = np.zeros((0, 3), dtype=np.int64)
    samples = 0
    history: list[dict] = []

    def add(data: np.ndarray) -> None:
        nonlocal buffer, samples
        samples += len(data)
        buffer = np.concatenate([buffer, data])
        if capacity is not None and len(buffer) > capacity:
            buffer = buffer[-capacity:]  # FIFO: keep the most recent B transitions

    def collect(pi: np.ndarray) -> None:
        if spec.model_objective is ModelObjective.RANDOM_NOISE:
            n_random = int(round((1.0 - alpha) * N))
            add(sampler.collect(uniform, n_random))  # exploratory data from the random policy
            add(sampler.collect(pi, N - n_random))
        else:
            add(sampler.collect(pi, N))

    def fit_model(aggressive: bool) -> float:
        d_emp, P_emp = _empirical(mdp, buffer)
        if aggressive:
            model.best_response_rows(d_emp, P_emp)
        else:
            return _mal_model_objective(mdp, spec, opts, model, d_emp, P_emp)
        return model_loss(mdp, model.probs, d_emp, P_emp)

    # initial phase: N_init samples of the initial (uniform-ish) policy; MAL/GDA/BR also fit M_0
    if n_init > 0:
        add(sampler.collect(softmax(theta) if spec.leader is not Player.MODEL else uniform, n_init))
        if spec.leader is not Player.POLICY:
            fit_model(spec.model_aggressive)
    for k in range(1, opts.iterations + 1):
        if spec.leader is Player.POLICY:  # Algorithm 3
            fit_model(aggressive=True)
            M = model.probs
            for _ in range(K):
                _npg_step(mdp, theta, M, eta)
            pi = softmax(theta)
            leader_obj = mdp.evaluate(pi, M)
            collect(pi)
        elif spec.leader is Player.MODEL:  # Algorithm 4
            M = model.probs
            for _ in range(K):
                _npg_step(mdp, theta, M, eta)
            pi = softmax(theta)
            collect(pi)
            leader_obj = fit_model(aggressive=False)
        else:  # GDA / BR: both players respond to iteration-k quantities
            M = model.probs
            for _ in range(K):
                _npg_step(mdp, theta, M, eta)
            pi = softmax(theta)
            collect(pi)
            leader_obj = fit_model(spec.model_aggressive)
        history.append(_record(mdp, k, pi, model.probs, leader_obj, samples=samples, buffer_transitions=len(buffer)))
    return softmax(theta), history, samples
