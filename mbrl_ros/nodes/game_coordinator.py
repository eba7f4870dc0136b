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
the MCAP record (transitions, game state and metrics, and with ``record_visuals`` the robot for
Foxglove: ``/robot_description``, URDF joint states, markers, ``/diagnostics``) and exits with
status 0.

The sample budget counts the training transitions this game's collectors published on
``/mbrl/transitions`` (policy and random-policy episodes; evaluation episodes do not count), and
nothing else: a game started with ``init_from`` (:mod:`mbrl_ros.nodes.init_from`) starts at 0
samples, and with ``init_from_parts`` including ``buffer`` the source run's episodes are the
learners' initial data only (never published, never recorded, never counted). The source, its
parts and its sample count go to ``init_from.json`` and the summary's ``init_from``, as
``mbrl-ros train`` records them.

Evaluation: after every iteration the deployed policy is evaluated deterministically in a
local simulation on the in-process loop's evaluation seeds (``eval_in_sim``), in parallel with
the next phases; the simulation has the game's fixed ``dynamics`` (the graph's ``dynamics:=``,
which the sim collectors run too), as in ``mbrl-ros train``. With ``stop_success`` on, the next
iteration starts only once the evaluations have finished, so the game stops where the in-process
loop stops.
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
from std_msgs.msg import String, UInt8MultiArray

from mbrl_ros import security, wire
from mbrl_ros.core.gate import GateResult, GateSettings, PolicyGate, probe_rows
from mbrl_ros.core.report import plot_curve, success_milestones
from mbrl_ros.core.rules import CollectionRound, GameRules, IterationMetrics
from mbrl_ros.core.schedule import OrderViolation, Phase, Referee, game_spec
from mbrl_ros.nodes import (
    GAME_STATE,
    MODEL,
    POLICY_CANDIDATE,
    POLICY_DEPLOYED,
    POLICY_DEPLOYED_RESEND,
    TRANSITIONS,
    latched_qos,
    run_node,
    transitions_qos,
)
from mbrl_ros.nodes.diagnostics import DiagnosticsPublisher, MetricPublisher
from mbrl_ros.nodes.episode_intake import EpisodeIntake, purpose
from mbrl_ros.nodes.estop import EstopAuthority
from mbrl_ros.nodes.init_from import declare_init_from, init_record, source_state
from mbrl_ros.nodes.learner import declare_game
from mbrl_ros.nodes.parameters import declare, declare_record_visuals
from mbrl_ros.nodes.resend import ResendServer


