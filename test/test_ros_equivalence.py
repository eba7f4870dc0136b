"""One rulebook: the ROS graph plays exactly the game ``mbrl-ros train`` plays.

With the same seed, configuration and one sim collector, ``mbrl-ros launch pal_dclaw`` (five
processes over DDS) and ``mbrl-ros train --algo pal`` (one process) write ``metrics.jsonl``
files with the same iterations, the same real samples per iteration and the same evaluation
success and return, and also the same model losses, model returns and collection returns: the
rules come from ``mbrl_ros.core.rules``, each player draws from its own random stream
(``mbrl_ros.core.seeding``), the world runs the exported ONNX policy with the same exploration
noise in both, and the in-process loop learns from float32 transitions as the graph's learners
receive them. With ``torch_threads`` 1 in every learner the numbers are identical; the
tolerance below (relative 1e-9) only absorbs JSON float printing. Same for ``mal_dclaw``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")

from ros_harness import free_domain_id  # noqa: E402

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
SAME = ("iteration", "samples", "eval_success", "collected", "policy_version", "model_version")
CLOSE = ("eval_return", "collect_return", "collect_success", "model_loss", "J_model", "kl")


def _smoke_settings() -> tuple[dict, list[str]]:
    """The smoke graph configuration with one torch thread per learner, and the same game as
    ``mbrl-ros train --set`` arguments (read from the file, so the two never drift apart)."""
    params = yaml.safe_load((ROOT / "config" / "ros_smoke.yaml").read_text())
    params["/**"]["ros__parameters"]["torch_threads"] = 1
    sets = [s for s in params["/**"]["ros__parameters"]["game_overrides"] if not s.startswith("samples=")]
    coordinator = params["game_coordinator"]["ros__parameters"]
    sets += [f"{k}={v}" for k, v in coordinator.items() if k.startswith("gate_")]
    return params, sets


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(("graph", "algo", "samples", "seed"), [("pal_dclaw", "pal", 800, 3), ("mal_dclaw", "mal", 600, 4)])
def test_launch_and_train_write_the_same_metrics(tmp_path: Path, graph: str, algo: str, samples: int, seed: int) -> None:
    params, sets = _smoke_settings()
    config = tmp_path / "params.yaml"
    config.write_text(yaml.safe_dump(params))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    launch = [sys.executable, "-m", "mbrl_ros.cli", "launch", graph, f"config:={config}", f"samples:={samples}",
              f"seed:={seed}", f"log_dir:={tmp_path / 'graph'}", f"domain_id:={free_domain_id()}", "--no-progress",
              "--timeout", "400"]
    train = [sys.executable, "-m", "mbrl_ros.cli", "train", "--algo", algo, "--task", "dclaw-turn-fixed",
             "--samples", str(samples), "--seed", str(seed), "--out", str(tmp_path / "train"), "--threads", "1",
             "--no-progress"] + [a for s in sets for a in ("--set", s)]
    for argv in (train, launch):
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=480, env=env)
        assert proc.returncode == 0, proc.stdout.decode(errors="replace")[-3000:]
    in_process, in_graph = _rows(tmp_path / "train" / "metrics.jsonl"), _rows(tmp_path / "graph" / "metrics.jsonl")
    assert len(in_process) == len(in_graph) >= 2
    assert in_process[-1]["samples"] == samples
    for a, b in zip(in_process, in_graph):
        for key in SAME:
            assert a[key] == b[key], f"iteration {a['iteration']}: {key} {a[key]} (train) != {b[key]} (graph)"
        for key in CLOSE:
            if a[key] is None or b[key] is None:
                assert a[key] is None and b[key] is None, f"iteration {a['iteration']}: {key} {a[key]} != {b[key]}"
            else:
                assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12), \
                    f"iteration {a['iteration']}: {key} {a[key]} (train) != {b[key]} (graph)"
    assert set(in_process[0]) == set(in_graph[0])  # one metrics row (mbrl_ros.core.rules.IterationMetrics)
