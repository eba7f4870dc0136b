"""Write a benchmark's figures into its own section of BENCHMARKS.md (other sections untouched)."""

from __future__ import annotations

import datetime
import platform
import re
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
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
