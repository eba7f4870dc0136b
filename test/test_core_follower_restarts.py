"""A follower's best response with restarts (PolicyPlayer.best_response, config follower_restarts)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from mbrl_ros.core.config import load_config
from mbrl_ros.core.dynamics_ensemble import DynamicsEnsemble
from mbrl_ros.core.policy_player import PolicyPlayer, StartStates
from mbrl_ros.core.rules import GameRules
from mbrl_ros.tasks.pointmass import PointMassTask


def _ensemble(task: PointMassTask) -> DynamicsEnsemble:
    torch.manual_seed(0)
    ens = DynamicsEnsemble(task.model_dim, task.info.act_dim, 4, [32, 32], "relu")
    x = torch.randn(500, task.model_dim + task.info.act_dim)
    ens.set_normalization(x, 0.1 * torch.randn(500, task.model_dim), torch.randn(1000, task.model_dim))
    return ens


def _setup(restarts: int = 0) -> tuple[PointMassTask, Any, DynamicsEnsemble, StartStates]:
    task = PointMassTask()
    cfg = load_config("mal", "pointmass", overrides=["npg_trajectories=16", f"follower_restarts={restarts}"])
    starts = np.random.default_rng(0).uniform(-0.5, 0.5, (20, 6))
    return task, cfg, _ensemble(task), StartStates(starts, None, starts)


def test_without_restarts_a_best_response_is_the_plain_npg_move() -> None:
    task, cfg, ens, starts = _setup()
    torch.manual_seed(3)
    a = PolicyPlayer(task, cfg, "cpu")
    ra = a.improve(ens, starts, 2)
    torch.manual_seed(3)
    b = PolicyPlayer(task, cfg, "cpu")
    rb = b.best_response(ens, starts, 2, restarts=0)
    assert ra["J_model"] == rb["J_model"] and "follower_restart" not in rb
    for pa, pb in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(pa, pb)


def test_the_follower_keeps_the_candidate_its_worst_member_values_highest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scores 1 (the present policy), 3, 2: the first restart wins; its policy and value replace
    the player's, and the report says which candidate was kept."""
    task, cfg, ens, starts = _setup()
    player = PolicyPlayer(task, cfg, "cpu")
    trained: list[PolicyPlayer] = []
    improve = PolicyPlayer.improve

    def recording_improve(self: PolicyPlayer, *args: Any, **kwargs: Any) -> dict:
        r = improve(self, *args, **kwargs)
        trained.append(self)
        return r

    scores = iter([1.0, 3.0, 2.0])
    monkeypatch.setattr(PolicyPlayer, "improve", recording_improve)
    monkeypatch.setattr(PolicyPlayer, "worst_member_return", lambda self, *a: next(scores))
    r = player.best_response(ens, starts, 1, restarts=2)
    assert r["follower_restart"] == 0 and r["follower_scores"] == [1.0, 3.0, 2.0]
    assert len(trained) == 3 and trained[0] is player
    winner = trained[1]
    for name, t in player.policy.state_dict().items():
        assert torch.equal(t, winner.policy.state_dict()[name]), name
    assert player.value is winner.value


def test_the_present_policy_stays_when_no_restart_beats_it(monkeypatch: pytest.MonkeyPatch) -> None:
    task, cfg, ens, starts = _setup()
    player = PolicyPlayer(task, cfg, "cpu")
    scores = iter([5.0, 5.0, 4.0])  # a tie keeps the present policy
    monkeypatch.setattr(PolicyPlayer, "worst_member_return", lambda self, *a: next(scores))
    value = player.value
    r = player.best_response(ens, starts, 1, restarts=2)
    assert r["follower_restart"] == -1 and player.value is value


def test_a_restart_starts_near_its_intent_and_scores_are_real_returns() -> None:
    task, cfg, ens, starts = _setup()
    player = PolicyPlayer(task, cfg, "cpu")
    player.policy.set_intent(torch.tensor([0.7, -0.4]))
    a = player.act(np.zeros((5, task.info.obs_dim)))
    assert np.allclose(a, [0.7, -0.4], atol=0.05)
    r = player.best_response(ens, starts, 1, restarts=2)
    assert len(r["follower_scores"]) == 3 and np.all(np.isfinite(r["follower_scores"]))
    assert r["follower_restart"] in (-1, 0, 1)
    assert r["follower_scores"][r["follower_restart"] + 1] == max(r["follower_scores"])


def test_only_a_policy_follower_restarts_and_the_count_is_checked() -> None:
    horizon = PointMassTask().info.horizon
    for algo, expected in (("mal", 3), ("mal-noise", 3), ("br", 3), ("pal", 0), ("gda", 0)):
        cfg = load_config(algo, "pointmass", overrides=["follower_restarts=3"])
        assert GameRules.of(cfg, horizon).follower_restarts() == expected, algo
    for bad in ("-1", "33"):
        with pytest.raises(ValueError, match="follower_restarts"):
            load_config("mal", "pointmass", overrides=[f"follower_restarts={bad}"])
