"""The training runner: learning on the point mass, exact resume, CLI files, a D'Claw smoke run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mbrl_ros.cli import main
from mbrl_ros.core.config import load_config
from mbrl_ros.core.onnx_export import load_onnx_policy
from mbrl_ros.core.stackelberg import StackelbergGame
from mbrl_ros.core.train import train
from mbrl_ros.tasks.pointmass import PointMassEnv

torch.set_num_threads(1)

TINY = ["model_hidden=[32, 32]", "npg_trajectories=16", "eval_episodes=2", "n_init=60", "samples_per_iter=40",
        "buffer_size=200", "model_epochs_aggressive=10", "model_min_steps=20", "cg_iters=5"]
TIMING = {"wall_s", "fit_s", "npg_s", "collect_s", "eval_s", "iteration_s", "threads"}


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pal_improves_the_return_on_the_point_mass(tmp_path) -> None:
    cfg = load_config("pal", "pointmass", [
        "samples=1600", "n_init=400", "samples_per_iter=200", "buffer_size=800", "model_hidden=[64, 64]",
        "npg_trajectories=50", "eval_episodes=10", "model_epochs_aggressive=50",
    ])
    summary = train(cfg, tmp_path, progress=False)
    rows = _rows(tmp_path / "metrics.jsonl")
    first, last = rows[0], rows[-1]
    assert last["samples"] <= 1600 and summary["iterations"] == len(rows) - 1 == 6
    assert last["eval_return"] > first["eval_return"] + 5.0, [r["eval_return"] for r in rows]
    assert last["J_model"] > rows[1]["J_model"]  # the leader's objective J(pi, M) rose too
    assert all(0.005 < r["kl"] < 0.1 for r in rows[1:])  # conservative steps of about delta / 2


def test_resume_continues_exactly(tmp_path) -> None:
    cfg = load_config("pal", "pointmass", [*TINY, "max_iterations=2"])
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "a2", resume=tmp_path / "a", resume_overrides={"max_iterations": 3}, progress=False)
    cfg3 = load_config("pal", "pointmass", [*TINY, "max_iterations=3"])
    train(cfg3, tmp_path / "b", progress=False)
    resumed, straight = _rows(tmp_path / "a2" / "metrics.jsonl"), _rows(tmp_path / "b" / "metrics.jsonl")
    assert [r["iteration"] for r in resumed] == [0, 1, 2, 3]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    assert strip(resumed) == strip(straight)
    assert (tmp_path / "a2" / "policy.onnx").read_bytes() == (tmp_path / "b" / "policy.onnx").read_bytes()


def test_resume_applies_a_new_buffer_size(tmp_path) -> None:
    cfg = load_config("pal", "pointmass", [*TINY, "max_iterations=1"])
    train(cfg, tmp_path / "a", progress=False)
    game = StackelbergGame(cfg, PointMassEnv(), PointMassEnv())
    game.load(tmp_path / "a" / "checkpoint")
    assert len(game.buffer) == 100  # 60 initial + 40 (capacity 200)
    smaller = load_config("pal", "pointmass", [*TINY, "max_iterations=1", "buffer_size=60"])
    game = StackelbergGame(smaller, PointMassEnv(), PointMassEnv())
    game.load(tmp_path / "a" / "checkpoint")
    assert game.buffer.capacity == 60 and len(game.buffer) == 60  # the newest three 20-step episodes
    assert game.buffer.total_added == 100


def test_cli_train_writes_the_run_and_eval_reads_it(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["train", "--algo", "mal", "--task", "pointmass", "--samples", "140", "--seed", "1", "--out", str(out),
            "--no-progress", "--threads", "1"] + [a for kv in TINY for a in ("--set", kv)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["algo"] == "mal" and summary["samples"] == 140 and summary["iterations"] == 2
    rows = _rows(out / "metrics.jsonl")
    required = {"iteration", "samples", "eval_success", "eval_return", "model_loss", "leader_objective", "wall_s",
                "fit_s", "npg_s", "collect_s"}
    assert all(required <= set(r) for r in rows)
    assert rows[-1]["leader"] == "model" and rows[-1]["leader_objective"] == rows[-1]["model_loss"]
    assert (out / "curve.png").stat().st_size > 1000 and (out / "checkpoint" / "state.json").exists()
    assert load_onnx_policy(out / "policy.onnx", expect_task="pointmass").contract["iteration"] == 2
    assert main(["eval", "--policy", str(out / "policy.onnx"), "--task", "pointmass", "--episodes", "3"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert result["episodes"] == 3 and 0.0 <= result["success"] <= 1.0 and np.isfinite(result["return"])


def test_one_pal_iteration_on_dclaw(tmp_path) -> None:
    pytest.importorskip("mujoco")
    tasks = pytest.importorskip("mbrl_ros.tasks")
    if not hasattr(tasks, "make_env"):
        pytest.skip("the ROBEL task layer is not available")
    cfg = load_config("pal", "dclaw-turn-fixed", [*TINY, "n_init=80", "samples_per_iter=40", "max_iterations=1",
                                                   "eval_episodes=1"])
    summary = train(cfg, tmp_path, progress=False)
    row = _rows(tmp_path / "metrics.jsonl")[-1]
    assert summary["samples"] == 120 and row["iteration"] == 1
    assert np.isfinite(row["J_model"]) and np.isfinite(row["model_loss"]) and -2000 < row["eval_return"] < 1000
    assert load_onnx_policy(tmp_path / "policy.onnx", expect_task="dclaw-turn-fixed").obs_dim == 21


def test_sigterm_ends_the_run_after_the_iteration_with_every_file_written(tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mbrl_ros.cli", "train", "--algo", "pal", "--task", "pointmass", "--samples", "100000",
           "--out", str(out), "--no-progress", "--threads", "1"] + [a for kv in TINY for a in ("--set", kv)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.jsonl").exists() and len(_rows(out / "metrics.jsonl")) >= 2:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-2000:]
    assert "stopping after this iteration" in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    rows = _rows(out / "metrics.jsonl")
    assert summary["stopped_by"] == "SIGTERM" and summary["samples"] < 100000
    assert summary["iterations"] == rows[-1]["iteration"] == len(rows) - 1 and summary["samples"] == rows[-1]["samples"]
    assert json.loads((out / "summary.json").read_text()) == summary
    # the checkpoint is a clean iteration boundary: resuming plays the next iteration
    n = summary["iterations"]
    cfg = load_config("pal", "pointmass", TINY)
    resumed = train(cfg, tmp_path / "more", resume=out, resume_overrides={"max_iterations": n + 1}, progress=False)
    assert resumed["iterations"] == n + 1 and "stopped_by" not in resumed


def test_evaluation_episodes_are_fixed_by_the_task_and_played_once_when_resets_are_deterministic() -> None:
    from mbrl_ros.core.world import evaluate, evaluation_seeds
    from mbrl_ros.tasks import make_env

    a = StackelbergGame(load_config("pal", "pointmass", [*TINY, "seed=1"]), PointMassEnv())
    b = StackelbergGame(load_config("pal", "pointmass", [*TINY, "seed=7"]), PointMassEnv())
    assert a.eval_seeds == b.eval_seeds == evaluation_seeds(2)  # not a function of the training seed
    fixed, random = make_env("dclaw-turn-fixed"), make_env("dclaw-turn-random")
    assert fixed.deterministic_reset and not random.deterministic_reset
    zero = lambda o: np.zeros(9)
    ev = evaluate(fixed, zero, evaluation_seeds(20))
    assert ev["episodes"] == 20 and ev["unique_episodes"] == 1
    assert ev["final_error"] == pytest.approx(np.pi, abs=0.01)  # the valve never moved: error pi
    assert evaluate(random, zero, evaluation_seeds(3))["unique_episodes"] == 3
    # one episode stands for all: two independent resets give the same episode
    e1 = evaluate(fixed, zero, [5]), evaluate(fixed, zero, [6])
    assert e1[0]["return"] == e1[1]["return"]


def test_eval_every_skips_iterations_but_evaluates_the_first_and_the_last(tmp_path) -> None:
    cfg = load_config("pal", "pointmass", [*TINY, "eval_every=3", "samples=380"])
    summary = train(cfg, tmp_path, progress=False)
    rows = _rows(tmp_path / "metrics.jsonl")
    assert [r["iteration"] for r in rows if r["eval_success"] is not None] == [0, 3, 6, 8]
    assert rows[-1]["iteration"] == 8 and rows[-1]["eval_success"] is not None
    assert summary["final_success"] == rows[-1]["eval_success"]


def test_success_milestones_follow_the_protocol() -> None:
    from mbrl_ros.core.train import success_milestones

    row = lambda n, s: {"samples": n, "eval_success": s}
    h = [row(100, 0.0), row(200, 0.95), row(300, None), row(400, 0.5), row(500, 0.9), row(600, 1.0),
         row(700, 1.0), row(800, 0.4)]
    m = success_milestones(h)
    assert m == {"first_touch": 200, "held": 500, "relapses": 2}
    assert success_milestones(h[:6]) == {"first_touch": 200, "held": None, "relapses": 1}


def test_core_budget_counts_the_cores_other_processes_use() -> None:
    import subprocess
    import sys

    from mbrl_ros.core.threads import CoreBudget, cpu_count

    assert CoreBudget(fixed=3).choose() == 3 and torch.get_num_threads() == 3
    if cpu_count() < 2:
        pytest.skip("needs two cores to see another process's load")
    budget = CoreBudget(max_threads=cpu_count())
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        budget.others()  # start the window
        import time

        time.sleep(1.0)
        assert budget.others() > 0.6  # the busy loop holds about one core
        assert budget.choose() <= cpu_count() - 1
    finally:
        hog.kill()
        hog.wait()
        torch.set_num_threads(1)


def test_lower_priority_renices_every_thread_and_those_started_later() -> None:
    """Learning nodes run at a lower CPU priority than the control path: every thread of the
    process, the ones running already and the ones started later, gets the nice value (in a
    child process: a raised nice value cannot be lowered again without privilege)."""
    import subprocess
    import sys

    code = """
