"""The PAL graph with a robot's settings learns on the emulated D'Claw: samples to 90%, gate refusals.

``mbrl-ros launch pal_dclaw use_sim:=false device_path:=<pty>`` against the servo emulator
(``mbrl_ros.hardware.emulator.ServoEmulator``, MuJoCo physics in real time, the process ``mbrl-ros
emulate --robot dclaw`` runs): the lifecycle hardware collector drives the emulated Dynamixel bus at
10 Hz through the full safety layer and ROBEL's scripted resets, and the coordinator's policy gate
runs as on a robot (``gate_model_severity`` auto resolves to abort with ``use_sim:=false``: a
candidate the model predicts to leave the joint limits is refused, not only logged). The game is
``config/pal.yaml`` for dclaw-turn-fixed, stopped once 90% success is held for 3 evaluations (as
the sample-efficiency benchmark's runs). Writes the ``robot_graph`` section of BENCHMARKS.md (``robot_graph_s<N>`` for seed N > 0).

One run takes about as many minutes as it collects samples / 600 plus the resets (20-40 minutes to
90% on 2 cores): a benchmark, not a test (``test/test_ros_hardware_graph.py`` plays a short game).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from bench._graph_harness import follow_game, free_domain_id
from bench._report import command_line, publish

ROOT = Path(__file__).resolve().parent.parent
TASK_ID = "dclaw-turn-fixed"
STOP = ["stop_success=0.9", "stop_success_iters=3"]


def goal_limit_report(emu: Any) -> dict[str, Any]:
    """Every Goal Position the emulated servos received, against the joints' hard limits."""
    cfg = emu.config
    writes = emu.goal_writes()
    unit = 2 * np.pi / 4096  # one Dynamixel position tick
    outside = 0
    for j, dxl_id in enumerate(cfg.joint_ids):
        q = np.array([w.rad for w in writes if w.dxl_id == dxl_id])
        outside += int(np.sum((q < cfg.lower[j] - unit) | (q > cfg.upper[j] + unit)))
    return {"goal_writes": len(writes), "outside_hard_limits": outside}


