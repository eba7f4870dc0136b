"""The dynamics ensemble: batched members, delta prediction, normalisation, masking, exchange."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_ros.core.buffers import Episode, EpisodeBuffer
from mbrl_ros.core.config import load_config
from mbrl_ros.core.dynamics_ensemble import DynamicsEnsemble, fit_ensemble
from mbrl_ros.core.model_player import ModelPlayer
from mbrl_ros.core.networks import GaussianMLPPolicy
from mbrl_ros.tasks.pointmass import PointMassTask

torch.set_num_threads(1)

A = np.array([[0.0, 1.0, 0.0, 0.0], [-0.5, -0.2, 0.0, 0.3], [0.0, 0.0, 0.0, 1.0], [0.2, 0.0, -0.4, -0.1]])
B = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.5, 1.0]])


def linear_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """z' = z + 0.1 (A z + B a), plus a 5th state slot that never changes (must be masked)."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, (n, 4))
    a = rng.uniform(-1, 1, (n, 2))
    dz = 0.1 * (z @ A.T + a @ B.T)
    const = np.full((n, 1), 0.7)
    zz = np.c_[z, const]
    x = torch.tensor(np.c_[zz, a], dtype=torch.float32)
    y = torch.tensor(np.c_[dz, np.zeros((n, 1))], dtype=torch.float32)
    states = torch.tensor(np.r_[zz, np.c_[z + dz, const]], dtype=torch.float32)
    return x, y, states


def test_members_are_stacked_and_differ() -> None:
    torch.manual_seed(0)
    ens = DynamicsEnsemble(5, 2, ensemble_size=3, hidden=(32, 32))
    assert [tuple(w.shape) for w in ens.weights] == [(3, 7, 32), (3, 32, 32), (3, 32, 5)]
    assert not torch.allclose(ens.weights[0][0], ens.weights[0][1])  # independent random inits
    out = ens.forward_normalized(torch.randn(3, 8, 7))
    assert out.shape == (3, 8, 5)


def test_ensemble_fits_a_known_linear_system() -> None:
    torch.manual_seed(0)
    ens = DynamicsEnsemble(5, 2, ensemble_size=4, hidden=(64, 64))
    x, y, states = linear_data(2000, seed=1)
    ens.set_normalization(x, y, states)
    assert ens.out_mask.tolist() == [1, 1, 1, 1, 0]  # the constant slot is not learned
    opt = torch.optim.Adam(ens.parameters(), lr=3e-3)
    result = fit_ensemble(ens, opt, x, y, n_steps=800, batch_size=200)
    assert result["steps"] == 800
    xt, yt, _ = linear_data(500, seed=2)  # fresh data
    z, a = xt[:, :5], xt[:, 5:]
    with torch.no_grad():
        z_next, reward = ens.predict(z.expand(4, -1, -1), a.expand(4, -1, -1))
    assert reward is None
    err = (z_next - (z + yt)).abs()  # [E, n, 5]
    scale = yt[:, :4].abs().mean()
    assert float(err[..., :4].mean()) < 0.05 * float(scale), "every member predicts the linear system"
    assert float(err[..., 4].max()) < 1e-6, "a masked slot keeps its (zero) change exactly"


def test_rollout_states_are_clamped_to_the_data_box() -> None:
    torch.manual_seed(0)
    ens = DynamicsEnsemble(5, 2, ensemble_size=2, hidden=(16,), clamp_margin=0.5)
    x, y, states = linear_data(200, seed=3)
    ens.set_normalization(x, y, states)
    with torch.no_grad():
        ens.biases[-1].fill_(1e6)  # a blown-up model
    with torch.no_grad():
        z_next, _ = ens.predict(torch.zeros(2, 4, 5), torch.zeros(2, 4, 2))
    assert torch.isfinite(z_next).all()
    assert float(z_next.max()) <= float(states.max() + 0.5 * (states.max(0).values - states.min(0).values).max()) + 1e-5


def _pointmass_buffer(n_episodes: int = 6) -> EpisodeBuffer:
    from mbrl_ros.core.world import collect_episodes, random_policy
    from mbrl_ros.tasks.pointmass import PointMassEnv

    rng = np.random.default_rng(0)
    buf = EpisodeBuffer("aggregate")
    for ep in collect_episodes(PointMassEnv(), random_policy(2, rng), 20 * n_episodes, rng, 0, "t"):
        buf.add_episode(ep)
    return buf


