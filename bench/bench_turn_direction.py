"""D'Claw turn random: success of trained policies split by the way the valve must turn.

Runs each policy deterministically on the task's evaluation episodes (the games' own,
``mbrl_ros.core.world.evaluation_seeds``) and splits them by the sign of the initial target error
(obs ``target_error``): a policy that has learned to turn one way only succeeds on one side.

    .venv/bin/python -m bench.bench_turn_direction runs/bench_se_random/pal-dclaw-turn-random-s0 \\
        runs/bench_se_random/pal-dclaw-turn-random-s1 runs/bench_se_random/pal-dclaw-turn-random-s2

Each argument is a run folder (``policy.onnx`` and ``config.json`` with its seed). Writes the
BENCHMARKS.md section "turn_direction" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
from bench._report import command_line, publish

TASK = "dclaw-turn-random"
TARGET_ERROR = 20  # index of target_error in the D'Claw turn observation
NEAR_MISS = 0.35  # rad: a failure that ends this close (success needs < 0.1) turned the right way


def by_direction(run_dir: Path, episodes: int) -> dict:
    """Success per sign of the initial target error for the run's final policy."""
    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.core.train import make_world
    from mbrl_ros.core.world import evaluation_seeds, run_episode

    seed = int(json.loads((run_dir / "config.json").read_text())["seed"])
    policy = load_onnx_policy(run_dir / "policy.onnx", expect_task=TASK)
    env = make_world(TASK)
    sides: dict[str, list[bool]] = {"negative": [], "positive": []}
    near, far = 0, []  # failures ending within NEAR_MISS rad; the initial |error| of the others
    for i, s in enumerate(evaluation_seeds(episodes)):
        ep = run_episode(env, lambda o: policy.act(o[None])[0], s, f"dir-{i}", 0)
        start = float(ep.obs[0][TARGET_ERROR])
        sides["negative" if start < 0 else "positive"].append(bool(ep.success))
        if not ep.success:
            # The last observation's error: the state the success at the final step is scored on.
            if abs(float(ep.obs[-1][TARGET_ERROR])) < NEAR_MISS:
                near += 1
            else:
                far.append(abs(start))
    return {"run": str(run_dir), "seed": seed, "near": near, "far": far,
            **{k: (sum(v), len(v)) for k, v in sides.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders of dclaw-turn-random")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    args = ap.parse_args()
    if args.episodes <= 0:
        raise SystemExit("--episodes must be > 0")
    lines = [f"Final policies on `{TASK}`, deterministic, the task's {args.episodes} evaluation episodes, "
             "split by the sign of the initial target error (successes / episodes); failures split into "
             f"near misses (ending < {NEAR_MISS} rad from the target) and the others, with the smallest "
             "initial |target error| among those.", "",
             "| run | seed | target error < 0 | target error > 0 | near misses | other failures (min initial abs error) |",
             "|---|---|---|---|---|---|"]
    for run_dir in args.runs:
        r = by_direction(run_dir, args.episodes)
        far = f"{len(r['far'])} ({min(r['far']):.2f})" if r["far"] else "0"
        lines.append(f"| `{run_dir.name}` | {r['seed']} | {r['negative'][0]} / {r['negative'][1]} "
                     f"| {r['positive'][0]} / {r['positive'][1]} | {r['near']} | {far} |")
    lines += ["", f"Command: `{command_line()}`."]
    publish("turn_direction", "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