def run(
    out: Path, seed: int, samples: int, settle_s: float, game: list[str], timeout_s: float, stall_s: float
) -> dict[str, Any]:
    """One graph run against an in-process emulator; returns what the record and logs say.

    A game whose sample count has not moved for ``stall_s`` is stopped and reported as frozen
    (the last lines of the hardware collector's log say why)."""
    from mbrl_ros.hardware.emulator import ServoEmulator

    log_dir = out / "run"
    if log_dir.exists():
        raise SystemExit(f"{log_dir} exists: pick another --out (runs are kept, never overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    config = out / "robot.yaml"
    config.write_text(yaml.safe_dump({
        # ROBEL waits 1 s for the valve to settle after a reset; the emulated valve settles in 0.2 s
        "hardware_collector": {"ros__parameters": {"reset_object_settle_s": float(settle_s)}},
    }))
    domain = free_domain_id()
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    emu = ServoEmulator("dclaw", physics="mujoco", realtime=True)
    pty = emu.start()
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", "pal_dclaw", "use_sim:=false", f"device_path:={pty}",
            f"samples:={samples}", f"seed:={seed}", f"log_dir:={log_dir}", f"config:={config}",
            f"domain_id:={domain}", "set:=" + ",".join(STOP + game), "--no-progress", "--timeout", str(timeout_s)]
    t0 = time.monotonic()
    launch_log = out / "launch.log"
    with open(launch_log, "wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    frozen: Optional[str] = None
    try:
        stalled_at = follow_game(proc, log_dir, t0, period_s=2.0, phases=("collect", "done"), stall_s=stall_s)
        if stalled_at is not None:
            hw = (log_dir / "logs" / "hardware_collector.log").read_text(errors="replace").splitlines()
            frozen = f"no new sample for {stall_s:.0f} s at {stalled_at} samples; collector: " + " | ".join(hw[-3:])
            print("  frozen:", frozen, flush=True)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=60)
        emu.stop()
    wall = time.monotonic() - t0
    if proc.returncode != 0 and frozen is None:
        raise RuntimeError(f"graph run failed ({proc.returncode}): see {launch_log}\n"
                           + launch_log.read_text(errors="replace")[-3000:])
    history = [json.loads(x) for x in (log_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    hw_log = (log_dir / "logs" / "hardware_collector.log").read_text(errors="replace")
    summary_path = log_dir / "summary.json"
    return {
        "history": history,
        "frozen": frozen,
        "faulted_episodes": hw_log.count("ended by a world fault"),
        "summary": json.loads(summary_path.read_text()) if summary_path.is_file() else _summary_of(history),
        "limits": goal_limit_report(emu),
        "reset_errors": hw_log.count("ResetError"),
        "dropped_episodes": hw_log.count("episode dropped") + hw_log.count("episode failed"),
        "wall": wall,
        "log_dir": log_dir,
    }


def _summary_of(history: list[dict]) -> dict[str, Any]:
    """What summary.json would say, from the metrics of a run stopped before its end."""
    last = history[-1] if history else {}
    evals = [h for h in history if h.get("eval_success") is not None]
    return {
        "samples": int(last.get("samples", 0)),
        "iterations": max(0, len(history) - 1),
        "final_eval_success": evals[-1]["eval_success"] if evals else None,
        "final_eval_return": evals[-1].get("eval_return") if evals else None,
        "sequence_gaps": "-",
        "refused_out_of_order": "-",
    }


def report(r: dict[str, Any], args: argparse.Namespace) -> str:
    from mbrl_ros.core.report import success_milestones

    hist, s = r["history"], r["summary"]
    m = success_milestones(hist)
    gated = [h for h in hist if h.get("gate_passed") is not None]
    refused = [h for h in gated if h["gate_passed"] is False]
    warned = [h for h in gated if h["gate_passed"] and h.get("gate_warning")]
    evals = [h for h in hist if h.get("eval_success") is not None]

    def held(x: Optional[int]) -> str:
        return f"{x:,}" if x is not None else f">{s['samples']:,}"

    curve = ", ".join(f"{h['samples']:,}: {h['eval_success']:.2f}" for h in evals)
    lines = [
        "## The PAL graph with a robot's settings on the emulated D'Claw (`bench/bench_robot_graph.py`)"
        + (f", seed {args.seed}" if args.seed else ""),
        "",
        "`mbrl-ros launch pal_dclaw use_sim:=false device_path:=<pty>` against the servo emulator (MuJoCo physics "
        "in real time on a pseudo-terminal, as `mbrl-ros emulate --robot dclaw` serves it): the lifecycle hardware "
        "collector at 10 Hz through the Dynamixel driver, the safety layer and ROBEL's scripted resets; the "
        "coordinator's gate as on a robot (`gate_model_severity` auto = abort with `use_sim:=false`); "
        f"`config/pal.yaml` for {TASK_ID}, seed {args.seed}, budget {args.samples:,}, stopped once 90% is held "
        f"for 3 evaluations; valve settle time after a reset {args.settle_s} s (ROBEL: 1 s)"
        + (f"; overrides `{' '.join(args.set)}`" if args.set else "") + ".",
        "",
        "| measure | value |",
        "|---|---|",
        f"| real samples to 90% held (first touch, relapses) | **{held(m['held'])}** "
        f"({held(m['first_touch'])}, {m['relapses']}) |",
        f"| real samples at the end, iterations | {s['samples']:,}, {s['iterations']} |",
        f"| final evaluation success / return | {s['final_eval_success']} / {s['final_eval_return'] or 0:.1f} |",
        f"| game frozen (no new sample for {args.stall_s:.0f} s) | {r['frozen'] or 'no'} |",
        f"| episodes ended by a safety abort (published with their steps before it) | {r['faulted_episodes']} |",
        f"| candidate policies gated / refused / passed with a model warning | {len(gated)} / {len(refused)} / "
        f"{len(warned)} |",
        f"| Goal Position writes / outside the joints' hard limits | {r['limits']['goal_writes']:,} / "
        f"{r['limits']['outside_hard_limits']} |",
        f"| reset failures (ResetError) / episodes dropped unfinished | {r['reset_errors']} / {r['dropped_episodes']} |",
        f"| sequence gaps / refused out of order | {s['sequence_gaps']} / {s['refused_out_of_order']} |",
        f"| wall time incl. start-up | {r['wall'] / 60:.1f} min |",
        "",
        f"Evaluation success (samples: success): {curve}.",
    ]
    if refused:
        lines += ["", "Refusals: " + "; ".join(f"iteration {h['iteration']}: {h.get('gate_warning')}" for h in refused)]
    if args.compare:
        other = [json.loads(x) for x in (Path(args.compare) / "metrics.jsonl").read_text().splitlines() if x.strip()]
        mo = success_milestones(other)
        lines += ["", f"The same seed in simulation with `mbrl-ros train` ({args.compare}): 90% held at "
                      f"{held(mo['held'])} (first touch {held(mo['first_touch'])})."]
    lines += ["", f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.", "",
              f"Command: `{command_line()}`"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=15000, help="real-sample budget (default 15000)")
    ap.add_argument("--settle-s", type=float, default=0.2, help="valve settle time of a reset (ROBEL: 1.0)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="game override (repeatable)")
    ap.add_argument("--timeout-s", type=float, default=5400.0, help="stop the graph after this long")
    ap.add_argument("--stall-s", type=float, default=600.0, help="stop a game whose samples do not move this long")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "robot_graph", help="run folder (kept)")
    ap.add_argument("--compare", help="an in-process run folder of the same seed to quote")
    ap.add_argument("--no-write", "--no-report", dest="no_write", action="store_true", help="print only")
    args = ap.parse_args()
    import rclpy  # noqa: F401 - fail early without ROS

    from mbrl_ros.cli import stop_on_sigint

    stop_on_sigint()  # Ctrl-C (or SIGINT to a background job) stops the graph and the emulator

    print(f"robot graph: PAL {TASK_ID} on the emulated D'Claw, seed {args.seed}, budget {args.samples}", flush=True)
    r = run(args.out / f"pal-{TASK_ID}-s{args.seed}", args.seed, args.samples, args.settle_s, args.set,
            args.timeout_s, args.stall_s)
    # one section per seed: seed 0's is "robot_graph", another seed's "robot_graph_s<seed>"
    publish("robot_graph" + (f"_s{args.seed}" if args.seed else ""), report(r, args), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
