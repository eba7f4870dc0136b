"""A finished run's game as its last checkpoint left it (the benchmarks that study a run read it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_game(run_dir: Path) -> tuple[Any, dict]:
    """``(game, state)``: a :class:`~mbrl_ros.core.stackelberg.StackelbergGame` on the CPU with the
    configuration saved in ``run_dir/checkpoint`` and its players, buffer and deployed policy
    restored (``game.cfg`` is that configuration; ``state`` the checkpoint's state.json)."""
    from mbrl_ros.core.config import GameConfig
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.core.train import make_world

    ckpt = Path(run_dir) / "checkpoint"
    cfg = GameConfig.from_dict(json.loads((ckpt / "state.json").read_text())["config"])
    game = StackelbergGame(cfg, make_world(cfg.task_id), device="cpu")
    return game, game.load(ckpt)


def held_apart_round(game: Any, samples: int) -> Any:
    """An :class:`~mbrl_ros.core.buffers.EpisodeBuffer` of about ``samples`` new real samples of
    the checkpoint's deployed behaviour policy (its exploration noise included), at wire
    precision: the data the players will see next, kept apart as test data."""
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.world import behavior_policy

    info, deployed, log_std = game.task.info, game.deployed, game.deployed_log_std
    assert deployed is not None, "the checkpoint has no deployed policy"
    noise = game.cfg.behavior_noise()
    version = game.referee.deployed_policy_version
    test = EpisodeBuffer("aggregate", None)
    for ep in game._play(
        samples,
        lambda rng: behavior_policy(deployed.act, info.act_dim, log_std, rng, noise, info.horizon),
        version,
        f"test-v{version}",
    ):
        test.add_episode(ep.at_wire_precision())
    return test
