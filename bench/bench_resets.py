"""Scripted resets on the emulated D'Claw: how many fail, how long they take, how fast the joints move.

    .venv/bin/python -m bench.bench_resets                       # 500 resets (~35 min), section "resets"
    .venv/bin/python -m bench.bench_resets --resets 20 --no-report

Issue 15: a PAL graph at robot settings on ``mbrl-ros emulate --robot dclaw`` lost 12 of 160
episodes to ``ResetError: safety abort during reset: velocity: joints ... faster than 5.0 rad/s``.
This runs the same path without the learning: the servo emulator in its own process (MuJoCo
physics in real time, as ``mbrl-ros emulate``), ``HardwareEnv`` with the robot's settings
(``hardware/dclaw.yaml`` safety limits, ROBEL's reset timings), and between two resets a short
episode of uniform random actions (what a game's first policies do; it leaves the fingers and the
valve anywhere). The task is ``dclaw-turn-random`` by default: every reset then also turns the
valve to a new start angle with the tops and bottoms limp, the part of the reset that moves the
fingers most. A failed reset (``ResetError`` / ``SafetyError``) is counted and the next reset
re-activates the robot, as the hardware collector does.

Every run writes ``<out>/<label>.jsonl`` (one line per reset) and ``<out>/<label>.json`` (its
summary); the BENCHMARKS.md section is built from every summary in ``--out``, so a run of the
code before the fix (``--label before``, from an old checkout) sits beside the current one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from bench._report import command_line, publish

ROOT = Path(__file__).resolve().parent.parent
SECTION = "resets"


def set_realtime(priority: int) -> None:
    """SCHED_FIFO for this process's threads (and the threads it starts later); 0 = leave as is.

    The robot's servos are separate hardware and its control computer runs the driver at a real-time
    priority (the collector's ``realtime_priority``); on a shared, loaded machine the emulator and the
    driver otherwise wait hundreds of ms for a core and packets time out.
    """
    if priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except (PermissionError, OSError, AttributeError) as exc:
            print(f"SCHED_FIFO {priority} not permitted ({exc}); normal scheduling", file=sys.stderr, flush=True)


def serve_emulator(v_max: Optional[float], priority: int) -> int:
    """``--serve-emulator``: the D'Claw's servos on a pty (prints the path) while the parent lives."""
    from mbrl_ros.hardware.emulator import ServoEmulator

    set_realtime(priority)
    parent = os.getppid()
    kwargs: dict[str, Any] = {} if v_max is None else {"v_max": v_max}  # (older emulators had no bound)
    emu = ServoEmulator("dclaw", physics="mujoco", realtime=True, **kwargs)
    print(emu.start(), flush=True)
    try:
        while os.getppid() == parent:  # the benchmark ended (or was killed): stop too
            time.sleep(0.5)
    finally:
        emu.stop()
    return 0


def start_emulator(v_max: Optional[float], priority: int) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "bench.bench_resets", "--serve-emulator", "--realtime-priority", str(priority)]
    if v_max is not None:
        cmd += ["--v-max", str(v_max)]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert proc.stdout is not None
    port = proc.stdout.readline().strip()
    if not port.startswith("/dev/"):
        proc.kill()
        raise RuntimeError(f"emulator did not start: {port!r}")
    return proc, port


def run(args: argparse.Namespace) -> dict:
    from mbrl_ros.hardware.dynamixel_bus import BusError
    from mbrl_ros.hardware.reset import ResetError
    from mbrl_ros.hardware.robot_env import HardwareEnv
    from mbrl_ros.hardware.safety import SafetyError

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / f"{args.label}.jsonl"
    set_realtime(args.realtime_priority)
    proc, port = start_emulator(args.v_max, args.realtime_priority)
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    t_start = time.monotonic()
    from mbrl_ros.hardware.robot_config import load_robot_config

    # The robot's YAML (safety limits; ROBEL's reset timings are ResetConfig's defaults), except the
    # packet timeout: on a pty it comes from latency_timer_ms (16 ms -> 34 ms), shorter than the
    # emulator process can be kept waiting for a core on a loaded 2-core machine (load 12-16 here:
    # with 16 ms nearly every reset failed on "no status packet", before and after the fix alike).
    config = load_robot_config("dclaw", port=port, latency_timer_ms=args.latency_ms)
    env = HardwareEnv(args.task, robot_config=config)
    try:
        env.connect()
        with rows_path.open("w") as f:
            for k in range(args.resets):
                safety = env.safety
                if safety is not None and hasattr(safety, "peak_speed_rad_s"):  # (older safety layers: no peak)
                    safety.peak_speed_rad_s = 0.0
                t0 = time.monotonic()
                row: dict[str, Any] = {"reset": k}
                try:
                    _obs, info = env.reset(seed=args.seed * 100_000 + k)
                    rep = info["reset"]
                    row.update(
                        ok=True,
                        retries=rep.retries,
                        operator_calls=rep.operator_calls,
                        max_error_rad=round(rep.max_error_rad, 4),
                    )
                except (ResetError, SafetyError, BusError) as exc:
                    # BusError: the emulator process did not answer within the driver's packet
                    # timeout (a loaded machine); counted apart from the reset's own failures
                    row.update(ok=False, error=f"{type(exc).__name__}: {exc}", comm=isinstance(exc, BusError))
                row["duration_s"] = round(time.monotonic() - t0, 3)
                row["peak_speed_rad_s"] = round(getattr(env.safety, "peak_speed_rad_s", math.nan), 3)
                if row["ok"]:
                    for _ in range(args.steps):  # a short random episode moves the claw and the valve
                        *_rest, step_info = env.step(rng.uniform(-1.0, 1.0, env.task.info.act_dim))
                        if step_info.get("aborted"):
                            row["episode_aborted"] = step_info.get("abort_reason", "")
                            break
                rows.append(row)
                f.write(json.dumps(row) + "\n")
                f.flush()
                fails = sum(not r["ok"] for r in rows)
                if not row["ok"] or (k + 1) % 25 == 0:
                    print(
                        f"reset {k + 1}/{args.resets}: {fails} failed, {time.monotonic() - t_start:.0f} s"
                        + (f"  [{row['error'][:160]}]" if not row["ok"] else ""),
                        flush=True,
                    )
    finally:
        env.close()
        proc.send_signal(2)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    ok = [r for r in rows if r["ok"]]
    dur = np.array([r["duration_s"] for r in ok]) if ok else np.zeros(1)
    peak = np.array([r["peak_speed_rad_s"] for r in rows]) if rows else np.zeros(1)
    summary = {
        "label": args.label,
        "task": args.task,
        "resets": len(rows),
        "failed": len(rows) - len(ok),
        "velocity_aborts": sum("velocity" in r.get("error", "") for r in rows),
        "comm_failures": sum(bool(r.get("comm")) for r in rows),
        "errors": sorted({r["error"][:120] for r in rows if not r["ok"]})[:5],
        "retries": sum(r.get("retries", 0) for r in ok),
        "operator_calls": sum(r.get("operator_calls", 0) for r in ok),
        "duration_median_s": float(np.median(dur)),
        "duration_p99_s": float(np.percentile(dur, 99)),
        "peak_speed_median": float(np.nanmedian(peak)),
        "peak_speed_max": float(np.nanmax(peak)),
        "steps_between": args.steps,
        "v_max": "default" if args.v_max is None else args.v_max,
        "latency_ms": args.latency_ms,
        "realtime_priority": args.realtime_priority,
        "wall_s": round(time.monotonic() - t_start, 1),
        "command": command_line(),
        "load_avg": round(os.getloadavg()[0], 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / f"{args.label}.json").write_text(json.dumps(summary, indent=1))
    return summary


def upper95(failed: int, n: int) -> float:
    """One-sided 95% upper bound of a failure rate (exact binomial; 0 of n gives about 3/n)."""
    if n == 0:
        return math.nan
    if failed >= n:
        return 1.0
    lo, hi = failed / n, 1.0
    for _ in range(60):  # bisection on P(X <= failed | p) = 0.05
        mid = (lo + hi) / 2
        cdf = sum(math.comb(n, i) * mid**i * (1 - mid) ** (n - i) for i in range(failed + 1))
        lo, hi = (mid, hi) if cdf > 0.05 else (lo, mid)
    return hi


def speeds(s: dict) -> str:
    if not (math.isfinite(s["peak_speed_median"]) and math.isfinite(s["peak_speed_max"])):
        return "n/a"
    return f"{s['peak_speed_median']:.2f} / {s['peak_speed_max']:.2f} rad/s"


def report(out: Path) -> str:
    summaries = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    summaries.sort(key=lambda x: (x["label"] != "before", x["label"] != "after", x["label"]))
    lines = [
        "Scripted D'Claw resets on the servo emulator (its own process, MuJoCo in real time) at the robot's settings "
        "(`hardware/dclaw.yaml`: abort above 5.0 rad/s; ROBEL's reset timings), a short episode of uniform random "
        "actions between two resets (`bench/bench_resets.py`; issue 15). *Before*: the code before the fix "
        "(the re-engaged tops and bottoms were sent back to their stale goals; the emulated servos had no speed "
        "bound). *after*: this code. *after-no-speed-bound*: this code with the emulated servos' speed bound off "
        "(`--v-max inf`, MuJoCo's actuators alone): the reset's part without the servo's. Peak speed: the largest "
        "joint speed the safety layer read during a reset (sampled every 50 ms; the old safety layer did not record "
        "it). Upper bound: one-sided 95%, exact binomial.",
        "",
        "| run | task | resets | failed | failure rate (95% upper bound) | velocity aborts | disentangle retries "
        "| no reply (bus) | reset time median / p99 | peak joint speed median / max | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        n, bad = s["resets"], s["failed"]
        lines.append(
            f"| {s['label']} | `{s['task']}` | {n} | {bad} | {bad / max(n, 1):.1%} (<= {upper95(bad, n):.1%}) "
            f"| {s['velocity_aborts']} | {s['retries']} | {s.get('comm_failures', 0)} | {s['duration_median_s']:.2f} / {s['duration_p99_s']:.2f} s "
            f"| {speeds(s)} | {s['load_avg']} |"
        )
    lines.append("")
    for s in summaries:
        lines.append(
            f"- {s['label']} ({s['date']}): `{s['command']}`"
            + (f"; errors: {'; '.join(s['errors'])}" if s["errors"] else "")
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resets", type=int, default=500, help="number of resets (default 500)")
    ap.add_argument("--steps", type=int, default=10, help="random-action steps between resets (default 10 = 1 s)")
    ap.add_argument("--task", default="dclaw-turn-random", choices=("dclaw-turn-random", "dclaw-turn-fixed"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--v-max",
        type=float,
        default=None,
        help="emulated servo no-load speed, rad/s (default: the emulator's XH430 value; inf = unbounded)",
    )
    ap.add_argument(
        "--latency-ms",
        type=float,
        default=100.0,
        help="latency_timer_ms of the driver on the pty: its packet timeout is 2x this + 2 ms (default 100)",
    )
    ap.add_argument(
        "--realtime-priority",
        type=int,
        default=20,
        help="SCHED_FIFO priority of the driver and the emulator (0 = normal scheduling; default 20)",
    )
    ap.add_argument("--label", default="after", help="name of this run in the table (default: after)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_resets"))
    ap.add_argument("--no-report", action="store_true", help="do not write BENCHMARKS.md")
    ap.add_argument("--report-only", action="store_true", help="run nothing: the section from the summaries in --out")
    ap.add_argument("--serve-emulator", action="store_true", help=argparse.SUPPRESS)  # internal
    args = ap.parse_args(argv)
    if args.serve_emulator:
        return serve_emulator(args.v_max, args.realtime_priority)
    if args.resets < 1 or args.steps < 0:
        ap.error("--resets must be >= 1 and --steps >= 0")
    if not args.report_only:
        import signal

        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # kill PID: close the robot, stop the emulator
        s = run(args)
        print(json.dumps({k: v for k, v in s.items() if k != "command"}))
    publish(SECTION, report(Path(args.out)), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
