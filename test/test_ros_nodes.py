"""The nodes over real DDS (separate processes): bad input, the referee's order, the e-stop.

Each test runs its nodes on a private random ROS domain with bounded timeouts.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

pytest.importorskip("rclpy")

from ros_harness import Graph, Probe, diagnostics_of, game_params  # noqa: E402

from mbrl_ros import wire  # noqa: E402

pytestmark = pytest.mark.ros
TASK_ID = "dclaw-turn-fixed"


def _episode(i: int, version: int = 0, T: int = 40, robot: str = "test", **kw) -> wire.EpisodeRecord:
    rng = np.random.default_rng(i)
    obs = rng.uniform(-0.3, 0.3, (T + 1, 21))
    fields = dict(robot_id=robot, episode_id=f"{robot}-s-{i:06d}", sequence=i, policy_version=version, task_id=TASK_ID,
                  obs=obs, actions=rng.uniform(-1, 1, (T, 9)), rewards=rng.standard_normal(T) - 5.0, terminated=False,
                  stream="s", extra={"purpose": "train"}, aux=rng.uniform(-1, 1, (T + 1, 9)))
    fields.update(kw)
    return wire.EpisodeRecord(**fields)


def _reframe(data: bytes, payload: bytes | None = None, **changes) -> bytes:
    n = struct.unpack_from("<I", data, 4)[0]
    header, old = json.loads(data[8:8 + n]), data[8 + n:]
    payload = old if payload is None else payload
    header.update(changes)
    header.update(sha256=wire.sha256_hex(payload), payload_size=len(payload))
    head = json.dumps(header).encode()
    return wire.MAGIC + struct.pack("<I", len(head)) + head + payload


def _bad_episodes() -> dict[str, bytes]:
    good = wire.pack_episode(_episode(100))
    n = struct.unpack_from("<I", good, 4)[0]
    payload = bytearray(good[8 + n:])
    nan_payload = np.frombuffer(bytes(payload), dtype="<f4").copy()
    nan_payload[7] = np.nan
    flipped = bytearray(good)
    flipped[-3] ^= 0x55
    return {
        "schema_version": _reframe(good, schema_version=99),
        "size": wire.pack_episode(_episode(101, obs=np.zeros((41, 20)))),
        "non_finite": _reframe(good, payload=nan_payload.tobytes()),
        "oversized": _reframe(good, payload=bytes(payload) * 40, T=40 * 41),
        "truncated": good[: len(good) // 2],
        "hash": bytes(flipped),
        "task": wire.pack_episode(_episode(102, task_id="dclaw-turn-random")),
    }


def _onnx_policy(version: int, task_id: str = TASK_ID, iteration: int = 0, constant: Optional[float] = None) -> bytes:
    """A small random policy; ``constant``: one whose mean action is that value everywhere."""
    import torch

    torch.set_num_threads(1)
    from mbrl_ros.core.networks import GaussianMLPPolicy
    from mbrl_ros.core.onnx_export import export_policy_onnx
    from mbrl_ros.tasks import get_task

    info = get_task(task_id).info
    policy = GaussianMLPPolicy(info.obs_dim, info.act_dim, [16, 16])
    if constant is not None:
        last = [m for m in policy.mean_net.modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(constant)
    return export_policy_onnx(policy, info, iteration, version)


def _qos():
    from mbrl_ros.nodes import latched_qos, transitions_qos

    return latched_qos(), transitions_qos()


def test_bad_messages_are_rejected_and_the_nodes_keep_running(graph: Graph, probe: Probe, tmp_path: Path) -> None:
    """Every kind of bad input: a log line, a diagnostic, nothing in the buffer, no policy reaches a robot."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import UInt8MultiArray

    from mbrl_ros.nodes import MODEL, POLICY_CANDIDATE, POLICY_DEPLOYED, TRANSITIONS

    latched, trans = _qos()
    graph.start("model_learner", "model_learner", game_params(max_episode_bytes=200_000,
                                                              checkpoint_dir=str(tmp_path / "ckpt")))
    graph.start("game_coordinator", "game_coordinator", game_params(log_dir=str(tmp_path / "run"), gate_model_horizon=0,
                                                                    eval_in_sim=False))
    diags = probe.subscribe(DiagnosticArray, "/diagnostics", 50)
    deployed = probe.subscribe(UInt8MultiArray, POLICY_DEPLOYED, latched)
    pub_t = probe.publisher(UInt8MultiArray, TRANSITIONS, trans)
    pub_p = probe.publisher(UInt8MultiArray, POLICY_CANDIDATE, latched)
    pub_m = probe.publisher(UInt8MultiArray, MODEL, latched)
    probe.spin_until(lambda: pub_t.get_subscription_count() >= 2 and diagnostics_of(diags, "model_learner") is not None,
                     90, "both nodes up")

    bad = _bad_episodes()
    for data in bad.values():
        pub_t.publish(wire.to_msg(data))
    for i in range(2):
        pub_t.publish(wire.to_msg(wire.pack_episode(_episode(i))))
    pub_t.publish(wire.to_msg(wire.pack_episode(_episode(1))))  # a duplicate
    # policies: another task's contract, a truncated blob, an unparsable model
    kitty = wire.pack_policy(_onnx_policy(0, "dkitty-orient-random"), task_id=TASK_ID, policy_version=0,
                             model_version=0, iteration=0)
    pub_p.publish(wire.to_msg(kitty))
    pub_m.publish(wire.to_msg(b"MBRW" + b"\x00" * 20))

    def learner_done() -> bool:
        d = diagnostics_of(diags, "model_learner") or {}
        return d.get("episodes_accepted") == "2" and all(f"rejected_{r}" in d for r in bad)

    probe.spin_until(learner_done, 30, "the learner's rejection counters")
    d = diagnostics_of(diags, "model_learner")
    assert d["buffer_episodes"] == "2" and d["buffer_transitions"] == "80" and d["episodes_duplicate"] == "1"
    assert d["_level"] == 1  # WARN after rejections
    log = graph.log("model_learner")
    for reason in bad:
        assert f"{reason}:" in log, f"no log line for {reason}"

    probe.spin_until(lambda: "rejected_policy_contract" in (diagnostics_of(diags, "game_coordinator") or {}), 30,
                     "the coordinator's contract rejection")
    probe.spin_for(0.5)
    assert deployed == [], "a policy with a wrong contract reached the deployed topic"
    # the nodes are still alive and working: a good initial policy is gated and deployed
    pub_p.publish(wire.to_msg(wire.pack_policy(_onnx_policy(0), task_id=TASK_ID, policy_version=0, model_version=0,
                                               iteration=0, log_std=[-1.0] * 9)))
    probe.spin_until(lambda: len(deployed) > 0, 30, "the deployed initial policy")
    blob = wire.unpack_policy(wire.from_msg(deployed[-1][1]), expect_task=TASK_ID)
    assert blob.header["approved"] is True and blob.policy_version == 0
    assert graph.procs["model_learner"].poll() is None and graph.procs["game_coordinator"].poll() is None


