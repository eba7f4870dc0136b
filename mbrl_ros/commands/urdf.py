"""``mbrl-ros urdf``: write the URDF of the D'Claw (with the valve) or the D'Kitty.

The URDF is generated from the ROBEL MuJoCo scene the tasks run on
(:mod:`mbrl_ros.tasks.urdf`), so it is never out of date; nothing generated is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "write the URDF of a robot (generated from its MuJoCo scene) to a file or stdout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--robot", required=True, choices=("dclaw", "dkitty"),
                        help="dclaw (claw and valve) or dkitty (torso on its 6 root joints, legs)")
    parser.add_argument("-o", "--out", default="-", help="output file ('-' = stdout, the default)")


def run(args: argparse.Namespace) -> int:
    from mbrl_ros.tasks.urdf import robot_urdf

    text = robot_urdf(args.robot)
    if args.out == "-":
        sys.stdout.write(text)
    else:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"{args.robot}: {out} ({text.count('<link ')} links)", file=sys.stderr)
    return 0
