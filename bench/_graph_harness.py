"""Harness for driving the ROS graph from outside: node processes on a private domain, and a probe node.

Used by the ROS graph tests (``test/ros_harness.py`` re-exports it) and by ``bench/bench_graph.py``.
Every test or benchmark gets its own random ``ROS_DOMAIN_ID`` (and localhost-only discovery), so
they and other users of the machine never see each other's messages. Node processes are started
exactly as ``mbrl-ros launch`` starts them and are always killed at the end (:meth:`Graph.close`).
rclpy is imported only by :class:`Probe`, so importing this module needs no ROS.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

# A game small enough for CI (2 cores): 1-episode rounds, tiny models, a few gradient steps.
TINY_GAME = [
    "n_init=80",
    "samples_per_iter=40",
    "buffer_size=400",
    "ensemble_size=2",
    "model_hidden=[32,32]",
    "model_epochs_aggressive=2",
    "model_epochs_conservative=1",
    "model_min_steps=10",
    "model_max_steps=20",
    "model_holdout=0.0",
    "npg_trajectories=10",
    "npg_steps_conservative=1",
    "npg_steps_aggressive=2",
    "cg_iters=3",
    "value_epochs=1",
    "eval_episodes=1",
    "rollout_horizon=10",
    "policy_hidden=[16,16]",
    "value_hidden=[16,16]",
]


def free_domain_id() -> int:
    return random.Random(os.getpid() ^ time.time_ns()).randint(100, 215)


# Every Graph made in this process, oldest first: test/conftest.py reports the node logs of a
# failed test's graphs (CI keeps no temporary directory, so a hang is read from the report).
GRAPHS: list["Graph"] = []


class Graph:
    """Node processes of one test (killed on :meth:`close`)."""

    def __init__(self, tmp: Path, domain_id: Optional[int] = None) -> None:
        GRAPHS.append(self)
        self.tmp = tmp
        self.domain_id = free_domain_id() if domain_id is None else domain_id
        self.env = dict(
            os.environ,
            ROS_DOMAIN_ID=str(self.domain_id),
            ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
            ROS_LOG_DIR=str(tmp / "ros_logs"),
            PYTHONUNBUFFERED="1",
            OMP_NUM_THREADS="1",
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, executable: str, name: str, params: dict[str, Any]) -> subprocess.Popen:
        # the run's signing key: a coordinator started here keeps it in <tmp>/keys, collectors trust it
        if executable == "game_coordinator":
            params = {"key_dir": str(self.tmp / "keys"), **params}
        elif executable in ("collector", "hardware_collector"):
            self.signer()  # the key exists before a collector looks for it (also in tests without a coordinator)
            params = {"coordinator_key": str(self.tmp / "keys" / "coordinator_ed25519.pub"), **params}
        pfile = self.tmp / f"{name}.params.yaml"
        pfile.write_text(yaml.safe_dump({name: {"ros__parameters": params}}))
        log = self.tmp / f"{name}.{len(self.logs)}.log"
        self.logs[name] = log
        argv = [
            sys.executable,
            "-m",
            f"mbrl_ros.nodes.{executable}",
            "--ros-args",
            "-r",
            f"__node:={name}",
            "--params-file",
            str(pfile),
        ]
        with open(log, "wb") as f:
            p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs[name] = p
        return p

    def signer(self) -> Any:
        """The key a coordinator started here signs with (created if none is yet): for tests that
        play the coordinator themselves (``mbrl_ros.security.Signer``)."""
        from mbrl_ros.security import Signer

        return Signer.load_or_create(self.tmp, key_dir=self.tmp / "keys")

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if name in self.logs else ""

    def log_tails(self, lines: int = 25) -> str:
        """The last ``lines`` lines of every node's log (every start of it), for a failure report."""
        out = []
        for log in sorted(self.tmp.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name} (last {len(text)} lines) ---")
            out.extend(text)
        return "\n".join(out)

    def kill(self, name: str, sig: int = signal.SIGKILL, wait: float = 10.0) -> int:
        p = self.procs[name]
        if p.poll() is None:
            os.killpg(p.pid, sig)
        return p.wait(timeout=wait)

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5.0
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5.0)


def follow_game(
    proc: subprocess.Popen,
    log_dir: Path,
    t0: float,
    period_s: float = 1.0,
    phases: Optional[tuple[str, ...]] = None,
    stall_s: Optional[float] = None,
) -> Optional[int]:
    """Print a launched game's progress from ``<log_dir>/game_state.json`` until ``proc`` exits:
    one line per new (iteration, phase), only for ``phases`` when given. With ``stall_s``, a game
    whose sample count has not moved for that long is stopped (SIGINT to ``proc``'s process group,
    which must be its own session) and the sample count it froze at is returned; else ``None``."""
    last = None
    moved_at, samples_seen = time.monotonic(), -1
    while proc.poll() is None:
        time.sleep(period_s)
        try:
            st = json.loads((log_dir / "game_state.json").read_text())
        except (OSError, ValueError):
            continue
        if st["samples"] != samples_seen:
            moved_at, samples_seen = time.monotonic(), st["samples"]
        elif stall_s is not None and time.monotonic() - moved_at > stall_s:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
            return samples_seen
        now = (st["iteration"], st["phase"])
        if now != last and (phases is None or st["phase"] in phases):
            print(f"  {time.monotonic() - t0:6.0f} s  iteration {st['iteration']} {st['phase']}, "
                  f"{st['samples']}/{st['sample_budget']} samples", flush=True)
        last = now
    return None


def game_params(algo: str = "pal", overrides: Optional[list[str]] = None, **extra: Any) -> dict[str, Any]:
    params = {"algo": algo, "task": "dclaw-turn-fixed", "seed": 0, "game_overrides": TINY_GAME + list(overrides or [])}
    params.update(extra)
    return params


class Probe:
    """An rclpy node inside the test process, on the test's domain."""

    def __init__(self, domain_id: int) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(f"test_probe_{os.getpid()}", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}

    def subscribe(self, msg_type: Any, topic: str, qos: Any) -> list:
        box = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, lambda m: box.append((time.monotonic(), m)), qos)
        return box

    def publisher(self, msg_type: Any, topic: str, qos: Any):
        return self.node.create_publisher(msg_type, topic, qos)

    def spin_until(self, predicate: Callable[[], bool], timeout: float, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
            if predicate():
                return
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)

    def call(self, srv_type: Any, name: str, timeout: float = 10.0):
        client = self.node.create_client(srv_type, name)
        self.spin_until(lambda: client.service_is_ready(), timeout, f"service {name}")
        fut = client.call_async(srv_type.Request())
        self.spin_until(fut.done, timeout, f"answer of {name}")
        return fut.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.rclpy.shutdown(context=self.context)


def diagnostics_of(probe_box: list, node_name: str) -> Optional[dict]:
    """The latest /diagnostics key/values (and level, message) of one node."""
    for _t, msg in reversed(probe_box):
        for st in msg.status:
            if st.name == f"mbrl_ros/{node_name}":
                out = {kv.key: kv.value for kv in st.values}
                out["_level"] = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
                out["_message"] = st.message
                return out
    return None
