"""How well each run's model predicted the data its next policy collected, against real samples.

Reads ``mbrl-ros train`` folders (their ``metrics.jsonl`` and ``config.json``). Every iteration
logs ``model_loss_new_data``: the model's loss (mean normalised squared error, the fit's units)
on the round's episodes when they were collected, before any fit on them, so it measures how well
the model the policy was optimised in predicted where that policy went. Beside it the loss of the
fitted model on its own training data (``model_loss``), the model's and the world's success of
the collecting policy, and the samples where the run first held 90%. Written to compare PAL and
MAL on D'Claw turn fixed, where MAL needs more samples than PAL:

    .venv/bin/python -m mbrl_ros.cli train --algo pal --task dclaw-turn-fixed --seed 0 --out runs/diag_pal \\
        --threads 1 --set stop_success=0.9 --set stop_success_iters=3   # and --algo mal --out runs/diag_mal
    .venv/bin/python -m bench.bench_new_data_loss runs/diag_pal runs/diag_mal

Writes the BENCHMARKS.md section given by ``--section`` (default "new_data_loss") unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from bench._report import command_line, publish
from bench.bench_sample_efficiency import median_or_bound

AT = (1800, 2600, 4200, 5800, 7400, 8400, 10600, 12200, 14600, 17000, 20200)  # real samples


def load_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """(config, metrics rows) of a training run folder; a clear error for anything else."""
    metrics = run_dir / "metrics.jsonl"
    if not metrics.exists():
        raise SystemExit(f"{run_dir}: no metrics.jsonl (not a training run folder)")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not any(r.get("model_loss_new_data") is not None for r in rows):
        raise SystemExit(f"{run_dir}: no model_loss_new_data in its metrics (a run from before the metric)")
    return json.loads((run_dir / "config.json").read_text()), rows


def at_samples(rows: list[dict], n: int) -> Optional[dict]:
    """The last iteration with a new-data loss at or below ``n`` real samples (None: none yet,
    or the run ended more than one round before ``n``)."""
    done = [r for r in rows if r["samples"] <= n and r.get("model_loss_new_data") is not None]
    if not done or (done[-1] is rows[-1] and n > rows[-1]["samples"]):
        return None
    return done[-1]


def first_below(rows: list[dict], level: float) -> Optional[int]:
    """Real samples of the first round whose new-data loss is at or below ``level``."""
    return next((r["samples"] for r in rows if (r.get("model_loss_new_data") or float("inf")) <= level), None)


def table(runs: list[tuple[str, dict, list[dict]]], at: tuple[int, ...], level: float) -> str:
    from mbrl_ros.core.report import success_milestones

    def cell(r: Optional[dict]) -> str:
        if r is None:
            return "-"
        ms, cs = r.get("model_success"), r.get("collect_success")
        succ = f"{ms:.2f} / {cs:.2f}" if ms is not None and cs is not None else "-"
        return f"{r['model_loss_new_data']:.2f} ({r['model_loss']:.3f}; {succ})"

    lines = [
        "Each cell: the model's loss on the round's new data before it was fitted on them (in brackets: "
        "the fitted model's loss on its own data; the collecting policy's success in the model / in the "
        "world), at the last round collected by that many real samples.",
        "",
        "| run | algo | seed | " + " | ".join(f"{n:,}" for n in at) + f" | new-data loss <= {level} first at | 90% held at |",
        "|---|---|---|" + "---|" * len(at) + "---|---|",
    ]
    per_algo: dict[str, list[tuple[Optional[int], Optional[int], int]]] = {}
    for name, cfg, rows in runs:
        cells = " | ".join(cell(at_samples(rows, n)) for n in at)
        below, held = first_below(rows, level), success_milestones(rows)["held"]
        per_algo.setdefault(str(cfg.get("algo")), []).append((below, held, rows[-1]["samples"]))
        lines.append(
            f"| `{name}` | {cfg.get('algo')} | {cfg.get('seed')} | {cells} | "
            f"{'-' if below is None else f'{below:,}'} | {'-' if held is None else f'{held:,}'} |"
        )
    lines.append("")
    for algo, runs_of in per_algo.items():
        ends = [end for _, _, end in runs_of]  # a run that never got there: beyond where it ended
        below_med = median_or_bound([b for b, _, _ in runs_of], ends)[2]
        held_med = median_or_bound([h for _, h, _ in runs_of], ends)[2]
        lines.append(
            f"- {algo} ({len(runs_of)} runs): median new-data loss <= {level} first at {below_med}, "
            f"median 90% held at {held_med} (bench_sample_efficiency's median: a run that never got "
            "there counts as beyond its last samples)."
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="mbrl-ros train run folders")
    ap.add_argument("--at", default=",".join(map(str, AT)), help="real-sample columns, comma separated")
    ap.add_argument("--level", type=float, default=0.5, help="report when the new-data loss first falls to this")
    ap.add_argument("--section", default="new_data_loss", help="BENCHMARKS.md section name")
    ap.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args()
    try:
        at = tuple(int(x) for x in args.at.split(",") if x.strip())
    except ValueError:
        raise SystemExit(f"--at: comma-separated sample counts, got {args.at!r}") from None
    runs = [(d.name, *load_run(d)) for d in args.runs]
    body = table(runs, at, args.level) + f"\n\nCommand: `{command_line()}`."
    publish(args.section, body, write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
