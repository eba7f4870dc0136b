"""The simulated ROBEL environments: contract, ROBEL's action pipeline and resets, bad input,
instability reporting, domain randomisation and mid-run physics / goal changes."""

from __future__ import annotations

import math
import warnings

import gymnasium
import numpy as np
import pytest

from mbrl_ros.tasks import GYM_IDS, TASK_IDS, get_task, make_env
from mbrl_ros.tasks.sim import SimulationWarning

PI = math.pi


@pytest.fixture(scope="module")
def envs():
    made = {tid: make_env(tid) for tid in TASK_IDS}
    yield made
    for e in made.values():
        e.close()


def _rollout(env, seed, n, action_seed=0):
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(action_seed)
    out = [obs]
    for _ in range(n):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, env.task.info.act_dim))
        out.append(obs)
        if term or trunc:
            break
    return np.array(out)


# -- contract ------------------------------------------------------------------------------
@pytest.mark.parametrize("task_id", TASK_IDS)
def test_spaces_info_and_truncation(envs, task_id):
    env = envs[task_id]
    info = env.task.info
    assert env.observation_space.shape == (info.obs_dim,) and env.action_space.shape == (info.act_dim,)
    assert len(info.obs_names) == info.obs_dim
    obs, reset_info = env.reset(seed=3)
    assert obs.dtype == np.float64 and obs.shape == (info.obs_dim,)
    assert set(reset_info) >= {"target", "success"}
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, step_info = env.step(np.zeros(info.act_dim))
        steps += 1
        assert isinstance(reward, float) and isinstance(step_info["success"], bool)
        # The reward is exactly the sum of the reported terms.
        assert reward == pytest.approx(sum(step_info["reward_terms"].values()), abs=1e-9)
        assert step_info["sim_warning"] is None
    if not terminated:
        assert steps == info.horizon


def test_gymnasium_registration_and_checker():
    from gymnasium.utils.env_checker import check_env

    for task_id, gym_id in GYM_IDS.items():
        env = gymnasium.make(gym_id)
        assert env.unwrapped.task.info.task_id == task_id
        assert env.spec.max_episode_steps == get_task(task_id).info.horizon
        env.close()
    env = make_env("dclaw-turn-random")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")  # unbounded Box is intended
        check_env(env, skip_render_check=True)


@pytest.mark.parametrize("task_id", ["dclaw-turn-random", "dkitty-orient-random"])
def test_same_seed_same_trajectory(envs, task_id):
    a = _rollout(envs[task_id], seed=11, n=15)
    b = _rollout(envs[task_id], seed=11, n=15)
    c = _rollout(envs[task_id], seed=12, n=15)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], c[0])  # a different seed samples a different start


# -- ROBEL's action pipeline and resets -------------------------------------------------
def test_dclaw_rate_limit_and_last_action(envs):
    env = envs["dclaw-turn-fixed"]
    obs, _ = env.reset(seed=0)
    reset_pose = np.array([0, -PI / 3, PI / 3] * 3)
    np.testing.assert_allclose(obs[:9], reset_pose, atol=1e-12)
    action = np.full(9, 2.0)  # out of range: clipped to 1
    obs, *_ = env.step(action)
    # ROBEL's velocity clamp: a target moves at most 2pi/3 rad/s * 0.1 s from the current position.
    np.testing.assert_allclose(env.data.ctrl, reset_pose + 2 * PI / 3 * 0.1, atol=1e-12)
    np.testing.assert_array_equal(obs[11:20], np.ones(9))  # last_action is the clipped action


def test_dclaw_reset_distributions():
    fixed = make_env("dclaw-turn-fixed")
    obs, info = fixed.reset(seed=5)
    assert info["target"] == float(np.float32(-PI))  # ROBEL wraps pi to -pi and stores float32
    assert fixed.data.qpos[18] == 0.0 and obs[9] == 1.0 and obs[10] == 0.0
    rnd = make_env("dclaw-turn-random")
    starts, targets = [], []
    for s in range(40):
        _, info = rnd.reset(seed=s)
        starts.append(rnd.data.qpos[18])
        targets.append(info["target"])
    starts, targets = np.array(starts), np.array(targets)
    assert np.all(np.abs(starts) <= PI / 3) and starts.std() > 0.2
    # Target = pi + U(-pi/3, pi/3), wrapped: within 60 degrees of pi.
    assert np.all(np.abs(np.mod(targets, 2 * PI) - PI) <= PI / 3 + 1e-6)


