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
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.numpy import save_file
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from mbrl_ros import wire
from mbrl_ros.core.buffers import EpisodeBuffer
from mbrl_ros.core.config import load_config
from mbrl_ros.core.model_player import ModelPlayer
from mbrl_ros.core.schedule import ModelObjective, game_spec
from mbrl_ros.core.threads import CoreBudget, cpu_count
from mbrl_ros.nodes import (
    GAME_STATE, MODEL, POLICY_WEIGHTS, TRANSITIONS, latched_qos, run_node, transitions_qos, weights_qos,
)
from mbrl_ros.nodes.diagnostics import DiagnosticsPublisher, MetricPublisher
from mbrl_ros.nodes.episode_intake import EpisodeIntake, IntakeResult
from mbrl_ros.nodes.parameters import declare
from mbrl_ros.nodes.policy_weights import load_policy_bytes, new_policy
from mbrl_ros.tasks import get_task


AUTO_MAX_THREADS = 4  # torch_threads:=0 (auto) uses at most this many threads (and at most the cores)


def torch_thread_budget(threads: int) -> CoreBudget:
    """The thread policy of ``torch_threads``: N > 0 pins N threads; 0 = auto, a
    :class:`~mbrl_ros.core.threads.CoreBudget` of up to ``min(4, cores)`` threads whose ``choose()``
    (called before each model fit and each policy improvement) follows the cores other processes
    leave free. A negative value raises ``ValueError``."""
    threads = int(threads)
    if threads < 0:
        raise ValueError(f"torch_threads must be 0 (auto) or positive, got {threads}")
    if threads == 0:
        return CoreBudget(max_threads=min(AUTO_MAX_THREADS, cpu_count()))
    return CoreBudget(fixed=threads)


def declare_torch_threads(node: Node) -> CoreBudget:
    """Declare ``torch_threads`` (read-only; ROS refuses a value outside [0, 256]) and set torch's
    thread count for the start: N when pinned, 1 in auto mode until the first ``choose()``."""
    threads = declare(node, "torch_threads", 1,
                      "torch intra-op threads of this node: N > 0 = N threads; 0 = auto (up to min(4, cores), "
                      "re-chosen before each model fit / policy improvement from the cores other processes "
                      "leave free)", read_only=True, lo=0, hi=256)
    budget = torch_thread_budget(threads)
    if budget.fixed is not None:
        budget.choose()
    else:
        torch.set_num_threads(1)
    return budget


def declare_game(node: Node) -> tuple[Any, Any]:
    """The parameters every learning node shares; returns ``(task, GameConfig)``.

    Also sets ``node.core_budget`` (:func:`declare_torch_threads`): the learners call its
    ``choose()`` before each fit / improvement; the coordinator (gate rollouts, evaluation) keeps
    the start-up count.
    """
    algo = declare(node, "algo", "pal", "game: pal | mal | gda | br | mal-agent-reward | mal-noise", read_only=True)
    task_id = declare(node, "task", "dclaw-turn-fixed", "task id", read_only=True)
    seed = declare(node, "seed", 0, "seed of torch/numpy in this node", read_only=True, lo=0)
    overrides = declare(node, "game_overrides", [], "game hyper-parameters 'key=value' (config/<algo>.yaml keys)", read_only=True)
    extra = declare(node, "game_set", [], "more 'key=value' overrides, applied after game_overrides (launch set:=)", read_only=True)
    device = declare(node, "device", "cpu", "torch device: cpu | cuda | auto", read_only=True)
    declare(node, "log_dir", "", "run directory", read_only=True)
    node.core_budget = declare_torch_threads(node)
    cfg = load_config(algo, task_id, list(overrides) + list(extra) + [f"seed={seed}", f"device={device}"])
    torch.manual_seed(cfg.seed)
    return get_task(task_id), cfg


