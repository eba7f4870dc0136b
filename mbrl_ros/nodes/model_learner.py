"""model_learner: the model player as a ROS node.

Subscribes to ``/mbrl/transitions`` and keeps the game's buffer (FIFO for PAL, aggregate for
MAL; :class:`~mbrl_ros.core.buffers.EpisodeBuffer`). When the game state asks for a model fit
(phase ``fit_model``), it waits until every episode the coordinator counted for that round is
in the buffer, fits the ensemble (:class:`~mbrl_ros.core.model_player.ModelPlayer`) in a worker
thread, and publishes the model on ``/mbrl/model`` as a versioned safetensors blob with its
SHA-256 (RELIABLE + TRANSIENT_LOCAL + KEEP_LAST(1)).

MAL + agent reward: the fit's objective includes the return of the *deployed* policy in the
model (``ModelPlayer.fit(..., policy=...)``, as the in-process loop). ONNX cannot be
differentiated through, so the node takes the torch weights the policy improver publishes for
every version on ``/mbrl/policy/weights`` and fits against the version the fit request names
(it waits for them like for missing episodes). MAL + random noise needs nothing here: the
coordinator has the collectors add random-policy episodes (``behavior: random``) to every
round, and they land in the aggregate buffer with the rest (the fraction is reported).

Restart: after every fit the node checkpoints the ensemble, the buffer and its ledger of
episode ids under ``checkpoint_dir``. On start it loads that checkpoint, then replays the
run's MCAP record (``mcap_path``, written by the coordinator) for every episode it missed while
it was down; ids already in the ledger are dropped, so the buffer ends with exactly the
episodes the collectors published. An episode the coordinator asks for that has not arrived
live is looked up in the MCAP too.

Fine-tuning (``init_from`` with ``init_from_parts``, :mod:`mbrl_ros.nodes.init_from`): ``model``
starts the ensemble from the source run's (warm start, its fit count too); ``buffer`` makes the
source run's buffer episodes the buffer's initial data. They are not this game's episodes: not
in the ledger, not in the MCAP, not counted by the coordinator. The checkpoint's buffer holds
them, so a restart restores them from there; a restart before the first checkpoint loads them
from the source run again, before the MCAP replay.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from safetensors.numpy import save_file
from std_msgs.msg import UInt8MultiArray

from mbrl_ros import wire
from mbrl_ros.core.buffers import EpisodeBuffer
from mbrl_ros.core.model_player import ModelPlayer
from mbrl_ros.core.schedule import ModelObjective
from mbrl_ros.core.seeding import MODEL_PLAYER, TorchStream
from mbrl_ros.nodes import MODEL, MODEL_RESEND, POLICY_WEIGHTS, TRANSITIONS, latched_qos, run_node, weights_qos
from mbrl_ros.nodes.init_from import declare_init_from, init_buffer_from, init_model_player_from
from mbrl_ros.nodes.learner import (  # noqa: F401 - declare_game / thread helpers: historical import path
    AUTO_MAX_THREADS,
    Job,
    LearnerNode,
    declare_game,
    declare_torch_threads,
    torch_thread_budget,
)
from mbrl_ros.nodes.parameters import declare
from mbrl_ros.nodes.policy_weights import load_policy_bytes, new_policy
from mbrl_ros.nodes.resend import ResendServer


class ModelLearner(LearnerNode):
    node_name = "model_learner"
    request_type = wire.FitModelRequest
    phase = "fit_model"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.node_name, **kwargs)
        self.checkpoint_dir = declare(
            self, "checkpoint_dir", "", "where the model, buffer and ledger are checkpointed ('' = off)", read_only=True
        )
        self.max_model_bytes = declare(
            self, "max_model_bytes", wire.MAX_MODEL_BYTES, "largest model blob", read_only=True, lo=1024, hi=1 << 31
        )
        # the model player's own random stream, as in mbrl-ros train: the same seed fits the same models
        self.stream = TorchStream(self.cfg.seed, MODEL_PLAYER)
        with self.stream.active():
            self.player = ModelPlayer(self.task, self.cfg)
        self.stream.device = self.player.device if self.player.device.type == "cuda" else None
        # init_from:= with init_from_parts:=...,model (issue 15): the source run's ensemble, warm
        self.init_from, self.init_parts = declare_init_from(self)
        if "model" in self.init_parts:
            state = init_model_player_from(self.player, self.task.info.task_id, self.init_from)
            self.get_logger().info(
                f"initial model loaded from {self.init_from} ({state.get('model_fits', 0)} fits there)"
            )
        self.model_version = 0
        self._last_model_header: Optional[dict] = None
        self._saved_at_end = False
        self._weights: dict[int, bytes] = {}  # policy version -> safetensors (MAL + agent reward)
        self._fit_policy = None  # the policy the agent-reward objective differentiates through

        self._pub_model = self.create_publisher(UInt8MultiArray, MODEL, latched_qos())
        # the policy player that lost a model (a depth-1 latched reader) asks again (mbrl_ros.nodes.resend)
        self._resend = ResendServer(self, MODEL_RESEND, "model", self._pub_model.publish, self.diag)
        if self.spec.model_objective is ModelObjective.AGENT_REWARD:
            self._fit_policy = new_policy(self.task, self.cfg, self.player.device)
            self.create_subscription(UInt8MultiArray, POLICY_WEIGHTS, self._on_weights, weights_qos())
        self.get_logger().info(
            f"model player of {self.cfg.algo}: objective {self.spec.model_objective.value}, {self.spec.buffer} buffer"
        )
        self._restore()
        self.start_serving()

    # -- restart ------------------------------------------------------------------------
    def _restore(self) -> None:
        d = Path(self.checkpoint_dir) if self.checkpoint_dir else None
        if d is not None and (d / "learner_state.json").is_file():
            state = json.loads((d / "learner_state.json").read_text())
            self.intake.buffer = EpisodeBuffer.load(d)
            self.intake.load_state(state["intake"])
            self.model_version = int(state["model_version"])
            self.served = set(state.get("served", []))
            if (d / "model.safetensors").is_file() and self.model_version > 0:
                self.player.load_bytes((d / "model.safetensors").read_bytes())
                self.player.n_fits = int(state.get("n_fits", 0))
                self._last_model_header = state.get("model_header")
            self.get_logger().info(
                f"resumed from {d}: model v{self.model_version}, {len(self.intake.ids)} episodes in the ledger"
            )
        elif "buffer" in self.init_parts:  # (after a checkpoint, its buffer holds the source's episodes)
            self.intake.buffer = init_buffer_from(
                self.init_from, self.task.info.task_id, self.buffer.kind, self.buffer.capacity
            )
            self.get_logger().info(
                f"initial buffer loaded from {self.init_from}: {len(self.buffer.episode_ids())} episodes, "
                f"{len(self.buffer)} transitions (the source's: not samples of this game)"
            )
        if self.mcap_path:
            n = self.intake.replay_mcap(Path(self.mcap_path), TRANSITIONS, self._count)
            if n:
                self.get_logger().info(f"replayed {n} episodes from {self.mcap_path}")
        self.update_diagnostics()

    def _checkpoint(self, model_bytes: Optional[bytes], header: dict) -> None:
        """Model (when given), buffer and ledger under ``checkpoint_dir``, each file replaced atomically."""
        if not self.checkpoint_dir:
            return
        d = Path(self.checkpoint_dir)
        d.mkdir(parents=True, exist_ok=True)
        if model_bytes is not None:
            tmp = d / "model.safetensors.tmp"
            tmp.write_bytes(model_bytes)
            os.replace(tmp, d / "model.safetensors")
        tensors, meta, ledger = self.intake.checkpoint_state()
        state = {
            "model_version": self.model_version,
            "served": sorted(self.served),
            "n_fits": self.player.n_fits,
            "model_header": header,
            "intake": ledger,
        }
        if tensors:
            save_file(tensors, str(d / "buffer.safetensors.tmp"))
            os.replace(d / "buffer.safetensors.tmp", d / "buffer.safetensors")
        (d / "buffer.json.tmp").write_text(json.dumps(meta))
        os.replace(d / "buffer.json.tmp", d / "buffer.json")
        tmp = d / "learner_state.json.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, d / "learner_state.json")

    # -- subscriptions ------------------------------------------------------------------
    def _on_weights(self, msg: UInt8MultiArray) -> None:
        """A policy version's torch weights: checked by loading them, kept for the agent-reward fit."""
        try:
            blob = wire.unpack_policy_weights(wire.from_msg(msg), expect_task=self.task.info.task_id)
            load_policy_bytes(new_policy(self.task, self.cfg), blob.weights)  # architecture and finiteness
        except ValueError as exc:  # WireError is a ValueError
            reason = getattr(exc, "reason", "contract")
            self.diag.inc(f"rejected_policy_weights_{reason}")
            self.diag.warn(f"rejected policy weights: {exc}")
            self.get_logger().warning(f"rejected policy weights: {exc}")
            return
        with self._lock:
            self._weights[blob.policy_version] = blob.weights
            for old in sorted(self._weights)[:-8]:  # the deployed version is one of the newest few
                del self._weights[old]
        self.diag.set("policy_weights_received", blob.policy_version)
        self._tick()

    def update_diagnostics(self) -> None:
        self.diag.set("buffer_transitions", len(self.buffer))
        self.diag.set("buffer_episodes", len(self.buffer.episode_ids()))
        self.diag.set("episodes_total", len(self.intake.ids))
        self.diag.set("sequence_gaps", self.intake.gaps)
        self.diag.set("model_version", self.model_version)

    def on_game_state(self, state: wire.GameState) -> None:
        if state.done and not self._saved_at_end:
            self._saved_at_end = True  # the game is over: keep the final ledger
            self._checkpoint(None, self._last_model_header or {})

    # -- the model player's move ------------------------------------------------------
    def ready(self, job: Job) -> bool:
        req = job.request
        if (
            req.model_version == self.model_version
            and self._last_model_header is not None
            and self._last_model_header.get("request_id") == req.id
        ):
            self._republish(job)  # restarted after fitting but before the coordinator saw it
            return False
        if self._fit_policy is not None:
            with self._lock:
                have = req.policy_version in self._weights
            if not have:
                self.diag.status_message(
                    f"waiting for the weights of policy v{req.policy_version} (request {req.id}, agent reward)"
                )
                return False
        return True

    def work(self, job: Job) -> None:
        req = job.request
        # torch_threads:=0: from the cores free right now (a fresh probe: the other nodes'
        # phases since this node's last one are over)
        threads = self.core_budget.choose(fresh=True)
        self.diag.set("torch_threads", threads)
        self.get_logger().info(
            f"fit: {threads} torch thread(s); other processes used "
            f"{self.core_budget.others_cores:.2f} core(s) just before"
        )
        self.diag.status_message(f"fitting (request {req.id}, {threads} torch threads)")
        buffer = self.intake.buffer_snapshot()  # the fit sees one consistent buffer
        policy, policy_version = None, None
        if self._fit_policy is not None:  # MAL + agent reward: the deployed policy's return in the model
            policy_version = req.policy_version
            with self._lock:
                weights = self._weights[policy_version]
            load_policy_bytes(self._fit_policy, weights)
            policy = self._fit_policy
        with self.stream.active():
            result = self.player.fit(buffer, req.aggressive, policy=policy)
        model_bytes = self.player.to_bytes()
        n_random = sum(len(e) for e in buffer.episodes if e.policy_version == -1)
        self.model_version = req.model_version
        header = {
            "request_id": req.id,
            "loss": wire.finite_or_none(result.get("loss")),
            "steps": int(result.get("steps", 0)),
            "fit_s": wire.finite_or_none(result.get("fit_s")),
            "n_transitions": len(buffer),
            "n_episodes": len(buffer.episode_ids()),
            "episodes_total": len(self.intake.ids),
            "aggressive": req.aggressive,
            "objective": self.spec.model_objective.value,
            "fit_policy_version": policy_version,
            "objective_value": wire.finite_or_none(result.get("objective", result.get("loss"))),
            "random_fraction": round(n_random / max(len(buffer), 1), 6),
            "published_at": time.time(),
            "torch_threads": threads,
        }
        with self._lock:
            self.served.add(req.id)
            self._last_model_header = header
        self._publish(model_bytes, job, header)  # first: the game waits for it
        self._checkpoint(model_bytes, header)  # a crash in between: the restarted node answers again
        self.metrics.publish("model_loss", result.get("loss", float("nan")))
        self.diag.set("objective", header["objective"])
        self.diag.set("fit_policy_version", policy_version)
        self.diag.set("buffer_random_fraction", header["random_fraction"])
        objective = header["objective"] + (f" against policy v{policy_version}" if policy is not None else "")
        if n_random:
            objective += f", {100 * header['random_fraction']:.1f}% random-policy data"
        self.get_logger().info(
            f"model v{self.model_version} ({objective}): loss {result.get('loss', float('nan')):.4g}, "
            f"{header['steps']} steps, {len(buffer)} transitions, {header['fit_s']:.2f} s, {threads} torch threads"
        )
        self.diag.status_message(f"model v{self.model_version} published")

    def _publish(self, model_bytes: bytes, job: Job, header: dict) -> None:
        data = wire.pack_model(
            model_bytes,
            task_id=self.task.info.task_id,
            model_version=job.request.model_version,
            iteration=job.iteration,
            data_policy_version=job.data_policy_version,
            sha256_weights=wire.sha256_hex(model_bytes),
            **header,
        )
        msg = wire.to_msg(data)
        self._pub_model.publish(msg)
        self._resend.offer(job.request.model_version, msg)

    def _republish(self, job: Job) -> None:
        d = Path(self.checkpoint_dir)
        with self._lock:
            self.served.add(job.request.id)
            self._job = None
        self._publish((d / "model.safetensors").read_bytes(), job, dict(self._last_model_header or {}))

    def shutdown(self) -> None:
        """Clean exit (Ctrl-C, end of the run): checkpoint the buffer and the ledger."""
        try:
            with self._lock:
                busy = self._busy
            if not busy:
                self._checkpoint(None, self._last_model_header or {})
        except Exception as exc:  # noqa: BLE001 - never fail on the way out
            self.get_logger().error(f"final checkpoint failed: {exc}")


def main(args: Optional[list[str]] = None) -> None:
    run_node(ModelLearner, args)


if __name__ == "__main__":
    main()
