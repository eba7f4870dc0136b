"""Model error amplification (paper appendix B.3): open-loop vs closed-loop prediction error.

``L(t) = E || s_t(world) - s_t(model) ||`` for t = 0..H, from the same start states:

- open loop: the policy runs in the world; its actions are replayed in the model;
- closed loop: the policy runs in the world and, separately, in the model (acting on the
  model's own predicted states).

Measured for PAL and MAL at three stages of training (default: the first policy improvement,
half-way through the budget, the last iteration), each time right after the policy player's
move, i.e. on the pair (model M, policy pi improved in M) that the policy trusts. States are
compared in the task's model space (``task.to_model``; an angle's error wrapped, so an angle
near +-pi is not an error of 2 pi), leaving out the copied-in last action
(:func:`state_dims`; the whole vector is kept as ``*_all``); errors are averaged over the ensemble
members (each member rolled out on its own, as in model-based NPG), the start states, and the
seeds. The paper reports that the closed-loop error stays below the open-loop error: the
policy corrects the model's drift.

    .venv/bin/python -m experiments.model_error --quick
    .venv/bin/python -m experiments.model_error --jobs 2

Writes ``<out>/model_error.png``, ``<out>/results.json`` and (not with ``--quick``) the
BENCHMARKS.md section "experiments_model_error".
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from experiments import common

NAME = "model_error"
SECTION = "experiments_model_error"
ALGOS = ("pal", "mal")
MEASURE_SEED_BASE = 3_000_017  # measurement start states: the same for every algorithm, seed and stage
STAGE_COLORS = ("tab:green", "tab:orange", "tab:red", "tab:purple", "tab:brown")

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "seeds": "1", "samples": 240, "episodes": 3, "eval_episodes": 2,
        "overrides": ["model_hidden=[32,32]", "npg_trajectories=16", "model_epochs_aggressive=10",
                      "model_min_steps=20", "model_max_steps=40", "cg_iters=5", "npg_steps_aggressive=3",
                      "value_epochs=1", "n_init=80", "samples_per_iter=40", "buffer_size=160"],
    },
    "default": {
        "seeds": "2", "samples": 10000, "episodes": 20, "eval_episodes": 20,
        "overrides": ["model_hidden=[256,256]", "model_max_steps=400", "npg_trajectories=100"],
    },
    "full": {"seeds": "3", "samples": None, "episodes": 50, "eval_episodes": 20, "overrides": []},
}


def world_episodes(world: Any, policy: Any, seeds: Sequence[int]) -> list[dict]:
    """Deterministic episodes of ``policy`` (a GaussianMLPPolicy) in the world: obs [T+1], actions [T]."""
    out = []
    aux_dim = world.task.aux_dim
    for seed in seeds:
        obs, info = world.reset(seed=int(seed))
        observations, actions, rewards, aux = [obs], [], [], [info.get("aux", np.zeros(aux_dim))]
        done = False
        while not done:
            a = policy.act(obs, deterministic=True)
            obs, r, terminated, truncated, info = world.step(a)
            observations.append(obs)
            aux.append(info.get("aux", np.zeros(aux_dim)))
            actions.append(np.clip(a, -1.0, 1.0))
            rewards.append(r)
            done = terminated or truncated
        out.append({"obs": np.asarray(observations), "actions": np.asarray(actions), "ret": float(np.sum(rewards)),
                    "aux": np.asarray(aux).reshape(len(observations), aux_dim)})
    return out


def _aux(task: Any, like: np.ndarray) -> Any:
    """Zero model-only state for ``like``'s batch shape (None for tasks without any)."""
    return np.zeros(like.shape[:-1] + (task.aux_dim,)) if task.aux_dim else None


def state_dims(task: Any) -> np.ndarray:
    """Mask of the model-space values that are state, i.e. all but the copied-in last action.

    The observation carries the previous action, which the model does not predict (it is
    written in exactly, ``task.fix_known``): open loop it is exact by construction, closed loop
    it is the difference of two actions, not a prediction error. Found by moving the
    ``last_action`` entries of an observation and seeing which model-space values follow.
    """
    names = task.info.obs_names
    idx = [i for i, n in enumerate(names) if n.startswith("last_action")]
    base = np.zeros(task.info.obs_dim)
    moved = base.copy()
    moved[idx] = 0.5
    changed = np.abs(np.asarray(task.to_model(moved, _aux(task, moved))) - np.asarray(task.to_model(base, _aux(task, base)))) > 1e-12
    return ~changed


