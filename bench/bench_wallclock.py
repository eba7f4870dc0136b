"""Where the time of an iteration goes: the per-iteration split of the in-process games, alone
and beside a competing CPU-bound process.

For each game (``--games algo:task,...``) the configuration of ``config/<algo>.yaml`` plays
``--iterations`` iterations after its initial collection (and, for MAL, the initial model M_0),
and the mean of each iteration's split is reported: model fit, NPG, collection, evaluation
(amortised over ``eval_every``), the rest (gate, deploy, bookkeeping), and the torch threads the
core budget chose (``--threads auto``). With ``--load`` every game is played again while another
process spins on one core (``python -c 'while True: pass'``), the situation of a learner
sharing its computer with a collector or ROS. With ``--paper`` the paper's hyper-parameters
(the defaults before the speed work: 4 x MLP(512, 512), 400 gradient steps per PAL fit, 200
start states per NPG step, 10 CG iterations) are measured as well, on the same code.

    .venv/bin/python -m bench.bench_wallclock [--games pal:dclaw-turn-fixed,mal:dclaw-turn-fixed,pal:dkitty-orient-random]
        [--iterations 6] [--load] [--paper] [--no-report]

Writes the BENCHMARKS.md section "wallclock". The in-process loop only: the graph's robot duty
cycle is measured by ``bench/bench_graph.py --duty-cycle``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
from bench._report import command_line, publish

DEFAULT_GAMES = "pal:dclaw-turn-fixed,mal:dclaw-turn-fixed,pal:dkitty-orient-random"
# The defaults before the speed work (the paper's sizes): measured on the same code for comparison.
PAPER = ["model_hidden=[512,512]", "npg_trajectories=200", "cg_iters=10"]
PAPER_PAL_DCLAW = ["model_max_steps=400"]
TARGETS = {"pal:dclaw-turn-fixed": 5.0, "mal:dclaw-turn-fixed": 15.0, "pal:dkitty-orient-random": 12.0}


def play(algo: str, task: str, iterations: int, overrides: list[str], threads: str, seed: int) -> dict:
    """Play ``iterations`` iterations in a subprocess (fresh torch/OpenMP state); the metrics rows."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "mbrl_ros.cli", "train", "--algo", algo, "--task", task, "--seed", str(seed),
               "--out", tmp, "--no-progress", "--threads", threads, "--set", f"max_iterations={iterations}",
               "--set", "samples=10000000"]
        for o in overrides:
            cmd += ["--set", o]
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        rows = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        cfg = json.loads((Path(tmp) / "config.json").read_text())
    return {"rows": rows, "config": cfg}


def split(rows: list[dict]) -> dict:
    """Mean per-iteration seconds over the iterations after the initial one (iteration 0)."""
    its = [r for r in rows if r["iteration"] >= 1]
    mean = lambda k: statistics.mean(float(r.get(k) or 0.0) for r in its)
    out = {k: mean(k) for k in ("iteration_s", "fit_s", "npg_s", "collect_s", "eval_s")}
    out["other_s"] = out["iteration_s"] - sum(out[k] for k in ("fit_s", "npg_s", "collect_s", "eval_s"))
    out["threads"] = sorted({int(r.get("threads") or 0) for r in its})
    out["n"] = len(its)
    return out


class Hog:
    """Another CPU-bound process on one core while the block runs."""

    def __enter__(self) -> "Hog":
        self.p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc) -> None:
        self.p.kill()
        self.p.wait()


def describe(cfg: dict) -> str:
    """The hyper-parameters that set the cost of an iteration, in one line."""
    k = cfg["npg_steps_aggressive"] if cfg["algo"] in ("mal", "br", "mal-agent-reward", "mal-noise") \
        else cfg["npg_steps_conservative"]
    hidden = ", ".join(map(str, cfg["model_hidden"]))
    return (f"{cfg['ensemble_size']} x MLP({hidden}), fit <= {cfg['model_max_steps']} steps, "
            f"K = {k} x {cfg['npg_trajectories']} starts, CG {cfg['cg_iters']}, "
            f"eval every {cfg['eval_every']}")


