"""Collection throughput of the sim graph against the number of collectors; the "scaling" section of BENCHMARKS.md.

For each ``k`` in ``--collectors`` (default 1 2 4 8), ``mbrl-ros launch mal_dclaw num_collectors:=k``
plays MAL on D'Claw turn fixed with the game's own rounds of N = 800 samples (20 episodes of 40
steps; ``n_init`` 800 too) and small models, so the learners' phases stay short; the
coordinator's evaluation is off (``eval_in_sim: false``), so what is measured is collection.
From the run's MCAP record (the coordinator's clock):

- per round after the first (the first also waits for every collector process to start): the
  wall time from the game state that opens collection (``collect: true``) to the one that
  closes the round (phase ``fit_model``), and 800 / that time = samples per second while
  collecting;
- the episodes recorded beyond the rounds' counts (finished by other collectors after the round
  was complete: work done for nothing; episodes aborted unfinished are not recorded at all);
- CPU seconds of every node process, sampled from ``/proc`` while it runs: the collectors' CPU
  per 1,000 samples is the per-collector cost of a sample (simulation, ONNX inference, packing,
  DDS), the coordinator's is the intake (validation, MCAP record).

The ideal for ``k`` collectors is ``k`` times the one-collector rate. On a machine with ``c``
cores it cannot exceed about ``c / (collector CPU per sample + coordinator CPU per sample)``;
the section says where the measured curve leaves the ideal and why. The machine's load average
is printed with each run: other work on the machine lowers every figure.

Run: ``.venv/bin/python -m bench.bench_scaling`` (a few minutes on 2 cores; ``--rounds``,
``--collectors 1 2``, ``--no-report`` to print only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from bench._report import command_line, publish

ROUND = 800  # MAL's N on D'Claw: min(20 H, 3000) with H = 40
# small models: the learners' phases between rounds stay short (collection is what is measured)
GAME = [
    f"n_init={ROUND}", "ensemble_size=2", "model_hidden=[64,64]", "model_epochs_aggressive=2",
    "model_epochs_conservative=1", "model_min_steps=10", "model_max_steps=50", "npg_trajectories=10", "npg_steps_aggressive=2",
    "cg_iters=5", "value_epochs=1", "eval_episodes=1",
]


def _cpu_s(pid: int) -> Optional[float]:
    """utime + stime of a process (s), or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores, every process) since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)  # user nice system irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _states(mcap: Path) -> list[tuple[float, dict]]:
    """(log time s, game state body) of every recorded game state, in order."""
    from std_msgs.msg import String

    from mbrl_ros.nodes import GAME_STATE
    from mbrl_ros.nodes.recording import read_ros_messages

    return [(t / 1e9, json.loads(m.data)) for m, t in read_ros_messages(mcap, GAME_STATE, String)]


def _episode_times(mcap: Path) -> list[tuple[float, str, int]]:
    """(log time s, robot id, steps) of every recorded episode."""
    from std_msgs.msg import UInt8MultiArray

    from mbrl_ros import wire
    from mbrl_ros.nodes import TRANSITIONS
    from mbrl_ros.nodes.recording import read_ros_messages

    out = []
    for m, t in read_ros_messages(mcap, TRANSITIONS, UInt8MultiArray):
        h = wire.peek_header(wire.from_msg(m))
        out.append((t / 1e9, h["robot_id"], int(h["T"])))
    return out


def rounds(states: list[tuple[float, dict]]) -> list[dict]:
    """Collection rounds from the recorded states: start (collect opens), end (fit_model), iteration."""
    out, start, it = [], None, None
    for t, s in states:
        if start is None and s.get("phase") == "collect" and s.get("collect"):
            start, it = t, s.get("iteration")
        elif start is not None and s.get("phase") != "collect":
            out.append({"iteration": it, "start": start, "end": t, "wall_s": t - start})
            start = None
    return out


