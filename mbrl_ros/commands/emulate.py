"""``mbrl-ros emulate``: Dynamixel servos of a ROBEL robot on a pseudo-terminal, backed by MuJoCo.

Prints the pty path (e.g. ``/dev/pts/7``); point the driver at it (``port:`` in
``hardware/<robot>.yaml``, or ``HardwareEnv(..., port=...)``) and run as if on the real robot.
Ctrl-C stops it. Faults: ``--fault no-response:21 --fault delay:0.02 --fault hw-error:12:overload``.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import sys

HELP = "emulate a robot's Dynamixel servos (Protocol 2.0) on a pty, backed by the MuJoCo simulation"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", default="dclaw", help="dclaw | dkitty, or a hardware YAML path (default: dclaw)")
    parser.add_argument("--baud", type=int, default=1_000_000, help="bus baud rate (default: 1000000)")
    parser.add_argument(
        "--physics",
        default="auto",
        choices=("auto", "mujoco", "first-order"),
        help="servo physics: MuJoCo robot (RobelSim) or a first-order servo model (default: auto)",
    )
    parser.add_argument("--model", default="XH430-W350", help="motor model reported to ping (default: XH430-W350)")
    parser.add_argument(
        "--wire-timing",
        action="store_true",
        help="delay replies by their on-wire time at --baud (a pty has no baud timing)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault (repeatable): no-response:ID[,ID] | crc:ID|all[:PROB] | "
        "delay:SECONDS[:ID,..] | drop:PROB | hw-error:ID:overload[+overheating] | stuck:ID[,ID]",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of random faults (default: 0)")
    parser.add_argument("--verbose", action="store_true", help="log every refused instruction and fault")


SHUTDOWN_DEADLINE_S = 20.0  # after Ctrl-C: the stop joins each thread for 2 s at most


def run(args: argparse.Namespace) -> int:
    from mbrl_ros.hardware.emulator import ServoEmulator, parse_fault, serve_forever

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    faults = [parse_fault(spec) for spec in args.fault]  # ValueError -> clear CLI error
    emu = ServoEmulator(
        args.robot,
        baud=args.baud,
        physics=args.physics,
        realtime=True,
        wire_timing=args.wire_timing,
        model=args.model,
        seed=args.seed,
    )
    for kind, kwargs in faults:
        emu.inject(kind, **kwargs)

    def ready(path: str) -> None:
        ids = ", ".join(str(i) for i in sorted(emu.servos))
        print(path, flush=True)  # first line: the port, for scripts
        print(
            f"emulating {emu.robot} ({emu.physics} physics), motors {ids} at {args.baud} baud; "
            f"faults: {args.fault or 'none'}. Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )

    try:
        serve_forever(emu, on_ready=ready)
    except KeyboardInterrupt:
        pass
    finally:
        # Ctrl-C stops the threads within 2 s each; should the exit ever hang, every thread's stack
        # goes to stderr (the emulator's own report of where) and the process ends anyway
        faulthandler.dump_traceback_later(SHUTDOWN_DEADLINE_S, exit=True)
    return 0