def test_dkitty_orient_reset_and_target(envs):
    env = envs["dkitty-orient-random"]
    for s in range(5):
        obs, info = env.reset(seed=s)
        yaw = env.data.qpos[5]
        assert abs(yaw) <= PI / 3 and 2 * PI / 3 <= info["target"] <= 4 * PI / 3
        np.testing.assert_allclose(obs[3:6], [0, 0, yaw], atol=1e-12)  # root_euler
        # desired_facing points from the torso to the target site, 1 m away at target + pi/2.
        t = info["target"] + PI / 2
        np.testing.assert_allclose(obs[51:53], [math.cos(t), math.sin(t)], atol=1e-7)
        np.testing.assert_allclose(obs[49:51], [-math.sin(yaw), math.cos(yaw)], atol=1e-12)  # head = +y
        assert obs[48] == pytest.approx(1.0)  # upright


def test_dkitty_stand_reset_settles_from_random_pose(envs):
    env = envs["dkitty-stand-random"]
    poses = []
    for s in range(3):
        obs, _ = env.reset(seed=s)
        poses.append(obs[6:18])
        np.testing.assert_array_equal(obs[49:61], -obs[6:18])  # pose_error = 0 - kitty_qpos
        # 140 substeps of settling: the torso has fallen from its 0.3 m start and slowed down.
        assert env.data.time == pytest.approx(140 * 0.0025)
        assert env.data.qpos[2] < -0.05
    assert np.abs(poses[0] - poses[1]).max() > 0.1


def test_reset_options_set_exact_state_and_round_trip(envs):
    env = envs["dclaw-turn-random"]
    env.reset(seed=1)
    for _ in range(5):
        env.step(np.random.default_rng(0).uniform(-1, 1, 9))
    state = env.get_state()
    a = np.linspace(-1, 1, 9)
    obs_a, *_ = env.step(a)
    obs0, info = env.reset(seed=99, options=state)
    np.testing.assert_array_equal(env.data.qpos, state["qpos"])
    assert info["target"] == state["target"]
    obs_b, *_ = env.step(a)
    np.testing.assert_allclose(obs_b[:11], obs_a[:11], atol=1e-8)  # same physics from the same state
    # target alone: the valve target changes, the sampled state stays as drawn.
    obs, info = env.reset(seed=1, options={"target": 0.5})
    assert info["target"] == pytest.approx(0.5, abs=1e-7)
    assert obs[20] == pytest.approx(0.5 - env.data.qpos[18], abs=1e-6)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"qpos": np.zeros(5)}, "qpos.*shape"),
        ({"qvel": np.full(19, np.nan)}, "non-finite"),
        ({"target": float("inf")}, "target"),
        ({"target": "north"}, "target"),
        ({"goal": 1.0}, "unknown reset options"),
        ([1, 2], "must be a dict"),
    ],
)
def test_malformed_reset_options_raise(envs, options, match):
    with pytest.raises(ValueError, match=match):
        envs["dclaw-turn-fixed"].reset(options=options)


def test_stand_has_no_target(envs):
    with pytest.raises(ValueError, match="no target"):
        envs["dkitty-stand-random"].reset(options={"target": 1.0})


@pytest.mark.parametrize("bad", [np.zeros(8), np.zeros((1, 9)), np.array([np.nan] + [0.0] * 8),
                                 np.array([np.inf] + [0.0] * 8), "left"])
def test_bad_actions_raise_and_never_reach_mujoco(envs, bad):
    env = envs["dclaw-turn-fixed"]
    env.reset(seed=0)
    qpos, ctrl, t = env.data.qpos.copy(), env.data.ctrl.copy(), env.data.time
    with pytest.raises(ValueError):
        env.step(bad)
    np.testing.assert_array_equal(env.data.qpos, qpos)
    np.testing.assert_array_equal(env.data.ctrl, ctrl)
    assert env.data.time == t


