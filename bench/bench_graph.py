"""Benchmark of the ROS node graph; writes the "graph" section of BENCHMARKS.md.

1. Throughput and learning: the same game (config, seed) played by ``mbrl-ros launch pal_dclaw``
   (separate processes over DDS) and by the in-process ``mbrl-ros train``: real samples per
   wall-clock second including learning (whole run, and between the end of the initial
   collection and the end of the run), final evaluation success, samples to 90% success.
2. Policy hand-off: policy player publishes -> collector starts an episode with it (the gate and
   the deployment in between), from ``/mbrl/metrics/policy_handoff_ms`` during run 1.
3. Transition delivery: a burst of episodes published back to back into a model learner process;
   every one must arrive (no loss, no duplicate) and the rate is reported.
4. Collector loop timing at the task's 10 Hz in real time (lateness of each step vs its deadline,
   and the deviation of each period from 100 ms), p99 and max.

Run: ``.venv/bin/python -m bench.bench_graph`` (about 5 minutes on 2 cores; ``--quick`` for a
smaller game). Every figure printed is measured in this run.

``--duty-cycle`` (the "duty_cycle" section instead): the robot's duty cycle through the graph.
``mbrl-ros launch pal_dclaw realtime:=true`` (``--algo mal``: ``mal_dclaw``) with one collector at
the task's 10 Hz, the game of ``config/<algo>.yaml`` (``n_init`` 400 unless ``--n-init``; more
``--set key=value`` go to the graph's ``set:=``), for ``--iterations`` iterations (or
``--samples``). From the run's MCAP record: the fraction of wall time, from the end of the
initial collection to the end of the run, during which the collector was running an episode
(each recorded episode spans ``[stamp - T dt, stamp]``; the intervals are merged), and the
per-iteration split seen from the graph (the coordinator's game-state phases: collect, fit,
NPG, gate; hand-off = the policy deployed -> the first episode of it starts).
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

import numpy as np
import yaml

from bench._graph_harness import follow_game
from bench._report import command_line, publish, update_section

ROOT = Path(__file__).resolve().parent.parent

# A game that finishes in about a minute per run on 2 cores (small models, the paper's N).
BENCH_GAME = [
    "n_init=400", "samples_per_iter=200", "buffer_size=1000", "ensemble_size=2", "model_hidden=[128,128]",
    "model_epochs_aggressive=20", "model_max_steps=400", "npg_trajectories=50", "npg_steps_conservative=2",
    "cg_iters=10", "eval_episodes=5",
]


def _domain() -> int:
    return 100 + (os.getpid() % 100)


def _env(domain: int) -> dict:
    return dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")


def samples_to(history: list[dict], threshold: float = 0.9):
    for h in history:
        if (h.get("eval_success") or 0.0) >= threshold:
            return h["samples"]
    return None


def steady_rate(history: list[dict]) -> float:
    """Samples per second after the initial collection (iteration 0) until the end."""
    if len(history) < 2:
        return float("nan")
    a, b = history[0], history[-1]
    return (b["samples"] - a["samples"]) / max(1e-9, b["wall_s"] - a["wall_s"])


def run_graph(tmp: Path, game: list[str], samples: int, seed: int, threads: int) -> dict:
    from mbrl_ros.nodes import METRICS_PREFIX
    from bench._graph_harness import Probe
    from std_msgs.msg import Float64

    domain = _domain()
    log_dir = tmp / "graph"
    config = tmp / "bench_graph.yaml"
    config.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "game_overrides": game + [f"samples={samples}"], "torch_threads": threads}}}))
    probe = Probe(domain)
    handoff = probe.subscribe(Float64, METRICS_PREFIX + "policy_handoff_ms", 100)
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", "pal_dclaw", f"log_dir:={log_dir}", f"config:={config}",
            f"seed:={seed}", f"domain_id:={domain}", "--no-progress"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(domain))
    try:
        while proc.poll() is None:
            probe.executor.spin_once(timeout_sec=0.05)
        wall = time.monotonic() - t0
    finally:
        probe.close()
    out = proc.stdout.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"graph run failed ({proc.returncode}):\n{out[-3000:]}")
    history = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((log_dir / "summary.json").read_text())
    return {"wall": wall, "history": history, "summary": summary,
            "handoff_ms": [m.data for _t, m in handoff][1:]}  # [0] is the initial policy (process start-up)


def run_in_process(tmp: Path, game: list[str], samples: int, seed: int, threads: int) -> dict:
    out_dir = tmp / "inproc"
    argv = [sys.executable, "-m", "mbrl_ros.cli", "train", "--algo", "pal", "--task", "dclaw-turn-fixed",
            "--samples", str(samples), "--seed", str(seed), "--out", str(out_dir), "--no-progress",
            "--threads", str(threads)]
    for item in game:
        argv += ["--set", item]
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"in-process run failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    history = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return {"wall": wall, "history": history}


def delivery_burst(tmp: Path, n: int) -> dict:
    """``n`` D'Claw episodes published back to back into a model learner process."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import UInt8MultiArray

    from mbrl_ros import wire
    from mbrl_ros.nodes import TRANSITIONS, transitions_qos
    from bench._graph_harness import TINY_GAME, Graph, Probe, diagnostics_of

    g = Graph(tmp / "burst", domain_id=_domain() + 1)
    (tmp / "burst").mkdir(exist_ok=True)
    g.start("model_learner", "model_learner", {"algo": "mal", "task": "dclaw-turn-fixed", "game_overrides": TINY_GAME})
    probe = Probe(g.domain_id)
    try:
        diags = probe.subscribe(DiagnosticArray, "/diagnostics", 50)
        pub = probe.publisher(UInt8MultiArray, TRANSITIONS, transitions_qos())
        probe.spin_until(lambda: pub.get_subscription_count() > 0 and diagnostics_of(diags, "model_learner"), 120,
                         "the learner")
        rng = np.random.default_rng(0)
        msgs = []
        for i in range(n):
            rec = wire.EpisodeRecord("burst", f"burst-s-{i:06d}", i, 0, "dclaw-turn-fixed",
                                     rng.uniform(-1, 1, (41, 21)), rng.uniform(-1, 1, (40, 9)), rng.standard_normal(40),
                                     False, stream="s", aux=rng.uniform(-1, 1, (41, 9)))
            msgs.append(wire.to_msg(wire.pack_episode(rec)))
        t0 = time.monotonic()
        for m in msgs:
            pub.publish(m)
        t_pub = time.monotonic() - t0

        def got() -> int:
            d = diagnostics_of(diags, "model_learner") or {}
            return int(d.get("episodes_accepted", 0))

        try:
            probe.spin_until(lambda: got() >= n, 120, "every episode")
        except AssertionError:
            pass
        t_all = time.monotonic() - t0
        d = diagnostics_of(diags, "model_learner") or {}
        return {"n": n, "received": got(), "gaps": int(d.get("sequence_gaps", -1)),
                "duplicates": int(d.get("episodes_duplicate", 0)), "publish_s": t_pub, "all_s": t_all,
                "bytes": len(msgs[0].data)}
    finally:
        probe.close()
        g.close()