def test_coordinator_refuses_results_out_of_order(graph: Graph, probe: Probe, tmp_path: Path) -> None:
    """A model on stale data, an answer to another request, a policy on a stale model: refused, state unchanged."""
    import torch
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import String, UInt8MultiArray

    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.nodes import GAME_STATE, MODEL, POLICY_CANDIDATE, POLICY_DEPLOYED, TRANSITIONS
    from mbrl_ros.tasks import get_task
    from ros_harness import TINY_GAME

    latched, trans = _qos()
    graph.start("game_coordinator", "game_coordinator", game_params(log_dir=str(tmp_path / "run"), eval_in_sim=False,
                                                                    gate_model_severity="abort"))
    states = probe.subscribe(String, GAME_STATE, latched)
    diags = probe.subscribe(DiagnosticArray, "/diagnostics", 50)
    deployed = probe.subscribe(UInt8MultiArray, POLICY_DEPLOYED, latched)
    pub_t = probe.publisher(UInt8MultiArray, TRANSITIONS, trans)
    pub_p = probe.publisher(UInt8MultiArray, POLICY_CANDIDATE, latched)
    pub_m = probe.publisher(UInt8MultiArray, MODEL, latched)

    def state() -> dict:
        return wire.unpack_game_state(states[-1][1].data).to_body() if states else {}

    probe.spin_until(lambda: bool(states) and pub_p.get_subscription_count() > 0, 90, "the coordinator")
    # v0 holds still (mean action 0): in the test model below it never leaves the joint limits
    pub_p.publish(wire.to_msg(wire.pack_policy(_onnx_policy(0, constant=0.0), task_id=TASK_ID, policy_version=0,
                                               model_version=0, iteration=0, request_id="initial")))
    probe.spin_until(lambda: state().get("collect") is True and state()["deployed_policy_version"] == 0, 30, "collect v0")
    for i in range(2):  # N_init = 80 = two episodes
        pub_t.publish(wire.to_msg(wire.pack_episode(_episode(i, version=0))))
    probe.spin_until(lambda: state().get("request", {}).get("kind") == "fit_model", 30, "the fit request")
    req = state()["request"]
    assert req["kind"] == "fit_model" and sorted(req["episode_ids"]) == ["test-s-000000", "test-s-000001"]

    torch.set_num_threads(1)
    task = get_task(TASK_ID)
    player = ModelPlayer(task, load_config("pal", TASK_ID, TINY_GAME))
    ens = player.ensemble
    with torch.no_grad():  # a model in which each claw joint moves by its action per step (rad)
        for w, b in zip(ens.weights, ens.biases):
            w.zero_()
            b.zero_()
        z = ens.state_dim
        for j in range(9):  # relu(a) and relu(-a) through both hidden layers, then a = relu(a) - relu(-a)
            ens.weights[0][:, z + j, 2 * j] = 1.0
            ens.weights[0][:, z + j, 2 * j + 1] = -1.0
            ens.weights[1][:, 2 * j, 2 * j] = 1.0
            ens.weights[1][:, 2 * j + 1, 2 * j + 1] = 1.0
            ens.weights[2][:, 2 * j, j] = 1.0
            ens.weights[2][:, 2 * j + 1, j] = -1.0
    weights = player.to_bytes()

    def model(request_id: str, data_policy_version: int) -> UInt8MultiArray:
        return wire.to_msg(wire.pack_model(weights, task_id=TASK_ID, model_version=1, iteration=1,
                                           data_policy_version=data_policy_version, request_id=request_id))

    def refused() -> int:
        return int((diagnostics_of(diags, "game_coordinator") or {}).get("refused_out_of_order", 0))

    pub_m.publish(model(req["id"], data_policy_version=-1))  # fitted before the newest data arrived
    probe.spin_until(lambda: refused() >= 1, 20, "refusal of a model on stale data")
    pub_m.publish(model("fit-i9-m9", data_policy_version=0))  # answers a request nobody made
    probe.spin_until(lambda: refused() >= 2, 20, "refusal of an unrequested model")
    probe.spin_for(0.3)
    assert state()["phase"] == "fit_model" and state()["model_version"] == 0

    pub_m.publish(model(req["id"], data_policy_version=0))
    probe.spin_until(lambda: state().get("request", {}).get("kind") == "improve_policy", 20, "the model accepted")
    ireq = state()["request"]
    assert ireq["model_version"] == 1 and ireq["policy_version"] == 1

    def policy(model_version: int) -> UInt8MultiArray:  # drives every joint 0.9 rad per step in that model
        return wire.to_msg(wire.pack_policy(_onnx_policy(1, iteration=1, constant=0.9), task_id=TASK_ID,
                                            policy_version=1, model_version=model_version, iteration=1,
                                            request_id=ireq["id"]))

    pub_p.publish(policy(model_version=0))  # computed on the stale model M_0
    probe.spin_until(lambda: refused() >= 3, 20, "refusal of a policy on a stale model")
    probe.spin_for(0.3)
    assert state()["phase"] == "improve_policy" and state()["policy_version"] == 0
    assert len(deployed) == 1  # only v0 ever reached the robots
    assert "stale model" in graph.log("game_coordinator") and "refused" in graph.log("game_coordinator")

    # in order now, but the model predicts the policy drives the joints past their limits: the gate refuses it
    pub_p.publish(policy(model_version=1))
    probe.spin_until(lambda: state().get("policy_version") == 1 and state()["phase"] == "collect", 30,
                     "the candidate gated")
    probe.spin_for(0.3)
    assert state()["deployed_policy_version"] == 0 and len(deployed) == 1
    assert "beyond the joint limits" in graph.log("game_coordinator")
    d = diagnostics_of(diags, "game_coordinator")
    assert int(d.get("gate_failed", 0)) == 1
    # the deployed policy's reference rollout in M_1 was made when M_1 arrived, not during the gate
    assert int(d.get("gate_reference_reused", 0)) == 1


