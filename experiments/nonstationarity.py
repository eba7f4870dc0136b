"""Non-stationarity (paper figure 4): PAL vs MAL through a dynamics change and a goal change.

Each (algorithm, seed) job learns in the unchanged world until ``--change-at`` real samples,
checkpoints the game, and then continues from that same checkpoint in three branches:

- ``dynamics``: a physical parameter of the world changes (default: the servos' position gain
  ``actuator_gain`` halved, 2.0 -> 1.0; ROBEL randomises it in (1, 3));
- ``goal``: the goal distribution moves (default: the D'Claw target range shifted by -pi/2, i.e.
  the fixed target pi becomes pi/2, which needs a turn in the other direction);
- ``control``: nothing changes (what the curve would have done).

The change is applied to the training world and the evaluation world at the same iteration
boundary (the last one at or before ``--change-at``), so the branches share the pre-change
history exactly. The paper's finding: after a
dynamics change PAL recovers faster (its model follows recent data); after a goal change MAL
recovers faster (its policy best-responds). Recovery is measured in real samples after the
change until the goal progress (1 - final distance / initial distance, scale-free unlike the
return) is back at its pre-change level.

    .venv/bin/python -m experiments.nonstationarity --quick
    .venv/bin/python -m experiments.nonstationarity --jobs 2 --seeds 2

Writes ``<out>/nonstationarity.png``, ``<out>/results.json`` and (not with ``--quick``) the
BENCHMARKS.md section "experiments_nonstationarity".
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from experiments import common

NAME = "nonstationarity"
SECTION = "experiments_nonstationarity"
ALGOS = ("pal", "mal")
BRANCHES = ("dynamics", "goal", "control")
BRANCH_STYLE = {"dynamics": "-", "goal": "-", "control": ":"}

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "seeds": "1", "change_at": 160, "samples": 280, "eval_episodes": 4,
        "overrides": ["model_hidden=[32,32]", "npg_trajectories=16", "model_epochs_aggressive=10",
                      "model_min_steps=20", "model_max_steps=40", "cg_iters=5", "npg_steps_aggressive=3",
                      "value_epochs=1", "n_init=80", "samples_per_iter=40", "buffer_size=160"],
    },
    "default": {
        "seeds": "2", "change_at": 8000, "samples": 12000, "eval_episodes": 20,
        "overrides": ["model_hidden=[256,256]", "model_max_steps=400", "npg_trajectories=100"],
    },
    "full": {"seeds": "3", "change_at": 20000, "samples": 40000, "eval_episodes": 20, "overrides": []},
}


def parse_physics(items: list[str]) -> dict[str, float]:
    """``["actuator_gain=1.0", ...]`` -> ``{"actuator_gain": 1.0}``."""
    out: dict[str, float] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--dynamics {item!r} is not of the form name=value (e.g. actuator_gain=1.0)")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ValueError(f"--dynamics {item!r}: {v!r} is not a number") from None
        if not math.isfinite(out[k.strip()]):
            raise ValueError(f"--dynamics {item!r}: the value must be finite")
    if not out:
        raise ValueError("--dynamics needs at least one name=value")
    return out


def apply_change(world: Any, change: dict) -> dict:
    """Apply one branch's change to a world (gym env of mbrl_ros.tasks); returns what was set."""
    done: dict[str, Any] = {}
    for name, value in change.get("physics", {}).items():
        world.set_physics(name, value)  # ValueError names the valid parameters
        done[name] = value
    if "target" in change:
        lo, hi = change["target"]
        world.set_target_distribution(lo, hi)
        done["target"] = [lo, hi]
    return done


def shifted_target_range(task_id: str, shift: float) -> list[float]:
    """The task's target range moved by ``shift`` radians."""
    from mbrl_ros.tasks import get_task

    task = get_task(task_id)
    rng = getattr(task, "target_range", None)
    if rng is None:
        raise ValueError(f"{task_id} has no target distribution to move (choose a D'Claw turn or D'Kitty orient task)")
    return [float(rng[0]) + shift, float(rng[1]) + shift]


