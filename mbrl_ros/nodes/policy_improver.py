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
for the initial data collection: a fresh policy, or with ``init_from`` a finished run's
(:mod:`mbrl_ros.nodes.init_from`; ``init_from_parts`` with ``buffer``: the run's buffer
episodes are this buffer's initial data too, as the model learner's).
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any, Optional

from std_msgs.msg import UInt8MultiArray

from mbrl_ros import wire
from mbrl_ros.core.model_player import ModelPlayer
from mbrl_ros.core.policy_player import PolicyPlayer, StartStates
from mbrl_ros.core.rules import GameRules
from mbrl_ros.core.seeding import POLICY_PLAYER, TorchStream
from mbrl_ros.core.threads import POLICY_PLAYER_MAX_THREADS
from mbrl_ros.core.train import init_policy_player_from
from mbrl_ros.nodes import MODEL, MODEL_RESEND, POLICY_CANDIDATE, POLICY_WEIGHTS, latched_qos, run_node, weights_qos
from mbrl_ros.nodes.init_from import declare_init_from, init_buffer_from
from mbrl_ros.nodes.learner import Job, LearnerNode
from mbrl_ros.nodes.parameters import declare
from mbrl_ros.nodes.policy_weights import policy_to_bytes
from mbrl_ros.nodes.resend import ResendRequester


