"""PAL, MAL, GDA and BR make their moves in their defined order (instrumented players)."""

from __future__ import annotations

import pytest
import torch

from mbrl_ros.core.config import load_config
from mbrl_ros.core.schedule import Phase
from mbrl_ros.core.stackelberg import StackelbergGame
from mbrl_ros.tasks.pointmass import PointMassEnv

torch.set_num_threads(1)

TINY = [
    "n_init=40", "samples_per_iter=20", "samples=1000", "max_iterations=2", "model_hidden=[16]",
    "model_epochs_aggressive=5", "model_epochs_conservative=1", "model_min_steps=5", "npg_trajectories=8",
    "npg_steps_aggressive=3", "npg_steps_conservative=1", "eval_episodes=1", "buffer_size=60", "cg_iters=3",
]


def play(algo: str, extra: tuple[str, ...] = ()) -> tuple[list[tuple], StackelbergGame]:
    """Play two iterations, recording each player's calls and what they were given."""
    game = StackelbergGame(load_config(algo, "pointmass", [*TINY, *extra]), PointMassEnv(), PointMassEnv())
    calls: list[tuple] = []
    fit, improve, add = game.model_player.fit, game.policy_player.improve, game.buffer.add_episode
    state = {"fits": 0, "data": set(), "model_data": None}

    def fit_spy(buffer, aggressive, policy=None):
        calls.append(("fit", "aggressive" if aggressive else "conservative", max(state["data"])))
        state["fits"] += 1
        state["model_data"] = max(ep.policy_version for ep in buffer.episodes)
        return fit(buffer, aggressive, policy)

    def improve_spy(ensemble, start_obs, n_steps, buffer_obs=None):
        # which model (fit count) and whose data that model has seen
        calls.append(("improve", n_steps, state["fits"], state["model_data"]))
        return improve(ensemble, start_obs, n_steps, buffer_obs)

    def add_spy(ep):
        if not calls or calls[-1][:2] != ("collect", ep.policy_version):
            calls.append(("collect", ep.policy_version))
        state["data"].add(ep.policy_version)
        return add(ep)

    game.model_player.fit, game.policy_player.improve, game.buffer.add_episode = fit_spy, improve_spy, add_spy
    history = game.run()
    assert [m["iteration"] for m in history] == [0, 1, 2]
    return calls, game


def test_pal_order() -> None:
    calls, game = play("pal")
    assert calls == [
        ("collect", 0),
        # iteration 1: the model best-responds to the newest data, then K conservative NPG steps in it
        ("fit", "aggressive", 0), ("improve", 1, 1, 0), ("collect", 1),
        ("fit", "aggressive", 1), ("improve", 1, 2, 1), ("collect", 2),
    ]
    assert game.buffer.kind == "fifo"


@pytest.mark.parametrize("algo", ["mal", "mal-agent-reward"])
def test_mal_order(algo: str) -> None:
    calls, game = play(algo)
    assert calls == [
        ("collect", 0), ("fit", "aggressive", 0),  # M_0 on N_init samples
        # iteration k: the policy best-responds to M_k, its data is aggregated, the model takes a small step
        ("improve", 3, 1, 0), ("collect", 1), ("fit", "conservative", 1),
        ("improve", 3, 2, 1), ("collect", 2), ("fit", "conservative", 2),
    ]
    assert game.buffer.kind == "aggregate" and len(game.buffer) == 80


@pytest.mark.parametrize("algo, policy_steps, model_fit", [("gda", 1, "conservative"), ("br", 3, "aggressive")])
def test_simultaneous_orders(algo: str, policy_steps: int, model_fit: str) -> None:
    calls, _ = play(algo)
    # both players move from iteration-k quantities: pi_{k+1} in M_k, M_{k+1} on the data of pi_k
    assert calls == [
        ("collect", 0), ("fit", "aggressive", 0),
        ("improve", policy_steps, 1, 0), ("fit", model_fit, 0), ("collect", 1),
        ("improve", policy_steps, 2, 0), ("fit", model_fit, 1), ("collect", 2),
    ]