def prediction_errors(ensemble: Any, task: Any, policy: Any, episodes: list[dict]) -> dict:
    """L(t) open loop and closed loop for t = 0..T over ``episodes`` (see the module docstring).

    ``open_loop``/``closed_loop``: over the state values (:func:`state_dims`);
    ``open_loop_all``/``closed_loop_all``: over the whole model-space vector, last action included.
    Episodes that ended early (termination) count only while they last (``count[t]``).
    """
    import torch

    from mbrl_ros.core.model_rollout import model_step

    if not episodes:
        raise ValueError("prediction_errors needs at least one world episode")
    dev = next(ensemble.parameters()).device
    T = max(len(e["actions"]) for e in episodes)
    n, E = len(episodes), ensemble.ensemble_size
    obs_dim, act_dim = task.info.obs_dim, task.info.act_dim
    w_obs = np.zeros((T + 1, n, obs_dim))
    w_aux = np.zeros((T + 1, n, task.aux_dim))
    w_act = np.zeros((T, n, act_dim))
    alive = np.zeros((T + 1, n), dtype=bool)
    for i, e in enumerate(episodes):
        k = len(e["actions"])
        w_obs[: k + 1, i], w_act[:k, i], alive[: k + 1, i] = e["obs"], e["actions"], True
        if task.aux_dim:
            w_aux[: k + 1, i] = e["aux"]
    as_t = lambda x: torch.as_tensor(x, dtype=torch.float32, device=dev)
    z_world = as_t(np.asarray(task.to_model(w_obs, w_aux if task.aux_dim else None)))  # [T+1, n, z]
    start = as_t(w_obs[0]).unsqueeze(0).expand(E, n, obs_dim).contiguous()
    start_aux = as_t(w_aux[0]).unsqueeze(0).expand(E, n, task.aux_dim).contiguous() if task.aux_dim else None
    open_obs, closed_obs = start, start
    open_aux, closed_aux = start_aux, start_aux
    mask = torch.as_tensor(state_dims(task), device=dev)
    errs = {k: [np.zeros(n)] for k in ("open_loop", "closed_loop", "open_loop_all", "closed_loop_all")}
    model_ret = torch.zeros(E, n, device=dev)
    model_alive = torch.ones(E, n, device=dev)
    with torch.no_grad():
        for t in range(T):
            a_open = as_t(w_act[t]).unsqueeze(0).expand(E, n, act_dim)
            open_obs, open_aux, _ = model_step(ensemble, task, open_obs, a_open, open_aux)
            a_closed = torch.clamp(policy(closed_obs), -1.0, 1.0)
            next_closed, closed_aux, r = model_step(ensemble, task, closed_obs, a_closed, closed_aux)
            model_ret += r * model_alive
            model_alive = model_alive * (~torch.as_tensor(task.done(next_closed), device=dev)).to(model_alive.dtype)
            closed_obs = next_closed
            for loop, pred, pred_aux in (("open_loop", open_obs, open_aux), ("closed_loop", closed_obs, closed_aux)):
                # [E, n, z]; an angle's error wrapped (DynamicsEnsemble.state_delta)
                diff = ensemble.state_delta(z_world[t + 1].unsqueeze(0), task.to_model(pred, pred_aux))
                errs[loop].append(torch.linalg.vector_norm(diff[..., mask], dim=-1).mean(0).cpu().numpy())
                errs[loop + "_all"].append(torch.linalg.vector_norm(diff, dim=-1).mean(0).cpu().numpy())
    count = alive.sum(1)
    mean_alive = lambda e: [float(np.sum(np.asarray(v)[alive[t]]) / max(count[t], 1)) for t, v in enumerate(e)]
    return {
        "t": list(range(T + 1)), **{k: mean_alive(v) for k, v in errs.items()}, "count": count.tolist(),
        "state_dims": int(mask.sum()), "world_return": float(np.mean([e["ret"] for e in episodes])),
        "model_return": float(model_ret.mean()),
    }


