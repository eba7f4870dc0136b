"""What travels on the mbrl_ros topics: packing, validation and versioning (standard interfaces only).

Every binary payload (an episode of transitions, an ONNX policy, the policy's torch weights,
a model) is one self-describing *record* carried in a ``std_msgs/UInt8MultiArray``::

    b"MBRW" | uint32 little-endian header length | header (UTF-8 JSON) | payload bytes

The JSON header always holds ``schema`` ("mbrl_ros.wire"), ``schema_version``, ``kind``
("episode" | "policy" | "policy_weights" | "model"), ``payload_size`` and ``sha256`` (of the
payload), plus the kind's own fields (robot id, episode id, sequence number, policy/model
versions, ...). Episode payloads are raw little-endian float32 arrays whose shapes are in the
header. Policies are ONNX files (the observation/action contract lives in the ONNX metadata, see
:mod:`mbrl_ros.core.onnx_export`); policy weights (the Gaussian policy's torch state, which
the model player of MAL + agent reward differentiates through) and models are safetensors
files. Nothing is ever unpickled.

Game state and commands between the coordinator and the players are JSON in
``std_msgs/String`` (:func:`pack_json` / :func:`unpack_json`), with the same schema version.

Every ``unpack_*`` raises :class:`WireError` (a ``ValueError``) whose ``reason`` is a short
machine-readable code (``"schema_version"``, ``"size"``, ``"non_finite"``, ``"oversized"``,
``"truncated"``, ``"hash"``, ``"contract"``, ``"header"``, ``"kind"``, ``"task"``) and whose
message says what was wrong; nodes count rejections per reason in their diagnostics.

This module imports no ROS package at import time: ``to_msg``/``from_msg`` import
``std_msgs`` lazily, so the codec is also usable by offline tools (MCAP readers, tests).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

SCHEMA = "mbrl_ros.wire"
SCHEMA_VERSION = 1
MAGIC = b"MBRW"
_PREFIX = struct.Struct("<4sI")  # magic, header length

MAX_HEADER_BYTES = 256 * 1024
MAX_EPISODE_BYTES = 8 * 1024 * 1024  # a D'Kitty episode of 80 steps is ~40 kB
MAX_POLICY_BYTES = 16 * 1024 * 1024
MAX_MODEL_BYTES = 256 * 1024 * 1024  # paper ensemble (4 x MLP(512,512)) is ~5 MB
MAX_JSON_CHARS = 1024 * 1024

KINDS = ("episode", "policy", "policy_weights", "model")
BEHAVIORS = ("policy", "random")  # who chose an episode's actions
REASONS = (
    "header",
    "schema_version",
    "kind",
    "size",
    "oversized",
    "truncated",
    "hash",
    "non_finite",
    "bounds",
    "task",
    "contract",
)


class WireError(ValueError):
    """A message that failed validation; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------
