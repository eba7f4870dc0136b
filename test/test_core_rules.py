"""The game's rulebook (mbrl_ros.core.rules) and the policy gate (mbrl_ros.core.gate), without ROS.

The ROS coordinator and ``mbrl-ros train`` both call these; test_ros_equivalence checks that
the two play the same game end to end.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mbrl_ros.core import gate as gate_module
from mbrl_ros.core.config import GameConfig
from mbrl_ros.core.gate import GateSettings, PolicyGate, joint_slots, predicted_violations, probe_rows
from mbrl_ros.core.rules import CollectionRound, GameRules, IterationMetrics, success_held
from mbrl_ros.tasks import get_task


def _rules(algo: str = "pal", **kw) -> GameRules:
    cfg = GameConfig(algo=algo, samples=1000, n_init=400, samples_per_iter=200, **kw)
    return GameRules.of(cfg, horizon=40)


def test_rounds_budget_and_evaluation_follow_the_configuration() -> None:
    r = _rules(eval_every=2)
    assert (r.round_target(0), r.round_target(1), r.random_target(200)) == (400, 200, 0)
    assert r.budget_allows_iteration(800, 1) and not r.budget_allows_iteration(801, 1)
    assert r.evaluates(0, 400) and not r.evaluates(1, 600) and r.evaluates(2, 800)
    assert r.evaluates(3, 1000)  # the last iteration the budget allows is always evaluated
    assert r.npg_steps() == r.cfg.npg_steps_conservative and r.model_fit_aggressive(5)  # PAL: policy leads
    mal = _rules("mal")
    assert mal.npg_steps() == mal.cfg.npg_steps_aggressive and mal.model_fit_aggressive(0)
    assert not mal.model_fit_aggressive(1)
    assert r.eval_seeds(3) == mal.eval_seeds(3)  # fixed by the task, the same for every game


def test_random_noise_rounds_add_the_random_fraction_in_whole_episodes() -> None:
    r = _rules("mal-noise", alpha=0.75)
    assert r.random_target(200) == 67  # n (1 - alpha) / alpha
    assert r.whole_episodes(67) == 80
    assert r.budget_allows_iteration(1000 - 280, 1) and not r.budget_allows_iteration(1000 - 279, 1)


def test_the_game_stops_once_success_held() -> None:
    r = _rules(stop_success=0.9, stop_success_iters=2)
    history = [{"eval_success": 1.0}, {"eval_success": None}, {"eval_success": 0.95}]
    assert success_held(history, r.cfg)
    ok, why = r.may_start_iteration(400, 3, history)
    assert not ok and "stop_success" in why
    assert r.may_start_iteration(400, 3, history[:1])[0]


def test_a_round_counts_only_what_it_asks_for() -> None:
    rnd = CollectionRound(target=80, random_target=40)
    assert not rnd.count("a", "policy", 2, 40, -1.0, False, deployed_version=3)  # stale policy version
    assert not rnd.count("b", "random", -1, 40, 0.0, False, deployed_version=3)  # random data comes after
    assert rnd.count("c", "policy", 3, 40, -2.0, True, deployed_version=3)
    assert rnd.count("d", "policy", 3, 40, -4.0, False, deployed_version=3)
    assert rnd.behavior == "random" and not rnd.complete
    assert rnd.count("e", "random", -1, 40, 0.0, False, deployed_version=3) and rnd.complete
    assert rnd.episode_ids == ["c", "d", "e"]
    assert rnd.summary() == {"collect_return": -3.0, "collect_success": 0.5, "collected": 120, "collected_random": 40}


def test_metrics_rows_have_one_schema_and_the_leader_from_the_rules() -> None:
    row = IterationMetrics.from_fields(_rules(), 2, 800, J_model=-5.0, model_objective=0.3, unknown_key=1).to_row()
    assert row["leader"] == "policy" and row["leader_objective"] == -5.0 and "unknown_key" not in row
    mal = IterationMetrics.from_fields(_rules("mal"), 2, 800, J_model=-5.0, model_objective=0.3).to_row()
    assert mal["leader"] == "model" and mal["leader_objective"] == 0.3 and set(mal) == set(row)


# -- the gate -------------------------------------------------------------------------------
TASK = get_task("dclaw-turn-fixed")


def _gate(**kw) -> PolicyGate:
    return PolicyGate(TASK, GateSettings(**kw), on_robot=False)


def _probes(n: int = 32) -> np.ndarray:
    return probe_rows(TASK, None, n, np.random.default_rng(0))


def test_gate_refuses_wrong_contract_bad_noise_and_unbounded_actions() -> None:
    od, ad = TASK.info.obs_dim, TASK.info.act_dim
    ok_act = lambda o: np.zeros((len(o), ad))
    g = _gate()
    assert g.check(ok_act, od, ad, [-1.0] * ad, _probes()).ok
    assert "contract" in g.check(ok_act, od + 1, ad, None, _probes()).reason
    assert "log std" in g.check(ok_act, od, ad, [2.0] * ad, _probes()).reason
    assert "log std" in g.check(ok_act, od, ad, [float("nan")] * ad, _probes()).reason
    assert "outside [-1, 1]" in g.check(lambda o: np.full((len(o), ad), 1.5), od, ad, None, _probes()).reason
    assert "non-finite" in g.check(lambda o: np.full((len(o), ad), np.nan), od, ad, None, _probes()).reason


class _FakeEnsemble(torch.nn.Module):
    """Stands in for the ensemble: ``model_step`` below decides what each member predicts."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.ensemble_size = members
        self.w = torch.nn.Parameter(torch.zeros(1))


