"""The D'Kitty stand outcome benchmark's scripted controllers (no MuJoCo run needed)."""

import numpy as np

from bench.bench_dkitty_stand_outcomes import standing_pose_action, then_stand
from mbrl_ros.tasks import dkitty, get_task


def test_then_stand_plays_the_policy_then_ramps_the_joint_targets_to_the_standing_pose() -> None:
    task = get_task("dkitty-stand-random")
    lim = task.limits
    policy_action = np.full(12, 0.3)
    act = then_stand(task, lambda _obs: policy_action, switch=3, ramp=4)
    obs = np.zeros(task.info.obs_dim)
    q_switch = np.linspace(-1.0, 1.0, 12)  # the joints where the policy left them
    obs[dkitty.OBS_KITTY_QPOS] = q_switch
    for _ in range(3):
        np.testing.assert_array_equal(act(obs), policy_action)
    targets = []
    for _ in range(6):
        a = act(obs)
        targets.append(lim.center + a * lim.half_range)
    # linear ramp from the pose at the switch (clipped to the action range) down to all zeros
    expected_half = np.clip(q_switch * 0.5, lim.center - lim.half_range, lim.center + lim.half_range)
    np.testing.assert_allclose(targets[1], expected_half, atol=1e-9)
    np.testing.assert_allclose(targets[3], np.clip(np.zeros(12), lim.center - lim.half_range,
                                                   lim.center + lim.half_range), atol=1e-9)
    np.testing.assert_allclose(act(obs), standing_pose_action(task))  # and it stays there