class ModelLearner(Node):
    node_name = "model_learner"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.node_name, **kwargs)
        self.task, self.cfg = declare_game(self)
        self.spec = game_spec(self.cfg.algo)
        self.checkpoint_dir = declare(self, "checkpoint_dir", "", "where the model, buffer and ledger are checkpointed ('' = off)", read_only=True)
        self.mcap_path = declare(self, "mcap_path", "", "the run's MCAP record to rebuild the buffer from ('' = none)", read_only=True)
        self.max_model_bytes = declare(self, "max_model_bytes", wire.MAX_MODEL_BYTES, "largest model blob", read_only=True, lo=1024, hi=1 << 31)
        self.missing_wait_s = declare(self, "missing_episode_replay_s", 1.0,
                                      "after this long waiting for a requested episode, look it up in the MCAP", lo=0.05, hi=60.0)
        max_episode_bytes = declare(self, "max_episode_bytes", wire.MAX_EPISODE_BYTES, "largest episode message",
                                    read_only=True, lo=1024, hi=1 << 30)
        self.player = ModelPlayer(self.task, self.cfg)
        capacity = self.cfg.buffer_size if self.spec.buffer == "fifo" else None
        self.intake = EpisodeIntake(self.task, EpisodeBuffer(self.spec.buffer, capacity), max_bytes=max_episode_bytes)
        self.model_version = 0
        self.served: set[str] = set()  # request ids already answered (a restarted node answers again)
        self._last_model_header: Optional[dict] = None
        self._lock = threading.Lock()
        self._busy = False
        self._request: Optional[dict] = None
        self._waiting_since: Optional[float] = None
        self._saved_at_end = False
        self._weights: dict[int, bytes] = {}  # policy version -> safetensors (MAL + agent reward)
        self._fit_policy = None  # the policy the agent-reward objective differentiates through

        self.diag = DiagnosticsPublisher(self)
        self.diag.track_rate("episodes_accepted")
        self.metrics = MetricPublisher(self)
        self._pub_model = self.create_publisher(UInt8MultiArray, MODEL, latched_qos())
        self.create_subscription(UInt8MultiArray, TRANSITIONS, self._on_transitions, transitions_qos())
        self.create_subscription(String, GAME_STATE, self._on_state, latched_qos())
        if self.spec.model_objective is ModelObjective.AGENT_REWARD:
            self._fit_policy = new_policy(self.task, self.cfg, self.player.device)
            self.create_subscription(UInt8MultiArray, POLICY_WEIGHTS, self._on_weights, weights_qos())
        self.get_logger().info(f"model player of {self.cfg.algo}: objective {self.spec.model_objective.value}, "
                               f"{self.spec.buffer} buffer")
        self._restore()
        self.create_timer(0.05, self._tick)

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
                f"resumed from {d}: model v{self.model_version}, {len(self.intake.ids)} episodes in the ledger")
        if self.mcap_path:
            n = self.intake.replay_mcap(Path(self.mcap_path), TRANSITIONS, self._count)
            if n:
                self.get_logger().info(f"replayed {n} episodes from {self.mcap_path}")
        self._update_diag()

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
            "model_version": self.model_version, "served": sorted(self.served), "n_fits": self.player.n_fits,
            "model_header": header, "intake": ledger,
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
        self._update_diag()

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

    def _update_diag(self) -> None:
        self.diag.set("buffer_transitions", len(self.intake.buffer))
        self.diag.set("buffer_episodes", len(self.intake.buffer.episode_ids()))
        self.diag.set("episodes_total", len(self.intake.ids))
        self.diag.set("sequence_gaps", self.intake.gaps)
        self.diag.set("model_version", self.model_version)

    def _on_state(self, msg: String) -> None:
        try:
            state = wire.unpack_game_state(msg.data)
        except wire.WireError as exc:
            self.diag.inc(f"rejected_game_state_{exc.reason}")
            self.diag.warn(f"rejected game state: {exc}")
            return
        if state["done"] and not self._saved_at_end:
            self._saved_at_end = True  # the game is over: keep the final ledger
            self._checkpoint(None, self._last_model_header or {})
        req = state["request"]
        if state["phase"] == "fit_model" and req.get("kind") == "fit_model" and state["task_id"] == self.task.info.task_id:
            with self._lock:
                if req.get("id") not in self.served and (self._request is None or self._request["id"] != req.get("id")):
                    self._request = dict(req, iteration=state["iteration"], data_policy_version=state["data_policy_version"])
                    self._waiting_since = time.monotonic()
        self._tick()  # start at once (the timer is the fallback while waiting for data)

    # -- the model player's move ------------------------------------------------------
    def _tick(self) -> None:
        with self._lock:
            req, busy = self._request, self._busy
        if req is None or busy:
            return
        if int(req.get("model_version", -1)) == self.model_version and self._last_model_header is not None \
                and self._last_model_header.get("request_id") == req["id"]:
            self._republish(req)  # restarted after fitting but before the coordinator saw it
            return
        missing = self.intake.missing(req.get("episode_ids", []))
        if missing:
            if time.monotonic() - (self._waiting_since or 0.0) > float(self.missing_wait_s) and self.mcap_path:
                self.intake.replay_mcap(Path(self.mcap_path), TRANSITIONS, self._count, only=set(missing))
                self._waiting_since = time.monotonic()
            self.diag.status_message(f"waiting for {len(missing)} episode(s) of request {req['id']}")
            return
        if self._fit_policy is not None:
            with self._lock:
                have = _fit_policy_version(req) in self._weights
            if not have:
                self.diag.status_message(f"waiting for the weights of policy v{_fit_policy_version(req)} "
                                         f"(request {req['id']}, agent reward)")
                return
        with self._lock:
            self._busy = True
        threading.Thread(target=self._fit, args=(req,), name="fit", daemon=True).start()

    def _fit(self, req: dict) -> None:
        try:
            # torch_threads:=0: from the cores free right now (a fresh probe: the other nodes'
            # phases since this node's last one are over)
            threads = self.core_budget.choose(fresh=True)
            self.diag.set("torch_threads", threads)
            self.get_logger().info(f"fit: {threads} torch thread(s); other processes used "
                                   f"{self.core_budget.others_cores:.2f} core(s) just before")
            self.diag.status_message(f"fitting (request {req['id']}, {threads} torch threads)")
            buffer = self.intake.buffer_snapshot()  # the fit sees one consistent buffer
            policy, policy_version = None, None
            if self._fit_policy is not None:  # MAL + agent reward: the deployed policy's return in the model
                policy_version = _fit_policy_version(req)
                with self._lock:
                    weights = self._weights[policy_version]
                load_policy_bytes(self._fit_policy, weights)
                policy = self._fit_policy
            result = self.player.fit(buffer, bool(req.get("aggressive", True)), policy=policy)
            model_bytes = self.player.to_bytes()
            n_random = sum(len(e) for e in buffer.episodes if e.policy_version == -1)
            self.model_version = int(req["model_version"])
            header = {
                "request_id": req["id"], "loss": wire.finite_or_none(result.get("loss")),
                "steps": int(result.get("steps", 0)), "fit_s": wire.finite_or_none(result.get("fit_s")),
                "n_transitions": len(buffer), "n_episodes": len(buffer.episode_ids()),
                "episodes_total": len(self.intake.ids), "aggressive": bool(req.get("aggressive", True)),
                "objective": self.spec.model_objective.value, "fit_policy_version": policy_version,
                "random_fraction": round(n_random / max(len(buffer), 1), 6), "published_at": time.time(),
                "torch_threads": threads,
            }
            with self._lock:
                self.served.add(req["id"])
                self._last_model_header = header
            self._publish(model_bytes, req, header)  # first: the game waits for it
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
                f"{header['steps']} steps, {len(buffer)} transitions, {header['fit_s']:.2f} s, {threads} torch threads")
            self.diag.status_message(f"model v{self.model_version} published")
        except Exception as exc:  # noqa: BLE001 - report, keep serving
            self.diag.fault(f"fit failed: {exc}")
            self.get_logger().error(f"fit failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._busy = False
                if self._request is req:
                    self._request = None
            self._update_diag()

    def _publish(self, model_bytes: bytes, req: dict, header: dict) -> None:
        data = wire.pack_model(model_bytes, task_id=self.task.info.task_id, model_version=int(req["model_version"]),
                               iteration=int(req["iteration"]), data_policy_version=int(req["data_policy_version"]),
                               sha256_weights=wire.sha256_hex(model_bytes), **header)
        self._pub_model.publish(wire.to_msg(data))

    def _republish(self, req: dict) -> None:
        d = Path(self.checkpoint_dir)
        with self._lock:
            self.served.add(req["id"])
            self._request = None
        self._publish((d / "model.safetensors").read_bytes(), req, dict(self._last_model_header or {}))


    def shutdown(self) -> None:
        """Clean exit (Ctrl-C, end of the run): checkpoint the buffer and the ledger."""
        try:
            with self._lock:
                busy = self._busy
            if not busy:
                self._checkpoint(None, self._last_model_header or {})
        except Exception as exc:  # noqa: BLE001 - never fail on the way out
            self.get_logger().error(f"final checkpoint failed: {exc}")


def _fit_policy_version(req: dict) -> int:
    """The policy a fit plays against: the request's (the deployed one), else the newest data's."""
    return int(req.get("policy_version", req.get("data_policy_version", 0)))


def main(args: Optional[list[str]] = None) -> None:
    run_node(ModelLearner, args)


if __name__ == "__main__":
    main()
