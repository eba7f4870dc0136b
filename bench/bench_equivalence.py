"""One rulebook, checked: ``mbrl-ros launch`` (the ROS graph) and ``mbrl-ros train`` (one process)
play the same game, iteration by iteration.

Runs a graph and the in-process loop with the same seed, configuration (a graph parameter file,
``config/ros_graph.yaml`` by default: the paper's configuration) and one sim collector, both with
one torch thread per learner, and compares their ``metrics.jsonl``: iterations, real samples,
evaluation success and return must be identical (and so are the model loss, J(pi, M) and the
collection returns); prints the table and writes the ``equivalence`` section of BENCHMARKS.md.
``test/test_ros_equivalence.py`` runs the same comparison on the smoke configuration in CI.

    .venv/bin/python -m bench.bench_equivalence --samples 2000
    .venv/bin/python -m bench.bench_equivalence --graph mal_dclaw --samples 2000 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import yaml

from bench._report import ROOT, command_line, publish

SAME = ("iteration", "samples", "eval_success", "collected", "policy_version", "model_version")
CLOSE = ("eval_return", "collect_return", "collect_success", "model_loss", "J_model", "kl")
ALGO_OF_GRAPH = {"pal_dclaw": "pal", "mal_dclaw": "mal", "pal_dkitty": "pal", "mal_dkitty": "mal"}
TASK_OF_GRAPH = {"pal_dclaw": "dclaw-turn-fixed", "mal_dclaw": "dclaw-turn-fixed", "pal_dkitty": "dkitty-orient-random",
                 "mal_dkitty": "dkitty-orient-random"}


def one_thread_settings(param_file: Path) -> tuple[dict, list[str]]:
    """The graph parameters with one torch thread per learner, and the same game as ``mbrl-ros
    train --set`` arguments (the file's game overrides and the coordinator's gate settings)."""
    params = yaml.safe_load(param_file.read_text())
    common = params.setdefault("/**", {}).setdefault("ros__parameters", {})
    common["torch_threads"] = 1
    sets = [s for s in common.get("game_overrides", []) if not s.startswith("samples=")]
    coordinator = params.get("game_coordinator", {}).get("ros__parameters", {})
    sets += [f"{k}={v}" for k, v in coordinator.items() if k.startswith("gate_")]
    return params, sets


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def differences(in_process: list[dict], in_graph: list[dict], rel: float = 1e-9) -> list[str]:
    """What differs between two runs' metrics (empty: the same game)."""
    out = []
    if len(in_process) != len(in_graph):
        out.append(f"{len(in_process)} iterations (train) vs {len(in_graph)} (graph)")
    for a, b in zip(in_process, in_graph):
        for key in SAME:
            if a.get(key) != b.get(key):
                out.append(f"iteration {a['iteration']}: {key} {a.get(key)} (train) != {b.get(key)} (graph)")
        for key in CLOSE:
            x, y = a.get(key), b.get(key)
            if (x is None) != (y is None) or (x is not None and abs(x - y) > rel * max(abs(x), abs(y)) + 1e-12):
                out.append(f"iteration {a['iteration']}: {key} {x} (train) != {y} (graph)")
    return out


def run_pair(graph: str, samples: int, seed: int, param_file: Path, work: Path, timeout: float,
             algo: Optional[str] = None) -> dict[str, Any]:
    """Run the graph and ``train`` once each (``algo``: e.g. mal-noise on a MAL graph); returns
    both metrics, timings and the differences."""
    params, sets = one_thread_settings(param_file)
    config = work / "params.yaml"
    config.write_text(yaml.safe_dump(params))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    algo, task = algo or ALGO_OF_GRAPH[graph], TASK_OF_GRAPH[graph]
    argv = {
        "train": [sys.executable, "-m", "mbrl_ros.cli", "train", "--algo", algo, "--task", task, "--samples",
                  str(samples), "--seed", str(seed), "--out", str(work / "train"), "--threads", "1", "--no-progress"]
        + [a for s in sets for a in ("--set", s)],
        "graph": [sys.executable, "-m", "mbrl_ros.cli", "launch", graph, f"config:={config}", f"samples:={samples}",
                  f"seed:={seed}", f"log_dir:={work / 'graph'}", f"algo:={algo}", "--no-progress",
                  "--timeout", str(int(timeout))],
    }
    wall = {}
    for name, cmd in argv.items():
        t0 = time.monotonic()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=timeout + 120)
        wall[name] = time.monotonic() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stdout.decode(errors='replace')[-3000:]}")
        print(f"{graph} seed {seed}: {name} done in {wall[name]:.0f} s", flush=True)
    a, b = rows(work / "train" / "metrics.jsonl"), rows(work / "graph" / "metrics.jsonl")
    return {"graph": graph, "algo": algo, "task": task, "seed": seed, "samples": samples, "train": a, "launch": b,
            "wall": wall, "differences": differences(a, b)}


def default_samples(graph: str, iterations: int = 5) -> int:
    """The initial round and ``iterations`` iterations of the graph's game (its config's N_init and N)."""
    from mbrl_ros.core.config import load_config
    from mbrl_ros.tasks import get_task

    cfg = load_config(ALGO_OF_GRAPH[graph], TASK_OF_GRAPH[graph])
    return cfg.n_init + iterations * cfg.n_per_iter(get_task(TASK_OF_GRAPH[graph]).info.horizon)


def report(results: list[dict], param_file: Path) -> str:
    lines = [
        "## One rulebook: `mbrl-ros launch` and `mbrl-ros train` play the same game",
        "",
        f"`{command_line()}`",
        "",
        f"Graph parameters `{param_file.relative_to(ROOT) if param_file.is_relative_to(ROOT) else param_file}` "
        "with one torch thread per learner; `mbrl-ros train` with the same game settings, seed and "
        "`--threads 1`; one sim collector. Compared per iteration: iterations, real samples, evaluation "
        "success (exactly), evaluation return, model loss, J(pi, M), collection return (relative 1e-9).",
        "",
        "| graph | seed | iterations | samples | final eval success | final eval return | identical | train wall s | graph wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        last = r["train"][-1] if r["train"] else {}
        ret = last.get("eval_return")
        lines.append(
            f"| {r['graph']} | {r['seed']} | {len(r['train'])} | {last.get('samples')} | {last.get('eval_success')} | "
            f"{'n/a' if ret is None else f'{ret:.2f}'} | {'yes' if not r['differences'] else 'NO'} | "
            f"{r['wall']['train']:.0f} | {r['wall']['graph']:.0f} |")
    for r in results:
        for d in r["differences"][:10]:
            lines.append(f"\n- {r['graph']} seed {r['seed']}: {d}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--graph", action="append", choices=sorted(ALGO_OF_GRAPH), help="graph(s) to check (default: pal_dclaw, mal_dclaw)")
    p.add_argument("--samples", type=int, default=0,
                   help="sample budget of each run (0: the game's N_init + 5 N, i.e. the initial round and 5 iterations)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", type=Path, default=ROOT / "config" / "ros_graph.yaml", help="graph parameter file")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    results = []
    for graph in args.graph or ["pal_dclaw", "mal_dclaw"]:
        samples = args.samples or default_samples(graph)
        with tempfile.TemporaryDirectory(prefix=f"equivalence-{graph}-") as d:
            results.append(run_pair(graph, samples, args.seed, args.config.resolve(), Path(d), args.timeout))
    publish("equivalence", report(results, args.config.resolve()), write=not args.no_write)
    return 0 if all(not r["differences"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