def realtime_jitter(tmp: Path, seconds: float, priority: int = 0) -> dict:
    from diagnostic_msgs.msg import DiagnosticArray

    from bench._graph_harness import TINY_GAME, Graph, Probe, diagnostics_of

    (tmp / f"rt{priority}").mkdir(exist_ok=True)
    g = Graph(tmp / f"rt{priority}", domain_id=_domain() + 2)
    big = TINY_GAME + ["samples=1000000", "n_init=500000"]
    g.start("game_coordinator", "game_coordinator", {"algo": "pal", "task": "dclaw-turn-fixed", "game_overrides": big,
                                                     "log_dir": str(tmp / f"rt{priority}" / "run"), "record": False,
                                                     "eval_in_sim": False})
    g.start("policy_improver", "policy_improver", {"algo": "pal", "task": "dclaw-turn-fixed", "game_overrides": big})
    g.start("collector", "collector_0", {"task": "dclaw-turn-fixed", "robot_id": "rt0", "realtime": True,
                                         "realtime_priority": priority})
    probe = Probe(g.domain_id)
    try:
        diags = probe.subscribe(DiagnosticArray, "/diagnostics", 50)
        probe.spin_until(lambda: "loop_jitter_p99_ms" in (diagnostics_of(diags, "collector_0") or {}), 120,
                         "real-time collection")
        probe.spin_for(seconds)
        d = diagnostics_of(diags, "collector_0")
        return {k: float(d[k]) for k in ("loop_jitter_p99_ms", "loop_jitter_max_ms", "loop_period_dev_p99_ms",
                                          "loop_jitter_steps")}
    finally:
        probe.close()
        g.close()


