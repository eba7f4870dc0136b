"""Robot-task experiments (experiments/): curve statistics, the job runner, the world changes of the
non-stationarity experiment, the model-error measurement, and tiny end-to-end runs of each script."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import common, learning_curves, model_error, nonstationarity

ROOT = Path(__file__).resolve().parent.parent

torch.set_num_threads(1)


# --------------------------------------------------------------------------------------------
# Curves over seeds


def test_aggregate_puts_runs_on_a_common_grid_with_mean_min_max() -> None:
    a = [{"samples": 100, "s": 0.0}, {"samples": 200, "s": 0.5}, {"samples": 300, "s": 1.0}]
    b = [{"samples": 150, "s": 0.2}, {"samples": 260, "s": 0.4}, {"samples": 320, "s": 0.6}]
    band = common.aggregate([a, b], "s", n_grid=3)
    x = band["samples"]
    assert x[0] == 150 and x[-1] == 300  # no extrapolation before b's first or past a's last evaluation
    i = x.index(260)  # a: last value at or before 260 is 0.5 (at 200); b: 0.4
    assert band["mean"][i] == pytest.approx(0.45) and band["min"][i] == 0.4 and band["max"][i] == 0.5
    assert band["std"][i] == pytest.approx(0.05)
    assert band["n_runs"] == 2


def test_aggregate_keeps_shared_evaluation_points_exactly() -> None:
    runs = [[{"samples": s, "v": s / 100 + k} for s in (100, 200, 300)] for k in (0.0, 1.0, 2.0)]
    band = common.aggregate(runs, "v")
    assert band["samples"] == [100, 200, 300]
    assert band["mean"] == pytest.approx([2.0, 3.0, 4.0]) and band["min"] == pytest.approx([1.0, 2.0, 3.0])


def test_step_values_are_nan_before_the_first_evaluation_and_reject_unsorted_samples() -> None:
    v = common.step_values([10, 20], [1.0, 2.0], np.array([5, 10, 15, 25]))
    assert math.isnan(v[0]) and list(v[1:]) == [1.0, 1.0, 2.0]
    with pytest.raises(ValueError):
        common.step_values([20, 10], [1.0, 2.0], np.array([15]))


def test_seeds_and_final_stats() -> None:
    assert common.parse_seeds("3") == [0, 1, 2] and common.parse_seeds("4,7") == [4, 7]
    for bad in ("0", "x", "1,1", "-1"):
        with pytest.raises(ValueError):
            common.parse_seeds(bad)
    s = common.final_stats([0.2, None, 0.6])
    assert s == {"mean": pytest.approx(0.4), "min": 0.2, "max": 0.6, "n": 2}
    assert common.fmt_stats(s) == "0.40 (0.20..0.60)"


# --------------------------------------------------------------------------------------------
# The job runner: JSON in and out, reuse, failures, subprocess workers


def _double(params: dict, job_dir: Path) -> dict:
    if params["n"] < 0:
        raise RuntimeError("negative n")
    common.Progress(job_dir).update(params["n"])
    return {"double": 2 * params["n"]}


def test_run_jobs_in_process_reuses_finished_runs_and_reports_failures(tmp_path) -> None:
    workers = {"double": _double}
    jobs = [common.Job("a", "double", {"n": 2}, total=2), common.Job("b", "double", {"n": -1})]
    r = common.run_jobs("unused.py", jobs, tmp_path, 0, workers, progress=False)
    assert r["a"]["double"] == 4 and "negative n" in r["b"]["error"]
    assert json.loads((tmp_path / "a" / "spec.json").read_text())["params"] == {"n": 2}
    assert common.failed(r) == ["b"]
    again = common.run_jobs("unused.py", jobs[:1], tmp_path, 0, workers, progress=False)
    assert again["a"]["reused"] is True
    changed = common.run_jobs("unused.py", [common.Job("a", "double", {"n": 5})], tmp_path, 0, workers, progress=False)
    assert changed["a"]["double"] == 10 and "reused" not in changed["a"]  # new settings: the run is redone
    only = common.run_jobs("unused.py", [common.Job("a", "double", {"n": 5}), common.Job("c", "double", {"n": 1})],
                           tmp_path, 0, workers, progress=False, run=False)
    assert set(only) == {"a"}  # report-only: finished runs, nothing started
    with pytest.raises(ValueError):
        common.Job("x/y", "double", {})
    with pytest.raises(TypeError):
        common.Job("x", "double", {"f": object()})  # not JSON: refused before any process starts


def test_run_jobs_runs_workers_as_subprocesses(tmp_path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        from experiments import common  # importable: run_jobs puts the repository on the worker's path

        def square(params, job_dir):
            if params["n"] == 13:
                sys.exit(3)
            if params["n"] == 5:  # the run "left over" from an earlier sweep
                (job_dir / "started").write_text("")
                time.sleep(2.0)
            return {{"square": params["n"] ** 2, "pid": os.getpid()}}

        if __name__ == "__main__":
            sys.exit(common.run_worker(sys.argv[2], {{"square": square}}))
    """))
    jobs = [common.Job(f"j{n}", "square", {"n": n}) for n in (3, 13, 5)]
    # a worker of an earlier sweep (killed) is still running j5: the new sweep adopts it
    left = tmp_path / "out" / "j5"
    common.write_json(left / "spec.json", jobs[2].spec)
    earlier = subprocess.Popen([sys.executable, str(script), "--worker", str(left)],
                               env={**os.environ, "PYTHONPATH": str(ROOT)})  # as run_jobs starts a script
    for _ in range(200):
        if (left / "started").exists():
            break
        time.sleep(0.05)
    assert common.live_worker(left) == earlier.pid
    r = common.run_jobs(script, jobs, tmp_path / "out", 2, progress=False)
    assert r["j3"]["square"] == 9 and "job_wall_s" in r["j3"]
    assert r["j13"]["error"].startswith("exit code 3")
    assert r["j5"] == {**r["j5"], "square": 25, "pid": earlier.pid}  # waited for, not started twice
    earlier.wait(timeout=10)
    assert common.live_worker(left) is None


