"""Policies leave the learner as self-contained ONNX graphs with a checked contract.

Graph: input ``obs`` float32 [batch, obs_dim] exactly as the task emits it; output ``action``
float32 [batch, act_dim] = clip(mu(normalise(obs)), -1, 1), the deterministic action. The
observation normalisation and the clipping live inside the graph, so any consumer runs it
without the training code.

Contract: stored as ``metadata_props`` (key ``mbrl_ros.contract``, a JSON object): task id,
obs/act sizes, input/output names, normalisation, policy version, iteration, mbrl_ros version
and the SHA-256 of the weights (all initializers and constant tensors, by name). The loader
recomputes that hash, so a tampered file, a file for another task or a file without a
contract is refused with :class:`ContractError`.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

import mbrl_ros
from mbrl_ros.core.networks import GaussianMLPPolicy

CONTRACT_KEY = "mbrl_ros.contract"
CONTRACT_FORMAT = "mbrl_ros.policy/1"
INPUT_NAME, OUTPUT_NAME = "obs", "action"
OPSET = 17


class ContractError(ValueError):
    """A policy file whose contract is missing, inconsistent or meant for something else."""


class _DeterministicPolicy(nn.Module):
    """obs -> clip(mean(obs), -1, 1), normalisation included (what a robot should run)."""

    def __init__(self, policy: GaussianMLPPolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.policy(obs), -1.0, 1.0)


def weights_sha256(model: onnx.ModelProto) -> str:
    """SHA-256 over every initializer and Constant-node tensor (name, dtype, shape, bytes), sorted by name."""
    tensors: list[tuple[str, np.ndarray]] = [(t.name, numpy_helper.to_array(t)) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR:
                    tensors.append((f"{node.output[0]}:{attr.name}", numpy_helper.to_array(attr.t)))
    h = hashlib.sha256()
    for name, arr in sorted(tensors, key=lambda x: x[0]):
        arr = np.ascontiguousarray(arr)
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def export_policy_onnx(policy: GaussianMLPPolicy, task_info: Any, iteration: int, version: int) -> bytes:
    """Serialise the deterministic policy with its contract; returns the ONNX bytes."""
    if policy.obs_dim != task_info.obs_dim or policy.act_dim != task_info.act_dim:
        raise ValueError(
            f"policy sizes ({policy.obs_dim}, {policy.act_dim}) do not match task {task_info.task_id} "
            f"({task_info.obs_dim}, {task_info.act_dim})"
        )
    # export a CPU copy: the policy itself stays where it is (a CUDA learner keeps training on it)
    wrapper = _DeterministicPolicy(copy.deepcopy(policy).cpu()).eval()
    example = torch.zeros(1, policy.obs_dim, dtype=torch.float32)
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no extra package
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(  # a file-like object is accepted (TorchScript exporter); the stubs say path only
            wrapper,
            (example,),
            buf,  # type: ignore[arg-type]
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    model = onnx.load_from_string(buf.getvalue())
    contract = {
        "format": CONTRACT_FORMAT,
        "task_id": task_info.task_id,
        "robot": getattr(task_info, "robot", ""),
        "obs_dim": int(task_info.obs_dim),
        "act_dim": int(task_info.act_dim),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "action_range": [-1.0, 1.0],
        "normalisation": {
            "inside_graph": True,
            "clip": 10.0,
            "obs_mean": [float(x) for x in policy.obs_mean.cpu()],
            "obs_std": [float(x) for x in policy.obs_std.cpu()],
        },
        "version": int(version),
        "iteration": int(iteration),
        "weights_sha256": weights_sha256(model),
        "mbrl_ros_version": mbrl_ros.__version__,
    }
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {CONTRACT_KEY: json.dumps(contract, sort_keys=True)})
    model.producer_name, model.producer_version = "mbrl_ros", mbrl_ros.__version__
    return model.SerializeToString()


def read_contract(model: onnx.ModelProto, expect_task: Optional[str] = None) -> dict:
    """Check the contract of a loaded ONNX policy against the graph; returns it."""
    props = {p.key: p.value for p in model.metadata_props}
    if CONTRACT_KEY not in props:
        raise ContractError(f"no {CONTRACT_KEY!r} in the ONNX metadata: not an mbrl_ros policy")
    try:
        contract = json.loads(props[CONTRACT_KEY])
    except json.JSONDecodeError as exc:
        raise ContractError(f"unreadable contract: {exc}") from None
    required = ("format", "task_id", "obs_dim", "act_dim", "input", "output", "version", "iteration", "weights_sha256")
    missing = [k for k in required if k not in contract]
    if missing:
        raise ContractError(f"contract lacks {', '.join(missing)}")
    if contract["format"] != CONTRACT_FORMAT:
        raise ContractError(f"contract format {contract['format']!r}, expected {CONTRACT_FORMAT!r}")
    if expect_task is not None and contract["task_id"] != expect_task:
        raise ContractError(f"policy was trained for task {contract['task_id']!r}, not {expect_task!r}")
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in init_names]
    if (
        len(inputs) != 1
        or inputs[0].name != contract["input"]
        or len(graph.output) != 1
        or graph.output[0].name != contract["output"]
    ):
        raise ContractError("graph inputs/outputs do not match the contract (one 'obs' input, one 'action' output)")

    def dims(v) -> list:
        return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim]

    in_dims, out_dims = dims(inputs[0]), dims(graph.output[0])
    if len(in_dims) != 2 or in_dims[1] != contract["obs_dim"]:
        raise ContractError(f"input shape {in_dims} does not match obs_dim {contract['obs_dim']}")
    if len(out_dims) != 2 or out_dims[1] != contract["act_dim"]:
        raise ContractError(f"output shape {out_dims} does not match act_dim {contract['act_dim']}")
    for v in (inputs[0], graph.output[0]):
        if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ContractError(f"{v.name} must be float32")
    digest = weights_sha256(model)
    if digest != contract["weights_sha256"]:
        raise ContractError("weights SHA-256 does not match the contract (the file was modified)")
    return contract


class OnnxPolicy:
    """An exported policy run by ONNX Runtime: ``act(obs)`` -> action(s) in [-1, 1]."""

    def __init__(self, model_bytes: bytes, contract: dict) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # a 64x64 MLP: threads only add latency
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
        self.contract = contract
        self.obs_dim, self.act_dim = int(contract["obs_dim"]), int(contract["act_dim"])
        self.task_id = contract["task_id"]
        self.sha256 = hashlib.sha256(model_bytes).hexdigest()

    def act(self, obs: np.ndarray) -> np.ndarray:
        """obs (obs_dim,) -> (act_dim,), or (B, obs_dim) -> (B, act_dim); float64 out."""
        o = np.asarray(obs, dtype=np.float32)
        single = o.ndim == 1
        if single:
            o = o[None]
        if o.ndim != 2 or o.shape[1] != self.obs_dim:
            raise ValueError(f"observation must be ({self.obs_dim},) or (B, {self.obs_dim}), got {np.shape(obs)}")
        if not np.all(np.isfinite(o)):
            raise ValueError("observation contains non-finite values")
        out = self.session.run([self.contract["output"]], {self.contract["input"]: o})[0].astype(np.float64)
        return out[0] if single else out

    __call__ = act


def load_onnx_policy(
    path_or_bytes: Union[str, Path, bytes, bytearray], expect_task: Optional[str] = None
) -> OnnxPolicy:
    """Load and check an exported policy (path or bytes); raises ContractError on any mismatch."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        blob = bytes(path_or_bytes)
    else:
        p = Path(path_or_bytes)
        if not p.is_file():
            raise ValueError(f"policy file not found: {p}")
        blob = p.read_bytes()
    try:
        model = onnx.load_from_string(blob)
    except Exception as exc:  # noqa: BLE001 - protobuf raises various errors
        raise ContractError(f"not an ONNX model: {exc}") from None
    contract = read_contract(model, expect_task)
    return OnnxPolicy(blob, contract)