# ---------------------------------------------------------------------------------------
# Robot duty cycle at real-time rate
# ---------------------------------------------------------------------------------------
def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _covered(intervals: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Seconds of ``[t0, t1]`` covered by the (merged) intervals."""
    return sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in intervals)


def read_record(mcap: Path) -> tuple[list[dict], list[tuple[float, dict]]]:
    """The episodes (headers: ``stamp``, ``T``, ``policy_version``, ...) and the game states
    ``(wall time s, state)`` the coordinator recorded."""
    from std_msgs.msg import String, UInt8MultiArray

    from mbrl_ros import wire
    from mbrl_ros.nodes import GAME_STATE, TRANSITIONS
    from mbrl_ros.nodes.recording import read_ros_messages

    episodes = [wire.peek_header(wire.from_msg(m)) for m, _t in read_ros_messages(mcap, TRANSITIONS, UInt8MultiArray)]
    states = [(t_ns * 1e-9, wire.unpack_game_state(m.data).to_body()) for m, t_ns in read_ros_messages(mcap, GAME_STATE, String)]
    states.sort(key=lambda x: x[0])
    return episodes, states


def duty_cycle_of(episodes: list[dict], states: list[tuple[float, dict]], dt: float) -> dict:
    """Duty cycle and per-iteration split from a run's record (see the module docstring)."""
    train = [e for e in episodes if (e.get("extra") or {}).get("purpose", "train") == "train"]
    busy = _merge([(float(e["stamp"]) - int(e["T"]) * dt, float(e["stamp"])) for e in train])
    t_init_end = next(t for t, s in states if s["iteration"] > 0 or s["phase"] != "collect")
    t_end = next((t for t, s in states if s["done"]), states[-1][0])
    window = t_end - t_init_end
    covered = _covered(busy, t_init_end, t_end)

    # phase segments (iteration, phase, start, end) from the recorded state changes
    segments: list[list] = []
    for t, s in states:
        key = (s["iteration"], s["phase"])
        if not segments or (segments[-1][0], segments[-1][1]) != key:
            if segments:
                segments[-1][3] = t
            segments.append([key[0], key[1], t, t, s["deployed_policy_version"]])
    rows = []
    for it in sorted({seg[0] for seg in segments if seg[0] >= 1}):
        segs = [seg for seg in segments if seg[0] == it]
        if not segs or any(seg[1] == "done" for seg in segs):
            continue  # the budget ended the game as this iteration began
        dur = {ph: sum(seg[3] - seg[2] for seg in segs if seg[1] == ph)
               for ph in ("collect", "fit_model", "improve_policy", "gate", "deploy")}
        collect = [seg for seg in segs if seg[1] == "collect"]
        handoff = None
        if collect:
            version, start = collect[0][4], collect[0][2]
            starts = [float(e["stamp"]) - int(e["T"]) * dt for e in train if e["policy_version"] == version
                      and float(e["stamp"]) - int(e["T"]) * dt >= start - 0.5]
            if starts:
                handoff = max(0.0, min(starts) - start)
        t0, t1 = min(seg[2] for seg in segs), max(seg[3] for seg in segs)
        rows.append({
            "iteration": it, "collect": dur["collect"] - (handoff or 0.0), "fit": dur["fit_model"],
            "npg": dur["improve_policy"], "gate": dur["gate"] + dur["deploy"], "handoff": handoff,
            "wall": t1 - t0, "duty": _covered(busy, t0, t1) / max(t1 - t0, 1e-9),
        })
    return {"duty": covered / max(window, 1e-9), "busy_s": covered, "window_s": window, "episodes": len(train),
            "rows": rows}


def run_duty_cycle(tmp: Path, algo: str, game: list[str], samples: int, seed: int, threads: int) -> dict:
    """One real-time graph run; returns the record's analysis plus the run's files."""
    from mbrl_ros.tasks import get_task

    domain = _domain()
    log_dir = tmp / "duty"
    base = yaml.safe_load((ROOT / "config" / "ros_graph.yaml").read_text())
    base["/**"]["ros__parameters"]["torch_threads"] = int(threads)
    config = tmp / "duty_cycle.yaml"
    config.write_text(yaml.safe_dump(base))
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", f"{algo}_dclaw", "realtime:=true", f"samples:={samples}",
            f"seed:={seed}", f"log_dir:={log_dir}", f"config:={config}", f"domain_id:={domain}", "--no-progress"]
    if game:
        argv.append("set:=" + ",".join(game))
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(domain))
    follow_game(proc, log_dir, t0)
    out = proc.stdout.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"graph run failed ({proc.returncode}):\n{out[-3000:]}")
    episodes, states = read_record(log_dir / "record" / "transitions.mcap")
    r = duty_cycle_of(episodes, states, get_task("dclaw-turn-fixed").info.dt)
    r["history"] = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines()]
    r["summary"] = json.loads((log_dir / "summary.json").read_text())
    r["dropped"] = sum(p.read_text(errors="replace").count("episode dropped")
                       for p in (log_dir / "logs").glob("collector_*.log"))
    r["wall"] = time.monotonic() - t0
    return r


