"""A deployed policy or a model that never arrived is asked for again (``mbrl_ros.nodes.resend``).

The deployed policy and the model travel once on latched depth-1 topics; a message of another
writer that arrives before the reader took the real one replaces it (a rogue's policy did so in
``test_ros_rogue``, and the collector waited for the real one until the test timed out). Each
test here plays the other side itself and withholds the message, as if it had been lost:

1. a collector whose game state names policy v2 it never received asks on
   ``/mbrl/policy/deployed/resend`` and, once sent, collects episodes of v2;
2. a policy improver whose request names model v1 it never received asks on
   ``/mbrl/model/resend`` and, once sent, answers the request;
3. the coordinator sends its deployed policy again on request (the identical signed message),
   at most once per second, and not a version it does not hold.
"""

from __future__ import annotations

from typing import Optional

import pytest

pytest.importorskip("rclpy")

from ros_harness import TINY_GAME, Graph, Probe, diagnostics_of, game_params  # noqa: E402

from mbrl_ros import security, wire  # noqa: E402

pytestmark = pytest.mark.ros
TASK_ID = "dclaw-turn-fixed"


def _state(**kw) -> wire.GameState:
    fields = dict(
        algo="pal", task_id=TASK_ID, iteration=1, phase="collect", model_version=0, policy_version=2,
        deployed_policy_version=2, candidate_policy_version=None, data_policy_version=0, samples=0,
        sample_budget=100000, round_samples=0, round_target=400, round_random_samples=0, round_random_target=0,
        behavior="policy", collect=True, estop=False, done=False, request=None, eval_success=None,
        success_curve=(), wall_s=1.0)
    fields.update(kw)
    return wire.GameState(**fields)


def _policy_onnx(version: int) -> bytes:
    import torch

    torch.set_num_threads(1)
    from mbrl_ros.core.networks import GaussianMLPPolicy
    from mbrl_ros.core.onnx_export import export_policy_onnx
    from mbrl_ros.tasks import get_task

    info = get_task(TASK_ID).info
    return export_policy_onnx(GaussianMLPPolicy(info.obs_dim, info.act_dim, [16, 16]), info, 1, version)


def test_a_collector_asks_again_for_the_deployed_policy_it_never_received(graph: Graph, probe: Probe) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String, UInt8MultiArray, UInt32

    from mbrl_ros.nodes import GAME_STATE, POLICY_DEPLOYED, POLICY_DEPLOYED_RESEND, TRANSITIONS
    from mbrl_ros.nodes import latched_qos, resend_qos, transitions_qos

    signer = graph.signer()  # this test is the coordinator
    graph.start("collector", "collector_0", {"task": TASK_ID, "robot_id": "sim0", "seed": 1, "resend_after_s": 0.5})
    asks = probe.subscribe(UInt32, POLICY_DEPLOYED_RESEND, resend_qos())
    episodes = probe.subscribe(UInt8MultiArray, TRANSITIONS, transitions_qos())
    diags = probe.subscribe(DiagnosticArray, "/diagnostics", 100)
    pub_state = probe.publisher(String, GAME_STATE, latched_qos())
    pub_policy = probe.publisher(UInt8MultiArray, POLICY_DEPLOYED, latched_qos())
    state = String(data=security.sign_game_state(signer, _state().to_json(), 0))

    def publish_state() -> None:  # the coordinator's state comes every second; the policy never did
        pub_state.publish(state)

    probe.spin_until(lambda: (publish_state(), probe.spin_for(0.3), bool(asks))[-1], 90,
                     "the collector asking for policy v2")
    assert {m.data for _t, m in asks} == {2} and not episodes  # nothing collected without the policy
    probe.spin_until(lambda: int((diagnostics_of(diags, "collector_0") or {}).get("policy_resend_requests", 0)) >= 1,
                     10, "the collector counting its request")

    data = wire.pack_policy(_policy_onnx(2), task_id=TASK_ID, policy_version=2, model_version=0, iteration=1,
                            approved=True, published_at=0.0)
    pub_policy.publish(wire.to_msg(signer.sign_record(data)))  # the coordinator answers the request

    def of_v2() -> list:
        return [e for e in (wire.unpack_episode(wire.from_msg(m)) for _t, m in episodes) if e.policy_version == 2]

    probe.spin_until(lambda: (publish_state(), probe.spin_for(0.2), len(of_v2()) >= 2)[-1], 90,
                     "episodes of the policy sent again")
    n_asked = len(asks)
    probe.spin_for(1.5)
    assert len(asks) == n_asked  # it has the policy: no more requests


