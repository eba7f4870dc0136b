"""The ``mbrl-ros`` command: one entry point, one module per subcommand under ``commands/``.

Subcommand modules are imported lazily so that ``mbrl-ros tasks`` does not pay for torch or
rclpy start-up. Each module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from typing import Optional, Sequence

# subcommand name -> module under mbrl_ros.commands
SUBCOMMANDS: dict[str, str] = {
    "tasks": "tasks",
    "rollout": "rollout",
    "render": "render",
    "train": "train",
    "eval": "evaluate",
    "launch": "launch",
    "monitor": "monitor",
    "emulate": "emulate",
    "urdf": "urdf",
}


def _load(name: str):
    return importlib.import_module(f"mbrl_ros.commands.{SUBCOMMANDS[name]}")


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbrl-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only import the module of the subcommand actually requested (fast start-up).
    requested = next((a for a in argv if not a.startswith("-")), None)
    for name in SUBCOMMANDS:
        if name == requested:
            module = _load(name)
            p = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
        else:
            sub.add_parser(name, help=f"(run 'mbrl-ros {name} -h')", add_help=False)
    return parser


def stop_on_sigint() -> None:
    """Make SIGINT stop this process (KeyboardInterrupt) even when it was started with SIGINT
    ignored, as a shell starts a script's background jobs: the launcher, the emulator and the
    nodes are stopped by SIGINT (as ``ros2 launch`` stops its processes), and a child started
    from a handled SIGINT gets the default disposition back."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: Optional[Sequence[str]] = None) -> int:
    stop_on_sigint()
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `mbrl-ros tasks | head`: the reader left, not an error
        sys.stderr.close()
        return 0
    except ValueError as exc:  # bad user input: a clear message, no traceback
        print(f"mbrl-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
