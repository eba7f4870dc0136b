"""ONNX policies: ORT reproduces torch, and the contract refuses tampered or foreign files."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from mbrl_ros.cli import main
from mbrl_ros.core.networks import GaussianMLPPolicy
from mbrl_ros.core.onnx_export import CONTRACT_KEY, ContractError, export_policy_onnx, load_onnx_policy
from mbrl_ros.tasks.pointmass import PointMassTask

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported() -> tuple[GaussianMLPPolicy, bytes]:
    torch.manual_seed(0)
    task = PointMassTask()
    policy = GaussianMLPPolicy(6, 2, (64, 64))
    with torch.no_grad():  # large enough outputs that the [-1, 1] clip is exercised
        policy.mean_net[-1].weight.normal_(0, 1.0)
    policy.set_obs_normalization(np.linspace(-0.5, 0.5, 6), np.linspace(0.2, 2.0, 6))
    return policy, export_policy_onnx(policy, task.info, iteration=7, version=5)


def test_onnx_runtime_matches_torch(exported) -> None:
    policy, blob = exported
    onnx_policy = load_onnx_policy(blob, expect_task="pointmass")
    obs = np.random.default_rng(0).normal(size=(256, 6)).astype(np.float32)
    expected = policy.act(obs, deterministic=True)
    got = onnx_policy.act(obs)
    assert got.shape == (256, 2)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert got.min() == -1.0 and got.max() == 1.0  # clipped inside the graph
    np.testing.assert_allclose(onnx_policy.act(obs[3]), expected[3], atol=1e-5)  # single observation
    c = onnx_policy.contract
    assert (c["task_id"], c["obs_dim"], c["act_dim"], c["version"], c["iteration"]) == ("pointmass", 6, 2, 5, 7)
    assert len(c["weights_sha256"]) == 64 and c["mbrl_ros_version"]
    with pytest.raises(ValueError, match=r"\(6,\) or \(B, 6\)"):
        onnx_policy.act(np.zeros(5))


def _model(blob: bytes) -> onnx.ModelProto:
    return onnx.load_from_string(blob)


def test_tampered_weights_are_refused(exported) -> None:
    _, blob = exported
    model = _model(blob)
    init = model.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    with pytest.raises(ContractError, match="SHA-256"):
        load_onnx_policy(model.SerializeToString())


def test_tampered_contract_is_refused(exported) -> None:
    _, blob = exported
    model = _model(blob)
    contract = json.loads(model.metadata_props[0].value)
    contract["obs_dim"] = 7
    model.metadata_props[0].value = json.dumps(contract)
    with pytest.raises(ContractError, match="obs_dim"):
        load_onnx_policy(model.SerializeToString())
    del model.metadata_props[:]
    with pytest.raises(ContractError, match=CONTRACT_KEY):
        load_onnx_policy(model.SerializeToString())
    with pytest.raises(ContractError, match="not an ONNX model"):
        load_onnx_policy(b"definitely not protobuf \xff\xff")


def test_policy_for_another_task_is_refused(exported, tmp_path, capsys) -> None:
    _, blob = exported
    with pytest.raises(ContractError, match="trained for task 'pointmass', not 'dclaw-turn-fixed'"):
        load_onnx_policy(blob, expect_task="dclaw-turn-fixed")
    path = tmp_path / "policy.onnx"
    path.write_bytes(blob)
    assert main(["eval", "--policy", str(path), "--task", "dclaw-turn-fixed", "--episodes", "1"]) == 2
    assert "not 'dclaw-turn-fixed'" in capsys.readouterr().err


def test_export_checks_sizes() -> None:
    with pytest.raises(ValueError, match="do not match task"):
        export_policy_onnx(GaussianMLPPolicy(5, 2), PointMassTask().info, 0, 0)


def test_export_leaves_the_policy_as_it_was() -> None:
    """The export works on a CPU copy: the learner's policy keeps its mode and its parameters."""
    policy = GaussianMLPPolicy(6, 2, (16, 16)).train()
    params = [p for p in policy.parameters()]
    export_policy_onnx(policy, PointMassTask().info, iteration=0, version=0)
    assert policy.training
    assert [p for p in policy.parameters()] == params and all(p.requires_grad for p in params)
