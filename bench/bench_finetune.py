"""Sim-to-real fine-tuning, measured in simulation as a stand-in for a robot.

A PAL policy trained on the nominal D'Claw (``--source``) is deployed on a perturbed world inside
ROBEL's dynamics-randomisation ranges (``--dynamics``, default ``dclaw-weak``: actuator kp 1.5 of
2.0, friction loss 0.005 on every claw joint and the valve, contact friction 1.2; see
``mbrl_ros.tasks.sim.PERTURBATIONS``). Measured:

1. its success as is (the deterministic evaluation of ``mbrl-ros train``, on the nominal and the
   perturbed world);
2. the real samples that fine-tuning from it (``mbrl-ros train --init-from SOURCE``, policy only,
   and policy + model + buffer) needs until 90% success is held (3 evaluations in a row), against
   learning from scratch on the perturbed world (the source run's hyper-parameters in both);
3. optionally (``--randomized-source``) the same for a policy trained with
   ``--set randomize_dynamics=true``.

Runs stop once success is held (``stop_success=0.9``). Each is one ``mbrl-ros train`` process
(``--jobs`` at a time, one torch thread each); a run whose ``summary.json`` exists is reused, one
still running (``--partial``) is reported as far as it got. Writes ``docs/figures/finetune_dclaw.png``
and the ``finetune`` section of BENCHMARKS.md.

    .venv/bin/python -m bench.bench_finetune [--seeds 1] [--jobs 3] [--partial] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from bench._report import ROOT, command_line, publish

DEFAULT_SOURCE = "runs/bench_pal_fixed/pal-dclaw-turn-fixed-s1"
FIGURE = ROOT / "docs" / "figures" / "finetune_dclaw.png"


def as_is(policy: Path, task_id: str, dynamics: str) -> dict:
    """The policy's deterministic evaluation (the training runner's seeds) in a world."""
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.core.rules import GameRules
    from mbrl_ros.core.schedule import game_spec
    from mbrl_ros.core.train import make_world
    from mbrl_ros.core.world import evaluate

    world = make_world(task_id, dynamics=dynamics)
    cfg = load_config("pal", task_id)
    seeds = GameRules(cfg, game_spec("pal"), world.task.info.horizon).eval_seeds()
    ev = evaluate(world, load_onnx_policy(policy, expect_task=task_id).act, seeds)
    return {"success": ev["success"], "return": ev["return"], "final_error": ev["final_error"]}


def plan(args: argparse.Namespace) -> list[dict]:
    """The runs: name, output directory and the ``mbrl-ros train`` arguments."""
    runs = []
    common = ["--task", args.task, "--set", f"dynamics={args.dynamics}", "--set", "stop_success=0.9",
              "--no-progress", "--threads", "1"]
    sources = [("nominal", Path(args.source))]
    if args.randomized_source:
        sources.append(("randomized", Path(args.randomized_source)))
    for seed in args.seeds:
        runs.append({"name": f"scratch-{args.dynamics}-s{seed}", "kind": "from scratch", "source": None, "seed": seed,
                     "budget": args.scratch_samples,
                     "argv": [*common, "--seed", str(seed), "--samples", str(args.scratch_samples),
                              "--init-from-parts", "policy"], "init": None})
        for label, src in sources:
            for parts in args.parts:
                tag = "policy" if parts == "policy" else "all"
                prefix = "finetune" if label == "nominal" else "finetune-randomized"
                runs.append({
                    "name": f"{prefix}-{tag}-{args.dynamics}-s{seed}", "kind": f"fine-tune ({label} source, {parts})",
                    "source": str(src), "seed": seed, "init": parts, "budget": args.finetune_samples,
                    "argv": [*common, "--seed", str(seed), "--samples", str(args.finetune_samples), "--init-from",
                             str(src), "--init-from-parts", parts, "--set", f"n_init={args.finetune_n_init}"],
                })
    for r in runs:
        r["out"] = Path(args.out) / r["name"]
        if r["init"] is None:  # from scratch: the source run's hyper-parameters, a fresh policy
            r["argv"] = [a for a in r["argv"] if a not in ("--init-from-parts", "policy")]
            r["argv"] += _source_settings(Path(args.source))
    return runs


def _source_settings(source: Path) -> list[str]:
    """``--set`` items that give a from-scratch run the source run's hyper-parameters."""
    from mbrl_ros.core.config import load_config

    src = json.loads((source / "config.json").read_text())
    base = load_config(src["algo"], src["task_id"]).to_dict()
    skip = {"seed", "samples", "stop_success", "dynamics", "randomize_dynamics", "algo", "task_id"}
    out = []
    for k, v in src.items():
        if k not in skip and base.get(k) != v:
            out += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    return out