def test_estop_stops_every_collector(graph: Graph, probe: Probe, tmp_path: Path) -> None:
    """The e-stop service stops all collectors at once (no episode completes after it); clearing resumes."""
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import UInt8MultiArray
    from std_srvs.srv import Trigger

    from mbrl_ros.nodes import ESTOP_CLEAR_SERVICE, ESTOP_SERVICE, TRANSITIONS

    _, trans = _qos()
    # a huge initial collection keeps the game in COLLECT for the whole test
    big = ["samples=1000000", "n_init=500000"]
    graph.start("game_coordinator", "game_coordinator", game_params(overrides=big, log_dir=str(tmp_path / "run"),
                                                                    eval_in_sim=False, record=False))
    graph.start("policy_improver", "policy_improver", game_params(overrides=big))
    for i in range(2):
        graph.start("collector", f"collector_{i}", {"task": TASK_ID, "robot_id": f"sim{i}", "seed": i})
    episodes = probe.subscribe(UInt8MultiArray, TRANSITIONS, trans)
    diags = probe.subscribe(DiagnosticArray, "/diagnostics", 50)

    def robots_since(t: float) -> set[str]:
        return {wire.peek_header(wire.from_msg(m))["robot_id"] for (tm, m) in episodes if tm > t}

    probe.spin_until(lambda: robots_since(0.0) == {"sim0", "sim1"}, 120, "episodes from both collectors")
    resp = probe.call(Trigger, ESTOP_SERVICE)
    assert resp.success
    t_stop = time.monotonic()
    probe.spin_for(2.0)
    late = [tm - t_stop for (tm, _m) in episodes if tm > t_stop + 0.2]
    assert late == [], f"{len(late)} episodes completed after the e-stop"
    def reported(i: int) -> bool:
        d = diagnostics_of(diags, f"collector_{i}")
        return d is not None and d["_level"] == 2 and "e-stop" in d["_message"]

    # the collectors stopped at once (above); their 1 Hz /diagnostics may say so a little later
    # on a loaded machine (a CI run once read a collector's last "ok" 2 s after the e-stop)
    probe.spin_until(lambda: reported(0) and reported(1), 10, "both collectors report the e-stop on /diagnostics")
    assert probe.call(Trigger, ESTOP_CLEAR_SERVICE).success
    t_clear = time.monotonic()
    probe.spin_until(lambda: robots_since(t_clear) == {"sim0", "sim1"}, 60, "collection resumed on both")


