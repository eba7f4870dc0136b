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

import numpy as np
import torch

from bench._checkpoint import load_game
from bench._report import command_line, publish


def _progress(task, z: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
    """Decrease of the goal error from z to z_next (D'Claw: |wrapped valve angle - target|)."""
    from mbrl_ros.tasks.dclaw_turn import MODEL_TARGET, MODEL_THETA

    def err(s: torch.Tensor) -> torch.Tensor:
        return torch.remainder(s[..., MODEL_THETA] - s[..., MODEL_TARGET] + np.pi, 2 * np.pi).sub(np.pi).abs()

    return err(z) - err(z_next)


def measure(run_dir: Path, shares: list[float], steps: int, test_samples: int) -> dict:
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.core.world import behavior_policy, run_episode

    game, _state = load_game(run_dir)
    cfg, task = game.cfg, game.task
    goal = list(getattr(task, "model_goal_dims", ()))
    if not goal:
        raise SystemExit(f"{cfg.task_id} declares no model_goal_dims")
    info, deployed, log_std = task.info, game.deployed, game.deployed_log_std
    assert deployed is not None
    noise = cfg.behavior_noise()
    test = EpisodeBuffer("aggregate", None)
    version = game.referee.deployed_policy_version
    for ep in game._play(
        test_samples,
        lambda rng: behavior_policy(deployed.act, info.act_dim, log_std, rng, noise, info.horizon),
        version,
        f"test-v{version}",
    ):
        test.add_episode(ep.at_wire_precision())
    path = EpisodeBuffer("aggregate", None)
    path.add_episode(run_episode(game.eval_world, deployed.act, game.eval_seeds[0], "path", version))
    rows = []
    for share in shares:
        cfg.model_goal_share, cfg.model_max_steps, cfg.model_min_steps = share, steps, steps
        torch.manual_seed(0)  # the same initial weights and minibatches for every share
        mp = ModelPlayer(task, cfg, device="cpu")
        r = mp.fit(game.buffer, aggressive=True)
        ens = mp.ensemble
        x, y, _ = mp.transitions(test)
        E = ens.ensemble_size
        with torch.no_grad():
            pred_n = ens.forward_normalized(x.expand(E, -1, -1))
            sq = (pred_n - ens.normalized_targets(y)) ** 2 * ens.out_mask
            other = [i for i in range(ens.state_dim) if i not in goal and float(ens.out_mask[i]) > 0]
            pred = pred_n * ens.out_scale + ens.out_shift
            goal_mae = float((pred[..., goal] - y[..., goal]).abs().mean())
            # one-step predictions along the deterministic policy's world episode
            px, py, _ = mp.transitions(path)
            z = px[:, : ens.state_dim]
            z_world = z + py[:, : ens.state_dim]
            z_pred, _ = ens.predict(z.expand(E, -1, -1), px[:, ens.state_dim :].expand(E, -1, -1))
            world = float(_progress(task, z, z_world).sum())
            members = [float(v) for v in _progress(task, z.expand(E, -1, -1), z_pred).sum(-1)]
        rows.append(
            {
                "share": share,
                "goal_mae": goal_mae,
                "goal_loss": float(sq[..., goal].mean()),
                "other_loss": float(sq[..., other].mean()),
                "train_loss": r["loss"],
                "world_progress": world,
                "members_progress": members,
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
    if len(shares) > 1:
        base = shares[0]
        for s in shares[1:]:
            ratio = statistics.median(
                res["rows"][shares.index(s)]["goal_mae"] / res["rows"][shares.index(base)]["goal_mae"]
                for res in results
            )
            over = [
                (
                    abs(statistics.mean(res["rows"][shares.index(s)]["members_progress"]) - res["rows"][0]["world_progress"]),
                    abs(statistics.mean(res["rows"][shares.index(base)]["members_progress"]) - res["rows"][0]["world_progress"]),
                )
                for res in results
            ]
            lines += [
                "",
                f"Share {s:g} vs {base:g}: median valve MAE ratio {ratio:.2f}x; |members' - world progress| "
                + ", ".join(f"{a_:.3f} vs {b_:.3f}" for a_, b_ in over)
                + " rad per run.",
            ]
    lines += ["", f"Command: `{command_line()}`."]
    publish("goal_share", "\n".join(lines), write=not a.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
