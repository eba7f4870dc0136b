"""The model player's fit budget: how many warm-started gradient steps a PAL best response needs.

From a checkpoint of a real run (its model, optimiser and buffer between two iterations: the
last round is in the buffer, the model has not yet fitted it, as at every PAL best response), a
further set of episodes of the same behaviour policy is kept apart as test data (the states
the policy player will roll out from next). Then, from the *same* warm start, the ensemble is
fitted with each step budget and measured by:

- the test loss (mean normalised squared error of the members on the held-apart episodes,
  the model's error on the policy's next data);
- the training loss l(M, D) on the buffer;
- the fit's wall time (torch threads as given).

    .venv/bin/python -m bench.bench_fit_steps runs/bench_pal_fixed/pal-dclaw-turn-fixed-s1 ... [--steps 50,100,150,300]

Writes the BENCHMARKS.md section "fit_steps" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

from bench._checkpoint import held_apart_round, load_game
from bench._report import command_line, publish


def measure(run_dir: Path, steps: list[int], test_samples: int) -> dict:
    game, _state = load_game(run_dir)
    cfg = game.cfg
    # a checkpoint stands between iterations: the last round is in the buffer, not yet fitted
    test = held_apart_round(game, test_samples)
    mp = game.model_player
    start_model = copy.deepcopy(mp.ensemble.state_dict())
    start_opt = copy.deepcopy(mp.optimizer.state_dict())
    rows = []
    for n in steps:
        mp.ensemble.load_state_dict(start_model)
        mp.optimizer.load_state_dict(start_opt)
        cfg.model_max_steps, cfg.model_min_steps = n, min(cfg.model_min_steps, n)
        torch.manual_seed(0)  # the same minibatches' start for every budget
        t0 = time.perf_counter()
        r = mp.fit(game.buffer, aggressive=True)
        fit_s = time.perf_counter() - t0
        x, y, _ = mp.transitions(test)
        rows.append({"steps": n, "test_loss": mp.loss(x, y), "train_loss": r["loss"], "fit_s": fit_s})
    return {"run": str(run_dir), "samples": game.samples, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories with a checkpoint/")
    ap.add_argument("--steps", default="50,100,150,300", help="gradient-step budgets to compare")
    ap.add_argument("--test-samples", type=int, default=600, help="held-apart samples of the same policy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    steps = [int(s) for s in a.steps.split(",")]
    results = []
    for run in a.runs:
        res = measure(run, steps, a.test_samples)
        results.append(res)
        for r in res["rows"]:
            print(
                f"{run.name} ({res['samples']} samples) steps {r['steps']:4d}: test loss {r['test_loss']:.4f} "
                f"train loss {r['train_loss']:.4f} fit {r['fit_s']:.1f} s",
                flush=True,
            )
    lines = [
        "Warm-started PAL best responses with different gradient-step budgets, from the same checkpoint "
        "(model, optimiser, buffer) plus the next round; test loss = the members' mean normalised squared "
        f"error on {a.test_samples} held-apart samples of the deployed policy (the policy's next data), "
        f"train loss = l(M, D) on the buffer; fit time at {a.threads} torch thread(s).",
        "",
        "| run | samples | " + " | ".join(f"{n} steps: test / train / s" for n in steps) + " |",
        "|---|---|" + "---|" * len(steps),
    ]
    for res in results:
        cells = [f"{r['test_loss']:.4f} / {r['train_loss']:.4f} / {r['fit_s']:.1f}" for r in res["rows"]]
        lines.append(f"| {Path(res['run']).name} | {res['samples']} | " + " | ".join(cells) + " |")
    ratios = {
        n: statistics.median(res["rows"][i]["test_loss"] / res["rows"][-1]["test_loss"] for res in results)
        for i, n in enumerate(steps)
    }
    lines += ["", "Median test loss relative to " + f"{steps[-1]} steps: " + ", ".join(
        f"{n}: {v:.2f}x" for n, v in ratios.items()), "", f"Command: `{command_line()}`."]
    publish("fit_steps", "\n".join(lines), write=not a.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
