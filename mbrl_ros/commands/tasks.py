"""``mbrl-ros tasks``: list the simulated ROBEL tasks with their sizes, horizon and control rate."""

from __future__ import annotations

import argparse
import json

HELP = "list the ROBEL tasks (task id, gym id, observation/action sizes, horizon, control rate)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per task instead of a table")


def rows() -> list[dict]:
    """One dict per task: the facts printed by ``mbrl-ros tasks`` (pure: no MuJoCo needed)."""
    from mbrl_ros.tasks import TASK_IDS, get_task

    out = []
    for task_id in TASK_IDS:
        task = get_task(task_id)
        i = task.info
        out.append(
            {
                "task_id": i.task_id,
                "gym_id": i.gym_id,
                "robot": i.robot,
                "obs_dim": i.obs_dim,
                "act_dim": i.act_dim,
                "model_dim": task.model_dim,
                "horizon": i.horizon,
                "control_hz": round(1.0 / i.dt, 6),
                "episode_s": round(i.horizon * i.dt, 6),
            }
        )
    return out


def run(args: argparse.Namespace) -> int:
    table = rows()
    if args.json:
        for r in table:
            print(json.dumps(r))
        return 0
    cols = [
        ("task id", "task_id"),
        ("gym id", "gym_id"),
        ("obs", "obs_dim"),
        ("act", "act_dim"),
        ("horizon", "horizon"),
        ("rate Hz", "control_hz"),
        ("episode s", "episode_s"),
    ]
    cells = [[str(r[k]) if not isinstance(r[k], float) else f"{r[k]:g}" for _, k in cols] for r in table]
    widths = [max(len(h), *(len(c[j]) for c in cells)) for j, (h, _) in enumerate(cols)]
    print("  ".join(h.ljust(w) for (h, _), w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths)))
    return 0
