"""The four ROBEL tasks of the paper, on modern MuJoCo, with a Gymnasium interface.

``get_task(id)`` returns the pure task spec (observation, action map, batched reward / done /
success, model space) shared by the simulator, the hardware driver and the learner;
``make_env(id)`` returns the simulated world as a ``gymnasium.Env`` (MuJoCo is imported only
then). Importing this package registers the gym ids ``mbrl_ros/DClawTurnFixed-v0``, ...
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

import gymnasium

from mbrl_ros.tasks.base import InitialState, JointLimits, TaskInfo, TaskSpec
from mbrl_ros.tasks.dclaw_turn import DClawTurn
from mbrl_ros.tasks.dkitty import DKittyOrient, DKittyStand

if TYPE_CHECKING:  # pragma: no cover
    from mbrl_ros.tasks.sim import RobelEnv

TASK_IDS: tuple[str, ...] = ("dclaw-turn-fixed", "dclaw-turn-random", "dkitty-orient-random", "dkitty-stand-random")

_FACTORIES: dict[str, Callable[..., TaskSpec]] = {
    "dclaw-turn-fixed": lambda **kw: DClawTurn(random=False, **kw),
    "dclaw-turn-random": lambda **kw: DClawTurn(random=True, **kw),
    "dkitty-orient-random": lambda **kw: DKittyOrient(random=True, **kw),
    "dkitty-stand-random": lambda **kw: DKittyStand(random=True, **kw),
}
GYM_IDS: dict[str, str] = {
    "dclaw-turn-fixed": "mbrl_ros/DClawTurnFixed-v0",
    "dclaw-turn-random": "mbrl_ros/DClawTurnRandom-v0",
    "dkitty-orient-random": "mbrl_ros/DKittyOrientRandom-v0",
    "dkitty-stand-random": "mbrl_ros/DKittyStandRandom-v0",
}
HORIZONS: dict[str, int] = {"dclaw-turn-fixed": 40, "dclaw-turn-random": 40, "dkitty-orient-random": 80,
                            "dkitty-stand-random": 80}
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
            f"unknown task {name!r}; valid task ids: {', '.join(TASK_IDS)} "
            f"(or gym ids: {', '.join(GYM_IDS.values())})"
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
    """The simulated task as a ``gymnasium.Env`` with ``.task`` (see ``RobelEnv`` for kwargs)."""
    from mbrl_ros.tasks.sim import RobelEnv

    return RobelEnv(canonical_task_id(task_id), **kwargs)


def _register() -> None:
    for task_id, gym_id in GYM_IDS.items():
        if gym_id not in gymnasium.registry:
            gymnasium.register(
                id=gym_id,
                entry_point="mbrl_ros.tasks.sim:RobelEnv",
                kwargs={"task_id": task_id},
                max_episode_steps=HORIZONS[task_id],
            )


_register()

__all__ = [
    "TASK_IDS",
    "GYM_IDS",
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