class PolicyImprover(LearnerNode):
    node_name = "policy_improver"
    request_type = wire.ImprovePolicyRequest
    phase = "improve_policy"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.node_name, **kwargs)
        # the policy player's own random stream, as in mbrl-ros train: the same seed takes the same steps
        self.stream = TorchStream(self.cfg.seed, POLICY_PLAYER)
        with self.stream.active():
            self.player = PolicyPlayer(self.task, self.cfg)
        self.stream.device = self.player.device if self.player.device.type == "cuda" else None
        # init_from:= (issue 15): the game starts from a finished run's policy instead of a fresh one,
        # and with init_from_parts:=...,buffer from its buffer episodes (start states, normalisation)
        init_from, parts = declare_init_from(self)
        if init_from:
            init_policy_player_from(self.player, self.task.info.task_id, init_from)
            self.get_logger().info(f"initial policy loaded from {init_from}")
        if "buffer" in parts:
            self.intake.buffer = init_buffer_from(
                init_from, self.task.info.task_id, self.buffer.kind, self.buffer.capacity
            )
            self.get_logger().info(
                f"initial buffer loaded from {init_from}: {len(self.buffer.episode_ids())} episodes (not samples of this game)"
            )
        self.model_player = ModelPlayer(self.task, self.cfg)  # only to load the published ensembles
        self._model: Optional[wire.ModelBlob] = None
        self._model_lock = threading.Lock()
        self.policy_version = 0
        # weights of every published version (~20 kB each): a candidate the gate rejects is rolled back (as in-process)
        self._snapshots: dict[int, dict] = {}

        self._pub_policy = self.create_publisher(UInt8MultiArray, POLICY_CANDIDATE, latched_qos())
        self._pub_weights = self.create_publisher(UInt8MultiArray, POLICY_WEIGHTS, weights_qos())
        self.create_subscription(UInt8MultiArray, MODEL, self._on_model, latched_qos())
        resend_s = declare(
            self,
            "resend_after_s",
            3.0,
            "ask the model learner again for the model version a request names after this long without it",
            read_only=True,
            lo=0.1,
            hi=600.0,
        )
        self._model_resend = ResendRequester(self, MODEL_RESEND, "model", resend_s, self.diag)
        self.start_serving()
        self._publish_policy(iteration=0, model_version=0, version=0, request_id="initial", stats={})
        self.get_logger().info(
            f"policy player for {self.cfg.algo} on {self.task.info.task_id}: initial policy v0 published"
        )

    def _on_model(self, msg: UInt8MultiArray) -> None:
        try:
            blob = wire.unpack_model(wire.from_msg(msg), expect_task=self.task.info.task_id)
        except wire.WireError as exc:
            self.diag.inc(f"rejected_model_{exc.reason}")
            self.diag.warn(f"rejected model: {exc}")
            self.get_logger().warning(f"rejected model message: {exc}")
            return
        with self._model_lock:
            self._model = blob
        self.diag.set("model_version", blob.model_version)
        self._tick()

    # -- the policy player's move -----------------------------------------------------
    def ready(self, job: Job) -> bool:
        want = job.request.model_version
        with self._model_lock:
            model = self._model
        if model is None or model.model_version != want:
            self.diag.status_message(f"waiting for model v{want} (have {model.model_version if model else None})")
            self._model_resend.missing(want)
            return False
        self._model_resend.arrived()
        return True

    def work(self, job: Job) -> None:
        req = job.request
        with self._model_lock:
            model = self._model
        assert model is not None and model.model_version == req.model_version
        # torch_threads:=0: from the cores free right now (a fresh probe: the other nodes'
        # phases since this node's last one are over), at most POLICY_PLAYER_MAX_THREADS: NPG's
        # small tensors run slower on more threads
        threads = self.core_budget.choose(fresh=True, cap=POLICY_PLAYER_MAX_THREADS)
        self.diag.set("torch_threads", threads)
        self.get_logger().info(
            f"improvement: {threads} torch thread(s); other processes used "
            f"{self.core_budget.others_cores:.2f} core(s) just before"
        )
        self.diag.status_message(f"NPG in model v{model.model_version} (request {req.id}, {threads} torch threads)")
        self.model_player.load_bytes(model.weights)
        base = req.base_policy_version
        if base != self.policy_version and base in self._snapshots:
            self.player.policy.load_state_dict(self._snapshots[base])
            self.get_logger().info(f"candidate v{self.policy_version} was not deployed: continuing from v{base}")
        buffer = self.intake.buffer_snapshot()
        with self.stream.active():
            restarts = GameRules.of(self.cfg, self.task.info.horizon).follower_restarts()
            stats = self.player.best_response(
                self.model_player.ensemble, StartStates.from_buffer(buffer), req.n_steps, restarts
            )
        if not self.player.parameters_finite():
            raise ValueError("NPG produced non-finite policy parameters")
        stats["torch_threads"] = threads
        self._publish_policy(job.iteration, model.model_version, req.policy_version, req.id, stats)
        for key in ("J_model", "kl", "kl_max", "model_success", "policy_std", "follower_restart"):
            if key in stats:
                self.metrics.publish(key, stats[key])
        self.get_logger().info(
            f"policy v{req.policy_version} on model v{model.model_version}: J(pi, M) {stats.get('J_model', float('nan')):.4g}, "
            f"KL {stats.get('kl', float('nan')):.3g}, {stats.get('npg_s', 0.0):.2f} s, {threads} torch threads"
        )

    def _publish_policy(self, iteration: int, model_version: int, version: int, request_id: str, stats: dict) -> None:
        onnx_bytes = self.player.to_onnx_bytes(iteration, version)
        # the weights first: whoever needs them (MAL + agent reward) has them before the ONNX is deployed
        self._pub_weights.publish(
            wire.to_msg(
                wire.pack_policy_weights(
                    policy_to_bytes(self.player.policy),
                    task_id=self.task.info.task_id,
                    policy_version=version,
                    iteration=iteration,
                    onnx_sha256=wire.sha256_hex(onnx_bytes),
                )
            )
        )
        log_std = self.player.policy.log_std.detach().cpu().numpy().astype(float).tolist()
        data = wire.pack_policy(
            onnx_bytes,
            task_id=self.task.info.task_id,
            policy_version=version,
            model_version=model_version,
            iteration=iteration,
            request_id=request_id,
            log_std=log_std,
            published_at=time.time(),
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
