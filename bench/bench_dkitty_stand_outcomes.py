"""How D'Kitty stand episodes end: success, a fall, or standing tilted; the learnt policy against
ROBEL's standing pose held as a constant command, and the mean action against the stochastic policy.

For each finished run (``mbrl-ros train --task dkitty-stand-random ...`` folder with ``policy.onnx``
and ``checkpoint/``), on the task's 50 evaluation episodes (the deterministic evaluation of
``mbrl-ros train``):

- per episode: success (mean pose error < pi/12 and upright > 0.9 at the final step), a fall
  (termination: upright < 0, and its step), standing tilted (80 steps, upright < 0.9 at the end)
  or standing upright with the pose error above the band;
- the same for a constant command of the standing pose (every joint's target 0, the pose the
  success band is measured from), as a baseline a learner must beat;
- success and return of the stochastic policy (the checkpoint's std, clipped actions, as the
  collectors play it; two noise draws) against its mean action.

    .venv/bin/python -m bench.bench_dkitty_stand_outcomes runs/X/pal-dkitty-stand-random-s0 [...] [--no-report]

Writes the BENCHMARKS.md section "dkitty_stand_outcomes" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bench._checkpoint import load_game
from bench._report import command_line, publish

TASK_ID = "dkitty-stand-random"


def outcomes(world: Any, act: Callable[[np.ndarray], np.ndarray], seeds: list[int]) -> dict[str, Any]:
    """Per-episode endings of ``act`` on ``seeds`` (deterministic unless ``act`` draws noise)."""
    from mbrl_ros.core.world import run_episode
    from mbrl_ros.tasks import dkitty

    out: dict[str, Any] = {"success": 0, "fell": [], "tilted": 0, "pose": 0, "returns": []}
    for i, seed in enumerate(seeds):
        ep = run_episode(world, act, seed, f"outcome-{i}", -2)
        out["returns"].append(ep.ret)
        last = ep.obs[-1]
        upright = float(np.ravel(last[dkitty.OBS_UPRIGHT])[0])
        if ep.success:
            out["success"] += 1
        elif ep.terminated:
            out["fell"].append(len(ep))
        elif upright < 0.9:
            out["tilted"] += 1
        else:
            out["pose"] += 1
    return out


def standing_pose_action(task: Any) -> np.ndarray:
    """The action whose joint targets are ROBEL's standing pose (every joint 0): the inverse of
    ``q = center + a * half_range`` in ``TaskSpec.action_to_targets``."""
    lim = task.limits
    return np.clip((0.0 - lim.center) / lim.half_range, -1.0, 1.0)


def constant(action: np.ndarray):
    return lambda _obs: action


def row(label: str, o: dict[str, Any]) -> str:
    fell = o["fell"]
    steps = f" (steps {min(fell)}-{max(fell)}, median {int(np.median(fell))})" if fell else ""
    return (f"| {label} | {o['success']} | {len(fell)}{steps} | {o['tilted']} | {o['pose']} | "
            f"{np.mean(o['returns']):.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--draws", type=int, default=2, help="noise draws of the stochastic policy")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)
    import torch

    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.core.world import behavior_policy, evaluation_seeds

    torch.set_num_threads(1)
    seeds = evaluation_seeds(50)
    header = ["| policy | success | fell (termination) | stood tilted (upright < 0.9) | upright, pose error above "
              "pi/12 | mean return |", "|---|---|---|---|---|---|"]
    lines = ["## How D'Kitty stand episodes end (`bench/bench_dkitty_stand_outcomes.py`)", "",
             f"The task's 50 evaluation episodes (`{TASK_ID}`, random start poses), deterministic unless said. "
             "Success: mean pose error < pi/12 and upright > 0.9 at the final step; a fall ends the episode "
             "(upright < 0).", ""]
    baseline_done = False
    for run in args.runs:
        game, state = load_game(run)
        if game.cfg.task_id != TASK_ID:
            raise SystemExit(f"{run}: task {game.cfg.task_id}, this benchmark is for {TASK_ID}")
        world = game.world
        policy = load_onnx_policy(run / "policy.onnx", expect_task=TASK_ID)
        lines += [f"Run `{run}` ({state.get('samples', '?')} samples; checkpoint std "
                  f"{float(torch.exp(game.policy_player.policy.log_std.detach()).mean()):.2f}):", "", *header]
        lines.append(row("the run's policy (mean action)", outcomes(world, policy.act, seeds)))
        log_std = game.policy_player.policy.log_std.detach().numpy()
        for k in range(args.draws):
            # the collectors' behaviour policy: the game's behaviour noise around the mean action
            noisy = behavior_policy(policy.act, world.task.info.act_dim, log_std, np.random.default_rng(k),
                                    game.cfg.behavior_noise(), world.task.info.horizon)
            lines.append(row(f"the run's stochastic policy (noise draw {k})", outcomes(world, noisy, seeds)))
        if not baseline_done:
            lines.append(row("constant standing-pose command", outcomes(world, constant(standing_pose_action(world.task)), seeds)))
            baseline_done = True
        lines.append("")
    lines += [f"Command: `{command_line()}`"]
    publish("dkitty_stand_outcomes", "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
