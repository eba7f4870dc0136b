"""The referee enforces each game's update order and refuses out-of-order results."""

from __future__ import annotations

import pytest

from mbrl_ros.core.schedule import GAMES, OrderViolation, Phase, Player, Referee, game_spec


def test_paper_roles() -> None:
    pal, mal = game_spec("pal"), game_spec("mal")
    assert pal.leader is Player.POLICY and pal.follower is Player.MODEL
    assert pal.model_aggressive and not pal.policy_aggressive and pal.buffer == "fifo"
    assert mal.leader is Player.MODEL and mal.follower is Player.POLICY
    assert mal.policy_aggressive and not mal.model_aggressive and mal.buffer == "aggregate"
    assert game_spec("gda").leader is None and not game_spec("gda").policy_aggressive
    assert game_spec("br").leader is None and game_spec("br").policy_aggressive and game_spec("br").model_aggressive
    assert set(GAMES) == {"pal", "mal", "gda", "br", "mal-agent-reward", "mal-noise"}


def test_unknown_algorithm_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'.*pal"):
        game_spec("ppo")


def _play_iteration(ref: Referee) -> list[Phase]:
    """Drive one iteration by answering whatever phase the referee is in, with correct versions."""
    seen = []
    start = ref.iteration
    while ref.iteration == start and ref.phase is not Phase.DONE:
        phase = ref.phase
        seen.append(phase)
        if phase is Phase.COLLECT:
            ref.data_collected(ref.deployed_policy_version)
        elif phase is Phase.FIT_MODEL:
            ref.model_fitted(ref.data_policy_version)
        elif phase is Phase.IMPROVE_POLICY:
            ref.policy_improved(ref.model_version)
        elif phase is Phase.GATE:
            ref.gate_passed(ref.candidate_policy_version)
        elif phase is Phase.DEPLOY:
            ref.deployed(ref.candidate_policy_version)
    return seen


def test_pal_order_and_stale_model_refused() -> None:
    ref = Referee(game_spec("pal"))
    assert _play_iteration(ref) == [Phase.COLLECT]  # initial data
    assert ref.phase is Phase.FIT_MODEL
    # PAL: a policy step before the model best-responds to the newest data is refused.
    with pytest.raises(OrderViolation, match="improve_policy result in phase fit_model"):
        ref.policy_improved(ref.model_version)
    ref.model_fitted(0)
    with pytest.raises(OrderViolation, match="stale model"):
        ref.policy_improved(ref.model_version - 1)
    ref.policy_improved(ref.model_version)
    ref.gate_passed(1)
    ref.deployed(1)
    # data of the old policy is refused once v1 is deployed
    with pytest.raises(OrderViolation, match="policy v0, but v1 is deployed"):
        ref.data_collected(0)
    ref.data_collected(1)
    assert ref.iteration == 2 and ref.phase is Phase.FIT_MODEL


def test_mal_order_and_model_before_newest_data_refused() -> None:
    ref = Referee(game_spec("mal"))
    assert _play_iteration(ref) == [Phase.COLLECT, Phase.FIT_MODEL]  # M_0 on N_init samples
    assert _play_iteration(ref) == [Phase.IMPROVE_POLICY, Phase.GATE, Phase.DEPLOY, Phase.COLLECT, Phase.FIT_MODEL]
    # iteration 2: after deploying v2 the model may not be fitted on v1's data only
    ref.policy_improved(ref.model_version)
    ref.gate_passed(2)
    ref.deployed(2)
    with pytest.raises(OrderViolation, match="fit_model result in phase collect"):
        ref.model_fitted(1)
    ref.data_collected(2)
    with pytest.raises(OrderViolation, match="newest data is from v2"):
        ref.model_fitted(1)
    ref.model_fitted(2)


def test_gda_policy_step_uses_model_of_same_iteration() -> None:
    ref = Referee(game_spec("gda"))
    _play_iteration(ref)
    m_k = ref.model_version
    assert _play_iteration(ref)[:2] == [Phase.IMPROVE_POLICY, Phase.FIT_MODEL]
    assert ref.model_version == m_k + 1


def test_rejected_policy_is_never_deployed() -> None:
    ref = Referee(game_spec("pal"))
    ref.data_collected(0)
    ref.model_fitted(0)
    v = ref.policy_improved(ref.model_version)
    ref.gate_failed(v)
    assert ref.phase is Phase.COLLECT and ref.deployed_policy_version == 0
    with pytest.raises(OrderViolation):
        ref.data_collected(v)  # the rejected candidate never ran
    ref.data_collected(0)


def test_max_iterations_ends_the_game() -> None:
    ref = Referee(game_spec("pal"), max_iterations=2)
    for _ in range(3):
        _play_iteration(ref)
    assert ref.phase is Phase.DONE and ref.iteration == 2
