"""The Gaussian policy's torch weights as safetensors bytes (the ``policy_weights`` wire record).

The ONNX policy is what robots run; it cannot be differentiated through. The model player of
MAL + agent reward needs the policy itself (``ModelPlayer.fit(..., policy=...)`` backpropagates
through its reparameterised actions), so the policy improver publishes the weights of every
version next to its ONNX, and the model learner loads the deployed version's into a policy of
the same architecture (both nodes build it from the same game config). safetensors, never pickle.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mbrl_ros.core.checkpoint import load_module, module_tensors
from mbrl_ros.core.networks import GaussianMLPPolicy

FORMAT = "mbrl_ros.policy_weights/1"
PREFIX = "policy"


def new_policy(task: Any, cfg: Any, device: Any = "cpu") -> GaussianMLPPolicy:
    """A policy with the architecture the policy player builds for ``task`` and ``cfg``."""
    from mbrl_ros.core.policy_player import new_policy as core_new_policy

    return core_new_policy(task, cfg).to(device)


def policy_to_bytes(policy: GaussianMLPPolicy) -> bytes:
    """Every parameter and buffer of ``policy`` (observation statistics included) as safetensors."""
    meta = {"format": FORMAT, "obs_dim": policy.obs_dim, "act_dim": policy.act_dim}
    return st_save(module_tensors(PREFIX, policy), metadata={"mbrl_ros": json.dumps(meta)})


def load_policy_bytes(policy: GaussianMLPPolicy, weights: bytes) -> None:
    """Load :func:`policy_to_bytes` output into ``policy``; ``ValueError`` on any mismatch or non-finite value."""
    try:
        tensors = st_load(bytes(weights))
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad blob
        raise ValueError(f"policy weights are not safetensors: {exc}") from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"policy weights: {name} has non-finite values")
    try:
        load_module(PREFIX, policy, tensors)
    except (RuntimeError, KeyError) as exc:  # missing/unexpected keys, wrong shapes
        raise ValueError(f"policy weights do not fit this policy's architecture: {exc}") from None