def test_unknown_task_id_lists_valid_ids():
    with pytest.raises(ValueError, match="dclaw-turn-fixed"):
        make_env("dclaw-screw")
    assert get_task("mbrl_ros/DKittyStandRandom-v0").info.task_id == "dkitty-stand-random"
    assert get_task("DClawTurnFixed-v0").info.task_id == "dclaw-turn-fixed"


def test_instability_is_reported_not_ignored():
    env = make_env("dclaw-turn-fixed")
    env.reset(seed=0)
    env.set_physics("actuator_gain", 1e12)  # absurdly stiff servos: MuJoCo's qacc blows up
    with pytest.warns(SimulationWarning, match="mjWARN_BADQACC"):
        obs, reward, terminated, truncated, info = env.step(np.ones(9))
    assert "mjWARN_BADQACC" in info["sim_warning"] and info["aborted"] and truncated
    assert np.all(np.isfinite(obs)) and math.isfinite(reward)


def test_a_divergence_mujoco_does_not_flag_is_aborted_too():
    """A speed no robot motion reaches (a D'Kitty run recorded 2.2e6 with no MuJoCo warning)
    aborts the step, so run_episode leaves it out of the data; ordinary steps are untouched."""
    from mbrl_ros.core.world import run_episode
    from mbrl_ros.tasks.sim import MAX_PLAUSIBLE_SPEED

    env = make_env("dkitty-stand-random")
    sim, plain_advance, diverge_at = env.unwrapped.sim, env.unwrapped.sim.advance, [3]

    def advance(n_substeps=None):  # a step that diverges silently: MuJoCo reports nothing
        raised = plain_advance(n_substeps)
        if n_substeps is None and env.unwrapped._steps + 1 == diverge_at[0]:
            env.unwrapped.data.qvel[3] = 2 * MAX_PLAUSIBLE_SPEED
        return raised

    sim.advance = advance
    with pytest.warns(SimulationWarning, match="implausible speed"):
        ep = run_episode(env, lambda o: np.zeros(12), 0, "e0", 0)
    assert ep.aborted and len(ep.actions) == 2 and np.abs(ep.obs).max() < MAX_PLAUSIBLE_SPEED
    diverge_at[0] = -1  # never: the same episode runs to its end
    ep = run_episode(env, lambda o: np.zeros(12), 0, "e1", 0)
    assert not ep.aborted and len(ep.actions) > 2


# -- domain randomisation, physics and goal changes -------------------------------------
def test_randomize_dynamics_draws_robel_ranges():
    env = make_env("dclaw-turn-random", randomize_dynamics=True)
    kps, damp = [], []
    for s in range(6):
        env.reset(seed=s)
        m = env.model
        kps.append(m.actuator_gainprm[0, 0])
        damp.append(m.dof_damping[:9].copy())
        np.testing.assert_array_equal(m.actuator_biasprm[:, 1], -m.actuator_gainprm[:, 0])
        assert np.all(m.actuator_gainprm[:, 0] == kps[-1])  # one kp for all servos
        assert 1.0 <= kps[-1] <= 3.0
        assert np.all((0.005 <= m.dof_damping[list(range(9)) + [18]]) & (m.dof_damping[list(range(9)) + [18]] <= 0.1))
        assert 0.8 <= m.geom_friction[0, 0] <= 1.2
        assert np.all(m.dof_damping[9:18] == 100.0)  # ghost overlay joints untouched
    assert np.std(kps) > 0.1 and np.std(np.array(damp)[:, 0]) > 0.005
    env.reset(seed=3)
    kp3 = env.model.actuator_gainprm[0, 0]
    assert kp3 == kps[3]  # reproducible from the seed
    kitty = make_env("dkitty-stand-random", randomize_dynamics=True)
    kitty.reset(seed=0)
    assert 2.0 <= kitty.model.actuator_gainprm[0, 0] <= 4.0
    assert 1.6 <= kitty.model.body_mass.sum() <= 2.0 + 1e-9
    assert kitty.model.hfield_data.max() <= 0.05 and kitty.model.hfield_data.std() > 0


