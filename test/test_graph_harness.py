"""The graph harness's failure report: the tails of every node's log (no ROS needed)."""

from __future__ import annotations

from pathlib import Path

from bench._graph_harness import GRAPHS, Graph


def test_log_tails_reports_the_last_lines_of_every_node_log(tmp_path: Path) -> None:
    g = Graph(tmp_path)
    assert GRAPHS[-1] is g  # the conftest hook reports the graphs of the failed test
    (tmp_path / "model_learner.1.log").write_text("".join(f"line {i}\n" for i in range(100)))
    (tmp_path / "collector_0.2.log").write_text("one line\n")
    text = g.log_tails(lines=3)
    assert "--- collector_0.2.log (last 1 lines) ---\none line" in text
    assert "--- model_learner.1.log (last 3 lines) ---\nline 97\nline 98\nline 99" in text
    assert "line 96" not in text