def test_mal_noise_adds_counted_random_data() -> None:
    calls, game = play("mal-noise", ("n_init=60", "samples_per_iter=60"))  # 20 random per 60: whole episodes
    # alpha = 0.75: for every N policy samples, N (1 - alpha) / alpha random-policy samples
    assert ("collect", -1) in calls
    versions = [ep.policy_version for ep in game.buffer.episodes]
    n_random = sum(len(ep) for ep in game.buffer.episodes if ep.policy_version == -1)
    n_policy = sum(len(ep) for ep in game.buffer.episodes if ep.policy_version >= 0)
    assert n_random / (n_random + n_policy) == pytest.approx(0.25, abs=0.05)
    assert game.samples == len(game.buffer) and -1 in versions


def test_mal_noise_stays_within_its_sample_budget() -> None:
    """Random data is collected as whole episodes (17 asked -> 20 played): the budget check counts that."""
    cfg = load_config("mal-noise", "pointmass", [*TINY, "n_init=60", "samples_per_iter=50", "samples=230",
                                                 "max_iterations=0"])
    game = StackelbergGame(cfg, PointMassEnv(), PointMassEnv())
    history = game.run()
    # each iteration: 60 policy + 20 random samples (n_init 60 gets its 20 random too); a third
    # iteration would end at 240 > 230 (counting the 67 samples asked for, it looked affordable)
    assert [m["samples"] for m in history] == [80, 160]
    assert game.samples <= cfg.samples


def test_gate_keeps_a_non_finite_policy_out_of_the_world() -> None:
    game = StackelbergGame(load_config("pal", "pointmass", TINY), PointMassEnv(), PointMassEnv())
    improve = game.policy_player.improve

    def broken_improve(*args, **kwargs):
        result = improve(*args, **kwargs)
        with torch.no_grad():
            game.policy_player.policy.mean_net[0].weight.fill_(float("nan"))
        return result

    game.play_iteration()  # iteration 0: initial data
    before = {k: v.clone() for k, v in game.policy_player.policy.state_dict().items()}
    game.policy_player.improve = broken_improve
    metrics = game.play_iteration()
    assert game.referee.deployed_policy_version == 0 and metrics["policy_version"] == 0
    after = game.policy_player.policy.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the previous policy is restored"
    assert all(ep.policy_version == 0 for ep in game.buffer.episodes)  # data still from the old policy


@pytest.mark.parametrize("algo", ["pal", "mal"])
def test_model_loss_new_data_is_the_models_error_before_it_sees_the_round(algo: str) -> None:
    """model_loss_new_data: none before the first fit; afterwards the loss of the model as it was
    when the round was collected, on the deployed policy's new episodes (data it was not fitted on)."""
    import copy

    from mbrl_ros.core.buffers import EpisodeBuffer

    game = StackelbergGame(load_config(algo, "pointmass", TINY), PointMassEnv(), PointMassEnv())
    at_collect = []

    def collect_spy(g: StackelbergGame) -> None:
        at_collect.append(copy.deepcopy(g.model_player))
        StackelbergGame.collect(g)

    game.PHASES = {**StackelbergGame.PHASES, Phase.COLLECT: collect_spy}
    rows = [game.play_iteration() for _ in range(3)]
    assert rows[0]["model_loss_new_data"] is None  # no model yet when the initial data came in
    model, row = at_collect[-1], rows[-1]
    assert model.n_fits > 0
    fresh = EpisodeBuffer("aggregate")
    for ep in game.buffer.episodes:
        if ep.episode_id.startswith("it2-v"):  # the round of iteration 2 (a FIFO may have dropped older ones)
            fresh.add_episode(ep)
    assert len(fresh) == row["collected"]
    inputs, targets, _ = model.transitions(fresh)
    assert row["model_loss_new_data"] == pytest.approx(model.loss(inputs, targets), rel=1e-6)
    # not the loss of the model fitted on them (MAL fits after collecting, PAL before)
    later = game.model_player.loss(inputs, targets)
    assert algo == "pal" or row["model_loss_new_data"] != pytest.approx(later, rel=1e-3)
