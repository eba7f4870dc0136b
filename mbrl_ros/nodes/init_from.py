"""``init_from:=RUN init_from_parts:=policy,model,buffer``: what the learner nodes start from (issue 15).

The graph's side of ``mbrl-ros train --init-from RUN --init-from-parts ...``
(:func:`mbrl_ros.core.train.init_game_from`): the same parts give the players the same starting
state, read from the finished run's checkpoint with the safetensors readers of
:mod:`mbrl_ros.core.checkpoint` (no pickle).

- ``policy`` (always): the policy improver loads the run's policy and value
  (:func:`mbrl_ros.core.train.init_policy_player_from`); it is the game's policy v0.
- ``model``: the model learner loads the run's ensemble (weights and normalisation) and its fit
  count (a warm start: the first fit of this game continues from it, as in-process).
- ``buffer``: the run's buffer episodes are the initial data of both players' buffers (the model
  learner fits on them, the policy improver starts its model rollouts from their states), kept in
  this game's buffer kind and size (the FIFO keeps the newest). They are NOT episodes of this
  game: they never travel on ``/mbrl/transitions``, so the coordinator's sample budget, the
  learners' ledgers and the MCAP record hold only the transitions this game's collectors
  published. A restarted model learner finds them in its own checkpoint (its buffer); before
  its first checkpoint it loads them again from the source run, then replays the MCAP record
  as always, so the source's episodes come first in both cases and are never counted twice.

The nodes declare the two parameters with :func:`declare_init_from` and call the loaders below,
which need no node (the tests call them without DDS).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from mbrl_ros.core.buffers import EpisodeBuffer
from mbrl_ros.core.train import init_checkpoint_dir, parse_init_parts

PathLike = Union[str, Path]


def declare_init_from(node: Any) -> tuple[str, tuple[str, ...]]:
    """Declare ``init_from`` and ``init_from_parts`` (read-only) on a learning node; returns the
    source run (``''``: a fresh game) and its parts (``()`` then). ``ValueError`` (the node exits 2)
    on a bad part or a source without checkpoint."""
    from mbrl_ros.nodes.parameters import declare

    run_dir = declare(
        node, "init_from", "", "finished run whose policy the game starts from ('' = fresh)", read_only=True
    )
    parts_text = declare(
        node,
        "init_from_parts",
        "policy",
        "what the game takes from init_from: policy[,model][,buffer] (the model learner's ensemble; "
        "the run's buffer episodes as both players' initial data, not counted as this game's samples)",
        read_only=True,
    )
    return str(run_dir).strip(), init_parts(run_dir, parts_text)


def init_parts(run_dir: str, parts_text: Union[str, Sequence[str], None]) -> tuple[str, ...]:
    """The parts a node starts from (``()`` without a source run); ``ValueError`` (one line) on a
    bad part or a run without checkpoint."""
    if not str(run_dir).strip():
        return ()
    try:
        parts = parse_init_parts(parts_text)
    except ValueError as exc:
        text = parts_text if isinstance(parts_text, str) or parts_text is None else ",".join(parts_text)
        raise ValueError(str(exc).replace("--init-from-parts", f"init_from_parts:={text or ''}")) from None
    source_checkpoint(run_dir)
    return parts


def source_checkpoint(run_dir: PathLike) -> Path:
    """The checkpoint of the source run, checked (``ValueError`` worded for ``init_from:=``)."""
    try:
        return init_checkpoint_dir(run_dir)
    except ValueError as exc:
        raise ValueError(str(exc).replace("--init-from ", "init_from:=", 1)) from None


def source_state(run_dir: PathLike, task_id: str) -> dict:
    """The source run's ``state.json``; ``ValueError`` when it learnt another task."""
    state = json.loads((source_checkpoint(run_dir) / "state.json").read_text())
    learnt = state.get("config", {}).get("task_id")
    if learnt != task_id:
        raise ValueError(f"init_from:={run_dir}: the run learnt {learnt!r}, this game plays {task_id!r}")
    return state


def init_model_player_from(player: Any, task_id: str, run_dir: PathLike) -> dict:
    """Load the source run's ensemble (weights and normalisation statistics) into a model player
    and take its fit count (warm start, as :func:`~mbrl_ros.core.train.init_game_from`); returns
    the source's state.json. A network of other widths is one clear line (``ValueError``)."""
    from mbrl_ros.core.checkpoint import load_module, read_checkpoint

    state = source_state(run_dir, task_id)
    tensors, _ = read_checkpoint(source_checkpoint(run_dir))
    if not any(k.startswith("ensemble.") for k in tensors):
        raise ValueError(f"init_from:={run_dir}: its checkpoint holds no model ensemble")
    try:
        load_module("ensemble", player.ensemble, tensors)
    except RuntimeError as exc:  # shapes: another model_hidden / ensemble_size / learned_reward
        first = str(exc).strip().splitlines()[-1].strip()
        raise ValueError(
            f"init_from:={run_dir}: its ensemble network does not fit this game's configuration ({first}); "
            "use the source run's widths"
        ) from None
    player.n_fits = int(state.get("model_fits", 0))
    return state


def init_buffer_from(run_dir: PathLike, task_id: str, kind: str, capacity: Optional[int]) -> EpisodeBuffer:
    """The source run's buffer episodes (and every initial state it kept) in a buffer of this
    game's ``kind`` and ``capacity``: episodes, ids, order and arrays as the source saved them."""
    source_state(run_dir, task_id)
    d = source_checkpoint(run_dir)
    if not (d / "buffer.json").is_file():
        raise ValueError(f"init_from:={run_dir}: its checkpoint holds no buffer ({d / 'buffer.json'})")
    return EpisodeBuffer.load_as(d, kind, capacity)


def init_record(run_dir: PathLike, parts: Sequence[str]) -> dict:
    """What a game started from (the coordinator's ``init_from.json`` and summary entry), as
    ``mbrl-ros train`` records it: ``{source, parts, source_samples, source_final_success}``."""
    from mbrl_ros.core.train import init_source_record

    return init_source_record(source_checkpoint(run_dir), parts)