def test_model_player_fit_and_exchange_bytes() -> None:
    torch.manual_seed(0)
    task = PointMassTask()
    cfg = load_config("pal", "pointmass", ["model_hidden=[32, 32]", "model_epochs_aggressive=20", "model_min_steps=50"])
    player = ModelPlayer(task, cfg)
    buf = _pointmass_buffer()
    first = player.fit(buf, aggressive=True)
    assert first["steps"] == 50  # ceil(20 epochs * 120 / 200) = 12, clamped up to model_min_steps
    assert first["loss"] < 1.0
    blob = player.to_bytes()
    other = ModelPlayer(task, cfg)
    other.load_bytes(blob)
    z = torch.randn(4, 3, task.model_dim)
    a = torch.rand(4, 3, 2) * 2 - 1
    torch.testing.assert_close(player.ensemble.predict(z, a)[0], other.ensemble.predict(z, a)[0])
    bigger = ModelPlayer(task, load_config("pal", "pointmass", ["model_hidden=[64, 64]"]))
    with pytest.raises(ValueError, match="hidden"):
        bigger.load_bytes(blob)
    with pytest.raises(ValueError, match="not a dynamics-ensemble"):
        other.load_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")


def test_fit_steps_are_clamped() -> None:
    torch.manual_seed(0)
    task = PointMassTask()
    buf = _pointmass_buffer(2)  # 40 transitions
    cfg = load_config("pal", "pointmass", ["model_hidden=[16]", "model_epochs_conservative=1", "model_min_steps=100"])
    assert ModelPlayer(task, cfg).fit(buf, aggressive=False)["steps"] == 100  # 1 epoch = 1 step -> at least 100
    cfg = load_config("pal", "pointmass", ["model_hidden=[16]", "model_epochs_aggressive=1000", "model_max_steps=120"])
    assert ModelPlayer(task, cfg).fit(buf, aggressive=True)["steps"] == 120  # 1000 epochs = 200 steps, capped


def test_agent_reward_objective_pays_the_model_for_the_policy_return() -> None:
    """MAL + agent reward: with the return term, the fitted model predicts a higher J(pi, M)."""
    from mbrl_ros.core.model_rollout import differentiable_return
    from mbrl_ros.core.networks import GaussianMLPPolicy

    task = PointMassTask()
    buf = _pointmass_buffer(10)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(6, 2, (16, 16))
    starts = torch.as_tensor(buf.initial_observations(), dtype=torch.float32)
    returns = {}
    for algo in ("mal", "mal-agent-reward"):
        torch.manual_seed(1)
        cfg = load_config(algo, "pointmass", ["model_hidden=[32, 32]", "alpha=0.2", "model_epochs_aggressive=60"])
        player = ModelPlayer(task, cfg)
        player.fit(buf, aggressive=True, policy=policy)
        torch.manual_seed(2)
        with torch.no_grad():
            returns[algo] = float(differentiable_return(player.ensemble, task, policy, starts, 8, 0.995))
    assert returns["mal-agent-reward"] > returns["mal"] + 0.1, returns
    assert all(p.requires_grad for p in policy.parameters())  # the policy is left as it was


@pytest.mark.parametrize("members", [1, 4])
def test_agent_reward_term_weighs_each_member_the_same_whatever_the_ensemble_size(members: int) -> None:
    """alpha l_e - (1 - alpha) J_e per member: J's weight must not shrink as 1/E (J is a member mean)."""
    torch.manual_seed(0)
    ens = DynamicsEnsemble(5, 2, ensemble_size=members, hidden=(8,))
    x, y, states = linear_data(50, seed=4)
    ens.set_normalization(x, y, states)
    before = ens.biases[0].detach().clone()
    opt = torch.optim.SGD(ens.parameters(), lr=1.0)
    # the extra term: the member mean of each member's first-layer bias sum (gradient 1 per bias)
    fit_ensemble(ens, opt, x, y, n_steps=1, alpha=0.0, extra_loss=lambda: ens.biases[0].sum((1, 2)).mean())
    torch.testing.assert_close(ens.biases[0].detach(), before - 1.0)


def test_agent_reward_fit_reports_the_objective_it_minimised() -> None:
    task = PointMassTask()
    buf = _pointmass_buffer(4)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(6, 2, (16, 16))
    cfg = load_config("mal-agent-reward", "pointmass", ["model_hidden=[16]", "alpha=0.5", "model_max_steps=100"])
    r = ModelPlayer(task, cfg).fit(buf, aggressive=True, policy=policy)
    # the point mass's rewards are negative distances: -J/scale > 0 pushes the objective above alpha l
    assert r["objective"] > 0.5 * r["loss"] + 0.05, r
    assert "objective" not in ModelPlayer(task, load_config("mal", "pointmass", ["model_hidden=[16]"])).fit(buf, True)


