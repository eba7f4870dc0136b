"""Reproduce the poster's finite-MDP experiment: MAL's model hides a rewarding region; PAL,
MAL + agent reward and MAL + random noise do not get fooled.

    .venv/bin/python -m bench.finite_poster                 # 5 seeds, table + figures
    .venv/bin/python -m bench.finite_poster --jobs 2        # seeds in parallel processes
    .venv/bin/python -m bench.finite_poster --contextual    # + MAL against a contextual follower
    .venv/bin/python -m bench.finite_poster --quick         # CI smoke run (no BENCHMARKS.md update)

Writes figures (mdp.png, models.png, curves.png) and results.json to --out (default
runs/finite_poster/) and the table to BENCHMARKS.md, section "finite_poster".
Parallel workers are subprocesses of this script that answer in JSON (nothing is pickled).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


from mbrl_ros.core.finite import hidden_region_mdp, run_game  # noqa: E402

POSTER = {"mal": "0.97 ± 0.05", "pal": "36.77 ± 0.64", "mal-agent-reward": "36.93 ± 0.57", "mal-noise": "36.74 ± 0.67"}
LABELS = {"pal": "PAL", "mal": "MAL", "gda": "GDA", "br": "BR", "mal-agent-reward": "MAL + agent reward",
          "mal-noise": "MAL + random noise"}


def experiments(quick: bool, contextual: bool) -> list[dict]:
    """(label, formulation, algo, options) of every row of the table."""
    it_b, it_p = (15, 10) if quick else (60, 40)
    rows = []
    for algo in ("pal", "mal", "mal-agent-reward", "mal-noise", "gda", "br"):
        rows.append({"variant": "", "formulation": "bilevel", "algo": algo, "options": {"iterations": it_b}})
    for algo in ("pal", "mal", "mal-agent-reward", "mal-noise", "gda", "br"):
        rows.append({"variant": "", "formulation": "practical", "algo": algo,
                     "options": {"iterations": it_p, "samples_per_iteration": 100}})
    # ablations that explain the finding
    rows.append({"variant": "tau = 0.001 (return term sees only the greedy path)", "formulation": "bilevel",
                 "algo": "mal-agent-reward", "options": {"iterations": it_b, "tau": 1e-3}})
    rows.append({"variant": "alpha = 0.1 (return term weighted 9x the loss)", "formulation": "bilevel",
                 "algo": "mal-agent-reward", "options": {"iterations": it_b, "alpha": 0.1}})
    rows.append({"variant": "uniform model prior", "formulation": "bilevel", "algo": "mal",
                 "options": {"iterations": it_b, "model_prior": "uniform"}})
    rows.append({"variant": "N_init = 100 random samples", "formulation": "practical", "algo": "mal",
                 "options": {"iterations": it_p, "samples_per_iteration": 100, "n_init": 100}})
    rows.append({"variant": "alpha = 0.95 (5 random samples per iteration)", "formulation": "practical",
                 "algo": "mal-noise", "options": {"iterations": it_p, "samples_per_iteration": 100, "alpha": 0.95}})
    if contextual:
        for algo in ("mal", "mal-agent-reward", "mal-noise"):
            rows.append({"variant": "contextual follower", "formulation": "bilevel", "algo": algo,
                         "options": {"iterations": it_b, "follower": "contextual"}})
    return rows


def sampled_episode_rewards(mdp, policy: np.ndarray, episodes: int, seed: int) -> np.ndarray:
    """Episode rewards of ``policy`` run in the world (the poster's "average episode reward")."""
    rng = np.random.default_rng(seed)
    out = np.zeros(episodes)
    for e in range(episodes):
        s = rng.choice(mdp.n_states, p=mdp.start)
        for t in range(mdp.horizon):
            a = rng.choice(mdp.n_actions, p=policy[t, s])
            s2 = rng.choice(mdp.n_states, p=mdp.P[s, a])
            out[e] += mdp.R[s, a, s2]
            if mdp.terminal_mask[s2]:
                break
            s = s2
    return out


def run_task(task: dict) -> dict:
    world = hidden_region_mdp()
    t0 = time.perf_counter()
    res = run_game(world.mdp, task["algo"], seed=task["seed"], formulation=task["formulation"], **task["options"])
    seconds = time.perf_counter() - t0
    out = dict(task)
    curve = res.curve("real_return")
    reached = np.flatnonzero(curve >= 0.95 * world.optimal_value)
    out.update(final=res.real_return, model_return=res.model_return, curve=curve.tolist(),
               samples=res.samples, seconds=seconds, to95=int(reached[0]) + 1 if len(reached) else None,
               sampled=float(sampled_episode_rewards(world.mdp, res.policy, 100, 1000 + task["seed"]).mean()))
    if task["seed"] == 0:
        out["model"] = res.model.tolist()
    return out


def run_all(tasks: list[dict], jobs: int) -> list[dict]:
    """Run tasks in ``jobs`` worker subprocesses (grouped by seed), or in-process for jobs == 1."""
    if jobs <= 1:
        from tqdm import tqdm

        return [run_task(t) for t in tqdm(tasks, desc="finite games", unit="run")]
    groups: dict[int, list[dict]] = {}
    for t in tasks:
        groups.setdefault(t["seed"], []).append(t)
    chunks = [[] for _ in range(jobs)]
    for i, seed in enumerate(sorted(groups)):
        chunks[i % jobs].extend(groups[seed])
    root = Path(__file__).resolve().parent.parent
    procs = [subprocess.Popen([sys.executable, "-m", "bench.finite_poster", "--worker"], cwd=root,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for c in chunks if c]
    # hand every worker its tasks first: communicate() on one worker at a time would leave the
    # others waiting for their input, and the workers would run one after another
    for p, c in zip(procs, [c for c in chunks if c]):
        p.stdin.write(json.dumps(c))
        p.stdin.close()
    results = []
    for p, c in zip(procs, [c for c in chunks if c]):
        stdout = p.stdout.read()
        if p.wait() != 0:
            raise RuntimeError(f"worker failed with exit code {p.returncode}")
        results.extend(json.loads(stdout))
        print(f"worker done: {len(c)} runs", flush=True)
    return results


def summarise(results: list[dict], world) -> tuple[list[dict], str]:
    rows: dict[tuple, list[dict]] = {}
    for r in results:
        rows.setdefault((r["formulation"], r["algo"], r["variant"]), []).append(r)
    table = []
    for (formulation, algo, variant), rs in rows.items():
        finals = np.array([r["final"] for r in rs])
        sampled = np.array([r["sampled"] for r in rs])
        to95 = [r["to95"] for r in rs]
        table.append({"formulation": formulation, "algo": algo, "variant": variant, "mean": float(finals.mean()),
                      "std": float(finals.std()), "sampled_mean": float(sampled.mean()),
                      "sampled_std": float(sampled.std()), "n": len(rs),
                      "reached": sum(t is not None for t in to95),
                      "to95": float(np.mean(hit)) if (hit := [t for t in to95 if t is not None]) else None,
                      "samples": int(np.mean([r["samples"] for r in rs])),
                      "seconds": float(np.mean([r["seconds"] for r in rs]))})
    lines = [
        f"Hidden-region MDP (`hidden_region_mdp()`: corridor 3, horizon 40, slip 0.1): exact optimal return "
        f"**{world.optimal_value:.2f}**, best return of a policy that never enters the region (the \"hidden\" "
        f"value) **{world.hidden_value:.2f}**. Final policy's exact expected episode return, mean ± std over "
        f"{max(t['n'] for t in table)} seeds; beside it the average reward of 100 sampled episodes per seed "
        f"(the poster's measure), the seeds that reached 95% of the optimum and the mean first iteration at which "
        f"they did, the real samples drawn (practical) and the mean run time.",
        "",
        "| formulation | algorithm | variant | exact return | sampled episode reward | reached 95% (iteration) "
        "| real samples | s / run | poster |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        poster = POSTER.get(t["algo"], "") if not t["variant"] and t["formulation"] == "bilevel" else ""
        samples = f"{t['samples']:,}" if t["formulation"] == "practical" else "exact"
        reached = f"{t['reached']}/{t['n']}" + (f" ({t['to95']:.1f})" if t["to95"] is not None else "")
        lines.append(f"| {t['formulation']} | {LABELS[t['algo']]} | {t['variant']} | {t['mean']:.2f} ± {t['std']:.2f} "
                     f"| {t['sampled_mean']:.2f} ± {t['sampled_std']:.2f} | {reached} | {samples} "
                     f"| {t['seconds']:.1f} | {poster} |")
    return table, "\n".join(lines)


# -- figures ----------------------------------------------------------------------------------
def plot_mdp(world, path: Path) -> None:
    import matplotlib.pyplot as plt

    mdp = world.mdp
    L = len(world.corridor)
    pos = {world.start: (0, 0), world.done: (L / 2, -1.6)}
    for i, c in enumerate(world.corridor):
        pos[c] = (i + 1, 0)
    pos[world.region[0]] = (L + 1.3, 0.6)
    pos[world.region[1]] = (L + 1.3, -0.6)
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for s, (x, y) in pos.items():
        color = "#f4c542" if s in world.region else "#cccccc" if s == world.done else "#8ec1e8"
        ax.add_patch(plt.Circle((x, y), 0.28, color=color, zorder=2))
        ax.text(x, y, mdp.state_names[s], ha="center", va="center", zorder=3, fontsize=10)

    def arrow(a, b, text, style, color, rad=0.0):
        (x0, y0), (x1, y1) = pos[a], pos[b]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color=color, ls=style, shrinkA=14, shrinkB=14,
                                    connectionstyle=f"arc3,rad={rad}"))
        ax.text((x0 + x1) / 2 + rad * (y1 - y0) * 0.5, (y0 + y1) / 2 - rad * (x1 - x0) * 0.5 + 0.12, text,
                ha="center", fontsize=8, color=color)

    slip = mdp.P[world.start, 1, world.start]
    chain = [world.start] + world.corridor + [world.region[0]]
    go_cost = -mdp.R[world.start, 1, 0]
    for a, b in zip(chain[:-1], chain[1:]):
        arrow(a, b, f"go {1 - slip:.1f}, r=-{go_cost:g}", "-", "tab:blue")
    arrow(world.start, world.done, f"stop, r=+{mdp.R[world.start, 0, 0]:g}", "--", "tab:red", rad=0.25)
    for c in world.corridor:
        arrow(c, world.done, "stop, r=0", ":", "gray", rad=0.1)
    arrow(world.region[0], world.region[1], "go", "-", "tab:orange", rad=0.3)
    arrow(world.region[1], world.region[0], "go", "-", "tab:orange", rad=0.3)
    ax.text(L + 1.95, 0, f"every step\nr=+{mdp.R[world.region[0], 0, 0]:g}\n(stop: stay)", fontsize=9, va="center")
    ax.set_title(f"Hidden-region MDP (horizon {mdp.horizon}; go slips with prob {slip:g}): optimal "
                 f"{world.optimal_value:.2f}, hidden {world.hidden_value:.2f}")
    ax.set_xlim(-0.6, L + 2.8)
    ax.set_ylim(-2.0, 1.2)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_models(world, results: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    mdp = world.mdp
    models = {"world": mdp.P}
    for r in results:
        shown = ("mal", "pal", "mal-agent-reward", "mal-noise")
        if r["seed"] == 0 and r["formulation"] == "bilevel" and not r["variant"] and r["algo"] in shown:
            models[LABELS[r["algo"]]] = np.array(r["model"])
    pairs = world.key_pairs
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.6 * len(pairs), 3.4), sharey=True)
    width = 0.8 / len(models)
    x = np.arange(mdp.n_states)
    for ax, (s, a) in zip(axes, pairs):
        for i, (name, M) in enumerate(models.items()):
            ax.bar(x + (i - (len(models) - 1) / 2) * width, M[s, a], width, label=name)
        ax.set_xticks(x, mdp.state_names, rotation=45)
        ax.set_title(f"P(s' | {mdp.state_names[s]}, {mdp.action_names[a]})")
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("probability")
    axes[0].legend(fontsize=8)
    fig.suptitle("Learned models at the key pairs (bilevel game, seed 0): MAL's model keeps 'go does nothing'")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(world, results: list[dict], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, formulation in zip(axes, ("bilevel", "practical")):
        for algo in ("pal", "mal", "mal-agent-reward", "mal-noise", "gda", "br"):
            curves = np.array([r["curve"] for r in results
                               if r["formulation"] == formulation and r["algo"] == algo and not r["variant"]])
            if len(curves) == 0:
                continue
            m, s = curves.mean(0), curves.std(0)
            it = np.arange(1, len(m) + 1)
            ax.plot(it, m, label=LABELS[algo])
            ax.fill_between(it, m - s, m + s, alpha=0.2)
        ax.axhline(world.optimal_value, color="k", ls="--", lw=0.8, label="optimal")
        ax.axhline(world.hidden_value, color="r", ls=":", lw=0.8, label="hidden")
        ax.set_xlabel("iteration")
        ax.set_ylabel("exact return of the deployed policy")
        ax.set_title(f"{formulation} formulation")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/finite_poster"), help="results.json goes here")
    parser.add_argument("--figures", type=Path, default=None,
                        help="folder of mdp.png, models.png, curves.png (default: --out; docs/figures/finite_poster "
                             "for the committed ones)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (seeds run in parallel)")
    parser.add_argument("--quick", action="store_true", help="CI smoke run: 2 seeds, few iterations, no report")
    parser.add_argument("--contextual", action="store_true", help="add MAL against a contextual follower (slow)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps([run_task(t) for t in json.loads(sys.stdin.read())]))
        return 0
    if args.seeds < 1 or args.jobs < 1:
        raise SystemExit("--seeds and --jobs must be >= 1")
    seeds = 2 if args.quick else args.seeds
    world = hidden_region_mdp()
    tasks = [dict(e, seed=s) for s in range(seeds) for e in experiments(args.quick, args.contextual)]
    t0 = time.perf_counter()
    results = run_all(tasks, args.jobs)
    wall = time.perf_counter() - t0
    table, markdown = summarise(results, world)
    figures = args.figures or args.out
    args.out.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    plot_mdp(world, figures / "mdp.png")
    plot_models(world, results, figures / "models.png")
    plot_curves(world, results, figures / "curves.png")
    (args.out / "results.json").write_text(json.dumps({"table": table, "runs": results}, indent=1))
    cmd = ("python -m bench.finite_poster" + (" --contextual" if args.contextual else "") + f" --seeds {seeds}"
           + (f" --figures {figures}" if args.figures else ""))
    markdown += (f"\n\n`{cmd}` ({len(tasks)} runs, {wall:.0f} s wall with --jobs {args.jobs}). "
                 "Returns are exact expected returns (DP), not sampled averages.")
    if not args.quick:
        markdown += "".join(f"\n\n![{name}]({figures}/{name}.png)" for name in ("mdp", "models", "curves"))
    print(markdown)
    if not args.quick:
        from bench._report import update_section

        update_section("finite_poster", markdown)
        print("wrote BENCHMARKS.md section finite_poster")
    print(f"figures in {figures}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
