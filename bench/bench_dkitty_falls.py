"""D'Kitty's falls in the policy player's view: the world, the model's 80-step rollouts, and the
whitened advantages.

A D'Kitty episode ends when the torso tips (upright < 0.9 on orient), with a -500 reward on that
step. From a run's checkpoint (policy, value, model and buffer at that point of the game) this
script measures, for the stochastic policy:

- the fall rate in the world (episodes from the task's resets) and in the model's synthetic
  rollouts (the policy player's own rollouts: its start states, all members, 80 steps);
- the step of the fall, world vs model;
- what the falls do to the NPG step: the share of the whitened advantages' squared mass that
  sits on the steps of falling trajectories, and the spread of the advantages of the other
  steps (whitening divides by a standard deviation the falls inflate).

    .venv/bin/python -m bench.bench_dkitty_falls runs/bench_dkitty_orient/pal-dkitty-orient-random-s0 [--no-report]

Writes the BENCHMARKS.md section "dkitty_falls" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
from bench._checkpoint import load_game
from bench._report import command_line, publish


def measure(run_dir: Path, world_episodes: int, batches: int) -> dict:
    from mbrl_ros.core.model_rollout import rollout_policy
    from mbrl_ros.core.policy_player import StartStates
    from mbrl_ros.core.world import run_episode

    game, state = load_game(run_dir)
    world = game.world
    pp = game.policy_player
    starts = StartStates.from_buffer(game.buffer)
    pp.set_obs_normalization(starts.obs)
    rng = np.random.default_rng(0)
    falls, fall_steps = 0, []
    for i in range(world_episodes):
        ep = run_episode(world, lambda o: pp.act(o, deterministic=False), int(rng.integers(2**31 - 1)), f"w{i}", 0)
        if ep.terminated:
            falls += 1
            fall_steps.append(len(ep))
    H = pp.horizon
    m_fall, m_steps, share, spread, n_traj = 0, [], [], [], 0
    torch.manual_seed(0)
    for _ in range(batches):
        s_obs, s_aux = pp._start_states(starts)
        ro = rollout_policy(game.model_player.ensemble, game.task, pp.policy, s_obs, H, start_aux=s_aux)
        fell = ro.terminal.sum(1) > 0
        m_fall += int(fell.sum())
        n_traj += int(fell.numel())
        m_steps += (ro.terminal.argmax(1)[fell] + 1).tolist()
        w, _, mask, _ = pp.advantages(ro)  # the policy player's own whitened advantages
        on_fall = fell.unsqueeze(1).expand_as(mask)[mask]
        share.append(float((w[on_fall] ** 2).sum() / (w ** 2).sum()))
        spread.append(float(w[~on_fall].std()) if (~on_fall).any() else float("nan"))
    return {"samples": int(state["samples"]), "world_fall_rate": falls / world_episodes,
            "world_fall_step": float(np.mean(fall_steps)) if fall_steps else None,
            "model_fall_rate": m_fall / max(n_traj, 1),
            "model_fall_step": float(np.mean(m_steps)) if m_steps else None,
            "fall_share": float(np.mean(share)), "other_spread": float(np.nanmean(spread)),
            "fall_traj_share": m_fall / max(n_traj, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--world-episodes", type=int, default=50)
    ap.add_argument("--batches", type=int, default=5, help="synthetic batches (the policy player's own size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = ["Stochastic policy of each run's last checkpoint. Fall = the task's termination (upright < 0.9, "
             "reward -500 on that step). Model rollouts: the policy player's own (its start states, every member, "
             "the full horizon). Advantage share: the fraction of the whitened advantages' squared mass on the steps "
             "of trajectories that fell; spread: the standard deviation of the whitened advantages of the other "
             "steps (1 without falls).", "",
             "| run | samples | world fall rate | world fall step | model fall rate | model fall step "
             "| advantage share of falling trajectories | spread of the others |", "|---|---|---|---|---|---|---|---|"]
    for run in args.runs:
        m = measure(run, args.world_episodes, args.batches)
        step = lambda x: f"{x:.1f}" if x is not None else "-"
        lines.append(f"| `{run.name}` | {m['samples']} | {m['world_fall_rate']:.2f} | {step(m['world_fall_step'])} "
                     f"| {m['model_fall_rate']:.2f} | {step(m['model_fall_step'])} | {m['fall_share']:.2f} "
                     f"| {m['other_spread']:.2f} |")
    lines += ["", f"Command: `{command_line()}`."]
    publish("dkitty_falls", "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