def test_learned_reward_head() -> None:
    task = PointMassTask()
    buf = _pointmass_buffer(10)
    torch.manual_seed(0)
    cfg = load_config("pal", "pointmass", ["model_hidden=[64, 64]", "learned_reward=true", "model_epochs_aggressive=200"])
    player = ModelPlayer(task, cfg)
    player.fit(buf, aggressive=True)
    d = buf.arrays()
    z = torch.as_tensor(task.to_model(d["obs"]), dtype=torch.float32).expand(4, -1, -1)
    a = torch.as_tensor(d["actions"], dtype=torch.float32).expand(4, -1, -1)
    with torch.no_grad():
        _, reward = player.ensemble.predict(z, a)
    err = (reward.mean(0).numpy() - d["rewards"]).std()
    assert err < 0.2 * d["rewards"].std()


def test_agent_reward_gradients_stay_finite_on_dclaw() -> None:
    """D'Claw's reward has norms of all-zero vectors (NaN gradients): the model must stay finite."""
    pytest.importorskip("mujoco")
    from mbrl_ros.core.networks import GaussianMLPPolicy
    from mbrl_ros.core.world import collect_episodes
    from mbrl_ros.tasks import make_env

    env = make_env("dclaw-turn-fixed")
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(21, 9, (16, 16))
    buf = EpisodeBuffer("aggregate")
    for ep in collect_episodes(env, lambda o: policy.act(o, False), 80, np.random.default_rng(0), 0, "t"):
        buf.add_episode(ep)
    cfg = load_config("mal-agent-reward", "dclaw-turn-fixed", ["model_hidden=[16]", "model_min_steps=30",
                                                               "model_epochs_aggressive=1", "agent_reward_batch=16"])
    player = ModelPlayer(env.task, cfg)
    result = player.fit(buf, aggressive=True, policy=policy)
    assert np.isfinite(result["loss"]) and all(bool(torch.isfinite(p).all()) for p in player.ensemble.parameters())


def test_early_stopping_stops_where_the_held_out_loss_stops_improving() -> None:
    """A large model on few noisy samples overfits: the held-out loss falls, then rises. The
    early-stopped fit ends ``patience`` evaluations after the best one and keeps its weights."""
    import copy

    x, y, states = linear_data(120, 3)
    y = y + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))  # noise to overfit
    hold = torch.zeros(120, dtype=torch.bool)
    hold[::3] = True  # a third held out
    torch.manual_seed(0)
    ens = DynamicsEnsemble(5, 2, ensemble_size=2, hidden=[256, 256])
    ens.set_normalization(x, y, states)
    twin = copy.deepcopy(ens)
    opt = torch.optim.Adam(ens.parameters(), lr=3e-3)
    torch.manual_seed(1)
    full = fit_ensemble(ens, opt, x, y, 1500, 40, holdout_mask=hold, eval_every=25, patience=10**6, min_steps=1)
    curve = full["holdout_curve"]
    best_step = min(curve, key=lambda c: c[1])[0]
    assert curve[-1][1] > 1.2 * min(c[1] for c in curve)  # it does overfit: the held-out loss rises again
    assert best_step < 1500 - 4 * 25
    opt2 = torch.optim.Adam(twin.parameters(), lr=3e-3)
    torch.manual_seed(1)  # the same minibatches as the full fit
    stopped = fit_ensemble(twin, opt2, x, y, 1500, 40, holdout_mask=hold, eval_every=25, patience=4, min_steps=1)
    assert stopped["holdout_curve"] == curve[: len(stopped["holdout_curve"])]
    # it stops at the first point where 4 evaluations in a row did not improve on the best so far
    expect, best, bad = None, float("inf"), 0
    for step, loss in curve:
        if loss < best - 1e-6:
            best, bad = loss, 0
        else:
            bad += 1
            if bad >= 4:
                expect = step
                break
    assert stopped["steps"] == expect < 1500
    assert stopped["holdout_loss"] == pytest.approx(min(c[1] for c in stopped["holdout_curve"]), rel=1e-6)