def stage_thresholds(fractions: Sequence[float], n_init: int, budget: int) -> list[float]:
    """Stage f is due at the first policy improvement with ``samples >= n_init + f (budget - n_init)``."""
    return [n_init + f * max(0, budget - n_init) for f in fractions]


def measured_game_class():
    """StackelbergGame that measures L(t) right after the policy player's move at each stage."""
    from mbrl_ros.core.schedule import Phase
    from mbrl_ros.core.stackelberg import StackelbergGame

    class MeasuredGame(StackelbergGame):
        def setup_measurements(self, probe_world: Any, fractions: Sequence[float], seeds: Sequence[int]) -> None:
            self.probe_world, self.fractions, self.measure_seeds = probe_world, list(fractions), list(seeds)
            self.thresholds = stage_thresholds(self.fractions, self.cfg.n_init, self.cfg.samples)
            self.pending = list(range(len(self.fractions)))
            self.measurements: list[dict] = []

        def is_last_iteration(self) -> bool:
            """Collection follows the policy step in every schedule: is this iteration's the last?"""
            n = self.n_per_iter + self.random_fraction_samples(self.n_per_iter)
            capped = bool(self.cfg.max_iterations) and self.referee.iteration >= self.cfg.max_iterations
            return capped or self.samples + 2 * n > self.cfg.samples

        def measured_improve_policy(self) -> None:
            StackelbergGame.improve_policy(self)
            last = self.is_last_iteration()
            due = [i for i in self.pending if last or (self.fractions[i] < 1 and self.samples >= self.thresholds[i])]
            if not due:
                return
            policy = self.policy_player.policy
            episodes = world_episodes(self.probe_world, policy, self.measure_seeds)
            m = prediction_errors(self.model_player.ensemble, self.task, policy, episodes)
            for i in due:
                self.pending.remove(i)
                self.measurements.append({"stage": i, "fraction": self.fractions[i],
                                          "iteration": self.referee.iteration, "samples": self.samples, **m})

        PHASES = {**StackelbergGame.PHASES, Phase.IMPROVE_POLICY: measured_improve_policy}

    return MeasuredGame


def run_measured(params: dict, job_dir: Path) -> dict:
    """Worker: one game of ``params["algo"]`` with L(t) measured at the stages."""
    from mbrl_ros.core.train import make_world

    cfg = common.game_config(params["algo"], params["task"], params["seed"], params["samples"],
                             params.get("overrides", []))
    game = measured_game_class()(cfg, make_world(cfg.task_id), make_world(cfg.task_id), params.get("device"))
    seeds = [MEASURE_SEED_BASE + i for i in range(int(params["episodes"]))]
    game.setup_measurements(make_world(cfg.task_id), params["fractions"], seeds)
    result = common.play_game(params, job_dir, game=game)
    result["measurements"] = sorted(game.measurements, key=lambda x: x["stage"])
    return result


WORKERS = {"measured": run_measured}


# ---------------------------------------------------------------------------------------------


def mean_curves(measurements: list[dict], key: str) -> dict:
    """Mean, min and max over seeds of one stage's L(t) (truncated to the shortest)."""
    T = min(len(m[key]) for m in measurements)
    v = np.array([m[key][:T] for m in measurements], dtype=float)
    return {"t": list(range(T)), "mean": v.mean(0).tolist(), "min": v.min(0).tolist(), "max": v.max(0).tolist()}