def goal_distance(task: Any, obs: np.ndarray) -> float:
    """How far the task's object is from its goal: D'Claw |target_error|, D'Kitty orient angle error."""
    if task.info.robot == "dclaw":
        from mbrl_ros.tasks.dclaw_turn import OBS_TARGET_ERROR

        return abs(float(obs[OBS_TARGET_ERROR]))
    if hasattr(task, "angle_error"):
        return float(task.angle_error(np.asarray(obs)))
    raise ValueError(f"{task.info.task_id}: no goal distance defined (use a D'Claw turn or D'Kitty orient task)")


class GoalTracker:
    """The evaluation world, recording how far each episode got towards its goal.

    ``progress = 1 - d_T / d_0`` (goal distance at the last step over the distance at the
    start): 1 = reached, 0 = no closer, < 0 = moved away. Unlike the return it does not depend
    on how far the goal is, so it compares policies across a goal change.
    """

    def __init__(self, env: Any) -> None:
        self.env = env
        self._episodes: list[list[float]] = []  # [d_0, d_last] per episode since the last take()

    def __getattr__(self, name: str) -> Any:  # .task, .set_physics, ... of the wrapped world
        if name == "env":
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(self, **kwargs: Any):
        obs, info = self.env.reset(**kwargs)
        d = goal_distance(self.env.task, obs)
        self._episodes.append([d, d])
        return obs, info

    def step(self, action: Any):
        out = self.env.step(action)
        if self._episodes:
            self._episodes[-1][1] = goal_distance(self.env.task, out[0])
        return out

    def take(self) -> Optional[float]:
        """Mean progress of the episodes since the last call (None if there were none)."""
        eps = [(d0, d) for d0, d in self._episodes if d0 > 1e-6]
        self._episodes = []
        return float(np.mean([1.0 - d / d0 for d0, d in eps])) if eps else None


def run_branches(params: dict, job_dir: Path) -> dict:
    """Worker: learn until change_at, checkpoint, then play every branch from the checkpoint."""
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.core.train import make_world

    algo, task, seed = params["algo"], params["task"], params["seed"]
    change_at, total, overrides = int(params["change_at"]), int(params["samples"]), params.get("overrides", [])
    progress = common.Progress(job_dir)
    metrics = Path(job_dir) / common.METRICS
    metrics.write_text("")
    offset = [0]  # progress units done by earlier phases

    def recorder(history: list[dict], phase: str, start: int, game: Any):
        def record(m: dict) -> None:
            m["branch"] = phase
            m["eval_progress"] = game.eval_world.take()  # the goal progress of this iteration's evaluation
            history.append(m)
            with metrics.open("a") as f:
                f.write(json.dumps(m) + "\n")
            progress.update(offset[0] + max(0, min(m["samples"], total) - start), branch=phase)
        return record

    cfg = common.game_config(algo, task, seed, change_at, overrides)
    game = StackelbergGame(cfg, make_world(task), GoalTracker(make_world(task)), params.get("device"))
    pre: list[dict] = []
    game.run(recorder(pre, "pre", 0, game))
    ckpt = Path(job_dir) / "checkpoint"
    game.save(ckpt)
    at = game.samples
    offset[0] = at
    out: dict[str, Any] = {"pre": pre, "change_at": at, "branches": {}, "changes": {}}
    for name, change in params["branches"].items():
        cfg_b = common.game_config(algo, task, seed, total, overrides)
        g = StackelbergGame(cfg_b, make_world(task), GoalTracker(make_world(task)), params.get("device"))
        g.load(ckpt)
        out["changes"][name] = apply_change(g.world, change)
        apply_change(g.eval_world, change)
        hist: list[dict] = []
        g.run(recorder(hist, name, at, g))
        out["branches"][name] = hist
        offset[0] += max(0, total - at)
    shutil.rmtree(ckpt, ignore_errors=True)  # the branches are done; keep runs/ small
    out["summary"] = {"algo": algo, "task": task, "seed": seed, "change_at": at, "samples": total}
    return out


WORKERS = {"branches": run_branches}


# ---------------------------------------------------------------------------------------------


BEFORE_WINDOW = 3  # pre-change evaluations averaged into the "before" level (one evaluation is noisy)


