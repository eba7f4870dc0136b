"""Samples to 90% success (held): the six Stackelberg games vs Stable-Baselines3 SAC.

Each (algorithm, seed) is one ``mbrl-ros train`` run (a subprocess, ``--jobs`` at a time). The
protocol (issue "Learning that holds"):

- every run of a task is evaluated on the same evaluation episodes (start states and targets
  fixed by the task, ``mbrl_ros.core.world.evaluation_seeds``; 50 of them), with the
  deterministic policy, success at the final step. A task whose resets are deterministic (D'Claw
  turn fixed) has one evaluation episode, played once; its final valve-angle error is reported
  beside success;
- "samples to 90%" = real samples at the first of 3 consecutive evaluations at >= 90% (held);
  the first touch of 90% and the relapses after it are reported too;
- evaluation episodes are not real samples (as in the paper's code).

SAC (SB3 defaults) is evaluated the same way every ``--sac-eval-every`` samples and stops once
90% held; when it never does within its budget, the SAC/PAL ratio is a lower bound. Finished
runs (games and SAC) are reused. The per-iteration time split (model fit / NPG / collection /
evaluation) comes from the runs' metrics.

    .venv/bin/python -m bench.bench_sample_efficiency --quick            # pipeline check (point mass)
    .venv/bin/python -m bench.bench_sample_efficiency --algos pal,mal --seeds 5 --budget 15000 --jobs 2
    .venv/bin/python -m bench.bench_sample_efficiency --algos pal,mal,gda --seeds 5,gda=1 --budget 20000,mal=30000

Writes the BENCHMARKS.md section "sample_efficiency" (other tasks: "sample_efficiency_<task>")
and ``<out>/results.json``; ``--figure`` plots success vs samples, mean and min..max over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Union

ROOT = Path(__file__).resolve().parent.parent
from bench._report import command_line, publish
from experiments import common

ALGOS = ["pal", "mal", "gda", "br", "mal-agent-reward", "mal-noise"]
THRESHOLD = 0.9
QUICK_SET = ["model_hidden=[64,64]", "npg_trajectories=50", "eval_episodes=10", "n_init=400", "samples_per_iter=200",
             "buffer_size=800", "model_epochs_aggressive=50"]


def run_game(algo: str, task: str, seed: int, budget: int, out: Path, overrides: list[str], threads: str,
             run: bool = True) -> Optional[dict]:
    """One training run in a subprocess; returns its metrics and summary (None: not run, ``run=False``)."""
    run_dir = out / f"{algo}-{task}-s{seed}"
    if (run_dir / "summary.json").exists():  # finished earlier: reuse (delete the folder to rerun)
        summary = json.loads((run_dir / "summary.json").read_text())
    elif not run:
        return None
    else:
        cmd = [sys.executable, "-m", "mbrl_ros.cli", "train", "--algo", algo, "--task", task, "--samples", str(budget),
               "--seed", str(seed), "--out", str(run_dir), "--no-progress", "--threads", str(threads)]
        for kv in overrides:
            cmd += ["--set", kv]
        t0 = time.time()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            return {"algo": algo, "seed": seed, "error": proc.stderr[-2000:], "wall_s": time.time() - t0}
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"algo": algo, "seed": seed, "summary": summary, "metrics": rows}


def run_sac(task: str, seed: int, budget: int, eval_every: int, eval_episodes: int, threads: str, out: Path,
            quick: bool, run: bool = True) -> Optional[dict]:
    """SB3 SAC (default settings) in a worker subprocess (experiments/common.run_sac): evaluated
    every ``eval_every`` samples on the games' evaluation episodes, ended once 90% held. A
    finished run with the same settings is reused."""
    params = {"task": task, "seed": seed, "samples": budget, "eval_every": eval_every,
              "eval_episodes": eval_episodes, "stop_success": THRESHOLD,
              "threads": 1 if str(threads) == "auto" else int(threads)}
    if quick:
        params["sac_kwargs"] = {"learning_starts": min(1000, budget // 10)}
    job = common.Job(f"sac-{task}-s{seed}", "sac", params, total=budget)
    r = common.run_jobs(__file__, [job], out, n_jobs=1, progress=False, run=run).get(job.name)
    if r is None:
        return None
    if "error" in r:
        return {"seed": seed, "error": r["error"]}
    return {"seed": seed, "curve": [(h["samples"], h["eval_success"], h["eval_return"]) for h in r["history"]],
            "samples_to_90": r["summary"]["samples_to_90"], "first_touch_90": r["summary"].get("first_touch_90"),
            "budget": budget, "wall_s": r["summary"]["wall_s"], "wall_to_90": wall_to(r["history"]),
            "final_success": r["summary"]["final_success"], "final_return": r["summary"]["final_return"]}


def samples_to(rows: list[dict], threshold: float = THRESHOLD) -> Optional[int]:
    """Real samples at the first of 3 consecutive evaluations >= threshold (held)."""
    from mbrl_ros.core.train import success_milestones

    return success_milestones(rows, threshold)["held"]


def wall_to(rows: list[dict], threshold: float = THRESHOLD) -> Optional[float]:
    """Training wall-clock seconds (the run's own ``wall_s``) where 90% was first held."""
    held = samples_to(rows, threshold)
    return next((r["wall_s"] for r in rows if r["samples"] == held), None) if held is not None else None


def curve_on_grid(rows: list[dict], grid: list[int]) -> list[float]:
    """Evaluation success at each grid point: the last evaluation at or before it (NaN before the
    first). A run that stopped once 90% held keeps its last value."""
    ev = [(r["samples"], r["eval_success"]) for r in rows if r.get("eval_success") is not None]
    out, j, last = [], 0, math.nan
    for x in grid:
        while j < len(ev) and ev[j][0] <= x:
            last = ev[j][1]
            j += 1
        out.append(last)
    return out


def plot_curves(results: list[dict], sac: list[dict], task: str, path: Path) -> None:
    """Evaluation success vs real samples: mean (line) and min..max (band) over seeds, per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups: dict[str, list[list[dict]]] = {}
    for r in results:
        if "error" not in r:
            groups.setdefault(r["algo"].upper(), []).append(r["metrics"])
    for r in sac:
        groups.setdefault("SAC", []).append([{"samples": x, "eval_success": s} for x, s, _r in r["curve"]])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    top = max((rows[-1]["samples"] for runs in groups.values() for rows in runs), default=1)
    for i, (name, runs) in enumerate(groups.items()):
        last = max(rows[-1]["samples"] for rows in runs)
        grid = list(np.linspace(min(rows[0]["samples"] for rows in runs), last, 200).astype(int))
        ys = np.array([curve_on_grid(rows, grid) for rows in runs])
        ok = ~np.all(np.isnan(ys), axis=0)
        g, ys = np.asarray(grid)[ok], ys[:, ok]
        ax.plot(g, np.nanmean(ys, 0), color=f"C{i}", label=f"{name} ({len(runs)} seeds)")
        ax.fill_between(g, np.nanmin(ys, 0), np.nanmax(ys, 0), color=f"C{i}", alpha=0.2, lw=0)
    ax.axhline(THRESHOLD, color="grey", ls=":", lw=1)
    # a SAC budget ten times the games' shows on a log axis, and the label says so
    log_x = "SAC" in groups and top > 10 * min(r[-1]["samples"] for k, v in groups.items() if k != "SAC" for r in v)
    ax.set(ylim=(-0.05, 1.05), xlabel="real samples" + (" (log scale)" if log_x else ""),
           ylabel="eval success (final step)", title=f"{task}: mean and min..max over seeds")
    if log_x:
        ax.set_xscale("log")
    ax.legend(loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_algo(text: str, algos: list[str], what: str) -> dict[str, int]:
    """``"20000"`` -> every algorithm; ``"20000,mal=30000"`` -> MAL 30000, the others 20000."""
    default: Optional[int] = None
    out: dict[str, int] = {}
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        key, _, value = part.rpartition("=")
        try:
            n = int(value)
        except ValueError:
            raise SystemExit(f"--{what}: {part!r} is not N or ALGO=N") from None
        if n <= 0:
            raise SystemExit(f"--{what}: {part!r} must be > 0")
        if not key:
            default = n
        elif key not in ALGOS:
            raise SystemExit(f"--{what}: unknown algorithm {key!r} (known: {', '.join(ALGOS)})")
        else:
            out[key] = n
    missing = [a for a in algos if a not in out and default is None]
    if missing:
        raise SystemExit(f"--{what} gives no value for {', '.join(missing)}")
    return {a: out.get(a, default) for a in algos}  # type: ignore[misc]


def median_or_bound(values: list[Optional[int]], limits: Union[int, list[int]]) -> tuple[float, bool, str]:
    """Median samples-to-90 over seeds: ``(value, is_lower_bound, text)``.

    A seed that never got there counts as "more than its limit" (its budget, or the samples at
    which it was stopped): the median is exact when it does not depend on how much more, else
    ``value`` is a lower bound (``>20000`` when the median seed itself never got there).
    """
    limits = [limits] * len(values) if isinstance(limits, int) else limits
    low_each = [(v, False) if v is not None else (lim, True) for v, lim in zip(values, limits)]
    ordered = sorted(low_each, key=lambda x: (x[0] + (0.5 if x[1] else 0.0)))
    high = statistics.median(v if v is not None else math.inf for v in values)
    if len(ordered) % 2 == 1:
        value, beyond = ordered[len(ordered) // 2]
        low = value + (0.5 if beyond else 0.0)
    else:
        low = statistics.median(x[0] + (0.5 if x[1] else 0.0) for x in ordered)
        value, beyond = low, False
    if low == high:
        return low, False, f"{low:.0f}"
    return low, True, (f">{value}" if beyond else f">={low:.0f}")


def seed_text(hit: Optional[int], limit: int, stopped: bool) -> str:
    return str(hit) if hit is not None else f">{limit}{' (stopped)' if stopped else ''}"


def time_split(rows: list[dict]) -> dict:
    it = [r for r in rows if r["iteration"] > 0]
    if not it:
        return {}
    keys = ["fit_s", "npg_s", "collect_s", "eval_s"]
    total = statistics.mean(r["iteration_s"] for r in it)
    return {"iteration_s": total, **{k: statistics.mean(r.get(k) or 0.0 for r in it) for k in keys}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algos", default=",".join(ALGOS), help="comma list of algorithms (and/or 'sac')")
    ap.add_argument("--task", default="dclaw-turn-fixed")
    ap.add_argument("--seeds", default="3", help="seeds per game: N, or N,ALGO=N,... (e.g. 3,gda=1)")
    ap.add_argument("--budget", default="20000",
                    help="real-sample budget of each game run: N, or N,ALGO=N,... (e.g. 20000,mal=30000)")
    ap.add_argument("--sac", action="store_true", help="also run SAC (default: on unless --algos excludes it)")
    ap.add_argument("--no-sac", action="store_true")
    ap.add_argument("--first-seed", type=int, default=0,
                    help="seeds run from here (e.g. 5 with --seeds 5: seeds 5-9, a check on seeds not tuned on)")
    ap.add_argument("--sac-budget", type=int, default=100000)
    ap.add_argument("--sac-eval-every", type=int, default=5000)
    ap.add_argument("--sac-seeds", type=int, default=None, help="SAC seeds (default: --seeds)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--jobs", type=int, default=1, help="parallel runs")
    ap.add_argument("--figure", default=None, metavar="PNG", help="also plot success vs samples to this file")
    ap.add_argument("--threads", default="1", help="torch threads per run: N or auto (default 1: one run per core)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_sample_efficiency"))
    ap.add_argument("--quick", action="store_true", help="point mass, 1 seed, small budgets: checks the pipeline")
    ap.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true", help="run nothing: the table from the finished runs in --out")
    ap.add_argument("--variant", default=None, metavar="LABEL",
                    help="a second configuration of the same task (e.g. an ablation): its own BENCHMARKS section")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one SAC run
    args = ap.parse_args()
    if args.worker:
        return common.worker_main(args.worker, {"sac": common.run_sac})

    algos = [a for a in args.algos.split(",") if a and a != "sac"]
    with_sac = (not args.no_sac) and ("sac" in args.algos.split(",") or args.sac or args.algos == ",".join(ALGOS))
    overrides = list(args.overrides)
    eval_episodes = 50
    if args.quick:
        args.task, args.seeds, args.budget = "pointmass", "1", "2000"
        args.sac_budget, args.sac_eval_every = 4000, 1000
        overrides = QUICK_SET + overrides
        eval_episodes = 10
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    seeds = per_algo(args.seeds, algos + ["pal"], "seeds")  # "pal" only for SAC's default seed count
    budgets = per_algo(args.budget, algos, "budget")
    jobs = [(a, s) for a in algos for s in range(args.first_seed, args.first_seed + seeds[a])]
    sac_seeds = list(range(args.sac_seeds if args.sac_seeds is not None else seeds["pal"])) if with_sac else []
    print(f"{len(jobs)} game runs and {len(sac_seeds)} SAC runs on {args.task}, budgets {budgets} "
          f"(SAC {args.sac_budget}), {args.jobs} at a time", flush=True)
    results: list[dict] = []
    sac: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # each thread waits on one subprocess
        run = not args.report_only
        futures = [pool.submit(run_game, a, args.task, s, budgets[a], out, overrides, args.threads, run)
                   for a, s in jobs]
        sac_futures = [pool.submit(run_sac, args.task, s, args.sac_budget, args.sac_eval_every, eval_episodes,
                                   args.threads, out, args.quick, run) for s in sac_seeds]
        for (algo, seed), f in zip(jobs, futures):
            r = f.result()
            if r is None:
                print(f"  {algo} seed {seed}: not finished in {out}, left out", flush=True)
                continue
            results.append(r)
            if "error" in r:
                print(f"  {r['algo']} seed {r['seed']}: FAILED\n{r['error']}", flush=True)
            else:
                s = r["summary"]
                print(f"  {r['algo']} seed {r['seed']}: samples_to_90={samples_to(r['metrics'])} "
                      f"final_success={s['final_success']:.2f} wall={s['wall_s']:.0f}s", flush=True)
        for seed, f in zip(sac_seeds, sac_futures):
            r = f.result()
            if r is None:
                print(f"  sac seed {seed}: not finished in {out}, left out", flush=True)
                continue
            if "error" in r:
                print(f"  sac seed {r['seed']}: FAILED\n{r['error']}", flush=True)
                continue
            sac.append(r)
            print(f"  sac seed {r['seed']}: samples_to_90={r['samples_to_90']} final_success={r['final_success']} "
                  f"wall={r['wall_s']:.0f}s", flush=True)

    # -- table -----------------------------------------------------------------------------
    from mbrl_ros.core.train import evaluated, success_milestones

    cfg0 = next((json.loads((out / f"{r['algo']}-{args.task}-s{r['seed']}" / "config.json").read_text())
                 for r in results if "error" not in r), {})
    n_eval = cfg0.get("eval_episodes", eval_episodes)
    deterministic = args.task == "dclaw-turn-fixed"
    # a variant whose only overrides are the stopping rule runs the defaults: its label names runs, not a setting
    defaults_only = all(kv.split("=", 1)[0] in ("stop_success", "stop_success_iters") for kv in overrides)
    variant_txt = ("" if not args.variant else
                   f"**Runs `{args.variant}`** (the task's defaults; the label only names these runs). "
                   if defaults_only else
                   f"**Variant `{args.variant}`** (a configuration compared with the default; overrides below). ")
    lines = [
        variant_txt
        + f"Task `{args.task}`, real-sample budget and seeds per game as in the table"
        f"{' (QUICK pipeline check on the point mass, not a result)' if args.quick else ''}. "
        + (f"Evaluation: the deterministic policy on the task's fixed evaluation episodes ({n_eval}, the same "
           "for every run and algorithm), success at the final step"
           + ("; this task resets deterministically, so its evaluation episodes are all one episode, played "
              "once, and the final valve-angle error is reported beside success" if deterministic else "")
           + f", every {cfg0.get('eval_every', 1)} iteration(s). ")
        + "Samples to 90% = the real samples at the first of 3 consecutive evaluations at >= 90% (held); "
        "per seed: held (first touch, relapses after it). Evaluation episodes are not counted as real samples "
        f"(as in the paper's code). Overrides: `{' '.join(overrides) or 'none'}`.",
        "",
        "| algorithm | budget | samples to 90% held (median) | per seed: held (first touch, relapses) "
        "| wall s to 90% per seed | final success (median) | final goal error per seed | iteration s "
        "| fit / NPG / collect / eval s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    medians: dict[str, tuple[float, bool]] = {}
    for algo in algos:
        runs = [r for r in results if r["algo"] == algo and "error" not in r]
        if not runs:
            tried = any(r["algo"] == algo for r in results)
            lines.append(f"| {algo} | {budgets[algo]} | {'failed' if tried else 'not run'} | | | | | | |")
            continue
        miles = [success_milestones(r["metrics"]) for r in runs]
        per_seed = [m["held"] for m in miles]
        # a run stopped by hand (SIGTERM) before its budget is only known to need more than it played
        stopped = ["stopped_by" in r["summary"] and r["summary"].get("samples_to_90") is None for r in runs]
        limits = [int(r["summary"]["samples"]) if st else budgets[algo] for r, st in zip(runs, stopped)]
        med, bound, med_txt = median_or_bound(per_seed, limits)
        medians[algo] = (med, bound)
        finals = statistics.median(evaluated(r["metrics"])[-1]["eval_success"] for r in runs)
        errors = [evaluated(r["metrics"])[-1].get("eval_final_error") for r in runs]
        split = [time_split(r["metrics"]) for r in runs]
        split = [s for s in split if s]
        ts = {k: statistics.mean(s[k] for s in split) for k in split[0]} if split else {}
        seeds_txt = ", ".join(
            f"{seed_text(v, lim, st)} ({m['first_touch'] if m['first_touch'] is not None else '-'}, {m['relapses']})"
            for v, lim, st, m in zip(per_seed, limits, stopped, miles))
        split_txt = (f"{ts['fit_s']:.1f} / {ts['npg_s']:.1f} / {ts['collect_s']:.1f} / {ts['eval_s']:.1f}"
                     if ts else "")
        walls = [wall_to(r["metrics"]) for r in runs]
        walls_txt = ", ".join(f"{w:.0f}" if w is not None else "-" for w in walls)
        err_txt = ", ".join(f"{e:.3f}" if e is not None else "-" for e in errors)
        lines.append(f"| {algo} | {budgets[algo]} | {med_txt} | {seeds_txt} | {walls_txt} | {finals:.2f} | {err_txt} "
                     f"| {ts.get('iteration_s', 0):.1f} | {split_txt} |")
    if sac:
        per_seed = [r["samples_to_90"] for r in sac]
        sac_med, sac_bound, _txt = median_or_bound(per_seed, args.sac_budget)
        finals = statistics.median(r["final_success"] or 0.0 for r in sac)
        seeds_txt = ", ".join(str(v) if v is not None else f">{args.sac_budget}" for v in per_seed)
        walls_txt = ", ".join(f"{r['wall_to_90']:.0f}" if r["wall_to_90"] is not None else "-" for r in sac)
        lines.append(f"| SAC (SB3 defaults, {len(sac)} seed(s)) | {args.sac_budget} "
                     f"| {'>' + str(args.sac_budget) if sac_bound else f'{sac_med:.0f}'} | {seeds_txt} "
                     f"| {walls_txt} | {finals:.2f} | | | |")
    # the ratios follow the table (a line between its rows would end the Markdown table)
    if "pal" in medians and not medians["pal"][1]:  # the others against PAL ("MAL within 2x of PAL")
        pal_med = medians["pal"][0]
        ratios = [f"{a} {'>=' if b else ''}{m / pal_med:.2f}x" for a, (m, b) in medians.items() if a != "pal"]
        if ratios:
            lines += ["", f"Samples to 90% (medians) relative to PAL: {', '.join(ratios)}."]
        if sac:
            ratio = (args.sac_budget if sac_bound else sac_med) / pal_med
            lines += ["", f"SAC / PAL samples to 90%: {'>= ' if sac_bound else ''}{ratio:.1f}x"
                          f"{' (lower bound: SAC never reached 90% within its budget)' if sac_bound else ''}."]
    lines += ["", f"Command: `{command_line()}`.",
              "The machine may have been shared with other jobs while this ran: wall times are upper bounds."]
    if args.figure:
        plot_curves(results, sac, args.task, Path(args.figure))
        lines += ["", f"![sample efficiency]({args.figure})"]
    (out / "results.json").write_text(json.dumps({"games": results, "sac": sac}, default=str))
    # turn fixed keeps the section it always had; another task gets its own
    section = "sample_efficiency" if args.task == "dclaw-turn-fixed" else f"sample_efficiency_{args.task}"
    if args.variant:
        section += f"_{args.variant}"
    publish(section.replace("-", "_"), "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