def test_set_physics_changes_behaviour_and_persists():
    env = make_env("dclaw-turn-fixed", randomize_dynamics=True)
    env.reset(seed=0)
    env.set_physics("actuator_gain", 1e-3)  # servos with almost no stiffness
    env.reset(seed=0)  # an override survives resets and domain randomisation
    assert env.physics()["actuator_gain"] == [1e-3] * 9
    np.testing.assert_array_equal(env.model.actuator_biasprm[:, 1], -1e-3)
    for _ in range(3):
        env.step(np.ones(9))
    weak = np.abs(env.data.qpos[:9] - env.data.ctrl).max()  # servo tracking error
    env.set_physics("actuator_gain", None)
    env.reset(seed=0)
    for _ in range(3):
        env.step(np.ones(9))
    strong = np.abs(env.data.qpos[:9] - env.data.ctrl).max()
    assert weak > 0.1 and strong < 0.5 * weak

    env.set_physics("valve_damping", 5.0)
    env.set_physics("joint_damping", [0.2] * 9)
    assert env.physics()["valve_damping"] == 5.0 and env.model.dof_damping[0] == 0.2


@pytest.mark.parametrize(
    "task_id, name, value, match",
    [
        ("dclaw-turn-fixed", "gravity", 1.0, "unknown physics parameter"),
        ("dkitty-orient-random", "valve_damping", 1.0, "unknown physics parameter"),
        ("dclaw-turn-fixed", "actuator_gain", -2.0, "> 0"),
        ("dclaw-turn-fixed", "joint_damping", [0.1, 0.2], "9 values"),
        ("dclaw-turn-fixed", "valve_damping", float("nan"), "finite"),
    ],
)
def test_set_physics_rejects_bad_input(envs, task_id, name, value, match):
    with pytest.raises(ValueError, match=match):
        envs[task_id].set_physics(name, value)


def test_target_distribution_change(envs):
    env = make_env("dclaw-turn-random")
    env.set_target_distribution(0.5, 0.5)
    env.set_initial_distribution(0.0, 0.0)
    for s in range(3):
        obs, info = env.reset(seed=s)
        assert info["target"] == pytest.approx(0.5, abs=1e-7) and obs[20] == pytest.approx(0.5, abs=1e-7)
    kitty = make_env("dkitty-orient-random")
    kitty.set_target_distribution(PI / 2, PI / 2)
    obs, info = kitty.reset(seed=0)
    np.testing.assert_allclose(obs[51:53], [-1.0, 0.0], atol=1e-6)  # target at yaw + pi/2 = pi
    with pytest.raises(ValueError, match="low <= high"):
        env.set_target_distribution(1.0, 0.0)
    with pytest.raises(ValueError, match="no target"):
        envs["dkitty-stand-random"].set_target_distribution(0.0, 1.0)


def test_observation_noise_bounded_and_reset_seeded():
    noisy = make_env("dclaw-turn-fixed", observation_noise=0.05)
    obs, _ = noisy.reset(seed=0)
    true_q = noisy.data.qpos[:9]
    half = 0.5 * 0.05 * 2 * np.array([0.48, PI / 3, PI / 2] * 3)  # 0.05 x range, uniform +-half
    err = obs[:9] - true_q
    assert np.all(np.abs(err) <= half + 1e-12) and np.abs(err).max() > 0


@pytest.mark.parametrize("task_id", ["dclaw-turn-fixed", "dkitty-stand-random"])
def test_fast_action_pipeline_equals_the_contract(task_id):
    from mbrl_ros.tasks.base import TaskSpec

    task = get_task(task_id)
    rng = np.random.default_rng(0)
    lim = task.limits
    for _ in range(200):
        a = rng.uniform(-1.5, 1.5, task.info.act_dim)
        q = rng.uniform(lim.qpos_low - 0.3, lim.qpos_high + 0.3)
        fast, ref = task.action_to_targets(a, q), TaskSpec.action_to_targets(task, a, q)
        np.testing.assert_array_equal(fast[0], ref[0])
        np.testing.assert_array_equal(fast[1], ref[1])
    with pytest.raises(ValueError, match="non-finite"):
        task.action_to_targets(np.r_[np.nan, np.zeros(task.info.act_dim - 1)], q)
    # Huge but finite actions are valid (clipped to the bounds).
    big = np.full(task.info.act_dim, 1e308)
    np.testing.assert_array_equal(task.action_to_targets(big, q)[0], np.ones(task.info.act_dim))
