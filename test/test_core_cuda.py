"""The CUDA path of the learner: skipped on machines without a GPU (CI and the 2-core targets)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mbrl_ros.core.config import load_config
from mbrl_ros.core.onnx_export import load_onnx_policy
from mbrl_ros.core.stackelberg import StackelbergGame
from mbrl_ros.core.train import make_world, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

TINY = ["model_hidden=[32, 32]", "npg_trajectories=16", "eval_episodes=2", "n_init=60", "samples_per_iter=40",
        "buffer_size=200", "model_epochs_aggressive=10", "model_min_steps=20", "cg_iters=5", "device=cuda"]


def test_a_cuda_game_keeps_its_players_on_the_device_and_exports_cpu_onnx(tmp_path) -> None:
    cfg = load_config("pal", "pointmass", [*TINY, "max_iterations=2"])
    train(cfg, tmp_path / "run", progress=False)  # exports policy.onnx after every iteration
    game = StackelbergGame(cfg, make_world(cfg.task_id))
    game.load(tmp_path / "run" / "checkpoint")
    assert next(game.policy_player.policy.parameters()).is_cuda
    assert next(game.model_player.ensemble.parameters()).is_cuda
    onnx_policy = load_onnx_policy(tmp_path / "run" / "policy.onnx", expect_task="pointmass")
    obs = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    np.testing.assert_allclose(onnx_policy.act(obs), game.policy_player.act(obs, deterministic=True), atol=1e-5)


def test_cuda_resume_continues_the_same_run(tmp_path) -> None:
    cfg = load_config("pal", "pointmass", [*TINY, "max_iterations=2"])
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "a2", resume=tmp_path / "a", resume_overrides={"max_iterations": 3}, progress=False)
    train(load_config("pal", "pointmass", [*TINY, "max_iterations=3"]), tmp_path / "b", progress=False)
    rows = lambda d: [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
    resumed, straight = rows("a2"), rows("b")
    assert [r["samples"] for r in resumed] == [r["samples"] for r in straight]
    # the CUDA generator is restored: the resumed iteration sees the same noise (kernels may differ
    # in the last bits, hence a tolerance rather than equality)
    np.testing.assert_allclose([r["eval_return"] for r in resumed], [r["eval_return"] for r in straight], rtol=1e-3)
