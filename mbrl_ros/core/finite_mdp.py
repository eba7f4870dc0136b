"""Small finite MDPs with exact answers: dynamic programming, occupancy measures, model losses.

This is the exact counterpart of the neural game in :mod:`mbrl_ros.core.stackelberg`: on a
tabular world every quantity of the Stackelberg game (J(pi, M), the occupancy mu^pi, the model
loss l(M, mu^pi), the follower's best response) can be computed exactly, so the games of
:mod:`mbrl_ros.core.finite` are checked against ground truth instead of noisy estimates.

Conventions (used everywhere in the finite-game code):

- ``P[s, a, s']`` transition probabilities and ``R[s, a, s']`` rewards, S states, A actions.
- Episodes last at most ``horizon`` steps; entering a *terminal* state ends the episode (the
  reward of that transition is paid, nothing after it), so terminal states behave as absorbing
  with zero reward whatever their rows of P and R say.
- Finite-horizon optimal policies are non-stationary, so a policy is a ``(horizon, S, A)`` array
  of probabilities ``pi[t, s, a]``. Every function also accepts a stationary ``(S, A)`` policy
  and broadcasts it over time.
- A *model* is a transition array of the same shape as ``P``; the reward function is known (as
  in the project's tasks), only transitions are learned.
- Occupancy ``x[t, s, a]`` is the probability of being in s and taking a at step t (non-terminal
  s only); ``mu = x.sum(0)`` counts expected visits per episode; the state-action distribution
  of the paper is ``d = mu / mu.sum()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np

_TOL = 1e-6


def _as_array(name: str, value, ndim: Sequence[int]) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim not in ndim:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim))} dimensions, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (nan or inf)")
    return arr


def check_transitions(P, n_states: int, n_actions: int, name: str = "P") -> np.ndarray:
    """Validate a transition array [S, A, S]: shape, finite, non-negative, rows summing to 1."""
    P = _as_array(name, P, (3,))
    if P.shape != (n_states, n_actions, n_states):
        raise ValueError(f"{name} must have shape {(n_states, n_actions, n_states)}, got {P.shape}")
    if np.any(P < 0):
        s, a, s2 = np.argwhere(P < 0)[0]
        raise ValueError(f"{name}[{s}, {a}, {s2}] = {P[s, a, s2]:.3g} is negative; probabilities must be >= 0")
    sums = P.sum(-1)
    bad = np.abs(sums - 1.0) > _TOL
    if np.any(bad):
        s, a = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}[{s}, {a}, :] sums to {sums[s, a]:.6g}; each row of next-state probabilities must sum to 1"
        )
    return P


@dataclass(eq=False)
class FiniteMDP:
    """A finite-horizon tabular MDP (the *world* of the finite games).

    Args:
        P: transition probabilities ``P[s, a, s']``.
        R: rewards ``R[s, a, s']`` (or ``R[s, a]``, broadcast over s').
        start: initial-state distribution over S, or the index of a single start state.
        terminal: states whose entry ends the episode (absorbing, no further reward).
        horizon: episode length H (steps).
        gamma: discount of the return (1.0: the plain episode return, as the poster reports).
        state_names / action_names: labels for figures and reports.
    """

    P: np.ndarray
    R: np.ndarray
    start: Union[np.ndarray, int]
    terminal: Sequence[int]
    horizon: int
    gamma: float = 1.0
    state_names: Optional[Sequence[str]] = None
    action_names: Optional[Sequence[str]] = None
    terminal_mask: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        P = _as_array("P", self.P, (3,))
        if P.shape[0] < 1 or P.shape[1] < 1 or P.shape[0] != P.shape[2]:
            raise ValueError(f"P must have shape (S, A, S) with S, A >= 1, got {P.shape}")
        S, A = P.shape[0], P.shape[1]
        self.P = check_transitions(P, S, A)
        R = _as_array("R", self.R, (2, 3))
        if R.ndim == 2:
            if R.shape != (S, A):
                raise ValueError(f"R of 2 dimensions must have shape {(S, A)}, got {R.shape}")
            R = np.repeat(R[:, :, None], S, axis=2)
        if R.shape != (S, A, S):
            raise ValueError(f"R must have shape {(S, A, S)} (or {(S, A)}), got {R.shape}")
        self.R = R
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, (int, np.integer)) or self.horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {self.horizon!r}")
        self.horizon = int(self.horizon)
        if not (0.0 < float(self.gamma) <= 1.0):
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma!r}")
        self.gamma = float(self.gamma)
        terminal = [int(t) for t in self.terminal]
        for t in terminal:
            if not 0 <= t < S:
                raise ValueError(f"terminal state {t} is out of range [0, {S})")
        self.terminal = tuple(sorted(set(terminal)))
        mask = np.zeros(S, dtype=bool)
        mask[list(self.terminal)] = True
        self.terminal_mask = mask
        if isinstance(self.start, (int, np.integer)) and not isinstance(self.start, bool):
            if not 0 <= int(self.start) < S:
                raise ValueError(f"start state {self.start} is out of range [0, {S})")
            start = np.zeros(S)
            start[int(self.start)] = 1.0
        else:
            start = _as_array("start", self.start, (1,))
            if start.shape != (S,):
                raise ValueError(f"start distribution must have shape {(S,)}, got {start.shape}")
            if np.any(start < 0) or abs(start.sum() - 1.0) > _TOL:
                raise ValueError("start distribution must be non-negative and sum to 1")
        if np.any(start[mask] > 0):
            raise ValueError("start distribution puts mass on a terminal state; episodes would end before they begin")
        self.start = start
        if mask.all():
            raise ValueError("every state is terminal")
        for label, names, n in (("state_names", self.state_names, S), ("action_names", self.action_names, A)):
            if names is not None and len(names) != n:
                raise ValueError(f"{label} has {len(names)} entries, expected {n}")
        self.state_names = list(self.state_names) if self.state_names else [f"s{i}" for i in range(S)]
        self.action_names = list(self.action_names) if self.action_names else [f"a{i}" for i in range(A)]

    # -- sizes ------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def policy_shape(self) -> tuple[int, int, int]:
        return (self.horizon, self.n_states, self.n_actions)

    # -- policies and models ----------------------------------------------------------------
    def check_policy(self, policy) -> np.ndarray:
        """Validate a policy and return it as ``(H, S, A)`` (a stationary ``(S, A)`` one is broadcast)."""
        pi = _as_array("policy", policy, (2, 3))
        H, S, A = self.policy_shape
        if pi.ndim == 2:
            if pi.shape != (S, A):
                raise ValueError(f"a stationary policy must have shape {(S, A)}, got {pi.shape}")
            pi = np.broadcast_to(pi, (H, S, A))
        if pi.shape != (H, S, A):
            raise ValueError(f"policy must have shape {(H, S, A)} or {(S, A)}, got {pi.shape}")
        if np.any(pi < 0) or np.any(np.abs(pi.sum(-1) - 1.0) > _TOL):
            raise ValueError("policy rows must be non-negative action probabilities summing to 1")
        return pi

    def check_model(self, model) -> np.ndarray:
        """Validate a learned transition model (same shape and rules as ``P``)."""
        return check_transitions(model, self.n_states, self.n_actions, name="model")

    def uniform_policy(self) -> np.ndarray:
        H, S, A = self.policy_shape
        return np.full((H, S, A), 1.0 / A)

    def expected_reward(self, model: Optional[np.ndarray] = None) -> np.ndarray:
        """r[s, a] = sum_s' M(s'|s,a) R(s,a,s'); zero at terminal states."""
        M = self.P if model is None else model
        r = np.einsum("ijk,ijk->ij", M, self.R)
        r[self.terminal_mask] = 0.0
        return r

    # -- exact dynamic programming ----------------------------------------------------------
    def q_values(self, policy=None, model: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Finite-horizon DP: returns (Q[t, s, a], V[t, s]) with V of shape (H + 1, S).

        With ``policy`` this is exact policy evaluation; with ``policy=None`` it is the
        Bellman optimality backup (V = max_a Q). Terminal states have value 0.
        ``model`` replaces the true transitions (the policy player planning in M).
        """
        M = self.P if model is None else model
        pi = None if policy is None else self.check_policy(policy)
        H, S, A = self.policy_shape
        r = self.expected_reward(M)
        live = ~self.terminal_mask
        Q = np.zeros((H, S, A))
        V = np.zeros((H + 1, S))
        for t in range(H - 1, -1, -1):
            Q[t] = r + self.gamma * M @ V[t + 1]
            Q[t, self.terminal_mask] = 0.0
            V[t] = Q[t].max(-1) if pi is None else (pi[t] * Q[t]).sum(-1)
            V[t, ~live] = 0.0
        return Q, V

    def evaluate(self, policy, model: Optional[np.ndarray] = None) -> float:
        """Exact expected (discounted) episode return J(pi, M) from the start distribution."""
        _, V = self.q_values(policy, model)
        return float(self.start @ V[0])

    def optimal(self, model: Optional[np.ndarray] = None) -> tuple[np.ndarray, float]:
        """Optimal deterministic policy (H, S, A one-hot; ties to the lowest action) and its value."""
        Q, V = self.q_values(None, model)
        pi = greedy_policy(Q)
        return pi, float(self.start @ V[0])

    def soft_optimal(self, tau: float, model: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
        """Entropy-regularised DP at temperature tau > 0: (pi[t,s,a] = softmax(Q/tau), V_soft (H+1, S)).

        V_soft_t(s) = tau * log sum_a exp(Q_t(s,a)/tau) = max_pi E[Q] + tau * entropy(pi): the
        smooth version of max_pi J(pi, M); tau -> 0 recovers :meth:`optimal`.
        """
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        M = self.P if model is None else model
        H, S, A = self.policy_shape
        r = self.expected_reward(M)
        pi = np.zeros((H, S, A))
        V = np.zeros((H + 1, S))
        for t in range(H - 1, -1, -1):
            Q = r + self.gamma * M @ V[t + 1]
            z = Q / tau
            zmax = z.max(-1, keepdims=True)
            e = np.exp(z - zmax)
            pi[t] = e / e.sum(-1, keepdims=True)
            V[t] = tau * (zmax[:, 0] + np.log(e.sum(-1)))
            V[t, self.terminal_mask] = 0.0
        return pi, V

    def occupancy(self, policy, model: Optional[np.ndarray] = None) -> np.ndarray:
        """Occupancy x[t, s, a] = Pr(s_t = s, a_t = a) (episode not yet ended), shape (H, S, A)."""
        M = self.P if model is None else model
        pi = self.check_policy(policy)
        H, S, A = self.policy_shape
        live = (~self.terminal_mask).astype(np.float64)
        x = np.zeros((H, S, A))
        p = self.start * live
        for t in range(H):
            x[t] = p[:, None] * pi[t]
            p = np.einsum("ij,ijk->k", x[t], M) * live
        return x

    def state_action_distribution(self, policy, model: Optional[np.ndarray] = None) -> np.ndarray:
        """d(s, a) = mu(s, a) / sum mu: the distribution the model player's loss is taken under."""
        mu = self.occupancy(policy, model).sum(0)
        return mu / mu.sum()

    def return_gradient_wrt_model(self, policy, V_next: np.ndarray, model: np.ndarray) -> np.ndarray:
        """dJ/dM[s, a, s'] = sum_t gamma^t x_t(s, a) (R(s,a,s') + gamma V_{t+1}(s')) for a fixed policy.

        ``V_next`` are the policy's values (H + 1, S) in ``model``; with the soft-optimal policy
        and soft values this is the exact gradient of the soft optimal return (envelope theorem).
        """
        x = self.occupancy(policy, model)
        H = self.horizon
        g = np.zeros_like(model)
        for t in range(H):
            g += self.gamma**t * x[t][:, :, None] * (self.R + self.gamma * V_next[t + 1][None, None, :])
        return g


def greedy_policy(Q: np.ndarray) -> np.ndarray:
    """One-hot argmax policy (ties to the lowest action index, so results are reproducible)."""
    pi = np.zeros_like(Q)
    idx = np.argmax(Q, axis=-1)
    np.put_along_axis(pi, idx[..., None], 1.0, axis=-1)
    return pi


def model_loss(mdp: FiniteMDP, model: np.ndarray, d: np.ndarray, target: Optional[np.ndarray] = None) -> float:
    """l(M, d) = sum_{s,a} d(s,a) KL(P(.|s,a) || M(.|s,a)), the model player's loss.

    ``target`` replaces the true P (e.g. the empirical transition frequencies of a buffer, for
    which this is the negative log-likelihood minus the data's entropy).
    """
    P = mdp.P if target is None else target
    with np.errstate(divide="ignore", invalid="ignore"):
        logratio = np.where(P > 0, np.log(P) - np.log(np.maximum(model, 1e-300)), 0.0)
    kl = (P * logratio).sum(-1)
    return float((d * kl).sum())


def optimal_value_avoiding(mdp: FiniteMDP, forbidden: Sequence[int]) -> float:
    """Best exact return of a policy that enters none of ``forbidden`` states (with probability 1).

    This is the value a model can settle for by hiding the forbidden region: the "hidden" value.
    """
    H, S, A = mdp.policy_shape
    bad = np.zeros(S, dtype=bool)
    bad[list(forbidden)] = True
    r = mdp.expected_reward()
    big = 1e9
    V = np.zeros(S)
    for _ in range(H):
        V_eff = np.where(bad, -big, V)
        Q = r + mdp.gamma * mdp.P @ V_eff
        Q[mdp.terminal_mask] = 0.0
        V = Q.max(-1)
        V[mdp.terminal_mask] = 0.0
    v0 = float(mdp.start @ np.where(bad, -big, V))
    return v0


# -- the poster's experiment world --------------------------------------------------------
STOP, GO = 0, 1


@dataclass
class HiddenRegion:
    """The hidden-region MDP together with its landmarks (see :func:`hidden_region_mdp`)."""

    mdp: FiniteMDP
    start: int
    corridor: list[int]
    region: list[int]
    done: int
    optimal_value: float
    hidden_value: float

    @property
    def key_pairs(self) -> list[tuple[int, int]]:
        """The (state, action) pairs a model must get right to see the region: 'go' along the way."""
        return [(self.start, GO)] + [(c, GO) for c in self.corridor]


def hidden_region_mdp(
    corridor: int = 3,
    horizon: int = 40,
    slip: float = 0.1,
    go_cost: float = 0.1,
    stop_reward: float = 1.0,
    region_reward: float = 1.0,
) -> HiddenRegion:
    """A small world in which a model can hide a rewarding region (the poster's setting).

    States: ``start``, a corridor ``c1..cL``, a two-state rewarding region ``T1, T2``, and a
    terminal ``done``. Actions: ``stop`` (0) and ``go`` (1).

    - start --stop--> done, reward ``stop_reward`` (the small sure thing).
    - start / c_i --go--> next corridor cell (c_L leads to T1) with prob 1 - slip, else stay;
      costs ``go_cost``. c_i --stop--> done with nothing (giving up half-way).
    - In the region every step pays ``region_reward``; ``stop`` stays, ``go`` switches T1 <-> T2
      (each with prob 1 - slip): the region's dynamics are something to learn too.

    The optimal policy walks the corridor and collects about H - L - 1 rewards; the best
    policy that never enters the region stops at once and earns ``stop_reward``. A model that
    predicts "go does nothing" at the start (the prior of an unvisited pair) makes stopping the
    best response, and the best response never produces the data that would refute it.
    """
    if corridor < 1:
        raise ValueError(f"corridor must be >= 1, got {corridor}")
    if not 0.0 <= slip < 1.0:
        raise ValueError(f"slip must be in [0, 1), got {slip}")
    if horizon <= corridor + 1:
        raise ValueError(f"horizon {horizon} too short to reach the region through a corridor of {corridor}")
    start = 0
    cells = list(range(1, corridor + 1))
    t1, t2 = corridor + 1, corridor + 2
    done = corridor + 3
    S, A = corridor + 4, 2
    P = np.zeros((S, A, S))
    R = np.zeros((S, A, S))
    P[start, STOP, done] = 1.0
    R[start, STOP, :] = stop_reward
    chain = [start] + cells + [t1]
    for here, nxt in zip(chain[:-1], chain[1:]):
        P[here, GO, nxt] += 1.0 - slip
        P[here, GO, here] += slip
        R[here, GO, :] = -go_cost
    for c in cells:
        P[c, STOP, done] = 1.0
    for here, other in ((t1, t2), (t2, t1)):
        # stop stays in its cell, go switches cells; each succeeds with prob 1 - slip
        P[here, STOP, here] += 1.0 - slip
        P[here, STOP, other] += slip
        P[here, GO, other] += 1.0 - slip
        P[here, GO, here] += slip
        R[here, :, :] = region_reward
    P[done, :, done] = 1.0
    names = ["start"] + [f"c{i}" for i in range(1, corridor + 1)] + ["T1", "T2", "done"]
    mdp = FiniteMDP(P, R, start=start, terminal=[done], horizon=horizon, state_names=names, action_names=["stop", "go"])
    _, v_opt = mdp.optimal()
    v_hidden = optimal_value_avoiding(mdp, [t1, t2])
    return HiddenRegion(mdp, start, cells, [t1, t2], done, v_opt, v_hidden)
