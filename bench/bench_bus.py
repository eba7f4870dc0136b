"""Bus benchmark: one control cycle, loop jitter at 10 Hz and 100 Hz, e-stop latency (emulator on a pty).

    .venv/bin/python -m bench.bench_bus            # full run (~35 s), writes BENCHMARKS.md section "bus"
    .venv/bin/python -m bench.bench_bus --quick    # shorter, prints only

The emulator runs as a separate process (``mbrl-ros emulate``), as it would be a separate
device, so it does not share the driver's Python interpreter. A pty has no baud-rate timing:
the "pty" figures are the software cost only; the "wire timing" figures add the on-wire time of
every byte at 1 Mbps (10 bits per byte) inside the emulator, i.e. what a real U2D2 bus adds at
least (plus the FTDI latency timer, 1 ms with the udev rule, which a pty does not have).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from bench._report import update_section
from mbrl_ros.hardware.dynamixel_bus import DynamixelBus
from mbrl_ros.hardware.robot_config import load_robot_config


def start_emulator(robot: str, wire_timing: bool, physics: str) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "mbrl_ros.cli", "emulate", "--robot", robot, "--physics", physics]
    if wire_timing:
        cmd.append("--wire-timing")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    port = proc.stdout.readline().strip()
    if not port.startswith("/dev/"):
        proc.kill()
        raise RuntimeError(f"emulator did not start: {port!r}")
    return proc, port


def stop_emulator(proc: subprocess.Popen) -> None:
    proc.send_signal(2)  # SIGINT, like Ctrl-C
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()


def cycle_times(port: str, n: int, read_mode: str = "sync") -> np.ndarray:
    """Seconds per control cycle: one sync write of 9 goals + one read of 126..135 of 10 motors."""
    cfg = load_robot_config("dclaw", port=port, read_mode=read_mode)
    out = []
    with DynamixelBus(cfg) as bus:
        q = bus.read_state().position
        for _ in range(20):  # warm-up
            bus.write_goal_positions(q)
            bus.read_state()
        for _ in range(n):
            t0 = time.perf_counter()
            bus.write_goal_positions(q)
            bus.read_state()
            out.append(time.perf_counter() - t0)
    return np.array(out)


def loop_jitter(port: str, hz: float, steps: int) -> dict:
    """Run HardwareEnv at ``hz`` for ``steps`` steps (zero actions); jitter of the deadline loop."""
    from mbrl_ros.hardware.reset import ResetConfig
    from mbrl_ros.hardware.robot_env import HardwareEnv

    env = HardwareEnv("dclaw-turn-fixed", port=port, control_hz=hz,
                      reset_config=ResetConfig(object_settle_s=0.2, move_timeout_s=1.0))
    env.connect()
    try:
        env.reset()
        stamps = []
        t0 = time.monotonic()
        for _ in range(steps):
            env.step(np.zeros(9))
            stamps.append(time.monotonic())
            if env._steps >= env.task.info.horizon:  # new episode without a reset, for timing only
                env._steps = 0
        wall = time.monotonic() - t0
        jit = np.array(env.jitter_s) * 1e3
        periods = np.diff(stamps) * 1e3
        return {"hz": hz, "steps": steps, "achieved_hz": steps / wall, "p50": float(np.percentile(jit, 50)),
                "p99": float(np.percentile(jit, 99)), "max": float(jit.max()), "overruns": env.overruns,
                "period_p99_dev": float(np.percentile(np.abs(periods - 1e3 / hz), 99))}
    finally:
        env.close()


def estop_latency(port: str, n: int) -> np.ndarray:
    from mbrl_ros.hardware.safety import SafetyLayer
    from mbrl_ros.tasks import get_task

    cfg = load_robot_config("dclaw", port=port)
    out = []
    with DynamixelBus(cfg) as bus:
        safety = SafetyLayer(bus, get_task("dclaw-turn-fixed"))
        for _ in range(n):
            safety.clear_estop()
            safety.activate()
            safety.command(np.zeros(9))
            t0 = time.perf_counter()
            _, verified = safety.estop()
            out.append(time.perf_counter() - t0)
            assert verified
        safety.close()
    return np.array(out)


def stats_ms(x: np.ndarray) -> str:
    x = x * 1e3
    return f"{np.median(x):.3f} | {np.percentile(x, 99):.3f} | {x.max():.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, do not write BENCHMARKS.md")
    ap.add_argument("--physics", default="mujoco", choices=("mujoco", "first-order"))
    args = ap.parse_args()
    n_cycle = 200 if args.quick else 1000
    steps10, steps100 = (30, 200) if args.quick else (100, 1000)

    load_before = os.getloadavg()[0]
    rows = []
    for wire in (False, True):
        proc, port = start_emulator("dclaw", wire, args.physics)
        try:
            for mode in ("sync", "bulk"):
                t = cycle_times(port, n_cycle, mode)
                rows.append((("1 Mbps wire timing" if wire else "pty"), mode, t))
                print(f"cycle ({'wire' if wire else 'pty'}, {mode} read): median/p99/max ms = {stats_ms(t)}")
        finally:
            stop_emulator(proc)

    proc, port = start_emulator("dclaw", True, args.physics)
    try:
        loops = [loop_jitter(port, 10.0, steps10), loop_jitter(port, 100.0, steps100)]
        for r in loops:
            print(f"loop {r['hz']:.0f} Hz: achieved {r['achieved_hz']:.2f} Hz, jitter p50/p99/max ms = "
                  f"{r['p50']:.3f}/{r['p99']:.3f}/{r['max']:.3f}, overruns {r['overruns']}")
        est = estop_latency(port, 10 if args.quick else 30)
        print(f"e-stop to verified torque off: median/p99/max ms = {stats_ms(est)}")
    finally:
        stop_emulator(proc)

    load = f"load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after, {os.cpu_count()} cores"
    print(load)
    md = [
        f"Machine {load} (a shared machine: the tails are mostly other processes' CPU use).",
        "",
        "Driver on the real `dynamixel_sdk` against `mbrl-ros emulate --robot dclaw` (a separate process, "
        f"{args.physics} physics) over a pty. A pty has **no baud-rate timing**: the *pty* rows are software cost "
        "only; the *1 Mbps wire timing* rows make the emulator hold each reply for the on-wire time of the "
        "instruction and the reply at 1 Mbps (10 bits/byte), a lower bound for a real U2D2 bus, which also adds "
        "the FTDI latency timer (1 ms with `hardware/99-mbrl-ros-dynamixel.rules`).",
        "",
        "One control cycle = one sync write of 9 goal positions + one read of registers 126..135 of 10 motors "
        "(9 claw + valve sensor). Target <= 3 ms.",
        "",
        "| bus | read | median ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
    ]
    md += [f"| {bus} | {mode} | {stats_ms(t)} |" for bus, mode, t in rows]
    md += [
        "",
        "`HardwareEnv` deadline loop (write, wait for the deadline, read; zero actions; 1 Mbps wire timing). "
        "Jitter = lateness of the wake-up after each deadline. Target at 10 Hz: p99 <= 1 ms.",
        "",
        "| rate | steps | achieved Hz | jitter p50 ms | p99 ms | max ms | overruns |",
        "|---|---|---|---|---|---|---|",
    ]
    md += [f"| {r['hz']:.0f} Hz | {r['steps']} | {r['achieved_hz']:.2f} | {r['p50']:.3f} | {r['p99']:.3f} | "
           f"{r['max']:.3f} | {r['overruns']} |" for r in loops]
    md += ["", f"E-stop (`SafetyLayer.estop`, torque-off broadcast + verifying read), {len(est)} trials: "
               f"median / p99 / max = {stats_ms(est)} ms (budget 50 ms).",
           "", "Command: `.venv/bin/python -m bench.bench_bus`"]
    text = "\n".join(md)
    if not args.quick:
        update_section("bus", "## Dynamixel bus (hardware path)\n\n" + text)
        print("wrote BENCHMARKS.md section 'bus'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