def summarize(jobs: list[common.Job], results: dict[str, dict], fractions: Sequence[float]) -> dict:
    out: dict[str, Any] = {}
    for algo in dict.fromkeys(j.params["algo"] for j in jobs):
        ok = [results[j.name] for j in jobs
              if j.params["algo"] == algo and "error" not in results.get(j.name, {"error": 1})]
        stages = []
        for i, f in enumerate(fractions):
            ms = [next(m for m in r["measurements"] if m["stage"] == i) for r in ok
                  if any(m["stage"] == i for m in r["measurements"])]
            if not ms:
                continue
            opened, closed = mean_curves(ms, "open_loop"), mean_curves(ms, "closed_loop")
            avg = lambda key, fn: common.final_stats([fn(m[key]) for m in ms])
            stages.append({
                "stage": i, "fraction": f, "n_runs": len(ms), "samples": [m["samples"] for m in ms],
                "iterations": [m["iteration"] for m in ms], "open_loop": opened, "closed_loop": closed,
                "open_final": avg("open_loop", lambda x: x[-1]), "closed_final": avg("closed_loop", lambda x: x[-1]),
                "open_mean": avg("open_loop", lambda x: float(np.mean(x[1:]))),
                "closed_mean": avg("closed_loop", lambda x: float(np.mean(x[1:]))),
                "world_return": avg("world_return", float), "model_return": avg("model_return", float),
            })
        out[algo] = {"n_runs": len(ok), "stages": stages}
    return out


def stage_label(s: dict) -> str:
    samples = s["samples"]
    where = f"{int(np.mean(samples))} samples" if len(set(samples)) > 1 else f"{samples[0]} samples"
    return f"stage {s['stage'] + 1} ({where})"