# Generic record
# ---------------------------------------------------------------------------------------
def pack_record(kind: str, header: Mapping[str, Any], payload: bytes) -> bytes:
    """Frame ``payload`` with a JSON header (schema, version, kind, size and SHA-256 added)."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
    full = dict(header)
    full.update(
        schema=SCHEMA,
        schema_version=SCHEMA_VERSION,
        kind=kind,
        payload_size=len(payload),
        sha256=sha256_hex(payload),
    )
    head = json.dumps(full, sort_keys=True, allow_nan=False).encode("utf-8")
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"{kind} header is {len(head)} bytes, more than {MAX_HEADER_BYTES}")
    return _PREFIX.pack(MAGIC, len(head)) + head + bytes(payload)


def peek_header(data: bytes) -> dict:
    """The JSON header of a record, checking only the framing (not the payload)."""
    if not isinstance(data, (bytes, bytearray)):
        data = bytes(data)
    if len(data) < _PREFIX.size:
        raise WireError("truncated", f"record of {len(data)} bytes is shorter than its {_PREFIX.size}-byte prefix")
    magic, head_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise WireError("header", f"bad magic {bytes(magic)!r} (not an mbrl_ros wire record)")
    if head_len > MAX_HEADER_BYTES:
        raise WireError("oversized", f"header length {head_len} exceeds {MAX_HEADER_BYTES}")
    if len(data) < _PREFIX.size + head_len:
        raise WireError("truncated", f"record ends inside its {head_len}-byte header")
    try:
        header = json.loads(bytes(data[_PREFIX.size : _PREFIX.size + head_len]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError("header", f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise WireError("header", "header is not a JSON object")
    if header.get("schema") != SCHEMA:
        raise WireError("header", f"schema {header.get('schema')!r} is not {SCHEMA!r}")
    if header.get("schema_version") != SCHEMA_VERSION:
        raise WireError(
            "schema_version",
            f"schema version {header.get('schema_version')!r} is not supported (this build speaks {SCHEMA_VERSION})",
        )
    return header


def unpack_record(data: bytes, expect_kind: str, max_bytes: int) -> tuple[dict, bytes]:
    """Validate framing, version, kind, size limits and hash; return ``(header, payload)``."""
    if len(data) > max_bytes:
        raise WireError("oversized", f"{expect_kind} record of {len(data)} bytes exceeds the limit of {max_bytes}")
    header = peek_header(data)
    if header.get("kind") != expect_kind:
        raise WireError("kind", f"expected a {expect_kind} record, got {header.get('kind')!r}")
    start = _PREFIX.size + _PREFIX.unpack_from(data, 0)[1]
    size = header.get("payload_size")
    if not isinstance(size, int) or size < 0:
        raise WireError("header", f"payload_size {size!r} is not a non-negative integer")
    have = len(data) - start
    if have < size:
        raise WireError("truncated", f"{expect_kind} payload has {have} bytes, header says {size}")
    if have > size:
        raise WireError("size", f"{expect_kind} record has {have - size} trailing bytes after its payload")
    payload = bytes(data[start:])
    if sha256_hex(payload) != header.get("sha256"):
        raise WireError("hash", f"{expect_kind} payload SHA-256 does not match its header")
    return header, payload


def _req(header: Mapping[str, Any], key: str, typ: type | tuple, kind: str) -> Any:
    value = header.get(key)
    if typ is int and isinstance(value, bool):  # bool is an int subclass; refuse it
        value = None
    if not isinstance(value, typ):
        name = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise WireError("header", f"{kind} header field {key!r} must be {name}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------
# Episodes of transitions
# ---------------------------------------------------------------------------------------
@dataclass
class EpisodeRecord:
    """One complete episode as published by a collector (float32 on the wire)."""

    robot_id: str
    episode_id: str
    sequence: int  # per-collector counter of *published* episodes (gaps = losses)
    policy_version: int  # -1: the uniform random policy (behavior "random")
    task_id: str
    obs: np.ndarray  # [T+1, obs_dim]
    actions: np.ndarray  # [T, act_dim], the clipped actions actually applied
    rewards: np.ndarray  # [T]
    terminated: bool
    aborted: bool = False
    success: bool = False  # task success at the final step
    stream: str = ""  # collector process nonce: (robot_id, stream) numbers one sequence
    stamp: float = 0.0  # wall-clock time the episode ended (s since epoch)
    extra: dict = field(default_factory=dict)  # small JSON-able facts (limit hits, loop jitter, ...)
    behavior: str = "policy"  # "policy": the deployed policy acted; "random": uniform random actions (MAL + noise)
    aux: Optional[np.ndarray] = None  # [T+1, aux_dim]: the task's model-only measurements (D'Claw joint velocities)

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))

    def to_core(self):
        """The core's :class:`~mbrl_ros.core.buffers.Episode` (float64 arrays)."""
        from mbrl_ros.core.buffers import Episode

        return Episode(
            obs=self.obs.astype(np.float64),
            actions=self.actions.astype(np.float64),
            rewards=self.rewards.astype(np.float64),
            terminated=bool(self.terminated),
            episode_id=self.episode_id,
            policy_version=int(self.policy_version),
            robot_id=self.robot_id,
            aborted=bool(self.aborted),
            success=bool(self.success),
            aux=None if self.aux is None else self.aux.astype(np.float64),
        )