def test_a_policy_improver_asks_again_for_the_model_its_request_names(graph: Graph, probe: Probe) -> None:
    import torch
    from std_msgs.msg import String, UInt8MultiArray, UInt32

    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.nodes import GAME_STATE, MODEL, MODEL_RESEND, POLICY_CANDIDATE, TRANSITIONS
    from mbrl_ros.nodes import latched_qos, resend_qos, transitions_qos
    from mbrl_ros.tasks import get_task
    from test_ros_nodes import _episode

    graph.start("policy_improver", "policy_improver", game_params(torch_threads=1, resend_after_s=0.5))
    asks = probe.subscribe(UInt32, MODEL_RESEND, resend_qos())
    candidates = probe.subscribe(UInt8MultiArray, POLICY_CANDIDATE, latched_qos())
    pub_m = probe.publisher(UInt8MultiArray, MODEL, latched_qos())
    pub_s = probe.publisher(String, GAME_STATE, latched_qos())
    pub_t = probe.publisher(UInt8MultiArray, TRANSITIONS, transitions_qos())
    probe.spin_until(lambda: bool(candidates) and pub_t.get_subscription_count() > 0, 90,
                     "the policy improver's initial policy")
    episodes = [_episode(i) for i in range(2)]
    for ep in episodes:
        pub_t.publish(wire.to_msg(wire.pack_episode(ep)))
    request = wire.ImprovePolicyRequest(id="improve-i1-p1", model_version=1, n_steps=1, policy_version=1,
                                        base_policy_version=0, episode_ids=tuple(e.episode_id for e in episodes))
    state = String(data=_state(phase="improve_policy", model_version=1, policy_version=0, deployed_policy_version=0,
                               collect=False, request=request).to_json())
    probe.spin_until(lambda: (pub_s.publish(state), probe.spin_for(0.3), bool(asks))[-1], 60,
                     "the policy improver asking for model v1")
    assert {m.data for _t, m in asks} == {1}

    torch.set_num_threads(1)
    player = ModelPlayer(get_task(TASK_ID), load_config("pal", TASK_ID, TINY_GAME))
    pub_m.publish(wire.to_msg(wire.pack_model(player.to_bytes(), task_id=TASK_ID, model_version=1, iteration=1,
                                              data_policy_version=0, request_id="fit-i1-m1")))

    def answer() -> Optional[dict]:
        headers = (wire.peek_header(wire.from_msg(m)) for _t, m in candidates)
        return next((h for h in headers if h.get("request_id") == request.id), None)

    probe.spin_until(lambda: answer() is not None, 90, "the improvement on the model sent again")
    assert (answer() or {}).get("model_version") == 1


def test_the_coordinator_sends_its_deployed_policy_again_on_request(graph: Graph, probe: Probe) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String, UInt8MultiArray, UInt32

    from mbrl_ros.nodes import GAME_STATE, POLICY_DEPLOYED, POLICY_DEPLOYED_RESEND, latched_qos, resend_qos

    # no collector and no model learner: the coordinator gates and deploys v0, then waits for data
    graph.start("game_coordinator", "game_coordinator", game_params(gate_model_horizon=3, gate_probe_size=32))
    graph.start("policy_improver", "policy_improver", game_params(torch_threads=1))
    states = probe.subscribe(String, GAME_STATE, latched_qos())
    deployed = probe.subscribe(UInt8MultiArray, POLICY_DEPLOYED, latched_qos())
    diags = probe.subscribe(DiagnosticArray, "/diagnostics", 100)
    ask = probe.publisher(UInt32, POLICY_DEPLOYED_RESEND, resend_qos())

    def deployed_version() -> int:
        import json

        return json.loads(states[-1][1].data).get("deployed_policy_version", -1) if states else -1

    probe.spin_until(lambda: deployed_version() == 0 and len(deployed) == 1 and ask.get_subscription_count() > 0,
                     120, "policy v0 deployed")
    first = bytes(deployed[0][1].data)
    ask.publish(UInt32(data=0))
    probe.spin_until(lambda: len(deployed) == 2, 20, "policy v0 sent again")
    assert bytes(deployed[1][1].data) == first  # the same signed message
    ask.publish(UInt32(data=0))  # within a second of the last: not sent (a flood of requests stays one)
    ask.publish(UInt32(data=7))  # a version it does not hold
    probe.spin_for(0.5)
    assert len(deployed) == 2

    def counts() -> dict:
        return diagnostics_of(diags, "game_coordinator") or {}

    probe.spin_until(lambda: int(counts().get("policy_resend_not_held", 0)) >= 1
                     and int(counts().get("policy_resend_rate_limited", 0)) >= 1, 20, "the refused requests counted")
    assert int(counts().get("policy_resends", 0)) == 1
