"""Random streams of the game, one per player, so that a player draws the same numbers wherever it runs.

In ``mbrl-ros train`` both players share one process; in the ROS graph each has its own. If
they shared torch's global generator, the model player's minibatches would depend on how many
numbers the policy player drew before it (and the other way round), and the two ways of running
the game could not agree. Each player therefore owns a torch random stream, seeded from the
game's seed and the player's name, and draws from it only inside :meth:`TorchStream.active`
(construction of its networks, every move). Every episode a collector plays has its own numpy
generator (:func:`start_episode`), derived from the collector's seed and the episode's index
among the episodes it has delivered: its reset, exploration noise and random policy. An episode
that is started but dropped (a stop, a round that filled meanwhile) therefore shifts nothing:
the next one draws what the dropped one would have, as ``mbrl-ros train`` draws it.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import Iterator, Optional

import numpy as np
import torch

MODEL_PLAYER = "model_player"
POLICY_PLAYER = "policy_player"


def stream_seed(seed: int, name: str) -> int:
    """A 63-bit seed for stream ``name`` of the game seeded ``seed`` (stable across processes)."""
    digest = hashlib.sha256(f"mbrl_ros/{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def start_episode(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """The reset seed and the generator of episode ``index`` (0, 1, ... among the episodes
    delivered so far) of a collector seeded ``seed``: one collector of a graph seeded ``seed``
    and ``mbrl-ros train --seed seed`` play the same episodes. The reset seed is drawn first,
    then the behaviour (random-policy weights, exploration noise) draws from the generator."""
    rng = np.random.default_rng([int(seed), int(index)])
    return int(rng.integers(0, 2**31 - 1)), rng


class TorchStream:
    """A torch random stream made current only inside :meth:`active` (CPU, and ``device`` if CUDA)."""

    def __init__(self, seed: int, name: str, device: Optional[torch.device] = None) -> None:
        self.name = name
        self.seed = stream_seed(seed, name)
        self.device = device if device is not None and torch.device(device).type == "cuda" else None
        self._cpu = torch.Generator().manual_seed(self.seed).get_state()
        self._cuda: Optional[torch.Tensor] = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Draws of torch's default generators inside come from this stream; the global state is
        restored on exit (code outside any stream keeps its own sequence)."""
        devices = [self.device] if self.device is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self._cpu)
            if self.device is not None:
                if self._cuda is None:
                    torch.cuda.manual_seed(self.seed)
                else:
                    torch.cuda.set_rng_state(self._cuda, self.device)
            try:
                yield
            finally:
                self._cpu = torch.get_rng_state()
                if self.device is not None:
                    self._cuda = torch.cuda.get_rng_state(self.device)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The stream's state for a checkpoint."""
        out = {f"rng_{self.name}": self._cpu.clone()}
        if self._cuda is not None:
            out[f"rng_{self.name}_cuda"] = self._cuda.clone()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self._cpu = tensors[f"rng_{self.name}"].clone()
        if self.device is not None and f"rng_{self.name}_cuda" in tensors:
            self._cuda = tensors[f"rng_{self.name}_cuda"].clone()