def _task_dims(task: Any) -> tuple[str, int, int, int, Optional[int]]:
    """(task_id, obs_dim, act_dim, horizon, aux_dim) from a TaskSpec, a TaskInfo or a mapping
    (aux_dim None where the description does not say: not checked)."""
    info = getattr(task, "info", task)
    aux_dim = getattr(task, "aux_dim", None)
    if isinstance(info, Mapping):
        return (
            str(info["task_id"]),
            int(info["obs_dim"]),
            int(info["act_dim"]),
            int(info.get("horizon", 10**6)),
            info.get("aux_dim"),
        )
    return str(info.task_id), int(info.obs_dim), int(info.act_dim), int(info.horizon), aux_dim


def pack_episode(rec: EpisodeRecord) -> bytes:
    """Pack an episode; raises ``ValueError`` on inconsistent shapes or non-finite values."""
    obs = np.ascontiguousarray(rec.obs, dtype="<f4")
    act = np.ascontiguousarray(rec.actions, dtype="<f4")
    rew = np.ascontiguousarray(rec.rewards, dtype="<f4").reshape(-1)
    if obs.ndim != 2 or act.ndim != 2:
        raise ValueError(f"episode {rec.episode_id}: obs and actions must be 2-D, got {obs.shape} and {act.shape}")
    T = act.shape[0]
    if T < 1 or obs.shape[0] != T + 1 or rew.shape[0] != T:
        raise ValueError(
            f"episode {rec.episode_id}: need obs[T+1], actions[T], rewards[T]; got {obs.shape}, {act.shape}, {rew.shape}"
        )
    aux = np.zeros((T + 1, 0), dtype="<f4") if rec.aux is None else np.ascontiguousarray(rec.aux, dtype="<f4")
    if aux.ndim != 2 or aux.shape[0] != T + 1:
        raise ValueError(f"episode {rec.episode_id}: aux must be [T+1, aux_dim], got {aux.shape}")
    for name, arr in (("obs", obs), ("actions", act), ("rewards", rew), ("aux", aux)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"episode {rec.episode_id}: {name} has non-finite values (float32)")
    header = {
        "robot_id": rec.robot_id,
        "episode_id": rec.episode_id,
        "sequence": int(rec.sequence),
        "stream": rec.stream,
        "policy_version": int(rec.policy_version),
        "task_id": rec.task_id,
        "T": int(T),
        "obs_dim": int(obs.shape[1]),
        "act_dim": int(act.shape[1]),
        "aux_dim": int(aux.shape[1]),
        "dtype": "float32",
        "terminated": bool(rec.terminated),
        "aborted": bool(rec.aborted),
        "success": bool(rec.success),
        "episode_return": float(np.sum(rew, dtype=np.float64)),
        "stamp": float(rec.stamp),
        "extra": rec.extra,
        "behavior": rec.behavior,
    }
    problem = _behavior_problem(rec.behavior, int(rec.policy_version), rec.episode_id)
    if problem:
        raise ValueError(problem)
    return pack_record("episode", header, obs.tobytes() + act.tobytes() + rew.tobytes() + aux.tobytes())


def _behavior_problem(behavior: Any, policy_version: int, episode_id: str) -> Optional[str]:
    """``policy`` episodes carry a policy version >= 0, ``random`` ones exactly -1 (as in the core)."""
    if behavior not in BEHAVIORS:
        return f"episode {episode_id}: behavior {behavior!r} is not one of {BEHAVIORS}"
    if (behavior == "random") != (policy_version == -1):
        return (
            f"episode {episode_id}: behavior {behavior!r} with policy version {policy_version} "
            "(random episodes carry -1, policy episodes a version >= 0)"
        )
    return None