def run(k: int, n_rounds: int, tmp: Path, seed: int) -> dict:
    """One graph with ``k`` collectors; returns its rounds, CPU seconds per node and extras."""
    log_dir = tmp / f"k{k}"
    config = tmp / f"k{k}.yaml"
    config.write_text(yaml.safe_dump({
        "/**": {"ros__parameters": {"game_overrides": GAME + [f"samples={ROUND * (n_rounds + 1)}"], "torch_threads": 1,
                                    "realtime": False}},
        "game_coordinator": {"ros__parameters": {"eval_in_sim": False, "gate_probe_size": 32, "gate_model_horizon": 3}},
    }))
    domain = 120 + (os.getpid() + k) % 80
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", "mal_dclaw", f"num_collectors:={k}", f"config:={config}",
            f"log_dir:={log_dir}", f"seed:={seed}", f"domain_id:={domain}", "--no-progress", "--timeout", "1200"]
    load0 = _loadavg()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"))
    cpu: dict[str, float] = {}
    pids: dict[str, int] = {}
    samples: list[tuple[float, dict[str, float], float]] = []  # (wall time, CPU s per node, machine busy s)
    while proc.poll() is None:
        if not pids and (log_dir / "pids.json").is_file():
            try:
                pids = json.loads((log_dir / "pids.json").read_text())
            except ValueError:
                pids = {}
        for name, pid in pids.items():  # the last reading before each process exits
            c = _cpu_s(pid)
            if c is not None:
                cpu[name] = c
        samples.append((time.time(), dict(cpu), _machine_busy_s()))  # wall clock: the MCAP's log times
        time.sleep(0.1)
    wall = time.monotonic() - t0
    out = proc.stdout.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"graph with {k} collectors failed ({proc.returncode}):\n{out[-3000:]}")
    summary = json.loads((log_dir / "summary.json").read_text())
    mcap = Path(summary["mcap"])
    rs = rounds(_states(mcap))
    eps = _episode_times(mcap)
    return {"k": k, "wall_s": wall, "rounds": rs, "cpu": cpu, "episodes": eps, "summary": summary,
            "load": (load0, _loadavg()), "cpu_samples": samples}


def window_cpu(samples: list[tuple[float, dict[str, float], float]], start: float, end: float) -> tuple[dict, float, float]:
    """CPU seconds per node and of the whole machine between two wall times (nearest readings)."""
    inside = [x for x in samples if start <= x[0] <= end]
    if len(inside) < 2:
        return {}, 0.0, 0.0
    a, b = inside[0], inside[-1]
    per_node = {n: b[1][n] - a[1].get(n, b[1][n]) for n in b[1]}
    return per_node, b[2] - a[2], b[0] - a[0]


def analyse(r: dict) -> dict:
    """Collection rate over the rounds after the first, CPU per 1000 samples, surplus episodes."""
    later = [x for x in r["rounds"] if (x["iteration"] or 0) >= 1]
    rates = [ROUND / x["wall_s"] for x in later if x["wall_s"] > 0]
    samples = sum(steps for _t, _r, steps in r["episodes"])
    counted = ROUND * len(r["rounds"])
    # CPU inside the measured rounds only (process start-up and the learners' phases left out)
    coll = coord = machine = span = 0.0
    for x in later:
        per_node, busy, dt = window_cpu(r["cpu_samples"], x["start"], x["end"])
        coll += sum(v for n, v in per_node.items() if n.startswith("collector_"))
        coord += per_node.get("game_coordinator", 0.0)
        machine += busy
        span += dt
    ours = coll + coord  # (the learners wait while the collectors collect; their CPU is in the machine's)
    n_later = ROUND * len(later)
    return {
        "k": r["k"], "rate": float(np.mean(rates)) if rates else float("nan"),
        "rate_min": float(min(rates)) if rates else float("nan"), "rate_max": float(max(rates)) if rates else float("nan"),
        "rounds": len(rates), "round_s": float(np.mean([x["wall_s"] for x in later])) if later else float("nan"),
        "surplus": max(0, samples - counted), "samples": samples,
        "collector_cpu_per_1k": 1000.0 * coll / max(n_later, 1), "coordinator_cpu_per_1k": 1000.0 * coord / max(n_later, 1),
        # cores busy while collecting: with this graph's nodes, and with everything else on the machine
        "cores_ours": ours / span if span else float("nan"),
        "cores_others": max(0.0, machine - ours) / span if span else float("nan"),
        "wall_s": r["wall_s"], "load": r["load"],
    }


