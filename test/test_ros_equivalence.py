"""One rulebook: the ROS graph plays exactly the game ``mbrl-ros train`` plays.

With the same seed, configuration and one sim collector, ``mbrl-ros launch pal_dclaw`` (five
processes over DDS) and ``mbrl-ros train --algo pal`` (one process) write ``metrics.jsonl``
files with the same iterations, the same real samples per iteration and the same evaluation
success and return, and also the same model losses, model returns and collection returns: the
rules come from ``mbrl_ros.core.rules``, each player draws from its own random stream
(``mbrl_ros.core.seeding``), the world runs the exported ONNX policy with the same exploration
noise in both, and the in-process loop learns from float32 transitions as the graph's learners
receive them. With ``torch_threads`` 1 in every learner the numbers are identical; the
tolerance below (relative 1e-9) only absorbs JSON float printing. Same for ``mal_dclaw`` (MAL, and
MAL + random noise, whose random-policy episodes the collector plays as ``train`` does).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from bench.bench_equivalence import ROOT, run_pair  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.mark.parametrize(("graph", "algo", "samples", "seed"), [
    ("pal_dclaw", "pal", 800, 3), ("mal_dclaw", "mal", 600, 4),
    ("mal_dclaw", "mal-noise", 840, 5),  # random-policy episodes: the collector plays core.exploration's policies
])
def test_launch_and_train_write_the_same_metrics(tmp_path: Path, graph: str, algo: str, samples: int, seed: int) -> None:
    r = run_pair(graph, samples, seed, ROOT / "config" / "ros_smoke.yaml", tmp_path, timeout=400, algo=algo)
    assert not r["differences"], "\n".join(r["differences"])
    in_process, in_graph = r["train"], r["launch"]
    assert len(in_process) == len(in_graph) >= 2 and in_process[-1]["samples"] == samples
    assert set(in_process[0]) == set(in_graph[0])  # one metrics row (mbrl_ros.core.rules.IterationMetrics)
