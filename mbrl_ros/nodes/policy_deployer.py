"""policy_deployer: run a given policy on the robot (or the sim) for N episodes; no learning.

The coordinator's side of a deploy graph (``mbrl-ros launch deploy_dclaw policy:=FILE.onnx``):

1. before anything is published, the ONNX file's contract is checked against the task (task id,
   observation and action sizes: a D'Kitty policy never reaches a D'Claw) and the policy passes
   the core :class:`~mbrl_ros.core.gate.PolicyGate` with no model (exploration log std, finite
   actions inside [-1, 1] on probe observations: the policy's own simulated episodes plus a
   noisy copy). A refusal is one log line and exit status 2; nothing moved;
2. the approved policy goes out on ``/mbrl/policy/deployed`` (``approved: true``) and a valid
   :class:`mbrl_ros.wire.GameState` on ``/mbrl/game_state`` (``collect: true``, the deployed
   version, ``behavior: policy``, phase ``collect``); collectors run it as in a game;
3. it owns the e-stop as the game coordinator does (``/mbrl/estop`` service and topic, released
   by ``/mbrl/estop_clear``): collection pauses while it holds;
4. it counts whole episodes of the deployed version from ``/mbrl/transitions``, logs success and
   return of each (and appends them to ``<log_dir>/episodes.jsonl``, which ``mbrl-ros launch``
   prints), records transitions, game states and (``record_visuals``) the robot for Foxglove to
   MCAP, and after ``episodes`` episodes
   (0 = until stopped) publishes ``done``, writes ``summary.json`` and exits 0.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from mbrl_ros import security, wire
from mbrl_ros.core.gate import GateSettings, PolicyGate, probe_rows
from mbrl_ros.nodes import (
    GAME_STATE,
    POLICY_DEPLOYED,
    POLICY_DEPLOYED_RESEND,
    TRANSITIONS,
    latched_qos,
    run_node,
    transitions_qos,
)
from mbrl_ros.nodes.diagnostics import DiagnosticsPublisher, MetricPublisher
from mbrl_ros.nodes.episode_intake import EpisodeIntake
from mbrl_ros.nodes.estop import EstopAuthority
from mbrl_ros.nodes.parameters import declare, declare_record_visuals
from mbrl_ros.nodes.resend import ResendServer

PROBE_EPISODES = 4  # simulated episodes of the policy whose observations the gate probes


def check_policy(onnx: bytes, task: Any, settings: GateSettings, probes: np.ndarray) -> tuple[Any, Optional[str]]:
    """The ONNX policy loaded with its contract checked for ``task``, and the gate's refusal
    (``None``: approved). Raises ``ValueError`` (one line) when the contract does not match."""
    try:
        policy = wire.load_policy_checked(onnx, task.info.task_id)
    except wire.WireError as exc:
        raise ValueError(f"policy refused: {exc}") from None
    c = policy.contract
    gate = PolicyGate(task, settings)
    result = gate.check(policy.act, int(c["obs_dim"]), int(c["act_dim"]), c.get("log_std"), probes)
    return policy, (None if result.ok else result.reason)


def simulated_probes(task_id: str, act: Any, episodes: int = PROBE_EPISODES, seed: int = 0) -> Optional[np.ndarray]:
    """Observations of ``episodes`` simulated episodes of ``act`` (on-distribution probe states);
    ``None`` when the simulation cannot be built (e.g. MuJoCo missing on a robot's computer)."""
    try:
        from mbrl_ros.core.world import run_episode
        from mbrl_ros.tasks import make_env

        env = make_env(task_id)
    except Exception:  # noqa: BLE001 - the gate then probes Gaussian rows
        return None
    rows = []
    try:
        for i in range(episodes):
            ep = run_episode(env, act, seed + i, "", 0, "probe")
            rows.append(ep.obs if ep.aux is None else np.concatenate([ep.obs, ep.aux], axis=1))
    finally:
        env.close()
    return np.concatenate(rows) if rows else None


class PolicyDeployer(EstopAuthority, Node):
    node_name = "policy_deployer"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(self.node_name, **kwargs)
        from mbrl_ros.tasks import get_task

        self.task_id = declare(self, "task", "dclaw-turn-fixed", "task id of the world", read_only=True)
        self.policy_path = declare(self, "policy", "", "ONNX policy to deploy", read_only=True)
        self.episodes = declare(
            self, "episodes", 10, "episodes to run, then exit (0 = until stopped)", read_only=True, lo=0, hi=10**6
        )
        self.log_dir = Path(declare(self, "log_dir", "", "run directory", read_only=True) or "runs/deploy")
        self.mcap_path = declare(
            self, "mcap_path", "", "MCAP record ('' = log_dir/record/transitions.mcap)", read_only=True
        )
        self.record = declare(self, "record", True, "record transitions and game states to MCAP", read_only=True)
        self.record_visuals = declare_record_visuals(self)
        self.use_sim = declare(self, "use_sim", True, "the collector is a simulation (false: a robot)", read_only=True)
        self.seed = declare(self, "seed", 0, "seed of the probe episodes", read_only=True, lo=0)
        probe_size = declare(self, "gate_probe_size", 256, "probe observations of the gate", lo=8, hi=100000)
        max_log_std = declare(
            self, "gate_max_log_std", 1.0, "largest exploration log std a policy may carry", lo=-10.0, hi=5.0
        )
        self.task = get_task(self.task_id)
        if not self.policy_path:
            raise ValueError("parameter policy is required: the ONNX policy to deploy")
        try:
            onnx = Path(self.policy_path).read_bytes()
        except OSError as exc:
            raise ValueError(f"policy {self.policy_path}: {exc.strerror}") from None

        # 1. contract and gate, before anything is published (a ValueError here: exit 2)
        settings = GateSettings(probe_size=int(probe_size), model_horizon=0, max_log_std=float(max_log_std))
        try:
            preview = wire.load_policy_checked(onnx, self.task_id)
        except wire.WireError as exc:
            raise ValueError(f"policy {self.policy_path} refused: {exc}") from None
        sim_obs = simulated_probes(self.task_id, preview.act, seed=int(self.seed))
        probes = probe_rows(self.task, sim_obs, settings.probe_size, np.random.default_rng(int(self.seed)))
        self.policy, refusal = check_policy(onnx, self.task, settings, probes)
        if refusal is not None:
            raise ValueError(f"policy {self.policy_path} refused by the gate: {refusal}")
        self.onnx = onnx
        self.version = int(self.policy.contract.get("version", 0))
        self.sha256 = wire.sha256_hex(onnx)
        # the collectors run only what the run's key signed (mbrl_ros.security): this node signs as the coordinator does
        self.signer = security.Signer.load_or_create(self.log_dir)

        self._lock = threading.RLock()
        self._done = False
        self.finished = False
        self.exit_code = 0
        self._finish_at: Optional[float] = None
        self.intake = EpisodeIntake(self.task)
        self.results: list[dict] = []
        self.t0 = time.monotonic()
        self.recorder = None
        if self.record:
            from mbrl_ros.nodes.recording import McapRecorder

            self.recorder = McapRecorder(self.mcap_path or self.log_dir / "record" / "transitions.mcap")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._episodes_file = self.log_dir / "episodes.jsonl"
        self._episodes_file.write_text("")
        self.diag = DiagnosticsPublisher(self)
        self.visual_recorder = None  # the robot's view into the record (replayed by Foxglove's layout)
        if self.recorder is not None and self.record_visuals:
            from mbrl_ros.nodes.recording import TopicRecorder

            self.visual_recorder = TopicRecorder(self, self.recorder)
        self.metrics = MetricPublisher(self, recorder=self._record)
        self._pub_state = self.create_publisher(String, GAME_STATE, latched_qos())
        self._pub_deployed = self.create_publisher(UInt8MultiArray, POLICY_DEPLOYED, latched_qos())
        self.init_estop()  # /mbrl/estop and its release (mbrl_ros.nodes.estop)
        self.create_subscription(UInt8MultiArray, TRANSITIONS, self._on_transitions, transitions_qos())

        # 2. the approved policy, then the state that lets the collectors run it
        data = wire.pack_policy(
            onnx,
            task_id=self.task_id,
            policy_version=self.version,
            model_version=0,
            iteration=0,
            approved=True,
            published_at=time.time(),
            source=str(self.policy_path),
        )
        deployed = wire.to_msg(self.signer.sign_record(data))
        self._pub_deployed.publish(deployed)
        # a collector that lost it (a depth-1 latched reader) asks again (mbrl_ros.nodes.resend)
        self._resend = ResendServer(self, POLICY_DEPLOYED_RESEND, "policy", self._pub_deployed.publish, self.diag)
        self._resend.offer(self.version, deployed)
        self._publish_state()
        self.create_timer(1.0, self._publish_state)
        self.create_timer(0.05, self._tick)
        self.get_logger().info(
            f"deploying {self.policy_path} (v{self.version}, sha256 {self.sha256[:12]}) on {self.task_id}: "
            f"{self.episodes or 'unlimited'} episodes, {'simulation' if self.use_sim else 'robot'}"
        )

    # -- state ---------------------------------------------------------------------------
    def state(self) -> wire.GameState:
        """A valid game state: one round of policy data of the deployed version, no requests."""
        with self._lock:
            n, h = len(self.results), self.task.info.horizon
            return wire.GameState(
                algo="deploy",
                task_id=self.task_id,
                iteration=0,
                phase="done" if self._done else "collect",
                model_version=0,
                policy_version=self.version,
                deployed_policy_version=self.version,
                candidate_policy_version=None,
                data_policy_version=-1,
                samples=n * h,
                sample_budget=int(self.episodes) * h,
                round_samples=n * h,
                round_target=0,
                round_random_samples=0,
                round_random_target=0,
                behavior="policy",
                collect=not (self._estop or self._done),
                estop=self._estop,
                done=self._done,
                request=None,
                eval_success=float(np.mean([r["success"] for r in self.results])) if self.results else None,
                success_curve=(),
                wall_s=round(time.monotonic() - self.t0, 3),
            )

    def _publish_state(self) -> None:
        msg = String()
        # signed with the e-stop release count, as the game coordinator's: collectors follow nothing else
        msg.data = security.sign_game_state(self.signer, self.state().to_json(), self._estop_release)
        self._pub_state.publish(msg)
        self._record(GAME_STATE, msg)
        s = self.state().to_body()
        try:
            tmp = self.log_dir / "game_state.json.tmp"
            tmp.write_text(json.dumps(s))
            tmp.replace(self.log_dir / "game_state.json")
        except OSError:
            pass
        self.diag.set("episodes", len(self.results))
        self.diag.status_message(f"{len(self.results)}/{self.episodes or 'inf'} episodes of v{self.version}")

    def _record(self, topic: str, msg: Any) -> None:
        if self.recorder is not None:
            self.recorder.write(topic, msg)

    # -- episodes ------------------------------------------------------------------------
    def _on_transitions(self, msg: UInt8MultiArray) -> None:
        r = self.intake.ingest(wire.from_msg(msg))
        if r.duplicate:
            return
        if not r.accepted or r.episode is None:
            self.diag.inc(f"rejected_{r.reason}")
            self.get_logger().warning(f"episode refused: {r.message}")
            return
        rec = r.episode
        with self._lock:
            if self._done or rec.behavior != "policy" or rec.policy_version != self.version:
                return
            self._record(TRANSITIONS, msg)
            n = len(self.results) + 1
            row: dict[str, Any] = {
                "episode": n,
                "robot_id": rec.robot_id,
                "episode_id": rec.episode_id,
                "success": bool(rec.success),
                "return": round(float(rec.episode_return), 4),
                "steps": int(rec.length),
                "aborted": bool(rec.aborted),  # ended by the robot's safety layer (never a success)
                "wall_s": round(time.monotonic() - self.t0, 3),
            }
            self.results.append(row)
            if self.episodes and n >= self.episodes:
                self._done = True
        with self._episodes_file.open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.metrics.publish("episode_return", row["return"])
        self.metrics.publish("episode_success", float(row["success"]))
        self.get_logger().info(
            f"episode {n}{'/' + str(self.episodes) if self.episodes else ''}: "
            f"success {'yes' if row['success'] else 'no'}, return {row['return']:.1f}"
            + (f", aborted after {rec.length} steps: {rec.extra.get('fault', '')}" if rec.aborted else "")
        )
        self._publish_state()

    def _tick(self) -> None:
        with self._lock:
            done = self._done
        if not done:
            return
        if self._finish_at is None:
            self._finish_at = time.monotonic() + 0.5  # the final (latched) state reaches the collector first
            self._write_summary()
            self._publish_state()
        elif time.monotonic() >= self._finish_at:
            self.finished = True

    def summary(self) -> dict:
        with self._lock:
            rows = list(self.results)
        return {
            "kind": "deploy",
            "task": self.task_id,
            "policy": str(self.policy_path),
            "policy_version": self.version,
            "sha256": self.sha256,
            "use_sim": bool(self.use_sim),
            "episodes": len(rows),
            "episodes_requested": int(self.episodes),
            "success": float(np.mean([r["success"] for r in rows])) if rows else None,
            "mean_return": float(np.mean([r["return"] for r in rows])) if rows else None,
            "returns": [r["return"] for r in rows],
            "successes": [r["success"] for r in rows],
            "wall_s": round(time.monotonic() - self.t0, 3),
            "mcap": str(self.recorder.path) if self.recorder is not None else None,
            "episodes_file": str(self._episodes_file),
        }

    def _write_summary(self) -> None:
        s = self.summary()
        (self.log_dir / "summary.json").write_text(json.dumps(s, indent=2, sort_keys=True))
        self.get_logger().info(
            f"deployment over: {s['episodes']} episodes, success {s['success']}, mean return {s['mean_return']}"
        )

    def shutdown(self) -> None:
        if not (self.log_dir / "summary.json").is_file() and hasattr(self, "results"):
            self._write_summary()  # stopped (Ctrl-C, episodes 0): the summary of what ran
        if self.recorder is not None:
            self.recorder.close()


def main(args: Optional[list[str]] = None) -> None:
    run_node(PolicyDeployer, args)


if __name__ == "__main__":
    main()
