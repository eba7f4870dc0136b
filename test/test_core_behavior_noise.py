"""The behaviour noise of data collection (core.world.BehaviorNoise): white, coloured, floored."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_ros.core.config import load_config
from mbrl_ros.core.world import BehaviorNoise, behavior_policy, run_episode
from mbrl_ros.tasks import make_env

ACT_DIM, HORIZON = 3, 40


def _noise_sequences(noise: BehaviorNoise, log_std: float, episodes: int = 200, seed: int = 0) -> np.ndarray:
    """[episodes, HORIZON, ACT_DIM] behaviour actions of a zero policy (= the noise alone)."""
    zero = lambda _obs: np.zeros(ACT_DIM)  # noqa: E731
    out = []
    for k in range(episodes):
        behave = behavior_policy(zero, ACT_DIM, np.full(ACT_DIM, log_std), np.random.default_rng([seed, k]), noise, HORIZON)
        out.append([behave(np.zeros(4)) for _ in range(HORIZON)])
    return np.asarray(out)


def _lag1(x: np.ndarray) -> float:
    x = x - x.mean(axis=1, keepdims=True)
    return float((x[:, 1:] * x[:, :-1]).mean() / (x**2).mean())


def test_white_noise_is_independent_per_step_with_the_policys_std() -> None:
    x = _noise_sequences(BehaviorNoise(), np.log(0.3))
    assert abs(x.std() - 0.3) < 0.02
    assert abs(_lag1(x)) < 0.08


def test_pink_noise_drifts_with_the_same_spread() -> None:
    x = _noise_sequences(BehaviorNoise(color=1.0), np.log(0.3))
    assert _lag1(x) > 0.3  # white: about 0
    assert 0.2 < x.std() < 0.36  # unit variance per episode's spectrum, less the episode's own mean's share


def test_the_floor_keeps_exploring_when_the_policys_std_has_decayed() -> None:
    floored = _noise_sequences(BehaviorNoise(min_std=0.2), np.log(0.05))
    assert abs(floored.std() - 0.2) < 0.02
    assert abs(_noise_sequences(BehaviorNoise(), np.log(0.05)).std() - 0.05) < 0.005
    # a policy noisier than the floor keeps its own std
    assert abs(_noise_sequences(BehaviorNoise(min_std=0.2), np.log(0.4)).std() - 0.4) < 0.03


def test_behaviour_noise_is_reproducible_from_the_episode_generator() -> None:
    a = _noise_sequences(BehaviorNoise(color=1.0), -1.0, episodes=3, seed=7)
    b = _noise_sequences(BehaviorNoise(color=1.0), -1.0, episodes=3, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _noise_sequences(BehaviorNoise(color=1.0), -1.0, episodes=3, seed=8))


def test_pink_noise_turns_the_valve_further_than_white_noise_of_the_same_variance() -> None:
    """The reason for coloured noise: the servos' position loops low-pass the targets, so white
    exploration around a policy barely moves the valve (measured: 2.1-2.4x further with pink
    noise at std 0.1 and 0.3, 30 episodes each)."""
    env = make_env("dclaw-turn-fixed")
    a_dim = env.task.info.act_dim
    zero = lambda _obs: np.zeros(a_dim)  # noqa: E731

    def valve_reach(noise: BehaviorNoise) -> float:
        reach = []
        for k in range(12):
            rng = np.random.default_rng([1, k])
            behave = behavior_policy(zero, a_dim, np.full(a_dim, np.log(0.3)), rng, noise, env.task.info.horizon)
            ep = run_episode(env, behave, 0, f"e{k}", 0)
            angle = np.unwrap(np.arctan2(ep.obs[:, 10], ep.obs[:, 9]))  # object_x, object_y = cos, sin
            reach.append(np.abs(angle - angle[0]).max())
        return float(np.mean(reach))

    assert valve_reach(BehaviorNoise(color=1.0)) > 1.5 * valve_reach(BehaviorNoise())


def test_a_share_of_episodes_plays_the_mean_action_and_none_changes_nothing() -> None:
    """mean_fraction p: about p of the episodes carry no noise at all (the deterministic policy's
    path), the others the usual noise; p = 0 draws nothing extra, so a seed's noise is as before."""
    base = BehaviorNoise(color=1.0, min_std=0.2)
    plain = _noise_sequences(base, np.log(0.1))
    assert np.array_equal(plain, _noise_sequences(BehaviorNoise(color=1.0, min_std=0.2, mean_fraction=0.0), np.log(0.1)))
    mixed = _noise_sequences(BehaviorNoise(color=1.0, min_std=0.2, mean_fraction=0.25), np.log(0.1), episodes=400)
    quiet = np.all(mixed == 0.0, axis=(1, 2))
    assert 0.18 < quiet.mean() < 0.32  # 400 episodes: p = 0.25 +- 3.5 standard errors
    assert mixed[~quiet].std() == pytest.approx(0.2, rel=0.15)  # the others keep the floored noise
    assert np.all(_noise_sequences(BehaviorNoise(mean_fraction=1.0), np.log(0.3), episodes=20) == 0.0)


def test_bad_behaviour_noise_is_refused() -> None:
    with pytest.raises(ValueError, match="mean_fraction"):
        BehaviorNoise(mean_fraction=1.5)
    with pytest.raises(ValueError, match="explore_mean_fraction"):
        load_config("pal", "dclaw-turn-fixed", overrides=["explore_mean_fraction=-0.1"])
    with pytest.raises(ValueError, match="color"):
        BehaviorNoise(color=3.0)
    with pytest.raises(ValueError, match="min_std"):
        BehaviorNoise(min_std=-0.1)
    with pytest.raises(ValueError, match="horizon"):
        behavior_policy(lambda o: np.zeros(2), 2, np.zeros(2), np.random.default_rng(0), BehaviorNoise(color=1.0), 0)
    with pytest.raises(ValueError, match="color"):
        load_config("pal", "dclaw-turn-fixed", overrides=["explore_noise_color=5"])
