"""Exact finite games: DP against hand computations, input validation, every algorithm's result,
the poster's finding (MAL fooled, PAL and both fixes not), the sampled formulation's data
accounting and buffers, and the contextual follower against exact best responses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrl_ros.core.finite import ALGOS, FiniteMDP, GameResult, TabularModel, hidden_region_mdp, model_loss, run_game
from mbrl_ros.core.finite_mdp import optimal_value_avoiding

torch.set_num_threads(1)


def tiny_mdp(gamma: float = 1.0) -> FiniteMDP:
    """States 0, 1 and terminal 2; H = 2.
    0 --a0--> 0 (reward 1); 0 --a1--> 1 or 2 (1/2 each, reward 0); 1 --a0--> 2 (reward 10); 1 --a1--> 2 (0)."""
    P = np.zeros((3, 2, 3))
    R = np.zeros((3, 2, 3))
    P[0, 0, 0] = 1.0
    R[0, 0, :] = 1.0
    P[0, 1, 1] = P[0, 1, 2] = 0.5
    P[1, 0, 2] = P[1, 1, 2] = 1.0
    R[1, 0, :] = 10.0
    P[2, :, 2] = 1.0
    return FiniteMDP(P, R, start=0, terminal=[2], horizon=2, gamma=gamma)


def random_mdp(seed: int, S: int = 5, A: int = 3, H: int = 6, gamma: float = 1.0) -> FiniteMDP:
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(S), size=(S, A))
    P[S - 1] = 0.0
    P[S - 1, :, S - 1] = 1.0
    R = rng.normal(size=(S, A, S))
    start = np.r_[rng.dirichlet(np.ones(S - 1)), 0.0]
    return FiniteMDP(P, R, start=start, terminal=[S - 1], horizon=H, gamma=gamma)


# -- exact dynamic programming ----------------------------------------------------------------
def test_dp_matches_hand_computation() -> None:
    mdp = tiny_mdp()
    pi, v = mdp.optimal()
    # V1(0) = max(1, 0.5 * 0) = 1, V1(1) = 10, V0(0) = max(1 + 1, 0.5 * 10) = 5
    assert v == pytest.approx(5.0)
    assert pi[0, 0].argmax() == 1 and pi[1, 0].argmax() == 0  # non-stationary: go, then take the 1
    assert mdp.evaluate(mdp.uniform_policy()) == pytest.approx(2.0)  # 0.5 * 1.5 + 0.5 * 2.5
    x = mdp.occupancy(mdp.uniform_policy())
    np.testing.assert_allclose(x[0, 0], [0.5, 0.5])
    np.testing.assert_allclose(x[1, 0], [0.25, 0.25])
    np.testing.assert_allclose(x[1, 1], [0.125, 0.125])
    assert x[:, 2].sum() == 0.0  # no occupancy once the episode has ended
    assert tiny_mdp(gamma=0.5).optimal()[1] == pytest.approx(2.5)  # max(1 + 0.5, 0.5 * 0.5 * 10)


def test_occupancy_return_and_soft_optimum_agree_with_dp() -> None:
    mdp = random_mdp(0)
    rng = np.random.default_rng(1)
    pi = rng.dirichlet(np.ones(mdp.n_actions), size=(mdp.horizon, mdp.n_states))
    x = mdp.occupancy(pi)
    assert float((x * mdp.expected_reward()[None]).sum()) == pytest.approx(mdp.evaluate(pi))
    _, v_opt = mdp.optimal()
    pi_soft, V = mdp.soft_optimal(1e-3)
    assert mdp.evaluate(pi_soft) == pytest.approx(v_opt, abs=1e-6)
    # the soft value is the return plus tau * entropy, so it is never below the optimum
    assert mdp.start @ mdp.soft_optimal(0.5)[1][0] >= v_opt


@pytest.mark.parametrize("gamma", [1.0, 0.8])
def test_return_gradient_wrt_model_matches_finite_differences(gamma: float) -> None:
    mdp = random_mdp(2, gamma=gamma)
    pi = np.random.default_rng(3).dirichlet(np.ones(mdp.n_actions), size=(mdp.horizon, mdp.n_states))
    M = np.random.default_rng(4).dirichlet(np.ones(mdp.n_states), size=(mdp.n_states, mdp.n_actions))
    _, V = mdp.q_values(pi, M)
    g = mdp.return_gradient_wrt_model(pi, V, M)
    eps = 1e-6
    for s, a, s2 in [(0, 1, 2), (1, 0, 0), (3, 2, 1)]:
        Mp = M.copy()
        Mp[s, a, s2] += eps  # J is linear in each entry: a one-sided difference is exact
        assert (mdp.evaluate(pi, Mp) - mdp.evaluate(pi, M)) / eps == pytest.approx(g[s, a, s2], rel=1e-4, abs=1e-6)


def test_model_loss_is_zero_only_at_the_truth() -> None:
    mdp = random_mdp(5)
    d = mdp.state_action_distribution(mdp.uniform_policy())
    assert model_loss(mdp, mdp.P, d) == pytest.approx(0.0)
    M = mdp.P.copy()
    M[0, 0] = np.roll(M[0, 0], 1)
    assert model_loss(mdp, M, d) > 0.0


def test_hidden_region_landmarks() -> None:
    world = hidden_region_mdp()
    assert world.hidden_value == pytest.approx(1.0)  # stop at once
    assert world.optimal_value > 30.0
    assert optimal_value_avoiding(world.mdp, world.region) == pytest.approx(world.hidden_value)


# -- validation --------------------------------------------------------------------------------
def test_invalid_mdps_raise_clear_errors() -> None:
    mdp = tiny_mdp()
    P, R = mdp.P.copy(), mdp.R.copy()
    bad = P.copy()
    bad[0, 0, 0] = 0.9
    with pytest.raises(ValueError, match=r"P\[0, 0, :\] sums to 0.9"):
        FiniteMDP(bad, R, 0, [2], 2)
    neg = P.copy()
    neg[0, 1, 1], neg[0, 1, 2] = 1.5, -0.5
    with pytest.raises(ValueError, match="negative"):
        FiniteMDP(neg, R, 0, [2], 2)
    with pytest.raises(ValueError, match="non-finite"):
        FiniteMDP(P, np.where(R == 10.0, np.nan, R), 0, [2], 2)
    with pytest.raises(ValueError, match="R must have shape"):
        FiniteMDP(P, np.zeros((3, 2, 2)), 0, [2], 2)
    with pytest.raises(ValueError, match="terminal state"):
        FiniteMDP(P, R, 2, [2], 2)
    with pytest.raises(ValueError, match="out of range"):
        FiniteMDP(P, R, 0, [5], 2)
    with pytest.raises(ValueError, match="horizon"):
        FiniteMDP(P, R, 0, [2], 0)
    with pytest.raises(ValueError, match="sum to 1"):
        FiniteMDP(P, R, np.array([0.5, 0.2, 0.0]), [2], 2)
    with pytest.raises(ValueError, match="policy must have shape"):
        mdp.evaluate(np.full((3, 3, 2), 0.5))


def test_invalid_game_arguments_raise_clear_errors() -> None:
    mdp = hidden_region_mdp(corridor=1, horizon=5).mdp
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'"):
        run_game(mdp, "ppo")
    with pytest.raises(ValueError, match="unknown formulation"):
        run_game(mdp, "pal", formulation="sampled")
    with pytest.raises(ValueError, match="unknown option.*learning_rate"):
        run_game(mdp, "pal", learning_rate=0.1)
    with pytest.raises(ValueError, match="alpha must be in"):
        run_game(mdp, "mal-noise", alpha=1.5)
    with pytest.raises(ValueError, match="model-leader games"):
        run_game(mdp, "pal", follower="contextual")
    with pytest.raises(ValueError, match="iterations"):
        run_game(mdp, "pal", iterations=0)


# -- the games ---------------------------------------------------------------------------------
@pytest.mark.parametrize("formulation", ["bilevel", "practical"])
def test_every_algorithm_returns_its_fields(formulation: str) -> None:
    world = hidden_region_mdp(corridor=1, horizon=8)
    mdp = world.mdp
    for algo in ALGOS:
        res = run_game(mdp, algo, seed=1, formulation=formulation, iterations=4, samples_per_iteration=20)
        assert isinstance(res, GameResult) and res.algo == algo
        assert res.policy.shape == mdp.policy_shape and res.model.shape == mdp.P.shape
        np.testing.assert_allclose(res.policy.sum(-1), 1.0, atol=1e-9)
        np.testing.assert_allclose(res.model.sum(-1), 1.0, atol=1e-9)
        assert res.real_return == pytest.approx(mdp.evaluate(res.policy))
        assert res.real_return <= world.optimal_value + 1e-9
        assert len(res.history) == 4
        for row in res.history:
            assert {"iteration", "leader_objective", "real_return", "model_return", "model_loss"} <= set(row)
        assert (res.samples == 0) == (formulation == "bilevel")


def test_poster_finding_mal_is_fooled_and_pal_and_both_fixes_are_not() -> None:
    world = hidden_region_mdp()
    final = {algo: run_game(world.mdp, algo, seed=0, iterations=15).real_return
             for algo in ("mal", "pal", "mal-agent-reward", "mal-noise")}
    assert final["mal"] <= world.hidden_value + 0.1, final  # ends at the hidden policy's value
    for algo in ("pal", "mal-agent-reward", "mal-noise"):
        assert final[algo] >= 0.95 * world.optimal_value, (algo, final)


def test_mal_model_hides_the_door_and_pal_model_does_not() -> None:
    world = hidden_region_mdp()
    s, go = world.start, 1
    mal = run_game(world.mdp, "mal", seed=0, iterations=15)
    pal = run_game(world.mdp, "pal", seed=0, iterations=15)
    first_cell = world.corridor[0]
    assert mal.model[s, go, s] > 0.9  # MAL's model still says "go does nothing" at the start
    assert mal.history[-1]["model_loss"] < 1e-3  # ... and its own loss cannot tell
    assert pal.model[s, go, first_cell] == pytest.approx(world.mdp.P[s, go, first_cell])


def test_agent_reward_needs_a_stochastic_return_term() -> None:
    """With tau -> 0 the return term only sees the greedy path (stop), so the door stays hidden."""
    world = hidden_region_mdp()
    res = run_game(world.mdp, "mal-agent-reward", seed=0, iterations=15, tau=1e-3)
    assert res.real_return <= world.hidden_value + 0.1


def test_practical_counts_samples_and_uses_fifo_or_aggregate_buffers() -> None:
    mdp = hidden_region_mdp().mdp
    N, iters = 30, 5
    pal = run_game(mdp, "pal", seed=0, formulation="practical", iterations=iters, samples_per_iteration=N)
    mal = run_game(mdp, "mal", seed=0, formulation="practical", iterations=iters, samples_per_iteration=N, n_init=10)
    noise = run_game(mdp, "mal-noise", seed=0, formulation="practical", iterations=iters, samples_per_iteration=N)
    assert pal.samples == N + iters * N  # N_init = N by the initial policy
    assert mal.samples == 10 + iters * N
    assert noise.samples == iters * N  # random-policy samples are real samples, counted in N
    assert np.all(np.diff(pal.curve("samples")) == N) and pal.curve("samples")[-1] == pal.samples
    # PAL keeps a FIFO of B = 2N transitions; MAL aggregates everything
    assert np.all(pal.curve("buffer_transitions") == np.minimum(2 * N, pal.curve("samples")))
    assert np.all(mal.curve("buffer_transitions") == mal.curve("samples"))
    fifo = run_game(mdp, "mal", seed=0, formulation="practical", iterations=iters, samples_per_iteration=N,
                    buffer="fifo", buffer_size=45)
    assert np.all(fifo.curve("buffer_transitions") == np.minimum(45, fifo.curve("samples")))


def test_practical_poster_finding_on_sampled_data() -> None:
    world = hidden_region_mdp()
    opts = dict(formulation="practical", iterations=12, samples_per_iteration=100, seed=0)
    assert run_game(world.mdp, "mal", **opts).real_return <= world.hidden_value + 0.1
    assert run_game(world.mdp, "pal", **opts).real_return >= 0.95 * world.optimal_value
    assert run_game(world.mdp, "mal-noise", **opts).real_return >= 0.95 * world.optimal_value


# -- contextual follower (Gerstgrasser & Parkes) -----------------------------------------------
def test_contextual_follower_approximates_the_exact_best_response_on_held_out_leaders() -> None:
    from mbrl_ros.core.finite_contextual import pretrained_policy_follower, random_models

    world = hidden_region_mdp(corridor=2, horizon=12)
    mdp = world.mdp
    prior = TabularModel(mdp, "self-loop", 8.0, 0.1).probs
    follower = pretrained_policy_follower(mdp, prior, seed=0, leaders=600, epochs=150, hidden=64)
    held_out = random_models(mdp, 150, np.random.default_rng(123), prior)
    regret = follower.regret(held_out)
    # baseline: a follower that ignores the leader and always plays the best response to the prior
    pi_prior, _ = mdp.optimal(prior)
    best = np.array([mdp.optimal(M)[1] for M in held_out])
    baseline = best - np.array([mdp.evaluate(pi_prior, M) for M in held_out])
    assert np.median(regret) < 0.02 * np.mean(np.abs(best))
    assert regret.mean() < 0.5 * baseline.mean()
    # the game against the frozen follower (same settings: the pretrained follower is reused)
    res = run_game(mdp, "mal-noise", seed=0, follower="contextual", iterations=5, contextual_leaders=600,
                   contextual_epochs=150, contextual_hidden=64)
    assert res.policy.shape == mdp.policy_shape and len(res.history) == 5


# -- the family of trap MDPs (bench/finite_traps.py) --------------------------------------------
def _closed_door(world) -> FiniteMDP:
    """The world with its hidden transition replaced by a bump (the door never opens)."""
    P = world.mdp.P.copy()
    s, a = world.door
    P[s, a] = 0.0
    P[s, a, s] = 1.0
    m = world.mdp
    return FiniteMDP(P, m.R, m.start, m.terminal, m.horizon, m.gamma)


def test_trap_generator_is_deterministic_per_seed() -> None:
    from mbrl_ros.core.finite_traps import trap_mdp

    a, b, c = trap_mdp(7), trap_mdp(7), trap_mdp(8)
    np.testing.assert_array_equal(a.mdp.P, b.mdp.P)
    np.testing.assert_array_equal(a.mdp.R, b.mdp.R)
    assert a.params == b.params and a.door == b.door and a.optimal_value == b.optimal_value
    assert a.mdp.P.shape != c.mdp.P.shape or not np.array_equal(a.mdp.P, c.mdp.P)


def test_every_generated_mdp_is_a_trap_behind_its_hidden_transition() -> None:
    from mbrl_ros.core.finite_traps import entry_probability, trap_family

    worlds = trap_family(30)
    assert len({w.params["n_actions"] for w in worlds}) >= 2  # the family varies sizes and scales
    assert len({w.params["door_pos"] for w in worlds}) >= 3
    assert max(w.params["reward_scale"] for w in worlds) > 10 * min(w.params["reward_scale"] for w in worlds)
    assert {w.params["tempting_kind"] for w in worlds} == {"exit", "lure"}
    for w in worlds:
        mdp = w.mdp
        # the optimum goes through the door and beats the tempting value by a margin
        assert w.optimal_value >= w.tempting_value + 0.5 * w.params["tempting_reward"], w.seed
        assert entry_probability(w) > 0.5, w.seed
        assert entry_probability(w, mdp.uniform_policy()) < entry_probability(w)
        assert w.tempting_value == pytest.approx(optimal_value_avoiding(mdp, w.region))
        # the door is *the* hidden transition: closed, the best the world offers is the tempting value
        assert _closed_door(w).optimal()[1] == pytest.approx(w.tempting_value), w.seed
        # the tempting action pays something at once (what makes it tempting)
        assert mdp.expected_reward()[w.start, w.tempting_action] > 0
        assert w.score(w.optimal_value) == pytest.approx(1.0) and w.score(w.tempting_value) == pytest.approx(0.0)


def test_rewards_depend_on_the_next_state_and_are_used_so() -> None:
    from mbrl_ros.core.finite_traps import trap_mdp

    w = trap_mdp(3)
    mdp = w.mdp
    s, a = w.door
    # R(s, a, s') differs between outcomes of one pair: a bump pays -bump_cost, entering the region pays its reward
    outcomes = np.flatnonzero(mdp.P[s, a] > 0)
    assert len(set(np.round(mdp.R[s, a, outcomes], 9))) > 1
    np.testing.assert_allclose(mdp.expected_reward()[s, a], mdp.P[s, a] @ mdp.R[s, a])
    # the same pair under a model that predicts only the bump: the expected reward is the bump's
    M = mdp.P.copy()
    M[s, a] = 0.0
    M[s, a, s] = 1.0
    assert mdp.expected_reward(M)[s, a] == pytest.approx(mdp.R[s, a, s]) == pytest.approx(-w.params["bump_cost"])
    # and R(s, a) broadcast is not the same world: averaging R over s' changes the optimum
    flat = FiniteMDP(mdp.P, mdp.R.mean(-1), mdp.start, mdp.terminal, mdp.horizon)
    assert flat.optimal()[1] != pytest.approx(w.optimal_value)


def test_finite_games_do_not_depend_on_the_reward_scale() -> None:
    """Advantages, the agent-reward term and its temperature are in units of the reward range, so
    scaling every reward by 10 scales every return by 10 and changes nothing else."""
    from mbrl_ros.core.finite_traps import trap_mdp

    mdp = trap_mdp(1).mdp
    big = FiniteMDP(mdp.P, 10.0 * mdp.R, mdp.start, mdp.terminal, mdp.horizon)
    for algo, formulation in (("pal", "bilevel"), ("mal-agent-reward", "bilevel"), ("mal", "practical")):
        a = run_game(mdp, algo, seed=0, formulation=formulation, iterations=4, samples_per_iteration=30)
        b = run_game(big, algo, seed=0, formulation=formulation, iterations=4, samples_per_iteration=30)
        np.testing.assert_allclose(b.policy, a.policy, atol=1e-6)
        assert b.real_return == pytest.approx(10.0 * a.real_return, rel=1e-6, abs=1e-9)
    # the old, raw return term (tau in reward units) is not scale-free
    a = run_game(mdp, "mal-agent-reward", seed=0, iterations=4, agent_reward="raw")
    b = run_game(big, "mal-agent-reward", seed=0, iterations=4, agent_reward="raw")
    assert not np.allclose(b.model, a.model, atol=1e-3)


def test_raw_agent_reward_lies_about_the_visited_tempting_pair_and_the_normalised_term_does_not() -> None:
    """trap_mdp(9): the tempting action pays 7.2 whatever the next state. The raw return term
    (summed over an 18-step episode of values up to ~100) outweighs the likelihood of the one
    pair the follower visits, so the model says the tempting action loops and pays again; the
    follower keeps taking it. Normalised, the data holds that pair and the door is found."""
    from mbrl_ros.core.finite_traps import trap_mdp

    w = trap_mdp(9)
    s, t = w.start, w.tempting_action
    raw = run_game(w.mdp, "mal-agent-reward", seed=0, iterations=15, agent_reward="raw")
    assert w.score(raw.real_return) < 0.05
    assert w.mdp.P[s, t, w.done] == 1.0 and raw.model[s, t, s] > 0.9  # the lie, on a visited pair
    assert raw.model_return > 2 * w.optimal_value
    fixed = run_game(w.mdp, "mal-agent-reward", seed=0, iterations=15)
    assert w.score(fixed.real_return) >= 0.9
    assert fixed.model[s, t, w.done] > 0.9


@pytest.mark.parametrize("index", [1, 41])
def test_on_generated_traps_mal_is_fooled_and_pal_and_both_fixes_recover(index: int) -> None:
    from mbrl_ros.core.finite_traps import trap_mdp

    w = trap_mdp(index)
    score = {algo: w.score(run_game(w.mdp, algo, seed=0, iterations=15).real_return)
             for algo in ("mal", "pal", "mal-agent-reward", "mal-noise")}
    assert score["mal"] < 0.05, score
    for algo in ("pal", "mal-agent-reward", "mal-noise"):
        assert score[algo] >= 0.9, (algo, score)
