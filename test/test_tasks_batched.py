"""Batched reward / done / success (numpy and torch) and the model space of every task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mbrl_ros.core.dynamics_ensemble import DynamicsEnsemble
from mbrl_ros.tasks import TASK_IDS, get_task, make_env

torch.set_num_threads(1)
PI = math.pi


@pytest.fixture(scope="module")
def trajectories():
    """Random-policy transitions of each task with the env's exact per-step rewards."""
    out = {}
    for task_id in TASK_IDS:
        env = make_env(task_id)
        rng = np.random.default_rng(0)
        obs_l, act_l, next_l, rew_l, terms_l, done_l, succ_l, aux_l, next_aux_l = ([] for _ in range(9))
        for ep in range(3):
            obs, info = env.reset(seed=ep)
            aux = info.get("aux", np.zeros(0))
            for _ in range(env.task.info.horizon):
                a = rng.uniform(-1.2, 1.2, env.task.info.act_dim)  # some out of range: clipped
                nxt, r, term, trunc, info = env.step(a)
                obs_l.append(obs), act_l.append(a), next_l.append(nxt), rew_l.append(r)
                terms_l.append(info["reward_terms"]), done_l.append(term), succ_l.append(info["success"])
                aux_l.append(aux), next_aux_l.append(info.get("aux", np.zeros(0)))
                obs, aux = nxt, info.get("aux", np.zeros(0))
                if term or trunc:
                    break
        env.close()
        out[task_id] = dict(obs=np.array(obs_l), act=np.array(act_l), next=np.array(next_l), rew=np.array(rew_l),
                            terms=terms_l, done=np.array(done_l), succ=np.array(succ_l),
                            aux=np.array(aux_l) if env.task.aux_dim else None,
                            next_aux=np.array(next_aux_l) if env.task.aux_dim else None)
    return out


