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

from mbrl_ros.core.buffers import Episode, EpisodeBuffer
from mbrl_ros.core.checkpoint import (
    load_module,
    load_optimizer,
    module_tensors,
    optimizer_state,
    read_checkpoint,
    write_checkpoint,
)
from mbrl_ros.core.config import GameConfig
from mbrl_ros.core.exploration import new_random_policy
from mbrl_ros.core.gate import GateSettings, PolicyGate, probe_rows
from mbrl_ros.core.model_player import ModelPlayer
from mbrl_ros.core.onnx_export import OnnxPolicy, load_onnx_policy
from mbrl_ros.core.policy_player import PolicyPlayer, StartStates
from mbrl_ros.core.rules import GameRules, IterationMetrics, success_held
from mbrl_ros.core.schedule import Phase, Referee, game_spec
from mbrl_ros.core.seeding import MODEL_PLAYER, POLICY_PLAYER, TorchStream, start_episode
from mbrl_ros.core.threads import POLICY_PLAYER_MAX_THREADS
from mbrl_ros.core.world import ActFn, behavior_policy, evaluate, run_episode

__all__ = ["StackelbergGame", "success_held"]


class StackelbergGame:
    """A game between a policy player and a model player in one world, refereed by phase.

    The world sees what a robot would: the deployed policy as exported to ONNX (gated by
    :class:`~mbrl_ros.core.gate.PolicyGate`), with the exploration noise of
    :func:`~mbrl_ros.core.world.behavior_policy`; each player draws from its own random stream
    (:mod:`mbrl_ros.core.seeding`), so the ROS graph with one collector plays the same game.
    """

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
        self.episodes_played = 0  # index of the next episode: its reset and noise (seeding.start_episode)
        self.episode_prefix = ""  # prepended to episode ids (a game started from another's buffer)
        self.model_stream = TorchStream(cfg.seed, MODEL_PLAYER)
        self.policy_stream = TorchStream(cfg.seed, POLICY_PLAYER)
        with self.model_stream.active():
            self.model_player = ModelPlayer(self.task, cfg, device)
        with self.policy_stream.active():
            self.policy_player = PolicyPlayer(self.task, cfg, device)
        self.model_stream.device = self.policy_stream.device = (
            self.model_player.device if self.model_player.device.type == "cuda" else None
        )
        capacity = cfg.buffer_size if self.spec.buffer == "fifo" else None
        self.buffer = EpisodeBuffer(self.spec.buffer, capacity)
        self.referee = Referee(self.spec)
        self.samples = 0  # real transitions collected for learning (evaluation not included)
        self.horizon = self.task.info.horizon
        self.rules = GameRules(cfg, self.spec, self.horizon)
        self.n_per_iter = self.rules.n_per_iter
        self.eval_seeds = self.rules.eval_seeds()  # the same for every run of the task
        self.policy_gate = PolicyGate(self.task, GateSettings.from_config(cfg), on_robot=False)
        self.wall_s = 0.0  # accumulated over resumed runs
        self.core_budget: Optional[Any] = None  # a CoreBudget: torch threads re-chosen before every phase
        self.deployed: Optional[OnnxPolicy] = None  # what the world runs (as a robot would)
        self.deployed_log_std: Optional[np.ndarray] = None
        self._deployed_module: Optional[torch.nn.Module] = None  # its torch twin: the gate's rollback
        self._candidate: Optional[tuple[OnnxPolicy, np.ndarray]] = None
        self._it: dict[str, Any] = {}

    # -- budget (the rules of mbrl_ros.core.rules) ------------------------------------------
    def random_fraction_samples(self, n: int) -> int:
        """MAL + random noise: random-policy samples added to n policy samples (fraction 1 - alpha)."""
        return self.rules.random_target(n)

    def budget_allows_iteration(self, iteration: int) -> bool:
        """Iteration ``iteration`` fits the sample budget and max_iterations (samples as now)."""
        return self.rules.budget_allows_iteration(self.samples, iteration)

    def can_afford_iteration(self, history: list[dict]) -> bool:
        """Another iteration fits the sample budget (and max_iterations / stop_success allow it)."""
        return self.rules.may_start_iteration(self.samples, self.referee.iteration, history)[0]

    def evaluates(self, iteration: int) -> bool:
        """Whether ``iteration`` ends with an evaluation (see :meth:`GameRules.evaluates`)."""
        return self.rules.evaluates(iteration, self.samples)

    # -- the phases --------------------------------------------------------------------------
    def _export(self, version: int) -> tuple[OnnxPolicy, np.ndarray]:
        """The policy player's current policy as the ONNX a robot would receive, and its log std."""
        onnx_bytes = self.policy_player.to_onnx_bytes(self.referee.iteration, version)
        log_std = self.policy_player.policy.log_std.detach().cpu().numpy().astype(np.float64)
        return load_onnx_policy(onnx_bytes, expect_task=self.task.info.task_id), log_std

    def _probes(self) -> np.ndarray:
        rows = None
        if len(self.buffer):
            arr = self.buffer.arrays()
            rows = arr["obs"] if "aux" not in arr else np.concatenate([arr["obs"], arr["aux"]], axis=1)
        # the probe draw has its own generator: the gate never shifts the game's random streams
        return probe_rows(self.task, rows, self.cfg.gate_probe_size, np.random.default_rng(self.referee.iteration))

    def _check(self, candidate: OnnxPolicy, log_std: np.ndarray, with_model: bool) -> Any:
        deployed = self.deployed
        return self.policy_gate.check(
            candidate.act,
            candidate.obs_dim,
            candidate.act_dim,
            log_std,
            self._probes(),
            ensemble=self.model_player.ensemble if with_model else None,
            deployed_act=deployed.act if deployed is not None else None,
        )

    def _deploy_initial(self) -> None:
        """Before the first collection: the initial policy passes the same gate (no model yet)."""
        policy, log_std = self._export(self.referee.deployed_policy_version)
        result = self._check(policy, log_std, with_model=False)
        if not result.ok:
            raise RuntimeError(f"the initial policy failed the gate: {result.reason}")
        self.deployed, self.deployed_log_std = policy, log_std
        self._deployed_module = copy.deepcopy(self.policy_player.policy)

    def collect(self) -> None:
        """COLLECT: run the deployed policy (ONNX, with exploration noise) in the world; add whole
        episodes to the buffer; MAL + random noise adds its random-policy episodes."""
        t0 = time.perf_counter()
        if self.deployed is None:
            self._deploy_initial()
        assert self.deployed is not None
        it, version = self.referee.iteration, self.referee.deployed_policy_version
        n = self.rules.round_target(it)
        info, deployed, log_std = self.task.info, self.deployed, self.deployed_log_std
        noise = self.cfg.behavior_noise()
        episodes = self._play(
            n,
            lambda rng: behavior_policy(deployed.act, info.act_dim, log_std, rng, noise, info.horizon),
            version,
            f"it{it}-v{version}",
        )
        n_random = self.rules.random_target(n)
        if n_random > 0:
            # a fresh random policy per episode (core/exploration.py), its inputs standardised with
            # this round's policy episodes, as the graph's collectors do
            own_obs = np.concatenate([e.obs for e in episodes])
            kind = self.cfg.noise_policy
            episodes += self._play(
                n_random,
                lambda rng: new_random_policy(kind, info.obs_dim, info.act_dim, rng, own_obs),
                -1,
                f"it{it}-random",
            )
        episodes = [ep.at_wire_precision() for ep in episodes]  # what the graph's learners would receive
        for ep in episodes:
            self.buffer.add_episode(ep.validate(self.task))
        self.samples += sum(len(e) for e in episodes)
        own = [e for e in episodes if e.policy_version == version]
        self._it.update(
            model_loss_new_data=self._loss_on(own),
            collect_return=float(np.mean([e.ret for e in own])),
            collect_success=float(np.mean([bool(e.success) for e in own])),
            collected=sum(len(e) for e in episodes),
            collected_random=sum(len(e) for e in episodes if e.policy_version == -1),
            collect_s=self._it.get("collect_s", 0.0) + time.perf_counter() - t0,
        )
        self.referee.data_collected(version)

    def _loss_on(self, episodes: list[Episode]) -> Optional[float]:
        """l(M, D_new): the present model's loss on episodes it has not been fitted on (how well
        it predicted the deployed policy's data; None before the first fit)."""
        if self.model_player.n_fits == 0 or sum(len(e) for e in episodes) < 2:
            return None
        fresh = EpisodeBuffer("aggregate")
        for ep in episodes:
            fresh.add_episode(ep)
        inputs, targets, _ = self.model_player.transitions(fresh)
        return self.model_player.loss(inputs, targets)

    def _play(self, n: int, behave: Callable[[np.random.Generator], ActFn], version: int, prefix: str) -> list[Episode]:
        """Whole episodes until ``n`` samples; episode k resets and explores with
        :func:`~mbrl_ros.core.seeding.start_episode` (seed, k), as collector k-th episodes do."""
        episodes: list[Episode] = []
        while sum(len(e) for e in episodes) < n:
            reset_seed, rng = start_episode(self.cfg.seed, self.episodes_played)
            episode_id = f"{self.episode_prefix}{prefix}-{len(episodes)}"
            ep = run_episode(self.world, behave(rng), reset_seed, episode_id, version)
            self.episodes_played += 1
            if len(ep):  # a fault on the first step leaves no data (a graph collector skips it too)
                episodes.append(ep)
        return episodes

    def fit_model(self) -> None:
        """FIT_MODEL: the model player's move (aggressive for a follower, and for M_0)."""
        aggressive = self.rules.model_fit_aggressive(self.referee.iteration)
        with self.model_stream.active():
            r = self.model_player.fit(self.buffer, aggressive, policy=self.policy_player.policy)
        self.referee.model_fitted(self.referee.data_policy_version)
        self._it.update(
            model_loss=r["loss"],
            model_objective=r.get("objective", r["loss"]),
            model_steps=r["steps"],
            model_holdout_loss=r.get("holdout_loss"),
            fit_s=self._it.get("fit_s", 0.0) + r["fit_s"],
        )

    def improve_policy(self) -> None:
        """IMPROVE_POLICY: the policy player's move: K NPG steps in the latest model."""
        k = self.rules.npg_steps()
        model_version = self.referee.model_version
        with self.policy_stream.active():
            r = self.policy_player.best_response(
                self.model_player.ensemble, StartStates.from_buffer(self.buffer), k, self.rules.follower_restarts()
            )
        self.referee.policy_improved(model_version)
        self._it.update(
            J_model=r["J_model"],
            model_success=r["model_success"],
            kl=r["kl"],
            kl_max=r["kl_max"],
            policy_std=r["policy_std"],
            follower_restart=r.get("follower_restart"),
            npg_s=self._it.get("npg_s", 0.0) + r["npg_s"],
        )

    def gate(self) -> None:
        """GATE: the exported candidate passes :class:`~mbrl_ros.core.gate.PolicyGate` (as in the
        graph) or never reaches the world: the policy player goes back to the deployed policy."""
        version = self.referee.candidate_policy_version
        assert version is not None, "GATE without a candidate (the referee plans IMPROVE_POLICY first)"
        ok, why = self.policy_player.parameters_finite(), "non-finite policy parameters"
        warning = None
        if ok:
            try:
                candidate, log_std = self._export(version)
                result = self._check(candidate, log_std, with_model=True)
                ok, why, warning = result.ok, result.reason, result.warning
            except Exception as exc:  # noqa: BLE001 - a candidate the gate cannot run is refused
                ok, why = False, f"gate error: {type(exc).__name__}: {exc}"
        if ok:
            self._candidate = (candidate, log_std)
            self.referee.gate_passed(version)
        else:
            if self._deployed_module is not None:
                self.policy_player.policy.load_state_dict(self._deployed_module.state_dict())
            self.referee.gate_failed(version)
        self._it.update(gate_passed=ok, gate_warning=warning if ok else why)

    def deploy(self) -> None:
        """DEPLOY: the approved candidate becomes the policy that collects data."""
        assert self._candidate is not None
        self.deployed, self.deployed_log_std = self._candidate
        self._deployed_module = copy.deepcopy(self.policy_player.policy)
        self._candidate = None
        version = self.referee.candidate_policy_version
        assert version is not None
        self.referee.deployed(version)

    PHASES: dict[Phase, Callable[["StackelbergGame"], None]] = {
        Phase.COLLECT: collect,
        Phase.FIT_MODEL: fit_model,
        Phase.IMPROVE_POLICY: improve_policy,
        Phase.GATE: gate,
        Phase.DEPLOY: deploy,
    }

    # -- one iteration ---------------------------------------------------------------------
    def play_iteration(self) -> dict:
        """Play every phase the referee plans for the current iteration; evaluate; return its
        metrics row (:class:`~mbrl_ros.core.rules.IterationMetrics`)."""
        t0 = time.perf_counter()
        iteration = self.referee.iteration
        self._it = {}
        threads = []
        while self.referee.iteration == iteration and self.referee.phase is not Phase.DONE:
            if self.core_budget is not None:
                cap = POLICY_PLAYER_MAX_THREADS if self.referee.phase is Phase.IMPROVE_POLICY else None
                threads.append(self.core_budget.choose(cap=cap))
            self.PHASES[self.referee.phase](self)
        row = IterationMetrics.from_fields(
            self.rules,
            iteration,
            self.samples,
            **self._it,
            buffer=len(self.buffer),
            policy_version=self.referee.deployed_policy_version,
            model_version=self.referee.model_version,
            threads=max(threads) if threads else torch.get_num_threads(),
        )
        if self.rules.evaluates(iteration, self.samples) and self.deployed is not None:
            row.set_evaluation(evaluate(self.eval_world, self.deployed.act, self.eval_seeds))
        else:
            row.eval_s = 0.0
        self.wall_s += time.perf_counter() - t0
        row.wall_s, row.iteration_s = self.wall_s, time.perf_counter() - t0
        for key in ("fit_s", "npg_s", "collect_s"):
            if getattr(row, key) is None:
                setattr(row, key, 0.0)
        return row.to_row()

    def run(
        self,
        on_iteration: Optional[Callable[[dict], None]] = None,
        history: Optional[list[dict]] = None,
        stop_requested: Optional[Callable[[], bool]] = None,
    ) -> list[dict]:
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
        tensors.update(self.model_stream.state_tensors())  # each player's own random stream
        tensors.update(self.policy_stream.state_tensors())
        completed = r.iteration - 1  # the referee already stands at the next iteration (or finished)
        state = {
            "config": self.cfg.to_dict(),
            "completed_iteration": completed,
            "referee": {
                "model_version": r.model_version,
                "policy_version": r.policy_version,
                "deployed_policy_version": r.deployed_policy_version,
                "data_policy_version": r.data_policy_version,
            },
            "samples": self.samples,
            "wall_s": self.wall_s,
            "model_fits": self.model_player.n_fits,
            "npg_updates": self.policy_player.n_updates,
            "episodes_played": self.episodes_played,
            "episode_prefix": self.episode_prefix,
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
        if f"rng_{MODEL_PLAYER}" in tensors:  # checkpoints before the per-player streams start them afresh
            self.model_stream.load_state_tensors(tensors)
            self.policy_stream.load_state_tensors(tensors)
        self.episodes_played = int(state.get("episodes_played", 0))
        self.episode_prefix = str(state.get("episode_prefix", ""))
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
        # between iterations the policy player's policy is the deployed one (a refused candidate
        # was rolled back): the world runs its export again
        self.deployed, self.deployed_log_std = self._export(r.deployed_policy_version)
        self._deployed_module = copy.deepcopy(self.policy_player.policy)
        return state
