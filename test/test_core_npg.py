"""Model-based NPG pieces: Fisher products, conjugate gradient, GAE, and the size of an NPG step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_ros.core.networks import GaussianMLPPolicy, ValueMLP, gaussian_kl
from mbrl_ros.core.npg import conjugate_gradient, flat, gae, gaussian_fisher_product, npg_update

torch.set_num_threads(1)


def _policy(seed: int = 0) -> GaussianMLPPolicy:
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(5, 3, (16, 16), init_log_std=-0.5)
    with torch.no_grad():  # a non-trivial mean function (the default last layer is tiny)
        policy.mean_net[-1].weight.normal_(0, 0.5)
    policy.set_obs_normalization(np.full(5, 0.3), np.full(5, 2.0))
    return policy


def test_fisher_product_equals_the_kl_hessian() -> None:
    policy = _policy()
    obs = torch.randn(64, 5)
    params = list(policy.parameters())
    with torch.no_grad():
        mean0, log_std0 = policy(obs), policy.log_std.clone()
    v = torch.randn(sum(p.numel() for p in params))
    kl = gaussian_kl(mean0, log_std0, policy(obs), policy.log_std).mean()
    grads = flat(torch.autograd.grad(kl, params, create_graph=True))
    hessian_v = flat(torch.autograd.grad(torch.dot(grads, v), params))
    fvp = gaussian_fisher_product(policy, obs, damping=0.0)
    torch.testing.assert_close(fvp(v), hessian_v, rtol=1e-4, atol=1e-6)


def test_conjugate_gradient_solves_spd_systems() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(20, 20))
    F = torch.tensor(m @ m.T + 20 * np.eye(20), dtype=torch.float64)
    b = torch.tensor(rng.normal(size=20))
    x = conjugate_gradient(lambda v: F @ v, b, iters=30)
    torch.testing.assert_close(F @ x, b, rtol=1e-4, atol=1e-4)


def test_gae_matches_a_hand_computation() -> None:
    r = torch.tensor([[1.0, 2.0, 3.0]])
    v = torch.tensor([[0.5, 0.4, 0.3, 0.0]])
    term = torch.zeros(1, 3)
    g, lam = 0.9, 0.8
    adv, ret = gae(r, v, term, g, lam)
    d = [1 + g * 0.4 - 0.5, 2 + g * 0.3 - 0.4, 3 + 0 - 0.3]
    expected = [d[0] + g * lam * (d[1] + g * lam * d[2]), d[1] + g * lam * d[2], d[2]]
    torch.testing.assert_close(adv[0], torch.tensor(expected))
    torch.testing.assert_close(ret[0], torch.tensor([1 + g * 2 + g * g * 3, 2 + g * 3, 3.0]))
    # a terminal step cuts both the bootstrap and the advantage recursion
    adv_t, ret_t = gae(r, torch.tensor([[0.5, 0.4, 0.3, 9.0]]), torch.tensor([[0.0, 1.0, 0.0]]), g, lam)
    assert float(adv_t[0, 1]) == pytest.approx(2 - 0.4) and float(ret_t[0, 1]) == pytest.approx(2.0)


@pytest.mark.parametrize("delta", [0.01, 0.05])
def test_npg_step_kl_is_the_normalised_step_size(delta: float) -> None:
    """The measured KL of a normalised step is delta / 2 (quadratic model: 0.5 a^2 x'Fx = delta/2)."""
    policy = _policy(1)
    torch.manual_seed(1)
    obs = torch.randn(2000, 5)
    with torch.no_grad():
        act = policy.sample(obs)
    adv = -((act - 0.3) ** 2).sum(-1)  # a real signal: actions near 0.3 are better
    adv = (adv - adv.mean()) / adv.std()
    stats = npg_update(policy, obs, act, adv, step_size=delta, cg_iters=25, damping=1e-4, fvp_fraction=1.0)
    assert stats["kl"] == pytest.approx(delta / 2, rel=0.25)
    assert stats["surrogate_gain"] > 0  # the step goes uphill on the surrogate


def test_obs_normalisation_change_preserves_the_policy() -> None:
    policy = _policy(2)
    new_mean, new_std = np.array([1.0, -2.0, 0.5, 0.0, 3.0]), np.array([0.5, 4.0, 1.0, 2.0, 0.3])
    obs = torch.randn(50, 5) * torch.tensor(new_std, dtype=torch.float32) + torch.tensor(new_mean, dtype=torch.float32)
    with torch.no_grad():
        before = policy(obs).clone()
    policy.set_obs_normalization(new_mean, new_std)
    with torch.no_grad():
        torch.testing.assert_close(policy(obs), before, rtol=1e-4, atol=1e-5)


def test_value_return_normalisation_preserves_values() -> None:
    torch.manual_seed(0)
    value = ValueMLP(5, (16,))
    obs, t = torch.randn(10, 5), torch.rand(10)
    with torch.no_grad():
        before = value(obs, t).clone()
        value.set_return_normalization(-300.0, 50.0)
        torch.testing.assert_close(value(obs, t), before, rtol=1e-4, atol=1e-4)


def test_value_obs_normalisation_change_preserves_values() -> None:
    """The value baseline must not jump when the buffer's statistics move between iterations."""
    torch.manual_seed(0)
    value = ValueMLP(5, (16, 16))
    value.set_obs_normalization(np.full(5, 0.3), np.full(5, 2.0), preserve_function=False)
    new_mean, new_std = np.array([1.0, -2.0, 0.5, 0.0, 3.0]), np.array([0.5, 4.0, 1.0, 2.0, 0.3])
    obs = torch.randn(50, 5) * torch.tensor(new_std, dtype=torch.float32) + torch.tensor(new_mean, dtype=torch.float32)
    t = torch.rand(50)
    with torch.no_grad():
        before = value(obs, t).clone()
    value.set_obs_normalization(new_mean, new_std)
    with torch.no_grad():
        torch.testing.assert_close(value(obs, t), before, rtol=1e-4, atol=1e-5)


def test_policy_reads_wrapped_angles_as_cos_sin_continuously() -> None:
    """D'Claw's target error jumps from +pi to -pi: the action must not."""
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.policy_player import new_policy
    from mbrl_ros.tasks import get_task

    task = get_task("dclaw-turn-fixed")
    torch.manual_seed(0)
    policy = new_policy(task, load_config("pal", "dclaw-turn-fixed"))
    with torch.no_grad():
        policy.mean_net[-1].weight.normal_(0, 1.0)  # a policy that reacts strongly to its input
    obs = np.zeros((2, 21))
    obs[:, 9] = 1.0
    obs[0, 20], obs[1, 20] = np.pi - 1e-4, -np.pi + 1e-4
    policy.set_obs_normalization(*policy.feature_stats(np.random.default_rng(0).uniform(-3, 3, (100, 21))))
    a = policy.act(obs)
    assert np.abs(a[0] - a[1]).max() < 1e-2  # 2e-4 rad apart on the circle
    far = obs[:1].copy()
    far[0, 20] = 0.0
    assert np.abs(policy.act(far)[0] - a[0]).max() > 1e-2  # and the error does reach the policy
    # the feature statistics are those of (cos, sin), and the ONNX input stays the task observation
    from mbrl_ros.core.onnx_export import export_policy_onnx, load_onnx_policy

    onnx_policy = load_onnx_policy(export_policy_onnx(policy, task.info, 1, 1), expect_task=task.info.task_id)
    np.testing.assert_allclose(onnx_policy.act(obs), a, atol=1e-5)


def test_entropy_bonus_raises_the_policy_entropy_on_a_toy_problem() -> None:
    """With no advantage signal, plain NPG leaves the entropy where it is; the bonus raises it."""
    ends = {}
    for coef in (0.0, 0.05):
        policy = _policy(3)
        torch.manual_seed(3)
        obs = torch.randn(4000, 5)
        for _ in range(5):
            with torch.no_grad():
                act = policy.sample(obs)
            adv = torch.randn(4000)  # pure noise: no action is better than another
            adv = (adv - adv.mean()) / adv.std()
            npg_update(policy, obs, act, adv, step_size=0.01, cg_iters=10, damping=1e-3, entropy_coef=coef)
        ends[coef] = float(policy.entropy().detach())
    start = float(_policy(3).entropy().detach())
    assert ends[0.05] > start + 0.15  # measured: +0.23 nats after 5 steps of delta = 0.01
    assert ends[0.05] > ends[0.0] + 0.15  # plain NPG: -0.04


def test_policy_max_log_std_caps_what_npg_steps_do_to_the_std() -> None:
    """Advantages that reward wide actions push the std up; ``max_log_std`` holds it at the cap
    (the NPG step clamps after every move), and a config whose cap is not above the floor is refused."""
    from mbrl_ros.core.config import load_config

    ends = {}
    for cap in (2.0, -1.0):
        torch.manual_seed(4)
        policy = GaussianMLPPolicy(5, 3, (16, 16), init_log_std=-1.0, min_log_std=-2.5, max_log_std=cap)
        obs = torch.randn(4000, 5)
        for _ in range(5):
            with torch.no_grad():
                act = policy.sample(obs)
            adv = (act - policy(obs)).abs().sum(-1)  # wide actions are better: the std should grow
            adv = (adv - adv.mean()) / adv.std()
            npg_update(policy, obs, act, adv, step_size=0.05, cg_iters=10, damping=1e-3)
        ends[cap] = policy.log_std.detach()
    assert float(ends[2.0].min()) > -0.9  # uncapped: it grew
    assert torch.all(ends[-1.0] <= -1.0 + 1e-6) and float(ends[-1.0].max()) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="policy_max_log_std"):
        load_config("pal", "dclaw-turn-fixed", ["policy_max_log_std=-3.0"])


