"""The two MAL fixes played by the node graph, as the in-process loop plays them.

- MAL + random noise: every collection round adds ``N (1 - alpha) / alpha`` samples of the
  uniform random policy, collected by the collectors on the coordinator's request, tagged
  ``behavior: random`` (policy version -1) in the episode header, counted in the sample budget,
  and the model learner's aggregate buffer holds them in the configured proportion.
- MAL + agent reward: the model learner fits against the torch weights of the policy the fit
  request names (published by the policy improver on ``/mbrl/policy/weights``), waits for them,
  and refuses weights that do not fit the policy's architecture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_harness import TINY_GAME, Graph, Probe, diagnostics_of, game_params  # noqa: E402

from mbrl_ros import wire  # noqa: E402

pytestmark = pytest.mark.ros
TASK_ID = "dclaw-turn-fixed"


def test_mal_noise_graph_collects_random_policy_data_in_the_configured_proportion(tmp_path: Path) -> None:
    from std_msgs.msg import UInt8MultiArray

    from mbrl_ros.nodes import TRANSITIONS
    from mbrl_ros.nodes.recording import read_ros_messages
    from mbrl_ros.tasks import get_task

    g = Graph(tmp_path)
    run = tmp_path / "run"
    mcap = run / "record" / "transitions.mcap"
    ckpt = run / "model_learner"
    # alpha = 0.5: as many random-policy samples as policy samples in every round (80+80, then 40+40)
    common = dict(overrides=["alpha=0.5", "samples=320"], log_dir=str(run))
    try:
        coord = g.start("game_coordinator", "game_coordinator",
                        game_params("mal-noise", mcap_path=str(mcap), gate_model_horizon=3, gate_probe_size=32, **common))
        # the players get the record as the launched graph gives it (mbrl_ros.graph): an episode published
        # before a player's subscription matched the collector's writer is looked up there
        g.start("model_learner", "model_learner",
                game_params("mal-noise", checkpoint_dir=str(ckpt), mcap_path=str(mcap), **common))
        g.start("policy_improver", "policy_improver", game_params("mal-noise", mcap_path=str(mcap), **common))
        g.start("collector", "collector_0", {"task": TASK_ID, "robot_id": "sim0", "seed": 5})
        coord.wait(timeout=150)
        assert coord.returncode == 0, g.log("game_coordinator")[-3000:]
        g.kill("model_learner", 2)  # SIGINT: a clean exit checkpoints the final buffer
    finally:
        g.close()

    summary = json.loads((run / "summary.json").read_text())
    assert summary["samples"] == 320 and summary["iterations"] == 2  # random samples count in the budget
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["collected_random"] for h in history] == [80, 40, 40]
    assert [h["collected"] for h in history] == [160, 80, 80]

    # the world's record: random episodes are tagged and come from random policies (noise_policy mlp: a
    # fresh random network per episode, core.exploration): wide, persistent actions, each episode its own
    task = get_task(TASK_ID)
    episodes = [wire.unpack_episode(wire.from_msg(m), task) for m, _t in read_ros_messages(mcap, TRANSITIONS, UInt8MultiArray)]
    rand = [e for e in episodes if e.behavior == "random"]
    pol = [e for e in episodes if e.behavior == "policy"]
    assert rand and all(e.policy_version == -1 for e in rand) and all(e.policy_version >= 0 for e in pol)
    a_rand = np.concatenate([e.actions for e in rand])
    a_pol = np.concatenate([e.actions for e in pol])
    assert a_rand.std() > 0.3 and np.abs(a_rand).max() > 0.9
    per_episode = np.array([e.actions.mean(0) for e in rand])
    assert per_episode.std(0).mean() > 0.1  # a different random policy in every episode
    assert a_pol.std() < 0.5

    # the model player's aggregate buffer: exactly the published episodes, half of the transitions random
    meta = json.loads((ckpt / "buffer.json").read_text())["episodes"]
    assert sorted(m["episode_id"] for m in meta) == sorted(e.episode_id for e in episodes)
    random_steps = sum(m["length"] for m in meta if m["policy_version"] == -1)
    assert random_steps / sum(m["length"] for m in meta) == pytest.approx(0.5, abs=40 / 320 + 1e-9)
    assert "% random-policy data" in g.log("model_learner")


def _game_state(request: dict, **fields) -> str:
    """A full, valid game state in phase fit_model carrying ``request`` (as the coordinator sends)."""
    body = {
        "algo": "mal-agent-reward", "task_id": TASK_ID, "iteration": 0, "phase": "fit_model", "model_version": 0,
        "policy_version": 0, "deployed_policy_version": 0, "candidate_policy_version": None,
        "data_policy_version": 0, "samples": 80, "sample_budget": 1000, "round_samples": 0, "round_target": 80,
        "round_random_samples": 0, "round_random_target": 0, "behavior": "policy", "collect": False,
        "estop": False, "done": False, "request": request, "eval_success": None, "success_curve": [], "wall_s": 1.0,
        "noise_policy": "mlp", "explore_noise_color": 0.0, "explore_min_std": 0.0, "explore_mean_fraction": 0.0,
    }
    body.update(fields)
    return wire.GameState.from_json(wire.pack_json("game_state", body)).to_json()  # validated as a consumer would


def test_agent_reward_learner_fits_against_the_requested_policy_weights(tmp_path: Path) -> None:
    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String, UInt8MultiArray

    from mbrl_ros.core.config import load_config
    from mbrl_ros.nodes import GAME_STATE, MODEL, POLICY_WEIGHTS, TRANSITIONS, latched_qos, transitions_qos, weights_qos
    from mbrl_ros.nodes.policy_weights import new_policy, policy_to_bytes
    from mbrl_ros.tasks import get_task

    torch.set_num_threads(1)
    g = Graph(tmp_path)
    probe = Probe(g.domain_id)
    try:
        g.start("model_learner", "model_learner", game_params("mal-agent-reward"))
        diags = probe.subscribe(DiagnosticArray, "/diagnostics", 50)
        models = probe.subscribe(UInt8MultiArray, MODEL, latched_qos())
        pub_t = probe.publisher(UInt8MultiArray, TRANSITIONS, transitions_qos())
        pub_s = probe.publisher(String, GAME_STATE, latched_qos())
        pub_w = probe.publisher(UInt8MultiArray, POLICY_WEIGHTS, weights_qos())
        probe.spin_until(lambda: pub_w.get_subscription_count() > 0 and pub_t.get_subscription_count() > 0, 90,
                         "the learner's subscriptions (it subscribes to the weights only for agent reward)")

        rng = np.random.default_rng(0)
        ids = []
        for i in range(2):
            rec = wire.EpisodeRecord(robot_id="test", episode_id=f"test-s-{i:06d}", sequence=i, policy_version=0,
                                     task_id=TASK_ID, obs=rng.uniform(-0.3, 0.3, (41, 21)),
                                     actions=rng.uniform(-1, 1, (40, 9)), rewards=rng.standard_normal(40) - 5.0,
                                     terminated=False, stream="s", extra={"purpose": "train"},
                                     aux=rng.uniform(-1, 1, (41, 9)))
            pub_t.publish(wire.to_msg(wire.pack_episode(rec)))
            ids.append(rec.episode_id)
        req = {"kind": "fit_model", "id": "fit-i0-m1", "aggressive": True, "model_version": 1, "policy_version": 1,
               "episode_ids": ids}
        pub_s.publish(String(data=_game_state(req)))

        # no weights of policy v1 yet: the learner waits (it never falls back to the plain loss)
        probe.spin_until(lambda: "weights of policy v1" in (diagnostics_of(diags, "model_learner") or {}).get("_message", ""),
                         30, "the learner waiting for the weights")
        task = get_task(TASK_ID)
        cfg = load_config("mal-agent-reward", TASK_ID, TINY_GAME)
        wrong = load_config("mal-agent-reward", TASK_ID, TINY_GAME + ["policy_hidden=[8,8]"])
        pub_w.publish(wire.to_msg(wire.pack_policy_weights(policy_to_bytes(new_policy(task, wrong)), task_id=TASK_ID,
                                                           policy_version=1)))
        probe.spin_until(lambda: "rejected_policy_weights_contract" in (diagnostics_of(diags, "model_learner") or {}),
                         30, "the rejection of weights of another architecture")
        probe.spin_for(0.3)
        assert models == [], "the learner fitted without the requested policy"
        for version in (0, 1):  # the requested one among others
            pub_w.publish(wire.to_msg(wire.pack_policy_weights(policy_to_bytes(new_policy(task, cfg)), task_id=TASK_ID,
                                                               policy_version=version)))
        probe.spin_until(lambda: len(models) > 0, 60, "the model")
        blob = wire.unpack_model(wire.from_msg(models[-1][1]), expect_task=TASK_ID)
        assert blob.header["request_id"] == "fit-i0-m1" and blob.model_version == 1
        assert blob.header["objective"] == "agent_reward" and blob.header["fit_policy_version"] == 1
        assert blob.header["loss"] is not None and blob.header["n_transitions"] == 80
        # (the log line follows the publication: wait for it before stopping the node)
        probe.spin_until(lambda: "agent_reward against policy v1" in g.log("model_learner"), 20, "the learner's log line")
    finally:
        probe.close()
        g.close()
