"""A seeded family of finite trap MDPs: the poster's hidden-region world, generalised.

Every member has the same *structure* and random *parameters*:

- a start state with a **tempting action**: a small sure reward (``exit``: the episode ends;
  ``lure``: the agent enters a lure state that pays a small reward per step);
- a corridor ``c1..cL`` walked with a **forward** action (succeeds with prob 1 - slip, else the
  agent bumps and stays; a bump costs more than a move, so R depends on s');
- the **hidden transition** (the door): one (state, action) pair at corridor position ``k``
  (0 = the start itself) that leads into a rewarding region. Corridor cells after the door are
  a dead end;
- a **region** of 1-3 states with random internal dynamics (a small leak to ``done``) in which
  the reward is paid on arrival and depends on the state arrived in (R(s, a, s'));
- every other action is a distractor: quit (to ``done``), reset (back to start) or stay.

The random parameters are the sizes (actions, corridor length, region size), the door's
position and action, slip, horizon, reward scale (0.1x to 10x: defaults must not assume a
scale), costs and the tempting kind. A member is accepted only if it is a *trap*: the optimal
return goes through the door and beats the best return of a policy that never enters the
region (the tempting value) by a margin. ``trap_mdp(seed)`` is deterministic per seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mbrl_ros.core.finite_mdp import FiniteMDP, optimal_value_avoiding


@dataclass
class TrapWorld:
    """One generated trap MDP with its landmarks (see :func:`trap_mdp`)."""

    mdp: FiniteMDP
    seed: int
    start: int
    corridor: list[int]
    door: tuple[int, int]  # the hidden transition (state, action)
    region: list[int]
    done: int
    tempting_action: int
    forward_action: int
    optimal_value: float  # exact optimum of the world (goes through the door)
    tempting_value: float  # best return of a policy that never enters the region
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_value(self) -> float:
        """Alias of ``tempting_value``: what a model that hides the region settles for."""
        return self.tempting_value

    def score(self, value: float) -> float:
        """Normalised return: 0 at the tempting value, 1 at the optimum."""
        return (value - self.tempting_value) / (self.optimal_value - self.tempting_value)


def _draw(rng: np.random.Generator) -> dict[str, Any]:
    """The random parameters of one family member."""
    n_actions = int(rng.integers(2, 5))
    corridor = int(rng.integers(1, 5))
    # with 2 actions the start has no room for tempting + forward + door, so the door is further in
    door_pos = int(rng.integers(0 if n_actions >= 3 else 1, corridor + 1))
    scale = float(10 ** rng.uniform(-1.0, 1.0))
    move = scale * float(rng.uniform(0.02, 0.2))
    return {
        "n_actions": n_actions,
        "corridor": corridor,
        "door_pos": door_pos,
        "region_size": int(rng.integers(1, 4)),
        "slip": float(rng.uniform(0.0, 0.25)),
        "horizon": int(rng.integers(max(15, door_pos + 6), 41)),
        "reward_scale": scale,
        "move_cost": move,
        "bump_cost": move + scale * float(rng.uniform(0.0, 0.2)),
        "tempting_kind": str(rng.choice(["exit", "lure"])),
        "tempting_reward": scale * float(rng.uniform(0.5, 2.0)),
        "lure_reward": scale * float(rng.uniform(0.02, 0.15)),
        "region_rewards": (scale * rng.uniform(0.3, 1.2, size=3)).tolist(),
        "region_leak": float(rng.uniform(0.0, 0.05)),
    }


def _build(p: dict[str, Any], rng: np.random.Generator, seed: int) -> TrapWorld:
    A, L, k, K = p["n_actions"], p["corridor"], p["door_pos"], p["region_size"]
    start = 0
    cells = list(range(1, L + 1))
    lure = L + 1 if p["tempting_kind"] == "lure" else None
    first_region = L + 1 + (lure is not None)
    region = list(range(first_region, first_region + K))
    done = first_region + K
    S = done + 1
    P = np.zeros((S, A, S))
    R = np.zeros((S, A, S))
    names = (
        ["start"] + [f"c{i}" for i in cells] + (["lure"] if lure else []) + [f"T{i + 1}" for i in range(K)] + ["done"]
    )
    actions = rng.permutation(A)
    tempt, forward = int(actions[0]), int(actions[1])
    chain = [start] + cells  # position i of the corridor is chain[i]
    door_state = chain[k]
    others = [a for a in range(A) if a != forward and not (door_state == start and a == tempt)]
    door_action = int(rng.choice(others)) if others else forward
    region_r = np.asarray(p["region_rewards"][:K])
    slip = p["slip"]

    def move(s: int, a: int, target_dist: np.ndarray, reward_to: np.ndarray) -> None:
        """(s, a) reaches ``target_dist`` with prob 1 - slip, else bumps and stays (bump cost)."""
        P[s, a] = (1.0 - slip) * target_dist
        P[s, a, s] += slip
        R[s, a] = reward_to
        R[s, a, s] = -p["bump_cost"]

    # region: arrival rewards depend on the state arrived in, so R really is R(s, a, s')
    arrive = np.zeros(S)
    arrive[region] = region_r
    arrive[done] = 0.0
    for s in region:
        for a in range(A):
            P[s, a, region] = (1.0 - p["region_leak"]) * rng.dirichlet(np.ones(K))
            P[s, a, done] = p["region_leak"]
            R[s, a] = arrive
    # the door: into a random region state (weighted), reward on arrival
    entry = np.zeros(S)
    entry[region] = rng.dirichlet(np.ones(K) * 2.0)
    # distractors first; forward, door and tempting overwrite their pairs
    for s in chain:
        for a in range(A):
            kind = rng.choice(["quit", "reset", "stay"])
            if kind == "quit" or (kind == "reset" and s == start):
                P[s, a, done] = 1.0
            elif kind == "reset":
                P[s, a, start] = 1.0
            else:
                P[s, a, s] = 1.0
                R[s, a, s] = -p["move_cost"]
    for i, s in enumerate(chain):
        nxt = np.zeros(S)
        if i < L:
            nxt[chain[i + 1]] = 1.0
        else:
            nxt[done] = 1.0  # the corridor's end is a dead end
        P[s, forward] = 0.0
        move(s, forward, nxt, np.full(S, -p["move_cost"]))
    P[door_state, door_action] = 0.0
    move(door_state, door_action, entry, arrive - p["move_cost"])
    P[start, tempt] = 0.0
    R[start, tempt] = 0.0
    if lure is None:
        P[start, tempt, done] = 1.0
        R[start, tempt, :] = p["tempting_reward"]
    else:
        P[start, tempt, lure] = 1.0
        R[start, tempt, lure] = p["tempting_reward"]
        P[lure, :, lure] = 1.0  # every action stays in the lure and pays a little
        R[lure, :, lure] = p["lure_reward"]
    P[done, :, done] = 1.0
    mdp = FiniteMDP(
        P,
        R,
        start=start,
        terminal=[done],
        horizon=p["horizon"],
        state_names=names,
        action_names=[f"a{a}" for a in range(A)],
    )
    _, v_opt = mdp.optimal()
    v_tempt = optimal_value_avoiding(mdp, region)
    return TrapWorld(
        mdp, seed, start, cells, (door_state, door_action), region, done, tempt, forward, v_opt, v_tempt, dict(p)
    )


def entry_probability(world: TrapWorld, policy=None) -> float:
    """Probability that ``policy`` (default: the optimal one) enters the region. The region is
    entered only through the door, so this is sum_t x_t(door) P(region | door)."""
    mdp = world.mdp
    pi = mdp.optimal()[0] if policy is None else policy
    s, a = world.door
    return float(mdp.occupancy(pi)[:, s, a].sum() * mdp.P[s, a, world.region].sum())


def is_trap(world: TrapWorld, margin: float = 0.5) -> bool:
    """The trap structure: the optimum beats the tempting value by ``margin`` times the tempting
    reward, and the optimal policy enters the region (through the door) with probability > 1/2."""
    if world.optimal_value < world.tempting_value + margin * world.params["tempting_reward"]:
        return False
    return entry_probability(world) > 0.5


def trap_mdp(seed: int, max_tries: int = 100) -> TrapWorld:
    """The family member of ``seed`` (deterministic): draws parameters until the MDP is a trap."""
    rng = np.random.default_rng([20240, int(seed)])
    for _ in range(max_tries):
        world = _build(_draw(rng), rng, int(seed))
        if is_trap(world):
            return world
    raise RuntimeError(f"no trap MDP found for seed {seed} in {max_tries} draws")


def trap_family(n: int, first_seed: int = 0) -> list[TrapWorld]:
    """``n`` consecutive family members."""
    return [trap_mdp(s) for s in range(first_seed, first_seed + n)]
