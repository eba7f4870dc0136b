"""mbrl_ros.wire: every kind of bad input is rejected with its reason; good input round-trips."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from mbrl_ros import wire

TASK = {"task_id": "dclaw-turn-fixed", "obs_dim": 21, "act_dim": 9, "horizon": 40, "aux_dim": 9}


def _episode(T: int = 40, **kw) -> wire.EpisodeRecord:
    rng = np.random.default_rng(0)
    fields = dict(
        robot_id="sim0", episode_id="sim0-abc-000003", sequence=3, policy_version=2, task_id="dclaw-turn-fixed",
        obs=rng.standard_normal((T + 1, 21)), actions=rng.uniform(-1, 1, (T, 9)), rewards=rng.standard_normal(T),
        terminated=False, success=True, stream="abc", stamp=1.5, extra={"purpose": "train"},
        aux=rng.standard_normal((T + 1, 9)),
    )
    fields.update(kw)
    return wire.EpisodeRecord(**fields)


def _split(data: bytes) -> tuple[dict, bytes]:
    n = struct.unpack_from("<I", data, 4)[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _reframe(data: bytes, payload: bytes | None = None, rehash: bool = True, **changes) -> bytes:
    """Rebuild a record with header fields changed (and the payload swapped, hash recomputed)."""
    header, old = _split(data)
    payload = old if payload is None else payload
    header.update(changes)
    if rehash:
        header["sha256"] = wire.sha256_hex(payload)
        header["payload_size"] = len(payload)
    head = json.dumps(header).encode()
    return wire.MAGIC + struct.pack("<I", len(head)) + head + payload


def _reason(fn, *args, **kwargs) -> str:
    with pytest.raises(wire.WireError) as err:
        fn(*args, **kwargs)
    assert isinstance(err.value, ValueError)
    return err.value.reason


# -- episodes -----------------------------------------------------------------------------
def test_episode_round_trip_keeps_ids_flags_and_float32_values() -> None:
    rec = _episode()
    out = wire.unpack_episode(wire.pack_episode(rec), TASK)
    assert (out.robot_id, out.episode_id, out.sequence, out.policy_version, out.stream) == ("sim0", rec.episode_id, 3, 2, "abc")
    assert out.success is True and out.terminated is False and out.aborted is False and out.length == 40
    np.testing.assert_array_equal(out.obs, rec.obs.astype(np.float32))
    np.testing.assert_array_equal(out.actions, rec.actions.astype(np.float32))
    np.testing.assert_array_equal(out.aux, rec.aux.astype(np.float32))  # the measured joint velocities
    assert out.extra == {"purpose": "train"}
    from mbrl_ros.tasks import get_task

    core = out.to_core().validate(get_task("dclaw-turn-fixed"))
    assert core.episode_id == rec.episode_id and core.obs.dtype == np.float64 and core.success is True
    assert core.aux.shape == (41, 9)
    # an episode without the model-only state the task needs is refused, on the wire and in the core
    bare = wire.pack_episode(_episode(aux=None))
    assert _reason(wire.unpack_episode, bare, TASK) == "size"
    with pytest.raises(ValueError, match="aux"):
        wire.unpack_episode(bare).to_core().validate(get_task("dclaw-turn-fixed"))


def test_pack_episode_refuses_non_finite_and_inconsistent_shapes() -> None:
    obs = _episode().obs.copy()
    obs[5, 3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        wire.pack_episode(_episode(obs=obs))
    with pytest.raises(ValueError, match="obs\\[T\\+1\\]"):
        wire.pack_episode(_episode(rewards=np.zeros(39)))


def test_episode_wrong_schema_version_is_rejected() -> None:
    data = _reframe(wire.pack_episode(_episode()), schema_version=wire.SCHEMA_VERSION + 1)
    assert _reason(wire.unpack_episode, data, TASK) == "schema_version"


def test_episode_wrong_sizes_are_rejected() -> None:
    good = wire.pack_episode(_episode())
    assert _reason(wire.unpack_episode, _reframe(good, T=39), TASK) == "size"  # payload does not fit the header
    small = wire.pack_episode(_episode(obs=np.zeros((41, 20))))
    assert _reason(wire.unpack_episode, small, TASK) == "size"  # 20 obs values, the task has 21
    long = wire.pack_episode(_episode(T=41))
    assert _reason(wire.unpack_episode, long, TASK) == "size"  # beyond the task horizon
    assert _reason(wire.unpack_episode, _reframe(good, sequence=True), TASK) == "header"  # bool is not an int


def test_episode_non_finite_payload_is_rejected_even_with_a_valid_hash() -> None:
    good = wire.pack_episode(_episode())
    _, payload = _split(good)
    arr = np.frombuffer(payload, dtype="<f4").copy()
    arr[100] = np.inf
    assert _reason(wire.unpack_episode, _reframe(good, payload=arr.tobytes()), TASK) == "non_finite"


def test_episode_actions_outside_bounds_are_rejected() -> None:
    good = wire.pack_episode(_episode())
    _, payload = _split(good)
    arr = np.frombuffer(payload, dtype="<f4").copy()
    arr[41 * 21] = 3.0  # first action value
    assert _reason(wire.unpack_episode, _reframe(good, payload=arr.tobytes()), TASK) == "bounds"


def test_truncated_oversized_and_tampered_records_are_rejected() -> None:
    good = wire.pack_episode(_episode())
    assert _reason(wire.unpack_episode, good[:-10], TASK) == "truncated"
    assert _reason(wire.unpack_episode, good[:6], TASK) == "truncated"
    assert _reason(wire.unpack_episode, good, TASK, max_bytes=len(good) - 1) == "oversized"
    assert _reason(wire.unpack_episode, good + b"\x00", TASK) == "size"
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    assert _reason(wire.unpack_episode, bytes(flipped), TASK) == "hash"
    assert _reason(wire.unpack_episode, b"XXXX" + good[4:], TASK) == "header"
    n = struct.unpack_from("<I", good, 4)[0]
    garbage = good[:8] + b"{" * n + good[8 + n:]
    assert _reason(wire.unpack_episode, garbage, TASK) == "header"


def test_episode_for_another_task_or_of_another_kind_is_rejected() -> None:
    other = wire.pack_episode(_episode(task_id="dclaw-turn-random"))
    assert _reason(wire.unpack_episode, other, TASK) == "task"
    model = wire.pack_model(_safetensors(), task_id="dclaw-turn-fixed", model_version=1, iteration=1, data_policy_version=0)
    assert _reason(wire.unpack_episode, model, TASK) == "kind"


# -- models -------------------------------------------------------------------------------
def _safetensors() -> bytes:
    from safetensors.numpy import save

    return save({"w": np.ones((3, 4), dtype=np.float32)})


def test_model_round_trip_and_rejections() -> None:
    blob = wire.pack_model(_safetensors(), task_id="dclaw-turn-fixed", model_version=2, iteration=3,
                           data_policy_version=1, request_id="fit-i3-m2", loss=0.5)
    m = wire.unpack_model(blob, expect_task="dclaw-turn-fixed")
    assert (m.model_version, m.iteration, m.data_policy_version, m.header["request_id"]) == (2, 3, 1, "fit-i3-m2")
    assert _reason(wire.unpack_model, blob, expect_task="dkitty-orient-random") == "task"
    assert _reason(wire.unpack_model, _reframe(blob, model_version=0)) == "size"
    assert _reason(wire.unpack_model, _reframe(blob, payload=_safetensors()[:-4])) == "truncated"
    assert _reason(wire.unpack_model, _reframe(blob, payload=b"\x04" + b"\x00" * 7 + b"nope")) == "header"
    assert _reason(wire.unpack_model, blob, max_bytes=100) == "oversized"


def test_random_policy_episodes_are_tagged_and_the_tag_must_match_the_version() -> None:
    rec = _episode(policy_version=-1, behavior="random")
    out = wire.unpack_episode(wire.pack_episode(rec), TASK)
    assert out.behavior == "random" and out.policy_version == -1
    assert out.to_core().policy_version == -1  # the core's mark of a random-policy episode
    good = wire.pack_episode(_episode())
    assert wire.unpack_episode(good, TASK).behavior == "policy"
    header, payload = _split(good)  # a record from before the tag existed reads as policy data
    del header["behavior"]
    head = json.dumps(header).encode()
    assert wire.unpack_episode(wire.MAGIC + struct.pack("<I", len(head)) + head + payload, TASK).behavior == "policy"
    assert _reason(wire.unpack_episode, _reframe(good, behavior="random"), TASK) == "header"  # random with v2
    assert _reason(wire.unpack_episode, _reframe(good, policy_version=-1), TASK) == "header"  # v-1 from a policy
    assert _reason(wire.unpack_episode, _reframe(good, behavior="scripted"), TASK) == "header"
    assert _reason(wire.unpack_episode, _reframe(good, behavior="random", policy_version=-2), TASK) == "header"
    with pytest.raises(ValueError, match="random episodes carry -1"):
        wire.pack_episode(_episode(behavior="random"))


def test_policy_weights_round_trip_and_rejections() -> None:
    blob = wire.pack_policy_weights(_safetensors(), task_id="dclaw-turn-fixed", policy_version=3, onnx_sha256="ab")
    w = wire.unpack_policy_weights(blob, expect_task="dclaw-turn-fixed")
    assert (w.policy_version, w.header["onnx_sha256"], w.weights) == (3, "ab", _safetensors())
    assert _reason(wire.unpack_policy_weights, blob, expect_task="dkitty-orient-random") == "task"
    assert _reason(wire.unpack_policy_weights, _reframe(blob, policy_version=-1)) == "size"
    assert _reason(wire.unpack_policy_weights, _reframe(blob, payload=_safetensors()[:-4])) == "truncated"
    assert _reason(wire.unpack_policy_weights, _reframe(blob, rehash=False, payload=_safetensors()[::-1])) == "hash"
    model = wire.pack_model(_safetensors(), task_id="dclaw-turn-fixed", model_version=1, iteration=1, data_policy_version=0)
    assert _reason(wire.unpack_policy_weights, model) == "kind"


# -- policies -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_policies():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from mbrl_ros.core.networks import GaussianMLPPolicy
    from mbrl_ros.core.onnx_export import export_policy_onnx
    from mbrl_ros.tasks import get_task

    claw, kitty = get_task("dclaw-turn-fixed"), get_task("dkitty-orient-random")
    p_claw = export_policy_onnx(GaussianMLPPolicy(21, 9, [8]), claw.info, iteration=1, version=4)
    p_kitty = export_policy_onnx(GaussianMLPPolicy(kitty.info.obs_dim, kitty.info.act_dim, [8]), kitty.info, 1, 4)
    return p_claw, p_kitty


def test_policy_round_trip_checks_the_onnx_contract(onnx_policies) -> None:
    p_claw, _ = onnx_policies
    blob = wire.pack_policy(p_claw, task_id="dclaw-turn-fixed", policy_version=4, model_version=3, iteration=1,
                            log_std=[-1.0] * 9)
    b = wire.unpack_policy(blob, expect_task="dclaw-turn-fixed")
    assert (b.policy_version, b.model_version, b.header["approved"], b.header["log_std"]) == (4, 3, False, [-1.0] * 9)
    policy = wire.load_policy_checked(b.onnx, "dclaw-turn-fixed")
    a = policy.act(np.zeros((5, 21)))
    assert a.shape == (5, 9) and np.all(np.abs(a) <= 1.0)


def test_policy_whose_contract_does_not_match_is_rejected(onnx_policies) -> None:
    p_claw, p_kitty = onnx_policies
    # a D'Kitty policy in a D'Claw header: the ONNX contract disagrees with the task
    wrong = wire.pack_policy(p_kitty, task_id="dclaw-turn-fixed", policy_version=4, model_version=3, iteration=1)
    assert _reason(wire.unpack_policy, wrong, expect_task="dclaw-turn-fixed") == "contract"
    # header version and contract version disagree
    lying = wire.pack_policy(p_claw, task_id="dclaw-turn-fixed", policy_version=5, model_version=3, iteration=1)
    assert _reason(wire.unpack_policy, lying, expect_task="dclaw-turn-fixed") == "contract"
    # not ONNX at all (hash recomputed: only the contract check can catch it)
    junk = wire.pack_policy(b"not an onnx file", task_id="dclaw-turn-fixed", policy_version=4, model_version=3, iteration=1)
    assert _reason(wire.unpack_policy, junk, expect_task="dclaw-turn-fixed") == "contract"
    # a policy record for another task
    assert _reason(wire.unpack_policy, wrong, expect_task="dclaw-turn-random") == "task"


def test_policy_with_tampered_weights_is_rejected(onnx_policies) -> None:
    import onnx
    from onnx import numpy_helper

    p_claw, _ = onnx_policies
    model = onnx.load_from_string(p_claw)
    init = model.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    tampered = wire.pack_policy(model.SerializeToString(), task_id="dclaw-turn-fixed", policy_version=4,
                                model_version=3, iteration=1)
    assert _reason(wire.unpack_policy, tampered, expect_task="dclaw-turn-fixed") == "contract"


# -- JSON messages and std_msgs -----------------------------------------------------------
def _state(**kw) -> dict:
    s = {"algo": "pal", "task_id": "dclaw-turn-fixed", "iteration": 1, "phase": "collect", "model_version": 1,
         "policy_version": 1, "deployed_policy_version": 1, "candidate_policy_version": 1, "data_policy_version": 0,
         "samples": 10, "sample_budget": 100, "round_samples": 40, "round_target": 200, "round_random_samples": 0,
         "round_random_target": 0, "behavior": "policy", "collect": True, "estop": False, "done": False,
         "request": {}, "eval_success": 0.5, "success_curve": [None, 0.5], "wall_s": 3.0,
         "noise_policy": "mlp", "explore_noise_color": 1.0, "explore_min_std": 0.2, "explore_mean_fraction": 0.2}
    s.update(kw)
    return s


def test_game_state_validation() -> None:
    text = wire.pack_json("game_state", _state())
    state = wire.unpack_game_state(text)
    assert isinstance(state, wire.GameState) and state.phase == "collect" and state.request is None
    assert wire.unpack_game_state(state.to_json()) == state  # round trip
    body = json.loads(text)
    assert _reason(wire.unpack_game_state, json.dumps(dict(body, schema_version=99))) == "schema_version"
    assert _reason(wire.unpack_game_state, json.dumps(dict(body, kind="other"))) == "kind"
    assert _reason(wire.unpack_game_state, json.dumps(dict(body, iteration="1"))) == "header"
    assert _reason(wire.unpack_game_state, text.replace('"samples": 10', '"samples": NaN')) == "non_finite"
    assert _reason(wire.unpack_game_state, "{not json") == "header"
    assert _reason(wire.unpack_game_state, " " * (wire.MAX_JSON_CHARS + 1)) == "oversized"
    with pytest.raises(ValueError):
        wire.pack_json("game_state", _state(samples=float("nan")))


@pytest.mark.parametrize("field", ["behavior", "round_target", "deployed_policy_version", "success_curve", "wall_s",
                                   "noise_policy", "explore_noise_color", "explore_min_std", "explore_mean_fraction"])
def test_game_state_without_a_field_is_refused(field: str) -> None:
    """Every field is required: no consumer guesses a default (e.g. behavior = policy)."""
    body = _state()
    del body[field]
    assert _reason(wire.unpack_game_state, wire.pack_json("game_state", body)) == "header"


@pytest.mark.parametrize("bad", [
    {"behavior": "wander"}, {"phase": "dance"}, {"noise_policy": "brownian"}, {"samples": -1},
    {"explore_noise_color": 2.5}, {"explore_noise_color": True}, {"explore_min_std": -0.1}, {"explore_min_std": 1.5}, {"explore_mean_fraction": -0.1}, {"explore_mean_fraction": 2.0}, {"deployed_policy_version": -2},
    {"eval_success": 1.5}, {"eval_success": True}, {"collect": 1}, {"success_curve": [2.0]},
    {"request": {"kind": "fit_model", "id": "f", "aggressive": True, "model_version": 1}},  # no episode_ids
    {"request": {"kind": "improve_policy", "id": "i", "model_version": 1, "n_steps": -3, "policy_version": 2,
                 "base_policy_version": 1, "episode_ids": []}},
    {"request": {"kind": "jump"}},
])
def test_game_state_with_a_bad_value_is_refused(bad: dict) -> None:
    assert _reason(wire.unpack_game_state, wire.pack_json("game_state", _state(**bad))) == "header"


def test_game_state_requests_are_typed() -> None:
    fit = {"kind": "fit_model", "id": "fit-i1-m2", "aggressive": False, "model_version": 2, "policy_version": 1,
           "episode_ids": ["a", "b"]}
    state = wire.unpack_game_state(wire.pack_json("game_state", _state(phase="fit_model", request=fit)))
    assert state.request == wire.FitModelRequest("fit-i1-m2", False, 2, 1, ("a", "b"))
    imp = {"kind": "improve_policy", "id": "improve-i1-p2", "model_version": 2, "n_steps": 4, "policy_version": 2,
           "base_policy_version": 1, "episode_ids": ["a"]}
    state = wire.unpack_game_state(wire.pack_json("game_state", _state(phase="improve_policy", request=imp)))
    assert isinstance(state.request, wire.ImprovePolicyRequest) and state.request.n_steps == 4
    assert wire.unpack_game_state(state.to_json()) == state


def test_std_msgs_round_trip() -> None:
    pytest.importorskip("std_msgs")
    data = wire.pack_episode(_episode())
    msg = wire.to_msg(data)
    assert type(msg).__name__ == "UInt8MultiArray"
    assert wire.from_msg(msg) == data