def test_torch_threads_zero_means_auto_and_a_negative_value_is_refused() -> None:
    """The learners' ``torch_threads`` parameter, declared on an in-process node (no DDS peers):
    0 = auto (a CoreBudget of up to min(4, cores) threads, re-chosen before each fit / improvement),
    N > 0 pins N threads as before, and ROS refuses a negative value at declaration."""
    import rclpy
    import torch
    from rclpy.exceptions import InvalidParameterValueException
    from rclpy.parameter import Parameter

    from mbrl_ros.core.threads import cpu_count
    from mbrl_ros.nodes.model_learner import declare_torch_threads, torch_thread_budget
    from ros_harness import free_domain_id

    before = torch.get_num_threads()
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=free_domain_id())
    nodes = []

    def node_with(value: int):
        nodes.append(rclpy.create_node(f"threads_test_{len(nodes)}", context=context,
                                       parameter_overrides=[Parameter("torch_threads", value=value)]))
        return nodes[-1]

    try:
        auto = declare_torch_threads(node_with(0))
        assert auto.fixed is None and auto.max_threads == min(4, cpu_count())
        assert torch.get_num_threads() == 1  # auto starts at one thread until the first choice
        assert 1 <= auto.choose() <= min(4, cpu_count()) and torch.get_num_threads() == auto.threads
        desc = nodes[-1].describe_parameter("torch_threads")
        assert desc.read_only and desc.integer_range[0].from_value == 0 and "auto" in desc.description

        pinned = declare_torch_threads(node_with(2))
        assert pinned.fixed == 2 and torch.get_num_threads() == 2 and pinned.choose() == 2

        with pytest.raises(InvalidParameterValueException, match="out of range"):
            declare_torch_threads(node_with(-1))
        with pytest.raises(ValueError, match="0 \\(auto\\) or positive"):
            torch_thread_budget(-3)
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown(context=context)
        torch.set_num_threads(before)


