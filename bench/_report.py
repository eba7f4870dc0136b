"""Write a benchmark's figures into its own section of BENCHMARKS.md (other sections untouched)."""

from __future__ import annotations

import datetime
import platform
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery figure below is written by the script named in its section; rerun it to refresh.\n"


def machine() -> str:
    """One line naming the machine a figure was measured on."""
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def update_section(name: str, markdown: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section delimited by ``<!-- name:begin -->`` / ``<!-- name:end -->``."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    stamp = f"_Measured {datetime.date.today().isoformat()} on {machine()}._\n\n"
    block = f"{begin}\n{markdown.rstrip()}\n\n{stamp}{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def command_line() -> str:
    """The command that is running, as one would type it from the repository root.

    Scripts of ``bench/`` and ``experiments/`` are modules of those packages: ``python -m bench.x``.
    """
    script = Path(sys.argv[0]).resolve()
    try:
        rel = script.relative_to(ROOT)
        script_txt = "-m " + ".".join(rel.with_suffix("").parts) if rel.parts[0] in ("bench", "experiments") else str(rel)
    except ValueError:
        script_txt = str(script)
    return " ".join([".venv/bin/python", script_txt, *map(shlex.quote, sys.argv[1:])])


def publish(name: str, markdown: str, write: bool = True) -> None:
    """Print a benchmark's section and (unless ``write`` is False) put it into BENCHMARKS.md."""
    print(markdown)
    if write:
        update_section(name, markdown)
