"""What the two learner nodes share: the game's parameters, the buffer and the request/answer cycle.

The model learner and the policy improver are the two players. Each keeps the game's buffer
from ``/mbrl/transitions`` (:class:`~mbrl_ros.nodes.episode_intake.EpisodeIntake`), follows the
game state on ``/mbrl/game_state`` and answers the coordinator's requests of its kind
(:class:`~mbrl_ros.wire.FitModelRequest` or :class:`~mbrl_ros.wire.ImprovePolicyRequest`):
it waits until every episode the request names is in its buffer (looking a missing one up in
the run's MCAP record after ``missing_episode_replay_s``), then makes its move in a worker
thread and publishes the answer. A request is answered once (``served``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from rclpy.node import Node
from std_msgs.msg import String, UInt8MultiArray

from mbrl_ros import wire
from mbrl_ros.core.buffers import EpisodeBuffer
from mbrl_ros.core.config import load_config
from mbrl_ros.core.schedule import game_spec
from mbrl_ros.core.threads import CoreBudget, cpu_count, lower_priority
from mbrl_ros.nodes import GAME_STATE, TRANSITIONS, latched_qos, transitions_qos
from mbrl_ros.nodes.diagnostics import DiagnosticsPublisher, MetricPublisher
from mbrl_ros.nodes.episode_intake import EpisodeIntake, IntakeResult
from mbrl_ros.nodes.parameters import declare, declare_max_episode_bytes
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
    threads = declare(
        node,
        "torch_threads",
        1,
        "torch intra-op threads of this node: N > 0 = N threads; 0 = auto (up to min(4, cores), "
        "re-chosen before each model fit / policy improvement from the cores other processes "
        "leave free)",
        read_only=True,
        lo=0,
        hi=256,
    )
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
    seed = declare(
        node, "seed", 0, "seed of the game (each player draws from its own stream of it)", read_only=True, lo=0
    )
    overrides = declare(
        node, "game_overrides", [], "game hyper-parameters 'key=value' (config/<algo>.yaml keys)", read_only=True
    )
    extra = declare(
        node, "game_set", [], "more 'key=value' overrides, applied after game_overrides (launch set:=)", read_only=True
    )
    device = declare(node, "device", "cpu", "torch device: cpu | cuda | auto", read_only=True)
    declare(node, "log_dir", "", "run directory", read_only=True)
    setattr(node, "core_budget", declare_torch_threads(node))  # noqa: B010 - a Node attribute the learners read
    cfg = load_config(algo, task_id, list(overrides) + list(extra) + [f"seed={seed}", f"device={device}"])
    torch.manual_seed(cfg.seed)  # the players draw from their own streams (mbrl_ros.core.seeding)
    return get_task(task_id), cfg


AnyRequest = Union[wire.FitModelRequest, wire.ImprovePolicyRequest]


@dataclass(frozen=True)
class Job:
    """A request picked up from the game state, with the state's iteration and data version."""

    request: Any  # AnyRequest
    iteration: int
    data_policy_version: int


