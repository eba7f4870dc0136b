"""The game's rulebook: every rule that the in-process loop and the ROS coordinator both apply.

One place decides how many real samples a collection round takes (N_init, then N; MAL + random
noise adds ``N (1 - alpha) / alpha`` random-policy samples), whether another iteration fits the
budget, when the game stops early (``stop_success``), which iterations are evaluated and on
which episodes, how many NPG steps a policy move takes, whether a model fit is aggressive, and
what one iteration's metrics row holds. :class:`~mbrl_ros.core.stackelberg.StackelbergGame`
and :class:`~mbrl_ros.nodes.game_coordinator.GameCoordinator` call these and nothing else, so
``mbrl-ros train`` and ``mbrl-ros launch`` play the same game (test_core_equivalence /
test_ros_equivalence check it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from mbrl_ros.core.config import GameConfig
from mbrl_ros.core.schedule import GameSpec, ModelObjective, Player, game_spec
from mbrl_ros.core.world import evaluation_seeds

__all__ = ["CollectionRound", "GameRules", "IterationMetrics", "success_held"]


def success_held(history: list[dict], cfg: GameConfig) -> bool:
    """The stop_success rule: the last ``stop_success_iters`` evaluations (iterations without
    one are skipped) all reached ``stop_success``. Off when ``stop_success`` is 0."""
    k = cfg.stop_success_iters
    evaluated = [m for m in history if m.get("eval_success") is not None]
    return (
        cfg.stop_success > 0
        and len(evaluated) >= k
        and all(m["eval_success"] >= cfg.stop_success for m in evaluated[-k:])
    )


@dataclass(frozen=True)
class GameRules:
    """The rules of one game (configuration, game spec and the task's horizon)."""

    cfg: GameConfig
    spec: GameSpec
    horizon: int

    @classmethod
    def of(cls, cfg: GameConfig, horizon: int) -> "GameRules":
        return cls(cfg, game_spec(cfg.algo), int(horizon))

    # -- collection rounds -------------------------------------------------------------------
    @property
    def n_per_iter(self) -> int:
        """N: real samples of the deployed policy per iteration."""
        return self.cfg.n_per_iter(self.horizon)

    def round_target(self, iteration: int) -> int:
        """Samples of the deployed policy the round of ``iteration`` collects (N_init, then N)."""
        return int(self.cfg.n_init if iteration == 0 else self.n_per_iter)

    def random_target(self, n: int) -> int:
        """MAL + random noise: random-policy samples added to a round of ``n`` policy samples, so
        that a fraction 1 - alpha of the model's new data is random; 0 for every other game."""
        if self.spec.model_objective is not ModelObjective.RANDOM_NOISE:
            return 0
        return int(round(n * (1.0 - self.cfg.alpha) / max(self.cfg.alpha, 1e-6)))

    def whole_episodes(self, samples: int) -> int:
        """``samples`` rounded up to whole episodes (rounds end at an episode's end)."""
        return -(-int(samples) // self.horizon) * self.horizon

    # -- budget and stopping -----------------------------------------------------------------
    def budget_allows_iteration(self, samples: int, iteration: int) -> bool:
        """Iteration ``iteration`` (its whole round, random data included) fits the sample
        budget and ``max_iterations``, with ``samples`` real samples spent so far."""
        if self.cfg.max_iterations and iteration > self.cfg.max_iterations:
            return False
        n = self.n_per_iter
        return samples + self.whole_episodes(n) + self.whole_episodes(self.random_target(n)) <= self.cfg.samples

    def may_start_iteration(self, samples: int, iteration: int, history: list[dict]) -> tuple[bool, str]:
        """Whether the game goes on with ``iteration`` (> 0); the reason when it does not."""
        if success_held(history, self.cfg):
            return False, (
                f"success >= {self.cfg.stop_success} held for {self.cfg.stop_success_iters} evaluations (stop_success)"
            )
        if self.cfg.max_iterations and iteration > self.cfg.max_iterations:
            return False, f"max_iterations {self.cfg.max_iterations} played"
        if not self.budget_allows_iteration(samples, iteration):
            return False, f"the sample budget {self.cfg.samples} is spent ({samples} used)"
        return True, ""

    # -- evaluation ----------------------------------------------------------------------------
    def evaluates(self, iteration: int, samples: int) -> bool:
        """Whether ``iteration`` (ending with ``samples`` spent) is evaluated: every
        ``eval_every`` iterations, the initial one and the last one the budget allows."""
        return (
            iteration % self.cfg.eval_every == 0
            or iteration == 0
            or not self.budget_allows_iteration(samples, iteration + 1)
        )

    def eval_seeds(self, episodes: Optional[int] = None) -> list[int]:
        """The evaluation episodes: fixed by the task, the same for every run and algorithm."""
        n = self.cfg.eval_episodes if episodes is None else int(episodes)
        return evaluation_seeds(n) if n > 0 else []

    # -- the players' moves ----------------------------------------------------------------------
    def npg_steps(self) -> int:
        """K of a policy move: many for a follower (best response), a few for a leader."""
        return int(self.cfg.npg_steps_aggressive if self.spec.policy_aggressive else self.cfg.npg_steps_conservative)

    def follower_restarts(self) -> int:
        """Fresh policies a policy move also trains (:meth:`PolicyPlayer.best_response`): only
        when the policy best-responds (MAL, BR); a leader's conservative step has none."""
        return int(self.cfg.follower_restarts if self.spec.policy_aggressive else 0)

    def model_fit_aggressive(self, iteration: int) -> bool:
        """A model move fits to convergence when the model follows, and always for M_0."""
        return bool(self.spec.model_aggressive or iteration == 0)

    def leader_objective(self, J_model: Optional[float], model_objective: Optional[float]) -> Optional[float]:
        """The leader's objective of an iteration: J(pi, M) for PAL, the model's for MAL."""
        if self.spec.leader is Player.POLICY:
            return J_model
        if self.spec.leader is Player.MODEL:
            return model_objective
        return None


@dataclass
class IterationMetrics:
    """One line of ``metrics.jsonl``, the same fields from ``mbrl-ros train`` and the graph.

    Values a path does not measure stay None (e.g. ``buffer`` in the coordinator, which holds
    no buffer; ``fit_threads`` in the in-process loop, which reports ``threads``)."""

    iteration: int
    samples: int
    eval_success: Optional[float] = None
    eval_return: Optional[float] = None
    eval_final_error: Optional[float] = None
    leader: Optional[str] = None
    leader_objective: Optional[float] = None
    model_loss: Optional[float] = None
    model_objective: Optional[float] = None
    model_steps: Optional[int] = None
    model_holdout_loss: Optional[float] = None
    model_loss_new_data: Optional[float] = None  # the model's loss on the round's data before its next fit
    J_model: Optional[float] = None
    model_success: Optional[float] = None
    kl: Optional[float] = None
    kl_max: Optional[float] = None
    policy_std: Optional[float] = None
    follower_restart: Optional[int] = None  # which restart the follower kept (-1: the present policy)
    collect_return: Optional[float] = None
    collect_success: Optional[float] = None
    collected: Optional[int] = None
    collected_random: Optional[int] = None
    gate_passed: Optional[bool] = None
    gate_warning: Optional[str] = None
    buffer: Optional[int] = None
    policy_version: Optional[int] = None
    model_version: Optional[int] = None
    wall_s: Optional[float] = None
    iteration_s: Optional[float] = None
    fit_s: Optional[float] = None
    npg_s: Optional[float] = None
    collect_s: Optional[float] = None
    eval_s: Optional[float] = None
    threads: Optional[int] = None
    fit_threads: Optional[int] = None
    npg_threads: Optional[int] = None

    @classmethod
    def from_fields(cls, rules: GameRules, iteration: int, samples: int, **fields: Any) -> "IterationMetrics":
        """A row from a path's measurements; unknown keys are dropped (a player's report may
        carry more than the row holds), the leader and its objective come from the rules."""
        names = {f.name for f in dataclasses.fields(cls)}
        row = cls(
            iteration=int(iteration),
            samples=int(samples),
            **{k: v for k, v in fields.items() if k in names and k not in ("iteration", "samples")},
        )
        leader = rules.spec.leader
        row.leader = leader.value if leader is not None else None
        row.leader_objective = rules.leader_objective(row.J_model, row.model_objective)
        return row

    def set_evaluation(self, ev: dict) -> None:
        """Fill the evaluation fields from :func:`mbrl_ros.core.world.evaluate`'s result."""
        self.eval_success, self.eval_return = ev.get("success"), ev.get("return")
        self.eval_final_error, self.eval_s = ev.get("final_error"), ev.get("eval_s")

    def to_row(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class CollectionRound:
    """One collection round as the referee counts it: episodes of the deployed policy until
    ``target`` samples, then (MAL + random noise) random-policy episodes until ``random_target``.

    An episode counts only if it is of the behaviour the round asks for now and, for policy
    data, of the deployed version (a collector that missed a hand-off sends stale episodes:
    they reach the buffers but do not fill the round)."""

    target: int
    random_target: int = 0
    episode_ids: list[str] = dataclasses.field(default_factory=list)
    samples: int = 0
    random_samples: int = 0
    returns: list[float] = dataclasses.field(default_factory=list)
    successes: list[bool] = dataclasses.field(default_factory=list)

    @classmethod
    def for_iteration(cls, rules: GameRules, iteration: int) -> "CollectionRound":
        n = rules.round_target(iteration)
        return cls(n, rules.random_target(n))

    @property
    def behavior(self) -> str:
        """Which data the collectors gather now: the deployed policy's, then random."""
        return "random" if self.samples >= self.target and self.random_target > 0 else "policy"

    @property
    def complete(self) -> bool:
        return self.samples >= self.target and self.random_samples >= self.random_target

    def count(
        self,
        episode_id: str,
        behavior: str,
        policy_version: int,
        length: int,
        episode_return: float,
        success: bool,
        deployed_version: int,
    ) -> bool:
        """Count an episode if the round wants it now; returns whether it was counted."""
        if behavior != self.behavior or (behavior == "policy" and policy_version != deployed_version):
            return False
        self.episode_ids.append(episode_id)
        if behavior == "random":
            self.random_samples += int(length)
        else:
            self.samples += int(length)
            self.returns.append(float(episode_return))
            self.successes.append(bool(success))
        return True

    def summary(self) -> dict[str, Any]:
        """The round's figures for the metrics row."""
        return {
            "collect_return": float(sum(self.returns) / max(len(self.returns), 1)),
            "collect_success": float(sum(self.successes) / max(len(self.successes), 1)),
            "collected": self.samples + self.random_samples,
            "collected_random": self.random_samples,
        }
