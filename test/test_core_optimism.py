"""Optimism in the face of the model's uncertainty: the ensemble-disagreement advantage."""

from __future__ import annotations

import numpy as np
import torch

from mbrl_ros.core.config import load_config
from mbrl_ros.core.dynamics_ensemble import DynamicsEnsemble
from mbrl_ros.core.model_rollout import SyntheticRollouts, rollout_policy
from mbrl_ros.core.networks import GaussianMLPPolicy
from mbrl_ros.core.policy_player import PolicyPlayer, StartStates
from mbrl_ros.tasks.pointmass import PointMassTask


def _ensemble(task: PointMassTask, same_members: bool) -> DynamicsEnsemble:
    torch.manual_seed(0)
    ens = DynamicsEnsemble(task.model_dim, task.info.act_dim, 4, [32, 32], "relu")
    x = torch.randn(500, task.model_dim + task.info.act_dim)
    y = 0.1 * torch.randn(500, task.model_dim)
    ens.set_normalization(x, y, torch.randn(1000, task.model_dim))
    if same_members:
        with torch.no_grad():
            for w in list(ens.weights) + list(ens.biases):
                w.copy_(w[0:1].expand_as(w))
    return ens


def _rollouts(same_members: bool) -> SyntheticRollouts:
    task = PointMassTask()
    torch.manual_seed(1)
    policy = GaussianMLPPolicy(task.info.obs_dim, task.info.act_dim, [16, 16])
    starts = torch.as_tensor(np.random.default_rng(0).uniform(-0.5, 0.5, (8, 6)), dtype=torch.float32)
    return rollout_policy(_ensemble(task, same_members), task, policy, starts, 10, with_disagreement=True)


def test_identical_members_do_not_disagree_along_a_rollout() -> None:
    """Common random numbers: every member's trajectory from a start draws the same noise, so
    identical members roll out identical trajectories and the disagreement is exactly 0."""
    same = _rollouts(same_members=True)
    assert same.disagreement is not None and float(same.disagreement.abs().max()) < 1e-6
    differ = _rollouts(same_members=False)
    assert differ.disagreement is not None and float(differ.disagreement.min()) > 0.0
    assert differ.disagreement.shape == differ.rewards.shape


def _disagreeing_rollouts(M: int, H: int) -> SyntheticRollouts:
    """Zero-reward rollouts whose first three trajectories go where the members disagree (from step 2)."""
    dis = torch.zeros(M, H)
    dis[:3, 2:] = 1.0
    return SyntheticRollouts(
        obs=torch.zeros(M, H + 1, 6), actions=torch.zeros(M, H, 2), rewards=torch.zeros(M, H),
        alive=torch.ones(M, H), terminal=torch.zeros(M, H), disagreement=dis,
    )


def test_the_optimism_advantage_favours_trajectories_where_the_members_disagree() -> None:
    cfg = load_config("pal", "pointmass", overrides=["optimism_coef=0.5"])
    player = PolicyPlayer(PointMassTask(), cfg, "cpu")
    M, H = 6, 5
    ro = _disagreeing_rollouts(M, H)
    bonus = player._optimism(ro, ro.alive > 0).reshape(M, H)
    assert torch.all(bonus[:3, :3] > 0) and torch.all(bonus[3:, :3] < 0)
    a_on, *_ = player.advantages(ro)
    player.cfg.optimism_coef = 0.0
    a_off, *_ = player.advantages(ro)
    assert torch.allclose(a_on - a_off, 0.5 * bonus.reshape(-1))


def test_an_npg_move_with_optimism_runs_and_keeps_the_kl_step() -> None:
    task = PointMassTask()
    cfg = load_config("pal", "pointmass", overrides=["optimism_coef=0.3", "npg_trajectories=16"])
    player = PolicyPlayer(task, cfg, "cpu")
    starts = np.random.default_rng(0).uniform(-0.5, 0.5, (20, 6))
    r = player.improve(_ensemble(task, same_members=False), StartStates(starts, None, starts), 2)
    assert np.isfinite(r["J_model"]) and 0.0 < r["kl"] < 2 * cfg.npg_step_size


def test_a_negative_coefficient_is_pessimism_and_out_of_range_values_are_refused() -> None:
    """optimism_coef < 0 penalises the trajectories where the members part (a policy that
    best-responds to the model for many steps, as MAL's, is kept from the model's errors)."""
    import pytest

    cfg = load_config("mal", "pointmass", overrides=["optimism_coef=-0.5"])
    player = PolicyPlayer(PointMassTask(), cfg, "cpu")
    M, H = 6, 5
    ro = _disagreeing_rollouts(M, H)
    a_pess, *_ = player.advantages(ro)
    player.cfg.optimism_coef = 0.0
    a_off, *_ = player.advantages(ro)
    shift = (a_pess - a_off).reshape(M, H)
    assert torch.all(shift[:3, :3] < 0) and torch.all(shift[3:, :3] > 0)
    for bad in ("-10.5", "11"):
        with pytest.raises(ValueError, match="optimism_coef"):
            load_config("mal", "pointmass", overrides=[f"optimism_coef={bad}"])
