"""``mbrl-ros monitor``'s view: phase, budget, versions, success sparkline, per-node health."""

from __future__ import annotations

from mbrl_ros.commands.monitor import render, sparkline


def test_sparkline_maps_success_to_bars_and_gaps() -> None:
    assert sparkline([0.0, 0.5, 1.0, None, 2.0, -1.0]) == "▁▅█ █▁"
    assert len(sparkline([0.1] * 500, width=60)) == 60


def test_render_shows_game_and_node_health() -> None:
    state = {"algo": "pal", "task_id": "dclaw-turn-fixed", "iteration": 3, "phase": "fit_model", "samples": 1000,
             "sample_budget": 2000, "collect": False, "estop": True, "done": False, "deployed_policy_version": 2,
             "candidate_policy_version": None, "model_version": 3, "success_curve": [0.0, 0.25, None, 1.0]}
    nodes = {
        "game_coordinator": {"level": 0, "message": "iteration 3", "t": 100.0, "values": {"samples": "1000"}},
        "model_learner": {"level": 1, "message": "rejected episode: hash", "t": 100.0,
                          "values": {"rejected_hash": "2", "rejected_size": "1", "buffer_transitions": "400"}},
        "collector_0": {"level": 0, "message": "ok", "t": 90.0, "values": {}},
    }
    text = render(state, nodes, now=101.0, stale_s=5.0, domain="42")
    assert "pal on dclaw-turn-fixed" in text and "iteration 3" in text and "phase fit_model" in text
    assert "E-STOP" in text and "1000/2000 [###############...............]" in text
    assert "policy deployed v2" in text and "model v3" in text and "▁▃ █" in text and "last 1.00" in text
    lines = {line.split()[1]: line.split()[0] for line in text.splitlines() if line.startswith("  ")}
    assert lines == {"collector_0": "STALE", "game_coordinator": "OK", "model_learner": "WARN"}
    assert "rejected=3" in text and "buffer_transitions=400" in text
    assert "no /mbrl/game_state yet" in render(None, {}, now=0.0)
