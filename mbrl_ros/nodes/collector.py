"""collector: runs the deployed ONNX policy in the world and publishes whole episodes.

One collector per robot or sim instance. A fixed-rate control loop (the task's 10 Hz in
real time, or as fast as possible for training in sim) runs in its own thread; the ROS
executor only delivers the game state, the deployed policy and the e-stop.

Safety, in the order a command passes them:
1. only a policy the coordinator approved (``/mbrl/policy/deployed``, ``approved: true``, the
   version named in the game state, SHA-256 and ONNX contract checked here again) is run, and
   a new one is swapped in only between episodes; when the game state asks for random-policy
   data (``behavior: random``, MAL + random noise) each episode plays a fresh random policy of
   the state's ``noise_policy`` (``mbrl_ros.core.exploration``, as ``mbrl-ros train``) and is
   tagged ``behavior: random``, policy version -1;
2. a non-finite or wrongly sized action aborts the episode before it reaches the world;
3. the world maps the action through ``task.action_to_targets`` (clip to [-1, 1], joint range,
   velocity limit): the policy cannot bypass it;
4. the e-stop (topic ``/mbrl/estop`` or the coordinator's service) stops the loop at the next
   step, and the hardware world drops torque (``HardwareEnv.estop``).
An episode stopped by the game (e-stop, stop of collection, a new policy, a late control step,
shutdown) is never published and is played again with the same draws, as ``mbrl-ros train``
never sees it. An episode ended by a world fault (the robot's safety layer tripped: a joint out of
range, too fast, over current, a bus fault; an unstable simulation step) is published with the
steps before the fault as real data, flagged ``aborted`` (the faulted step itself has no real
observation and is left out), and the next episode gets new draws: played again it would fault
again, forever on a deterministic world, and the game would wait for it.

The simulated world can run perturbed physics (``dynamics``: a named world such as
``dclaw-weak``, or ``parameter:value`` items, exactly as ``mbrl-ros train --set dynamics=``;
:func:`apply_world_dynamics`), e.g. to fine-tune a policy on a claw weaker than the one it learnt
on; an unknown name stops the node with one line (exit 2).

Run: ``ros2 run mbrl_ros collector --ros-args -p task:=dclaw-turn-fixed -p robot_id:=sim0``.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String, UInt8MultiArray

from mbrl_ros import security, wire
from mbrl_ros.core.exploration import new_random_policy
from mbrl_ros.core.seeding import start_episode
from mbrl_ros.core.world import BadAction, BehaviorNoise, behavior_policy, run_episode
from mbrl_ros.nodes import (
    ESTOP,
    GAME_STATE,
    POLICY_DEPLOYED,
    POLICY_DEPLOYED_RESEND,
    TRANSITIONS,
    joint_states_topic,
    latched_qos,
    run_node,
    sensor_qos,
    transitions_qos,
)
from mbrl_ros.nodes.diagnostics import DiagnosticsPublisher, MetricPublisher
from mbrl_ros.nodes.parameters import declare, declare_max_episode_bytes
from mbrl_ros.nodes.resend import ResendRequester


@dataclass
class LoadedPolicy:
    version: int
    policy: Any  # mbrl_ros.core.onnx_export.OnnxPolicy
    log_std: Optional[np.ndarray]  # exploration noise of the stochastic policy (None: deterministic)
    sha256: str
    published_at: float  # wall time the policy player published it (hand-off latency)
    received_at: float


class EpisodeAborted(Exception):
    """The running episode cannot finish (stop, e-stop, bad action, fault); it is dropped."""


if TYPE_CHECKING:  # the mixin is always combined with a Node (Collector, HardwareCollector)
    _NodeMixin = Node
else:
    _NodeMixin = object


class CollectorBase(_NodeMixin):
    """The collector's behaviour, shared by the sim :class:`Collector` and the lifecycle
    :class:`~mbrl_ros.nodes.hardware_collector.HardwareCollector` (mixed into a ``Node``).

    The e-stop subscription (and the hardware collector's e-stop services) are in their own
    callback group, spun by a second executor thread: an e-stop is acted on at once, even
    while the default group is busy (loading a new ONNX policy takes tens of milliseconds).
    """

    executor_threads = 2

    def _declare_collector_parameters(self, realtime_default: bool = False) -> None:
        self.task_id = declare(self, "task", "dclaw-turn-fixed", "task id of the world", read_only=True)
        self.robot_id = declare(self, "robot_id", "sim0", "robot id written on every episode", read_only=True)
        self.seed = declare(self, "seed", 0, "seed of the episode resets and exploration noise", read_only=True, lo=0)
        self.realtime = declare(
            self, "realtime", realtime_default, "run at the task's control rate (10 Hz) instead of as fast as possible"
        )
        self.exploration = declare(
            self,
            "exploration",
            True,
            "sample actions from the policy's Gaussian (data collection); false: deterministic",
        )
        self.joint_state_rate = declare(
            self, "joint_state_rate_hz", 20.0, "max rate of JointState messages", lo=0.0, hi=1000.0
        )
        self.resend_after_s = declare(
            self,
            "resend_after_s",
            3.0,
            "ask the coordinator again for the deployed policy the game state names after this long without it",
            read_only=True,
            lo=0.1,
            hi=600.0,
        )
        self.rt_priority = declare(
            self,
            "realtime_priority",
            0,
            "SCHED_FIFO priority of the control loop thread in real time (0 = normal scheduling)",
            read_only=True,
            lo=0,
            hi=99,
        )
        self.max_overrun = declare(
            self,
            "max_period_overrun_s",
            0.05,
            "real-time watchdog: a step this late aborts the episode",
            lo=0.001,
            hi=1.0,
        )
        self.max_episode_bytes = declare_max_episode_bytes(self)
        self.dynamics = declare(
            self,
            "dynamics",
            "",
            "fixed physics of the simulated world, as mbrl-ros train --set dynamics=: a named world of "
            "mbrl_ros.tasks.sim.PERTURBATIONS (e.g. dclaw-weak) or 'parameter:value/...'; '' = the scene as is. "
            "A simulator setting: the hardware collector refuses it",
            read_only=True,
        ).strip()
        self.randomize_dynamics = declare(
            self,
            "randomize_dynamics",
            False,
            "re-draw ROBEL's RandomDynamics parameters at every reset, as mbrl-ros train --set "
            "randomize_dynamics=true (any fixed dynamics applied after each draw). A simulator setting: the "
            "hardware collector refuses it",
            read_only=True,
        )
        declare(
            self, "log_dir", "", "run directory (unused by the collector; kept for a uniform graph)", read_only=True
        )
        self.exit_when_done = declare(
            self,
            "exit_when_done",
            False,
            "leave (exit 0) once the game state says the game is over (role:=collectors)",
            read_only=True,
        )
        self.finished = False  # run_node stops spinning and exits when True
        self._done_timer: Any = None
        self.coordinator_key = declare(
            self,
            "coordinator_key",
            "",
            "the coordinator's public key, 'ed25519:<base64>' or a .pub file: only the "
            "policies and game states it signed are used",
            read_only=True,
        )
        self.key_wait_s = declare(
            self,
            "key_wait_s",
            120.0,
            "how long to wait at start for the coordinator_key file",
            read_only=True,
            lo=0.0,
            hi=3600.0,
        )
        self.estop_latch = (
            security.EstopLatch()
        )  # anyone raises the e-stop; only the coordinator's signed release clears it
        self.stream = f"{os.getpid():x}-{secrets.token_hex(3)}"  # this process's episode stream
        self._lock = threading.Lock()
        self._state: Optional[wire.GameState] = None
        # MAL + random noise: the random networks read observations standardised with this
        # round's policy episodes (as mbrl-ros train does); a round = (iteration, deployed version)
        self._round_key: Optional[tuple[int, int]] = None
        self._round_obs: list[np.ndarray] = []
        self._pending: Optional[LoadedPolicy] = None
        self._policy: Optional[LoadedPolicy] = None
        self._estop = False
        self._active = True  # a lifecycle collector runs only while ACTIVE
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.env: Any = None
        self.sequence = 0
        self._faulted_at_start = 0  # episodes that faulted on their first step: skipped, their draws used
        self._since_state = 0  # samples published since the last game state arrived
        self._episodes_started = 0
        self._last_js = 0.0
        self._last_start = 0.0
        self._jitter: deque = deque(maxlen=1000)  # lateness of the last real-time steps vs their deadline (s)
        self._period_dev: deque = deque(maxlen=1000)  # |period - dt| between consecutive steps (s)

    def _setup_world(self, env: Any) -> None:
        self.env = env
        self.task = env.task
        if self.task.info.task_id != self.task_id:
            raise ValueError(f"world runs task {self.task.info.task_id!r}, parameter task is {self.task_id!r}")
        self._joint_names = _joint_names(env)

    def _setup_comms(self) -> None:
        self.verifier = self._load_verifier()  # before any subscription: nothing unverified is ever used
        self.diag = DiagnosticsPublisher(self, hardware_id=self.robot_id)
        self.diag.track_rate("steps")
        self.metrics = MetricPublisher(self)
        self._pub_episode = self.create_publisher(UInt8MultiArray, TRANSITIONS, transitions_qos())
        self._pub_js = self.create_publisher(JointState, joint_states_topic(self.robot_id), sensor_qos())
        self.create_subscription(String, GAME_STATE, self._on_state, latched_qos())
        self.create_subscription(UInt8MultiArray, POLICY_DEPLOYED, self._on_policy, latched_qos())
        # a policy another publisher's message displaced in this depth-1 reader: asked for again
        self._policy_resend = ResendRequester(self, POLICY_DEPLOYED_RESEND, "policy", self.resend_after_s, self.diag)
        self.estop_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Bool, ESTOP, self._on_estop, latched_qos(), callback_group=self.estop_group)
        # viewers: /robot_description (latched URDF), markers, URDF joint states (nodes/visualization.py)
        from mbrl_ros.nodes.visualization import RobotVisualizer

        self.viz = RobotVisualizer(self, self.task_id, self.robot_id)

    def _load_verifier(self) -> security.Verifier:
        """The coordinator's public key; a key file that is not there yet (the coordinator of this
        run creates it at its start) is waited for up to ``key_wait_s``."""
        spec = str(self.coordinator_key).strip()
        if not spec:
            raise ValueError(
                "no coordinator_key: pass the coordinator's public key ('ed25519:<base64>' or its "
                "keys/coordinator_ed25519.pub); a collector runs only what that key signed"
            )
        if not spec.startswith(security.PUBLIC_PREFIX):
            path, deadline = Path(spec).expanduser(), time.monotonic() + float(self.key_wait_s)
            if not path.is_file():
                self.get_logger().info(f"waiting for the coordinator's public key {path}")
            while not path.is_file():
                if time.monotonic() > deadline:
                    raise ValueError(f"the coordinator's public key {path} did not appear within {self.key_wait_s} s")
                time.sleep(0.1)
        verifier = security.Verifier(spec)
        self.get_logger().info(f"trusting {security.describe(verifier)}")
        return verifier

    def _start_loop(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="control_loop", daemon=True)
        self._thread.start()

    def _stop_loop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None

    # -- subscriptions ------------------------------------------------------------------
    def _on_state(self, msg: String) -> None:
        try:
            body = self.verifier.verify_json(msg.data, "game_state")  # the coordinator's signed states only
            release = body.pop("estop_release", 0)
            if not isinstance(release, int) or isinstance(release, bool) or release < 0:
                raise wire.WireError("header", f"game_state estop_release {release!r} must be an integer >= 0")
            state = wire.unpack_game_state(json.dumps(body))
        except (wire.WireError, security.SignatureError) as exc:
            self._rejected("game_state", exc)
            return
        if state.task_id != self.task_id:
            self._rejected(
                "game_state", wire.WireError("task", f"game is for {state.task_id}, this world runs {self.task_id}")
            )
            return
        with self._lock:
            self._state = state
            self._since_state = 0
            if (state.iteration, state.deployed_policy_version) != self._round_key:
                self._round_key = (state.iteration, state.deployed_policy_version)
                self._round_obs = []
        change = self.estop_latch.signed_state(state.estop, release)
        if change == "raise":
            self._estop_action("the coordinator's game state")
        elif change == "release":
            with self._lock:
                self._estop = False
            self.on_estop_clear()
            self.get_logger().info(f"e-stop released by the coordinator (signed release #{release})")
            self.diag.clear_fault()
        if state.done and self.exit_when_done and self._done_timer is None:
            # a second's grace: the last published episode is acknowledged before the process goes
            self.get_logger().info("the game is over: leaving")
            self._done_timer = self.create_timer(1.0, self._leave)

    def _leave(self) -> None:
        # what this collector published, for the operator (and the multi-host test) to check against the record
        self.get_logger().info(
            f"left the game: {self.sequence} episodes published (stream {self.stream}, "
            f"sequences 0..{self.sequence - 1})"
        )
        self.finished = True

    def _on_policy(self, msg: UInt8MultiArray) -> None:
        received = time.time()
        try:
            data = wire.from_msg(msg)
            self.verifier.verify_record(data, "policy")  # signed by the coordinator, or it never runs
            blob = wire.unpack_policy(
                data, expect_task=self.task_id, check_contract=False, max_bytes=wire.MAX_POLICY_BYTES
            )
            if blob.header.get("approved") is not True:
                raise wire.WireError("contract", f"policy v{blob.policy_version} was not approved by the coordinator")
            if self._holds(blob.policy_version, wire.sha256_hex(blob.onnx)):
                self.diag.inc("policy_repeats")  # sent again for another collector that asked
                return
            policy = wire.load_policy_checked(blob.onnx, self.task_id)
            if int(policy.contract.get("version", blob.policy_version)) != blob.policy_version:
                raise wire.WireError("contract", "header and ONNX contract disagree on the version")
            log_std = blob.header.get("log_std")
            if log_std is not None:
                log_std = np.asarray(log_std, dtype=np.float64)
                if (
                    log_std.shape != (self.task.info.act_dim,)
                    or not np.all(np.isfinite(log_std))
                    or np.any(log_std > 1.0)
                ):
                    raise wire.WireError(
                        "contract", f"policy v{blob.policy_version}: bad log_std {blob.header.get('log_std')}"
                    )
        except (wire.WireError, security.SignatureError) as exc:
            self._rejected("policy", exc)
            return
        loaded = LoadedPolicy(
            blob.policy_version,
            policy,
            log_std,
            wire.sha256_hex(blob.onnx),
            float(blob.header.get("published_at", received)),
            received,
        )
        with self._lock:
            self._pending = loaded
        self.diag.set("policy_received", blob.policy_version)
        self.get_logger().info(f"policy v{blob.policy_version} received (sha256 {loaded.sha256[:12]})")

    def _holds(self, version: int, sha256: str) -> bool:
        """This exact policy is already the current or the pending one."""
        with self._lock:
            return any(
                p is not None and p.version == version and p.sha256 == sha256 for p in (self._policy, self._pending)
            )

    def _on_estop(self, msg: Bool) -> None:
        """``true`` from anyone stops the robot; ``false`` from anyone releases nothing (the topic is
        open to every participant): only the coordinator's signed release clears the e-stop."""
        if msg.data:
            newly = self.estop_latch.raise_estop()
            if newly or not self._estop:
                self._estop_action("/mbrl/estop")
        elif self.estop_latch.held:
            self.diag.inc("rejected_estop_release_unsigned")
            self.diag.warn("ignored 'false' on /mbrl/estop: only the coordinator's signed release clears the e-stop")
            self.get_logger().warning(
                "ignored 'false' on /mbrl/estop: only the coordinator's signed release clears the e-stop"
            )

    def _estop_action(self, why: str) -> None:
        with self._lock:
            self._estop = True
        self.on_estop()  # first: the log line and the diagnostic can wait, the motors cannot
        self.get_logger().warning(f"E-STOP: collection stopped ({why})")
        self.diag.fault("e-stop active")

    def on_estop(self) -> None:
        """Stop the world now (the hardware world drops torque; the sim simply stops stepping)."""
        stop = getattr(self.env, "estop", None)
        if callable(stop):
            stop()

    def on_estop_clear(self) -> None:
        """The graph's e-stop was released (an operator's decision): let the world start again."""
        clear = getattr(self.env, "clear_estop", None)
        if callable(clear):
            try:
                clear()
            except Exception as exc:  # noqa: BLE001 - e.g. a hardware world that is not connected
                self.get_logger().error(f"clearing the world's e-stop failed: {exc}")

    def _rejected(self, what: str, exc: Union[wire.WireError, security.SignatureError]) -> None:
        self.diag.inc(f"rejected_{what}_{exc.reason}")
        self.diag.warn(f"rejected {what}: {exc}")
        self.get_logger().warning(f"rejected {what} message: {exc}")

    # -- the control loop ---------------------------------------------------------------
    def _may_run(self, version: Optional[int], behavior: str = "policy") -> bool:
        """Collection is on, no e-stop, the game asks for ``behavior`` data, and (policy data)
        ``version`` is the deployed one."""
        with self._lock:
            s = self._state
            if not self._active or self._estop or s is None or s.done or s.estop or not s.collect:
                return False
            if s.behavior != behavior:
                return False
            return behavior == "random" or version is None or version == s.deployed_policy_version

    def _wanted_behavior(self) -> str:
        with self._lock:
            return self._state.behavior if self._state is not None else "policy"

    def _round_may_be_complete(self) -> bool:
        """What this collector published since the last game state may complete the round: wait
        for the coordinator's count instead of starting an episode it would drop (on a robot, a
        whole scripted reset for nothing). The coordinator publishes its count per episode."""
        with self._lock:
            s = self._state
            if s is None or self._since_state == 0:
                return False
            if s.behavior == "random":
                done, target = s.round_random_samples, s.round_random_target
            else:
                done, target = s.round_samples, s.round_target
            return target > 0 and done + self._since_state >= target

    def _next_policy(self) -> Optional[LoadedPolicy]:
        """Between episodes: swap in the approved policy the game state names."""
        with self._lock:
            s = self._state
            if s is None:
                return None
            want = s.deployed_policy_version
            if self._pending is not None and self._pending.version == want:
                self._policy, self._pending = self._pending, None
            have = self._policy is not None and self._policy.version == want
            asks = s.collect and not s.done and not s.estop and s.behavior == "policy" and want >= 0
        if have:
            self._policy_resend.arrived()
            return self._policy
        if asks:  # the game runs a policy this collector never received
            self._policy_resend.missing(want)
        return None

    def _loop(self) -> None:
        if self.realtime:
            # a waiting thread gets the GIL after at most this long (default 5 ms: the loop's jitter)
            sys.setswitchinterval(0.0005)
            if int(self.rt_priority) > 0:
                try:
                    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(self.rt_priority)))
                except (OSError, AttributeError) as exc:
                    self.get_logger().warning(f"SCHED_FIFO {self.rt_priority} not permitted ({exc}); normal scheduling")
        while not self._stop.is_set():
            if self._round_may_be_complete():
                time.sleep(0.005)
                continue
            if self._wanted_behavior() == "random":
                policy = None  # uniform random actions (MAL + random noise data)
                if not self._may_run(None, "random"):
                    time.sleep(0.005)
                    continue
            else:
                policy = self._next_policy()
                if policy is None or not self._may_run(policy.version):
                    time.sleep(0.005)
                    continue
                if self._episodes_started == 0 or policy.received_at > self._last_start:
                    latency = time.time() - policy.published_at
                    self.metrics.publish("policy_handoff_ms", 1000.0 * latency)
                    self.diag.set("policy_handoff_ms", round(1000.0 * latency, 2))
            self._last_start = time.time()
            self._episodes_started += 1
            try:
                rec = self._run_episode(policy)
            except EpisodeAborted as exc:
                self.diag.inc("episodes_dropped")
                self.get_logger().info(f"episode dropped: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - a world fault must not kill the node
                self.diag.inc("episodes_dropped")
                self.diag.warn(f"episode failed: {exc}")
                self.get_logger().error(f"episode failed: {type(exc).__name__}: {exc}")
                time.sleep(0.1)
                continue
            self._publish(rec)
            if rec.behavior == "policy":
                with self._lock:
                    self._round_obs.append(rec.obs)

    def _run_episode(self, lp: Optional[LoadedPolicy]) -> wire.EpisodeRecord:
        """One whole episode of ``lp`` (``None``: a fresh random policy of the game's ``noise_policy``,
        :mod:`mbrl_ros.core.exploration`) through the core's
        episode runner (:func:`mbrl_ros.core.world.run_episode`, as ``mbrl-ros train``), with
        real-time pacing and the stop checks before every step; raises :class:`EpisodeAborted`
        when it cannot finish."""
        env, task = self.env, self.task
        behavior, version = ("policy", lp.version) if lp is not None else ("random", -1)
        # this collector's episode number `sequence` fixes its reset and noise (as mbrl-ros train's):
        # an episode started and dropped is played again with the same draws
        seed, rng = start_episode(self.seed, self.sequence + self._faulted_at_start)
        if lp is None:  # a fresh random policy per episode
            with self._lock:
                kind = self._state.noise_policy if self._state is not None else "uniform"
                data = np.concatenate(self._round_obs) if self._round_obs else None
            behave = new_random_policy(kind, task.info.obs_dim, task.info.act_dim, rng, data)
        else:
            log_std = None if self._deterministic() else lp.log_std
            with self._lock:
                noise = self._behavior_noise()
            behave = behavior_policy(lp.policy.act, task.info.act_dim, log_std, rng, noise, task.info.horizon)
        clipped = 0
        period = task.info.dt
        realtime = bool(self.realtime)
        t_next = time.perf_counter()
        jitter: list[float] = []

        def act(obs: np.ndarray) -> np.ndarray:
            nonlocal clipped
            a = behave(obs)
            clipped += int(np.any(np.abs(a) > 1.0))  # the runner clips it: count it
            return a

        def before_step(_t: int) -> None:
            nonlocal t_next
            if realtime:
                t_next += period
                lateness = _sleep_until(t_next)
                if jitter:
                    self._period_dev.append(abs(lateness - jitter[-1]))
                jitter.append(lateness)
                self._jitter.append(lateness)
                if lateness > self.max_overrun:
                    raise EpisodeAborted(f"control step {1000 * lateness:.1f} ms late (watchdog)")
            if not self._may_run(version, behavior):
                raise EpisodeAborted("collection stopped, e-stop, new policy or behavior")

        fault = ""

        def after_step(_obs: np.ndarray, info: dict) -> None:
            nonlocal fault
            if info.get("aborted"):  # the runner ends the episode here; the steps before are real data
                fault = str(info.get("abort_reason") or info.get("sim_warning") or info.get("fault") or "aborted")
                return
            self.diag.inc("steps")
            self._publish_joint_state()

        try:
            ep = run_episode(env, act, seed, "", version, self.robot_id, before_step, after_step)
        except BadAction as exc:
            self.diag.inc("limit_hits_nonfinite_action")
            raise EpisodeAborted(f"policy v{version} produced a {exc}") from None
        extra: dict[str, Any] = {"purpose": "train", "clipped_steps": clipped, "seed": seed}
        if ep.aborted:
            # A world fault (a safety abort on the robot, an unstable simulation step) is a
            # consequence of the policy and the world, not of the game: played again with the same
            # draws it would fault again (forever on a deterministic world). Its steps before the
            # fault are published as an aborted episode; one that faulted on its first step has no
            # data and is skipped with its draws, as `mbrl-ros train` skips it.
            self.diag.inc("episodes_faulted")
            message = f"episode ended by a world fault after {len(ep)} steps: {fault}"
            self.diag.warn(message)
            self.get_logger().warning(message)
            if len(ep) == 0:
                self._faulted_at_start += 1
                raise EpisodeAborted(f"world fault on the first step: {fault}")
            extra["fault"] = fault[:200]
        if jitter:
            p99 = float(np.percentile(np.abs(jitter), 99))
            extra["jitter_p99_ms"] = round(1000 * p99, 3)
            window = np.abs(np.asarray(self._jitter))
            self.diag.set("loop_jitter_p99_ms", round(1000 * float(np.percentile(window, 99)), 3))
            self.diag.set("loop_jitter_max_ms", round(1000 * float(window.max()), 3))
            self.diag.set("loop_jitter_steps", len(window))
            if self._period_dev:
                dev = np.asarray(self._period_dev)
                self.diag.set("loop_period_dev_p99_ms", round(1000 * float(np.percentile(dev, 99)), 3))
            self.metrics.publish("loop_jitter_p99_ms", 1000 * p99)
        if clipped:
            self.diag.inc("limit_hits_clipped_steps", clipped)
        return wire.EpisodeRecord(
            robot_id=self.robot_id,
            episode_id=f"{self.robot_id}-{self.stream}-{self.sequence:06d}",
            sequence=self.sequence,
            policy_version=version,
            task_id=self.task_id,
            obs=ep.obs,
            actions=ep.actions,
            rewards=ep.rewards,
            terminated=bool(ep.terminated),
            aborted=bool(ep.aborted),
            success=bool(ep.success),
            stream=self.stream,
            stamp=time.time(),
            extra=extra,
            behavior=behavior,
            aux=ep.aux if task.aux_dim else None,
        )

    def _deterministic(self) -> bool:
        return not bool(self.exploration)

    def _behavior_noise(self) -> BehaviorNoise:
        """The game's behaviour noise (from the coordinator's state; white before the first state)."""
        s = self._state
        if s is None:
            return BehaviorNoise()
        return BehaviorNoise(
            color=s.explore_noise_color, min_std=s.explore_min_std, mean_fraction=s.explore_mean_fraction
        )

    def _publish(self, rec: wire.EpisodeRecord) -> None:
        data = wire.pack_episode(rec)
        if len(data) > self.max_episode_bytes:
            self.diag.inc("episodes_dropped")
            self.get_logger().error(f"episode of {len(data)} bytes exceeds max_episode_bytes; dropped")
            return
        if not self._may_run(rec.policy_version, rec.behavior) and self._stop.is_set():
            return
        self._pub_episode.publish(wire.to_msg(data))
        with self._lock:
            self._since_state += rec.length
        self.sequence += 1
        self.diag.inc("episodes_published")
        self.diag.set("policy_version", rec.policy_version)
        self.diag.set("last_return", round(rec.episode_return, 3))
        self.metrics.publish(f"{self.robot_id}/episode_return", rec.episode_return)

    def _publish_joint_state(self) -> None:
        rate = float(self.joint_state_rate)
        now = time.monotonic()
        if rate <= 0 or now - self._last_js < 1.0 / rate:
            return
        self._last_js = now
        js = _joint_readings(self.env, self._joint_names)
        if js is None:
            return
        msg = JointState()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.name = list(js["name"])
        msg.position = [float(x) for x in js["position"]]
        msg.velocity = [float(x) for x in js["velocity"]]
        msg.effort = [float(x) for x in js.get("effort", ())]
        self._pub_js.publish(msg)
        self.viz.update(self.env, js)  # markers and URDF joint states at the joint-state rate

    # -- shutdown -----------------------------------------------------------------------
    def shutdown(self) -> None:
        self._stop_loop(timeout=2.0)
        close = getattr(self.env, "close", None)
        if callable(close):
            close()


class Collector(CollectorBase, Node):
    """The sim collector node (see module doc). ``env_factory(task_id)`` builds the world."""

    node_name = "collector"

    def __init__(self, env_factory: Optional[Callable[[str], Any]] = None, **kwargs: Any) -> None:
        Node.__init__(self, self.node_name, **kwargs)
        self._declare_collector_parameters()
        if env_factory is not None:
            env = env_factory(self.task_id)
        else:
            env = _make_sim_env(self.task_id, self.randomize_dynamics)
        self.physics = apply_world_dynamics(env, self.dynamics) if self.dynamics else {}
        self._setup_world(env)
        self._setup_comms()
        if self.dynamics:
            self.diag.set("dynamics", self.dynamics)
            self.get_logger().info(
                f"{self.robot_id}: world dynamics {self.dynamics}: "
                + ", ".join(f"{k} {v:g}" for k, v in self.physics.items())
            )
        if self.randomize_dynamics:
            self.diag.set("randomize_dynamics", "true")
            self.get_logger().info(f"{self.robot_id}: world dynamics re-drawn at every reset (ROBEL's ranges)")
        self._start_loop()
        self.get_logger().info(
            f"{self.robot_id}: collecting {self.task_id} (stream {self.stream}, realtime={self.realtime})"
        )


def _sleep_until(t: float) -> float:
    """Sleep to the absolute ``perf_counter`` time ``t``; returns how late we woke (s).

    ``time.sleep`` alone oversleeps by up to a scheduler tick, so the last 2 ms are spun.
    """
    while True:
        remaining = t - time.perf_counter()
        if remaining <= 0:
            return -remaining
        if remaining > 0.002:
            time.sleep(remaining - 0.002)
        else:
            time.sleep(0)


def _make_sim_env(task_id: str, randomize_dynamics: bool = False) -> Any:
    if randomize_dynamics:  # the world mbrl-ros train --set randomize_dynamics=true plays
        from mbrl_ros.core.train import make_world

        return make_world(task_id, randomize_dynamics=True)
    from mbrl_ros.tasks import make_env

    return make_env(task_id)


def apply_world_dynamics(env: Any, text: str) -> dict[str, float]:
    """Fix the simulated world's physics to ``text`` (:func:`mbrl_ros.tasks.sim.parse_dynamics`: a
    named world or ``parameter:value`` items), as ``mbrl-ros train --set dynamics=`` does; returns
    what was applied. ``ValueError`` (one line) for an unknown name or a world without physics."""
    world = getattr(env, "unwrapped", env)
    task_id = getattr(getattr(getattr(world, "task", None), "info", None), "task_id", "?")
    if not callable(getattr(world, "set_physics", None)):
        raise ValueError(f"dynamics:={text} refused: the world of {task_id} has no physics parameters to set")
    from mbrl_ros.tasks.sim import apply_dynamics

    try:
        return apply_dynamics(world, text)
    except ValueError as exc:
        raise ValueError(f"dynamics:={text} refused: {exc}") from None


def _joint_readings(env: Any, names: list[str]) -> Optional[dict]:
    """``{name, position, velocity[, effort]}`` of the world's joints (``None``: no reading yet).

    The sim reads its MuJoCo state; a hardware world (``HardwareEnv.joint_state``) returns its
    last bus reading, valve included, with the present current as effort (mA)."""
    sim = getattr(getattr(env, "unwrapped", env), "sim", None)
    if sim is not None and hasattr(sim, "actuated_qpos"):
        return {"name": names, "position": sim.actuated_qpos(), "velocity": sim.actuated_qvel()}
    reader = getattr(env, "joint_state", None)
    return reader() if callable(reader) else None


def _joint_names(env: Any) -> list[str]:
    """MuJoCo names of the actuated joints (fallback: ``joint_<i>``)."""
    sim = getattr(getattr(env, "unwrapped", env), "sim", None)
    n = env.task.info.act_dim
    try:
        import mujoco

        model, sl = sim.model, sim.actuated  # type: ignore[union-attr]  # no sim: the except below
        names: list[str] = []
        for qadr in range(sl.start, sl.stop):
            j = int(np.nonzero(model.jnt_qposadr == qadr)[0][0])
            names.append(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint_{qadr}")
        return names
    except Exception:  # noqa: BLE001 - hardware worlds name joints themselves
        given = getattr(env, "joint_names", None)
        return list(given) if given else [f"joint_{i}" for i in range(n)]


def main(args: Optional[list[str]] = None) -> None:
    run_node(Collector, args)


if __name__ == "__main__":
    main()