def run_all(runs: list[dict], jobs: int) -> None:
    """Start the runs without a finished summary, ``jobs`` at a time; wait for them."""
    todo = [r for r in runs if not (r["out"] / "summary.json").is_file()]
    live: list[tuple[dict, subprocess.Popen]] = []
    while todo or live:
        while todo and len(live) < jobs:
            r = todo.pop(0)
            r["out"].mkdir(parents=True, exist_ok=True)
            log = open(r["out"].with_suffix(".log"), "ab")
            argv = [sys.executable, "-m", "mbrl_ros.cli", "train", "--out", str(r["out"]), *r["argv"]]
            print("starting:", " ".join(argv[2:]), flush=True)
            live.append((r, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)))
        time.sleep(5)
        for item in list(live):
            if item[1].poll() is not None:
                live.remove(item)
                print(f"{item[0]['name']}: exit {item[1].returncode}", flush=True)


def result(r: dict) -> Optional[dict]:
    """A run's curve and milestones (finished, or as far as it got)."""
    from mbrl_ros.core.report import success_milestones

    path = r["out"] / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    if not rows:
        return None
    ev = [x for x in rows if x.get("eval_success") is not None]
    m = success_milestones(rows)
    summary = r["out"] / "summary.json"
    return {"rows": ev, "held": m["held"], "first_touch": m["first_touch"], "samples": rows[-1]["samples"],
            "start_success": ev[0]["eval_success"] if ev else None, "final_success": ev[-1]["eval_success"] if ev else None,
            "start_return": ev[0]["eval_return"] if ev else None, "final_return": ev[-1]["eval_return"] if ev else None,
            "best_return": max(x["eval_return"] for x in ev) if ev else None,
            "finished": summary.is_file(), "wall_s": rows[-1].get("wall_s")}


def figure(runs: list[dict], results: dict, nominal: dict, perturbed: dict, dynamics: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axr) = plt.subplots(2, 1, figsize=(8.5, 7.0), sharex=True)
    # one colour per kind of run, one line style per seed: the legend names the kinds
    kinds = list(dict.fromkeys(r["kind"] for r in runs))
    colors = {k: f"C{i}" for i, k in enumerate(kinds)}
    seeds = list(dict.fromkeys(r["seed"] for r in runs))
    styles = {s: ("-", "--", ":", "-.")[i % 4] for i, s in enumerate(seeds)}
    labelled: set[str] = set()
    for r in runs:
        res = results.get(r["name"])
        if res is None:
            continue
        xs = [x["samples"] for x in res["rows"]]
        label = None if r["kind"] in labelled else r["kind"]
        labelled.add(r["kind"])
        kw = dict(color=colors[r["kind"]], ls=styles[r["seed"]], marker=".", ms=3, lw=1.2)
        ax.plot(xs, [x["eval_success"] for x in res["rows"]], label=label, **kw)
        axr.plot(xs, [x["eval_return"] for x in res["rows"]], **kw)
    ax.axhline(0.9, color="grey", lw=0.8, ls="--")
    for a, key in ((ax, "success"), (axr, "return")):
        a.scatter([0], [perturbed[key]], marker="x", color="k", zorder=5,
                  label=f"nominal policy as is ({100 * perturbed['success']:.0f}% success)" if a is ax else None)
    axr.axhline(nominal["return"], color="grey", lw=0.8, ls=":")
    axr.text(0, nominal["return"], " nominal policy on the nominal world", fontsize=7, va="bottom")
    ax.set_ylabel("success (deterministic evaluation)")
    axr.set_ylabel("evaluation return")
    axr.set_xlabel("real samples on the perturbed world")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"D'Claw turn, perturbed world {dynamics}: fine-tuning vs from scratch\n"
                 f"(line style = seed: {', '.join(f'{s} {styles[s]}' for s in seeds)})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=110)
    plt.close(fig)