import os, threading
from mbrl_ros.core.threads import lower_priority
stop = threading.Event()
early = threading.Thread(target=stop.wait, daemon=True); early.start()
assert lower_priority(7) == 7
late_nice = []
late = threading.Thread(target=lambda: late_nice.append(os.getpriority(os.PRIO_PROCESS, 0))); late.start(); late.join()
nices = {}
for t in os.listdir('/proc/self/task'):
    try:
        nices[int(t)] = os.getpriority(os.PRIO_PROCESS, int(t))
    except ProcessLookupError:  # a short-lived thread (e.g. one of torch's) ended meanwhile
        pass
assert early.native_id in nices
stop.set(); early.join()
assert lower_priority(3) == 7  # never made less nice
try:
    lower_priority(20)
except ValueError as e:
    print('refused', e)
print(sorted(set(nices.values())), late_nice)
"""
    if sys.platform != "linux":
        pytest.skip("per-thread nice values are Linux's")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "refused niceness must be in 0..19" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "[7] [7]"


def test_core_budget_fresh_probe_ignores_load_that_has_ended() -> None:
    """In the graph the nodes take turns: load from another node's finished phase must not
    cost this node's phase its threads (choose(fresh=True) probes the present)."""
    import subprocess
    import sys
    import time

    from mbrl_ros.core.threads import CoreBudget, cpu_count

    if cpu_count() < 2:
        pytest.skip("needs two cores to see another process's load")
    stale, fresh = CoreBudget(max_threads=cpu_count()), CoreBudget(max_threads=cpu_count(), probe_s=0.3)
    fresh.choose(fresh=True)
    if fresh.others_cores > 0.5:
        pytest.skip(f"the machine is busy ({fresh.others_cores:.2f} cores used by others): the probe cannot tell")
    stale.others()  # start the windows
    fresh.others()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(1.0)
    hog.kill()
    hog.wait()
    try:
        stale_others = stale.others()  # the window holds the hog's second
        fresh.choose(fresh=True)
        assert stale_others > 0.6
        assert fresh.others_cores < stale_others - 0.5  # the probe after the hog ended does not see it
    finally:
        torch.set_num_threads(1)