# Where the time went before the speed work (issue 13's measurements, 2026-11-30, same machine),
# kept beside the table so that before and after are read together.
BEFORE = (
    "Before (2026-11-30, the configuration of that day: 4 x MLP(512, 512), fit <= 400 steps, 200 start "
    "states x 4 members, CG 10, 20 evaluation episodes, torch threads min(4, cores)): PAL `dclaw-turn-fixed` "
    "15.3 s per iteration (fit 8.7, NPG 5.5, collect 0.2, eval 0.9); MAL 57.9 s (fit 25.8, NPG 29.7); "
    "PAL `dkitty-orient-random` about 40 s (estimated); the paper's own code 48.5 s (86% fitting). "
    "With one other CPU-bound process: 300 s for the first PAL iteration at 2 threads (15-30x). "
    "Before the policy player's phase ran on one thread (2026-12-02, the same code and machine as the "
    "table, `--threads auto` = 2 threads for NPG): PAL `dclaw-turn-fixed` 3.4 s (fit 1.0, NPG 2.1), MAL "
    "13.3 s (fit 4.2, NPG 8.4), PAL `dkitty-orient-random` 7.0 s (fit 1.8, NPG 3.3); loaded (1 thread) "
    "2.8 / 10.7 / 4.9 s, faster than alone. The table of the day before, on another 2-core machine with "
    "the same configuration: 6.6 / 24.6 / 11.7 s (the machines differ about 2x)."
)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--games", default=DEFAULT_GAMES, help="algo:task pairs, comma separated")
    ap.add_argument("--iterations", type=int, default=6, help="iterations measured after the initial one")
    ap.add_argument("--threads", default="auto", help="--threads of mbrl-ros train (default auto)")
    ap.add_argument("--load", action="store_true", help="also measure beside a CPU-bound process")
    ap.add_argument("--paper", nargs="?", const="pal:dclaw-turn-fixed", default="",
                    help="also measure the paper's hyper-parameters on these games (default pal:dclaw-turn-fixed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)
    games = [g.split(":", 1) for g in args.games.split(",") if g]
    lines = [
        f"Per-iteration wall time of the in-process games (`mbrl-ros train --threads {args.threads}`), mean of "
        f"{args.iterations} iterations after the initial collection, seed {args.seed}. *Loaded*: the same run "
        "while another process spins on one core. Evaluation is amortised over `eval_every`; *other* = gate, "
        "deploy, checkpoint, ONNX export. Evaluation episodes are not real samples.", "",
        "| game | configuration | load | iteration s | fit | NPG | collect | eval | other | threads | target |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    results = {}
    for algo, task in games:
        key = f"{algo}:{task}"
        variants = [("project", [])]
        if key in args.paper.split(","):
            variants.append(("paper", PAPER + (PAPER_PAL_DCLAW if algo == "pal" and task.startswith("dclaw") else [])))
        for name, overrides in variants:
            for loaded in ([False, True] if args.load else [False]):
                print(f"{key} {name} {'loaded' if loaded else 'alone'} ...", flush=True)
                if loaded:
                    with Hog():
                        r = play(algo, task, args.iterations, overrides, args.threads, args.seed)
                else:
                    r = play(algo, task, args.iterations, overrides, args.threads, args.seed)
                s = split(r["rows"])
                results[(key, name, loaded)] = s
                target = TARGETS.get(key)
                lines.append(
                    f"| {algo.upper()} `{task}` | {name}: {describe(r['config'])} | {'loaded' if loaded else 'alone'} "
                    f"| **{s['iteration_s']:.1f}** | {s['fit_s']:.1f} | {s['npg_s']:.1f} | {s['collect_s']:.2f} "
                    f"| {s['eval_s']:.2f} | {s['other_s']:.2f} | {','.join(map(str, s['threads']))} "
                    f"| {'<= %.0f' % target if target and name == 'project' else ''} |")
    if args.load:
        lines += ["", "Loaded / alone (target <= 2x):"]
        for (key, name, loaded), s in results.items():
            if loaded:
                alone = results[(key, name, False)]["iteration_s"]
                lines.append(f"- {key} ({name}): {s['iteration_s'] / alone:.2f}x")
    lines += ["", BEFORE, "", f"Command: `{command_line()}`."]
    publish("wallclock", "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