# --------------------------------------------------------------------------------------------
# Learning curves


def test_sac_is_evaluated_on_the_same_episodes_as_the_games() -> None:
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.core.train import make_world

    cfg = load_config("pal", "pointmass", ["seed=4", "eval_episodes=5", "model_hidden=[8]"])
    game = StackelbergGame(cfg, make_world("pointmass"))
    assert common.eval_seeds(4, 5) == game.eval_seeds


def test_sac_ends_once_stop_success_held_for_three_evaluations(tmp_path, monkeypatch) -> None:
    pytest.importorskip("stable_baselines3", reason="stable-baselines3 is a dev dependency")
    from mbrl_ros.core import world

    calls: list[int] = []

    def fake_evaluate(env, act, seeds):  # success 0.5, then 1.0: the run ends once 1.0 held 3 times
        calls.append(len(seeds))
        return {"success": min(1.0, 0.5 * len(calls)), "return": 0.0}

    monkeypatch.setattr(world, "evaluate", fake_evaluate)
    params = {"task": "pointmass", "seed": 0, "samples": 1000, "eval_every": 60, "eval_episodes": 3,
              "stop_success": 0.9, "sac_kwargs": {"learning_starts": 40, "batch_size": 16}}
    r = common.run_sac(params, tmp_path)
    assert [h["samples"] for h in r["history"]] == [60, 120, 180, 240]
    assert r["summary"]["samples"] == 240 and r["summary"]["samples_to_90"] == 120
    assert r["summary"]["first_touch_90"] == 120
    with pytest.raises(ValueError, match="stop_success"):
        common.run_sac({**params, "stop_success": 1.5}, tmp_path)


def test_learning_curves_quick_run_writes_curves_figure_and_no_benchmark(tmp_path) -> None:
    bench = ROOT / "BENCHMARKS.md"
    before = bench.read_text() if bench.exists() else None
    out = tmp_path / "lc"
    argv = ["--quick", "--jobs", "0", "--algos", "pal", "--tasks", "dclaw-turn-random", "--out", str(out),
            "--no-progress"]
    assert learning_curves.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    methods = res["summary"]["dclaw-turn-random"]
    assert set(methods) == {"pal", "sac"} and res["preset"] == "quick"
    pal, sac = methods["pal"], methods["sac"]
    assert pal["success"]["samples"] == [80, 120, 160] and pal["budget"] == 160  # N_init, then N = 1 episode
    assert sac["success"]["samples"][-1] == sac["budget"] == 120
    for m in (pal, sac):
        assert all(0.0 <= v <= 1.0 for v in m["success"]["mean"])
        assert m["final_return"]["mean"] < 0  # D'Claw returns are negative before the valve reaches the target
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert (bench.read_text() if bench.exists() else None) == before  # --quick never writes BENCHMARKS.md
    # report-only: the same numbers again from the finished runs, nothing rerun
    assert learning_curves.main(argv + ["--report-only"]) == 0
    assert json.loads((out / "results.json").read_text())["summary"] == res["summary"]
    with pytest.raises(ValueError, match="unknown algorithm"):
        learning_curves.main(["--quick", "--algos", "pal,nope", "--out", str(out)])