class LearnerNode(Node):
    """Base of the model learner and the policy improver (see module doc).

    Subclasses set ``request_type`` and ``phase``, implement :meth:`work`, and may refine
    :meth:`ready` (e.g. wait for a model version) and :meth:`on_game_state`.
    """

    request_type: type = wire.FitModelRequest
    phase: str = "fit_model"
    core_budget: CoreBudget  # set by declare_game

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.task, self.cfg = declare_game(self)
        self.spec = game_spec(self.cfg.algo)
        # learning is batch work: the control path (collector, coordinator, e-stop) comes first
        self.niceness = lower_priority(
            declare(
                self,
                "niceness",
                10,
                "CPU nice value of this node's threads (0 = unchanged): at 10 the scheduler runs the "
                "collector and the coordinator (e-stop) first when they share cores with learning",
                read_only=True,
                lo=0,
                hi=19,
            )
        )
        self.mcap_path = declare(
            self,
            "mcap_path",
            "",
            "the run's MCAP record (missing episodes are looked up there; "
            "a restarted model learner rebuilds its buffer from it)",
            read_only=True,
        )
        self.missing_wait_s = declare(
            self,
            "missing_episode_replay_s",
            1.0,
            "after this long waiting for a requested episode, look it up in the MCAP",
            lo=0.05,
            hi=60.0,
        )
        max_episode_bytes = declare_max_episode_bytes(self)
        capacity = self.cfg.buffer_size if self.spec.buffer == "fifo" else None
        self.intake = EpisodeIntake(self.task, EpisodeBuffer(self.spec.buffer, capacity), max_bytes=max_episode_bytes)
        self.served: set[str] = set()  # request ids already answered
        self._warned_missing: set[str] = set()  # requests whose missing episodes were reported
        self._lock = threading.Lock()
        self._busy = False
        self._job: Optional[Job] = None
        self._waiting_since = 0.0
        self.diag = DiagnosticsPublisher(self)
        self.diag.set("niceness", self.niceness)
        self.diag.track_rate("episodes_accepted")
        self.metrics = MetricPublisher(self)
        self.create_subscription(UInt8MultiArray, TRANSITIONS, self._on_transitions, transitions_qos())
        self.create_subscription(String, GAME_STATE, self._on_state, latched_qos())

    def start_serving(self) -> None:
        """Start the request timer (call at the end of the subclass's set-up)."""
        self.create_timer(0.05, self._tick)

    # -- the buffer ---------------------------------------------------------------------------
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
        self.update_diagnostics()

    @property
    def buffer(self) -> EpisodeBuffer:
        """The player's buffer (a learner's intake always has one)."""
        assert self.intake.buffer is not None
        return self.intake.buffer

    def update_diagnostics(self) -> None:
        self.diag.set("buffer_transitions", len(self.buffer))

    # -- requests -------------------------------------------------------------------------------
    def _on_state(self, msg: String) -> None:
        try:
            state = wire.unpack_game_state(msg.data)
        except wire.WireError as exc:
            self.diag.inc(f"rejected_game_state_{exc.reason}")
            self.diag.warn(f"rejected game state: {exc}")
            return
        if state.task_id != self.task.info.task_id:
            self.diag.inc("rejected_game_state_task")
            return
        self.on_game_state(state)
        req = state.request
        if state.phase == self.phase and req is not None and isinstance(req, self.request_type):
            with self._lock:
                if req.id not in self.served and (self._job is None or self._job.request.id != req.id):
                    self._job = Job(req, state.iteration, state.data_policy_version)
                    self._waiting_since = time.monotonic()
        self._tick()  # start at once (the timer is the fallback while waiting for data)

    def on_game_state(self, state: wire.GameState) -> None:
        """Every valid game state of this task (before requests are looked at)."""

    def ready(self, job: Job) -> bool:
        """Whatever else the move needs besides the request's episodes is here (default: yes)."""
        return True

    def _tick(self) -> None:
        with self._lock:
            job, busy = self._job, self._busy
        if job is None or busy or not self.ready(job):
            return
        missing = self.intake.missing(list(job.request.episode_ids))
        if missing:
            if time.monotonic() - self._waiting_since > float(self.missing_wait_s):
                if self.mcap_path:
                    self.intake.replay_mcap(Path(self.mcap_path), TRANSITIONS, self._count, only=set(missing))
                elif job.request.id not in self._warned_missing:
                    # nothing else sends an episode again: say why the game stands still
                    self._warned_missing.add(job.request.id)
                    self.get_logger().warning(
                        f"request {job.request.id}: {len(missing)} episode(s) never arrived (published before this "
                        "node's subscription matched?) and no mcap_path to look them up: waiting"
                    )
                self._waiting_since = time.monotonic()
            self.diag.status_message(f"waiting for {len(missing)} episode(s) of request {job.request.id}")
            return
        with self._lock:
            self._busy = True
        threading.Thread(target=self._run, args=(job,), name=self.phase, daemon=True).start()

    def _run(self, job: Job) -> None:
        try:
            self.work(job)
            with self._lock:
                self.served.add(job.request.id)
        except Exception as exc:  # noqa: BLE001 - report and keep serving
            self.diag.fault(f"{self.phase} failed: {exc}")
            self.get_logger().error(f"{self.phase} failed: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._busy = False
                if self._job is job:
                    self._job = None
            self.update_diagnostics()

    def work(self, job: Job) -> None:
        """The player's move for ``job``; publishes the answer (raise to report a failure)."""
        raise NotImplementedError