def test_turn_random_defaults_hold_the_std_where_the_entropy_bonus_alone_inflates_it() -> None:
    """Advantages that say nothing about the std (noise) leave the entropy bonus as the only push
    on it: without a cap the std grows step after step (what stalled D'Claw turn random runs);
    turn random's defaults cap it at its initial value, and the mean still moves."""
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.policy_player import new_policy
    from mbrl_ros.tasks import get_task

    task = get_task("dclaw-turn-random")
    ends = {}
    for overrides in ([], ["policy_max_log_std=2.0"]):
        cfg = load_config("pal", "dclaw-turn-random", overrides)
        torch.manual_seed(0)
        policy = new_policy(task, cfg)
        start = policy.log_std.detach().clone()
        obs = torch.randn(2000, task.info.obs_dim)
        before = policy(obs).detach()
        for _ in range(20):
            with torch.no_grad():
                act = policy.sample(obs)
            adv = torch.randn(len(obs))  # uninformative, whitened
            npg_update(policy, obs, act, adv, step_size=cfg.npg_step_size, cg_iters=cfg.cg_iters,
                       damping=cfg.cg_damping, entropy_coef=cfg.entropy_coef)
        ends[bool(overrides)] = (start, policy.log_std.detach(), float((policy(obs).detach() - before).abs().mean()))
    start, capped, moved = ends[False]
    assert cfg.entropy_coef > 0 and torch.all(capped <= start + 1e-6)  # the default: held at exp(-1)
    assert moved > 1e-3  # the mean is still learned
    start, free, _ = ends[True]
    assert float((free - start).mean()) > 0.03  # uncapped: the bonus inflates the std (measured +0.059)
