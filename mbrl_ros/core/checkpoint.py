"""Checkpoints of a game: safetensors for every tensor, JSON for everything else. No pickle.

A checkpoint directory holds ``weights.safetensors`` (policy, value, ensemble, both Adam
states, the torch RNG state), ``buffer.safetensors`` + ``buffer.json`` (the episodes) and
``state.json`` (configuration, counters, referee versions, numpy RNG state). Writing goes to a
temporary directory that then replaces the old checkpoint, so an interrupted write never
leaves a half checkpoint behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Union

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "weights.safetensors"
STATE = "state.json"


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def load_module(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    keys = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    device = next(iter(module.state_dict().values())).device
    module.load_state_dict({k: v.to(device) for k, v in keys.items()})


def optimizer_state(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Adam-style state as tensors + JSON (param_groups and scalar entries)."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{idx}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars, "indices": [int(i) for i in sd["state"]]}


def load_optimizer(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for idx in meta["indices"]:
        entry: dict[str, Any] = dict(meta["scalars"].get(str(idx), {}))
        head = f"{prefix}.{idx}."
        for k, v in tensors.items():
            if k.startswith(head):
                entry[k[len(head) :]] = v
        state[int(idx)] = entry
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_checkpoint(directory: Union[str, Path], tensors: dict[str, torch.Tensor], state: dict, buffer: Any) -> Path:
    """Atomically (re)write a checkpoint directory."""
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(tensors, str(tmp / WEIGHTS))
    buffer.save(tmp)
    (tmp / STATE).write_text(json.dumps(state, indent=1, sort_keys=True))
    old = final.with_name(final.name + ".old")
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def read_checkpoint(directory: Union[str, Path]) -> tuple[dict[str, torch.Tensor], dict]:
    d = Path(directory)
    if not (d / STATE).is_file() or not (d / WEIGHTS).is_file():
        raise ValueError(f"{d} is not a checkpoint directory (needs {STATE} and {WEIGHTS})")
    return load_file(str(d / WEIGHTS)), json.loads((d / STATE).read_text())
