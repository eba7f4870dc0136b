"""The valve's symmetry in the model: does what the data show of one stroke hold for the next?

D'Claw's valve has three spokes 2 pi / 3 apart, as the claw has three fingers, so the contacts
at valve angle theta and theta + 2 pi / 3 are the same. The stalled PAL seeds turn the valve
1.5-2.0 rad in one stroke and stop (bench_turn_strokes): the next stroke starts where the data
end. This bench fits the model player's ensemble (the task's configuration) on episodes that
start at theta = 0 and measures its one-step error on held-out episodes that start at 0,
2 pi / 3 and -2 pi / 3, with ``model_symmetry`` on (the members read (cos 3 theta, sin 3 theta))
and off (cos theta, sin theta). Data: whole episodes of pink behaviour noise of std 0.4 around
the claw's middle pose (``core.world.BehaviorNoise``), the same noise streams at every angle.

Reported per setting and start angle: the RMS error of the predicted valve change (rad per
step) and the model's normalised loss over all predicted values (``l(M, D)``).

    .venv/bin/python -m bench.bench_valve_symmetry [--train-episodes 60 --test-episodes 20]

Writes the BENCHMARKS.md section "valve_symmetry" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import numpy as np

from bench._report import command_line, publish

TASK = "dclaw-turn-fixed"
STD, COLOR = 0.4, 1.0
ANGLES = (0.0, 2 * math.pi / 3, -2 * math.pi / 3)


def noise_episodes(initial: float, keys: range) -> Any:
    """A buffer of whole episodes from valve angle ``initial``, one pink-noise stream per key."""
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.world import BehaviorNoise, behavior_policy, run_episode
    from mbrl_ros.tasks import make_env

    env = make_env(TASK)
    env.set_initial_distribution(initial, initial)
    info = env.task.info
    buf = EpisodeBuffer("aggregate")
    for k in keys:
        rng = np.random.default_rng([3, k])
        behave = behavior_policy(lambda _o: np.zeros(info.act_dim), info.act_dim, np.full(info.act_dim, math.log(STD)),
                                 rng, BehaviorNoise(COLOR), info.horizon)
        buf.add_episode(run_episode(env, behave, 0, f"sym-{initial:.2f}-{k}", 0))
    env.close()
    return buf


def valve_errors(symmetry: bool, train: Any, tests: dict[float, Any], steps: int, seed: int = 0) -> dict:
    """Fit on ``train``; per test angle the valve-change RMS error and the normalised loss."""
    import torch

    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.tasks import get_task
    from mbrl_ros.tasks.dclaw_turn import MODEL_THETA

    torch.manual_seed(seed)
    cfg = load_config("pal", TASK, {"model_symmetry": symmetry, "model_max_steps": steps, "model_min_steps": steps,
                                    "device": "cpu"})
    player = ModelPlayer(get_task(TASK), cfg)
    player.fit(train, aggressive=True)
    out = {}
    for angle, buf in tests.items():
        x, y, _ = player.transitions(buf)
        with torch.no_grad():
            pred = player.ensemble.forward_normalized(x.expand(cfg.ensemble_size, -1, -1))
            pred = pred * player.ensemble.out_scale + player.ensemble.out_shift
        err = (pred[..., MODEL_THETA] - y[:, MODEL_THETA]).pow(2).mean().sqrt()
        out[angle] = {"valve_rmse": float(err), "loss": player.loss(x, y),
                      "valve_rms": float(y[:, MODEL_THETA].pow(2).mean().sqrt())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-episodes", type=int, default=60)
    ap.add_argument("--test-episodes", type=int, default=20)
    ap.add_argument("--steps", type=int, default=1000, help="gradient steps of the fit")
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args(argv)
    train = noise_episodes(0.0, range(a.train_episodes))
    held_out = range(10_000, 10_000 + a.test_episodes)
    tests = {angle: noise_episodes(angle, held_out) for angle in ANGLES}
    rows = []
    for symmetry in (True, False):
        r = valve_errors(symmetry, train, tests, a.steps)
        for angle in ANGLES:
            row = {"symmetry": symmetry, "angle": angle, **r[angle]}
            rows.append(row)
            print(f"model_symmetry {str(symmetry):5s} start {angle:+.2f} rad: valve change RMSE "
                  f"{row['valve_rmse']:.4f} rad/step (data RMS {row['valve_rms']:.4f}), loss {row['loss']:.3f}",
                  flush=True)
    lines = [
        f"The model player's ensemble (`{TASK}` configuration, {a.steps} gradient steps) fitted on "
        f"{a.train_episodes} episodes from valve angle 0, tested on {a.test_episodes} held-out episodes "
        f"per start angle (pink behaviour noise of std {STD} around the claw's middle pose, the same "
        "streams at every angle). Valve change RMSE: one-step error of the predicted change of the "
        "valve angle; loss: normalised squared error over every predicted value (`l(M, D)`).",
        "",
        "| model_symmetry | start angle (rad) | valve change RMSE (rad/step) | data RMS (rad/step) | loss |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {'on' if r['symmetry'] else 'off'} | {r['angle']:+.2f} | {r['valve_rmse']:.4f} | "
              f"{r['valve_rms']:.4f} | {r['loss']:.3f} |" for r in rows]
    lines += ["", f"Command: `{command_line()}`."]
    publish("valve_symmetry", "\n".join(lines), write=not a.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
