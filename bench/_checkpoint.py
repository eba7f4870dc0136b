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
