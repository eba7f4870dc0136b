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

``--by-start`` asks instead which evaluation starts any of the runs solves: per start, the
torso's upright after ROBEL's settle and how each run's mean-action policy and the standing
command end; then, from the tilted endings, whether commanding the standing pose (at once or
ramped over 1 or 3 s) stands the robot up. It writes the section "dkitty_stand_starts".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import numpy as np

from bench._checkpoint import load_game
from bench._report import command_line, publish

TASK_ID = "dkitty-stand-random"


class Ending(NamedTuple):
    """How one episode ended."""

    success: bool
    fell_at: Optional[int]  # the step of the fall (the task's termination), None without one
    upright_start: float  # the torso's upright in the first observation (after ROBEL's settle)
    upright_end: float  # ... and in the last
    ret: float


def ending(world: Any, act: Callable[[np.ndarray], np.ndarray], seed: int) -> Ending:
    """One episode of ``act`` from the start of ``seed``."""
    from mbrl_ros.core.world import run_episode
    from mbrl_ros.tasks import dkitty

    ep = run_episode(world, act, seed, f"outcome-{seed}", -2)
    u0, u1 = (float(np.ravel(ep.obs[k][dkitty.OBS_UPRIGHT])[0]) for k in (0, -1))
    return Ending(bool(ep.success), len(ep) if ep.terminated and not ep.success else None, u0, u1, ep.ret)


def outcomes(world: Any, act: Callable[[np.ndarray], np.ndarray], seeds: list[int]) -> dict[str, Any]:
    """Per-episode endings of ``act`` on ``seeds`` (deterministic unless ``act`` draws noise)."""
    out: dict[str, Any] = {"success": 0, "fell": [], "tilted": 0, "pose": 0, "returns": []}
    for seed in seeds:
        e = ending(world, act, seed)
        out["returns"].append(e.ret)
        if e.success:
            out["success"] += 1
        elif e.fell_at is not None:
            out["fell"].append(e.fell_at)
        elif e.upright_end < 0.9:
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


def then_stand(task: Any, act: Callable[[np.ndarray], np.ndarray], switch: int, ramp: int):
    """``act`` for ``switch`` steps, then the standing pose, reached by a linear ramp of the joint
    targets from where the joints are over ``ramp`` steps (1 = at once)."""
    from mbrl_ros.tasks import dkitty

    lim, state = task.limits, {"t": 0}

    def policy(obs: np.ndarray) -> np.ndarray:
        state["t"] += 1
        if state["t"] <= switch:
            return act(obs)
        q0 = state.setdefault("q0", np.asarray(obs[dkitty.OBS_KITTY_QPOS], dtype=np.float64).copy())
        target = q0 * max(0.0, 1.0 - (state["t"] - switch) / ramp)
        return np.clip((target - lim.center) / lim.half_range, -1.0, 1.0)

    return policy


def _counts(ends: list[Ending]) -> tuple[int, int, list[float]]:
    """Successes, falls and the final uprights of the episodes that ran out without success."""
    rest = [e.upright_end for e in ends if not e.success and e.fell_at is None]
    return sum(e.success for e in ends), sum(e.fell_at is not None for e in ends), rest


def by_start(runs: list[Path], seeds: list[int]) -> list[str]:
    """The "dkitty_stand_starts" section: which evaluation starts the runs' policies solve."""
    from mbrl_ros.core.onnx_export import load_onnx_policy

    world, policies = None, {}
    for run in runs:
        game, _state = load_game(run)
        if game.cfg.task_id != TASK_ID:
            raise SystemExit(f"{run}: task {game.cfg.task_id}, this benchmark is for {TASK_ID}")
        world = world or game.world
        policies[str(run)] = load_onnx_policy(run / "policy.onnx", expect_task=TASK_ID).act
    assert world is not None
    stand = constant(standing_pose_action(world.task))
    labels = ["standing pose", *policies]
    table = [{label: ending(world, act, seed) for label, act in zip(labels, [stand, *policies.values()])}
             for seed in seeds]  # per start: how each policy's episode ended
    learnt = list(policies)
    solved = [i for i, e in enumerate(table) if any(e[k].success for k in learnt)]
    unsolved = [i for i in range(len(seeds)) if i not in solved]
    early = [i for i in unsolved if all(x.fell_at is not None and x.fell_at <= 5 for x in table[i].values())]
    tilted = [i for i in unsolved if i not in early and any(not table[i][k].success and table[i][k].fell_at is None
                                                           for k in learnt)]
    med = lambda idx: f"{np.median([table[i][labels[0]].upright_start for i in idx]):.2f}" if idx else "-"  # noqa: E731
    lines = ["## Which D'Kitty stand starts the learners solve (`bench/bench_dkitty_stand_outcomes.py --by-start`)", "",
             f"The task's {len(seeds)} evaluation episodes (`{TASK_ID}`), each run's deterministic policy (mean action) "
             "and a constant command of ROBEL's standing pose. Start upright: the torso's upright (z-axis . world z) in "
             "the first observation, after ROBEL's settle with the random start pose held.", "",
             "| run | success | fell | 80 steps without success (final upright: median, range) |", "|---|---|---|---|"]
    for label in labels:
        success, fell, ups = _counts([e[label] for e in table])
        rng = f"{np.median(ups):.2f}, {min(ups):.2f}-{max(ups):.2f}" if ups else "-"
        lines.append(f"| {label} | {success} | {fell} | {len(ups)} ({rng}) |")
    lines += ["", f"- Solved by at least one run's policy: **{len(solved)} of {len(seeds)}** starts (median start "
              f"upright {med(solved)}); by none: {len(unsolved)} (median start upright {med(unsolved)}).",
              f"- Of those {len(unsolved)}: {len(early)} fall within 5 steps under every policy and the standing "
              f"command (starts {', '.join(map(str, early)) or '-'}); {len(tilted)} end the 80 steps without a fall "
              "under at least one run's policy, i.e. kneeling or tilted."]
    if tilted and learnt:
        first = learnt[0]
        lines += ["", f"From those {len(tilted)} starts, `{first}`'s policy for 40 steps, then the standing pose "
                  "(final upright; success count):", "",
                  "| then | success | fell | 80 steps without success (final upright: median) |", "|---|---|---|---|"]
        for ramp, text in [(None, "nothing (the policy goes on)"), (1, "standing pose at once"),
                           (10, "standing pose ramped over 1 s"), (30, "standing pose ramped over 3 s")]:
            act = policies[first] if ramp is None else then_stand(world.task, policies[first], 40, ramp)
            success, fell, ups = _counts([ending(world, act, seeds[i]) for i in tilted])
            lines.append(f"| {text} | {success} | {fell} | {len(ups)}{f' ({np.median(ups):.2f})' if ups else ''} |")
    return lines


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
    ap.add_argument("--by-start", action="store_true",
                    help="which starts the runs solve (section dkitty_stand_starts) instead of the per-run tables")
    args = ap.parse_args(argv)
    import torch

    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.core.world import behavior_policy, evaluation_seeds

    torch.set_num_threads(1)
    seeds = evaluation_seeds(50)
    if args.by_start:
        lines = by_start(args.runs, seeds) + ["", f"Command: `{command_line()}`"]
        publish("dkitty_stand_starts", "\n".join(lines), write=not args.no_report)
        return 0
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
