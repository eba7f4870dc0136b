"""Shared machinery of the robot-task experiments (learning curves, non-stationarity, model error).

- Jobs: every (algorithm, task, seed) run is one :class:`Job`, run by the experiment's own script
  in a worker subprocess (``script --worker JOB_DIR``). The job's parameters go in as
  ``JOB_DIR/spec.json`` and its result comes back as ``JOB_DIR/result.json``: JSON across
  processes, never pickle. A finished job whose spec is unchanged is reused on the next call,
  so an interrupted sweep resumes where it stopped (delete the folder to rerun it).
  ``--jobs 0`` runs the jobs in this process (debugging, tests).
- Progress: workers write ``progress.json`` (samples done); the parent shows one tqdm bar in
  real samples over all jobs.
- Games: :func:`play_game` plays one Stackelberg game (``mbrl_ros.core.stackelberg``) in its
  simulated world with a per-iteration hook (change the world mid-run, measure the model).
- SAC: :func:`run_sac` trains Stable-Baselines3 SAC (defaults) on the same Gymnasium world and
  evaluates it exactly as the games are evaluated (deterministic policy, success at the final
  step, the same evaluation episodes).
- Curves: :func:`aggregate` puts runs evaluated at different sample counts on one grid (the
  last evaluation at or before each grid point) and returns mean, min, max and std over seeds;
  :func:`plot_band` draws it.
- Reports: :func:`write_json`, :func:`update_benchmarks` (BENCHMARKS.md via bench/_report.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # bench/_report.py lives beside us, not in the package
    sys.path.insert(0, str(ROOT))
from bench._report import command_line  # noqa: E402  (the experiments' Command lines, as the benches')

SPEC, RESULT, PROGRESS, LOG, METRICS = "spec.json", "result.json", "progress.json", "log.txt", "metrics.jsonl"
PID = "worker.pid"
ALGO_COLORS = {"pal": "tab:blue", "mal": "tab:orange", "gda": "tab:green", "br": "tab:red", "sac": "tab:purple",
               "mal-agent-reward": "tab:brown", "mal-noise": "tab:pink"}
ALGO_LABELS = {"pal": "PAL", "mal": "MAL", "gda": "GDA", "br": "BR", "sac": "SAC (SB3)",
               "mal-agent-reward": "MAL + agent reward", "mal-noise": "MAL + noise"}

Worker = Callable[[dict, Path], dict]


# ---------------------------------------------------------------------------------------------
# Jobs: one subprocess per run, JSON in and out


@dataclass
class Job:
    """One run of an experiment: ``kind`` names the worker, ``params`` is its JSON input."""

    name: str  # unique within the experiment; the job's folder name
    kind: str  # key into the script's worker table
    params: dict  # JSON-serialisable parameters of the worker
    total: int = 1  # progress units (real samples) the job will report in total
    spec: dict = field(init=False)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise ValueError(f"job name {self.name!r} must be a plain folder name")
        self.spec = {"name": self.name, "kind": self.kind, "params": self.params}
        json.dumps(self.spec)  # fail now, not in the worker, on a non-JSON parameter


def parse_seeds(text: Union[str, int]) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,4,7"`` -> those seeds."""
    s = str(text).strip()
    try:
        if "," in s:
            seeds = [int(v) for v in s.split(",") if v.strip()]
        else:
            seeds = list(range(int(s)))
    except ValueError:
        raise ValueError(f"--seeds takes a count (3) or a comma list (0,1,2), got {text!r}") from None
    if not seeds or any(v < 0 for v in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds must name at least one distinct seed >= 0, got {text!r}")
    return seeds


def add_common_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """The options every experiment script shares."""
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--quick", action="store_true",
                        help="tiny budget: a pipeline check (CI smoke test), not a result")
    budget.add_argument("--full", action="store_true", help="the paper's budgets and networks (hours to days on a CPU)")
    parser.add_argument("--seeds", default=None, help="seed count (3 -> 0,1,2) or comma list (default: the budget's)")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel processes (0: in this process)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default=str(ROOT / "runs" / name), help=f"output folder (default runs/{name}/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="extra game hyper-parameter override for every game run (repeatable)")
    parser.add_argument("--no-report", action="store_true", help="do not write the BENCHMARKS.md section")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing: figures and tables from the runs already finished in --out")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one job