def test_goal_share_puts_that_share_of_the_fit_on_the_goal_dims() -> None:
    """model_goal_share: the goal dims carry that share of the loss (weights summing to the
    unmasked outputs, masked outputs weigh 0, 0 = the plain mean); the weights survive a load;
    and the same fit budget ends with a smaller error on the goal dim than the plain mean."""
    x, y, states = linear_data(2000, 0)
    rng = np.random.default_rng(1)
    # a goal dim that is hard to fit: a sharp function of the state (contact-like)
    y[:, 0] = torch.tensor(np.tanh(8 * x[:, 1].numpy()) * 0.1 + 0.01 * rng.normal(size=2000), dtype=torch.float32)
    with pytest.raises(ValueError, match="goal_share"):
        DynamicsEnsemble(5, 2, 2, (32, 32), goal_dims=(0,), goal_share=1.0)
    with pytest.raises(ValueError, match="goal_dims"):
        DynamicsEnsemble(5, 2, 2, (32, 32), goal_dims=(5,), goal_share=0.5)
    errors = {}
    for share in (0.0, 0.5):
        torch.manual_seed(0)
        ens = DynamicsEnsemble(5, 2, ensemble_size=2, hidden=(32, 32), goal_dims=(0,), goal_share=share)
        ens.set_normalization(x, y, states)
        w = ens.loss_weight
        assert float(w.sum()) == pytest.approx(4.0) and float(w[4]) == 0.0  # the constant slot is masked
        assert float(w[0]) / float(w.sum()) == pytest.approx(share if share else 0.25)
        fit_ensemble(ens, torch.optim.Adam(ens.parameters(), lr=1e-3), x, y, n_steps=300, batch_size=100)
        with torch.no_grad():
            pred = ens.forward_normalized(x.expand(2, -1, -1))
            err = (pred - ens.normalized_targets(y)) ** 2
            errors[share] = (float(err[..., 0].mean()), float(err[..., 1:4].mean()))
        clone = DynamicsEnsemble(5, 2, ensemble_size=2, hidden=(32, 32), goal_dims=(0,), goal_share=share)
        clone.load_state_dict(ens.state_dict())
        assert torch.equal(clone.loss_weight, ens.loss_weight)
    # the goal dim's error falls (0.82-0.88x on four data seeds), the other dims pay for it
    assert errors[0.5][0] < 0.92 * errors[0.0][0] and errors[0.5][1] > errors[0.0][1], errors


def test_recent_share_fits_the_newest_transitions_more_closely() -> None:
    """model_recent_share: a share of each minibatch from the newest rows. The dynamics changed
    halfway through the data (old rows: A, B; the newest 500: the same with B negated, as when
    the policy moved to states where the world acts differently); with half of each minibatch
    from the newest 500 the fit's error there falls, with all of them it ignores the old rows;
    0 keeps the uniform draw bit for bit."""
    x, y, states = linear_data(2000, 0)
    a = x[-500:, 5:7].numpy()
    y[-500:, :4] -= torch.tensor(0.2 * a @ B.T, dtype=torch.float32)  # newest rows: B -> -B
    errors = {}
    for share in (0.0, 0.5, 1.0):
        torch.manual_seed(0)
        ens = DynamicsEnsemble(5, 2, ensemble_size=2, hidden=(32, 32))
        ens.set_normalization(x, y, states)
        fit_ensemble(ens, torch.optim.Adam(ens.parameters(), lr=1e-3), x, y, n_steps=400, batch_size=100,
                     recent_window=500, recent_share=share)
        with torch.no_grad():
            err = (ens.forward_normalized(x.expand(2, -1, -1)) - ens.normalized_targets(y)) ** 2
            errors[share] = (float(err[:, -500:, :4].mean()), float(err[:, :-500, :4].mean()))
    assert errors[0.5][0] < 0.5 * errors[0.0][0], errors  # the newest rows fitted more closely
    assert errors[1.0][1] > errors[0.5][1] > errors[0.0][1], errors  # ... the old ones less
    torch.manual_seed(0)
    plain = DynamicsEnsemble(5, 2, ensemble_size=2, hidden=(32, 32))
    plain.set_normalization(x, y, states)
    torch.manual_seed(0)
    off = DynamicsEnsemble(5, 2, ensemble_size=2, hidden=(32, 32))
    off.set_normalization(x, y, states)
    for ens, kw in ((plain, {}), (off, {"recent_window": 500, "recent_share": 0.0})):
        torch.manual_seed(1)
        fit_ensemble(ens, torch.optim.Adam(ens.parameters(), lr=1e-3), x, y, n_steps=20, batch_size=100, **kw)
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), off.parameters()))
    # (bad values of the two keys: test_core_config.py::test_bad_values_are_clear_errors)