def duty_cycle_main(args) -> int:
    from mbrl_ros.core.config import load_config
    from mbrl_ros.tasks import get_task

    game = ([f"n_init={args.n_init}"] if args.n_init else []) + list(args.set or [])
    cfg = load_config(args.algo, "dclaw-turn-fixed", game)
    n = cfg.n_per_iter(get_task("dclaw-turn-fixed").info.horizon)
    samples = args.samples or cfg.n_init + args.iterations * n
    threads = 0 if args.threads is None else args.threads
    print(f"duty cycle: {args.algo}_dclaw at 10 Hz real time, {samples} samples (N_init {cfg.n_init}, N {n}), "
          f"torch_threads {threads or 'auto'}, set {' '.join(game) or '-'}", flush=True)
    import rclpy  # noqa: F401 - fail early without ROS

    with tempfile.TemporaryDirectory(prefix="bench_duty_") as d:
        r = run_duty_cycle(Path(d), args.algo, game, samples, args.seed, threads)
    rows = r["rows"]
    hist = {h["iteration"]: h for h in r["history"]}

    def f(x, nd=1):
        return "-" if x is None else f"{x:.{nd}f}"

    def thr(h, key):
        return "-" if h.get(key) is None else str(h[key])

    table = [
        "| iteration | collect (s) | fit (s) | NPG (s) | gate (s) | hand-off (s) | iteration wall (s) | duty | "
        "fit / NPG threads |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        h = hist.get(row["iteration"], {})
        table.append(f"| {row['iteration']} | {f(row['collect'])} | {f(row['fit'])} | {f(row['npg'])} | "
                     f"{f(row['gate'], 2)} | {f(row['handoff'], 2)} | {f(row['wall'])} | {100 * row['duty']:.0f}% | "
                     f"{thr(h, 'fit_threads')} / {thr(h, 'npg_threads')} |")
    if rows:
        def mean(key):
            vals = [row[key] for row in rows if row[key] is not None]
            return sum(vals) / len(vals) if vals else None

        table.append(f"| mean | {f(mean('collect'))} | {f(mean('fit'))} | {f(mean('npg'))} | {f(mean('gate'), 2)} | "
                     f"{f(mean('handoff'), 2)} | {f(mean('wall'))} | {100 * mean('duty'):.0f}% | |")
    s = r["summary"]
    md = "\n".join([
        "## Robot duty cycle through the graph (bench/bench_graph.py --duty-cycle)",
        "",
        f"Game: {s['algo'].upper()} on `dclaw-turn-fixed` through `mbrl-ros launch {args.algo}_dclaw realtime:=true` "
        f"(one simulated collector at the task's 10 Hz), `config/{args.algo}.yaml` with "
        f"{'`' + ' '.join(game) + '`' if game else 'no overrides'}, seed {args.seed}, torch_threads "
        f"{threads or '0 (auto)'}; {s['samples']} real samples ({cfg.n_init} initial, then {len(rows)} iterations of "
        f"{n}), wall time {r['wall']:.0f} s including start-up.",
        "",
        f"**Robot duty cycle {100 * r['duty']:.1f}%**: the collector ran episodes {r['busy_s']:.1f} s of the "
        f"{r['window_s']:.1f} s from the end of the initial collection to the end of the run "
        f"({r['episodes']} episodes recorded, {r['dropped']} dropped unfinished; an episode spans "
        f"[end stamp - T x 0.1 s, end stamp]).",
        "",
        "Per iteration, from the coordinator's recorded game-state phases (hand-off: the policy deployed -> the "
        "collector starts its first episode; collect excludes it):",
        "",
        *table,
        "",
        f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.",
        "",
        f"Command: `{command_line()}`",
    ])
    publish("duty_cycle", md, write=not args.no_write)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=None, help="real samples of each run (default 3000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads of every learner (both runs; default 1; --duty-cycle: default 0 = auto)")
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--jitter-s", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="a smaller game and shorter timing runs")
    ap.add_argument("--paper", action="store_true",
                    help="the real game (config/pal.yaml for dclaw-turn-fixed, no overrides; default 12000 samples): "
                         "compares samples to 90%% success, about 20 minutes on 2 cores")
    ap.add_argument("--no-write", "--no-report", dest="no_write", action="store_true",
                    help="print only; do not update BENCHMARKS.md")
    ap.add_argument("--only", choices=["burst", "jitter"], default=None, help="run one part only (implies --no-write)")
    ap.add_argument("--duty-cycle", action="store_true",
                    help="measure the robot duty cycle through the graph at 10 Hz real time (section duty_cycle)")
    ap.add_argument("--algo", choices=["pal", "mal"], default="pal", help="--duty-cycle: pal_dclaw or mal_dclaw")
    ap.add_argument("--iterations", type=int, default=5,
                    help="--duty-cycle: iterations after the initial collection (when --samples is not given)")
    ap.add_argument("--n-init", type=int, default=400,
                    help="--duty-cycle: initial samples (default 400; 0 = the game config's)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                    help="--duty-cycle: game override passed to the graph's set:= (repeatable)")
    ap.set_defaults(samples=None)
    args = ap.parse_args()
    if args.duty_cycle:
        return duty_cycle_main(args)
    if args.threads is None:
        args.threads = 1
    game = [] if args.paper else BENCH_GAME
    if args.samples is None:
        args.samples = 12000 if args.paper else 3000
    if args.quick:
        args.samples, args.burst, args.jitter_s = 1400, 500, 10.0
    import rclpy  # noqa: F401 - fail early without ROS

    if args.only:
        with tempfile.TemporaryDirectory(prefix="bench_graph_") as d:
            r = delivery_burst(Path(d), args.burst) if args.only == "burst" else realtime_jitter(Path(d), args.jitter_s)
        print(r)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_graph_") as d:
        tmp = Path(d)
        print(f"1/4 graph run ({args.samples} samples, seed {args.seed}) ...", flush=True)
        graph = run_graph(tmp, game, args.samples, args.seed, args.threads)
        print("2/4 in-process run ...", flush=True)
        inproc = run_in_process(tmp, game, args.samples, args.seed, args.threads)
        print(f"3/4 delivery burst of {args.burst} episodes ...", flush=True)
        burst = delivery_burst(tmp, args.burst)
        print(f"4/4 10 Hz real-time collector for {args.jitter_s:.0f} s ...", flush=True)
        load_before = os.getloadavg()[0]
        jitter = realtime_jitter(tmp, args.jitter_s)
        jitter_fifo = realtime_jitter(tmp, args.jitter_s, priority=50)

    gh, ih = graph["history"], inproc["history"]
    g_total = gh[-1]["samples"] / graph["wall"]
    i_total = ih[-1]["samples"] / inproc["wall"]
    g_steady, i_steady = steady_rate(gh), steady_rate(ih)
    ho = np.asarray(graph["handoff_ms"]) if graph["handoff_ms"] else np.asarray([np.nan])
    rows = [
        "| measure | graph (`mbrl-ros launch pal_dclaw`) | in-process (`mbrl-ros train`) | ratio |",
        "|---|---|---|---|",
        f"| real samples | {gh[-1]['samples']} | {ih[-1]['samples']} | |",
        f"| iterations | {len(gh) - 1} | {len(ih) - 1} | |",
        f"| wall time, whole run incl. start-up (s) | {graph['wall']:.1f} | {inproc['wall']:.1f} | |",
        f"| samples / s, whole run | {g_total:.1f} | {i_total:.1f} | {g_total / i_total:.2f} |",
        f"| samples / s, after the initial collection | {g_steady:.1f} | {i_steady:.1f} | {g_steady / i_steady:.2f} |",
        f"| final eval success | {gh[-1].get('eval_success')} | {ih[-1].get('eval_success')} | |",
        f"| final eval return | {gh[-1].get('eval_return', float('nan')):.1f} | {ih[-1].get('eval_return', float('nan')):.1f} | |",
        f"| samples to 90% success | {samples_to(gh) or 'not reached'} | {samples_to(ih) or 'not reached'} | |",
    ]
    md = [
        f"Game: PAL on `dclaw-turn-fixed`, seed {args.seed}, {args.samples} samples, torch threads {args.threads} per "
        f"learner, " + (f"overrides `{' '.join(game)}`" if game else "the configuration of `config/pal.yaml` "
                        "(the paper's model and NPG, the per-task values for dclaw-turn-fixed)") + " (both runs).",
        "",
        *rows,
        "",
        f"Policy hand-off (policy player publishes -> collector starts an episode with it; includes the "
        f"coordinator's gate and deployment), {len(graph['handoff_ms'])} hand-offs: median {np.nanmedian(ho):.1f} ms, "
        f"p95 {np.nanpercentile(ho, 95):.1f} ms, max {np.nanmax(ho):.1f} ms.",
        "",
        f"Transition delivery: {burst['n']} D'Claw episodes ({burst['bytes']} B each) published back to back into a "
        f"model learner process: {burst['received']} accepted, {burst['gaps']} sequence gaps, {burst['duplicates']} "
        f"duplicates, in {burst['all_s']:.2f} s ({burst['received'] / burst['all_s']:.0f} episodes/s = "
        f"{40 * burst['received'] / burst['all_s']:.0f} transitions/s, against {g_total:.0f} samples/s in the graph "
        f"run above).",
        "",
        f"Collector at 10 Hz real time ({int(jitter['loop_jitter_steps'])} steps over {args.jitter_s:.0f} s): step "
        f"lateness vs deadline p99 {jitter['loop_jitter_p99_ms']:.2f} ms (max {jitter['loop_jitter_max_ms']:.2f} ms); "
        f"period deviation from 100 ms p99 {jitter['loop_period_dev_p99_ms']:.2f} ms. With `realtime_priority:=50` "
        f"(SCHED_FIFO control thread; {int(jitter_fifo['loop_jitter_steps'])} steps): lateness p99 "
        f"{jitter_fifo['loop_jitter_p99_ms']:.2f} ms (max {jitter_fifo['loop_jitter_max_ms']:.2f} ms), period "
        f"deviation p99 {jitter_fifo['loop_period_dev_p99_ms']:.2f} ms. ({os.cpu_count()} cores, load average "
        f"{load_before:.1f} before the timing runs, {os.getloadavg()[0]:.1f} at the end.)",
        "",
        "Command: `.venv/bin/python -m bench.bench_graph" + (" --quick" if args.quick else "")
        + (" --paper" if args.paper else "") + "`",
    ]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("graph", "## ROS node graph (bench/bench_graph.py)\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
