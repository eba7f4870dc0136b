"""The four ROBEL tasks of the paper, on modern MuJoCo, and the hidden-region point mass
(issue 17), with a Gymnasium interface.

``get_task(id)`` returns the pure task spec (observation, action map, batched reward / done /
success, model space) shared by the simulator, the hardware driver and the learner;
``make_env(id)`` returns the simulated world as a ``gymnasium.Env`` (MuJoCo is imported only
then). Importing this package registers the gym ids ``mbrl_ros/DClawTurnFixed-v0``, ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import gymnasium

from mbrl_ros.tasks.base import InitialState, JointLimits, TaskInfo, TaskSpec
from mbrl_ros.tasks.dclaw_turn import DClawTurn
from mbrl_ros.tasks.dkitty import DKittyOrient, DKittyStand
from mbrl_ros.tasks.hidden_region import HiddenRegionTask

if TYPE_CHECKING:  # pragma: no cover
    from mbrl_ros.tasks.sim import RobelEnv


@dataclass(frozen=True)
class _Entry:
    """One registered task: how to build its spec, and its simulated world's entry point."""

    factory: Callable[..., TaskSpec]
    env_entry_point: str  # "module:Class" of the gymnasium.Env (called with task_id=...)


# The one list to extend when adding a task: ids, gym ids and horizons come from each spec's TaskInfo.
_ENTRIES: tuple[_Entry, ...] = (
    _Entry(lambda **kw: DClawTurn(random=False, **kw), "mbrl_ros.tasks.sim:RobelEnv"),
    _Entry(lambda **kw: DClawTurn(random=True, **kw), "mbrl_ros.tasks.sim:RobelEnv"),
    _Entry(lambda **kw: DKittyOrient(random=True, **kw), "mbrl_ros.tasks.sim:RobelEnv"),
    _Entry(lambda **kw: DKittyStand(random=True, **kw), "mbrl_ros.tasks.sim:RobelEnv"),
    _Entry(lambda **kw: HiddenRegionTask(**kw), "mbrl_ros.tasks.hidden_region:HiddenRegionEnv"),
)
_INFOS: dict[str, TaskInfo] = {}
_FACTORIES: dict[str, Callable[..., TaskSpec]] = {}
_ENV_ENTRY_POINTS: dict[str, str] = {}
for _entry in _ENTRIES:
    _info = _entry.factory().info
    _INFOS[_info.task_id] = _info
    _FACTORIES[_info.task_id] = _entry.factory
    _ENV_ENTRY_POINTS[_info.task_id] = _entry.env_entry_point

TASK_IDS: tuple[str, ...] = tuple(_INFOS)
GYM_IDS: dict[str, str] = {tid: info.gym_id for tid, info in _INFOS.items()}
HORIZONS: dict[str, int] = {tid: info.horizon for tid, info in _INFOS.items()}
TASKS_BY_ROBOT: dict[str, tuple[str, ...]] = {
    robot: tuple(tid for tid, info in _INFOS.items() if info.robot == robot)
    for robot in dict.fromkeys(info.robot for info in _INFOS.values())
}
#: the ROBEL robot tasks (D'Claw, D'Kitty): the ones with MuJoCo scenes and hardware drivers
ROBEL_TASK_IDS: tuple[str, ...] = TASKS_BY_ROBOT.get("dclaw", ()) + TASKS_BY_ROBOT.get("dkitty", ())
# Also accept ROBEL's own names ("DClawTurnFixed-v0").
_ALIASES: dict[str, str] = {}
for _tid, _gid in GYM_IDS.items():
    _ALIASES[_tid] = _tid
    _ALIASES[_gid.lower()] = _tid
    _ALIASES[_gid.split("/", 1)[1].lower()] = _tid


def canonical_task_id(name: str) -> str:
    """The short task id for a task id, gym id or ROBEL name; ValueError listing valid ids."""
    if not isinstance(name, str) or name.strip().lower() not in _ALIASES:
        raise ValueError(
            f"unknown task {name!r}; valid task ids: {', '.join(TASK_IDS)} (or gym ids: {', '.join(GYM_IDS.values())})"
        )
    return _ALIASES[name.strip().lower()]


def get_task(task_id_or_gym_id: str, success_threshold: Optional[float] = None) -> TaskSpec:
    """A new task spec by task id or gym id (``success_threshold``: D'Claw only)."""
    task_id = canonical_task_id(task_id_or_gym_id)
    kwargs: dict[str, Any] = {}
    if success_threshold is not None:
        if not task_id.startswith("dclaw"):
            raise ValueError(f"success_threshold is a D'Claw option; {task_id} has a fixed success rule")
        kwargs["success_threshold"] = float(success_threshold)
    return _FACTORIES[task_id](**kwargs)


def make_env(task_id: str, **kwargs: Any) -> "RobelEnv":
    """The simulated task as a ``gymnasium.Env`` with ``.task`` (see ``RobelEnv`` for kwargs;
    the hidden-region world takes none)."""
    import importlib

    tid = canonical_task_id(task_id)
    module, cls = _ENV_ENTRY_POINTS[tid].split(":")
    return getattr(importlib.import_module(module), cls)(tid, **kwargs)


def _register() -> None:
    for task_id, gym_id in GYM_IDS.items():
        if gym_id not in gymnasium.registry:
            gymnasium.register(
                id=gym_id,
                entry_point=_ENV_ENTRY_POINTS[task_id],
                kwargs={"task_id": task_id},
                max_episode_steps=HORIZONS[task_id],
            )


_register()

__all__ = [
    "TASK_IDS",
    "GYM_IDS",
    "HORIZONS",
    "TASKS_BY_ROBOT",
    "ROBEL_TASK_IDS",
    "HiddenRegionTask",
    "TaskSpec",
    "TaskInfo",
    "JointLimits",
    "InitialState",
    "DClawTurn",
    "DKittyOrient",
    "DKittyStand",
    "canonical_task_id",
    "get_task",
    "make_env",
]