def test_policy_improver_looks_a_missed_episode_up_in_the_record(graph: Graph, probe: Probe, tmp_path: Path) -> None:
    """An episode the policy improver never received live (published before its subscription
    matched: the transitions topic is volatile) is read from the run's MCAP record after
    ``missing_episode_replay_s``, and the improvement it was waiting for goes ahead. Without the
    record's path (the graph gave the improver none) a demo run waited 10 minutes for 5 episodes."""
    import torch
    from std_msgs.msg import String, UInt8MultiArray

    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.nodes import GAME_STATE, MODEL, POLICY_CANDIDATE, TRANSITIONS
    from mbrl_ros.nodes.recording import McapRecorder
    from mbrl_ros.tasks import get_task
    from ros_harness import TINY_GAME

    latched, trans = _qos()
    episodes = [_episode(i) for i in range(3)]
    record = tmp_path / "record" / "transitions.mcap"
    record.parent.mkdir(parents=True)
    recorder = McapRecorder(record)  # the coordinator's record holds every episode
    for ep in episodes:
        recorder.write(TRANSITIONS, wire.to_msg(wire.pack_episode(ep)))
    recorder.close()
    graph.start("policy_improver", "policy_improver",
                game_params(mcap_path=str(record), missing_episode_replay_s=0.5, torch_threads=1))
    candidates = probe.subscribe(UInt8MultiArray, POLICY_CANDIDATE, latched)
    pub_t = probe.publisher(UInt8MultiArray, TRANSITIONS, trans)
    pub_m = probe.publisher(UInt8MultiArray, MODEL, latched)
    pub_s = probe.publisher(String, GAME_STATE, latched)
    probe.spin_until(lambda: bool(candidates) and pub_t.get_subscription_count() > 0, 90, "the policy improver")
    pub_t.publish(wire.to_msg(wire.pack_episode(episodes[2])))  # only the last one arrives live

    torch.set_num_threads(1)
    player = ModelPlayer(get_task(TASK_ID), load_config("pal", TASK_ID, TINY_GAME))
    pub_m.publish(wire.to_msg(wire.pack_model(player.to_bytes(), task_id=TASK_ID, model_version=1, iteration=1,
                                              data_policy_version=0, request_id="fit-i1-m1")))
    request = wire.ImprovePolicyRequest(id="improve-i1-p1", model_version=1, n_steps=1, policy_version=1,
                                        base_policy_version=0, episode_ids=tuple(e.episode_id for e in episodes))
    state = wire.GameState(
        algo="pal", task_id=TASK_ID, iteration=1, phase="improve_policy", model_version=1, policy_version=0,
        deployed_policy_version=0, candidate_policy_version=None, data_policy_version=0, samples=120,
        sample_budget=100000, round_samples=0, round_target=40, round_random_samples=0, round_random_target=0,
        behavior="policy", collect=False, estop=False, done=False, request=request, eval_success=None,
        success_curve=(), wall_s=1.0)
    pub_s.publish(String(data=state.to_json()))

    def answer() -> Optional[dict]:
        headers = (wire.peek_header(wire.from_msg(m)) for _t, m in candidates)
        return next((h for h in headers if h.get("request_id") == request.id), None)

    probe.spin_until(lambda: answer() is not None, 90, "the improvement after the missed episodes were read from the record")
    header = answer()
    assert header is not None and (header["policy_version"], header["model_version"]) == (1, 1)
