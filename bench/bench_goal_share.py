"""What ``model_goal_share`` changes in the model: the valve's predicted change on the policy's
next data, with and without a fixed share of the fit's loss on the goal dims.

From a checkpoint of a real run (buffer and deployed policy between two iterations), a further
set of episodes of the same behaviour policy is kept apart as test data (the states the policy
player will roll out from next), and the deterministic policy's world episode is played once
(the path the policy is judged on). Then, for each share, the ensemble is fitted *from scratch*
on the buffer (the same initial weights and minibatches for every share, ``--steps`` gradient
steps) and measured by:

- the goal dims' error on the test data: mean absolute error of the predicted valve change
  (rad per step) and the members' mean normalised squared error there;
- the other dims' mean normalised squared error on the test data (what the share costs);
- the one-step valve progress the members predict along the deterministic policy's world
  episode (sum over the episode of the decrease of |valve angle - target|, from the world's
  states and actions) against the world's: the optimism the stalled runs showed.

    .venv/bin/python -m bench.bench_goal_share runs/X/pal-dclaw-turn-fixed-s1 ... [--shares 0,0.5] [--steps 1000]

Writes the BENCHMARKS.md section "goal_share" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from bench._checkpoint import held_apart_round, load_game
from bench._report import command_line, publish


def measure(run_dir: Path, shares: list[float], steps: int, test_samples: int) -> dict:
    from bench.bench_frozen_model import one_step_progress
    from mbrl_ros.core.model_player import ModelPlayer

    game, _state = load_game(run_dir)
    cfg, task = game.cfg, game.task
    goal = list(getattr(task, "model_goal_dims", ()))
    if not goal:
        raise SystemExit(f"{cfg.task_id} declares no model_goal_dims")
    test = held_apart_round(game, test_samples)
    rows = []
    for share in shares:
        cfg.model_goal_share, cfg.model_max_steps, cfg.model_min_steps = share, steps, steps
        torch.manual_seed(0)  # the same initial weights and minibatches for every share
        mp = ModelPlayer(task, cfg, device="cpu")
        r = mp.fit(game.buffer, aggressive=True)
        ens = mp.ensemble
        x, y, _ = mp.transitions(test)
        with torch.no_grad():
            pred_n = ens.forward_normalized(x.expand(ens.ensemble_size, -1, -1))
        sq = (pred_n - ens.normalized_targets(y)) ** 2 * ens.out_mask
        other = [i for i in range(ens.state_dim) if i not in goal and float(ens.out_mask[i]) > 0]
        pred = pred_n * ens.out_scale + ens.out_shift
        progress = one_step_progress(game, game.policy_player, ens)
        rows.append(
            {
                "share": share,
                "goal_mae": float((pred[..., goal] - y[..., goal]).abs().mean()),
                "goal_loss": float(sq[..., goal].mean()),
                "other_loss": float(sq[..., other].mean()),
                "train_loss": r["loss"],
                "world_progress": progress["world"],
                "members_progress": progress["members"],
            }
        )
    return {"run": str(run_dir), "samples": game.samples, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories with a checkpoint/")
    ap.add_argument("--shares", default="0,0.5", help="model_goal_share values to compare")
    ap.add_argument("--steps", type=int, default=1000, help="gradient steps of each fit (from scratch)")
    ap.add_argument("--test-samples", type=int, default=600, help="held-apart samples of the same policy")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    shares = [float(s) for s in a.shares.split(",")]
    results = []
    for run in a.runs:
        res = measure(run, shares, a.steps, a.test_samples)
        results.append(res)
        for r in res["rows"]:
            print(
                f"{run.parent.name}/{run.name} share {r['share']:.2f}: valve MAE {r['goal_mae']:.4f} rad, goal loss "
                f"{r['goal_loss']:.4f}, other loss {r['other_loss']:.4f}; progress world {r['world_progress']:+.3f} "
                f"members {', '.join(f'{m:+.3f}' for m in r['members_progress'])}",
                flush=True,
            )
    lines = [
        f"Each run's last checkpoint: the ensemble fitted from scratch on the run's buffer ({a.steps} gradient "
        "steps, the same initial weights and minibatches for every share), tested on "
        f"{a.test_samples} held-apart samples of the deployed behaviour policy (the policy's next data). "
        "Valve MAE = mean absolute error of the predicted valve change (rad per step); goal / other loss = "
        "the members' mean normalised squared error on the goal dim / the other predicted dims. Progress = "
        "decrease of the goal error summed over the deterministic policy's world episode, in the world and "
        "as the members predict it one step at a time from the world's states and actions.",
        "",
        "| run | samples | goal share | valve MAE (rad) | goal loss | other loss | world progress | members' progress (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for res in results:
        name = f"{Path(res['run']).parent.name}/{Path(res['run']).name}"
        for r in res["rows"]:
            lines.append(
                f"| `{name}` | {res['samples']} | {r['share']:.2f} | {r['goal_mae']:.4f} | {r['goal_loss']:.4f} | "
                f"{r['other_loss']:.4f} | {r['world_progress']:+.3f} | {statistics.mean(r['members_progress']):+.3f} |"
            )
    for s in shares[1:]:  # each share against the first
        by_share = [{r["share"]: r for r in res["rows"]} for res in results]
        ratio = statistics.median(b[s]["goal_mae"] / b[shares[0]]["goal_mae"] for b in by_share)

        def bias(r: dict) -> float:  # |members' mean - world| summed progress along the path
            return abs(statistics.mean(r["members_progress"]) - r["world_progress"])

        lines += [
            "",
            f"Share {s:g} vs {shares[0]:g}: median valve MAE ratio {ratio:.2f}x; |members' - world progress| "
            + ", ".join(f"{bias(b[s]):.3f} vs {bias(b[shares[0]]):.3f}" for b in by_share)
            + " rad per run.",
        ]
    lines += ["", f"Command: `{command_line()}`."]
    publish("goal_share", "\n".join(lines), write=not a.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
