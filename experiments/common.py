"""Shared machinery of the robot-task experiments (learning curves, non-stationarity, model error).

- Jobs: :mod:`experiments.jobs` (re-exported here): every (algorithm, task, seed) run is one
  :class:`Job`, run by the experiment's own module in a worker subprocess
  (``python -m experiments.x --worker JOB_DIR``), JSON in and out, resumable; ``--jobs 0`` runs
  the jobs in this process (debugging, tests). Workers report progress (:class:`Progress`).
- Games: :func:`play_game` plays one Stackelberg game (``mbrl_ros.core.stackelberg``) in its
  simulated world with a per-iteration hook (change the world mid-run, measure the model).
- SAC: :func:`run_sac` trains Stable-Baselines3 SAC (defaults) on the same Gymnasium world and
  evaluates it exactly as the games are evaluated (deterministic policy, success at the final
  step, the same evaluation episodes).
- Curves: :func:`aggregate` puts runs evaluated at different sample counts on one grid (the
  last evaluation at or before each grid point) and returns mean, min, max and std over seeds;
  :func:`plot_band` draws it.
- Reports: :func:`write_json`, :func:`update_benchmarks` (BENCHMARKS.md via bench/_report.py).

Run the scripts as modules from the repository root: ``.venv/bin/python -m experiments.learning_curves``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from bench._report import command_line  # noqa: F401  (re-exported: the experiments' Command lines, as the benches')
from experiments.jobs import (  # noqa: F401  (re-exported: the scripts and tests use common.*)
    LOG,
    METRICS,
    PID,
    PROGRESS,
    RESULT,
    ROOT,
    SPEC,
    Job,
    Progress,
    Worker,
    _json_default,
    _read_json,
    live_worker,
    run_jobs,
    run_worker,
    worker_main,
    write_json,
)

ALGO_COLORS = {"pal": "tab:blue", "mal": "tab:orange", "gda": "tab:green", "br": "tab:red", "sac": "tab:purple",
               "mal-agent-reward": "tab:brown", "mal-noise": "tab:pink"}
ALGO_LABELS = {"pal": "PAL", "mal": "MAL", "gda": "GDA", "br": "BR", "sac": "SAC (SB3)",
               "mal-agent-reward": "MAL + agent reward", "mal-noise": "MAL + noise"}


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

    def f(k: str) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in band[k]], dtype=float)

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
