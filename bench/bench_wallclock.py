"""Where the time of a PAL iteration goes, and what batching the ensemble buys.

Measures on D'Claw turn fixed with the paper's model (4 x MLP(512, 512), minibatch 200):
- one ensemble gradient step, all members batched (``torch.baddbmm``) vs a Python loop over
  four separate ``nn.Sequential`` members (the reference code's layout);
- one synthetic rollout (200 start states x 4 members x 40 steps) and one NPG step (rollout,
  GAE, CG natural gradient, value refit);
- the simulator's speed (env steps per second with the policy in the loop).

    .venv/bin/python bench/bench_wallclock.py [--threads 1] [--repeats 30]

Writes the BENCHMARKS.md section "wallclock".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._report import command_line, publish  # noqa: E402


def timed(fn, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.core.model_rollout import rollout_policy
    from mbrl_ros.core.policy_player import PolicyPlayer
    from mbrl_ros.core.world import collect_episodes
    from mbrl_ros.tasks import make_env

    env = make_env("dclaw-turn-fixed")
    task = env.task
    cfg = load_config("pal", "dclaw-turn-fixed")
    policy_player = PolicyPlayer(task, cfg)
    model_player = ModelPlayer(task, cfg)
    rng = np.random.default_rng(0)

    t0 = time.perf_counter()
    episodes = collect_episodes(env, lambda o: policy_player.act(o, deterministic=False), 2000, rng, 0, "bench")
    env_rate = sum(len(e) for e in episodes) / (time.perf_counter() - t0)
    buf = EpisodeBuffer("fifo", 2500)
    for e in episodes:
        buf.add_episode(e)
    x, y, states = model_player.transitions(buf)
    ens = model_player.ensemble
    ens.set_normalization(x, y, states)
    y_norm = ens.normalized_targets(y)
    opt = model_player.optimizer
    E, bs = ens.ensemble_size, cfg.model_batch_size

    def batched_step() -> None:
        idx = torch.randint(0, x.shape[0], (E, bs))
        loss = ens.loss(x[idx], y_norm[idx]).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    members = [nn.Sequential(nn.Linear(x.shape[1], 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, y.shape[1])) for _ in range(E)]
    loop_opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in members]

    def loop_step() -> None:
        for m, o in zip(members, loop_opts):
            idx = torch.randint(0, x.shape[0], (bs,))
            loss = ((m((x[idx] - ens.in_shift) / ens.in_scale) - y_norm[idx]) ** 2).mean()
            o.zero_grad()
            loss.backward()
            o.step()

    t_batched = timed(batched_step, args.repeats)
    t_loop = timed(loop_step, args.repeats)
    starts = torch.as_tensor(buf.initial_observations()[rng.integers(0, len(buf.episodes), 200)], dtype=torch.float32)
    t_rollout = timed(lambda: rollout_policy(ens, task, policy_player.policy, starts, 40), max(3, args.repeats // 4))
    obs0 = buf.initial_observations()
    all_obs = buf.arrays()["obs"]
    t_npg = timed(lambda: policy_player.improve(ens, obs0, 1, buffer_obs=all_obs), max(3, args.repeats // 4))

    steps_pal = int(np.ceil(cfg.model_epochs_aggressive * cfg.buffer_size / cfg.model_batch_size))
    lines = [
        f"D'Claw turn fixed, paper model (4 x MLP(512, 512), minibatch 200), {args.threads} torch thread(s); medians.",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| ensemble gradient step, 4 members batched (baddbmm) | {t_batched * 1e3:.1f} ms |",
        f"| same step, Python loop over 4 nn.Sequential members | {t_loop * 1e3:.1f} ms |",
        f"| batching speed-up | {t_loop / t_batched:.2f}x |",
        f"| paper PAL fit: 100 epochs x 2500 / 200 = {steps_pal} steps, batched | {steps_pal * t_batched:.1f} s |",
        f"| synthetic rollout: 200 starts x 4 members x 40 steps | {t_rollout:.2f} s |",
        f"| one NPG step (rollout, GAE, CG natural gradient, value refit) | {t_npg:.2f} s |",
        f"| simulator with the policy in the loop | {env_rate:.0f} env steps/s |",
        "",
        f"Command: `{command_line()}`. "
        "The machine may have been shared with other jobs while this ran.",
    ]
    publish("wallclock", "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
