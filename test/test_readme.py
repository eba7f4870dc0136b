"""The README's Python example runs and prints what its comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_finite_games_example_prints_what_it_claims() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has a Python example"
    out = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "5.0 2.0"
    assert lines[1:5] == ["pal 35.11", "mal 1.0", "mal-agent-reward 35.11", "mal-noise 35.11"]
    optimum, hidden = map(float, lines[5].split())
    assert round(optimum, 2) == 35.11 and hidden == 1.0
