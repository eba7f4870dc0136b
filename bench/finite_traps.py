"""The poster's finding over a family of finite trap MDPs: how often plain MAL is fooled, and how
often PAL and each MAL fix recover, in the bilevel and the practical formulation, with one set of
defaults for the whole family.

    .venv/bin/python -m bench.finite_traps                    # 50 MDPs, table -> BENCHMARKS.md
    .venv/bin/python -m bench.finite_traps --jobs 2           # in 2 worker processes
    .venv/bin/python -m bench.finite_traps --quick            # smoke run (no BENCHMARKS.md update)
    .venv/bin/python -m bench.finite_traps --sweep --mdps 20  # alpha, tau and prior around the defaults

Each family member is ``trap_mdp(seed)`` (mbrl_ros/core/finite_traps.py). A run's score is its
final exact return normalised to 0 at the tempting value (the best return that never enters the
region) and 1 at the optimum. Fooled: score < 0.1. Recovered: score >= 0.9.
Writes results.json to --out (default runs/finite_traps/) and the table to BENCHMARKS.md, section
"finite_traps" ("finite_traps_sweep" with --sweep). Workers are subprocesses that answer one
JSON line per run (nothing is pickled).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from mbrl_ros.core.finite import run_game  # noqa: E402
from mbrl_ros.core.finite_traps import trap_mdp  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ALGOS = ("pal", "mal", "mal-agent-reward", "mal-noise")
LABELS = {"pal": "PAL", "mal": "MAL", "mal-agent-reward": "MAL + agent reward", "mal-noise": "MAL + random noise"}
FOOLED, RECOVERED = 0.1, 0.9
# the agent-reward term before this bench existed: J_tau with tau in absolute reward units, unscaled
OLD_AGENT_REWARD = {"agent_reward": "raw", "tau": 1.0}


def experiments(iterations: dict[str, int]) -> list[dict]:
    """(formulation, algo, variant, options) of every row of the table."""
    rows = []
    for formulation in ("bilevel", "practical"):
        base = {"iterations": iterations[formulation]}
        for algo in ALGOS:
            rows.append({"formulation": formulation, "algo": algo, "variant": "", "options": dict(base)})
    # the agent-reward term before this bench (bilevel only: the exact game shows the mechanism)
    rows.append({"formulation": "bilevel", "algo": "mal-agent-reward",
                 "variant": "the old term: raw J_tau, tau = 1 in reward units",
                 "options": {"iterations": iterations["bilevel"]} | OLD_AGENT_REWARD})
    return rows


def sweep(iterations: dict[str, int]) -> list[dict]:
    """Rows around the defaults (``--sweep``): do the results hang on one value of alpha, tau or the prior?"""
    b, p = {"iterations": iterations["bilevel"]}, {"iterations": iterations["practical"]}
    rows = [{"formulation": "bilevel", "algo": "mal-agent-reward", "variant": f"alpha = {a}", "options": b | {"alpha": a}}
            for a in (0.5, 0.99)]
    rows += [{"formulation": "bilevel", "algo": "mal-agent-reward", "variant": f"tau = {t}", "options": b | {"tau": t}}
             for t in (0.3, 3.0)]
    rows.append({"formulation": "practical", "algo": "mal-noise", "variant": "alpha = 0.9 (10 random samples per iteration)",
                 "options": p | {"alpha": 0.9}})
    rows += [{"formulation": f, "algo": "mal", "variant": "uniform model prior", "options": o | {"model_prior": "uniform"}}
             for f, o in (("bilevel", b), ("practical", p))]
    return rows


def run_task(task: dict) -> dict:
    world = trap_mdp(task["mdp"])
    t0 = time.perf_counter()
    res = run_game(world.mdp, task["algo"], seed=task["seed"], formulation=task["formulation"], **task["options"])
    out = {k: task[k] for k in ("mdp", "seed", "formulation", "algo", "variant")}
    out.update(final=res.real_return, score=world.score(res.real_return), model_return=res.model_return,
               optimal=world.optimal_value, tempting=world.tempting_value, samples=res.samples,
               seconds=time.perf_counter() - t0)
    return out


def run_all(tasks: list[dict], jobs: int) -> list[dict]:
    """Run every task with a progress bar, in ``jobs`` worker subprocesses (or in-process)."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="trap MDPs", unit="run")
    if jobs <= 1:
        results = []
        for t in tasks:
            results.append(run_task(t))
            bar.update()
        bar.close()
        return results
    chunks = [tasks[i::jobs] for i in range(jobs)]
    procs = [subprocess.Popen([sys.executable, "-m", "bench.finite_traps", "--worker"], cwd=ROOT,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for c in chunks if c]
    for p, c in zip(procs, chunks):
        p.stdin.write(json.dumps(c))
        p.stdin.close()
    # one reader thread per worker: each line it prints is one finished run
    lines: queue.Queue = queue.Queue()

    def read(stream) -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    for p in procs:
        threading.Thread(target=read, args=(p.stdout,), daemon=True).start()
    results = []
    running = len(procs)
    while running:
        line = lines.get()
        if line is None:
            running -= 1
            continue
        results.append(json.loads(line))
        bar.update()
    bar.close()
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError(f"worker failed with exit code {p.returncode}")
    return results


def summarise(results: list[dict]) -> list[dict]:
    rows: dict[tuple, list[dict]] = {}
    for r in results:
        rows.setdefault((r["formulation"], r["algo"], r["variant"]), []).append(r)
    table = []
    order = {e: i for i, e in enumerate(("bilevel", "practical") + ALGOS)}
    for (formulation, algo, variant), rs in sorted(rows.items(), key=lambda kv: (order[kv[0][0]], bool(kv[0][2]),
                                                                                 order[kv[0][1]])):
        s = np.array([r["score"] for r in rs])
        table.append({"formulation": formulation, "algo": algo, "variant": variant, "n": len(rs),
                      "fooled": float((s < FOOLED).mean()), "recovered": float((s >= RECOVERED).mean()),
                      "mean": float(s.mean()), "median": float(np.median(s)), "min": float(s.min()),
                      "samples": int(np.mean([r["samples"] for r in rs])),
                      "seconds": float(np.mean([r["seconds"] for r in rs]))})
    return table


def family_summary(n: int) -> str:
    worlds = [trap_mdp(m) for m in range(n)]
    p = [w.params for w in worlds]

    def rng(key: str, fmt: str = "{:.2g}") -> str:
        v = [q[key] for q in p]
        return f"{fmt.format(min(v))}-{fmt.format(max(v))}"

    S = [w.mdp.n_states for w in worlds]
    lure = sum(q["tempting_kind"] == "lure" for q in p)
    at_start = sum(q["door_pos"] == 0 for q in p)
    ratio = [w.optimal_value / max(abs(w.tempting_value), 1e-9) for w in worlds]
    return (f"{n} MDPs `trap_mdp(0..{n - 1})`: {min(S)}-{max(S)} states, {rng('n_actions', '{}')} actions, "
            f"corridor {rng('corridor', '{}')} cells, door at position {rng('door_pos', '{}')} "
            f"({at_start} at the start state), region {rng('region_size', '{}')} states, slip {rng('slip')}, "
            f"horizon {rng('horizon', '{}')}, reward scale {rng('reward_scale')}, tempting action "
            f"{n - lure} exit / {lure} lure; optimum / tempting value {min(ratio):.1f}-{max(ratio):.1f} "
            f"(median {np.median(ratio):.1f}).")


def markdown(table: list[dict], n_mdps: int, seeds: int, iterations: dict[str, int], wall: float, cmd: str,
             jobs: int) -> str:
    lines = [
        family_summary(n_mdps),
        "",
        f"One run per MDP and game seed ({seeds} seed{'s' if seeds > 1 else ''}), defaults of `run_game` unless a "
        f"variant says otherwise; bilevel {iterations['bilevel']} iterations, practical {iterations['practical']} "
        f"(N = 100 real transitions each). Score: final exact return, 0 at the tempting value, 1 at the optimum. "
        f"Fooled: score < {FOOLED}; recovered: score >= {RECOVERED}.",
        "",
        "| formulation | algorithm | variant | fooled | recovered | mean score | median | worst | real samples | s / run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        samples = f"{t['samples']:,}" if t["formulation"] == "practical" else "exact"
        lines.append(f"| {t['formulation']} | {LABELS[t['algo']]} | {t['variant']} | {t['fooled']:.0%} "
                     f"| {t['recovered']:.0%} | {t['mean']:.2f} | {t['median']:.2f} | {t['min']:.2f} | {samples} "
                     f"| {t['seconds']:.1f} |")
    n_runs = sum(t["n"] for t in table)
    lines += ["", f"`{cmd}` ({n_runs} runs, {wall:.0f} s wall with --jobs {jobs})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mdps", type=int, default=50, help="family members trap_mdp(0..n-1)")
    parser.add_argument("--seeds", type=int, default=1, help="game seeds per MDP")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--bilevel-iterations", type=int, default=40)
    parser.add_argument("--practical-iterations", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("runs/finite_traps"), help="results.json goes here")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 MDPs, few iterations, no report")
    parser.add_argument("--sweep", action="store_true",
                        help="only rows around the defaults (alpha, tau, prior), to section finite_traps_sweep")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        for t in json.loads(sys.stdin.read()):
            print(json.dumps(run_task(t)), flush=True)
        return 0
    if min(args.mdps, args.seeds, args.jobs) < 1:
        raise SystemExit("--mdps, --seeds and --jobs must be >= 1")
    n_mdps = 4 if args.quick else args.mdps
    iterations = {"bilevel": 8 if args.quick else args.bilevel_iterations,
                  "practical": 6 if args.quick else args.practical_iterations}
    rows = sweep(iterations) if args.sweep else experiments(iterations)
    tasks = [dict(e, mdp=m, seed=s) for m in range(n_mdps) for s in range(args.seeds) for e in rows]
    t0 = time.perf_counter()
    results = run_all(tasks, args.jobs)
    wall = time.perf_counter() - t0
    table = summarise(results)
    cmd = ("python -m bench.finite_traps" + (" --sweep" if args.sweep else "") + (" --quick" if args.quick else f" --mdps {n_mdps} --seeds {args.seeds}")
           + (f" --bilevel-iterations {args.bilevel_iterations}" if args.bilevel_iterations != 40 else "")
           + (f" --practical-iterations {args.practical_iterations}" if args.practical_iterations != 30 else ""))
    text = markdown(table, n_mdps, args.seeds, iterations, wall, cmd, args.jobs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"table": table, "runs": results}, indent=1))
    print(text)
    if not args.quick:
        from bench._report import update_section

        section = "finite_traps_sweep" if args.sweep else "finite_traps"
        update_section(section, text)
        print(f"wrote BENCHMARKS.md section {section}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
