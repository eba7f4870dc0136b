"""D'Claw's mirror (the plane through the thumb): the simulator obeys it, and a mirrored policy
turns the valve both ways alike, in torch, in the Fisher product and in its ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_ros.core.config import load_config
from mbrl_ros.core.networks import GaussianMLPPolicy, gaussian_kl
from mbrl_ros.core.npg import flat, gaussian_fisher_product
from mbrl_ros.tasks import get_task
from mbrl_ros.tasks.dclaw_turn import CLAW_MIRROR_INDEX, CLAW_MIRROR_SIGN

torch.set_num_threads(1)


def _mirrored_obs(obs: np.ndarray, index: np.ndarray, sign: np.ndarray) -> np.ndarray:
    m = obs.copy()
    m[0:9], m[11:20] = sign * obs[0:9][index], sign * obs[11:20][index]  # claw qpos, last action
    m[10], m[20] = -obs[10], -obs[20]  # sin(theta), target error
    return m


def _largest_mirror_gap(index: np.ndarray, sign: np.ndarray, seed: int, steps: int = 10) -> float:
    """Play smooth random actions from a seeded reset and their reflection from the reflected
    state; the largest difference between the reflected first episode and the second."""
    from mbrl_ros.tasks.sim import RobelEnv

    env, twin = RobelEnv("dclaw-turn-random"), RobelEnv("dclaw-turn-random")
    obs, info = env.reset(seed=seed)
    qpos = env.data.qpos.copy()
    q2 = qpos.copy()
    q2[0:9], q2[9:18], q2[18] = sign * qpos[0:9][index], sign * qpos[9:18][index], -qpos[18]  # claw, overlay, valve
    twin.reset(options={"qpos": q2, "qvel": np.zeros(env.model.nv), "target": -info["target"]})
    rng, a, gap = np.random.default_rng(seed), np.zeros(9), 0.0
    for _ in range(steps):
        a = np.clip(0.8 * a + 0.5 * rng.normal(size=9), -1.0, 1.0)
        obs = env.step(a)[0]
        obs2 = twin.step(sign * a[index])[0]
        gap = max(gap, float(np.abs(_mirrored_obs(obs, index, sign) - obs2).max()))
    return gap


def test_the_simulated_claw_is_its_own_mirror_image_and_other_maps_are_not() -> None:
    """The task's mirror agrees with MuJoCo's claw to a few hundredths of a radian over 10
    contact-rich steps; without the sign flips of the top joints, or without swapping the two
    fingers, the twin runs off (what the policy's mirror assumes is a fact of the robot)."""
    pytest.importorskip("mujoco")
    index, sign = np.array(CLAW_MIRROR_INDEX), np.array(CLAW_MIRROR_SIGN)
    seeds = range(6)
    assert max(_largest_mirror_gap(index, sign, s) for s in seeds) < 0.08
    assert max(_largest_mirror_gap(index, np.ones(9), s) for s in seeds) > 0.3  # no sign flips
    assert max(_largest_mirror_gap(np.arange(9), sign, s) for s in seeds) > 0.3  # no finger swap


def _observations(n: int, seed: int = 1) -> np.ndarray:
    """Claw-like observations: values in [-1, 1], a valve angle as (cos, sin)."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1.0, 1.0, size=(n, 21))
    theta = rng.uniform(-np.pi, np.pi, size=n)
    obs[:, 9], obs[:, 10] = np.cos(theta), np.sin(theta)
    return obs


def _random_player(mirror: bool):
    from mbrl_ros.core.policy_player import PolicyPlayer

    cfg = load_config("pal", "dclaw-turn-random", [f"policy_mirror={mirror}", "policy_symmetry=true"])
    player = PolicyPlayer(get_task("dclaw-turn-random"), cfg, "cpu")
    torch.manual_seed(0)
    with torch.no_grad():  # a policy that depends on every input (the initial one is near 0)
        for p in player.policy.mean_net.parameters():
            p.normal_(0.0, 0.5)
    player.policy.set_obs_normalization(np.full(22, 0.1), np.full(22, 0.7))
    return player


def test_a_mirrored_policy_acts_as_its_own_reflection_and_onnx_says_the_same(tmp_path) -> None:
    """mu(M s) = A mu(s) for the mirrored policy (a target error of -e gets the reflected action of
    +e), not for the same kind of network without it; the exported ONNX policy computes the same."""
    from mbrl_ros.core.onnx_export import load_onnx_policy

    index, sign = np.array(CLAW_MIRROR_INDEX), np.array(CLAW_MIRROR_SIGN)
    obs = _observations(16)
    reflected = np.stack([_mirrored_obs(o, index, sign) for o in obs])
    for mirror in (True, False):
        player = _random_player(mirror)
        here, there = player.policy.act(obs), player.policy.act(reflected)
        assert np.allclose(there, sign * here[:, index], atol=1e-5) == mirror
        path = tmp_path / f"policy-{mirror}.onnx"
        path.write_bytes(player.to_onnx_bytes(1, 1))
        onnx_act = load_onnx_policy(str(path), expect_task="dclaw-turn-random").act
        np.testing.assert_allclose(onnx_act(obs), here, atol=1e-5)


def test_the_fisher_product_of_a_mirrored_policy_equals_the_kl_hessian() -> None:
    policy = _random_player(True).policy
    obs = torch.tensor(_observations(64), dtype=torch.float32)
    params = list(policy.parameters())
    with torch.no_grad():
        mean0, log_std0 = policy(obs), policy.log_std.clone()
    v = torch.randn(sum(p.numel() for p in params))
    kl = gaussian_kl(mean0, log_std0, policy(obs), policy.log_std).mean()
    grads = flat(torch.autograd.grad(kl, params, create_graph=True))
    hessian_v = flat(torch.autograd.grad(torch.dot(grads, v), params))
    torch.testing.assert_close(gaussian_fisher_product(policy, obs, damping=0.0)(v), hessian_v, rtol=1e-4, atol=1e-6)


def test_renormalising_a_mirrored_policy_keeps_its_function() -> None:
    policy = _random_player(True).policy
    obs = torch.tensor(_observations(50), dtype=torch.float32)
    with torch.no_grad():
        before = policy(obs).clone()
    mean, std = policy.feature_stats(_observations(200, seed=3) * 1.5)
    policy.set_obs_normalization(mean, std)
    with torch.no_grad():
        torch.testing.assert_close(policy(obs), before, rtol=1e-4, atol=1e-5)


def test_mirrored_and_plain_weights_refuse_each_other_and_bad_mirrors_are_refused() -> None:
    from mbrl_ros.core.policy_player import new_policy

    task = get_task("dclaw-turn-random")
    mirrored = new_policy(task, load_config("pal", "dclaw-turn-random", ["policy_mirror=true"]))
    plain = new_policy(task, load_config("pal", "dclaw-turn-random", ["policy_mirror=false"]))
    with pytest.raises(RuntimeError, match="mirror_obs_index"):
        plain.load_state_dict(mirrored.state_dict())
    with pytest.raises(RuntimeError, match="mirror_obs_index"):
        mirrored.load_state_dict(plain.state_dict())
    # turn fixed starts in its own reflection: a mirrored policy could never pick a direction there
    with pytest.raises(ValueError, match="own mirror image"):
        new_policy(get_task("dclaw-turn-fixed"), load_config("pal", "dclaw-turn-fixed", ["policy_mirror=true"]))
    # a task without a mirror has nothing to reflect
    kitty = new_policy(
        get_task("dkitty-orient-random"), load_config("pal", "dkitty-orient-random", ["policy_mirror=true"])
    )
    assert not kitty.mirrored
    ok = ((1, 0), (1.0, 1.0), (0,), (-1.0,))
    GaussianMLPPolicy(2, 1, (4,), mirror=ok)
    for bad, match in (
        (((0, 0), (1.0, 1.0), (0,), (1.0,)), "permutation"),
        (((1, 0), (1.0, 0.5), (0,), (1.0,)), "signs"),
        (((1, 0), (1.0, -1.0), (0,), (1.0,)), "own inverse"),
        (((1, 2, 0), (1.0, 1.0, 1.0), (0,), (1.0,)), "permutation"),
    ):
        with pytest.raises(ValueError, match=match):
            GaussianMLPPolicy(2, 1, (4,), mirror=bad)