@pytest.mark.parametrize("task_id", ["dkitty-orient-random", "dkitty-stand-random"])
def test_dkitty_batched_reward_equals_env_reward(trajectories, task_id):
    t, task = trajectories[task_id], get_task(task_id)
    np.testing.assert_allclose(task.reward(t["obs"], t["act"], t["next"]), t["rew"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(task.done(t["next"]), t["done"])
    np.testing.assert_array_equal(task.success(t["next"]), t["succ"])
    assert t["done"].any()  # random D'Kitty falls: termination is exercised


def test_dclaw_batched_reward_uses_finite_difference_velocity(trajectories):
    t, task = trajectories["dclaw-turn-fixed"], get_task("dclaw-turn-fixed")
    batched = task.reward_terms(t["obs"], t["act"], t["next"])
    # Every term but the velocity penalty is a function of the observation: identical.
    for k in ("target_dist_cost", "pose_diff_cost", "bonus_small", "bonus_big"):
        np.testing.assert_allclose(batched[k], [x[k] for x in t["terms"]], rtol=0, atol=1e-12)
    fd = (t["next"][:, :9] - t["obs"][:, :9]) / 0.1
    expected = -np.sqrt(np.sum(np.where(np.abs(fd) >= 0.5, fd, 0.0) ** 2, axis=-1))
    np.testing.assert_allclose(batched["joint_vel_cost"], expected, rtol=0, atol=1e-12)
    # The mean velocity over a step over-estimates the velocity at its end (the servo has mostly
    # arrived by then): a known, bounded bias on random actions (docs/tasks.md gives numbers).
    true = np.array([x["joint_vel_cost"] for x in t["terms"]])
    assert np.mean(batched["joint_vel_cost"]) <= np.mean(true)
    assert np.mean(np.abs(batched["joint_vel_cost"] - true)) < 4.0
    assert np.corrcoef(batched["joint_vel_cost"], true)[0, 1] > 0.5


@pytest.mark.parametrize("task_id", ["dclaw-turn-fixed", "dclaw-turn-random"])
def test_dclaw_reward_from_the_measured_velocity_is_robels_exact_reward(trajectories, task_id):
    """The model carries the measured joint velocities (aux); a reward computed from them is the
    env's exact reward (float64 round-off), where the finite difference is off by ~2.5 per step."""
    t, task = trajectories[task_id], get_task(task_id)
    assert t["next_aux"].shape == (len(t["obs"]), 9)
    exact = task.model_reward(t["obs"], t["act"], t["next"], t["next_aux"])
    np.testing.assert_allclose(exact, t["rew"], rtol=0, atol=1e-9)
    # through the model space: velocities survive to_model / aux_from_model exactly
    z = task.to_model(t["next"], t["next_aux"])
    np.testing.assert_array_equal(task.aux_from_model(z), t["next_aux"])
    fd = task.reward(t["obs"], t["act"], t["next"])
    assert np.mean(np.abs(fd - t["rew"])) > 0.5  # what the finite difference would have cost
    with pytest.raises(ValueError, match="aux"):
        task.to_model(t["next"])  # the D'Claw model state needs the velocities


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_numpy_and_torch_agree_and_keep_dtype(trajectories, task_id):
    t, task = trajectories[task_id], get_task(task_id)
    o, a, n = t["obs"], t["act"], t["next"]
    to = [torch.as_tensor(x) for x in (o, a, n)]
    np.testing.assert_allclose(task.reward(*to).numpy(), task.reward(o, a, n), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(task.done(to[2]).numpy(), task.done(n))
    np.testing.assert_array_equal(task.success(to[2]).numpy(), task.success(n))
    aux = t["aux"]
    np.testing.assert_allclose(task.to_model(to[0], None if aux is None else torch.as_tensor(aux)).numpy(),
                               task.to_model(o, aux), atol=1e-12)
    np.testing.assert_allclose(task.fix_known(*to).numpy(), task.fix_known(o, a, n), atol=1e-12)
    assert task.reward(o.astype(np.float32), a.astype(np.float32), n.astype(np.float32)).dtype == np.float32
    assert task.reward(*(x.float() for x in to)).dtype == torch.float32
    # Leading batch dimensions of any shape: (2, T/2, obs_dim).
    h = (len(o) // 2) * 2
    r3 = task.reward(o[:h].reshape(2, h // 2, -1), a[:h].reshape(2, h // 2, -1), n[:h].reshape(2, h // 2, -1))
    np.testing.assert_allclose(r3.reshape(-1), task.reward(o[:h], a[:h], n[:h]), atol=1e-12)
    assert task.done(n[:h].reshape(2, h // 2, -1)).shape == (2, h // 2)


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_model_space_round_trip(trajectories, task_id):
    t, task = trajectories[task_id], get_task(task_id)
    z = task.to_model(t["next"], t["next_aux"])
    assert z.shape == (len(z), task.model_dim)
    np.testing.assert_allclose(task.from_model(z), t["next"], rtol=0, atol=1e-9)


def test_dclaw_model_space_is_wrap_free_for_the_ensemble():
    """The valve and target angles sit in the model state in [-pi, pi); the ensemble reads them as
    (cos, sin) and predicts their wrapped change, so neighbours across the wrap stay neighbours."""
    task = get_task("dclaw-turn-fixed")
    ens = DynamicsEnsemble(task.model_dim, 9, 1, [8], angle_dims=task.model_angle_dims)
    obs = np.zeros((2, 21))
    for i, theta in enumerate((PI - 1e-3, -PI + 1e-3)):  # 2 mrad apart across the wrap
        obs[i, 9:11] = (math.cos(theta), math.sin(theta))
    z = task.to_model(obs, np.zeros((2, 9)))
    assert abs(z[0, 9] - z[1, 9]) > 6  # 2 pi apart in the state...
    zt = torch.as_tensor(z, dtype=torch.float32)
    assert float(ens.state_delta(zt[0], zt[1]).abs().max()) < 3e-3  # ...2 mrad apart for the members
    x = torch.cat([zt, torch.zeros(2, 9)], -1)
    assert float((ens.features(x[0]) - ens.features(x[1])).abs().max()) < 1e-2
    # a predicted state past +pi reads back as the wrapped observation
    z[0, 9], z[0, 19] = PI + 0.05, -PI
    back = task.from_model(z)
    assert back[0, 9] == pytest.approx(math.cos(PI + 0.05)) and back[0, 20] == pytest.approx(-0.05)
    o = np.zeros((1, 21))
    o[0, :9] = task.RESET_POSE
    n = o.copy()
    n[0, 20] = 2 * PI + 0.05
    terms = task.reward_terms(o, np.zeros((1, 9)), n)
    assert terms["target_dist_cost"][0] == pytest.approx(-0.25) and terms["bonus_big"][0] == 50.0
    assert task.success(n)[0]


@pytest.mark.parametrize("task_id", TASK_IDS)
def test_fix_known_restores_exact_parts(trajectories, task_id):
    t, task = trajectories[task_id], get_task(task_id)
    if task.info.robot not in ("dclaw", "dkitty"):
        pytest.skip(f"{task_id}: no observation part is known exactly (fix_known is the identity)")
    o, a, n = t["obs"], t["act"], t["next"]
    corrupted = n + np.random.default_rng(1).normal(0, 0.3, n.shape)
    fixed = task.fix_known(o, a, corrupted)
    if task.info.robot == "dclaw":
        exact = list(range(11, 20))  # last_action
    elif task_id.startswith("dkitty-orient"):
        exact = list(range(36, 53))  # last_action, upright, current and desired facing
    else:
        exact = list(range(36, 49)) + list(range(49, 61))  # last_action, upright, pose_error
    # Known parts are recomputed from the other parts: exact on the true next observation ...
    clean = task.fix_known(o, a, n)
    np.testing.assert_allclose(clean[:, exact], n[:, exact], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(clean[:, 11:20] if task.info.robot == "dclaw" else clean[:, 36:48],
                                  np.clip(a, -1, 1))
    # ... and everything else is left as predicted.
    rest = [i for i in range(task.info.obs_dim) if i not in exact]
    np.testing.assert_array_equal(fixed[:, rest], corrupted[:, rest])
    assert not np.shares_memory(fixed, corrupted)
