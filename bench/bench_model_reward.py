"""D'Claw's joint-velocity cost in model rollouts: measured-velocity model state vs finite differences.

ROBEL penalises the claw's joint velocities, which are not in the policy's observation. The
model used to estimate them by finite differences of joint positions, ``(q' - q) / dt``, which
charges smooth deliberate motion several times what the world does. Now every transition
carries the measured velocities (``aux``), the ensemble predicts them as part of its state and
``task.model_reward`` computes ROBEL's reward from the predicted values.

This script fits the project's model (``config/pal.yaml``: ensemble, sizes, steps) on D'Claw
turn fixed transitions and measures, on held-out episodes of three action processes, the
per-step reward error against the world's exact reward of:

- *FD, true obs*: the finite-difference velocity on the world's own next observation (the old
  batched reward; no model error at all);
- *model, FD*: the model's predicted next observation, velocity by finite differences (the old
  rollout reward);
- *model, predicted velocity*: the model's predicted next observation and velocities (now).

    .venv/bin/python -m bench.bench_model_reward [--train-samples 5000] [--steps 2000] [--no-report]

Writes the BENCHMARKS.md section "model_reward" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
from bench._report import command_line, publish

TASK = "dclaw-turn-fixed"
PROCESSES = (("uniform random", None), ("smooth AR(1), sd 0.5", 0.5), ("zero action", 0.0))


def episodes(env, n: int, amp, seed: int) -> list:
    """Episodes of one action process (core Episodes, with the measured velocities as aux)."""
    from mbrl_ros.core.world import run_episode

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        state = {"a": np.zeros(9)}

        def act(_obs, state=state):
            if amp is None:
                state["a"] = rng.uniform(-1, 1, 9)
            elif amp > 0:
                state["a"] = np.clip(0.7 * state["a"] + amp * rng.normal(0, 1, 9), -1, 1)
            return state["a"]

        out.append(run_episode(env, act, seed * 1000 + i, f"{seed}-{i}", 0))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-samples", type=int, default=5000, help="training transitions (all three processes)")
    ap.add_argument("--steps", type=int, default=2000, help="gradient steps of the fit")
    ap.add_argument("--test-episodes", type=int, default=10, help="held-out episodes per action process")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.core.model_rollout import model_step
    from mbrl_ros.tasks import make_env

    env = make_env(TASK)
    task = env.task
    cfg = load_config("pal", TASK, [f"model_max_steps={args.steps}", f"model_min_steps={args.steps}"])
    per = max(1, args.train_samples // (3 * task.info.horizon))
    buf = EpisodeBuffer("aggregate")
    for k, (_name, amp) in enumerate(PROCESSES):
        for e in episodes(env, per, amp, seed=10 + k):
            buf.add_episode(e.validate(task))
    player = ModelPlayer(task, cfg, device="cpu")
    fit = player.fit(buf, aggressive=True)
    lines = [
        f"`{TASK}`: the project's model ({cfg.ensemble_size} x MLP{tuple(cfg.model_hidden)}) fitted for "
        f"{fit['steps']} gradient steps on {len(buf)} transitions of the three action processes; per-step reward "
        f"error against the world's exact reward on {args.test_episodes} held-out episodes per process "
        "(one-step predictions from real states, members averaged).", "",
        "| actions | exact joint_vel_cost / step | FD, true obs: mean abs error | model, FD velocity: mean abs error "
        "| model, predicted velocity: mean abs error | corr(model reward, exact) FD / predicted |",
        "|---|---|---|---|---|---|",
    ]
    for k, (name, amp) in enumerate(PROCESSES):
        eps = episodes(env, args.test_episodes, amp, seed=100 + k)
        d = EpisodeBuffer("aggregate")
        for e in eps:
            d.add_episode(e)
        a = d.arrays()
        exact = a["rewards"]
        vel_cost = task.reward_terms(a["obs"], a["actions"], a["next_obs"], next_qvel=a["next_aux"])["joint_vel_cost"]
        fd_true = task.reward(a["obs"], a["actions"], a["next_obs"])
        as_t = lambda x: torch.as_tensor(x, dtype=torch.float32)
        E = player.ensemble.ensemble_size
        obs = as_t(a["obs"]).unsqueeze(0).expand(E, -1, -1)
        aux = as_t(a["aux"]).unsqueeze(0).expand(E, -1, -1)
        act = as_t(a["actions"]).unsqueeze(0).expand(E, -1, -1)
        with torch.no_grad():
            next_obs, next_aux, r_pred = model_step(player.ensemble, task, obs, act, aux)
            r_fd = task.reward(obs, act, next_obs)
        r_pred = r_pred.mean(0).numpy()
        r_fd = r_fd.mean(0).numpy()
        err = lambda r: float(np.mean(np.abs(r - exact)))
        corr = lambda r: float(np.corrcoef(r, exact)[0, 1])
        lines.append(f"| {name} | {vel_cost.mean():.3f} | {err(fd_true):.3f} | {err(r_fd):.3f} | {err(r_pred):.3f} "
                     f"| {corr(r_fd):.3f} / {corr(r_pred):.3f} |")
    env.close()
    lines += ["", f"Command: `{command_line()}`."]
    publish("model_reward", "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
