"""Whole graphs over real DDS: a tiny game runs to the end; nothing is lost or duplicated.

- ``mbrl-ros launch`` with two collectors, one of them killed mid-run: the game finishes on the
  other, no episode is ever half-ingested, every record matches the published episodes.
- The model learner killed and restarted mid-run resumes from its checkpoint and the MCAP record
  and ends with exactly the episodes the collectors published (ids and counts).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")

from ros_harness import TINY_GAME, Graph, free_domain_id, game_params  # noqa: E402

from mbrl_ros import wire  # noqa: E402

pytestmark = pytest.mark.ros
TASK_ID = "dclaw-turn-fixed"


def _mcap_episodes(path: Path) -> list[wire.EpisodeRecord]:
    from std_msgs.msg import UInt8MultiArray

    from mbrl_ros.nodes import TRANSITIONS
    from mbrl_ros.nodes.recording import read_ros_messages

    return [wire.unpack_episode(wire.from_msg(m), {"task_id": TASK_ID, "obs_dim": 21, "act_dim": 9, "horizon": 40})
            for m, _t in read_ros_messages(path, TRANSITIONS, UInt8MultiArray)]


def _wait_json(path: Path, predicate, timeout: float, proc=None) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = json.loads(path.read_text())
            if predicate(data):
                return data
        except (OSError, ValueError):
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {path.name}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {path}")


def _assert_complete_and_contiguous(episodes: list[wire.EpisodeRecord]) -> None:
    ids = [e.episode_id for e in episodes]
    assert len(ids) == len(set(ids)), "an episode was recorded twice"
    streams = defaultdict(list)
    for e in episodes:
        assert e.length == 40 and e.obs.shape == (41, 21), f"{e.episode_id} is not a whole episode"
        streams[(e.robot_id, e.stream)].append(e.sequence)
    for key, seqs in streams.items():
        assert sorted(seqs) == list(range(len(seqs))), f"gap or duplicate in the sequence of {key}"


def test_launch_runs_a_tiny_game_to_the_end_despite_a_killed_collector(tmp_path: Path) -> None:
    log_dir = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"game_overrides": TINY_GAME + ["samples=800"], "torch_threads": 1}},
        "game_coordinator": {"ros__parameters": {"gate_probe_size": 32, "gate_model_horizon": 3}},
    }))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    domain = free_domain_id()
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", "pal_dclaw", f"log_dir:={log_dir}", f"config:={config}",
            "num_collectors:=2", f"domain_id:={domain}", "--no-progress", "--timeout", "200"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    view_proc = None
    try:
        _wait_json(log_dir / "game_state.json", lambda s: s["samples"] > 0, 120, proc)
        # The monitor starts now, while the game is surely running (rclpy start-up takes seconds and a
        # quiet machine finishes the tiny game quickly).
        view_proc = subprocess.Popen(
            [sys.executable, "-m", "mbrl_ros.cli", "monitor", "--once", "--domain-id", str(domain), "--timeout", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(env, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST"))
        mcap = log_dir / "record" / "transitions.mcap"
        deadline = time.monotonic() + 60
        while "sim1" not in {e.robot_id for e in _mcap_episodes(mcap)}:  # sim1 has published: now kill it
            assert time.monotonic() < deadline and proc.poll() is None, "collector_1 never published"
            time.sleep(0.05)
        pids = json.loads((log_dir / "pids.json").read_text())
        os.kill(pids["collector_1"], signal.SIGKILL)  # mid-episode at full sim speed, almost surely
        view_out, view_err = view_proc.communicate(timeout=60)
        view = subprocess.CompletedProcess(view_proc.args, view_proc.returncode, view_out, view_err)
        out, _ = proc.communicate(timeout=220)
    finally:
        if view_proc is not None and view_proc.poll() is None:
            view_proc.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
    text = out.decode(errors="replace")
    assert proc.returncode == 1, text  # the run finished, but a node died: non-zero
    assert "collector_1 exited" in text and "the run continues" in text and "game over" in text
    assert view.returncode == 0 and "pal on dclaw-turn-fixed" in view.stdout, view.stdout + view.stderr
    # (the tiny game may end while the monitor starts: ask for one node's health, not all of them)
    assert any(n in view.stdout for n in ("game_coordinator", "model_learner", "policy_improver", "collector_0"))

    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["iterations"] >= 5 and summary["samples"] >= 440 and summary["sequence_gaps"] == 0
    history = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["iteration"] for h in history] == list(range(len(history)))
    assert all("eval_success" in h for h in history)
    assert [h["policy_version"] for h in history] == sorted(h["policy_version"] for h in history)
    assert Path(summary["plot"]).is_file()
    from mbrl_ros.core.onnx_export import load_onnx_policy

    final = load_onnx_policy(summary["policy"], expect_task=TASK_ID)
    assert final.contract["version"] == summary["deployed_policy_version"] >= 5

    episodes = _mcap_episodes(Path(summary["mcap"]))
    _assert_complete_and_contiguous(episodes)
    assert len(episodes) == summary["episodes"]
    ledger = json.loads((log_dir / "model_learner" / "learner_state.json").read_text())["intake"]
    assert sorted(ledger["ids"]) == sorted(e.episode_id for e in episodes)
    assert ledger["duplicates"] == 0 and ledger["gaps"] == 0 and not ledger["rejected"]
    assert {e.robot_id for e in episodes} == {"sim0", "sim1"}  # sim1 worked before it was killed


def test_model_learner_restart_ends_with_exactly_the_published_episodes(tmp_path: Path) -> None:
    g = Graph(tmp_path)
    run = tmp_path / "run"
    mcap = run / "record" / "transitions.mcap"
    ckpt = run / "model_learner"
    common = dict(overrides=["samples=320"], log_dir=str(run))
    learner_params = game_params("mal", checkpoint_dir=str(ckpt), mcap_path=str(mcap), **common)
    try:
        coord = g.start("game_coordinator", "game_coordinator",
                        game_params("mal", mcap_path=str(mcap), gate_model_horizon=3, gate_probe_size=32, **common))
        g.start("model_learner", "model_learner", learner_params)
        # the record, as the launched graph gives it (mbrl_ros.graph): an episode published before a
        # player's subscription matched the collector's writer is looked up there (else it waits forever)
        g.start("policy_improver", "policy_improver", game_params("mal", mcap_path=str(mcap), **common))
        g.start("collector", "collector_0", {"task": TASK_ID, "robot_id": "sim0", "seed": 3})
        state = run / "game_state.json"
        # kill between model fits, so the next fit needs data published while the model player is
        # down (a quiet machine plays the tiny game quickly: read the state before the kill)
        killed_at = _wait_json(
            state, lambda s: s["model_version"] >= 2 and s["request"].get("kind") != "fit_model", 120, coord
        )["samples"]
        assert g.kill("model_learner", signal.SIGKILL) == -signal.SIGKILL
        # the game goes on without the model player until it needs a model fit
        s = _wait_json(state, lambda s: s["request"].get("kind") == "fit_model" and s["samples"] > killed_at, 60, coord)
        g.start("model_learner", "model_learner", learner_params)
        coord.wait(timeout=150)
        assert coord.returncode == 0, g.log("game_coordinator")[-3000:]
        g.kill("model_learner", signal.SIGINT)  # clean exit: the final checkpoint of the ledger
    finally:
        g.close()
    log = g.log("model_learner")
    assert "resumed from" in log and "replayed" in log, log[-2000:]

    episodes = _mcap_episodes(mcap)
    _assert_complete_and_contiguous(episodes)
    published = sorted(e.episode_id for e in episodes)
    learner = json.loads((ckpt / "learner_state.json").read_text())
    assert sorted(learner["intake"]["ids"]) == published  # exactly the published episodes, once each
    assert learner["intake"]["duplicates"] >= 0 and learner["intake"]["gaps"] == 0
    buffer_ids = [m["episode_id"] for m in json.loads((ckpt / "buffer.json").read_text())["episodes"]]
    assert sorted(buffer_ids) == published  # MAL's aggregate buffer holds every one of them
    summary = json.loads((run / "summary.json").read_text())
    assert summary["episodes"] == len(published) and summary["refused_out_of_order"] == 0
    assert s["samples"] > killed_at


def test_smoke_configuration_completes(tmp_path: Path) -> None:
    """``mbrl-ros launch pal_dclaw config:=smoke`` (the quick plumbing configuration, with the
    learners' ``torch_threads`` on auto) plays its whole game and exits with status 0; its MCAP record
    holds the robot's URDF, URDF joint states, markers and diagnostics (Foxglove replays the robot)."""
    log_dir = tmp_path / "smoke"
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", "pal_dclaw", "config:=smoke", f"log_dir:={log_dir}",
            f"domain_id:={free_domain_id()}", "--no-progress", "--timeout", "300"]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=360,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    text = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0 and "game over" in text, text[-3000:]
    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["samples"] == summary["sample_budget"] == 800 and summary["iterations"] == 2
    assert Path(summary["policy"]).is_file() and "  video" not in text  # video:=false by default
    history = [json.loads(line) for line in (log_dir / "metrics.jsonl").read_text().splitlines()]
    for h in history[1:]:  # torch_threads:=0 (auto): each fit and improvement ran with a chosen count,
        # the improvement on one thread (threads.POLICY_PLAYER_MAX_THREADS: NPG is slower on more)
        assert h["fit_threads"] >= 1 and h["npg_threads"] == 1
    # the coordinator's record replays the robot in Foxglove (config/foxglove_mbrl.json)
    from test_ros_deploy import assert_record_replays_the_robot

    assert_record_replays_the_robot(Path(summary["mcap"]), "sim0", "game_coordinator")