def unpack_episode(data: bytes, task: Any = None, max_bytes: int = MAX_EPISODE_BYTES) -> EpisodeRecord:
    """Validate and decode an episode; with ``task`` its id, sizes and horizon are checked too."""
    header, payload = unpack_record(data, "episode", max_bytes)
    k = "episode"
    robot_id = _req(header, "robot_id", str, k)
    episode_id = _req(header, "episode_id", str, k)
    if not episode_id or len(episode_id) > 200 or not robot_id:
        raise WireError("header", f"episode id {episode_id!r} / robot id {robot_id!r} must be non-empty and short")
    seq = _req(header, "sequence", int, k)
    pv = _req(header, "policy_version", int, k)
    task_id = _req(header, "task_id", str, k)
    T, od, ad = (_req(header, key, int, k) for key in ("T", "obs_dim", "act_dim"))
    xd = header.get("aux_dim", 0)  # (records before model-only state have none)
    if not isinstance(xd, int) or isinstance(xd, bool) or not 0 <= xd <= 1024:
        raise WireError("header", f"episode {episode_id}: aux_dim {xd!r} must be an integer in [0, 1024]")
    behavior = header.get("behavior", "policy")  # (records before the random-noise game have none)
    problem = _behavior_problem(behavior, pv, episode_id)
    if problem:
        raise WireError("header", problem)
    if seq < 0 or pv < -1 or T < 1 or od < 1 or ad < 1:
        raise WireError(
            "size", f"episode {episode_id}: sequence {seq}, policy v{pv}, T={T}, dims {od}/{ad} out of range"
        )
    if header.get("dtype") != "float32":
        raise WireError("header", f"episode {episode_id}: dtype {header.get('dtype')!r} is not float32")
    for key in ("terminated", "aborted", "success"):
        _req(header, key, bool, k)
    if task is not None:
        tid, tod, tad, horizon, taux = _task_dims(task)
        if task_id != tid:
            raise WireError("task", f"episode {episode_id} is for task {task_id!r}, this graph runs {tid!r}")
        if (od, ad) != (tod, tad):
            raise WireError("size", f"episode {episode_id}: dims obs {od}/act {ad}, task {tid} has {tod}/{tad}")
        if taux is not None and xd != taux:
            raise WireError(
                "size", f"episode {episode_id}: {xd} model-only values (aux) per step, task {tid} has {taux}"
            )
        if T > horizon:
            raise WireError("size", f"episode {episode_id}: {T} steps exceed the task horizon {horizon}")
    expect = 4 * ((T + 1) * od + T * ad + T + (T + 1) * xd)
    if len(payload) != expect:
        raise WireError("size", f"episode {episode_id}: payload {len(payload)} bytes, shapes need {expect}")
    flat = np.frombuffer(payload, dtype="<f4")
    n_obs, n_act = (T + 1) * od, T * ad
    obs = flat[:n_obs].reshape(T + 1, od).copy()
    act = flat[n_obs : n_obs + n_act].reshape(T, ad).copy()
    rew = flat[n_obs + n_act : n_obs + n_act + T].copy()
    aux = flat[n_obs + n_act + T :].reshape(T + 1, xd).copy()
    if not all(np.all(np.isfinite(x)) for x in (obs, act, rew, aux)):
        raise WireError("non_finite", f"episode {episode_id} contains NaN or inf")
    if np.any(np.abs(act) > 1.0 + 1e-6):
        raise WireError("bounds", f"episode {episode_id}: applied actions outside [-1, 1]")
    extra = header.get("extra") or {}
    return EpisodeRecord(
        robot_id=robot_id,
        episode_id=episode_id,
        sequence=seq,
        policy_version=pv,
        task_id=task_id,
        obs=obs,
        actions=act,
        rewards=rew,
        terminated=header["terminated"],
        aborted=header["aborted"],
        success=header["success"],
        stream=str(header.get("stream", "")),
        stamp=float(header.get("stamp", 0.0)),
        extra=extra if isinstance(extra, dict) else {},
        behavior=behavior,
        aux=aux if xd else None,
    )


# ---------------------------------------------------------------------------------------
# Policies (ONNX) and models (safetensors)
# ---------------------------------------------------------------------------------------
@dataclass
class PolicyBlob:
    """A versioned ONNX policy; ``header`` holds versions, the model it was computed on, stats."""

    onnx: bytes
    policy_version: int
    model_version: int
    iteration: int
    task_id: str
    header: dict
    policy: Any = None  # the OnnxPolicy loaded by the contract check (reused by the consumer)


def pack_policy(
    onnx_bytes: bytes,
    *,
    task_id: str,
    policy_version: int,
    model_version: int,
    iteration: int,
    approved: bool = False,
    **extra: Any,
) -> bytes:
    """Frame an ONNX policy; ``approved`` is only set by the coordinator after the gate."""
    header = dict(extra)
    header.update(
        task_id=task_id,
        policy_version=int(policy_version),
        model_version=int(model_version),
        iteration=int(iteration),
        approved=bool(approved),
    )
    return pack_record("policy", header, onnx_bytes)


