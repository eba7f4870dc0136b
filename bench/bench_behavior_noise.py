"""Behaviour noise of data collection: how far white and coloured noise move the D'Claw's valve.

Around a zero policy (the claw's middle pose), the collectors' behaviour noise
(``core.world.BehaviorNoise``) of a given std and spectrum exponent (0 white, 1 pink, 2 brown)
plays whole episodes of ``dclaw-turn-fixed``; reported: the largest valve rotation reached in
an episode (mean and 90th percentile) and the joints' spread, per setting.

    .venv/bin/python -m bench.bench_behavior_noise [--episodes 30]

Writes the BENCHMARKS.md section "behavior_noise" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from bench._report import command_line, publish

TASK = "dclaw-turn-fixed"


def valve_reach(std: float, color: float, episodes: int) -> dict:
    from mbrl_ros.core.world import BehaviorNoise, behavior_policy, run_episode
    from mbrl_ros.tasks import make_env

    env = make_env(TASK)
    info = env.task.info
    names = list(info.obs_names)
    cos_i, sin_i = names.index("object_x"), names.index("object_y")
    reach, spread = [], []
    for k in range(episodes):
        rng = np.random.default_rng([1, k])
        behave = behavior_policy(lambda _o: np.zeros(info.act_dim), info.act_dim, np.full(info.act_dim, np.log(std)),
                                 rng, BehaviorNoise(color), info.horizon)
        ep = run_episode(env, behave, 0, f"noise-{k}", 0)
        angle = np.unwrap(np.arctan2(ep.obs[:, sin_i], ep.obs[:, cos_i]))
        reach.append(np.abs(angle - angle[0]).max())
        spread.append(np.std(ep.obs[:, :9], axis=0).mean())
    return {"std": std, "color": color, "mean": float(np.mean(reach)), "p90": float(np.quantile(reach, 0.9)),
            "joints": float(np.mean(spread))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args(argv)
    rows = []
    for std in (0.1, 0.3):
        white = None
        for color in (0.0, 1.0, 2.0):
            r = valve_reach(std, color, a.episodes)
            white = r["mean"] if color == 0.0 else white
            r["ratio"] = r["mean"] / white
            rows.append(r)
            print(f"std {std} color {color}: valve reach mean {r['mean']:.3f} rad (p90 {r['p90']:.3f}), "
                  f"{r['ratio']:.1f}x white, joint spread {r['joints']:.3f} rad", flush=True)
    lines = [
        f"Behaviour noise around a zero policy on `{TASK}`, {a.episodes} episodes per setting (the same episode "
        "generators for every setting): largest valve rotation reached in an episode, and the joints' spread "
        "(std over an episode, mean over joints).",
        "",
        "| noise std | spectrum (beta) | valve reach mean (rad) | 90th percentile | vs white | joint spread (rad) |",
        "|---|---|---|---|---|---|",
    ]
    kinds = {0.0: "white (0)", 1.0: "pink (1)", 2.0: "brown (2)"}
    for r in rows:
        lines.append(f"| {r['std']} | {kinds[r['color']]} | {r['mean']:.3f} | {r['p90']:.3f} | {r['ratio']:.1f}x "
                     f"| {r['joints']:.3f} |")
    lines += ["", f"Command: `{command_line()}`."]
    publish("behavior_noise", "\n".join(lines), write=not a.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
