"""Episodes arriving from the collectors: validate, de-duplicate, detect gaps, fill a buffer.

Used by the model learner and the policy improver (both keep the game's buffer: FIFO for PAL,
aggregate for MAL) and by the coordinator (counting). No ROS here: the nodes hand over the
bytes of each ``std_msgs/UInt8MultiArray``; a rejected message raises nothing, it is counted
per reason and reported, and never reaches the buffer.

Exactly-once: every episode carries a unique id; an id seen before is a duplicate and is
dropped. Every collector process numbers its published episodes 0, 1, 2, ... in its own
``(robot_id, stream)``; a jump in that sequence is a gap (a lost message) and is reported.
:meth:`EpisodeIntake.replay_mcap` fills in episodes from the run's MCAP record (after a
restart, or when a requested episode never arrived live): duplicates are dropped as usual, so
replaying is always safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from mbrl_ros import wire
from mbrl_ros.core.buffers import EpisodeBuffer

PURPOSE_TRAIN = "train"


@dataclass
class IntakeResult:
    """What happened to one message: accepted, duplicate, or rejected (with reason)."""

    accepted: bool
    episode: Optional[wire.EpisodeRecord] = None
    duplicate: bool = False
    reason: str = ""
    message: str = ""


@dataclass
class EpisodeIntake:
    """The ledger of every accepted episode id, plus (optionally) the game's buffer."""

    task: Any
    buffer: Optional[EpisodeBuffer] = None
    max_bytes: int = wire.MAX_EPISODE_BYTES
    ids: list[str] = field(default_factory=list)  # accepted ids in arrival order
    samples: int = 0  # transitions accepted (training episodes)
    rejected: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    gaps: int = 0
    _seen: set[str] = field(default_factory=set)
    _last_seq: dict[str, int] = field(default_factory=dict)
    _seq_of: dict[str, tuple[str, int]] = field(default_factory=dict)  # buffer episode id -> (stream, sequence)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __contains__(self, episode_id: str) -> bool:
        return episode_id in self._seen

    def missing(self, episode_ids: Iterable[str]) -> list[str]:
        with self._lock:
            return [e for e in episode_ids if e not in self._seen]

    def ingest(self, data: bytes) -> IntakeResult:
        """Validate one message and add its episode (training episodes only) to the buffer."""
        try:
            rec = wire.unpack_episode(data, self.task, self.max_bytes)
            core = rec.to_core().validate(self.task)  # the core's own checks, belt and braces
        except wire.WireError as exc:
            return self._reject(exc.reason, str(exc))
        except ValueError as exc:
            return self._reject("size", str(exc))
        with self._lock:
            if rec.episode_id in self._seen:
                self.duplicates += 1
                return IntakeResult(
                    False,
                    rec,
                    duplicate=True,
                    reason="duplicate",
                    message=f"episode {rec.episode_id} was already ingested",
                )
            self._seen.add(rec.episode_id)
            self.ids.append(rec.episode_id)
            key = f"{rec.robot_id}/{rec.stream}"
            last = self._last_seq.get(key)
            if last is not None and rec.sequence > last + 1:
                self.gaps += rec.sequence - last - 1
            if last is None or rec.sequence > last:
                self._last_seq[key] = rec.sequence
            if purpose(rec) == PURPOSE_TRAIN:
                self.samples += rec.length
                if self.buffer is not None:
                    # published before episodes already here (a gap filled late, e.g. from the
                    # record): it goes in front of the next one of its stream, so the buffer
                    # holds each collector's episodes in the order they were played
                    before = (
                        self._next_in_stream(key, rec.sequence) if last is not None and rec.sequence < last else None
                    )
                    self.buffer.add_episode(core, before=before)
                    self._seq_of[rec.episode_id] = (key, rec.sequence)
        return IntakeResult(True, rec)

    def _next_in_stream(self, key: str, sequence: int) -> Optional[str]:
        """The buffer's first episode of stream ``key`` with a later sequence number (None: none)."""
        assert self.buffer is not None
        for episode_id in self.buffer.episode_ids():
            k, seq = self._seq_of.get(episode_id, ("", -1))
            if k == key and seq > sequence:
                return episode_id
        return None

    def _reject(self, reason: str, message: str) -> IntakeResult:
        with self._lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return IntakeResult(False, reason=reason, message=message)

    def replay_mcap(
        self,
        path: Path,
        topic: str,
        on_result: Optional[Callable[[IntakeResult], None]] = None,
        only: Optional[set[str]] = None,
    ) -> int:
        """Ingest the episodes recorded in an MCAP file (all, or the ids in ``only``); returns how many were new."""
        from std_msgs.msg import UInt8MultiArray

        from mbrl_ros.nodes.recording import read_ros_messages

        if not Path(path).is_file():
            return 0
        new = 0
        for msg, _t in read_ros_messages(path, topic, UInt8MultiArray):
            data = wire.from_msg(msg)
            if only is not None:
                try:
                    if wire.peek_header(data).get("episode_id") not in only:
                        continue
                except wire.WireError:
                    continue
            r = self.ingest(data)
            if r.accepted:
                new += 1
            if on_result is not None and not r.duplicate:
                on_result(r)
        return new

    def buffer_snapshot(self) -> EpisodeBuffer:
        """A consistent copy of the buffer for a fit or an NPG step (episodes are never mutated,
        so the copy is shallow); episodes arriving meanwhile wait on the lock briefly."""
        if self.buffer is None:
            raise ValueError("this intake keeps no buffer")
        with self._lock:
            snap = EpisodeBuffer(self.buffer.kind, self.buffer.capacity)
            for e in self.buffer.episodes:
                snap.add_episode(e)
            return snap

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict, dict]:
        """``(buffer tensors, buffer metadata, ledger)`` taken together, for a checkpoint."""
        if self.buffer is None:
            raise ValueError("this intake keeps no buffer")
        with self._lock:
            tensors, meta = self.buffer.state()
            return tensors, meta, self.state()

    # -- persistence: the ledger next to the buffer checkpoint --------------------------
    def state(self) -> dict:
        with self._lock:
            return {
                "ids": list(self.ids),
                "samples": self.samples,
                "last_seq": dict(self._last_seq),
                "rejected": dict(self.rejected),
                "duplicates": self.duplicates,
                "gaps": self.gaps,
            }

    def load_state(self, state: dict) -> None:
        with self._lock:
            self.ids = [str(i) for i in state.get("ids", [])]
            self._seen = set(self.ids)
            self.samples = int(state.get("samples", 0))
            self._last_seq = {str(k): int(v) for k, v in state.get("last_seq", {}).items()}
            self.rejected = {str(k): int(v) for k, v in state.get("rejected", {}).items()}
            self.duplicates = int(state.get("duplicates", 0))
            self.gaps = int(state.get("gaps", 0))


def purpose(rec: wire.EpisodeRecord) -> str:
    """``"train"`` (the game's data) or ``"eval"`` (evaluation only, never in a buffer)."""
    return str(rec.extra.get("purpose", PURPOSE_TRAIN))