def test_core_budget_caps_the_policy_players_phase_at_one_thread(monkeypatch) -> None:
    """NPG's small tensors run slower on more threads (threads.POLICY_PLAYER_MAX_THREADS): with
    an automatic budget the in-process game improves the policy on one thread, and a cap never
    overrides a count the user pinned."""
    from mbrl_ros.core.policy_player import PolicyPlayer
    from mbrl_ros.core.threads import POLICY_PLAYER_MAX_THREADS, CoreBudget, cpu_count

    with pytest.raises(ValueError, match="cap"):
        CoreBudget(max_threads=2).choose(cap=0)
    assert CoreBudget(fixed=3).choose(cap=1) == 3  # pinned by the user: kept
    assert CoreBudget(max_threads=cpu_count(), probe_s=0.01).choose(cap=1) == 1
    seen: list[int] = []
    improve = PolicyPlayer.improve

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return improve(self, *args, **kwargs)

    monkeypatch.setattr(PolicyPlayer, "improve", spy)
    game = StackelbergGame(load_config("pal", "pointmass", [*TINY, "max_iterations=2"]), PointMassEnv())
    torch.set_num_threads(max(2, cpu_count()))  # what a previous phase may have left
    try:
        game.core_budget = CoreBudget(max_threads=max(2, cpu_count()), probe_s=0.01)
        game.run()
    finally:
        torch.set_num_threads(1)
    assert seen and all(n == POLICY_PLAYER_MAX_THREADS for n in seen), seen