def recovery(pre: list[dict], post: list[dict], at: int, key: str = "eval_progress",
             control: Optional[list[dict]] = None) -> dict:
    """Drop and recovery after the change, from one run's pre-change and branch histories.

    ``before``: mean of the last ``BEFORE_WINDOW`` pre-change evaluations; ``first_after``: the
    first evaluation after the change; ``final``: the last one; ``recover_samples``: real
    samples after the change until an evaluation is back at ``before`` (None if never within
    the budget). With ``control`` (the same run's no-change branch): ``deficit`` = mean over the
    post-change evaluations of (no change - changed), i.e. how much the change cost on average.
    """
    if not pre or not post:
        raise ValueError("recovery needs pre-change and post-change evaluations")
    before = float(np.mean([float(m[key]) for m in pre[-BEFORE_WINDOW:]]))
    rec = next((int(m["samples"]) - at for m in post if float(m[key]) >= before), None)
    out = {"before": before, "first_after": float(post[0][key]), "final": float(post[-1][key]),
           "recover_samples": rec}
    if control:
        n = min(len(control), len(post))
        out["deficit"] = float(np.mean([float(c[key]) - float(m[key]) for c, m in zip(control[:n], post[:n])]))
    return out


def summarize(jobs: list[common.Job], results: dict[str, dict]) -> dict:
    out: dict[str, Any] = {}
    for algo in dict.fromkeys(j.params["algo"] for j in jobs):
        ok = [results[j.name] for j in jobs
              if j.params["algo"] == algo and "error" not in results.get(j.name, {"error": 1})]
        entry: dict[str, Any] = {"n_runs": len(ok), "branches": {}}
        if ok:
            entry["change_at"] = [r["change_at"] for r in ok]
            for branch in ok[0]["branches"]:
                curves = [r["pre"] + r["branches"][branch] for r in ok]
                rec = lambda key: [recovery(r["pre"], r["branches"][branch], r["change_at"], key,
                                            r["branches"].get("control")) for r in ok]
                entry["branches"][branch] = {
                    "success": common.aggregate(curves, "eval_success"),
                    "progress": common.aggregate(curves, "eval_progress"),
                    "ret": common.aggregate(curves, "eval_return"),
                    "progress_recovery": rec("eval_progress"),
                    "return_recovery": rec("eval_return"),
                    "success_recovery": rec("eval_success"),
                    "change": ok[0]["changes"].get(branch, {}),
                }
        out[algo] = entry
    return out


PANELS = (("success", "success rate (final step)"), ("progress", "goal progress 1 - d_T/d_0"),
          ("ret", "evaluation return"))


