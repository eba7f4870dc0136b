"""Real-world experience: episodes and the model player's replay buffer.

PAL keeps a small FIFO buffer (the B most recent transitions, so the model best-responds to
the current policy's data); MAL keeps every transition ("aggregate"). The buffer stores whole
episodes, so episode ids (duplicate detection when many collectors feed one learner) stay
available, and it keeps the initial state of every episode it was ever given, also after the
FIFO dropped the episode (start states for model rollouts, as the paper's code keeps them).

State is saved as safetensors (arrays) + JSON (episode metadata); never pickle.
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from safetensors.numpy import load_file, save_file


@dataclass
class Episode:
    """One episode in the world: T transitions of a policy version on one robot."""

    obs: np.ndarray  # [T+1, obs_dim]: observations, including the final one
    actions: np.ndarray  # [T, act_dim]: actions sent to the world (the world clips to [-1, 1])
    rewards: np.ndarray  # [T]
    terminated: bool  # the task's termination rule fired at the last step (not a time limit)
    episode_id: str
    policy_version: int  # -1: random (exploration) policy
    robot_id: str = "sim"
    aborted: bool = False  # stopped by a fault or e-stop (the data up to the fault are real)
    success: Optional[bool] = None  # task success at the final step, when known
    aux: Optional[np.ndarray] = None  # [T+1, aux_dim]: model-only measurements (task.aux_names)

    def __post_init__(self) -> None:
        self.obs = np.asarray(self.obs, dtype=np.float64)
        self.actions = np.asarray(self.actions, dtype=np.float64)
        self.rewards = np.asarray(self.rewards, dtype=np.float64).reshape(-1)
        if self.aux is not None:
            self.aux = np.asarray(self.aux, dtype=np.float64)
            if self.aux.ndim == 2 and self.aux.shape[1] == 0:
                self.aux = None  # a task without model-only state

    def __len__(self) -> int:
        return int(self.actions.shape[0]) if self.actions.ndim == 2 else 0

    def at_wire_precision(self) -> "Episode":
        """This episode as the ROS graph's learners receive it: transitions travel as float32
        (:func:`mbrl_ros.wire.pack_episode`), so ``mbrl-ros train`` learns from the same numbers."""

        def f32(a: np.ndarray) -> np.ndarray:
            return np.asarray(a, dtype=np.float32).astype(np.float64)

        return dataclasses.replace(
            self,
            obs=f32(self.obs),
            actions=f32(self.actions),
            rewards=f32(self.rewards),
            aux=None if self.aux is None else f32(self.aux),
        )

    def validate(self, task: Any) -> "Episode":
        """Raise ValueError on wrong sizes or non-finite values for ``task`` (a TaskSpec)."""
        info = task.info
        T = len(self)
        if self.actions.ndim != 2 or self.actions.shape[1] != info.act_dim:
            raise ValueError(
                f"episode {self.episode_id}: actions must be [T, {info.act_dim}], got {self.actions.shape}"
            )
        if T < 1:
            raise ValueError(f"episode {self.episode_id}: needs at least one transition")
        if self.obs.shape != (T + 1, info.obs_dim):
            raise ValueError(f"episode {self.episode_id}: obs must be [{T + 1}, {info.obs_dim}], got {self.obs.shape}")
        if self.rewards.shape != (T,):
            raise ValueError(f"episode {self.episode_id}: rewards must be [{T}], got {self.rewards.shape}")
        if T > info.horizon:
            raise ValueError(f"episode {self.episode_id}: {T} steps exceed the task horizon {info.horizon}")
        aux_dim = getattr(task, "aux_dim", 0)
        if aux_dim and (self.aux is None or self.aux.shape != (T + 1, aux_dim)):
            got = None if self.aux is None else self.aux.shape
            raise ValueError(
                f"episode {self.episode_id}: aux ({', '.join(task.aux_names[:2])}, ...) must be "
                f"[{T + 1}, {aux_dim}], got {got}"
            )
        if not aux_dim and self.aux is not None:
            raise ValueError(f"episode {self.episode_id}: task {info.task_id} has no model-only state, got aux")
        for name in ("obs", "actions", "rewards") + (("aux",) if aux_dim else ()):
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"episode {self.episode_id}: {name} contain non-finite values")
        if not self.episode_id:
            raise ValueError("episode_id must be a non-empty string")
        return self

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())

    def meta(self) -> dict[str, Any]:
        return {
            "episode_id": self.episode_id,
            "policy_version": int(self.policy_version),
            "robot_id": self.robot_id,
            "terminated": bool(self.terminated),
            "aborted": bool(self.aborted),
            "length": len(self),
            "success": None if self.success is None else bool(self.success),
        }


class EpisodeBuffer:
    """Episodes kept for the model player: ``fifo`` (newest ``capacity`` transitions) or ``aggregate``."""

    def __init__(self, kind: str = "fifo", capacity: Optional[int] = None) -> None:
        if kind not in ("fifo", "aggregate"):
            raise ValueError(f"buffer kind must be 'fifo' or 'aggregate', got {kind!r}")
        if kind == "fifo" and (capacity is None or capacity <= 0):
            raise ValueError("a fifo buffer needs a positive capacity (transitions)")
        if capacity is not None and capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.kind = kind
        self.capacity = capacity if kind == "fifo" else None
        self._episodes: deque[Episode] = deque()
        self._ids: set[str] = set()
        self._n = 0
        self.total_added = 0  # transitions ever added (the FIFO drops old ones)
        # the first observation (and aux) of every episode ever added, evicted ones included
        self._initial_obs: list[np.ndarray] = []
        self._initial_aux: list[np.ndarray] = []

    def __len__(self) -> int:
        return self._n

    @property
    def episodes(self) -> list[Episode]:
        return list(self._episodes)

    def episode_ids(self) -> list[str]:
        return [e.episode_id for e in self._episodes]

    def add_episode(self, episode: Episode, before: Optional[str] = None) -> bool:
        """Add an episode (duplicates by id are ignored: returns False); FIFO evicts the oldest.

        ``before``: the id of an episode in the buffer that the new one goes in front of (and its
        start state in front of that one's), for an episode that was published earlier but
        arrived later (a graph learner's gap filled from the record); an id no longer in the
        buffer appends as usual."""
        if episode.episode_id in self._ids:
            return False
        if len(episode) < 1:
            raise ValueError(f"episode {episode.episode_id} has no transitions")
        if self._episodes and (episode.aux is None) != (self._episodes[0].aux is None):
            raise ValueError(f"episode {episode.episode_id}: every episode of a buffer carries aux, or none does")
        at = len(self._episodes)
        if before is not None and before in self._ids:
            at = next(i for i, e in enumerate(self._episodes) if e.episode_id == before)
        # the buffer's episodes are the newest entries of the start-state lists, in the same order
        init_at = len(self._initial_obs) - (len(self._episodes) - at)
        self._episodes.insert(at, episode)
        self._ids.add(episode.episode_id)
        self._n += len(episode)
        self.total_added += len(episode)
        self._initial_obs.insert(init_at, episode.obs[0].copy())
        if episode.aux is not None:
            self._initial_aux.insert(init_at, episode.aux[0].copy())
        self._evict()
        return True

    def set_capacity(self, capacity: Optional[int]) -> None:
        """A FIFO buffer's new size (the oldest episodes go first); an aggregate buffer has none."""
        if self.kind == "fifo":
            if capacity is None or capacity <= 0:
                raise ValueError("a fifo buffer needs a positive capacity (transitions)")
            self.capacity = capacity
            self._evict()

    def _evict(self) -> None:
        if self.capacity is not None:
            # keep at least the newest episode even if it alone exceeds the capacity
            while self._n > self.capacity and len(self._episodes) > 1:
                old = self._episodes.popleft()
                self._ids.discard(old.episode_id)
                self._n -= len(old)

    def arrays(self) -> dict[str, np.ndarray]:
        """All transitions: obs, actions, rewards, next_obs, terminals, timesteps, policy_versions."""
        if not self._episodes:
            raise ValueError("the buffer is empty")
        eps = self._episodes
        terminals = [np.zeros(len(e), dtype=bool) for e in eps]
        for t, e in zip(terminals, eps):
            t[-1] = e.terminated
        out = {
            "obs": np.concatenate([e.obs[:-1] for e in eps]),
            "actions": np.concatenate([e.actions for e in eps]),
            "rewards": np.concatenate([e.rewards for e in eps]),
            "next_obs": np.concatenate([e.obs[1:] for e in eps]),
            "terminals": np.concatenate(terminals),
            "timesteps": np.concatenate([np.arange(len(e)) for e in eps]),
            "policy_versions": np.concatenate([np.full(len(e), e.policy_version) for e in eps]),
        }
        if eps[0].aux is not None:
            auxs = [e.aux for e in eps if e.aux is not None]  # every episode of a task has it
            out["aux"] = np.concatenate([a[:-1] for a in auxs])
            out["next_aux"] = np.concatenate([a[1:] for a in auxs])
        return out

    def initial_observations(self) -> np.ndarray:
        """The first observation of every episode in the buffer [n_episodes, obs_dim]."""
        if not self._episodes:
            raise ValueError("the buffer is empty")
        return np.stack([e.obs[0] for e in self._episodes])

    def initial_states(self) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """``(obs, aux)`` of the first step of every episode ever added (evicted ones included):
        the start states of model rollouts. ``aux`` is None for tasks without model-only state."""
        if not self._initial_obs:
            raise ValueError("the buffer is empty")
        aux = np.stack(self._initial_aux) if self._initial_aux else None
        return np.stack(self._initial_obs), aux

    # -- persistence (safetensors + JSON) ----------------------------------------------
    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        tensors: dict[str, np.ndarray] = {}
        metas = []
        for i, e in enumerate(self._episodes):
            tensors[f"{i}.obs"] = np.ascontiguousarray(e.obs)
            tensors[f"{i}.actions"] = np.ascontiguousarray(e.actions)
            tensors[f"{i}.rewards"] = np.ascontiguousarray(e.rewards)
            if e.aux is not None:
                tensors[f"{i}.aux"] = np.ascontiguousarray(e.aux)
            metas.append(e.meta())
        if self._initial_obs:
            tensors["initial.obs"] = np.ascontiguousarray(np.stack(self._initial_obs))
        if self._initial_aux:
            tensors["initial.aux"] = np.ascontiguousarray(np.stack(self._initial_aux))
        meta = {"kind": self.kind, "capacity": self.capacity, "total_added": self.total_added, "episodes": metas}
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> "EpisodeBuffer":
        buf = cls(meta["kind"], meta["capacity"])
        for i, m in enumerate(meta["episodes"]):
            buf.add_episode(
                Episode(
                    obs=tensors[f"{i}.obs"],
                    actions=tensors[f"{i}.actions"],
                    rewards=tensors[f"{i}.rewards"],
                    terminated=m["terminated"],
                    episode_id=m["episode_id"],
                    policy_version=m["policy_version"],
                    robot_id=m["robot_id"],
                    aborted=m["aborted"],
                    success=m.get("success"),
                    aux=tensors.get(f"{i}.aux"),
                )
            )
        buf.total_added = int(meta["total_added"])
        if "initial.obs" in tensors:  # every initial state, evicted episodes' included
            buf._initial_obs = list(np.asarray(tensors["initial.obs"], dtype=np.float64))
            buf._initial_aux = (
                list(np.asarray(tensors["initial.aux"], dtype=np.float64)) if "initial.aux" in tensors else []
            )
        return buf

    def save(self, directory: Union[str, Path], name: str = "buffer") -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors, meta = self.state()
        if tensors:
            save_file(tensors, str(d / f"{name}.safetensors"))
        (d / f"{name}.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Union[str, Path], name: str = "buffer") -> "EpisodeBuffer":
        d = Path(directory)
        meta = json.loads((d / f"{name}.json").read_text())
        tensors = load_file(str(d / f"{name}.safetensors")) if meta["episodes"] else {}
        return cls.from_state(tensors, meta)

    @classmethod
    def load_as(cls, directory: Union[str, Path], kind: str, capacity: Optional[int]) -> "EpisodeBuffer":
        """A saved buffer's episodes (and every initial state it kept) in a buffer of another
        ``kind`` / ``capacity`` (a FIFO keeps the newest): another game's buffer as initial data."""
        d = Path(directory)
        meta = json.loads((d / "buffer.json").read_text())
        tensors = load_file(str(d / "buffer.safetensors")) if meta["episodes"] else {}
        return cls.from_state(tensors, {**meta, "kind": kind, "capacity": capacity})