def _members_predict(offsets: list[float]):
    """A fake model step: member e puts every joint at ``qpos_high + offsets[e]``."""
    idx = joint_slots(TASK)
    hi = torch.as_tensor(TASK.limits.qpos_high, dtype=torch.float32)

    def step(ensemble, task, obs, action, aux):
        nxt = obs.clone()
        for e, off in enumerate(offsets):
            nxt[e][..., idx] = hi + off
        return nxt, aux, torch.zeros(obs.shape[:2])

    return step


def test_model_check_counts_violations_the_members_agree_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import mbrl_ros.core.model_rollout as model_rollout

    act = lambda o: np.zeros((len(o), TASK.info.act_dim))
    probes = _probes()
    monkeypatch.setattr(model_rollout, "model_step", _members_predict([0.5, 0.5, 0.6, 0.5]))
    assert predicted_violations(_FakeEnsemble(4), TASK, act, probes, 3, margin=0.1) == 1.0  # all agree: slamming
    monkeypatch.setattr(model_rollout, "model_step", _members_predict([1.2, -1.0, 1.2, -1.0]))
    agree = predicted_violations(_FakeEnsemble(4), TASK, act, probes, 3, margin=0.1, confidence=1.0)
    assert agree == 0.0  # mean beyond the limit, but the members disagree by more: model error
    assert predicted_violations(_FakeEnsemble(4), TASK, act, probes, 3, margin=0.1, confidence=0.0) == 1.0


def test_model_check_aborts_on_a_robot_and_warns_in_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    import mbrl_ros.core.model_rollout as model_rollout

    monkeypatch.setattr(model_rollout, "model_step", _members_predict([0.5, 0.5]))
    od, ad = TASK.info.obs_dim, TASK.info.act_dim
    act = lambda o: np.zeros((len(o), ad))
    settings = GateSettings(model_horizon=2)
    robot = PolicyGate(TASK, settings, on_robot=True).check(act, od, ad, None, _probes(), ensemble=_FakeEnsemble(2),
                                                            deployed_violation=0.0)
    assert not robot.ok and "beyond the joint limits" in robot.reason
    sim = PolicyGate(TASK, settings, on_robot=False).check(act, od, ad, None, _probes(), ensemble=_FakeEnsemble(2),
                                                           deployed_violation=0.0)
    assert sim.ok and sim.warning is not None
    # a deployed policy predicted just as bad: the candidate is no worse, it passes even on a robot
    same = PolicyGate(TASK, settings, on_robot=True).check(act, od, ad, None, _probes(), ensemble=_FakeEnsemble(2),
                                                           deployed_violation=1.0)
    assert same.ok and same.warning is None
    assert gate_module.SEVERITIES == ("auto", "abort", "warn", "off")


def test_the_in_process_loop_gates_its_candidates_and_rolls_back_a_refused_one() -> None:
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.core.train import make_world

    cfg = GameConfig(algo="pal", task_id="pointmass", samples=140, n_init=40, samples_per_iter=20, ensemble_size=2,
                     model_hidden=[16], policy_hidden=[8], value_hidden=[8], npg_trajectories=8, eval_episodes=1,
                     model_min_steps=20, model_max_steps=20, gate_max_log_std=-0.5, policy_init_log_std=-1.0)
    game = StackelbergGame(cfg, make_world("pointmass"), make_world("pointmass"))
    game.play_iteration()  # initial data, deployed v0
    with torch.no_grad():
        game.policy_player.policy.log_std.fill_(0.0)  # a candidate whose exploration the gate refuses
    deployed = game.deployed
    row = game.play_iteration()
    assert row["gate_passed"] is False and "log std" in row["gate_warning"]
    assert game.deployed is deployed and game.referee.deployed_policy_version == 0
    assert float(game.policy_player.policy.log_std.detach().max()) == pytest.approx(-1.0)  # rolled back to the deployed policy
