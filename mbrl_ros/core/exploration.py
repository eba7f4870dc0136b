"""Random policies for MAL + random noise (the poster's fix 2), as the poster means them.

The fix trains the model on ``alpha * mu^pi + (1 - alpha) * E_{pi' random}[mu^{pi'}]``: part of
its data comes from *random policies*. Independent uniform actions are a poor stand-in: they
average out within a few steps, so the system barely leaves its start (on D'Claw the valve
never turned more than 0.83 rad in an episode; issue 17). A random *policy* is a fixed,
randomly drawn function of the state held for a whole episode, so its actions persist and
the visited states spread over the reachable space. Kinds (``noise_policy`` in the config):

- ``mlp``: a freshly initialised tanh MLP per episode on the standardised observation, with a
  random constant offset (a random "intent"), plus a little temporally correlated noise.
- ``ou``: temporally correlated (Ornstein-Uhlenbeck) action noise around a random constant.
- ``uniform``: the old independent uniform actions (kept for comparison).

Every draw comes from the game's numpy generator, so runs (and resumed runs) are reproducible.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from mbrl_ros.core.buffers import Episode
from mbrl_ros.core.world import collect_episodes

ActFn = Callable[[np.ndarray], np.ndarray]
NOISE_POLICIES = ("mlp", "ou", "uniform")
MLP_HIDDEN = 32  # width of the random policy's hidden layer
MLP_GAIN = 1.5  # weight scale of the random MLP (larger: more saturated, more persistent actions)
OU_THETA, OU_SIGMA = 0.15, 0.3  # OU mean reversion per step and noise scale


class _Standardiser:
    """Observation mean / spread from the buffer, so a random network sees order-1 inputs."""

    def __init__(self, obs: Optional[np.ndarray], obs_dim: int) -> None:
        if obs is None or len(obs) < 2:
            self.mean, self.scale = np.zeros(obs_dim), np.ones(obs_dim)
        else:
            self.mean = obs.mean(0)
            std = obs.std(0)
            self.scale = np.where(std < 1e-6, 1.0, std)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return (np.asarray(obs, dtype=np.float64) - self.mean) / self.scale


def random_mlp_policy(
    obs_dim: int,
    act_dim: int,
    rng: np.random.Generator,
    standardise: Optional[Callable[[np.ndarray], np.ndarray]] = None,
) -> ActFn:
    """A freshly initialised tanh MLP ``a = tanh(W2 tanh(W1 s + b1) + b2 + c) + ou`` (one episode)."""
    std = standardise or (lambda o: np.asarray(o, dtype=np.float64))
    w1 = rng.normal(0.0, MLP_GAIN / np.sqrt(obs_dim), (obs_dim, MLP_HIDDEN))
    b1 = rng.normal(0.0, 0.5, MLP_HIDDEN)
    w2 = rng.normal(0.0, MLP_GAIN / np.sqrt(MLP_HIDDEN), (MLP_HIDDEN, act_dim))
    intent = rng.uniform(-1.0, 1.0, act_dim)
    noise = _OU(act_dim, rng, 0.5 * OU_SIGMA)

    def act(obs: np.ndarray) -> np.ndarray:
        h = np.tanh(std(obs) @ w1 + b1)
        return np.clip(np.tanh(h @ w2 + intent) + noise(), -1.0, 1.0)

    return act


class _OU:
    """Ornstein-Uhlenbeck noise, x' = x - theta x + sigma N(0, 1), started at 0."""

    def __init__(self, act_dim: int, rng: np.random.Generator, sigma: float = OU_SIGMA) -> None:
        self.x, self.rng, self.sigma = np.zeros(act_dim), rng, sigma

    def __call__(self) -> np.ndarray:
        self.x = self.x - OU_THETA * self.x + self.sigma * self.rng.standard_normal(self.x.shape)
        return self.x


def ou_policy(act_dim: int, rng: np.random.Generator) -> ActFn:
    """Correlated noise around a random constant action (one episode)."""
    mean = rng.uniform(-1.0, 1.0, act_dim)
    noise = _OU(act_dim, rng)
    return lambda _obs: np.clip(mean + noise(), -1.0, 1.0)


def uniform_policy(act_dim: int, rng: np.random.Generator) -> ActFn:
    """Independent uniform actions in [-1, 1] (the earlier stand-in)."""
    return lambda _obs: rng.uniform(-1.0, 1.0, act_dim)


def new_random_policy(
    kind: str, obs_dim: int, act_dim: int, rng: np.random.Generator, obs_data: Optional[np.ndarray] = None
) -> ActFn:
    """One random policy of ``kind`` (``NOISE_POLICIES``); ``obs_data`` standardises the MLP's input."""
    if kind == "mlp":
        return random_mlp_policy(obs_dim, act_dim, rng, _Standardiser(obs_data, obs_dim))
    if kind == "ou":
        return ou_policy(act_dim, rng)
    if kind == "uniform":
        return uniform_policy(act_dim, rng)
    raise ValueError(f"noise_policy must be one of {', '.join(NOISE_POLICIES)}, got {kind!r}")


def collect_random_episodes(
    world: Any,
    kind: str,
    n_samples: int,
    rng: np.random.Generator,
    id_prefix: str,
    obs_data: Optional[np.ndarray] = None,
) -> list[Episode]:
    """Whole episodes, a new random policy for each, until ``n_samples`` transitions (policy version -1)."""
    info = world.task.info
    episodes: list[Episode] = []
    total = 0
    while total < n_samples:
        act = new_random_policy(kind, info.obs_dim, info.act_dim, rng, obs_data)
        ep = collect_episodes(world, act, 1, rng, -1, f"{id_prefix}-{len(episodes)}")[0]  # one episode
        episodes.append(ep)
        total += len(ep)
    return episodes
