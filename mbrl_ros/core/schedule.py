"""The Stackelberg game schedules (PAL, MAL, GDA, BR and the MAL fixes) and their referee.

One description of "who leads, who follows, how aggressively each is updated, and in which
order", shared by the in-process training loop (:mod:`mbrl_ros.core.stackelberg`) and the ROS
game coordinator node. The :class:`Referee` is a small state machine that owns the iteration
counter and the phase, and refuses any step out of order (a policy computed on a stale model,
a model fitted before the newest policy's data arrived). No ROS and no torch in this file.

Paper: Rajeswaran, Mordatch, Kumar, "A Game Theoretic Framework for Model Based RL", ICML 2020.
- PAL (Algorithm 3): policy is the leader (conservative), the model the follower (aggressive,
  recent data only).
- MAL (Algorithm 4): model is the leader (conservative, all data), the policy the follower
  (aggressive).
- GDA: no leader; both players take conservative steps from iteration-k quantities.
- BR: no leader; both players best-respond (aggressive) to iteration-k quantities.
- MAL + agent reward / MAL + random noise: MAL with the poster's fixes to the model objective.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional


class Player(str, enum.Enum):
    POLICY = "policy"
    MODEL = "model"


class Phase(str, enum.Enum):
    """Phases of one game iteration. GATE/DEPLOY only move a policy to the robots."""

    COLLECT = "collect"  # run the deployed policy in the world, gather N real samples
    FIT_MODEL = "fit_model"  # the model player's update
    IMPROVE_POLICY = "improve_policy"  # the policy player's update (NPG steps in the model)
    GATE = "gate"  # safety checks on the candidate policy
    DEPLOY = "deploy"  # the approved policy becomes the one the collectors run
    DONE = "done"


class ModelObjective(str, enum.Enum):
    LOSS = "loss"  # l(M, mu_W^pi): prediction loss on the policy's data
    AGENT_REWARD = "agent_reward"  # alpha * loss - (1 - alpha) * J(pi, M)
    RANDOM_NOISE = "random_noise"  # loss on alpha * mu^pi + (1 - alpha) * mu^random


@dataclass(frozen=True)
class GameSpec:
    """The explicit, named configuration of one Stackelberg (or independent) game."""

    name: str
    leader: Optional[Player]  # None: simultaneous, independent players (GDA, BR)
    policy_aggressive: bool  # K >> 1 NPG steps (follower) vs a few (leader)
    model_aggressive: bool  # fit to convergence (follower) vs a few epochs, warm start (leader)
    buffer: str  # "fifo" (recent data, PAL) or "aggregate" (all data, MAL)
    model_objective: ModelObjective = ModelObjective.LOSS

    @property
    def follower(self) -> Optional[Player]:
        if self.leader is None:
            return None
        return Player.MODEL if self.leader is Player.POLICY else Player.POLICY

    def iteration_phases(self) -> tuple[Phase, ...]:
        """Order of the phases inside one iteration (after the initial data collection).

        PAL: the model best-responds to the newest data, then the policy takes conservative
        steps in that model. MAL: the policy best-responds to the current model, its data is
        collected, then the model takes a conservative step on all data. GDA/BR: the policy
        steps in M_k and the model steps on the data of pi_k; we run the policy step first so
        that it provably uses M_k (simultaneous updates from iteration-k quantities).
        """
        if self.leader is Player.POLICY:
            return (Phase.FIT_MODEL, Phase.IMPROVE_POLICY, Phase.GATE, Phase.DEPLOY, Phase.COLLECT)
        if self.leader is Player.MODEL:
            return (Phase.IMPROVE_POLICY, Phase.GATE, Phase.DEPLOY, Phase.COLLECT, Phase.FIT_MODEL)
        return (Phase.IMPROVE_POLICY, Phase.FIT_MODEL, Phase.GATE, Phase.DEPLOY, Phase.COLLECT)

    def initial_phases(self) -> tuple[Phase, ...]:
        """Before iteration 1: collect N_init samples; MAL also fits its first model M_0."""
        if self.leader is Player.MODEL:
            return (Phase.COLLECT, Phase.FIT_MODEL)
        if self.leader is None:
            return (Phase.COLLECT, Phase.FIT_MODEL)
        return (Phase.COLLECT,)


GAMES: dict[str, GameSpec] = {
    "pal": GameSpec("pal", Player.POLICY, policy_aggressive=False, model_aggressive=True, buffer="fifo"),
    "mal": GameSpec("mal", Player.MODEL, policy_aggressive=True, model_aggressive=False, buffer="aggregate"),
    "gda": GameSpec("gda", None, policy_aggressive=False, model_aggressive=False, buffer="aggregate"),
    "br": GameSpec("br", None, policy_aggressive=True, model_aggressive=True, buffer="aggregate"),
    "mal-agent-reward": GameSpec(
        "mal-agent-reward",
        Player.MODEL,
        policy_aggressive=True,
        model_aggressive=False,
        buffer="aggregate",
        model_objective=ModelObjective.AGENT_REWARD,
    ),
    "mal-noise": GameSpec(
        "mal-noise",
        Player.MODEL,
        policy_aggressive=True,
        model_aggressive=False,
        buffer="aggregate",
        model_objective=ModelObjective.RANDOM_NOISE,
    ),
}


def game_spec(name: str) -> GameSpec:
    """Look up a game by its CLI name; a clear error lists the known ones."""
    try:
        return GAMES[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; choose one of {', '.join(GAMES)}") from None


class OrderViolation(RuntimeError):
    """A step was offered out of the game's order (e.g. a policy computed on a stale model)."""