def unpack_policy(
    data: bytes, expect_task: Optional[str] = None, check_contract: bool = True, max_bytes: int = MAX_POLICY_BYTES
) -> PolicyBlob:
    """Validate a policy record; with ``check_contract`` the ONNX contract must match the task.

    The contract check loads the ONNX file with ONNX Runtime (through
    :func:`mbrl_ros.core.onnx_export.load_onnx_policy`), so a corrupt graph is refused here too.
    """
    header, payload = unpack_record(data, "policy", max_bytes)
    k = "policy"
    pv, mv, it = (_req(header, key, int, k) for key in ("policy_version", "model_version", "iteration"))
    task_id = _req(header, "task_id", str, k)
    if min(pv, mv, it) < 0:
        raise WireError("size", f"policy versions must be >= 0, got policy v{pv}, model v{mv}, iteration {it}")
    if expect_task is not None and task_id != expect_task:
        raise WireError("task", f"policy v{pv} is for task {task_id!r}, this graph runs {expect_task!r}")
    policy = None
    if check_contract:
        policy = load_policy_checked(payload, expect_task or task_id)
        cv = policy.contract.get("version")
        if cv is not None and int(cv) != pv:
            raise WireError("contract", f"policy header says v{pv}, its ONNX contract says v{cv}")
    return PolicyBlob(
        onnx=payload, policy_version=pv, model_version=mv, iteration=it, task_id=task_id, header=header, policy=policy
    )


def load_policy_checked(onnx_bytes: bytes, expect_task: str):
    """``load_onnx_policy`` with its contract errors turned into ``WireError("contract")``."""
    from mbrl_ros.core.onnx_export import load_onnx_policy

    try:
        return load_onnx_policy(onnx_bytes, expect_task=expect_task)
    except ValueError as exc:  # ContractError is a ValueError
        raise WireError("contract", str(exc)) from None
    except Exception as exc:  # onnxruntime raises its own types on a corrupt graph
        raise WireError("contract", f"ONNX policy does not load: {type(exc).__name__}: {exc}") from None


@dataclass
class PolicyWeightsBlob:
    """The torch weights of policy version ``policy_version`` (safetensors), published with its ONNX."""

    weights: bytes
    policy_version: int
    task_id: str
    header: dict


def pack_policy_weights(weights: bytes, *, task_id: str, policy_version: int, **extra: Any) -> bytes:
    """Frame a safetensors state of the Gaussian policy (``onnx_sha256`` links it to its ONNX)."""
    header = dict(extra)
    header.update(task_id=task_id, policy_version=int(policy_version), format="safetensors")
    return pack_record("policy_weights", header, weights)


def unpack_policy_weights(
    data: bytes, expect_task: Optional[str] = None, max_bytes: int = MAX_POLICY_BYTES
) -> PolicyWeightsBlob:
    """Validate a policy-weights record, including the safetensors framing of its payload."""
    header, payload = unpack_record(data, "policy_weights", max_bytes)
    pv = _req(header, "policy_version", int, "policy_weights")
    task_id = _req(header, "task_id", str, "policy_weights")
    if pv < 0:
        raise WireError("size", f"policy weights v{pv}: the version must be >= 0")
    if expect_task is not None and task_id != expect_task:
        raise WireError("task", f"policy weights v{pv} are for task {task_id!r}, this graph runs {expect_task!r}")
    _check_safetensors(payload)
    return PolicyWeightsBlob(weights=payload, policy_version=pv, task_id=task_id, header=header)


@dataclass
class ModelBlob:
    """A versioned dynamics model (safetensors bytes, normalisation stats included)."""

    weights: bytes
    model_version: int
    iteration: int
    data_policy_version: int
    task_id: str
    header: dict


def pack_model(
    weights: bytes, *, task_id: str, model_version: int, iteration: int, data_policy_version: int, **extra: Any
) -> bytes:
    header = dict(extra)
    header.update(
        task_id=task_id,
        model_version=int(model_version),
        iteration=int(iteration),
        data_policy_version=int(data_policy_version),
        format="safetensors",
    )
    return pack_record("model", header, weights)


