"""D'Claw's three-spoke valve in the dynamics model: a fit on one stroke's data holds a stroke on."""

from __future__ import annotations

import math

import pytest
import torch

from bench.bench_valve_symmetry import noise_episodes, valve_errors
from mbrl_ros.core.config import load_config
from mbrl_ros.core.model_player import ModelPlayer
from mbrl_ros.tasks import get_task

torch.set_num_threads(1)


def test_a_model_fitted_at_one_valve_angle_predicts_the_next_spoke_only_with_the_symmetry():
    """Fitted on episodes from theta = 0, tested on held-out episodes from 2 pi / 3 (the next
    spoke under the same finger): with the symmetry the loss there is that at 0; without, the
    members extrapolate in (cos theta, sin theta) and the loss is far higher."""
    train = noise_episodes(0.0, range(16))
    tests = {a: noise_episodes(a, range(100, 104)) for a in (0.0, 2 * math.pi / 3)}
    on = valve_errors(True, train, tests, steps=300)
    off = valve_errors(False, train, tests, steps=300)
    shifted = 2 * math.pi / 3
    assert on[shifted]["loss"] < 1.3 * on[0.0]["loss"]  # the next spoke looks like the first
    assert on[shifted]["loss"] < 0.7 * off[shifted]["loss"]  # without the symmetry it does not
    assert abs(on[0.0]["loss"] - off[0.0]["loss"]) < 0.3 * off[0.0]["loss"]  # where data are, both fit


def test_the_symmetry_is_a_property_of_the_saved_model():
    """A model blob says which angles it reads and how: a player with the other setting refuses it."""
    task = get_task("dclaw-turn-fixed")
    small = {"model_hidden": [8], "ensemble_size": 2, "device": "cpu"}
    blob = ModelPlayer(task, load_config("pal", "dclaw-turn-fixed", small)).to_bytes()
    other = ModelPlayer(task, load_config("pal", "dclaw-turn-fixed", {**small, "model_symmetry": False}))
    with pytest.raises(ValueError, match="angle_dims"):
        other.load_bytes(blob)
    ModelPlayer(task, load_config("pal", "dclaw-turn-fixed", small)).load_bytes(blob)  # same setting: loads


def _rotated(obs, theta: float):
    o = obs.copy()
    o[9], o[10] = math.cos(theta), math.sin(theta)  # ROBEL's object_x, object_y: the valve angle
    return o


def test_with_policy_symmetry_the_policy_acts_alike_one_spoke_apart_and_onnx_says_the_same(tmp_path):
    """policy_symmetry: the networks read the valve angle as (cos 3 theta, sin 3 theta): a policy
    sees the same valve one spoke on (the target error, its own slot, still tells how far to go);
    without it the same weights act differently there. The exported ONNX policy computes the same."""
    import numpy as np

    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.core.policy_player import PolicyPlayer
    from mbrl_ros.tasks import make_env

    task = get_task("dclaw-turn-fixed")
    obs, _ = make_env("dclaw-turn-fixed").reset(seed=0)
    thetas = np.linspace(-3.0, 3.0, 7)
    for symmetry in (True, False):
        player = PolicyPlayer(task, load_config("pal", "dclaw-turn-fixed", [f"policy_symmetry={symmetry}"]), "cpu")
        torch.manual_seed(0)
        with torch.no_grad():  # a policy that depends on every input (the initial one is near 0)
            for p in player.policy.mean_net.parameters():
                p.normal_(0.0, 0.5)
        here = player.act(np.stack([_rotated(obs, t) for t in thetas]))
        next_spoke = player.act(np.stack([_rotated(obs, t + 2 * math.pi / 3) for t in thetas]))
        assert np.allclose(here, next_spoke, atol=1e-5) == symmetry
        path = tmp_path / f"policy-{symmetry}.onnx"
        path.write_bytes(player.to_onnx_bytes(1, 1))
        onnx_act = load_onnx_policy(str(path), expect_task="dclaw-turn-fixed").act
        x = np.stack([_rotated(obs, t) for t in thetas])
        np.testing.assert_allclose(onnx_act(x), player.act(x), atol=1e-5)
        # the value baseline reads the same features
        f_here = player.value.obs_features(torch.tensor(_rotated(obs, 0.3), dtype=torch.float32))
        f_next = player.value.obs_features(torch.tensor(_rotated(obs, 0.3 + 2 * math.pi / 3), dtype=torch.float32))
        assert torch.allclose(f_here, f_next, atol=1e-5) == symmetry


def test_policy_weights_with_and_without_the_symmetry_refuse_each_other():
    """The two read the same observation slots differently: loading one into the other fails."""
    from mbrl_ros.core.policy_player import new_policy

    task = get_task("dclaw-turn-fixed")
    sym = new_policy(task, load_config("pal", "dclaw-turn-fixed", ["policy_symmetry=true"]))
    plain = new_policy(task, load_config("pal", "dclaw-turn-fixed", ["policy_symmetry=false"]))
    with pytest.raises(RuntimeError, match="harmonic_k"):
        plain.load_state_dict(sym.state_dict())
    with pytest.raises(RuntimeError, match="harmonic_k"):
        sym.load_state_dict(plain.state_dict())
    # a task without a symmetric angle has nothing to read differently
    kitty = new_policy(get_task("dkitty-orient-random"), load_config("pal", "dkitty-orient-random",
                                                                     ["policy_symmetry=true"]))
    assert not kitty.features.harmonics
