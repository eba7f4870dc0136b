"""D'Claw turn fixed: how the final policies turn the valve (why some seeds stall).

Plays each run's final policy (``policy.onnx``) deterministically on the task's evaluation
episode (turn fixed resets deterministically: one episode) and reports the valve angle over the
episode, the number of strokes (phases of turning separated by a pause: the fingers regrasp)
and the final target error; plots the valve angle of every run against the step.

    .venv/bin/python -m bench.bench_turn_strokes runs/s12_base/pal-dclaw-turn-fixed-s0 ... \\
        [--figure docs/figures/turn_strokes.png]

Writes the BENCHMARKS.md section "turn_strokes" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench._report import command_line, publish

TASK = "dclaw-turn-fixed"
MOVING = 0.03  # rad per step: the valve turns (below: it rests, the fingers regrasp or hold)
SUCCESS_ERROR = 0.1  # rad: ROBEL's success band


def valve_profile(run_dir: Path) -> dict:
    """Valve angle per step of the run's final policy on the evaluation episode."""
    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.core.world import evaluation_seeds, run_episode
    from mbrl_ros.tasks import make_env

    env = make_env(TASK)
    policy = load_onnx_policy(str(run_dir / "policy.onnx"), expect_task=TASK)
    ep = run_episode(env, policy.act, evaluation_seeds(1)[0], "turn-strokes", 0)
    names = list(env.task.info.obs_names)
    cos_i, sin_i, err_i = names.index("object_x"), names.index("object_y"), names.index("target_error")
    angle = np.unwrap(np.arctan2(ep.obs[:, sin_i], ep.obs[:, cos_i]))
    moving = np.abs(np.diff(angle)) > MOVING
    strokes = int(np.sum(moving[1:] & ~moving[:-1]) + (1 if moving[0] else 0))
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    return {
        "run": run_dir.name,
        "group": run_dir.parent.name,
        "angle": angle.tolist(),
        "strokes": strokes,
        "final_error": float(ep.obs[-1, err_i]),
        "samples": summary.get("samples"),
        "held": summary.get("samples_to_90"),
    }


def plot(profiles: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for p in profiles:
        ok = abs(p["final_error"]) < SUCCESS_ERROR
        ax.plot(p["angle"], color="tab:green" if ok else "tab:red", alpha=0.8,
                label=f"{p['group']}/{p['run'].split('-')[-1]} ({p['strokes']} strokes)")
    for y in (np.pi, -np.pi):
        ax.axhline(y, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("valve angle (rad)")
    ax.set_title("D'Claw turn fixed: final policies (green: at the target, red: stalled)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="finished run folders (policy.onnx, summary.json)")
    ap.add_argument("--figure", default=None, metavar="PNG")
    ap.add_argument("--no-report", action="store_true")
    a = ap.parse_args(argv)
    profiles = [valve_profile(r) for r in a.runs]
    lines = [
        "Final policies of PAL runs on `dclaw-turn-fixed`, played deterministically on the evaluation episode. "
        f"Stroke = a phase of turning (> {MOVING} rad per step) after a pause (the fingers regrasp). "
        "Valve angle every 4 steps (target: +-pi).",
        "",
        "| run | samples | held 90% at | strokes | final error (rad) | valve angle every 4 steps |",
        "|---|---|---|---|---|---|",
    ]
    for p in profiles:
        every4 = " ".join(f"{x:+.2f}" for x in p["angle"][::4])
        lines.append(f"| {p['group']}/{p['run']} | {p['samples']} | {p['held'] if p['held'] else '-'} "
                     f"| {p['strokes']} | {p['final_error']:+.2f} | {every4} |")
        print(lines[-1], flush=True)
    lines += ["", f"Command: `{command_line()}`."]
    if a.figure:
        plot(profiles, Path(a.figure))
        lines += ["", f"![turn strokes]({a.figure})"]
    publish("turn_strokes", "\n".join(lines), write=not a.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