def check_common_arguments(args: argparse.Namespace) -> None:
    if args.jobs < 0:
        raise ValueError(f"--jobs must be >= 0, got {args.jobs}")
    if args.threads <= 0:
        raise ValueError(f"--threads must be > 0, got {args.threads}")
    for kv in args.overrides:
        if "=" not in kv:
            raise ValueError(f"--set {kv!r} is not of the form key=value")


def _read_json(path: Path) -> Optional[Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Union[str, Path], obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Progress:
    """Worker side: report how many of the job's units are done (polled by the parent)."""

    def __init__(self, job_dir: Path) -> None:
        self.path = Path(job_dir) / PROGRESS

    def update(self, done: float, **info: Any) -> None:
        write_json(self.path, {"done": float(done), **info})


def run_worker(job_dir: Union[str, Path], workers: dict[str, Worker]) -> int:
    """Entry point of ``script --worker JOB_DIR``: run the job, write ``result.json``."""
    job_dir = Path(job_dir)
    spec = _read_json(job_dir / SPEC)
    if not isinstance(spec, dict) or spec.get("kind") not in workers:
        raise ValueError(f"{job_dir / SPEC}: no job spec, or an unknown kind (known: {', '.join(workers)})")
    if "threads" in spec["params"]:  # every learning run has it; torch is imported only then
        import torch

        torch.set_num_threads(int(spec["params"]["threads"]))
    (job_dir / PID).write_text(str(os.getpid()))
    t0 = time.perf_counter()
    result = workers[spec["kind"]](spec["params"], job_dir)
    result["job_wall_s"] = round(time.perf_counter() - t0, 1)
    write_json(job_dir / RESULT, result)
    return 0


def worker_main(job_dir: Union[str, Path], workers: dict[str, Worker]) -> int:
    """``script --worker JOB_DIR`` in a subprocess: any failure goes to the job's log with its traceback."""
    try:
        return run_worker(job_dir, workers)
    except Exception:  # noqa: BLE001 - the parent reads the log
        traceback.print_exc()
        return 1


def live_worker(job_dir: Path) -> Optional[int]:
    """PID of a worker process still running this job (e.g. left by a sweep that was killed)."""
    try:
        pid = int((Path(job_dir) / PID).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if "--worker" in cmdline and str(Path(job_dir)) in cmdline else None


def run_jobs(
    script: Union[str, Path],
    jobs: Sequence[Job],
    out_dir: Union[str, Path],
    n_jobs: int = 2,
    workers: Optional[dict[str, Worker]] = None,
    progress: bool = True,
    desc: str = "runs",
    run: bool = True,
) -> dict[str, dict]:
    """Run every job (``n_jobs`` worker processes at a time); returns ``{job name: result}``.

    A failed job's result is ``{"error": ...}`` (its log's tail); the others still run. With
    ``n_jobs == 0`` the jobs run one after another in this process through ``workers``. With
    ``run=False`` nothing runs: only the jobs already finished (same spec) are returned. A job
    that a live worker of an earlier (killed) sweep is still running with the same spec is
    adopted: waited for, not started again (and not stopped if this sweep is interrupted).
    """
    out = Path(out_dir)
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("job names must be unique")
    if n_jobs == 0 and workers is None:
        raise ValueError("in-process jobs (--jobs 0) need the worker table")
    results: dict[str, dict] = {}
    todo: list[Job] = []
    adopted: list[Job] = []
    for job in jobs:
        d = out / job.name
        same = _read_json(d / SPEC) == job.spec
        if same and isinstance(_read_json(d / RESULT), dict):
            results[job.name] = {**_read_json(d / RESULT), "reused": True}
            continue
        if not run:
            continue
        pid = live_worker(d)
        if pid is not None:
            if not same:
                raise ValueError(f"{d} is being run by process {pid} with other settings; stop it or use another --out")
            adopted.append(job)
            continue
        d.mkdir(parents=True, exist_ok=True)
        for stale in (RESULT, PROGRESS, METRICS):
            (d / stale).unlink(missing_ok=True)
        write_json(d / SPEC, job.spec)
        todo.append(job)

    bar = None
    if progress:
        from tqdm import tqdm

        # On a terminal the bar redraws often; in a log file (no tty) a line every 30 s is enough.
        interval = 0.5 if sys.stderr.isatty() else 30.0
        bar = tqdm(total=sum(j.total for j in todo + adopted), unit="samples", desc=desc, dynamic_ncols=True,
                   mininterval=interval, maxinterval=max(10.0, interval))
        if results:
            bar.write(f"reusing {len(results)} finished run(s) in {out}")
        if adopted:
            bar.write(f"waiting for {len(adopted)} run(s) still running from an earlier sweep")

    def done_units(job: Job) -> float:
        p = _read_json(out / job.name / PROGRESS)
        return min(float(p.get("done", 0.0)), job.total) if isinstance(p, dict) else 0.0

    def refresh(active: Sequence[Job], finished: Sequence[Job]) -> None:
        if bar is None:
            return
        units = sum(j.total for j in finished) + sum(done_units(j) for j in active)
        bar.set_postfix(done=f"{len(finished)}/{len(todo) + len(adopted)}",
                        failed=sum("error" in results[j.name] for j in finished),
                        refresh=False)
        if units > bar.n:
            bar.update(units - bar.n)

    finished: list[Job] = []

    def reap_adopted() -> None:
        """Collect the adopted jobs whose (earlier) worker has ended."""
        for job in list(adopted):
            d = out / job.name
            if live_worker(d) is None:
                res = _read_json(d / RESULT)
                ended = {"error": "the earlier worker ended without a result"}
                results[job.name] = res if isinstance(res, dict) else ended
                adopted.remove(job)
                finished.append(job)

    try:
        if n_jobs == 0:
            while adopted:
                reap_adopted()
                refresh(adopted, finished)
                time.sleep(1.0 if adopted else 0.0)
            for job in todo:
                d = out / job.name
                try:
                    run_worker(d, workers)  # type: ignore[arg-type]
                    results[job.name] = json.loads((d / RESULT).read_text())
                except Exception:  # noqa: BLE001 - a failed run is reported, the others go on
                    results[job.name] = {"error": traceback.format_exc()[-3000:]}
                finished.append(job)
                refresh([], finished)
        else:
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
                   "MPLBACKEND": "Agg"}
            pending = list(todo)
            running: dict[str, tuple[Job, subprocess.Popen, Any]] = {}
            previous = _stop_on_sigterm()
            try:
                while pending or running or adopted:
                    reap_adopted()
                    while pending and len(running) + len(adopted) < n_jobs:
                        job = pending.pop(0)
                        d = out / job.name
                        log = (d / LOG).open("w")
                        cmd = [sys.executable, str(script), "--worker", str(d)]
                        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
                        running[job.name] = (job, proc, log)
                    time.sleep(0.5)
                    for name, (job, proc, log) in list(running.items()):
                        rc = proc.poll()
                        if rc is None:
                            continue
                        log.close()
                        del running[name]
                        res = _read_json(out / name / RESULT)
                        if rc == 0 and isinstance(res, dict):
                            results[name] = res
                        else:
                            tail = (out / name / LOG).read_text()[-3000:]
                            results[name] = {"error": f"exit code {rc}\n{tail}"}
                            if bar is not None:
                                bar.write(f"{name} FAILED (exit code {rc}); log: {out / name / LOG}")
                        finished.append(job)
                    refresh([j for j, _, _ in running.values()] + adopted, finished)
            finally:  # interrupted (Ctrl-C, kill) or crashed: stop the workers we started
                for job, proc, log in running.values():
                    proc.terminate()
                for job, proc, log in running.values():
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                    log.close()
                if previous is not None:
                    import signal

                    signal.signal(signal.SIGTERM, previous)
    finally:
        if bar is not None:
            bar.close()
    return results


def _stop_on_sigterm() -> Optional[Any]:
    """Turn SIGTERM into SystemExit in the main thread, so that the workers are stopped too
    (a sweep started in the background with ``&`` ignores SIGINT; ``kill PID`` still works)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    return signal.signal(signal.SIGTERM, stop)


def script_main(main: Callable[[], int]) -> int:
    """Run a script's ``main``; a ValueError (bad input) is one clear line and exit code 2."""
    try:
        return main()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def failed(results: dict[str, dict]) -> list[str]:
    return [name for name, r in results.items() if "error" in r]


# ---------------------------------------------------------------------------------------------
# Worker side: one game, SAC


def finish(text: str, section: str, write_docs: bool, results: dict[str, dict], out: Path) -> int:
    """Print the report, write it to BENCHMARKS.md when asked; exit status 1 if any run failed."""
    print(text)
    if write_docs:
        update_benchmarks(section, text)
    bad = failed(results)
    if bad:
        print(f"{len(bad)} run(s) failed: {', '.join(bad)} (logs in {out}/<run>/log.txt)", file=sys.stderr)
        return 1
    return 0


def game_config(algo: str, task: str, seed: int, samples: int, overrides: Sequence[str]) -> Any:
    """The game's configuration: ``config/<algo>.yaml`` + per-task values + overrides."""
    from mbrl_ros.core.config import load_config

    return load_config(algo, task, [*overrides, f"seed={int(seed)}", f"samples={int(samples)}"])


def play_game(
    params: dict,
    job_dir: Path,
    hook: Optional[Callable[[Any, dict], Optional[dict]]] = None,
    game: Optional[Any] = None,
) -> dict:
    """Play one game (``params``: algo, task, seed, samples, overrides) in its simulated world.

    Every iteration's metrics go to ``metrics.jsonl`` and the progress file. ``hook(game,
    metrics)`` runs after each iteration (after its evaluation); a dict it returns is merged
    into that iteration's metrics (e.g. a world change, a model-error measurement). ``game``:
    a ready game (e.g. a StackelbergGame subclass) to play instead of a new one.
    Returns ``{"config", "history", "summary"}``.
    """
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.core.train import evaluated, make_world, success_milestones

    if game is None:
        cfg = game_config(params["algo"], params["task"], params["seed"], params["samples"],
                          params.get("overrides", []))
        game = StackelbergGame(cfg, make_world(cfg.task_id), make_world(cfg.task_id), params.get("device"))
    cfg = game.cfg
    progress = Progress(job_dir)
    metrics_path = Path(job_dir) / METRICS
    metrics_path.write_text("")
    history: list[dict] = []

    def on_iteration(m: dict) -> None:
        if hook is not None:
            m.update(hook(game, m) or {})
        history.append(m)
        with metrics_path.open("a") as f:
            f.write(json.dumps(m, default=_json_default) + "\n")
        progress.update(min(m["samples"], cfg.samples), iteration=m["iteration"], success=m["eval_success"])

    game.run(on_iteration)
    ev = evaluated(history)
    last = ev[-1] if ev else {}
    milestones = success_milestones(history)
    summary = {
        "algo": cfg.algo, "task": cfg.task_id, "seed": cfg.seed,
        "iterations": history[-1]["iteration"] if history else 0,
        "samples": game.samples, "final_success": last.get("eval_success"), "final_return": last.get("eval_return"),
        "final_error": last.get("eval_final_error"),
        "best_success": max((m["eval_success"] for m in ev), default=None),
        "samples_to_90": milestones["held"], "first_touch_90": milestones["first_touch"],
        "relapses": milestones["relapses"], "wall_s": round(game.wall_s, 1),
    }
    return {"config": cfg.to_dict(), "history": history, "summary": summary}


def eval_seeds(seed: int, episodes: int) -> list[int]:
    """The evaluation episodes of a task's games (the same for every seed; SAC uses them too)."""
    from mbrl_ros.core.world import evaluation_seeds

    return evaluation_seeds(int(episodes))


def run_sac(params: dict, job_dir: Path) -> dict:
    """Stable-Baselines3 SAC with its default settings on the task's Gymnasium world.

    ``params``: task, seed, samples, eval_every, eval_episodes (and optional sac_kwargs, and
    stop_success: end the run at the first evaluation that reaches it, which is all a
    samples-to-threshold figure needs: it ends once ``stop_success`` held for 3 evaluations).
    The deterministic policy is evaluated every
    ``eval_every`` samples (and at the end) on the same evaluation episodes a game of that seed
    uses. Returns ``{"history", "summary"}`` with history rows ``{"samples", "eval_success",
    "eval_return"}`` like a game's.
    """
    import torch
    from gymnasium.wrappers import TimeLimit
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    from mbrl_ros.core.train import HELD_EVALUATIONS, make_world, success_milestones
    from mbrl_ros.core.world import evaluate

    task, seed, budget = params["task"], int(params["seed"]), int(params["samples"])
    every, episodes = int(params["eval_every"]), int(params["eval_episodes"])
    stop = params.get("stop_success")
    if budget <= 0 or every <= 0 or episodes <= 0:
        raise ValueError("SAC needs samples, eval_every and eval_episodes > 0")
    if stop is not None and not 0.0 < float(stop) <= 1.0:
        raise ValueError(f"SAC stop_success must be in (0, 1], got {stop!r}")
    torch.manual_seed(seed)
    env, eval_env = make_world(task), make_world(task)
    seeds = eval_seeds(seed, episodes)
    progress = Progress(job_dir)
    history: list[dict] = []
    t0 = time.perf_counter()

    def record(model: Any, n: int) -> None:
        r = evaluate(eval_env, lambda o: model.predict(o, deterministic=True)[0], seeds)
        history.append({"samples": int(n), "eval_success": r["success"], "eval_return": r["return"],
                        "wall_s": time.perf_counter() - t0})
        progress.update(n, success=r["success"])

    class Evaluations(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % every == 0:
                record(self.model, self.num_timesteps)
                recent = history[-HELD_EVALUATIONS:]
                if stop is not None and len(recent) == HELD_EVALUATIONS and all(
                        h["eval_success"] >= float(stop) for h in recent):
                    return False  # SB3 ends learn() when a callback returns False
            return True

    model = SAC("MlpPolicy", TimeLimit(env, env.task.info.horizon), seed=seed, verbose=0, device="cpu",
                **params.get("sac_kwargs", {}))
    model.learn(total_timesteps=budget, callback=Evaluations())
    if not history or history[-1]["samples"] != model.num_timesteps:
        record(model, model.num_timesteps)
    last = history[-1]
    summary = {"algo": "sac", "task": task, "seed": seed, "samples": int(model.num_timesteps), "budget": budget,
               "final_success": last["eval_success"],
               "final_return": last["eval_return"], "best_success": max(h["eval_success"] for h in history),
               "samples_to_90": success_milestones(history)["held"],
               "first_touch_90": success_milestones(history)["first_touch"],
               "wall_s": round(time.perf_counter() - t0, 1)}
    return {"history": history, "summary": summary}


# ---------------------------------------------------------------------------------------------
# Curves over seeds


def step_values(xs: Sequence[float], ys: Sequence[float], grid: np.ndarray) -> np.ndarray:
    """The last value at or before each grid point (NaN before the first evaluation)."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError("xs and ys must be 1-D and of the same length")
    if len(xs) > 1 and np.any(np.diff(xs) < 0):
        raise ValueError("xs must be non-decreasing (samples of successive evaluations)")
    idx = np.searchsorted(xs, grid, side="right") - 1
    out = np.full(grid.shape, np.nan)
    ok = idx >= 0
    out[ok] = ys[idx[ok]]
    return out


def aggregate(runs: Sequence[Sequence[dict]], key: str, n_grid: int = 60, x_key: str = "samples") -> dict:
    """Mean, min, max and std over runs of ``key`` on a common sample grid.

    The grid spans from the latest first evaluation to the earliest last evaluation of the
    runs, so every point is covered by every run (no extrapolation past a run's budget). Also
    keeps the exact evaluation points when all runs share them (same config, no termination).
    """
    runs = [r for r in runs if r]
    if not runs:
        raise ValueError("aggregate needs at least one non-empty run")
    xs = [np.array([row[x_key] for row in r], dtype=float) for r in runs]
    ys = [np.array([np.nan if row.get(key) is None else row[key] for row in r], dtype=float) for r in runs]
    lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
    if all(len(x) == len(xs[0]) and np.array_equal(x, xs[0]) for x in xs):
        grid = xs[0]
    elif hi <= lo:
        grid = np.array([hi])
    else:
        inside = [x for x in np.concatenate(xs) if lo <= x <= hi]
        grid = np.unique(np.concatenate([np.linspace(lo, hi, n_grid), inside]))
    values = np.stack([step_values(x, y, grid) for x, y in zip(xs, ys)])
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            stats = {
                "mean": np.nanmean(values, 0), "min": np.nanmin(values, 0), "max": np.nanmax(values, 0),
                "std": np.nanstd(values, 0),
            }
    return {"samples": grid.tolist(), "n_runs": len(runs), **{k: _finite_list(v) for k, v in stats.items()}}


def _finite_list(v: np.ndarray) -> list[Optional[float]]:
    return [None if not math.isfinite(float(x)) else float(x) for x in v]


def final_stats(values: Sequence[Optional[float]]) -> dict:
    """Mean, min and max of per-seed final values (None entries ignored)."""
    v = [float(x) for x in values if x is not None]
    if not v:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)), "n": len(v)}


def fmt_stats(s: dict, digits: int = 2) -> str:
    """``mean (min..max)`` for a table cell."""
    if not s or s.get("mean") is None:
        return "n/a"
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"


# ---------------------------------------------------------------------------------------------
# Figures and reports


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_band(ax: Any, band: dict, label: str, color: Optional[str] = None, marker: Optional[str] = None) -> None:
    """Mean line and min..max band of an :func:`aggregate` result."""
    x = np.asarray(band["samples"], dtype=float)
    f = lambda k: np.array([np.nan if v is None else v for v in band[k]], dtype=float)
    n = band["n_runs"]
    ax.plot(x, f("mean"), color=color, label=f"{label} (n={n})", marker=marker, ms=3, lw=1.6)
    if n > 1:
        ax.fill_between(x, f("min"), f("max"), color=color, alpha=0.18, lw=0, step=None)


def update_benchmarks(section: str, markdown: str) -> None:
    """Replace this experiment's own section of BENCHMARKS.md."""
    from bench._report import update_section

    update_section(section, markdown)


def relpath(path: Union[str, Path]) -> str:
    """A path relative to the repository root when it is inside it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def copy_figure(src: Union[str, Path], name: str) -> Path:
    """Copy a PNG into docs/figures/ (the documentation's copy of a final figure)."""
    import shutil

    dst = ROOT / "docs" / "figures" / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst
