"""policy_improver: the policy player as a ROS node.

Keeps the same buffer as the model learner (from ``/mbrl/transitions``; the real start states of
model rollouts and the observation statistics come from it), and the latest model from
``/mbrl/model``. When the game state asks for a policy step (phase ``improve_policy``) it runs
``n_steps`` model-based NPG steps (:class:`~mbrl_ros.core.policy_player.PolicyPlayer`) in
exactly the model version the coordinator names, after every episode of the request has
arrived, and publishes the policy as ONNX (the observation/action contract in its metadata)
on ``/mbrl/policy/candidate``. The coordinator gates it before any collector may run it.
Every version's torch weights also go out as safetensors on ``/mbrl/policy/weights`` (the
model player of MAL + agent reward differentiates through the deployed policy).

At start it publishes the initial policy (version 0), which the coordinator gates and deploys
for the initial data collection.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any, Optional

from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from mbrl_ros import wire
from mbrl_ros.core.buffers import EpisodeBuffer
from mbrl_ros.core.model_player import ModelPlayer
from mbrl_ros.core.policy_player import PolicyPlayer, StartStates
from mbrl_ros.core.schedule import game_spec
from mbrl_ros.nodes import (
    GAME_STATE, MODEL, POLICY_CANDIDATE, POLICY_WEIGHTS, TRANSITIONS, latched_qos, run_node, transitions_qos, weights_qos,
)
from mbrl_ros.nodes.diagnostics import DiagnosticsPublisher, MetricPublisher
from mbrl_ros.nodes.episode_intake import EpisodeIntake, IntakeResult
from mbrl_ros.nodes.model_learner import declare_game
from mbrl_ros.nodes.parameters import declare
from mbrl_ros.nodes.policy_weights import policy_to_bytes


class PolicyImprover(Node):
    node_name = "policy_improver"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.node_name, **kwargs)
        self.task, self.cfg = declare_game(self)
        self.spec = game_spec(self.cfg.algo)
        self.mcap_path = declare(self, "mcap_path", "", "the run's MCAP record (missing episodes are looked up there)", read_only=True)
        self.missing_wait_s = declare(self, "missing_episode_replay_s", 1.0,
                                      "after this long waiting for a requested episode, look it up in the MCAP", lo=0.05, hi=60.0)
        self.player = PolicyPlayer(self.task, self.cfg)
        self.model_player = ModelPlayer(self.task, self.cfg)  # only to load the published ensembles
        capacity = self.cfg.buffer_size if self.spec.buffer == "fifo" else None
        self.intake = EpisodeIntake(self.task, EpisodeBuffer(self.spec.buffer, capacity))
        self._lock = threading.Lock()
        self._model: Optional[wire.ModelBlob] = None
        self._request: Optional[dict] = None
        self._busy = False
        self._waiting_since = 0.0
        self.served: set[str] = set()
        self.policy_version = 0
        # weights of every published version (~20 kB each): a candidate the gate rejects is rolled back (as in-process)
        self._snapshots: dict[int, dict] = {}

        self.diag = DiagnosticsPublisher(self)
        self.metrics = MetricPublisher(self)
        self._pub_policy = self.create_publisher(UInt8MultiArray, POLICY_CANDIDATE, latched_qos())
        self._pub_weights = self.create_publisher(UInt8MultiArray, POLICY_WEIGHTS, weights_qos())
        self.create_subscription(UInt8MultiArray, TRANSITIONS, self._on_transitions, transitions_qos())
        self.create_subscription(UInt8MultiArray, MODEL, self._on_model, latched_qos())
        self.create_subscription(String, GAME_STATE, self._on_state, latched_qos())
        self.create_timer(0.05, self._tick)
        self._publish_policy(iteration=0, model_version=0, version=0, request_id="initial", stats={})
        self.get_logger().info(f"policy player for {self.cfg.algo} on {self.task.info.task_id}: initial policy v0 published")

    # -- subscriptions ------------------------------------------------------------------
    def _on_transitions(self, msg: UInt8MultiArray) -> None:
        self._count(self.intake.ingest(wire.from_msg(msg)))

    def _count(self, r: IntakeResult) -> None:
        if r.accepted:
            self.diag.inc("episodes_accepted")
        elif r.duplicate:
            self.diag.inc("episodes_duplicate")
        else:
            self.diag.inc(f"rejected_{r.reason}")
            self.diag.warn(f"rejected episode: {r.message}")
            self.get_logger().warning(f"rejected episode message: {r.message}")
        self.diag.set("buffer_transitions", len(self.intake.buffer))

    def _on_model(self, msg: UInt8MultiArray) -> None:
        try:
            blob = wire.unpack_model(wire.from_msg(msg), expect_task=self.task.info.task_id)
        except wire.WireError as exc:
            self.diag.inc(f"rejected_model_{exc.reason}")
            self.diag.warn(f"rejected model: {exc}")
            self.get_logger().warning(f"rejected model message: {exc}")
            return
        with self._lock:
            self._model = blob
        self.diag.set("model_version", blob.model_version)

    def _on_state(self, msg: String) -> None:
        try:
            state = wire.unpack_game_state(msg.data)
        except wire.WireError as exc:
            self.diag.inc(f"rejected_game_state_{exc.reason}")
            self.diag.warn(f"rejected game state: {exc}")
            return
        req = state["request"]
        if state["phase"] == "improve_policy" and req.get("kind") == "improve_policy" \
                and state["task_id"] == self.task.info.task_id:
            with self._lock:
                if req.get("id") not in self.served and (self._request is None or self._request["id"] != req.get("id")):
                    self._request = dict(req, iteration=state["iteration"])
                    self._waiting_since = time.monotonic()
        self._tick()  # start at once (the timer is the fallback while waiting for data)

    # -- the policy player's move -----------------------------------------------------
    def _tick(self) -> None:
        with self._lock:
            req, busy, model = self._request, self._busy, self._model
        if req is None or busy:
            return
        want = int(req["model_version"])
        if model is None or model.model_version != want:
            self.diag.status_message(f"waiting for model v{want} (have {model.model_version if model else None})")
            return
        missing = self.intake.missing(req.get("episode_ids", []))
        if missing:
            if time.monotonic() - self._waiting_since > float(self.missing_wait_s) and self.mcap_path:
                self.intake.replay_mcap(Path(self.mcap_path), TRANSITIONS, self._count, only=set(missing))
                self._waiting_since = time.monotonic()
            self.diag.status_message(f"waiting for {len(missing)} episode(s) of request {req['id']}")
            return
        with self._lock:
            self._busy = True
        threading.Thread(target=self._improve, args=(req, model), name="improve", daemon=True).start()

    def _improve(self, req: dict, model: wire.ModelBlob) -> None:
        try:
            # torch_threads:=0: from the cores free right now (a fresh probe: the other nodes'
            # phases since this node's last one are over)
            threads = self.core_budget.choose(fresh=True)
            self.diag.set("torch_threads", threads)
            self.get_logger().info(f"improvement: {threads} torch thread(s); other processes used "
                                   f"{self.core_budget.others_cores:.2f} core(s) just before")
            self.diag.status_message(f"NPG in model v{model.model_version} (request {req['id']}, {threads} torch threads)")
            self.model_player.load_bytes(model.weights)
            base = int(req.get("base_policy_version", self.policy_version))
            if base != self.policy_version and base in self._snapshots:
                self.player.policy.load_state_dict(self._snapshots[base])
                self.get_logger().info(f"candidate v{self.policy_version} was not deployed: continuing from v{base}")
            buffer = self.intake.buffer_snapshot()
            stats = self.player.improve(self.model_player.ensemble, StartStates.from_buffer(buffer), int(req["n_steps"]))
            if not self.player.parameters_finite():
                raise ValueError("NPG produced non-finite policy parameters")
            stats["torch_threads"] = threads
            version = int(req["policy_version"])
            self._publish_policy(int(req["iteration"]), model.model_version, version, req["id"], stats)
            with self._lock:
                self.served.add(req["id"])
            for key in ("J_model", "kl", "kl_max", "model_success", "policy_std"):
                if key in stats:
                    self.metrics.publish(key, stats[key])
            self.get_logger().info(
                f"policy v{version} on model v{model.model_version}: J(pi, M) {stats.get('J_model', float('nan')):.4g}, "
                f"KL {stats.get('kl', float('nan')):.3g}, {stats.get('npg_s', 0.0):.2f} s, {threads} torch threads")
        except Exception as exc:  # noqa: BLE001 - report and keep serving
            self.diag.fault(f"policy step failed: {exc}")
            self.get_logger().error(f"policy step failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._busy = False
                if self._request is req:
                    self._request = None

    def _publish_policy(self, iteration: int, model_version: int, version: int, request_id: str, stats: dict) -> None:
        onnx_bytes = self.player.to_onnx_bytes(iteration, version)
        # the weights first: whoever needs them (MAL + agent reward) has them before the ONNX is deployed
        self._pub_weights.publish(wire.to_msg(wire.pack_policy_weights(
            policy_to_bytes(self.player.policy), task_id=self.task.info.task_id, policy_version=version,
            iteration=iteration, onnx_sha256=wire.sha256_hex(onnx_bytes))))
        log_std = self.player.policy.log_std.detach().cpu().numpy().astype(float).tolist()
        data = wire.pack_policy(
            onnx_bytes, task_id=self.task.info.task_id, policy_version=version, model_version=model_version,
            iteration=iteration, request_id=request_id, log_std=log_std, published_at=time.time(),
            stats={k: wire.finite_or_none(v) for k, v in stats.items() if isinstance(v, (int, float))},
        )
        self._pub_policy.publish(wire.to_msg(data))
        self.policy_version = version
        self._snapshots[version] = copy.deepcopy(self.player.policy.state_dict())
        self.diag.set("policy_version", version)


def main(args: Optional[list[str]] = None) -> None:
    run_node(PolicyImprover, args)


if __name__ == "__main__":
    main()