def report(args, runs: list[dict], results: dict, nominal: dict, perturbed: dict, extra: list[str]) -> str:
    from mbrl_ros.tasks.sim import PERTURBATIONS

    world = PERTURBATIONS.get(args.dynamics, args.dynamics)
    lines = [
        "## Sim-to-real fine-tuning (`bench/bench_finetune.py`)",
        "",
        "Simulation as a stand-in for a robot: a PAL policy learnt on the nominal D'Claw "
        f"(`{args.source}`) is deployed on a perturbed world inside ROBEL's randomisation ranges, `{args.dynamics}` "
        f"= {world}, then fine-tuned there with `mbrl-ros train --init-from` (n_init {args.finetune_n_init}) "
        "or learnt from scratch there (the source run's hyper-parameters). Success is the training runner's "
        "deterministic evaluation on the perturbed world; runs stop once 90% is held (3 evaluations in a row).",
        "",
        f"- nominal policy as is: **{100 * nominal['success']:.0f}%** success on the nominal world "
        f"(return {nominal['return']:.1f}), **{100 * perturbed['success']:.0f}%** on `{args.dynamics}` "
        f"(return {perturbed['return']:.1f}, final valve error {perturbed['final_error']:.2f} rad)",
        *extra,
        "",
        "| run | seed | success at start | 90% held at (real samples) | first 90% | samples so far | final success "
        "| return: start / best / last | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        res = results.get(r["name"])
        if res is None:
            lines.append(f"| {r['kind']} | {r['seed']} | not run | | | | | | |")
            continue
        held = res["held"] if res["held"] is not None else (f"not within {res['samples']}" +
                                                             ("" if res["finished"] else " (stopped early)"))
        start = f"{res['start_success']:.2f}" if res["start_success"] is not None else "n/a"
        final = f"{res['final_success']:.2f}" if res["final_success"] is not None else "n/a"
        wall = f"{res['wall_s']:.0f}" if res.get("wall_s") is not None else "n/a"
        rets = " / ".join("n/a" if res[k] is None else f"{res[k]:.0f}" for k in ("start_return", "best_return",
                                                                                  "final_return"))
        lines.append(f"| {r['kind']} | {r['seed']} | {start} | {held} | {res['first_touch'] or '-'} | {res['samples']} "
                     f"| {final} | {rets} | {wall} |")
    lines += ["", *summary_table(runs, results)]
    lines += [
        "",
        f"![fine-tuning vs from scratch](docs/figures/{FIGURE.name})",
        "",
        f"One run per row; seeds {', '.join(map(str, args.seeds))} are the seeds of the fine-tuning or from-scratch "
        "game (its random streams: collection noise, model and policy initialisation), every fine-tuning starts "
        "from the same source run, as a lab fine-tunes its one pre-trained policy. "
        "Sample counts include the fine-tuning run's n_init samples of the loaded policy. 'not within N (stopped "
        "early)' is a run cut off at N samples before it held 90%. D'Claw turn fixed has a deterministic reset, so "
        "each evaluation is one episode: success is 0 or 1, and the return shows the progress in between.",
        "",
        f"Command: `{command_line()}`",
    ]
    return "\n".join(lines)


def summary_table(runs: list[dict], results: dict) -> list[str]:
    """Per kind of run: samples to 90% held on each seed, how many held, the median (a run that
    did not hold counts as its budget, so the median is a lower bound when one did not)."""
    kinds: dict[str, list[tuple[int, Optional[dict], dict]]] = {}
    for r in runs:
        kinds.setdefault(r["kind"], []).append((r["seed"], results.get(r["name"]), r))
    out = ["| run | 90% held at, per seed | held | median |", "|---|---|---|---|"]
    for kind, items in kinds.items():
        cells, values, held = [], [], 0
        for seed, res, r in items:
            if res is None or (res["held"] is None and not res["finished"]):
                cells.append(f"s{seed}: running" if res is not None else f"s{seed}: not run")
                continue
            budget = int(r["budget"])
            if res["held"] is not None:
                held += 1
                values.append(float(res["held"]))
                cells.append(f"s{seed}: {res['held']:,}")
            else:
                values.append(float(budget))
                cells.append(f"s{seed}: >{budget:,}")
        med = "-" if not values else f"{np.median(values):,.0f}" + (" (or more)" if held < len(values) else "")
        out.append(f"| {kind} | {', '.join(cells)} | {held} of {len(values)} | {med} |")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=DEFAULT_SOURCE, help="finished nominal run (policy.onnx, checkpoint/)")
    p.add_argument("--randomized-source", default="", help="finished run trained with randomize_dynamics=true")
    p.add_argument("--task", default="dclaw-turn-fixed")
    p.add_argument("--dynamics", default="dclaw-weak", help="the perturbed world (PERTURBATIONS name or param:value/...)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--parts", nargs="+", default=["policy", "policy,model,buffer"], help="--init-from-parts to compare")
    p.add_argument("--finetune-n-init", type=int, default=200)
    p.add_argument("--finetune-samples", type=int, default=8000)
    p.add_argument("--scratch-samples", type=int, default=15000)
    p.add_argument("--out", default="runs/bench_finetune")
    p.add_argument("--jobs", type=int, default=3)
    p.add_argument("--partial", action="store_true", help="report the runs as they are now; start nothing")
    p.add_argument("--no-write", action="store_true", help="print the section, leave BENCHMARKS.md alone")
    args = p.parse_args(argv)
    source = Path(args.source)
    if not (source / "policy.onnx").is_file():
        raise SystemExit(f"--source {source}: no policy.onnx (train one: mbrl-ros train --task {args.task} --seed 1 "
                         f"--set stop_success=0.9 --out {source})")
    nominal = as_is(source / "policy.onnx", args.task, "")
    perturbed = as_is(source / "policy.onnx", args.task, args.dynamics)
    extra = []
    if args.randomized_source:
        rs = Path(args.randomized_source) / "policy.onnx"
        rn, rp = as_is(rs, args.task, ""), as_is(rs, args.task, args.dynamics)
        trained = ""
        summary = Path(args.randomized_source) / "summary.json"
        if summary.is_file():  # how long it was trained, and what its own evaluation (nominal world) said
            sm = json.loads(summary.read_text())
            trained = (f", trained for {sm['samples']:,} samples (its best success on the nominal world during "
                       f"training {sm.get('best_success')})")
        extra.append(f"- policy trained with `randomize_dynamics=true` (`{args.randomized_source}`{trained}) as is: "
                     f"**{100 * rn['success']:.0f}%** nominal (return {rn['return']:.1f}, final valve error "
                     f"{rn['final_error']:.2f} rad), **{100 * rp['success']:.0f}%** on `{args.dynamics}` "
                     f"(return {rp['return']:.1f})")
    runs = plan(args)
    if not args.partial:
        run_all(runs, args.jobs)
    results = {r["name"]: res for r in runs if (res := result(r)) is not None}
    figure(runs, results, nominal, perturbed, args.dynamics)
    publish("finetune", report(args, runs, results, nominal, perturbed, extra), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
