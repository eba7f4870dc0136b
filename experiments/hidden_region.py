"""The poster's phenomenon in continuous control: MAL's model hides the hidden region; PAL and both fixes find it.

PAL, MAL, MAL + agent reward and MAL + random noise on ``hidden-region`` (a point mass whose
rewarding region lies behind a wall, reachable only through an entrance; docs/tasks.md), with
the task's default budgets (config/task-hidden-region.yaml). After every iteration the script
asks each game's model what it believes about the hidden region:

- ``belief_route``: the fraction of (member, start state) pairs in which the scripted route
  through the entrance ends in the hidden region *in the model* (1: the model knows the way;
  0: it predicts the entrance as a wall or the route as going elsewhere);
- ``belief_entrance``: the fraction of (member, probe) pairs in which a mass at the entrance
  moving right is predicted to cross the wall line (probes at the entrance's bottom, middle
  and top).

    .venv/bin/python -m experiments.hidden_region --quick             # pipeline check, ~1 min
    .venv/bin/python -m experiments.hidden_region --jobs 1            # 4 games x 5 seeds, sequential

Writes ``<out>/hidden_region.png``, ``<out>/results.json`` and (not with ``--quick``) the
figure ``docs/figures/hidden_region.png`` and the BENCHMARKS.md section "experiments_hidden_region".
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from experiments import common

NAME = "hidden_region"
SECTION = "experiments_hidden_region"
TASK = "hidden-region"
ALGOS = ("pal", "mal", "mal-agent-reward", "mal-noise")
PROBE_STARTS = 10  # start states of the route probe (the task's evaluation starts)
TARGET_MAL, TARGET_OTHERS = 0.2, 0.8  # issue 17: plain MAL <= 0.2, PAL and both fixes >= 0.8

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"seeds": "1", "samples": 1800, "overrides": ["n_init=400", "samples_per_iter=200", "model_min_steps=20", "model_max_steps=50",
                                                           "npg_trajectories=10", "npg_steps_aggressive=3",
                                                           "eval_episodes=3"]},
    "default": {"seeds": "5", "samples": None, "overrides": []},  # config/task-hidden-region.yaml as it is
    "full": {"seeds": "5", "samples": None, "overrides": []},
}


# ---------------------------------------------------------------------------------------------
# What a model believes about the hidden region


def model_beliefs(ensemble: Any, task: Any, n_starts: int = PROBE_STARTS) -> dict:
    """``belief_route`` and ``belief_entrance`` of ``ensemble`` (see the module docstring)."""
    import torch

    from mbrl_ros.core.model_rollout import model_step
    from mbrl_ros.core.world import evaluation_seeds
    from mbrl_ros.tasks.hidden_region import ENTRANCE, GAP_LOW, HiddenRegionEnv, scripted_action

    env = HiddenRegionEnv()
    starts = np.array([env.reset(seed=s)[0] for s in evaluation_seeds(n_starts)])
    dev = next(ensemble.parameters()).device
    E = ensemble.ensemble_size
    as_t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev)
    with torch.no_grad():
        obs = as_t(starts).unsqueeze(0).expand(E, -1, -1).contiguous()
        for _ in range(task.info.horizon):
            a = scripted_action(obs.cpu().numpy().astype(np.float64))
            obs, _, _ = model_step(ensemble, task, obs, as_t(a))
        route = float(task.success(obs).float().mean())
        ys = [GAP_LOW + 0.1, ENTRANCE[1], 0.9]
        probe = as_t([[-0.05, y, 0.6, 0.0] for y in ys]).unsqueeze(0).expand(E, -1, -1).contiguous()
        nxt, _, _ = model_step(ensemble, task, probe, as_t(np.tile([1.0, 0.0], (E, len(ys), 1))))
        entrance = float((nxt[..., 0] > 0.0).float().mean())
    return {"belief_route": route, "belief_entrance": entrance}


def run_game(params: dict, job_dir: Path) -> dict:
    """One game with the beliefs measured after every iteration."""
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.core.train import make_world

    cfg = common.game_config(params["algo"], TASK, params["seed"], params["samples"], params.get("overrides", []))
    game = StackelbergGame(cfg, make_world(TASK), make_world(TASK), "cpu")
    hook = lambda g, m: model_beliefs(g.model_player.ensemble, g.task)
    return common.play_game(params, job_dir, hook=hook, game=game)


WORKERS = {"game": run_game}


# ---------------------------------------------------------------------------------------------
# Report


def summarize(jobs: list, results: dict) -> dict:
    out: dict[str, Any] = {}
    for algo in ALGOS:
        runs = [results[j.name] for j in jobs if j.params["algo"] == algo and j.name in results
                and "error" not in results[j.name]]
        if not runs:
            continue
        hist = [r["history"] for r in runs]
        finals = [r["summary"]["final_success"] for r in runs]
        out[algo] = {
            "seeds": [r["summary"]["seed"] for r in runs],
            "final_success": finals,
            "final_success_stats": common.final_stats(finals),
            "final_return": common.final_stats([r["summary"]["final_return"] for r in runs]),
            "final_belief_route": common.final_stats([h[-1].get("belief_route") for h in hist]),
            "final_belief_entrance": common.final_stats([h[-1].get("belief_entrance") for h in hist]),
            "first_touch_90": [r["summary"].get("first_touch_90") for r in runs],
            "relapses": [r["summary"].get("relapses", 0) for r in runs],
            "samples": [r["summary"]["samples"] for r in runs],
            "wall_s": [r["summary"]["wall_s"] for r in runs],
            "success_band": common.aggregate(hist, "eval_success"),
            "route_band": common.aggregate(hist, "belief_route"),
            "entrance_band": common.aggregate(hist, "belief_entrance"),
        }
    return out


def plot(summary: dict, path: Path, title: str) -> None:
    plt = common.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [("success_band", "success (final step, world)"),
              ("route_band", "model: scripted route reaches the region"),
              ("entrance_band", "model: mass at the entrance crosses")]
    for ax, (key, label) in zip(axes, panels):
        for algo, s in summary.items():
            common.plot_band(ax, s[key], common.ALGO_LABELS[algo], common.ALGO_COLORS[algo])
        ax.set(xlabel="real samples", ylabel=label, ylim=(-0.05, 1.05))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)


def report(summary: dict, preset: str, figure: str, overrides: Optional[list[str]] = None) -> str:
    """The BENCHMARKS table; ``preset`` names the budget (e.g. "default budget", "30000 samples"),
    ``overrides`` a variant's changes to the configuration."""
    changed = f"; overrides {' '.join(overrides)}" if overrides else ""
    lines = [
        f"Command: `{common.command_line()}` ({preset}; config/task-hidden-region.yaml{changed}; "
        f"seeds {', '.join(str(s) for s in next(iter(summary.values()))['seeds']) if summary else '-'}).",
        "",
        "| game | final success per seed | mean (min..max) | first >= 0.9 at (relapses after it) per seed "
        "| final return | model: route reaches the region | model: entrance passable | samples | wall s per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for algo, s in summary.items():
        per_seed = ", ".join("-" if v is None else f"{v:.1f}" for v in s["final_success"])
        touches = ", ".join("-" if t is None else f"{int(t)} ({int(n or 0)})"
                            for t, n in zip(s.get("first_touch_90", []), s.get("relapses", [])))
        lines.append(
            f"| {common.ALGO_LABELS[algo]} | {per_seed} | {common.fmt_stats(s['final_success_stats'])} | {touches or '-'} "
            f"| {common.fmt_stats(s['final_return'], 1)} | {common.fmt_stats(s['final_belief_route'])} "
            f"| {common.fmt_stats(s['final_belief_entrance'])} | {int(np.mean(s['samples']))} "
            f"| {np.mean(s['wall_s']):.0f} |")
    lines.append("")
    checks = []
    for algo, s in summary.items():
        mean = s["final_success_stats"].get("mean")
        if mean is None:
            continue
        ok = mean <= TARGET_MAL if algo == "mal" else mean >= TARGET_OTHERS
        want = f"<= {TARGET_MAL}" if algo == "mal" else f">= {TARGET_OTHERS}"
        checks.append(f"{common.ALGO_LABELS[algo]} {mean:.2f} (target {want}: {'met' if ok else 'not met'})")
    lines.append("Targets (issue 17, mean final success over seeds): " + "; ".join(checks) + ".")
    lines.append("")
    lines.append(f"Figure: `{figure}` (mean and min..max over seeds: world success, and what each game's "
                 "model believes about the hidden region after every iteration).")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(ap, NAME)
    ap.add_argument("--algos", default=",".join(ALGOS), help="comma list of games")
    ap.add_argument("--samples", type=int, default=None, help="real samples per run (default: the task's config)")
    ap.add_argument("--variant", default=None,
                    help="label of a configuration changed with --set: its own figure and BENCHMARKS section "
                         "(required with --set when the report is written, so the default's section stays)")
    args = ap.parse_args(argv)
    if args.worker:
        return common.worker_main(args.worker, WORKERS)
    common.check_common_arguments(args)
    if args.variant is not None and not re.fullmatch(r"[a-z0-9_]+", args.variant):
        ap.error(f"--variant must be lower-case letters, digits and _, got {args.variant!r}")
    if args.overrides and args.variant is None and not (args.quick or args.no_report):
        ap.error("--set changes the games: name the configuration with --variant (its own BENCHMARKS section)")
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.schedule import game_spec

    preset = "quick" if args.quick else "full" if args.full else "default"
    p = PRESETS[preset]
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    for a in algos:
        game_spec(a)
    overrides = [*p["overrides"], *args.overrides]
    jobs = []
    # seed-major order: a sweep stopped early still has every game on its first seeds
    for seed in common.parse_seeds(args.seeds or p["seeds"]):
        for algo in algos:
            budget = args.samples or p["samples"] or load_config(algo, TASK).samples
            common.game_config(algo, TASK, seed, budget, overrides)  # bad overrides fail here
            params = {"algo": algo, "seed": seed, "samples": budget, "overrides": overrides, "threads": args.threads,
                      "measure": "beliefs/1"}
            jobs.append(common.Job(f"{algo}-s{seed}", "game", params, total=budget))
    out = Path(args.out)
    print(f"{len(jobs)} runs ({f'{args.samples} samples' if args.samples else preset + ' budget'}) -> {out}", flush=True)
    results = common.run_jobs(Path(__file__), jobs, out, args.jobs, WORKERS, not args.no_progress, NAME,
                              run=not args.report_only)
    summary = summarize(jobs, results)
    # another budget than the task's gets its own figure and BENCHMARKS section (the default's stays)
    suffix = "".join(f"_{x}" for x in (args.samples, args.variant) if x)
    name, section = f"{NAME}{suffix}", f"{SECTION}{suffix}"
    figure = out / f"{name}.png"
    budget = f"{args.samples} samples" if args.samples else f"{preset} budget"
    plot(summary, figure, f"hidden-region ({budget}): world success and the models' beliefs")
    write_docs = not args.quick and not args.no_report
    shown = common.relpath(figure)
    if write_docs:
        shown = common.relpath(common.copy_figure(figure, f"{name}.png"))
    text = report(summary, budget, shown, overrides if args.variant else [])
    common.write_json(out / "results.json", {"preset": preset, "command": common.command_line(), "summary": summary})
    return common.finish(text, section, write_docs, results, out)


if __name__ == "__main__":
    sys.exit(common.script_main(main))
