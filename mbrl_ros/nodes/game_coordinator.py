"""game_coordinator: the referee of the game, the safety gate, the e-stop and the records.

It owns the iteration and the phase through :class:`mbrl_ros.core.schedule.Referee` (the same
referee the in-process loop uses) and tells the players what to do through the latched game
state on ``/mbrl/game_state`` (``std_msgs/String`` JSON, see :func:`GameCoordinator.state`):

- COLLECT: ``collect: true``; collectors run the deployed policy; when the round has N samples
  of the deployed version (N_init before iteration 1) collection stops. MAL + random noise
  then asks for ``N (1 - alpha) / alpha`` samples of the uniform random policy
  (``behavior: random``; they count in the sample budget, as in the in-process loop), so a
  fraction 1 - alpha of the model's data comes from random actions.
- FIT_MODEL: ``request = {kind: fit_model, id, aggressive, model_version, policy_version,
  episode_ids}``; the model learner answers on ``/mbrl/model`` (MAL + agent reward fits
  against the torch weights of ``policy_version``, the deployed policy).
- IMPROVE_POLICY: ``request = {kind: improve_policy, id, model_version, n_steps, policy_version,
  base_policy_version, episode_ids}``; the policy improver answers on ``/mbrl/policy/candidate``.
- GATE: the candidate is checked here (ONNX contract, finite and bounded outputs over a probe
  set of real observations, sane exploration noise, and a model-predicted check that the
  policy keeps the joints inside their limits); DEPLOY: the approved policy is republished on
  ``/mbrl/policy/deployed`` with ``approved: true``.

A result out of order (a policy computed on a stale model, a model fitted on data older than
the newest policy's, an answer to an old request) is refused with a log line and a WARN
diagnostic; the game state does not move. The e-stop (``std_srvs/Trigger`` on
``/mbrl/estop``, or ``true`` on the ``/mbrl/estop`` topic) stops every collector at once and
pauses the game until ``/mbrl/estop_clear``. The game ends when the sample budget is spent
(``samples`` parameter, else the game config's): the node writes ``summary.json``,
``metrics.jsonl``, ``policy_final.onnx`` and ``learning_curve.png`` into ``log_dir``, closes
the MCAP record (transitions, game state and metrics) and exits with status 0.

Evaluation: after every iteration the deployed policy is evaluated deterministically in a
local simulation on the in-process loop's evaluation seeds (``eval_in_sim``), in parallel with
the next phases.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rclpy.node import Node
from std_msgs.msg import Bool, String, UInt8MultiArray
from std_srvs.srv import Trigger

from mbrl_ros import wire
from mbrl_ros.core.schedule import ModelObjective, OrderViolation, Phase, Referee, game_spec
from mbrl_ros.core.world import evaluation_seeds
from mbrl_ros.nodes import (
    ESTOP, ESTOP_CLEAR_SERVICE, ESTOP_SERVICE, GAME_STATE, MODEL, POLICY_CANDIDATE, POLICY_DEPLOYED, TRANSITIONS,
    latched_qos, run_node, transitions_qos,
)
from mbrl_ros.nodes.diagnostics import DiagnosticsPublisher, MetricPublisher
from mbrl_ros.nodes.episode_intake import EpisodeIntake, purpose
from mbrl_ros.nodes.model_learner import declare_game
from mbrl_ros.nodes.parameters import declare



class GameCoordinator(Node):
    node_name = "game_coordinator"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.node_name, **kwargs)
        self.task, self.cfg = declare_game(self)
        budget = declare(self, "samples", 0, "budget of real samples (0 = the game config's)", read_only=True, lo=0)
        if budget > 0:
            self.cfg.samples = int(budget)
        self.spec = game_spec(self.cfg.algo)
        self.log_dir = Path(self.get_parameter("log_dir").value or "runs/graph")
        self.num_collectors = declare(self, "num_collectors", 1, "collectors started with this graph (informative)", read_only=True, lo=0)
        self.mcap_path = declare(self, "mcap_path", "", "MCAP record of transitions, game state, metrics ('' = log_dir/record/transitions.mcap)", read_only=True)
        self.record = declare(self, "record", True, "record to MCAP", read_only=True)
        self.eval_in_sim = declare(self, "eval_in_sim", True, "evaluate every deployed policy in a local simulation", read_only=True)
        self.eval_episodes = declare(self, "eval_episodes", -1, "evaluation episodes per iteration (-1 = the game config's)", read_only=True, lo=-1, hi=10000)
        self.probe_size = declare(self, "gate_probe_size", 256, "real observations probed by the gate", lo=8, hi=100000)
        self.gate_horizon = declare(self, "gate_model_horizon", 10, "steps of the model-predicted joint-limit check (0 = off)", lo=0, hi=1000)
        self.gate_margin = declare(self, "gate_joint_margin", 0.1, "rad beyond a joint limit the model may predict", lo=0.0, hi=3.2)
        self.gate_max_violation = declare(self, "gate_max_violation_fraction", 0.05,
                                          "largest fraction of predicted (member, start, step) states outside the limits, "
                                          "beyond the fraction the same model predicts for the deployed policy",
                                          lo=0.0, hi=1.0)
        self.use_sim = declare(self, "use_sim", True, "the collectors are simulations (false: a robot)", read_only=True)
        self.gate_model_severity = declare(
            self, "gate_model_severity", "auto",
            "what a failed model-predicted joint-limit check does: abort (refuse the policy), warn (log, count in "
            "/diagnostics, deploy), off; auto = warn in simulation, abort on a robot", read_only=True)
        if self.gate_model_severity not in ("auto", "abort", "warn", "off"):
            raise ValueError(f"gate_model_severity must be auto, abort, warn or off, got {self.gate_model_severity!r}")
        self.gate_max_log_std = declare(self, "gate_max_log_std", 1.0, "largest exploration log std a policy may carry", lo=-10.0, hi=5.0)
        self.phase_timeout = declare(self, "phase_timeout_s", 600.0, "a phase running longer is reported (WARN)", lo=1.0, hi=1e6)
        self.max_policy_bytes = declare(self, "max_policy_bytes", wire.MAX_POLICY_BYTES, "largest policy blob", read_only=True, lo=1024, hi=1 << 30)

        self.referee = Referee(self.spec)
        self.horizon = self.task.info.horizon
        self.n_per_iter = self.cfg.n_per_iter(self.horizon)
        self.intake = EpisodeIntake(self.task)
        self._lock = threading.RLock()
        self._estop = False
        self._collect = False
        self._request: dict = {}
        self._round_ids: list[str] = []
        self._round_samples = 0
        self._round_random_samples = 0  # MAL + random noise: random-policy samples of this round
        self._round_returns: list[float] = []
        self._round_success: list[bool] = []
        self._last_round_ids: list[str] = []
        self._probe_obs: list[np.ndarray] = []
        self._model: Optional[wire.ModelBlob] = None
        self._candidate: Optional[wire.PolicyBlob] = None
        self._deployed: Optional[wire.PolicyBlob] = None
        self._gating = False
        self._gate_model_weights: Optional[bytes] = None  # the model blob loaded into _gate_model
        self._gate_model = None  # a ModelPlayer to load candidate models into (built once: torch warm-up)
        self._gate_model_lock = threading.Lock()  # one rollout at a time in _gate_model
        # (model, deployed policy, probes, fraction): the deployed policy's predicted joint-limit
        # violations in the newest model, rolled out while the policy player works on its candidate
        self._gate_reference: Optional[tuple[wire.ModelBlob, wire.PolicyBlob, np.ndarray, float]] = None
        self._it: dict[str, Any] = {}
        self._iteration_seen = 0
        self._phase_since = time.monotonic()
        self._phase_seen = self.referee.phase
        self.history: list[dict] = []
        self.t0 = time.monotonic()
        self.finished = False
        self._finish_at: Optional[float] = None
        self.exit_code = 0

        self.recorder = None
        if self.record:
            from mbrl_ros.nodes.recording import McapRecorder

            self.recorder = McapRecorder(self.mcap_path or self.log_dir / "record" / "transitions.mcap")
        self.diag = DiagnosticsPublisher(self)
        self.diag.track_rate("samples")
        self.metrics = MetricPublisher(self, recorder=self._record)
        self._pub_state = self.create_publisher(String, GAME_STATE, latched_qos())
        self._pub_deployed = self.create_publisher(UInt8MultiArray, POLICY_DEPLOYED, latched_qos())
        self._pub_estop = self.create_publisher(Bool, ESTOP, latched_qos())
        self.create_subscription(UInt8MultiArray, TRANSITIONS, self._on_transitions, transitions_qos())
        self.create_subscription(UInt8MultiArray, MODEL, self._on_model, latched_qos())
        self.create_subscription(UInt8MultiArray, POLICY_CANDIDATE, self._on_candidate, latched_qos())
        self.create_subscription(Bool, ESTOP, self._on_estop_topic, latched_qos())
        self.create_service(Trigger, ESTOP_SERVICE, self._srv_estop)
        self.create_service(Trigger, ESTOP_CLEAR_SERVICE, self._srv_estop_clear)

        n_eval = self.cfg.eval_episodes if self.eval_episodes < 0 else int(self.eval_episodes)
        self.eval_seeds = evaluation_seeds(n_eval) if n_eval > 0 else []  # the same for every run of the task
        self._evals: "queue.Queue[Optional[tuple[dict, bytes]]]" = queue.Queue()
        self._eval_thread = None
        if self.eval_in_sim and n_eval > 0:
            self._eval_thread = threading.Thread(target=self._eval_worker, name="eval", daemon=True)
            self._eval_thread.start()
        self._pending_evals = 0

        if int(self.gate_horizon) > 0:  # build it now, not in the first gate (seconds of warm-up)
            from mbrl_ros.core.model_player import ModelPlayer

            self._gate_model = ModelPlayer(self.task, self.cfg, device="cpu")
        self._publish_estop(False)
        self.create_timer(0.02, self._tick)
        self.create_timer(1.0, self._publish_state)
        self.get_logger().info(
            f"{self.cfg.algo} on {self.task.info.task_id}: budget {self.cfg.samples} samples, N_init {self.cfg.n_init}, "
            f"N {self.n_per_iter}; waiting for the initial policy")

    # -- records ------------------------------------------------------------------------
    def _record(self, topic: str, msg: Any) -> None:
        if self.recorder is not None:
            self.recorder.write(topic, msg)

    # -- the game state -----------------------------------------------------------------
    def state(self) -> dict:
        r = self.referee
        with self._lock:
            return {
                "algo": self.cfg.algo, "task_id": self.task.info.task_id, "iteration": r.iteration,
                "phase": r.phase.value, "model_version": r.model_version, "policy_version": r.policy_version,
                "deployed_policy_version": r.deployed_policy_version if self._deployed is not None else -1,
                "candidate_policy_version": r.candidate_policy_version,
                "data_policy_version": r.data_policy_version, "samples": self.intake.samples,
                "sample_budget": int(self.cfg.samples), "round_samples": self._round_samples,
                "round_target": self._round_target(), "round_random_samples": self._round_random_samples,
                "round_random_target": self._random_target(), "behavior": self._behavior(),
                "collect": bool(self._collect and not self._estop),
                "estop": self._estop, "done": r.phase is Phase.DONE, "request": dict(self._request),
                "eval_success": self.history[-1].get("eval_success") if self.history else None,
                "success_curve": [h.get("eval_success") for h in self.history],
                "wall_s": round(time.monotonic() - self.t0, 3),
            }

    def _publish_state(self, persist: bool = True) -> None:
        """Publish the game state; ``persist``: also to the MCAP record and ``game_state.json``
        (the per-episode count updates skip both: the 1 Hz state keeps them current)."""
        s = self.state()
        msg = String()
        msg.data = wire.pack_json("game_state", s)
        self._pub_state.publish(msg)
        if not persist:
            return
        self._record(GAME_STATE, msg)
        self._write_state_file(s)
        self.diag.set("phase", s["phase"])
        self.diag.set("iteration", s["iteration"])
        self.diag.set("samples", s["samples"])
        self.diag.set("model_version", s["model_version"])
        self.diag.set("deployed_policy_version", s["deployed_policy_version"])
        self.diag.status_message(f"iteration {s['iteration']}, {s['phase']}, {s['samples']}/{s['sample_budget']} samples")

    def _write_state_file(self, s: dict) -> None:
        """``log_dir/game_state.json``: the launcher's progress bar reads it (no ROS needed)."""
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.log_dir / "game_state.json.tmp"
            tmp.write_text(json.dumps(s))
            tmp.replace(self.log_dir / "game_state.json")
        except OSError:
            pass

    def _round_target(self) -> int:
        return int(self.cfg.n_init if self.referee.iteration == 0 else self.n_per_iter)

    def _random_target(self, n: Optional[int] = None) -> int:
        """MAL + random noise: random-policy samples added to a round of ``n`` policy samples,
        ``n (1 - alpha) / alpha`` (the in-process loop's rule); 0 for every other game."""
        if self.spec.model_objective is not ModelObjective.RANDOM_NOISE:
            return 0
        n = self._round_target() if n is None else n
        return int(round(n * (1.0 - self.cfg.alpha) / max(self.cfg.alpha, 1e-6)))

    def _behavior(self) -> str:
        """Which data the collectors gather now: the deployed policy's, then (MAL + noise) random."""
        return "random" if self._round_samples >= self._round_target() and self._random_target() > 0 else "policy"

    # -- e-stop -------------------------------------------------------------------------
    def _publish_estop(self, on: bool) -> None:
        msg = Bool()
        msg.data = bool(on)
        self._pub_estop.publish(msg)

    def _set_estop(self, on: bool, why: str) -> None:
        with self._lock:
            changed = self._estop != on
            self._estop = on
        if changed:
            if on:
                self.get_logger().warning(f"E-STOP: {why}")
                self.diag.fault(f"e-stop: {why}")
            else:
                self.get_logger().info(f"e-stop cleared: {why}")
                self.diag.clear_fault()
            self._publish_state()

    def _srv_estop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self._publish_estop(True)
        self._set_estop(True, "service call")
        resp.success, resp.message = True, "e-stop: every collector stops now"
        return resp

    def _srv_estop_clear(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self._publish_estop(False)
        self._set_estop(False, "service call")
        resp.success, resp.message = True, "e-stop released; the game continues"
        return resp

    def _on_estop_topic(self, msg: Bool) -> None:
        self._set_estop(bool(msg.data), "/mbrl/estop topic")

    # -- results from the world and the players ----------------------------------------
    def _on_transitions(self, msg: UInt8MultiArray) -> None:
        r = self.intake.ingest(wire.from_msg(msg))
        if r.duplicate:
            self.diag.inc("episodes_duplicate")
            return
        if not r.accepted:
            self._refuse("episode", r.message, f"rejected_{r.reason}")
            return
        self._record(TRANSITIONS, msg)
        rec = r.episode
        if purpose(rec) != "train":
            return
        self.diag.inc("samples", rec.length)
        self.diag.set("sequence_gaps", self.intake.gaps)
        with self._lock:
            if len(self._probe_obs) < 64 * self.probe_size:
                rows = rec.obs if rec.aux is None else np.concatenate([rec.obs, rec.aux], axis=1)
                self._probe_obs.append(rows[:: max(1, rec.length // 8)])
            collecting = self._collect and self.referee.phase is Phase.COLLECT
            behavior = self._behavior()
            counted = collecting and rec.behavior == behavior and (
                rec.behavior == "random" or rec.policy_version == self.referee.deployed_policy_version)
            if counted:
                self._round_ids.append(rec.episode_id)
                if rec.behavior == "random":
                    self._round_random_samples += rec.length
                else:
                    self._round_samples += rec.length
                    self._round_returns.append(rec.episode_return)
                    self._round_success.append(rec.success)
            complete = counted and self._round_complete()
        if rec.behavior == "policy":
            self.metrics.publish("episode_return", rec.episode_return)
            self.metrics.publish("episode_success", float(rec.success))
        if complete:
            self._tick()  # the round is complete: ask for the next move now, not at the next tick
        elif counted:
            self._publish_state(persist=False)  # the round's count (and behavior): collectors wait on it at a round's end

    def _round_complete(self) -> bool:
        return self._round_samples >= self._round_target() and self._round_random_samples >= self._random_target()

    def _on_model(self, msg: UInt8MultiArray) -> None:
        try:
            blob = wire.unpack_model(wire.from_msg(msg), expect_task=self.task.info.task_id)
        except wire.WireError as exc:
            self._refuse("model", str(exc), f"rejected_model_{exc.reason}")
            return
        with self._lock:
            if self._request.get("kind") != "fit_model" or blob.header.get("request_id") != self._request.get("id"):
                if self._model is None or blob.model_version != self._model.model_version:
                    self._refuse("model", f"model v{blob.model_version} answers request {blob.header.get('request_id')!r}, "
                                 f"the open request is {self._request.get('id')!r}", "refused_out_of_order")
                return
            try:
                version = self.referee.model_fitted(blob.data_policy_version)
            except OrderViolation as exc:
                self._refuse("model", str(exc), "refused_out_of_order")
                return
            if version != blob.model_version:
                self.get_logger().warning(f"model blob says v{blob.model_version}, referee counted v{version}")
            self._model = blob
            self._request = {}
            self._it.update(model_loss=blob.header.get("loss"), model_steps=blob.header.get("steps"),
                            fit_s=blob.header.get("fit_s"), fit_threads=_int_or_none(blob.header.get("torch_threads")))
        self.get_logger().info(f"model v{version} accepted (loss {blob.header.get('loss')})")
        self._start_gate_reference()
        self._tick()  # the next move now (publishes the state)

    def _on_candidate(self, msg: UInt8MultiArray) -> None:
        try:
            blob = wire.unpack_policy(wire.from_msg(msg), expect_task=self.task.info.task_id, check_contract=True,
                                      max_bytes=int(self.max_policy_bytes))
        except wire.WireError as exc:
            self._refuse("policy", str(exc), f"rejected_policy_{exc.reason}")
            return
        with self._lock:
            if blob.policy_version == 0 and self._deployed is None and self.referee.phase is Phase.COLLECT:
                self._candidate = blob  # the initial policy: gated, then deployed for the first collection
                return
            if self._request.get("kind") != "improve_policy" or blob.header.get("request_id") != self._request.get("id"):
                if self._candidate is None or blob.policy_version != self._candidate.policy_version:
                    self._refuse("policy", f"policy v{blob.policy_version} (on model v{blob.model_version}) answers request "
                                 f"{blob.header.get('request_id')!r}, the open request is {self._request.get('id')!r}",
                                 "refused_out_of_order")
                return
            try:
                version = self.referee.policy_improved(blob.model_version)
            except OrderViolation as exc:
                self._refuse("policy", str(exc), "refused_out_of_order")
                return
            if version != blob.policy_version:
                self._refuse("policy", f"policy blob says v{blob.policy_version}, referee counted v{version}", "refused_version")
            self._candidate = blob
            self._request = {}
            self._start_gate(blob, initial=False)  # now, not at the next tick: hand-off latency
            stats = blob.header.get("stats") or {}
            self._it.update(J_model=stats.get("J_model"), kl=stats.get("kl"), kl_max=stats.get("kl_max"),
                            model_success=stats.get("model_success"), policy_std=stats.get("policy_std"),
                            npg_s=stats.get("npg_s"), npg_threads=_int_or_none(stats.get("torch_threads")))
        self.get_logger().info(f"candidate policy v{version} accepted for the gate (J(pi, M) {stats.get('J_model')})")
        self._publish_state()

    def _refuse(self, what: str, why: str, counter: str) -> None:
        self.diag.inc(counter)
        self.diag.warn(f"refused {what}: {why}")
        self.get_logger().warning(f"refused {what}: {why}")

    # -- the referee's loop -------------------------------------------------------------
    def _tick(self) -> None:
        if self.finished:
            return
        if self._finish_at is not None:
            self._finish()
            return
        r = self.referee
        if r.phase is not self._phase_seen:
            self._phase_seen, self._phase_since = r.phase, time.monotonic()
        elif time.monotonic() - self._phase_since > float(self.phase_timeout):
            self.diag.warn(f"phase {r.phase.value} has run for {time.monotonic() - self._phase_since:.0f} s")
            self._phase_since = time.monotonic()
        if r.iteration != self._iteration_seen:
            self._iteration_done(self._iteration_seen)
            self._iteration_seen = r.iteration
            if not self._can_afford_iteration():
                r.finish()
        if r.phase is Phase.DONE:
            self._finish()
            return
        if self._estop:
            return
        with self._lock:  # the gate worker moves the phase too: read it and act on it atomically
            handler = {
                Phase.COLLECT: self._collect_phase, Phase.FIT_MODEL: self._fit_phase,
                Phase.IMPROVE_POLICY: self._improve_phase, Phase.GATE: self._gate_phase,
                Phase.DEPLOY: self._deploy_phase, Phase.DONE: lambda: None,
            }[r.phase]
            try:
                handler()
            except OrderViolation as exc:  # a bug, not a player's fault: report it, keep refereeing
                self._refuse("step", str(exc), "internal_order_errors")

    def _can_afford_iteration(self) -> bool:
        """The in-process loop's rules: a new iteration only if its N samples (and, MAL + random
        noise, its random-policy samples) fit the budget, and not once ``stop_success`` held
        (:func:`mbrl_ros.core.stackelberg.success_held`; the evaluations run beside the game, so
        the rule sees those finished by the end of an iteration)."""
        from mbrl_ros.core.stackelberg import success_held

        if self.cfg.max_iterations and self.referee.iteration > self.cfg.max_iterations:
            return False
        with self._lock:
            history = [dict(h) for h in self.history]
        if success_held(history, self.cfg):
            self.get_logger().info(f"success >= {self.cfg.stop_success} held for {self.cfg.stop_success_iters} "
                                   "evaluations: the game ends (stop_success)")
            return False
        return self.intake.samples + self.n_per_iter + self._random_target(self.n_per_iter) <= self.cfg.samples

    def _collect_phase(self) -> None:
        with self._lock:
            if self._deployed is None:
                if self._candidate is not None and self._candidate.policy_version == 0 and not self._gating:
                    self._start_gate(self._candidate, initial=True)
                return
            if not self._collect and self._round_samples == 0:
                self._collect = True
                self._publish_state()
                return
            if not self._round_complete():
                return
            self._collect = False
            version = self.referee.deployed_policy_version
            self.referee.data_collected(version)
            self._last_round_ids = list(self._round_ids)
            policy_samples, random_samples = self._round_samples, self._round_random_samples
            self._it.update(collect_return=float(np.mean(self._round_returns)),
                            collect_success=float(np.mean(self._round_success)),
                            collected=policy_samples + random_samples, collected_random=random_samples)
            self._round_ids, self._round_samples, self._round_returns, self._round_success = [], 0, [], []
            self._round_random_samples = 0
        self.get_logger().info(f"collected {policy_samples} samples of policy v{version}"
                               + (f" and {random_samples} of the random policy" if random_samples else "")
                               + f" (return {self._it['collect_return']:.1f}, success {self._it['collect_success']:.2f})")
        self._publish_state()

    def _fit_phase(self) -> None:
        r = self.referee
        with self._lock:
            if self._request.get("kind") == "fit_model":
                return
            self._request = {
                "kind": "fit_model", "id": f"fit-i{r.iteration}-m{r.model_version + 1}",
                "aggressive": bool(self.spec.model_aggressive or r.iteration == 0),
                "model_version": r.model_version + 1, "policy_version": r.deployed_policy_version,
                "episode_ids": list(self._last_round_ids),
            }
        self._publish_state()

    def _improve_phase(self) -> None:
        r = self.referee
        with self._lock:
            if self._request.get("kind") == "improve_policy":
                return
            k = self.cfg.npg_steps_aggressive if self.spec.policy_aggressive else self.cfg.npg_steps_conservative
            self._request = {
                "kind": "improve_policy", "id": f"improve-i{r.iteration}-p{r.policy_version + 1}",
                "model_version": r.expected_model_version_for_policy(), "n_steps": int(k),
                "policy_version": r.policy_version + 1, "base_policy_version": r.deployed_policy_version,
                "episode_ids": list(self._last_round_ids),
            }
        self._publish_state()

    def _gate_phase(self) -> None:
        with self._lock:
            if not self._gating and self._candidate is not None:
                self._start_gate(self._candidate, initial=False)

    def _deploy_phase(self) -> None:
        with self._lock:
            if self.referee.phase is not Phase.DEPLOY:
                return
            blob = self._candidate
            self._deploy(blob)
            self.referee.deployed(blob.policy_version)
        self._publish_state()

    def _deploy(self, blob: wire.PolicyBlob) -> None:
        header = {k: v for k, v in blob.header.items() if k not in (
            "schema", "schema_version", "kind", "payload_size", "sha256", "task_id", "policy_version",
            "model_version", "iteration", "approved")}
        data = wire.pack_policy(blob.onnx, task_id=blob.task_id, policy_version=blob.policy_version,
                                model_version=blob.model_version, iteration=blob.iteration, approved=True, **header)
        self._pub_deployed.publish(wire.to_msg(data))
        self._deployed = blob
        self.metrics.publish("deployed_policy_version", blob.policy_version)
        self.get_logger().info(f"policy v{blob.policy_version} deployed")

    # -- the gate -----------------------------------------------------------------------
    def _start_gate(self, blob: wire.PolicyBlob, initial: bool) -> None:
        self._gating = True
        threading.Thread(target=self._gate_worker, args=(blob, initial), name="gate", daemon=True).start()

    def _model_check_severity(self) -> str:
        """``gate_model_severity`` with ``auto`` resolved."""
        if self.gate_model_severity != "auto":
            return str(self.gate_model_severity)
        # In simulation a refused candidate only freezes learning: the model, fitted on the old
        # policy's data, keeps over-predicting for any new one (measured: PAL on D'Claw stalled
        # at v4 for 11,000 samples). On a robot the refusal is the safe side.
        return "warn" if self.use_sim else "abort"

    def _start_gate_reference(self) -> None:
        """Roll the deployed policy out in the new model now, while the policy player computes its
        candidate, so the gate's reference is ready when the candidate arrives (one rollout fewer
        on the hand-off path)."""
        with self._lock:
            model, deployed = self._model, self._deployed
        if model is None or deployed is None or int(self.gate_horizon) <= 0 or self._model_check_severity() == "off":
            return
        threading.Thread(target=self._gate_reference_worker, args=(model, deployed), name="gate-reference",
                         daemon=True).start()

    def _gate_reference_worker(self, model: wire.ModelBlob, deployed: wire.PolicyBlob) -> None:
        try:
            policy = self._policy_of(deployed)
            probes = self._probes()
            frac = self._model_limit_check(policy, probes, model)
        except Exception as exc:  # noqa: BLE001 - the gate then computes it itself
            self.get_logger().warning(f"gate reference rollout failed ({type(exc).__name__}: {exc}); "
                                      "the gate will roll out the deployed policy itself")
            return
        with self._lock:
            self._gate_reference = (model, deployed, probes, frac)

    def _policy_of(self, blob: wire.PolicyBlob) -> Any:
        """The blob's policy: the one unpacked with it, else loaded from its ONNX with the contract checked."""
        return blob.policy if blob.policy is not None else wire.load_policy_checked(blob.onnx, self.task.info.task_id)

    def _gate_worker(self, blob: wire.PolicyBlob, initial: bool) -> None:
        t0 = time.perf_counter()
        try:
            ok, why = self.gate(blob)
        except Exception as exc:  # noqa: BLE001 - a gate that crashes rejects
            ok, why = False, f"gate error: {type(exc).__name__}: {exc}"
        dt = time.perf_counter() - t0
        self.metrics.publish("gate_passed", float(ok))
        self.diag.set("gate_ms", round(1000 * dt, 2))
        with self._lock:
            self._gating = False
            if initial:
                if ok:
                    self._deploy(blob)
                else:
                    self._candidate = None
                    self._refuse("policy", f"initial policy v0 failed the gate: {why}", "gate_failed")
            elif ok:
                self.referee.gate_passed(blob.policy_version)
            else:
                self._refuse("policy", f"v{blob.policy_version} failed the gate: {why}", "gate_failed")
                self.referee.gate_failed(blob.policy_version)
            self._it["gate_passed"] = ok
            # deploy and start collecting right away (the tick would do the same up to 20 ms later)
            if ok and self.referee.phase is Phase.DEPLOY:
                self._deploy_phase()
            if self.referee.phase is Phase.COLLECT and not self._estop:
                self._collect_phase()
        if ok:
            self.get_logger().info(f"policy v{blob.policy_version} passed the gate ({1000 * dt:.0f} ms)")
        self._publish_state()

    def gate(self, blob: wire.PolicyBlob) -> tuple[bool, str]:
        """Every check a policy must pass before it reaches a robot; returns ``(ok, reason)``."""
        info = self.task.info
        try:
            policy = self._policy_of(blob)
        except wire.WireError as exc:
            return False, str(exc)
        c = policy.contract
        if int(c["obs_dim"]) != info.obs_dim or int(c["act_dim"]) != info.act_dim:
            return False, f"contract sizes {c['obs_dim']}/{c['act_dim']} do not match {info.obs_dim}/{info.act_dim}"
        log_std = blob.header.get("log_std")
        if log_std is not None:
            ls = np.asarray(log_std, dtype=np.float64)
            if ls.shape != (info.act_dim,) or not np.all(np.isfinite(ls)) or np.any(ls > float(self.gate_max_log_std)):
                return False, f"exploration log std {log_std} is not finite or above {self.gate_max_log_std}"
        probes = self._probes()
        actions = policy.act(probes[:, :info.obs_dim])
        if actions.shape != (len(probes), info.act_dim) or not np.all(np.isfinite(actions)):
            return False, "non-finite actions on the probe set"
        if np.any(np.abs(actions) > 1.0 + 1e-6):
            return False, f"actions outside [-1, 1] (max |a| = {np.abs(actions).max():.3g})"
        severity = self._model_check_severity()
        with self._lock:
            model, deployed, reference = self._model, self._deployed, self._gate_reference
        if model is not None and int(self.gate_horizon) > 0 and severity != "off":
            ready = reference is not None and reference[0] is model and reference[1] is deployed
            if ready:  # the same start states as the reference, so the two fractions compare
                probes = reference[2]
            frac = self._model_limit_check(policy, probes, model)
            allowed = float(self.gate_max_violation)
            if frac > allowed and deployed is not None:
                # The deployed policy has run in the world, so what the same model predicts for it
                # beyond the limits is model error (multi-step predictions overshoot near the
                # limits), not danger: the candidate may not be predicted markedly worse than it.
                if ready:
                    allowed += reference[3]
                    self.diag.inc("gate_reference_reused")
                else:
                    allowed += self._model_limit_check(self._policy_of(deployed), probes, model)
            if frac > allowed:
                why = (f"the model predicts {100 * frac:.1f}% of states beyond the joint limits "
                       f"(+{self.gate_margin} rad; allowed {100 * allowed:.1f}%: "
                       f"{100 * float(self.gate_max_violation):.1f}% more than the deployed policy)")
                if severity == "abort":
                    return False, why
                self.diag.inc("gate_model_warnings")
                self.get_logger().warning(f"policy v{blob.policy_version}: {why}; deployed anyway (gate_model_severity "
                                          f"{self.gate_model_severity}: warn in simulation)")
        return True, "ok"

    def _probes(self) -> np.ndarray:
        """Real observations (plus a noisy copy for off-distribution inputs); Gaussian noise before any data.

        Rows are the observation followed by the task's model-only measurements (aux), which the
        model-predicted check starts from; the policy sees ``[:, :obs_dim]``."""
        rng = np.random.default_rng(len(self.history))
        with self._lock:
            obs = np.concatenate(self._probe_obs) if self._probe_obs else None
        n = int(self.probe_size)
        if obs is None:
            return rng.standard_normal((n, self.task.info.obs_dim + self.task.aux_dim))
        real = obs[rng.integers(0, len(obs), n // 2)]
        noisy = real + 0.1 * (obs.std(0) + 1e-3) * rng.standard_normal(real.shape)
        return np.concatenate([real, noisy])

    def _model_limit_check(self, policy: Any, probes: np.ndarray, model: wire.ModelBlob) -> float:
        """Fraction of ``model``-predicted joint positions beyond limits + margin under the policy."""
        from mbrl_ros.core.model_player import ModelPlayer

        idx = _joint_slots(self.task)
        if idx is None:
            return 0.0
        with self._gate_model_lock:  # the reference thread and the gate share the player
            if self._gate_model is None:
                self._gate_model = ModelPlayer(self.task, self.cfg, device="cpu")
            if self._gate_model_weights is not model.weights:  # load each model once
                self._gate_model.load_bytes(model.weights)
                self._gate_model_weights = model.weights
            return self._rollout_violations(self._gate_model, policy, probes, idx)

    def _rollout_violations(self, mp: Any, policy: Any, probes: np.ndarray, idx: Any) -> float:
        import torch

        from mbrl_ros.core.model_rollout import model_step

        lim = self.task.limits
        lo = torch.as_tensor(lim.qpos_low - float(self.gate_margin), dtype=torch.float32)
        hi = torch.as_tensor(lim.qpos_high + float(self.gate_margin), dtype=torch.float32)
        starts = torch.as_tensor(probes[: min(64, len(probes) // 2 or len(probes))], dtype=torch.float32)
        E, od = mp.ensemble.ensemble_size, self.task.info.obs_dim
        rows = starts.unsqueeze(0).expand(E, -1, -1).contiguous()
        obs, aux = rows[..., :od], (rows[..., od:] if self.task.aux_dim else None)
        bad = total = 0
        with torch.no_grad():
            for _ in range(int(self.gate_horizon)):
                a = torch.as_tensor(policy.act(obs.reshape(-1, obs.shape[-1]).numpy()), dtype=torch.float32)
                obs, aux, _r = model_step(mp.ensemble, self.task, obs, a.reshape(E, -1, a.shape[-1]), aux)
                q = obs[..., idx]
                bad += int(((q < lo) | (q > hi)).any(-1).sum())
                total += q.shape[0] * q.shape[1]
        return bad / max(total, 1)

    # -- iterations, evaluation, the end -----------------------------------------------
    def _iteration_done(self, iteration: int) -> None:
        with self._lock:
            it = dict(self._it, iteration=iteration, samples=self.intake.samples,
                      policy_version=self.referee.deployed_policy_version, model_version=self.referee.model_version,
                      wall_s=round(time.monotonic() - self.t0, 3))
            self._it = {}
            self.history.append(it)
            deployed = self._deployed
        for key in ("samples", "model_loss", "J_model", "kl", "collect_return", "collect_success"):
            if it.get(key) is not None:
                self.metrics.publish(key, float(it[key]))
        self.metrics.publish("iteration", float(iteration))
        if self._eval_thread is not None and deployed is not None:
            self._pending_evals += 1
            self._evals.put((it, deployed.onnx))
        self._write_metrics()
        self.get_logger().info(f"iteration {iteration} done: {it.get('samples')} samples")

    def _eval_worker(self) -> None:
        from mbrl_ros.core.onnx_export import load_onnx_policy
        from mbrl_ros.core.world import evaluate
        from mbrl_ros.tasks import make_env

        env = make_env(self.task.info.task_id)
        while True:
            job = self._evals.get()
            if job is None:
                return
            it, onnx = job
            try:
                policy = load_onnx_policy(onnx, expect_task=self.task.info.task_id)
                ev = evaluate(env, policy.act, self.eval_seeds)
                with self._lock:
                    it.update(eval_success=ev["success"], eval_return=ev["return"], eval_final_error=ev["final_error"],
                              eval_s=ev["eval_s"])
                self.metrics.publish("eval_success", ev["success"])
                self.metrics.publish("eval_return", ev["return"])
                self.get_logger().info(f"iteration {it['iteration']}: eval success {ev['success']:.2f}, return {ev['return']:.1f}")
            except Exception as exc:  # noqa: BLE001
                self.get_logger().error(f"evaluation failed: {exc}")
            finally:
                with self._lock:
                    self._pending_evals -= 1
                self._write_metrics()

    def _write_metrics(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            lines = [json.dumps(h, sort_keys=True) for h in self.history]
        (self.log_dir / "metrics.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""))

    def _finish(self) -> None:
        if self._finish_at is not None:
            # let the final (latched) state reach the other nodes before this process exits
            self.finished = time.monotonic() >= self._finish_at
            return
        if self._pending_evals > 0:
            return  # the last evaluation is still running
        self._finish_at = time.monotonic() + 0.5
        self._collect = False
        self._publish_state()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        policy_path = self.log_dir / "policy_final.onnx"
        if self._deployed is not None:
            policy_path.write_bytes(self._deployed.onnx)
        self._write_metrics()
        plot = _plot(self.history, self.log_dir / "learning_curve.png")
        from mbrl_ros.core.train import success_milestones

        milestones = success_milestones(self.history)
        final = self.history[-1] if self.history else {}
        summary = {
            "algo": self.cfg.algo, "task": self.task.info.task_id, "iterations": max(0, len(self.history) - 1),
            "samples": self.intake.samples, "sample_budget": self.cfg.samples, "episodes": len(self.intake.ids),
            "final_eval_success": final.get("eval_success"), "final_eval_return": final.get("eval_return"),
            "final_collect_success": final.get("collect_success"),
            "best_eval_success": max((h.get("eval_success") or 0.0 for h in self.history), default=None),
            "samples_to_90": milestones["held"], "first_touch_90": milestones["first_touch"],
            "deployed_policy_version": self.referee.deployed_policy_version, "model_version": self.referee.model_version,
            "wall_s": round(time.monotonic() - self.t0, 3), "refused_out_of_order": self.diag.count("refused_out_of_order"),
            "gate_failed": self.diag.count("gate_failed"), "sequence_gaps": self.intake.gaps,
            "policy": str(policy_path) if self._deployed is not None else None,
            "metrics": str(self.log_dir / "metrics.jsonl"),
            "mcap": str(self.recorder.path) if self.recorder is not None else None, "plot": plot,
        }
        (self.log_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        if self.recorder is not None:
            self.recorder.close()
        self.get_logger().info(f"game over: {summary['samples']} samples, {summary['iterations']} iterations, "
                               f"final eval success {summary['final_eval_success']}; summary in {self.log_dir / 'summary.json'}")

    def shutdown(self) -> None:
        self._evals.put(None)
        if self.recorder is not None:
            self.recorder.close()


def _int_or_none(value: Any) -> Optional[int]:
    """A player's reported count (e.g. torch threads) for the metrics; None when absent or not a number."""
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _joint_slots(task: Any) -> Optional[list[int]]:
    """Observation slots of the actuated joint positions (names ``*_qpos[i]``), if the task names them."""
    names = task.info.obs_names or ()
    idx = [i for i, n in enumerate(names) if "_qpos[" in n]
    return idx if len(idx) == task.info.act_dim else None


def _plot(history: list[dict], path: Path) -> Optional[str]:
    """Learning curve (evaluation success and return against real samples) as PNG."""
    if not history:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    x = [h.get("samples", 0) for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot(x, [h.get("eval_success") if h.get("eval_success") is not None else np.nan for h in history], "o-")
    ax[0].set_xlabel("real samples"), ax[0].set_ylabel("eval success"), ax[0].set_ylim(-0.05, 1.05)
    ax[1].plot(x, [h.get("eval_return") if h.get("eval_return") is not None else np.nan for h in history], "o-")
    ax[1].set_xlabel("real samples"), ax[1].set_ylabel("eval return")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def main(args: Optional[list[str]] = None) -> None:
    run_node(GameCoordinator, args)


if __name__ == "__main__":
    main()
