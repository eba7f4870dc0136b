"""How the policy's std moves during training, beside its evaluation success.

Reads finished (or running) ``mbrl-ros train`` folders: their ``metrics.jsonl`` and
``config.json``. For each run it prints the mean policy std (the Gaussian's std averaged over
action dimensions, as logged each iteration) at the start, at the quarters of the run and at
its end, with the run's best and final evaluation success and the real samples where 90% was
first held. Written for D'Claw turn random, where the std of the runs that fail grows steadily.

    .venv/bin/python -m bench.bench_policy_std runs/s28_mirror_fixed/pal-dclaw-turn-random-s0 \\
        runs/s28_mirror_fixed/pal-dclaw-turn-random-s1 --section policy_std_turn_random

Writes the BENCHMARKS.md section given by ``--section`` (default "policy_std") unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from bench._report import command_line, publish

POINTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # fractions of the run's iterations


def std_profile(run_dir: Path) -> dict:
    """The run's std at POINTS, its best and final success and its samples to 90% (held)."""
    from mbrl_ros.core.report import evaluated, success_milestones

    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise SystemExit(f"{run_dir}: no metrics.jsonl (not a training run folder)")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    stds = [(r["samples"], float(r["policy_std"])) for r in rows if r.get("policy_std") is not None]
    if not stds:
        raise SystemExit(f"{run_dir}: no policy_std in its metrics")
    evals = [r["eval_success"] for r in evaluated(rows)]
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "seed": config.get("seed"),
        "max_log_std": config.get("policy_max_log_std"),
        "std": [stds[round(p * (len(stds) - 1))] for p in POINTS],
        "best": max(evals, default=None),
        "final": evals[-1] if evals else None,
        "held": success_milestones(rows)["held"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="mbrl-ros train run folders")
    ap.add_argument("--section", default="policy_std", help="BENCHMARKS.md section name")
    ap.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args()
    head = " | ".join(f"std at {int(p * 100)}%" for p in POINTS)
    lines = ["Mean policy std (over action dimensions) at the start, the quarters and the end of each run "
             "(real samples in brackets), with its evaluation success.", "",
             f"| run | seed | max log std | {head} | best success | final success | 90% held at |",
             "|---|---|---|" + "---|" * len(POINTS) + "---|---|---|"]
    for run_dir in args.runs:
        r = std_profile(run_dir)
        stds = " | ".join(f"{s:.2f} ({n})" for n, s in r["std"])
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        lines.append(f"| `{run_dir.parent.name}/{run_dir.name}` | {r['seed']} | {r['max_log_std']} | {stds} "
                     f"| {fmt(r['best'])} | {fmt(r['final'])} | {r['held'] if r['held'] is not None else '-'} |")
    lines += ["", f"Command: `{command_line()}`."]
    publish(args.section, "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