class GameCoordinator(EstopAuthority, Node):
    node_name = "game_coordinator"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.node_name, **kwargs)
        self.task, self.cfg = declare_game(self)
        budget = declare(self, "samples", 0, "budget of real samples (0 = the game config's)", read_only=True, lo=0)
        if budget > 0:
            self.cfg.samples = int(budget)
        self.spec = game_spec(self.cfg.algo)
        self.log_dir = Path(self.get_parameter("log_dir").value or "runs/graph")
        self.num_collectors = declare(
            self, "num_collectors", 1, "collectors started with this graph (informative)", read_only=True, lo=0
        )
        self.mcap_path = declare(
            self,
            "mcap_path",
            "",
            "MCAP record of transitions, game state, metrics ('' = log_dir/record/transitions.mcap)",
            read_only=True,
        )
        self.record = declare(self, "record", True, "record to MCAP", read_only=True)
        self.record_visuals = declare_record_visuals(self)
        self.eval_in_sim = declare(
            self, "eval_in_sim", True, "evaluate every deployed policy in a local simulation", read_only=True
        )
        self.eval_episodes = declare(
            self,
            "eval_episodes",
            -1,
            "evaluation episodes per iteration (-1 = the game config's)",
            read_only=True,
            lo=-1,
            hi=10000,
        )
        # the gate's settings are game settings (config/<algo>.yaml, the same in mbrl-ros train); these
        # parameters override them for this graph (e.g. a robot's stricter limits)
        c = self.cfg
        c.gate_probe_size = declare(
            self, "gate_probe_size", c.gate_probe_size, "real observations probed by the gate", lo=8, hi=100000
        )
        c.gate_model_horizon = declare(
            self,
            "gate_model_horizon",
            c.gate_model_horizon,
            "steps of the model-predicted joint-limit check (0 = off)",
            lo=0,
            hi=1000,
        )
        c.gate_joint_margin = declare(
            self,
            "gate_joint_margin",
            c.gate_joint_margin,
            "rad beyond a joint limit the model may predict",
            lo=0.0,
            hi=3.2,
        )
        c.gate_max_violation_fraction = declare(
            self,
            "gate_max_violation_fraction",
            c.gate_max_violation_fraction,
            "largest fraction of predicted (member, start, step) states outside the limits, beyond the fraction "
            "the same model predicts for the deployed policy",
            lo=0.0,
            hi=1.0,
        )
        self.use_sim = declare(self, "use_sim", True, "the collectors are simulations (false: a robot)", read_only=True)
        c.gate_model_severity = declare(
            self,
            "gate_model_severity",
            c.gate_model_severity,
            "what a failed model-predicted joint-limit check does: abort (refuse the policy), warn (log, count in "
            "/diagnostics, deploy), off; auto = warn in simulation, abort on a robot",
            read_only=True,
        )
        c.gate_model_confidence = declare(
            self,
            "gate_model_confidence",
            c.gate_model_confidence,
            "a model-predicted joint-limit violation counts only when the members' mean clears the limit by this many "
            "member standard deviations (model error near the limits is where members disagree)",
            lo=0.0,
            hi=100.0,
        )
        c.gate_max_log_std = declare(
            self,
            "gate_max_log_std",
            c.gate_max_log_std,
            "largest exploration log std a policy may carry",
            lo=-10.0,
            hi=5.0,
        )
        c.validate()
        if c.dynamics:  # the evaluation world's physics: refused now, not in the evaluation thread
            from mbrl_ros.tasks.sim import parse_dynamics

            parse_dynamics(c.dynamics, self.task.info.robot)
        self.gate_settings = GateSettings.from_config(c)
        self.policy_gate = PolicyGate(self.task, self.gate_settings, on_robot=not self.use_sim)
        self.phase_timeout = declare(
            self, "phase_timeout_s", 600.0, "a phase running longer is reported (WARN)", lo=1.0, hi=1e6
        )
        self.max_policy_bytes = declare(
            self, "max_policy_bytes", wire.MAX_POLICY_BYTES, "largest policy blob", read_only=True, lo=1024, hi=1 << 30
        )
        # Only the coordinator moves a robot: approved policies and game states are signed with the
        # run's Ed25519 key (created now, or loaded when this run already has one); collectors run
        # nothing else (mbrl_ros.security)
        self.key_dir = declare(
            self, "key_dir", "", "directory of the run's signing key ('' = log_dir/keys)", read_only=True
        )
        self.signer = security.Signer.load_or_create(self.log_dir, self.key_dir or None)
        self.get_logger().info(
            f"signing key {self.signer.key_id}; collectors verify with coordinator_key:="
            f"{self.signer.public_text} ({security.key_paths(self.log_dir, self.key_dir or None)[1]})"
        )
        # init_from:= (issue 15): what the game starts from, recorded as mbrl-ros train does (the
        # players load it; the budget below counts only this game's own samples)
        init_from, init_parts = declare_init_from(self)
        self.init_from: Optional[dict] = None
        if init_from:
            source_state(init_from, self.task.info.task_id)
            self.init_from = init_record(init_from, init_parts)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            (self.log_dir / "init_from.json").write_text(json.dumps(self.init_from, indent=1))
            self.get_logger().info(
                f"game started from {self.init_from['source']} ({', '.join(init_parts)}; "
                f"{self.init_from['source_samples']} samples there, not counted here)"
            )

        self.referee = Referee(self.spec)
        self.horizon = self.task.info.horizon
        self.rules = GameRules(self.cfg, self.spec, self.horizon)
        self.n_per_iter = self.rules.n_per_iter
        self.intake = EpisodeIntake(self.task)
        self._lock = threading.RLock()
        self._collect = False
        self._request: wire.Request = None  # the open request of the current phase
        self.round = CollectionRound(self.rules.round_target(0), self.rules.random_target(self.rules.round_target(0)))
        self._last_round_ids: list[str] = []
        self._probe_obs: list[np.ndarray] = []
        self._model: Optional[wire.ModelBlob] = None
        self._candidate: Optional[wire.PolicyBlob] = None
        self._deployed: Optional[wire.PolicyBlob] = None
        self._gating = False
        self._gate_model_weights: Optional[bytes] = None  # the model blob loaded into _gate_model
        self._gate_model = None  # a ModelPlayer to load candidate models into (built once: torch warm-up)
        self._gate_model_lock = threading.RLock()  # one model (and rollout) at a time in _gate_model
        # (model, deployed policy, probes, fraction): the deployed policy's predicted joint-limit
        # violations in the newest model, rolled out while the policy player works on its candidate
        self._gate_reference: Optional[tuple[wire.ModelBlob, wire.PolicyBlob, np.ndarray, float]] = None
        self._it: dict[str, Any] = {}
        self._iteration_seen = 0
        self._start_pending = False  # a new iteration waits for the stop rule (may_start_iteration)
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
        self.visual_recorder = None  # the robot's view into the record (replayed by Foxglove's layout)
        if self.recorder is not None and self.record_visuals:
            from mbrl_ros.nodes.recording import TopicRecorder

            self.visual_recorder = TopicRecorder(self, self.recorder)
        self.metrics = MetricPublisher(self, recorder=self._record)
        self._pub_state = self.create_publisher(String, GAME_STATE, latched_qos())
        self._pub_deployed = self.create_publisher(UInt8MultiArray, POLICY_DEPLOYED, latched_qos())
        self._resend = ResendServer(self, POLICY_DEPLOYED_RESEND, "policy", self._pub_deployed.publish, self.diag)
        self.init_estop()  # /mbrl/estop and its release (mbrl_ros.nodes.estop)
        self.create_subscription(UInt8MultiArray, TRANSITIONS, self._on_transitions, transitions_qos())
        self.create_subscription(UInt8MultiArray, MODEL, self._on_model, latched_qos())
        self.create_subscription(UInt8MultiArray, POLICY_CANDIDATE, self._on_candidate, latched_qos())

        n_eval = self.cfg.eval_episodes if self.eval_episodes < 0 else int(self.eval_episodes)
        self.eval_seeds = self.rules.eval_seeds(n_eval)  # the same for every run of the task
        self._evals: "queue.Queue[Optional[tuple[dict, bytes]]]" = queue.Queue()
        self._eval_thread = None
        if self.eval_in_sim and n_eval > 0:
            self._eval_thread = threading.Thread(target=self._eval_worker, name="eval", daemon=True)
            self._eval_thread.start()
        self._pending_evals = 0

        if self.policy_gate.checks_model:  # build it now, not in the first gate (seconds of warm-up)
            from mbrl_ros.core.model_player import ModelPlayer

            self._gate_model = ModelPlayer(self.task, self.cfg, device="cpu")
        self.create_timer(0.02, self._tick)
        self.create_timer(1.0, self._publish_state)
        self.get_logger().info(
            f"{self.cfg.algo} on {self.task.info.task_id}: budget {self.cfg.samples} samples, N_init {self.cfg.n_init}, "
            f"N {self.n_per_iter}; waiting for the initial policy"
        )

    # -- records ------------------------------------------------------------------------
    def _record(self, topic: str, msg: Any) -> None:
        if self.recorder is not None:
            self.recorder.write(topic, msg)

    # -- the game state -----------------------------------------------------------------
    def state(self) -> wire.GameState:
        """The game state the players follow (:class:`mbrl_ros.wire.GameState`)."""
        r = self.referee
        with self._lock:
            request = self._request
            return wire.GameState(
                algo=self.cfg.algo,
                task_id=self.task.info.task_id,
                iteration=r.iteration,
                phase=r.phase.value,
                model_version=r.model_version,
                policy_version=r.policy_version,
                deployed_policy_version=r.deployed_policy_version if self._deployed is not None else -1,
                candidate_policy_version=r.candidate_policy_version,
                data_policy_version=r.data_policy_version,
                samples=self.intake.samples,
                sample_budget=int(self.cfg.samples),
                round_samples=self.round.samples,
                round_target=self.round.target,
                round_random_samples=self.round.random_samples,
                round_random_target=self.round.random_target,
                behavior=self.round.behavior,
                collect=bool(self._collect and not self._estop),
                estop=self._estop,
                done=r.phase is Phase.DONE,
                request=request,
                eval_success=self.history[-1].get("eval_success") if self.history else None,
                success_curve=tuple(h.get("eval_success") for h in self.history),
                wall_s=round(time.monotonic() - self.t0, 3),
                noise_policy=self.cfg.noise_policy,
                explore_noise_color=float(self.cfg.explore_noise_color),
                explore_min_std=float(self.cfg.explore_min_std),
                explore_mean_fraction=float(self.cfg.explore_mean_fraction),
            )

    def _publish_state(self, persist: bool = True) -> None:
        """Publish the game state; ``persist``: also to the MCAP record and ``game_state.json``
        (the per-episode count updates skip both: the 1 Hz state keeps them current)."""
        state = self.state()
        msg = String()
        msg.data = self._signed(state)
        s = state.to_body()
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
        self.diag.status_message(
            f"iteration {s['iteration']}, {s['phase']}, {s['samples']}/{s['sample_budget']} samples"
        )

    def _signed(self, state: wire.GameState) -> str:
        """The state's JSON with the e-stop release count, signed: the only game state collectors follow."""
        return security.sign_game_state(self.signer, state.to_json(), self._estop_release)

    def _write_state_file(self, s: dict) -> None:
        """``log_dir/game_state.json``: the launcher's progress bar reads it (no ROS needed)."""
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.log_dir / "game_state.json.tmp"
            tmp.write_text(json.dumps(s))
            tmp.replace(self.log_dir / "game_state.json")
        except OSError:
            pass

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
        assert rec is not None  # an accepted intake result carries its episode
        if purpose(rec) != "train":
            return
        self.diag.inc("samples", rec.length)
        self.diag.set("sequence_gaps", self.intake.gaps)
        with self._lock:
            if len(self._probe_obs) < 64 * self.gate_settings.probe_size:
                rows = rec.obs if rec.aux is None else np.concatenate([rec.obs, rec.aux], axis=1)
                self._probe_obs.append(rows[:: max(1, rec.length // 8)])
            collecting = self._collect and self.referee.phase is Phase.COLLECT
            counted = collecting and self.round.count(
                rec.episode_id,
                rec.behavior,
                rec.policy_version,
                rec.length,
                rec.episode_return,
                rec.success,
                self.referee.deployed_policy_version,
            )
            complete = counted and self.round.complete
        if rec.behavior == "policy":
            self.metrics.publish("episode_return", rec.episode_return)
            self.metrics.publish("episode_success", float(rec.success))
        if complete:
            self._tick()  # the round is complete: ask for the next move now, not at the next tick
        elif counted:
            self._publish_state(
                persist=False
            )  # the round's count (and behavior): collectors wait on it at a round's end

    def _on_model(self, msg: UInt8MultiArray) -> None:
        try:
            blob = wire.unpack_model(wire.from_msg(msg), expect_task=self.task.info.task_id)
        except wire.WireError as exc:
            self._refuse("model", str(exc), f"rejected_model_{exc.reason}")
            return
        with self._lock:
            if not isinstance(self._request, wire.FitModelRequest) or blob.header.get("request_id") != self._request.id:
                if self._model is None or blob.model_version != self._model.model_version:
                    self._refuse(
                        "model",
                        f"model v{blob.model_version} answers request {blob.header.get('request_id')!r}, "
                        f"the open request is {self._open_request_id()!r}",
                        "refused_out_of_order",
                    )
                return
            try:
                version = self.referee.model_fitted(blob.data_policy_version)
            except OrderViolation as exc:
                self._refuse("model", str(exc), "refused_out_of_order")
                return
            if version != blob.model_version:
                self.get_logger().warning(f"model blob says v{blob.model_version}, referee counted v{version}")
            self._model = blob
            self._request = None
            self._it.update(
                model_loss=blob.header.get("loss"),
                model_objective=blob.header.get("objective_value"),
                model_steps=blob.header.get("steps"),
                fit_s=blob.header.get("fit_s"),
                fit_threads=_int_or_none(blob.header.get("torch_threads")),
            )
        self.get_logger().info(f"model v{version} accepted (loss {blob.header.get('loss')})")
        self._start_gate_reference()
        self._tick()  # the next move now (publishes the state)

    def _on_candidate(self, msg: UInt8MultiArray) -> None:
        try:
            blob = wire.unpack_policy(
                wire.from_msg(msg),
                expect_task=self.task.info.task_id,
                check_contract=True,
                max_bytes=int(self.max_policy_bytes),
            )
        except wire.WireError as exc:
            self._refuse("policy", str(exc), f"rejected_policy_{exc.reason}")
            return
        with self._lock:
            if blob.policy_version == 0 and self._deployed is None and self.referee.phase is Phase.COLLECT:
                self._candidate = blob  # the initial policy: gated, then deployed for the first collection
                return
            if (
                not isinstance(self._request, wire.ImprovePolicyRequest)
                or blob.header.get("request_id") != self._request.id
            ):
                if self._candidate is None or blob.policy_version != self._candidate.policy_version:
                    self._refuse(
                        "policy",
                        f"policy v{blob.policy_version} (on model v{blob.model_version}) answers request "
                        f"{blob.header.get('request_id')!r}, the open request is {self._open_request_id()!r}",
                        "refused_out_of_order",
                    )
                return
            try:
                version = self.referee.policy_improved(blob.model_version)
            except OrderViolation as exc:
                self._refuse("policy", str(exc), "refused_out_of_order")
                return
            if version != blob.policy_version:
                self._refuse(
                    "policy", f"policy blob says v{blob.policy_version}, referee counted v{version}", "refused_version"
                )
            self._candidate = blob
            self._request = None
            self._start_gate(blob, initial=False)  # now, not at the next tick: hand-off latency
            stats = blob.header.get("stats") or {}
            self._it.update(
                J_model=stats.get("J_model"),
                kl=stats.get("kl"),
                kl_max=stats.get("kl_max"),
                model_success=stats.get("model_success"),
                policy_std=stats.get("policy_std"),
                follower_restart=_int_or_none(stats.get("follower_restart")),
                npg_s=stats.get("npg_s"),
                npg_threads=_int_or_none(stats.get("torch_threads")),
            )
        self.get_logger().info(f"candidate policy v{version} accepted for the gate (J(pi, M) {stats.get('J_model')})")
        self._publish_state()

    def _open_request_id(self) -> Optional[str]:
        return self._request.id if self._request is not None else None

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
            self._start_pending = True
        if self._start_pending:
            if self.cfg.stop_success > 0 and self._pending_evals > 0:
                # stop_success reads the evaluations of the iterations played so far: wait for them
                # (tens of ms for a deterministic task) so that the graph stops where the in-process
                # loop stops, instead of one iteration later with a policy nobody evaluated
                return
            self._start_pending = False
            if not self._can_afford_iteration():
                r.finish()
        if r.phase is Phase.DONE:
            self._finish()
            return
        if self._estop:
            return
        with self._lock:  # the gate worker moves the phase too: read it and act on it atomically
            handler = {
                Phase.COLLECT: self._collect_phase,
                Phase.FIT_MODEL: self._fit_phase,
                Phase.IMPROVE_POLICY: self._improve_phase,
                Phase.GATE: self._gate_phase,
                Phase.DEPLOY: self._deploy_phase,
                Phase.DONE: lambda: None,
            }[r.phase]
            try:
                handler()
            except OrderViolation as exc:  # a bug, not a player's fault: report it, keep refereeing
                self._refuse("step", str(exc), "internal_order_errors")

    def _can_afford_iteration(self) -> bool:
        """The game's rule (:meth:`GameRules.may_start_iteration`, as in the in-process loop); the
        evaluations run beside the game, and with stop_success on, a new iteration starts only
        once they have finished (so stop_success sees every one of them)."""
        with self._lock:
            history = [dict(h) for h in self.history]
        ok, why = self.rules.may_start_iteration(self.intake.samples, self.referee.iteration, history)
        if not ok:
            self.get_logger().info(f"the game ends: {why}")
        return ok

    def _collect_phase(self) -> None:
        with self._lock:
            if self._deployed is None:
                if self._candidate is not None and self._candidate.policy_version == 0 and not self._gating:
                    self._start_gate(self._candidate, initial=True)
                return
            if not self._collect and not self.round.episode_ids:
                self.round = CollectionRound.for_iteration(self.rules, self.referee.iteration)
                self._collect = True
                self._publish_state()
                return
            if not self.round.complete:
                return
            self._collect = False
            version = self.referee.deployed_policy_version
            self.referee.data_collected(version)
            done, self.round = self.round, CollectionRound(0)
            self._last_round_ids = list(done.episode_ids)
            policy_samples, random_samples = done.samples, done.random_samples
            self._it.update(done.summary())
        self.get_logger().info(
            f"collected {policy_samples} samples of policy v{version}"
            + (f" and {random_samples} of the random policy" if random_samples else "")
            + f" (return {self._it['collect_return']:.1f}, success {self._it['collect_success']:.2f})"
        )
        self._publish_state()

    def _fit_phase(self) -> None:
        r = self.referee
        with self._lock:
            if isinstance(self._request, wire.FitModelRequest):
                return
            self._request = wire.FitModelRequest(
                id=f"fit-i{r.iteration}-m{r.model_version + 1}",
                aggressive=self.rules.model_fit_aggressive(r.iteration),
                model_version=r.model_version + 1,
                policy_version=r.deployed_policy_version,
                episode_ids=tuple(self._last_round_ids),
            )
        self._publish_state()

    def _improve_phase(self) -> None:
        r = self.referee
        with self._lock:
            if isinstance(self._request, wire.ImprovePolicyRequest):
                return
            k = self.rules.npg_steps()
            self._request = wire.ImprovePolicyRequest(
                id=f"improve-i{r.iteration}-p{r.policy_version + 1}",
                model_version=r.expected_model_version_for_policy(),
                n_steps=int(k),
                policy_version=r.policy_version + 1,
                base_policy_version=r.deployed_policy_version,
                episode_ids=tuple(self._last_round_ids),
            )
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
            assert blob is not None  # DEPLOY follows a passed gate, which keeps its candidate
            self._deploy(blob)
            self.referee.deployed(blob.policy_version)
        self._publish_state()

    def _deploy(self, blob: wire.PolicyBlob) -> None:
        header = {
            k: v
            for k, v in blob.header.items()
            if k
            not in (
                "schema",
                "schema_version",
                "kind",
                "payload_size",
                "sha256",
                "task_id",
                "policy_version",
                "model_version",
                "iteration",
                "approved",
            )
        }
        data = wire.pack_policy(
            blob.onnx,
            task_id=blob.task_id,
            policy_version=blob.policy_version,
            model_version=blob.model_version,
            iteration=blob.iteration,
            approved=True,
            **header,
        )
        data = self.signer.sign_record(data)  # collectors run only what this run's key signed
        msg = wire.to_msg(data)
        self._pub_deployed.publish(msg)
        self._resend.offer(blob.policy_version, msg)  # a collector that lost it asks again
        self._deployed = blob
        self.metrics.publish("deployed_policy_version", blob.policy_version)
        self.get_logger().info(f"policy v{blob.policy_version} deployed")

    # -- the gate -----------------------------------------------------------------------
    def _start_gate(self, blob: wire.PolicyBlob, initial: bool) -> None:
        self._gating = True
        threading.Thread(target=self._gate_worker, args=(blob, initial), name="gate", daemon=True).start()

    def _start_gate_reference(self) -> None:
        """Roll the deployed policy out in the new model now, while the policy player computes its
        candidate, so the gate's reference is ready when the candidate arrives (one rollout fewer
        on the hand-off path)."""
        with self._lock:
            model, deployed = self._model, self._deployed
        if model is None or deployed is None or not self.policy_gate.checks_model:
            return
        threading.Thread(
            target=self._gate_reference_worker, args=(model, deployed), name="gate-reference", daemon=True
        ).start()

    def _gate_reference_worker(self, model: wire.ModelBlob, deployed: wire.PolicyBlob) -> None:
        try:
            policy = self._policy_of(deployed)
            probes = self._probes()
            with self._gate_model_lock:
                frac = self.policy_gate.violations(self._gate_ensemble(model), policy.act, probes)
        except Exception as exc:  # noqa: BLE001 - the gate then computes it itself
            self.get_logger().warning(
                f"gate reference rollout failed ({type(exc).__name__}: {exc}); "
                "the gate will roll out the deployed policy itself"
            )
            return
        with self._lock:
            self._gate_reference = (model, deployed, probes, frac)

    def _policy_of(self, blob: wire.PolicyBlob) -> Any:
        """The blob's policy: the one unpacked with it, else loaded from its ONNX with the contract checked."""
        return blob.policy if blob.policy is not None else wire.load_policy_checked(blob.onnx, self.task.info.task_id)

    def _gate_worker(self, blob: wire.PolicyBlob, initial: bool) -> None:
        t0 = time.perf_counter()
        try:
            result = self.gate(blob)
        except Exception as exc:  # noqa: BLE001 - a gate that crashes rejects
            result = GateResult(False, f"gate error: {type(exc).__name__}: {exc}")
        ok, why = result.ok, result.reason
        if ok and result.warning:
            self.diag.inc("gate_model_warnings")
            self.get_logger().warning(
                f"policy v{blob.policy_version}: {result.warning}; deployed anyway "
                f"(gate_model_severity {self.gate_settings.model_severity}: warn in simulation)"
            )
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
            self._it.update(gate_passed=ok, gate_warning=result.warning if ok else why)
            # deploy and start collecting right away (the tick would do the same up to 20 ms later)
            if ok and self.referee.phase is Phase.DEPLOY:
                self._deploy_phase()
            if self.referee.phase is Phase.COLLECT and not self._estop:
                self._collect_phase()
        if ok:
            self.get_logger().info(f"policy v{blob.policy_version} passed the gate ({1000 * dt:.0f} ms)")
        self._publish_state()

    def gate(self, blob: wire.PolicyBlob) -> GateResult:
        """Every check a policy must pass before it reaches a robot (:class:`PolicyGate`, the same
        gate as in ``mbrl-ros train``); the deployed policy's predicted violations in the newest
        model are reused when the reference rollout has them for the same model and policy."""
        try:
            policy = self._policy_of(blob)
        except wire.WireError as exc:
            return GateResult(False, str(exc))
        c = policy.contract
        with self._lock:
            model, deployed, reference = self._model, self._deployed, self._gate_reference
        probes, ensemble, deployed_act, deployed_violation = self._probes(), None, None, None
        with self._gate_model_lock:  # the reference thread and the gate share the model player
            if model is not None and self.policy_gate.checks_model:
                ensemble = self._gate_ensemble(model)
                if reference is not None and reference[0] is model and reference[1] is deployed:
                    probes, deployed_violation = reference[2], reference[3]  # same start states: the fractions compare
                    self.diag.inc("gate_reference_reused")
                elif deployed is not None:
                    deployed_act = self._policy_of(deployed).act
            return self.policy_gate.check(
                policy.act,
                int(c["obs_dim"]),
                int(c["act_dim"]),
                blob.header.get("log_std"),
                probes,
                ensemble=ensemble,
                deployed_act=deployed_act,
                deployed_violation=deployed_violation,
            )

    def _probes(self) -> np.ndarray:
        """Real observations and their model-only measurements (plus a noisy copy); Gaussian
        noise before any data (:func:`mbrl_ros.core.gate.probe_rows`)."""
        with self._lock:
            obs = np.concatenate(self._probe_obs) if self._probe_obs else None
        return probe_rows(self.task, obs, self.gate_settings.probe_size, np.random.default_rng(len(self.history)))

    def _gate_ensemble(self, model: wire.ModelBlob) -> Any:
        """The model player holding ``model``'s ensemble (each model is loaded once)."""
        from mbrl_ros.core.model_player import ModelPlayer

        with self._gate_model_lock:
            if self._gate_model is None:
                self._gate_model = ModelPlayer(self.task, self.cfg, device="cpu")
            if self._gate_model_weights is not model.weights:
                self._gate_model.load_bytes(model.weights)
                self._gate_model_weights = model.weights
            return self._gate_model.ensemble

    # -- iterations, evaluation, the end -----------------------------------------------
    def _iteration_done(self, iteration: int) -> None:
        with self._lock:
            samples = self.intake.samples
            it = IterationMetrics.from_fields(
                self.rules,
                iteration,
                samples,
                **self._it,
                policy_version=self.referee.deployed_policy_version,
                model_version=self.referee.model_version,
                wall_s=round(time.monotonic() - self.t0, 3),
            ).to_row()
            self._it = {}
            self.history.append(it)
            deployed = self._deployed
        evaluates = self.rules.evaluates(iteration, samples)
        for key in ("samples", "model_loss", "J_model", "kl", "collect_return", "collect_success"):
            if it.get(key) is not None:
                self.metrics.publish(key, float(it[key]))
        self.metrics.publish("iteration", float(iteration))
        if self._eval_thread is not None and deployed is not None and evaluates:
            self._pending_evals += 1
            self._evals.put((it, deployed.onnx))
        self._write_metrics()
        self.get_logger().info(f"iteration {iteration} done: {it.get('samples')} samples")

    def _eval_worker(self) -> None:
        from mbrl_ros.core.onnx_export import load_onnx_policy
        from mbrl_ros.core.train import make_world
        from mbrl_ros.core.world import evaluate

        # the in-process loop's evaluation world: no randomisation, the game's fixed dynamics (those the
        # sim collectors run: dynamics:= of the graph)
        env = make_world(self.task.info.task_id, False, self.cfg.dynamics)
        while True:
            job = self._evals.get()
            if job is None:
                return
            it, onnx = job
            try:
                policy = load_onnx_policy(onnx, expect_task=self.task.info.task_id)
                ev = evaluate(env, policy.act, self.eval_seeds)
                with self._lock:
                    it.update(
                        eval_success=ev["success"],
                        eval_return=ev["return"],
                        eval_final_error=ev["final_error"],
                        eval_s=ev["eval_s"],
                    )
                self.metrics.publish("eval_success", ev["success"])
                self.metrics.publish("eval_return", ev["return"])
                self.get_logger().info(
                    f"iteration {it['iteration']}: eval success {ev['success']:.2f}, return {ev['return']:.1f}"
                )
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
        plot = None
        if self.history:
            plot = str(self.log_dir / "learning_curve.png")
            plot_curve(
                self.history, plot, f"{self.cfg.algo} on {self.task.info.task_id} (seed {self.cfg.seed}, ROS graph)"
            )
        milestones = success_milestones(self.history)
        final = self.history[-1] if self.history else {}
        summary = {
            "algo": self.cfg.algo,
            "task": self.task.info.task_id,
            "iterations": max(0, len(self.history) - 1),
            "samples": self.intake.samples,
            "sample_budget": self.cfg.samples,
            "episodes": len(self.intake.ids),
            "final_eval_success": final.get("eval_success"),
            "final_eval_return": final.get("eval_return"),
            "final_collect_success": final.get("collect_success"),
            "best_eval_success": max((h.get("eval_success") or 0.0 for h in self.history), default=None),
            "samples_to_90": milestones["held"],
            "first_touch_90": milestones["first_touch"],
            "deployed_policy_version": self.referee.deployed_policy_version,
            "model_version": self.referee.model_version,
            "wall_s": round(time.monotonic() - self.t0, 3),
            "refused_out_of_order": self.diag.count("refused_out_of_order"),
            "gate_failed": self.diag.count("gate_failed"),
            "sequence_gaps": self.intake.gaps,
            "policy": str(policy_path) if self._deployed is not None else None,
            "metrics": str(self.log_dir / "metrics.jsonl"),
            "mcap": str(self.recorder.path) if self.recorder is not None else None,
            "plot": plot,
        }
        if self.init_from is not None:
            summary["init_from"] = self.init_from
        (self.log_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
        if self.recorder is not None:
            self.recorder.close()
        self.get_logger().info(
            f"game over: {summary['samples']} samples, {summary['iterations']} iterations, "
            f"final eval success {summary['final_eval_success']}; summary in {self.log_dir / 'summary.json'}"
        )

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


def main(args: Optional[list[str]] = None) -> None:
    run_node(GameCoordinator, args)


if __name__ == "__main__":
    main()