class Referee:
    """Owns the iteration and the phase; accepts each player's result only in order.

    Versions: the referee counts model versions (one per accepted fit), policy versions (one
    per accepted improvement) and which policy version the collected data comes from. A policy
    must be computed on the model version the schedule expects, a model fit must include the
    data of the newest deployed policy, and nothing is accepted in the wrong phase.
    """

    def __init__(self, spec: GameSpec, max_iterations: Optional[int] = None) -> None:
        self.spec = spec
        self.max_iterations = max_iterations
        self.iteration = 0  # 0 = initial data collection, then 1, 2, ...
        self.model_version = 0  # 0 = no model yet
        self.policy_version = 0  # 0 = the initial (random-init) policy, deployed at start
        self.deployed_policy_version = 0
        self.candidate_policy_version: Optional[int] = None
        self.data_policy_version = -1  # newest policy version whose data is complete
        self._plan = list(spec.initial_phases())
        self._step = 0
        self.history: list[tuple[int, Phase]] = []

    # -- state --------------------------------------------------------------------------
    @property
    def phase(self) -> Phase:
        if self._step >= len(self._plan):
            return Phase.DONE
        return self._plan[self._step]

    def _advance(self) -> None:
        self.history.append((self.iteration, self.phase))
        self._step += 1
        if self._step >= len(self._plan):
            if self.max_iterations is not None and self.iteration >= self.max_iterations:
                return  # phase becomes DONE
            self.iteration += 1
            self._plan = list(self.spec.iteration_phases())
            self._step = 0

    def finish(self) -> None:
        """Stop the game (sample budget exhausted)."""
        self._plan = []
        self._step = 0

    def _expect(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise OrderViolation(
                f"{self.spec.name}: got a {phase.value} result in phase {self.phase.value} (iteration {self.iteration})"
            )

    # -- results offered by the players and the collectors ------------------------------
    def expected_model_version_for_policy(self) -> int:
        """The model version the next policy step must use (the latest accepted model)."""
        return self.model_version

    def data_collected(self, policy_version: int) -> None:
        """All N samples of the deployed policy arrived."""
        self._expect(Phase.COLLECT)
        if policy_version != self.deployed_policy_version:
            raise OrderViolation(
                f"{self.spec.name}: data from policy v{policy_version}, but v{self.deployed_policy_version} is deployed"
            )
        self.data_policy_version = policy_version
        self._advance()

    def model_fitted(self, data_policy_version: int) -> int:
        """The model player finished a fit on data up to ``data_policy_version``; returns the new version."""
        self._expect(Phase.FIT_MODEL)
        if data_policy_version != self.data_policy_version:
            raise OrderViolation(
                f"{self.spec.name}: model fitted on data up to policy v{data_policy_version}, "
                f"but the newest data is from v{self.data_policy_version}"
            )
        self.model_version += 1
        self._advance()
        return self.model_version

    def policy_improved(self, model_version: int) -> int:
        """The policy player finished its steps in ``model_version``; returns the candidate version."""
        self._expect(Phase.IMPROVE_POLICY)
        if model_version != self.expected_model_version_for_policy():
            raise OrderViolation(
                f"{self.spec.name}: policy computed on model v{model_version}, expected v{self.model_version} (stale model)"
            )
        self.policy_version += 1
        self.candidate_policy_version = self.policy_version
        self._advance()
        return self.policy_version

    def gate_passed(self, policy_version: int) -> None:
        self._expect(Phase.GATE)
        if policy_version != self.candidate_policy_version:
            raise OrderViolation(
                f"{self.spec.name}: gate result for v{policy_version}, candidate is v{self.candidate_policy_version}"
            )
        self._advance()

    def gate_failed(self, policy_version: int) -> None:
        """A rejected candidate is never deployed: the previous policy keeps running."""
        self._expect(Phase.GATE)
        self.candidate_policy_version = None
        self._advance()  # GATE -> DEPLOY
        self._advance()  # DEPLOY skipped: keep the deployed version

    def deployed(self, policy_version: int) -> None:
        self._expect(Phase.DEPLOY)
        if policy_version != self.candidate_policy_version:
            raise OrderViolation(
                f"{self.spec.name}: deploying v{policy_version}, approved candidate is v{self.candidate_policy_version}"
            )
        self.deployed_policy_version = policy_version
        self._advance()