# --------------------------------------------------------------------------------------------
# Non-stationarity


def test_world_changes_move_the_physics_and_the_goal() -> None:
    from mbrl_ros.tasks import make_env

    env = make_env("dclaw-turn-fixed")
    target = nonstationarity.shifted_target_range("dclaw-turn-fixed", -math.pi / 2)
    assert target == pytest.approx([math.pi / 2, math.pi / 2])
    done = nonstationarity.apply_change(env, {"physics": {"actuator_gain": 1.0}, "target": target})
    assert done == {"actuator_gain": 1.0, "target": target}
    assert env.physics()["actuator_gain"] == [1.0] * 9
    obs, _ = env.reset(seed=0)  # valve starts at 0: target error = target
    assert obs[20] == pytest.approx(math.pi / 2, abs=1e-6)
    with pytest.raises(ValueError, match="unknown physics parameter"):
        nonstationarity.apply_change(env, {"physics": {"warp_drive": 1.0}})
    with pytest.raises(ValueError):
        nonstationarity.parse_physics(["actuator_gain"])
    env.close()


class _StubClaw:
    """A 'world' whose target error shrinks from 2.0 by 0.5 per step (D'Claw observation layout)."""

    class task:  # noqa: N801 - mimics env.task
        class info:  # noqa: N801
            robot = "dclaw"

    def reset(self, **kwargs):
        self.d = 2.0
        return self._obs(), {}

    def step(self, action):
        self.d -= 0.5
        return self._obs(), 0.0, False, False, {}

    def _obs(self):
        obs = np.zeros(21)
        obs[20] = -self.d  # the sign of the error does not matter
        return obs


def test_goal_tracker_measures_progress_towards_the_goal_per_evaluation() -> None:
    tracker = nonstationarity.GoalTracker(_StubClaw())
    for steps in (3, 1):  # progress 1 - 0.5/2 = 0.75 and 1 - 1.5/2 = 0.25
        tracker.reset(seed=0)
        for _ in range(steps):
            tracker.step(None)
    assert tracker.take() == pytest.approx(0.5)
    assert tracker.take() is None  # cleared after each evaluation
    assert tracker.task.info.robot == "dclaw"  # everything else is the wrapped world's


def test_recovery_counts_samples_until_the_pre_change_level_is_back() -> None:
    pre = [{"samples": 100, "eval_progress": 0.2}, {"samples": 200, "eval_progress": 0.6}]
    post = [{"samples": 300, "eval_progress": 0.1}, {"samples": 400, "eval_progress": 0.5},
            {"samples": 500, "eval_progress": 0.7}]
    r = nonstationarity.recovery(pre[1:], post, 200)
    assert r == {"before": 0.6, "first_after": 0.1, "final": 0.7, "recover_samples": 300}
    assert nonstationarity.recovery(pre[1:], post[:2], 200)["recover_samples"] is None
    control = [{"samples": s, "eval_progress": 0.6} for s in (300, 400, 500)]
    r = nonstationarity.recovery(pre, post, 200, control=control)
    assert r["before"] == pytest.approx(0.4)  # the mean of the last pre-change evaluations
    assert r["recover_samples"] == 200 and r["deficit"] == pytest.approx((0.5 + 0.1 - 0.1) / 3)