def unpack_model(data: bytes, expect_task: Optional[str] = None, max_bytes: int = MAX_MODEL_BYTES) -> ModelBlob:
    """Validate a model record, including the safetensors framing of its payload."""
    header, payload = unpack_record(data, "model", max_bytes)
    k = "model"
    mv, it, dpv = (_req(header, key, int, k) for key in ("model_version", "iteration", "data_policy_version"))
    task_id = _req(header, "task_id", str, k)
    if mv < 1 or it < 0 or dpv < -1:
        raise WireError("size", f"model v{mv} (iteration {it}, data of policy v{dpv}) out of range")
    if expect_task is not None and task_id != expect_task:
        raise WireError("task", f"model v{mv} is for task {task_id!r}, this graph runs {expect_task!r}")
    _check_safetensors(payload)
    return ModelBlob(
        weights=payload, model_version=mv, iteration=it, data_policy_version=dpv, task_id=task_id, header=header
    )


def _check_safetensors(payload: bytes) -> None:
    """Framing check of a safetensors file: u64 header length, JSON header, offsets in range."""
    if len(payload) < 8:
        raise WireError("truncated", "model payload is shorter than a safetensors header")
    (n,) = struct.unpack_from("<Q", payload, 0)
    if n > len(payload) - 8 or n > MAX_HEADER_BYTES * 64:
        raise WireError("truncated", f"safetensors header length {n} exceeds the payload")
    try:
        meta = json.loads(payload[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError("header", f"safetensors header is not JSON: {exc}") from None
    body = len(payload) - 8 - n
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        offs = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offs, list) and len(offs) == 2 and 0 <= offs[0] <= offs[1] <= body):
            raise WireError("truncated", f"safetensors tensor {name!r} lies outside the payload")


# ---------------------------------------------------------------------------------------
# JSON messages (game state, commands) in std_msgs/String
# ---------------------------------------------------------------------------------------
def pack_json(kind: str, body: Mapping[str, Any]) -> str:
    """A JSON text with ``schema``, ``schema_version`` and ``kind``; NaN/inf are refused."""
    full = dict(body)
    full.update(schema=SCHEMA, schema_version=SCHEMA_VERSION, kind=kind)
    return json.dumps(full, sort_keys=True, allow_nan=False)


