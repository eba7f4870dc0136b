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

Run: ``.venv/bin/python bench/bench_graph.py`` (about 5 minutes on 2 cores; ``--quick`` for a
smaller game). Every figure printed is measured in this run.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "test"))

from _report import update_section  # noqa: E402

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
    from ros_harness import Probe
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
    from ros_harness import TINY_GAME, Graph, Probe, diagnostics_of

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

    from ros_harness import TINY_GAME, Graph, Probe, diagnostics_of

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=None, help="real samples of each run (default 3000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of every learner (both runs)")
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--jitter-s", type=float, default=30.0)
    ap.add_argument("--quick", action="store_true", help="a smaller game and shorter timing runs")
    ap.add_argument("--paper", action="store_true",
                    help="the real game (config/pal.yaml for dclaw-turn-fixed, no overrides; default 12000 samples): "
                         "compares samples to 90%% success, about 20 minutes on 2 cores")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update BENCHMARKS.md")
    ap.add_argument("--only", choices=["burst", "jitter"], default=None, help="run one part only (implies --no-write)")
    ap.set_defaults(samples=None)
    args = ap.parse_args()
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
        "Command: `.venv/bin/python bench/bench_graph.py" + (" --quick" if args.quick else "")
        + (" --paper" if args.paper else "") + "`",
    ]
    text = "\n".join(md)
    print(text)
    if not args.no_write:
        update_section("graph", "## ROS node graph (bench/bench_graph.py)\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