def test_nonstationarity_branches_continue_one_checkpoint_and_change_the_evaluation_world(tmp_path) -> None:
    out = tmp_path / "ns"
    argv = ["--quick", "--jobs", "0", "--algos", "pal", "--branches", "goal,control", "--change-at", "80",
            "--samples", "160", "--out", str(out), "--no-progress"]
    assert nonstationarity.main(argv) == 0
    run = json.loads((out / "pal-dclaw-turn-fixed-s0" / "result.json").read_text())
    assert run["change_at"] == 80 and [m["samples"] for m in run["pre"]] == [80]
    goal, control = run["branches"]["goal"], run["branches"]["control"]
    assert [m["samples"] for m in goal] == [m["samples"] for m in control] == [120, 160]
    assert all(m["eval_progress"] is not None for m in run["pre"] + goal + control)
    # Same policy after the checkpoint, but the goal moved from pi to pi/2: a barely trained
    # policy leaves the valve near 0, so its distance cost (-5 d per step) halves.
    assert goal[0]["eval_return"] > control[0]["eval_return"] + 100
    assert not (out / "pal-dclaw-turn-fixed-s0" / "checkpoint").exists()
    res = json.loads((out / "results.json").read_text())
    assert set(res["summary"]["pal"]["branches"]) == {"goal", "control"}
    assert (out / "nonstationarity.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="change-at"):
        nonstationarity.main(["--quick", "--change-at", "500", "--samples", "400", "--out", str(out)])


# --------------------------------------------------------------------------------------------
# Model error


def test_prediction_errors_of_a_frozen_model_match_a_hand_computation() -> None:
    """A model that predicts no change: open-loop L(t) is the world's drift from s_0 (last action exact)."""
    from mbrl_ros.core.dynamics_ensemble import DynamicsEnsemble
    from mbrl_ros.core.networks import GaussianMLPPolicy
    from mbrl_ros.tasks import make_env

    env = make_env("dclaw-turn-random")
    task = env.task
    torch.manual_seed(0)
    ens = DynamicsEnsemble(task.model_dim, task.info.act_dim, ensemble_size=2, hidden=[8])
    with torch.no_grad():
        ens.weights[-1].zero_()
        ens.biases[-1].zero_()
    policy = GaussianMLPPolicy(task.info.obs_dim, task.info.act_dim, [16])
    with torch.no_grad():
        policy.mean_net[-1].weight.normal_(0.0, 0.5)  # actions that really move the claw
    episodes = model_error.world_episodes(env, policy, [1, 2])
    r = model_error.prediction_errors(ens, task, policy, episodes)
    assert len(r["open_loop"]) == 41 and r["open_loop"][0] == r["closed_loop"][0] == 0.0
    e = episodes[0]
    t = 10
    model_obs = task.fix_known(e["obs"][0], e["actions"][t - 1], e["obs"][0])
    expected0 = np.linalg.norm(task.to_model(e["obs"][t], e["aux"][t]) - task.to_model(model_obs, e["aux"][0]))
    e1 = episodes[1]
    model_obs1 = task.fix_known(e1["obs"][0], e1["actions"][t - 1], e1["obs"][0])
    expected1 = np.linalg.norm(task.to_model(e1["obs"][t], e1["aux"][t]) - task.to_model(model_obs1, e1["aux"][0]))
    assert r["open_loop"][t] == pytest.approx((expected0 + expected1) / 2, rel=1e-4)
    assert r["open_loop"][t] > 0.05  # the claw moved: the measurement is not trivially zero
    # the first closed-loop action is the world's first action (same policy, same start state)
    assert r["closed_loop"][1] == pytest.approx(r["open_loop"][1], rel=1e-4)
    # the copied-in last action is exact open loop; closed loop it differs, and is left out of L(t)
    assert r["open_loop_all"] == pytest.approx(r["open_loop"], rel=1e-5)
    assert r["closed_loop_all"][t] > r["closed_loop"][t]
    assert r["state_dims"] == 20  # D'Claw: 29 model-space values less 9 last-action values
    env.close()


def test_stage_thresholds_span_the_samples_after_n_init() -> None:
    assert model_error.stage_thresholds([0.0, 0.5, 1.0], 2500, 10500) == [2500, 6500, 10500]


def test_model_error_quick_run_measures_every_stage(tmp_path) -> None:
    out = tmp_path / "me"
    argv = ["--quick", "--jobs", "0", "--algos", "mal", "--out", str(out), "--no-progress"]
    assert model_error.main(argv) == 0
    run = json.loads((out / "mal-dclaw-turn-random-s0" / "result.json").read_text())
    ms = run["measurements"]
    assert [m["stage"] for m in ms] == [0, 1, 2]
    assert [m["samples"] for m in ms] == [80, 160, 200]  # first improvement, half-way, the last iteration
    for m in ms:
        assert m["open_loop"][0] == 0.0 and len(m["open_loop"]) == len(m["closed_loop"]) == 41
        assert all(np.isfinite(m["open_loop"])) and all(np.isfinite(m["closed_loop"]))
    assert (out / "model_error.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="stages"):
        model_error.main(["--quick", "--stages", "0,2", "--out", str(out)])