def unpack_json(text: str, expect_kind: str, required: Optional[Mapping[str, type | tuple]] = None) -> dict:
    """Parse and validate a JSON message; ``required`` maps field names to types."""
    if len(text) > MAX_JSON_CHARS:
        raise WireError("oversized", f"{expect_kind} message of {len(text)} characters exceeds {MAX_JSON_CHARS}")

    def _no_const(c: str) -> float:
        raise WireError("non_finite", f"{expect_kind} message contains {c}")

    try:
        body = json.loads(text, parse_constant=_no_const)
    except json.JSONDecodeError as exc:
        raise WireError("header", f"{expect_kind} message is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WireError("header", f"{expect_kind} message is not a JSON object")
    if body.get("schema") != SCHEMA:
        raise WireError("header", f"schema {body.get('schema')!r} is not {SCHEMA!r}")
    if body.get("schema_version") != SCHEMA_VERSION:
        raise WireError("schema_version", f"schema version {body.get('schema_version')!r} is not {SCHEMA_VERSION}")
    if body.get("kind") != expect_kind:
        raise WireError("kind", f"expected a {expect_kind} message, got {body.get('kind')!r}")
    for key, typ in dict(required or {}).items():
        _req(body, key, typ, expect_kind)
    return body


PHASES = ("collect", "fit_model", "improve_policy", "gate", "deploy", "done")  # mbrl_ros.core.schedule.Phase
BEHAVIORS = ("policy", "random")


def _field(
    body: Mapping[str, Any],
    key: str,
    typ: type | tuple,
    kind: str,
    lo: Optional[float] = None,
    hi: Optional[float] = None,
    choices: Optional[tuple] = None,
    optional: bool = False,
) -> Any:
    """One validated field of a JSON message: present, of ``typ`` (bool is not an int), inside
    [lo, hi] and one of ``choices`` when given; ``optional``: None allowed."""
    if optional and body.get(key, None) is None:
        if key not in body:
            raise WireError("header", f"{kind} message lacks {key!r}")
        return None
    value = _req(body, key, typ, kind)
    if isinstance(value, bool) and typ is not bool:
        raise WireError("header", f"{kind} field {key!r} must be a number, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise WireError("header", f"{kind} field {key!r} = {value!r} is outside [{lo}, {hi}]")
    if choices is not None and value not in choices:
        raise WireError("header", f"{kind} field {key!r} = {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _episode_ids(body: Mapping[str, Any], kind: str) -> tuple[str, ...]:
    ids = _req(body, "episode_ids", list, kind)
    if not all(isinstance(i, str) and 0 < len(i) <= 256 for i in ids):
        raise WireError("header", f"{kind} episode_ids must be non-empty strings")
    return tuple(ids)


@dataclass(frozen=True)
class FitModelRequest:
    """The coordinator asks the model player for model ``model_version`` on the round's episodes."""

    id: str
    aggressive: bool  # best response (fit to convergence) or a conservative step
    model_version: int
    policy_version: int  # the deployed policy (MAL + agent reward fits against it)
    episode_ids: tuple[str, ...]  # the round's episodes: the fit waits until all are in its buffer
    kind: str = "fit_model"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "FitModelRequest":
        k = "fit_model request"
        return cls(
            _field(body, "id", str, k),
            _field(body, "aggressive", bool, k),
            _field(body, "model_version", int, k, lo=1),
            _field(body, "policy_version", int, k, lo=0),
            _episode_ids(body, k),
        )


@dataclass(frozen=True)
class ImprovePolicyRequest:
    """The coordinator asks the policy player for ``n_steps`` NPG steps in ``model_version``."""

    id: str
    model_version: int
    n_steps: int
    policy_version: int  # the version the candidate will carry
    base_policy_version: int  # the deployed policy the steps start from
    episode_ids: tuple[str, ...]
    kind: str = "improve_policy"

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> "ImprovePolicyRequest":
        k = "improve_policy request"
        return cls(
            _field(body, "id", str, k),
            _field(body, "model_version", int, k, lo=0),
            _field(body, "n_steps", int, k, lo=0, hi=100000),
            _field(body, "policy_version", int, k, lo=1),
            _field(body, "base_policy_version", int, k, lo=0),
            _episode_ids(body, k),
        )


Request = Optional[FitModelRequest | ImprovePolicyRequest]


def _request(body: Mapping[str, Any]) -> Request:
    req = _req(body, "request", dict, "game_state")
    if not req:
        return None
    kind = req.get("kind")
    if kind == "fit_model":
        return FitModelRequest.from_body(req)
    if kind == "improve_policy":
        return ImprovePolicyRequest.from_body(req)
    raise WireError("header", f"game_state request kind {kind!r} is not fit_model or improve_policy")


@dataclass(frozen=True)
class GameState:
    """The coordinator's game state on ``/mbrl/game_state``, every field validated
    (:meth:`from_json`); consumers read attributes, never guess defaults."""

    algo: str
    task_id: str
    iteration: int
    phase: str  # one of PHASES
    model_version: int
    policy_version: int
    deployed_policy_version: int  # -1 until the initial policy passed the gate
    candidate_policy_version: Optional[int]
    data_policy_version: int  # -1 until the first round is complete
    samples: int
    sample_budget: int
    round_samples: int
    round_target: int
    round_random_samples: int
    round_random_target: int
    behavior: str  # the data the round asks for now: "policy" or "random"
    collect: bool
    estop: bool
    done: bool
    request: Request
    eval_success: Optional[float]
    success_curve: tuple[Optional[float], ...]
    wall_s: float
    noise_policy: str = (
        "mlp"  # the random policies the collectors play when behavior is "random" (required on the wire)
    )
    explore_noise_color: float = 0.0  # the behaviour noise around the policy (core.world.BehaviorNoise)
    explore_min_std: float = 0.0
    explore_mean_fraction: float = 0.0  # share of episodes played with the mean action

    def to_body(self) -> dict[str, Any]:
        body = {f: getattr(self, f) for f in self.__dataclass_fields__}
        r = self.request
        body["request"] = (
            {}
            if r is None
            else {**{f: getattr(r, f) for f in r.__dataclass_fields__}, "episode_ids": list(r.episode_ids)}
        )
        body["success_curve"] = list(self.success_curve)
        return body

    def to_json(self) -> str:
        return pack_json("game_state", self.to_body())

    @classmethod
    def from_json(cls, text: str) -> "GameState":
        """Parse and validate in full; :class:`WireError` names the first bad field."""
        b = unpack_json(text, "game_state")
        k = "game_state"
        curve = _req(b, "success_curve", list, k)
        if len(curve) > 100000 or not all(
            c is None or (isinstance(c, (int, float)) and not isinstance(c, bool) and 0.0 <= c <= 1.0) for c in curve
        ):
            raise WireError("header", "game_state success_curve must hold successes in [0, 1] or null")
        return cls(
            algo=_field(b, "algo", str, k),
            task_id=_field(b, "task_id", str, k),
            iteration=_field(b, "iteration", int, k, lo=0),
            phase=_field(b, "phase", str, k, choices=PHASES),
            model_version=_field(b, "model_version", int, k, lo=0),
            policy_version=_field(b, "policy_version", int, k, lo=0),
            deployed_policy_version=_field(b, "deployed_policy_version", int, k, lo=-1),
            candidate_policy_version=_field(b, "candidate_policy_version", int, k, lo=0, optional=True),
            data_policy_version=_field(b, "data_policy_version", int, k, lo=-1),
            samples=_field(b, "samples", int, k, lo=0),
            sample_budget=_field(b, "sample_budget", int, k, lo=0),
            round_samples=_field(b, "round_samples", int, k, lo=0),
            round_target=_field(b, "round_target", int, k, lo=0),
            round_random_samples=_field(b, "round_random_samples", int, k, lo=0),
            round_random_target=_field(b, "round_random_target", int, k, lo=0),
            behavior=_field(b, "behavior", str, k, choices=BEHAVIORS),
            collect=_field(b, "collect", bool, k),
            estop=_field(b, "estop", bool, k),
            done=_field(b, "done", bool, k),
            request=_request(b),
            eval_success=_field(b, "eval_success", (int, float), k, lo=0.0, hi=1.0, optional=True),
            success_curve=tuple(curve),
            wall_s=float(_field(b, "wall_s", (int, float), k, lo=0.0)),
            noise_policy=_field(b, "noise_policy", str, k, choices=_noise_policies()),
            explore_noise_color=float(_field(b, "explore_noise_color", (int, float), k, lo=0.0, hi=2.0)),
            explore_min_std=float(_field(b, "explore_min_std", (int, float), k, lo=0.0, hi=1.0)),
            explore_mean_fraction=float(_field(b, "explore_mean_fraction", (int, float), k, lo=0.0, hi=1.0)),
        )


def _noise_policies() -> tuple[str, ...]:
    from mbrl_ros.core.exploration import NOISE_POLICIES  # the random policies of MAL + random noise

    return NOISE_POLICIES


def unpack_game_state(text: str) -> GameState:
    """The coordinator's game state, validated in full (:class:`GameState`)."""
    return GameState.from_json(text)


# ---------------------------------------------------------------------------------------
# std_msgs conversions (lazy ROS imports)
# ---------------------------------------------------------------------------------------
def to_msg(data: bytes):
    """``bytes`` -> ``std_msgs/UInt8MultiArray``."""
    from std_msgs.msg import UInt8MultiArray

    msg = UInt8MultiArray()
    msg.data = bytes(data)
    return msg


def from_msg(msg) -> bytes:
    """``std_msgs/UInt8MultiArray`` -> ``bytes`` (rclpy gives an ``array('B')``)."""
    data = msg.data
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if hasattr(data, "tobytes"):
        return data.tobytes()
    return bytes(data)


def to_string_msg(text: str):
    from std_msgs.msg import String

    msg = String()
    msg.data = text
    return msg


def finite_or_none(x: Any) -> Optional[float]:
    """A JSON-safe float (``None`` for NaN/inf/None) for headers and state fields."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