def plot(summary: dict, path: Path, title: str) -> None:
    plt = common.pyplot()
    algos = list(summary)
    fig, axes = plt.subplots(1, len(algos), figsize=(5.6 * len(algos), 4.0), squeeze=False, sharey=True)
    for ax, algo in zip(axes[0], algos):
        for s in summary[algo]["stages"]:
            color = STAGE_COLORS[s["stage"] % len(STAGE_COLORS)]
            for key, ls, what in (("open_loop", "-", "open loop"), ("closed_loop", "--", "closed loop")):
                c = s[key]
                ax.plot(c["t"], c["mean"], color=color, ls=ls, lw=1.6, label=f"{stage_label(s)}, {what}")
                if s["n_runs"] > 1:
                    ax.fill_between(c["t"], c["min"], c["max"], color=color, alpha=0.12, lw=0)
        ax.set(title=f"{common.ALGO_LABELS.get(algo, algo)} (n={summary[algo]['n_runs']})", xlabel="t (steps)",
               ylabel="L(t) = E||s_t(world) - s_t(model)||")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(summary: dict, preset: str, args: argparse.Namespace, figure: str) -> str:
    p = PRESETS[preset]
    lines = [
        f"### Model error amplification: open loop vs closed loop, PAL and MAL ({args.task})",
        "",
        f"![model error]({figure})",
        "",
        f"Budget `{preset}`: {budget_note(preset, args.samples)} L(t) = mean over {args.episodes} start states "
        "(the same for every run and stage), the ensemble members and the seeds of the Euclidean distance between the "
        "world's and the model's state in the task's model space, measured right after the policy player's move "
        "(the model and the policy improved in it). Open loop: the world's actions replayed in the model; closed "
        "loop: the policy acting on the model's own states. Stages at fractions "
        f"{', '.join(f'{f:g}' for f in args.fractions)} of the samples after N_init (0 = the first policy improvement, "
        "1 = the last). State compared: D'Claw's 22 model-space values (claw joint angles, valve cos/sin, last action, "
        "target error cos/sin) less the 9 last-action values, which the model copies in exactly.",
        "",
        "| algorithm | stage | samples | L(H) open loop | L(H) closed loop | mean L(t) open | mean L(t) closed "
        "| world return | model return (closed loop) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for algo, e in summary.items():
        for s in e["stages"]:
            samples = ", ".join(str(v) for v in s["samples"])
            f = common.fmt_stats
            lines.append(
                f"| {common.ALGO_LABELS.get(algo, algo)} | {s['stage'] + 1} | {samples} | {f(s['open_final'], 3)} "
                f"| {f(s['closed_final'], 3)} | {f(s['open_mean'], 3)} | {f(s['closed_mean'], 3)} "
                f"| {f(s['world_return'], 0)} | {f(s['model_return'], 0)} |"
            )
    lines += ["", f"Command: `{common.command_line()}`."]
    return "\n".join(lines)


def budget_note(preset: str, samples: int) -> str:
    if preset == "quick":
        return "QUICK pipeline check (a few episodes, tiny networks): not a result."
    if preset == "full":
        return "the paper's networks and per-task budgets (config/<algo>.yaml)."
    return (f"REDUCED: {samples} real samples per run (the paper: 60k PAL / 100k MAL on D'Claw turn random), "
            "ensemble members MLP(256, 256) instead of MLP(512, 512), model fits capped at 400 gradient steps, "
            "100 synthetic trajectories per NPG step.")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(ap, NAME)
    ap.add_argument("--task", default="dclaw-turn-random", help="task id")
    ap.add_argument("--algos", default=",".join(ALGOS), help="comma list of games")
    ap.add_argument("--samples", type=int, default=None, help="real samples per run (default: the budget's)")
    ap.add_argument("--stages", default="0,0.5,1", help="comma list of fractions in [0, 1] of the samples after N_init")
    ap.add_argument("--episodes", type=int, default=None, help="start states per measurement (default: the budget's)")
    args = ap.parse_args(argv)
    if args.worker:
        return common.worker_main(args.worker, WORKERS)
    common.check_common_arguments(args)
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.schedule import game_spec
    from mbrl_ros.tasks import canonical_task_id

    preset = "quick" if args.quick else "full" if args.full else "default"
    p = PRESETS[preset]
    args.task = canonical_task_id(args.task)
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    for a in algos:
        game_spec(a)
    try:
        args.fractions = sorted(float(f) for f in args.stages.split(",") if f.strip())
    except ValueError:
        raise ValueError(f"--stages takes a comma list of numbers in [0, 1], got {args.stages!r}") from None
    if not args.fractions or any(not (0.0 <= f <= 1.0 and math.isfinite(f)) for f in args.fractions):
        raise ValueError(f"--stages takes a comma list of numbers in [0, 1], got {args.stages!r}")
    args.episodes = args.episodes if args.episodes is not None else p["episodes"]
    if args.episodes <= 0:
        raise ValueError("--episodes must be > 0")
    if args.samples is not None and args.samples <= 0:
        raise ValueError("--samples must be > 0")
    overrides = [*p["overrides"], f"eval_episodes={p['eval_episodes']}", *args.overrides]
    jobs = []
    for algo in algos:
        budget = args.samples or p["samples"] or load_config(algo, args.task).samples  # --full: the YAML's
        for seed in common.parse_seeds(args.seeds or p["seeds"]):
            common.game_config(algo, args.task, seed, budget, overrides)  # bad overrides fail here
            params = {"algo": algo, "task": args.task, "seed": seed, "samples": budget, "overrides": overrides,
                      "episodes": args.episodes, "fractions": args.fractions, "threads": args.threads,
                      "measure": "state-dims/2"}  # version of the measurement: a change reruns the runs
            jobs.append(common.Job(f"{algo}-{args.task}-s{seed}", "measured", params, total=budget))
    args.samples = args.samples or p["samples"]
    out = Path(args.out)
    print(f"{len(jobs)} runs ({preset} budget) -> {out}", flush=True)
    results = common.run_jobs(Path(__file__), jobs, out, args.jobs, WORKERS, not args.no_progress, NAME,
                              run=not args.report_only)
    if args.report_only:
        jobs = [j for j in jobs if j.name in results]
        if not jobs:
            raise ValueError(f"--report-only: no finished runs with these settings in {out}")
    summary = summarize(jobs, results, args.fractions)
    figure = out / "model_error.png"
    plot(summary, figure,
         f"Model error amplification on {args.task} ({preset} budget): solid open loop, dashed closed loop")
    common.write_json(out / "results.json", {"preset": preset, "command": common.command_line(), "task": args.task,
                                             "summary": summary})
    write_docs = not args.quick and not args.no_report
    if write_docs:
        figure = common.copy_figure(figure, "model_error.png")
    text = report(summary, preset, args, common.relpath(figure))
    return common.finish(text, SECTION, write_docs, results, out)


if __name__ == "__main__":
    sys.exit(common.script_main(main))
