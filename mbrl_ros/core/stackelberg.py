"""The one training loop of every game: PAL, MAL, GDA, BR and the two MAL fixes.

The loop does not decide the order of the moves: the :class:`~mbrl_ros.core.schedule.Referee`
does (the same referee the ROS game coordinator uses), and every result is handed back to it,
so a step out of order raises ``OrderViolation``. Played out, one iteration reads as the paper:

PAL (Algorithm 3, policy leads)            MAL (Algorithm 4, model leads)
  FIT_MODEL:  M_{k+1} = argmin l(M, D_fifo)   IMPROVE_POLICY: pi_{k+1} = K >> 1 NPG steps in M_k
  IMPROVE:    pi_{k+1} = K NPG steps in M_{k+1} GATE, DEPLOY
  GATE, DEPLOY                                COLLECT: N samples of pi_{k+1}, aggregate
  COLLECT:    N samples of pi_{k+1} -> FIFO   FIT_MODEL: M_{k+1} = few epochs on all data

GDA and BR play the policy step in M_k and the model step on the data of pi_k (simultaneous
moves), GDA conservatively and BR as best responses. Before iteration 1 the referee asks for
N_init samples of the initial policy (and, when the model moves first in an iteration's
order, for M_0).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Optional

import numpy as np
import torch

from mbrl_ros.core.buffers import EpisodeBuffer
from mbrl_ros.core.checkpoint import (
    load_module, load_optimizer, module_tensors, optimizer_state, read_checkpoint, write_checkpoint,
)
from mbrl_ros.core.config import GameConfig
from mbrl_ros.core.model_player import ModelPlayer
from mbrl_ros.core.policy_player import PolicyPlayer, StartStates
from mbrl_ros.core.schedule import ModelObjective, Phase, Player, Referee, game_spec
from mbrl_ros.core.world import collect_episodes, evaluate, evaluation_seeds, random_policy

__all__ = ["StackelbergGame", "success_held"]


def success_held(history: list[dict], cfg: GameConfig) -> bool:
    """The stop_success rule (the in-process loop and the ROS coordinator both apply it): the
    last ``stop_success_iters`` evaluations (iterations without one are skipped) all reached
    ``stop_success``. Off when ``stop_success`` is 0."""
    k = cfg.stop_success_iters
    evaluated = [m for m in history if m.get("eval_success") is not None]
    return cfg.stop_success > 0 and len(evaluated) >= k and all(
        m["eval_success"] >= cfg.stop_success for m in evaluated[-k:])


class StackelbergGame:
    """A game between a policy player and a model player in one world, refereed by phase."""

    def __init__(
        self,
        cfg: GameConfig,
        world: Any,
        eval_world: Optional[Any] = None,
        device: Optional[str] = None,
    ) -> None:
        cfg.validate()
        self.cfg = cfg
        self.spec = game_spec(cfg.algo)
        self.world = world
        self.eval_world = eval_world if eval_world is not None else world
        self.task = world.task
        if self.task.info.task_id != cfg.task_id:
            raise ValueError(f"config is for task {cfg.task_id!r} but the world runs {self.task.info.task_id!r}")
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.model_player = ModelPlayer(self.task, cfg, device)
        self.policy_player = PolicyPlayer(self.task, cfg, device)
        capacity = cfg.buffer_size if self.spec.buffer == "fifo" else None
        self.buffer = EpisodeBuffer(self.spec.buffer, capacity)
        self.referee = Referee(self.spec)
        self.samples = 0  # real transitions collected for learning (evaluation not included)
        self.horizon = self.task.info.horizon
        self.n_per_iter = cfg.n_per_iter(self.horizon)
        self.eval_seeds = evaluation_seeds(cfg.eval_episodes)  # the same for every run of the task
        self.wall_s = 0.0  # accumulated over resumed runs
        self.core_budget: Optional[Any] = None  # a CoreBudget: torch threads re-chosen before every phase
        self._previous_policy: Optional[dict] = None
        self._it: dict[str, Any] = {}

    # -- budget ----------------------------------------------------------------------------
    def random_fraction_samples(self, n: int) -> int:
        """MAL + random noise: random-policy samples added to n policy samples (fraction 1 - alpha)."""
        if self.spec.model_objective is not ModelObjective.RANDOM_NOISE:
            return 0
        return int(round(n * (1.0 - self.cfg.alpha) / max(self.cfg.alpha, 1e-6)))

    def budget_allows_iteration(self, iteration: int) -> bool:
        """Iteration ``iteration`` fits the sample budget and max_iterations (samples as now)."""
        whole = lambda k: -(-k // self.horizon) * self.horizon  # episodes are collected whole
        n = whole(self.n_per_iter) + whole(self.random_fraction_samples(self.n_per_iter))
        if self.cfg.max_iterations and iteration > self.cfg.max_iterations:
            return False
        return self.samples + n <= self.cfg.samples

    def can_afford_iteration(self, history: list[dict]) -> bool:
        """Another iteration fits the sample budget (and max_iterations / stop_success allow it)."""
        if success_held(history, self.cfg):
            return False
        return self.budget_allows_iteration(self.referee.iteration)

    def evaluates(self, iteration: int) -> bool:
        """Whether ``iteration`` ends with an evaluation: every ``eval_every`` iterations, the
        initial one, and the last one the budget allows."""
        return (iteration % self.cfg.eval_every == 0 or iteration == 0
                or not self.budget_allows_iteration(iteration + 1))

    # -- the phases --------------------------------------------------------------------------
    def collect(self) -> None:
        """COLLECT: run the deployed (stochastic) policy in the world; add whole episodes to the buffer."""
        t0 = time.perf_counter()
        it, version = self.referee.iteration, self.referee.deployed_policy_version
        n = self.cfg.n_init if it == 0 else self.n_per_iter
        act = lambda o: self.policy_player.act(o, deterministic=False)
        episodes = collect_episodes(self.world, act, n, self.rng, version, f"it{it}-v{version}")
        n_random = self.random_fraction_samples(n)
        if n_random > 0:
            rand = random_policy(self.task.info.act_dim, self.rng)
            episodes += collect_episodes(self.world, rand, n_random, self.rng, -1, f"it{it}-random")
        for ep in episodes:
            self.buffer.add_episode(ep.validate(self.task))
        self.samples += sum(len(e) for e in episodes)
        own = [e for e in episodes if e.policy_version == version]
        self._it.update(
            collect_return=float(np.mean([e.ret for e in own])),
            collect_success=float(np.mean([bool(e.success) for e in own])),
            collected=sum(len(e) for e in episodes),
            collect_s=self._it.get("collect_s", 0.0) + time.perf_counter() - t0,
        )
        self.referee.data_collected(version)

    def fit_model(self) -> None:
        """FIT_MODEL: the model player's move (aggressive for a follower, and for M_0)."""
        aggressive = self.spec.model_aggressive or self.referee.iteration == 0
        r = self.model_player.fit(self.buffer, aggressive, policy=self.policy_player.policy)
        self.referee.model_fitted(self.referee.data_policy_version)
        self._it.update(model_loss=r["loss"], model_objective=r.get("objective", r["loss"]), model_steps=r["steps"],
                        model_holdout_loss=r.get("holdout_loss"), fit_s=self._it.get("fit_s", 0.0) + r["fit_s"])

    def improve_policy(self) -> None:
        """IMPROVE_POLICY: the policy player's move: K NPG steps in the latest model."""
        k = self.cfg.npg_steps_aggressive if self.spec.policy_aggressive else self.cfg.npg_steps_conservative
        self._previous_policy = copy.deepcopy(self.policy_player.policy.state_dict())
        model_version = self.referee.model_version
        r = self.policy_player.improve(self.model_player.ensemble, StartStates.from_buffer(self.buffer), k)
        self.referee.policy_improved(model_version)
        self._it.update(J_model=r["J_model"], model_success=r["model_success"], kl=r["kl"], kl_max=r["kl_max"],
                        policy_std=r["policy_std"], npg_s=self._it.get("npg_s", 0.0) + r["npg_s"])

    def gate(self) -> None:
        """GATE: a candidate with non-finite weights or actions never reaches the world."""
        version = self.referee.candidate_policy_version
        obs = self.buffer.arrays()["obs"][:: max(1, len(self.buffer) // 256)]
        ok = self.policy_player.parameters_finite() and bool(np.all(np.isfinite(self.policy_player.act(obs))))
        if ok:
            self.referee.gate_passed(version)
        else:
            self.policy_player.policy.load_state_dict(self._previous_policy)
            self.referee.gate_failed(version)
        self._it["gate_passed"] = ok

    def deploy(self) -> None:
        """DEPLOY: the approved candidate becomes the policy that collects data."""
        self.referee.deployed(self.referee.candidate_policy_version)

    PHASES: dict[Phase, Callable[["StackelbergGame"], None]] = {
        Phase.COLLECT: collect,
        Phase.FIT_MODEL: fit_model,
        Phase.IMPROVE_POLICY: improve_policy,
        Phase.GATE: gate,
        Phase.DEPLOY: deploy,
    }

    # -- one iteration ---------------------------------------------------------------------
    def play_iteration(self) -> dict:
        """Play every phase the referee plans for the current iteration; evaluate; return metrics."""
        t0 = time.perf_counter()
        iteration = self.referee.iteration
        self._it = {}
        threads = []
        while self.referee.iteration == iteration and self.referee.phase is not Phase.DONE:
            if self.core_budget is not None:
                threads.append(self.core_budget.choose())
            self.PHASES[self.referee.phase](self)
        ev: dict[str, Any] = {"success": None, "return": None, "final_error": None, "eval_s": 0.0}
        if self.evaluates(iteration):
            ev = evaluate(self.eval_world, lambda o: self.policy_player.act(o, deterministic=True), self.eval_seeds)
        self.wall_s += time.perf_counter() - t0
        leader = self.spec.leader
        it = self._it
        if leader is Player.POLICY:
            leader_objective = it.get("J_model")
        elif leader is Player.MODEL:  # l(M, D), or alpha l - (1 - alpha) J/scale with the agent reward
            leader_objective = it.get("model_objective")
        else:
            leader_objective = None
        return {
            "iteration": iteration,
            "samples": self.samples,
            "eval_success": ev["success"],
            "eval_return": ev["return"],
            "eval_final_error": ev["final_error"],
            "leader": leader.value if leader else None,
            "leader_objective": leader_objective,
            "model_loss": it.get("model_loss"),
            "J_model": it.get("J_model"),
            "model_success": it.get("model_success"),
            "kl": it.get("kl"),
            "kl_max": it.get("kl_max"),
            "policy_std": it.get("policy_std"),
            "model_steps": it.get("model_steps"),
            "model_holdout_loss": it.get("model_holdout_loss"),
            "collect_return": it.get("collect_return"),
            "collect_success": it.get("collect_success"),
            "buffer": len(self.buffer),
            "policy_version": self.referee.deployed_policy_version,
            "model_version": self.referee.model_version,
            "wall_s": self.wall_s,
            "fit_s": it.get("fit_s", 0.0),
            "npg_s": it.get("npg_s", 0.0),
            "collect_s": it.get("collect_s", 0.0),
            "eval_s": ev["eval_s"],
            "iteration_s": time.perf_counter() - t0,
            "threads": max(threads) if threads else torch.get_num_threads(),
        }

    def run(self, on_iteration: Optional[Callable[[dict], None]] = None, history: Optional[list[dict]] = None,
            stop_requested: Optional[Callable[[], bool]] = None) -> list[dict]:
        """Play until the sample budget (or max_iterations) is spent; returns every iteration's metrics.

        ``history``: metrics of iterations played before a resume (for the stop_success rule).
        ``stop_requested``: asked between iterations; True ends the game there (a clean end:
        the checkpoint and the files are those of a finished run).
        """
        history = list(history or [])
        while self.referee.phase is not Phase.DONE:
            if self.referee.iteration > 0 and (
                (stop_requested is not None and stop_requested()) or not self.can_afford_iteration(history)
            ):
                self.referee.finish()
                break
            metrics = self.play_iteration()
            history.append(metrics)
            if on_iteration is not None:
                on_iteration(metrics)
        return history

    # -- checkpoints (at iteration boundaries) ---------------------------------------------
    def save(self, directory) -> None:
        r = self.referee
        if r.phase is not Phase.DONE and r._step != 0:
            raise RuntimeError("checkpoints are taken between iterations only")
        tensors: dict[str, torch.Tensor] = {}
        tensors.update(module_tensors("policy", self.policy_player.policy))
        tensors.update(module_tensors("value", self.policy_player.value))
        tensors.update(module_tensors("ensemble", self.model_player.ensemble))
        t_vopt, m_vopt = optimizer_state("value_opt", self.policy_player.value_optimizer)
        t_mopt, m_mopt = optimizer_state("model_opt", self.model_player.optimizer)
        tensors.update(t_vopt)
        tensors.update(t_mopt)
        tensors["torch_rng"] = torch.get_rng_state()
        device = self.policy_player.device
        if device.type == "cuda":  # on CUDA the players draw from the device's generator
            tensors["cuda_rng"] = torch.cuda.get_rng_state(device)
        completed = r.iteration - 1  # the referee already stands at the next iteration (or finished)
        state = {
            "config": self.cfg.to_dict(),
            "completed_iteration": completed,
            "referee": {
                "model_version": r.model_version, "policy_version": r.policy_version,
                "deployed_policy_version": r.deployed_policy_version, "data_policy_version": r.data_policy_version,
            },
            "samples": self.samples,
            "wall_s": self.wall_s,
            "model_fits": self.model_player.n_fits,
            "npg_updates": self.policy_player.n_updates,
            "numpy_rng": self.rng.bit_generator.state,
            "value_optimizer": m_vopt,
            "model_optimizer": m_mopt,
        }
        write_checkpoint(directory, tensors, state, self.buffer)

    def load(self, directory) -> dict:
        """Restore a checkpoint written by :meth:`save`; the next iteration continues exactly."""
        tensors, state = read_checkpoint(directory)
        load_module("policy", self.policy_player.policy, tensors)
        load_module("value", self.policy_player.value, tensors)
        load_module("ensemble", self.model_player.ensemble, tensors)
        load_optimizer("value_opt", self.policy_player.value_optimizer, tensors, state["value_optimizer"])
        load_optimizer("model_opt", self.model_player.optimizer, tensors, state["model_optimizer"])
        torch.set_rng_state(tensors["torch_rng"])
        device = self.policy_player.device
        if device.type == "cuda" and "cuda_rng" in tensors:
            torch.cuda.set_rng_state(tensors["cuda_rng"], device)
        self.rng.bit_generator.state = state["numpy_rng"]
        capacity = self.buffer.capacity  # the configured size: a resume may change buffer_size
        self.buffer = EpisodeBuffer.load(directory)
        self.buffer.set_capacity(capacity)
        self.samples = int(state["samples"])
        self.wall_s = float(state["wall_s"])
        self.model_player.n_fits = int(state["model_fits"])
        self.policy_player.n_updates = int(state["npg_updates"])
        r = Referee(self.spec)
        for key, value in state["referee"].items():
            setattr(r, key, int(value))
        r.iteration = int(state["completed_iteration"]) + 1
        r._plan = list(self.spec.iteration_phases())
        r._step = 0
        self.referee = r
        return state