def report(rows: list[dict], argv: str) -> str:
    cores = os.cpu_count() or 1
    base = next((x["rate"] for x in rows if x["k"] == 1), float("nan"))
    lines = [
        "## Scaling: collectors vs collection throughput (`bench/bench_scaling.py`)",
        "",
        f"`{argv}`: MAL on D'Claw turn fixed through the graph (`mbrl-ros launch mal_dclaw num_collectors:=k`), "
        f"rounds of N = {ROUND} samples (MAL's 20 H; `n_init` {ROUND}), small models, the coordinator's "
        "evaluation off, collectors as fast as possible. Rate = 800 / the wall time from the game state that "
        "opens a round's collection to the one that closes it, over the rounds after the first (which also waits "
        "for the collector processes to start); ideal = k x the one-collector rate. CPU from `/proc` per node process.",
        "",
        "| collectors | samples/s while collecting (min..max) | ideal | efficiency | round wall time | surplus samples | collector CPU s / 1k samples | coordinator CPU s / 1k samples | cores busy: graph / other processes | load avg (start, end) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in rows:
        ideal = x["k"] * base
        lines.append(
            f"| {x['k']} | {x['rate']:.0f} ({x['rate_min']:.0f}..{x['rate_max']:.0f}) | {ideal:.0f} | "
            f"{x['rate'] / ideal:.0%} | {x['round_s']:.2f} s | {x['surplus']} of {x['samples']} | "
            f"{x['collector_cpu_per_1k']:.2f} | {x['coordinator_cpu_per_1k']:.2f} | {x['cores_ours']:.2f} / "
            f"{x['cores_others']:.2f} | {x['load'][0]:.1f}, {x['load'][1]:.1f} |")
    coll_ms = float(np.nanmean([x["collector_cpu_per_1k"] for x in rows]))
    coord_ms = float(np.nanmean([x["coordinator_cpu_per_1k"] for x in rows]))
    per_sample = (coll_ms + coord_ms) / 1000.0
    bound = cores / per_sample if per_sample > 0 else float("nan")
    best = max(rows, key=lambda x: x["rate"])
    below = [x for x in rows if x["k"] > 1 and x["rate"] < 0.8 * x["k"] * base]
    lines += [
        "",
        f"Per sample, a collector spends about {coll_ms:.2f} CPU ms (MuJoCo step, ONNX inference, packing, DDS) and "
        f"the coordinator {coord_ms:.2f} ms (validation, MCAP record), so {cores} cores take at most about "
        f"{bound:.0f} samples/s whatever the number of collectors, less what other processes take. "
        f"The measured rate peaks at {best['rate']:.0f} samples/s with {best['k']} collector(s).",
    ]
    contended = [x for x in rows if x["cores_others"] > 0.25 * cores]
    if contended:
        lines.append(
            f"Other processes held {min(x['cores_others'] for x in contended):.2f}..{max(x['cores_others'] for x in contended):.2f} "
            f"of the {cores} cores during the measured rounds: the one-collector rate (the ideal's base) is then "
            f"that of a collector with part of a core, and the graph's share of the CPU grows with its number of "
            f"processes (the scheduler shares the CPU among runnable processes), which is why the rate still rose "
            f"beyond the first collector with the CPU saturated. The per-sample costs are the figures that carry over "
            f"to a quiet machine.")
    if below:
        k0 = below[0]
        busy = k0["cores_ours"] + k0["cores_others"]
        lines.append(
            f"It leaves the ideal (efficiency under 80%) at {k0['k']} collectors: the cores were busy "
            f"{busy:.2f} of {cores} ({k0['cores_ours']:.2f} this graph, {k0['cores_others']:.2f} other processes)"
            + (", i.e. the CPU is saturated: more collectors only share it." if busy >= 0.85 * cores else
               "; the CPU was not saturated, so the loss is in the round's end (collectors waiting for the "
               "coordinator's count, episodes dropped at the round's end) and DDS delivery."))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collectors", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--rounds", type=int, default=4, help="rounds after the first (each 800 samples)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    ap.add_argument("--save", type=Path, help="also write the measured rows as JSON to this file")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as d:
        for k in args.collectors:
            r = run(k, args.rounds, Path(d), args.seed)
            a = analyse(r)
            rows.append(a)
            print(f"k={k}: {a['rate']:.0f} samples/s over {a['rounds']} rounds ({a['round_s']:.2f} s each), "
                  f"collector CPU {a['collector_cpu_per_1k']:.2f} s/1k, coordinator {a['coordinator_cpu_per_1k']:.2f} s/1k, "
                  f"cores: graph {a['cores_ours']:.2f}, others {a['cores_others']:.2f}, "
                  f"surplus {a['surplus']}, wall {a['wall_s']:.0f} s, load {a['load'][0]:.1f}->{a['load'][1]:.1f}",
                  flush=True)
    if args.save:
        args.save.write_text(json.dumps(rows, indent=1))
    publish("scaling", report(rows, command_line()), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