def plot(summary: dict, path: Path, title: str, change_at: int) -> None:
    plt = common.pyplot()
    changes = [b for b in BRANCHES if b != "control" and any(b in e["branches"] for e in summary.values())]
    ever = [v for e in summary.values() for b in e["branches"].values() for v in b["success"]["max"] if v]
    panels = PANELS if ever else PANELS[1:]  # success stayed 0 everywhere: the table says so, no empty panel
    fig, axes = plt.subplots(len(changes), len(panels), figsize=(5 * len(panels), 3.5 * len(changes)), squeeze=False)
    for row, branch in enumerate(changes):
        for col, (key, ylabel) in enumerate(panels):
            ax = axes[row][col]
            for algo, e in summary.items():
                color, label = common.ALGO_COLORS.get(algo), common.ALGO_LABELS.get(algo, algo)
                if branch in e["branches"]:
                    common.plot_band(ax, e["branches"][branch][key], f"{label}, {branch} change", color)
                if "control" in e["branches"]:  # the same runs without the change, after the change point
                    band = e["branches"]["control"][key]
                    x = np.asarray(band["samples"], dtype=float)
                    y = np.array([np.nan if v is None else v for v in band["mean"]], dtype=float)
                    keep = x >= min(e.get("change_at") or [change_at])
                    ax.plot(x[keep], y[keep], color=color, ls=":", lw=1.2, label=f"{label}, no change")
            for algo, e in summary.items():  # each game changes at its last iteration boundary <= change_at
                for at in sorted(set(e.get("change_at") or [change_at])):
                    ax.axvline(at, color=common.ALGO_COLORS.get(algo, "black"), lw=1.0, ls="--", alpha=0.8)
            ax.grid(alpha=0.3)
            what = key if key != "ret" else "return" + (" (scale changes with the goal)" if branch == "goal" else "")
            ax.set(title=f"{branch} change: {what}", xlabel="real samples", ylabel=ylabel)
        if ever:
            axes[row][0].set_ylim(-0.03, 1.03)
        axes[row][-2].legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(summary: dict, preset: str, args: argparse.Namespace, figure: str, task: str, branches: dict) -> str:
    p = PRESETS[preset]
    desc = []
    if "dynamics" in branches:
        physics = branches["dynamics"]["physics"]
        desc.append("dynamics change: " + ", ".join(f"`{k}` -> {v}" for k, v in physics.items()))
    if "goal" in branches:
        lo, hi = branches["goal"]["target"]
        desc.append(f"goal change: target range -> [{lo:.3f}, {hi:.3f}] rad")
    stats = lambda values, digits=2: common.fmt_stats(common.final_stats(values), digits)
    lines = [
        f"### Non-stationarity: PAL vs MAL through a dynamics change and a goal change ({task})",
        "",
        f"![non-stationarity]({figure})",
        "",
        f"Budget `{preset}`: {budget_note(preset)} Change at the last iteration boundary at or before "
        f"{args.change_at} real samples (dashed lines), run to {args.samples}; {'; '.join(desc)}. "
        f"Evaluation: {p['eval_episodes']} episodes, "
        "deterministic policy, after every iteration; curves: mean and min..max over seeds; dotted: the same runs "
        "without the change. Goal progress = mean over evaluation episodes of 1 - d_T/d_0 (goal distance at the "
        "last step over the distance at the start; 1 = at the goal, 0 = no closer, < 0 = further away): unlike the "
        "return it does not change scale with the goal. `before` = mean of the last 3 pre-change evaluations; "
        "`deficit` = mean over the post-change evaluations of (no change - changed) goal progress of the same run "
        "(what the change cost; lower = less hurt or faster recovery); `recover` = real samples after the change "
        "until the goal progress is back at `before` (per seed; `never` = not within the budget).",
        "",
        "| algorithm | change | seeds | progress before | first after | final | final without change "
        "| deficit vs no change | recover (samples) | success before -> final | return before -> final |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for algo, e in summary.items():
        label = common.ALGO_LABELS.get(algo, algo)
        control = e["branches"].get("control")
        for branch, b in e["branches"].items():
            if branch == "control":
                continue
            r, s, ret = b["progress_recovery"], b["success_recovery"], b["return_recovery"]
            ctrl = stats([c["final"] for c in control["progress_recovery"]]) if control else "n/a"
            rec = ", ".join("never" if x["recover_samples"] is None else str(x["recover_samples"]) for x in r)
            lines.append(
                f"| {label} | {branch} | {e['n_runs']} | {stats([x['before'] for x in r])} "
                f"| {stats([x['first_after'] for x in r])} | {stats([x['final'] for x in r])} | {ctrl} "
                f"| {stats([x.get('deficit') for x in r])} | {rec} "
                f"| {stats([x['before'] for x in s])} -> {stats([x['final'] for x in s])} "
                f"| {stats([x['before'] for x in ret], 0)} -> {stats([x['final'] for x in ret], 0)} |"
            )
    lines += ["", f"Command: `{common.command_line()}`."]
    return "\n".join(lines)


def budget_note(preset: str) -> str:
    if preset == "quick":
        return "QUICK pipeline check (a few episodes per phase, tiny networks): not a result."
    if preset == "full":
        return "the paper's networks and schedules (config/<algo>.yaml)."
    return ("REDUCED: ensemble members MLP(256, 256) instead of MLP(512, 512), model fits capped at 400 gradient "
            "steps, 100 synthetic trajectories per NPG step, and budgets far below the paper's (the policies have "
            "not converged when the change happens: the drops and recoveries are those of partly trained policies).")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(ap, NAME)
    ap.add_argument("--task", default="dclaw-turn-fixed", help="task id (a D'Claw turn task by default)")
    ap.add_argument("--algos", default=",".join(ALGOS), help="comma list of games")
    ap.add_argument("--change-at", type=int, default=None,
                    help="real samples before the change (default: the budget's)")
    ap.add_argument("--samples", type=int, default=None,
                    help="total real samples of each branch (default: the budget's)")
    ap.add_argument("--dynamics", action="append", default=None, metavar="NAME=VALUE",
                    help="the dynamics change, repeatable (default actuator_gain=1.0; see RobelEnv.set_physics)")
    ap.add_argument("--goal-shift", type=float, default=-math.pi / 2,
                    help="radians added to the target range (default -pi/2)")
    ap.add_argument("--branches", default=",".join(BRANCHES), help="comma list of dynamics, goal, control")
    args = ap.parse_args(argv)
    if args.worker:
        return common.worker_main(args.worker, WORKERS)
    common.check_common_arguments(args)
    from mbrl_ros.core.schedule import game_spec
    from mbrl_ros.tasks import canonical_task_id

    preset = "quick" if args.quick else "full" if args.full else "default"
    p = PRESETS[preset]
    args.task = canonical_task_id(args.task)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    for a in algos:
        game_spec(a)
    args.change_at = args.change_at if args.change_at is not None else p["change_at"]
    args.samples = args.samples if args.samples is not None else p["samples"]
    if not 0 < args.change_at < args.samples:
        raise ValueError(f"need 0 < --change-at ({args.change_at}) < --samples ({args.samples})")
    if not math.isfinite(args.goal_shift):
        raise ValueError("--goal-shift must be finite")
    names = [b.strip() for b in args.branches.split(",") if b.strip()]
    if not names or any(b not in BRANCHES for b in names):
        raise ValueError(f"--branches takes a comma list of {', '.join(BRANCHES)}, got {args.branches!r}")
    all_branches = {
        "dynamics": {"physics": parse_physics(args.dynamics or ["actuator_gain=1.0"])},
        "goal": {"target": shifted_target_range(args.task, args.goal_shift)},
        "control": {},
    }
    branches = {b: all_branches[b] for b in names}
    from mbrl_ros.core.train import make_world  # check the changes apply before starting anything

    probe = make_world(args.task)
    for change in branches.values():
        apply_change(probe, change)
    probe.close()
    overrides = [*p["overrides"], f"eval_episodes={p['eval_episodes']}", *args.overrides]
    jobs = []
    for algo in algos:
        for seed in common.parse_seeds(args.seeds or p["seeds"]):
            common.game_config(algo, args.task, seed, args.samples, overrides)  # bad overrides fail here
            params = {"algo": algo, "task": args.task, "seed": seed, "change_at": args.change_at,
                      "samples": args.samples, "overrides": overrides, "branches": branches, "threads": args.threads}
            total = args.change_at + len(branches) * (args.samples - args.change_at)
            jobs.append(common.Job(f"{algo}-{args.task}-s{seed}", "branches", params, total=total))
    out = Path(args.out)
    print(f"{len(jobs)} runs x {len(branches)} branches ({preset} budget) -> {out}", flush=True)
    results = common.run_jobs(Path(__file__), jobs, out, args.jobs, WORKERS, not args.no_progress, NAME,
                              run=not args.report_only)
    if args.report_only:
        jobs = [j for j in jobs if j.name in results]
        if not jobs:
            raise ValueError(f"--report-only: no finished runs with these settings in {out}")
    summary = summarize(jobs, results)
    figure = out / "nonstationarity.png"
    plot(summary, figure, f"PAL vs MAL under non-stationarity on {args.task} ({preset} budget)", args.change_at)
    common.write_json(out / "results.json", {"preset": preset, "command": common.command_line(), "task": args.task,
                                             "changes": branches, "summary": summary})
    write_docs = not args.quick and not args.no_report
    if write_docs:
        figure = common.copy_figure(figure, "nonstationarity.png")
    text = report(summary, preset, args, common.relpath(figure), args.task, branches)
    return common.finish(text, SECTION, write_docs, results, out)


if __name__ == "__main__":
    sys.exit(common.script_main(main))
