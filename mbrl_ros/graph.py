"""The mbrl_ros node graphs: ONE description shared by ``launch/*.launch.py`` and ``mbrl-ros launch``.

A graph is a game (PAL or MAL) on a robot (D'Claw or D'Kitty) played by four kinds of node::

    collector_0..N-1  --/mbrl/transitions-->  model_learner, policy_improver, game_coordinator
    model_learner     --/mbrl/model------->   policy_improver, game_coordinator
    policy_improver   --/mbrl/policy/candidate-->  game_coordinator (gate)
    game_coordinator  --/mbrl/policy/deployed-->   collectors
    game_coordinator  --/mbrl/game_state-->        everyone (phase, iteration, versions, commands)

This module holds no ROS import: it turns launch arguments (``name:=value`` strings, exactly
what ``ros2 launch`` passes) into validated values, a list of :class:`NodeDescription` (the
executable, the node name, its parameter files and parameter dict) and the environment
(``ROS_DOMAIN_ID``, localhost-only discovery for sim runs). The launch files wrap each
description in a ``launch_ros.actions.Node``; :mod:`mbrl_ros.commands.launch` starts one
process per description.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

PACKAGE = "mbrl_ros"


@dataclass(frozen=True)
class GraphInfo:
    """Which game on which robot (and task) a named graph plays."""

    name: str
    algo: str
    robot: str  # "dclaw" | "dkitty"
    task_id: str  # default task (the ``task`` argument may pick another of the same robot)


GRAPHS: dict[str, GraphInfo] = {
    "pal_dclaw": GraphInfo("pal_dclaw", "pal", "dclaw", "dclaw-turn-fixed"),
    "mal_dclaw": GraphInfo("mal_dclaw", "mal", "dclaw", "dclaw-turn-fixed"),
    "pal_dkitty": GraphInfo("pal_dkitty", "pal", "dkitty", "dkitty-orient-random"),
    "mal_dkitty": GraphInfo("mal_dkitty", "mal", "dkitty", "dkitty-orient-random"),
}
# The games a graph may play: PAL, or MAL and its two fixes (the model leads in all three).
ALGOS_OF_GRAPH_GAME = {"pal": ("pal",), "mal": ("mal", "mal-agent-reward", "mal-noise")}
TASKS_OF_ROBOT = {
    "dclaw": ("dclaw-turn-fixed", "dclaw-turn-random"),
    "dkitty": ("dkitty-orient-random", "dkitty-stand-random"),
}
MAX_COLLECTORS = 32


@dataclass(frozen=True)
class LaunchArgument:
    """One ``name:=value`` argument of every graph (``DeclareLaunchArgument`` in the launch files)."""

    name: str
    default: str
    description: str


def launch_arguments(graph: str) -> list[LaunchArgument]:
    """The arguments of ``graph`` with their defaults (strings, as ``ros2 launch`` hands them over)."""
    info = graph_info(graph)
    return [
        LaunchArgument("use_sim", "true", "true: MuJoCo sim collectors; false: one hardware collector on device_path"),
        LaunchArgument("device_path", "/dev/ttyUSB0", "serial port of the Dynamixel bus (use_sim:=false)"),
        LaunchArgument("config", "", "ROS parameter file for all nodes: a path, or a name (demo = config/ros_demo.yaml, "
                                     "smoke = config/ros_smoke.yaml); '' = config/ros_graph.yaml"),
        LaunchArgument("set", "", "game hyper-parameter overrides 'key=value,key=value' (see config/<algo>.yaml)"),
        LaunchArgument("num_collectors", "1", f"sim collectors, one process each (1..{MAX_COLLECTORS})"),
        LaunchArgument("samples", "0", "budget of real samples (0 = the game config's budget)"),
        LaunchArgument("seed", "0", "seed of every node (collector i uses seed + 1000 i for its resets)"),
        LaunchArgument("log_dir", "", "run directory for logs, checkpoints, MCAP, metrics ('' = runs/<graph>-<time>)"),
        LaunchArgument("domain_id", "", "ROS_DOMAIN_ID for every node ('' = inherit the environment, else 0)"),
        LaunchArgument("task", info.task_id, f"task id (one of {', '.join(TASKS_OF_ROBOT[info.robot])})"),
        LaunchArgument("algo", info.algo, f"game (one of {', '.join(ALGOS_OF_GRAPH_GAME[info.algo])}; "
                                          "mal-agent-reward and mal-noise are MAL with the poster's fixes)"),
        LaunchArgument("realtime", "false", "collectors run at the task's 10 Hz (true) or as fast as possible"),
        LaunchArgument("device", "cpu", "torch device of the learners: cpu | cuda | auto"),
        LaunchArgument("video", "false", "true: after the game, render one episode of the final policy offscreen to "
                                         "<log_dir>/policy.gif (mbrl-ros launch; needs OSMesa)"),
    ]


def graph_info(graph: str) -> GraphInfo:
    try:
        return GRAPHS[graph]
    except KeyError:
        raise ValueError(f"unknown graph {graph!r}; choose one of {', '.join(GRAPHS)}") from None


# ---------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------
def parse_launch_tokens(tokens: Sequence[str], graph: str) -> dict[str, str]:
    """``["name:=value", ...]`` -> dict; unknown names or malformed tokens raise ``ValueError``."""
    known = {a.name for a in launch_arguments(graph)}
    out: dict[str, str] = {}
    for tok in tokens:
        if ":=" not in tok:
            raise ValueError(f"launch argument {tok!r} is not of the form name:=value")
        name, value = tok.split(":=", 1)
        if name not in known:
            raise ValueError(f"unknown launch argument {name!r}; known: {', '.join(sorted(known))}")
        out[name] = value
    return out


def _as_bool(name: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name}:={value} is not a boolean (true/false)")


def _as_int(name: str, value: str, lo: int, hi: int) -> int:
    try:
        v = int(str(value).strip())
    except ValueError:
        raise ValueError(f"{name}:={value} is not an integer") from None
    if not lo <= v <= hi:
        raise ValueError(f"{name}:={v} is out of range [{lo}, {hi}]")
    return v


@dataclass(frozen=True)
class ResolvedGraph:
    """Validated launch arguments of one graph run."""

    info: GraphInfo
    algo: str
    use_sim: bool
    device_path: str
    config: Path
    overrides: tuple[str, ...]
    num_collectors: int
    samples: int
    seed: int
    log_dir: Path
    domain_id: int
    task_id: str
    realtime: bool
    device: str
    video: bool = False

    @property
    def mcap_path(self) -> Path:
        return self.log_dir / "record" / "transitions.mcap"

    @property
    def video_path(self) -> Path:
        """Where ``video:=true`` writes the final policy's episode."""
        return self.log_dir / "policy.gif"


def split_overrides(text: str) -> list[str]:
    """``"a=1,b=[64,64];c=x"`` -> ``["a=1", "b=[64,64]", "c=x"]`` (commas inside brackets kept)."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth = max(0, depth - 1)
        if ch in ",;" and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


def config_dir() -> Path:
    """``config/`` of the source tree, or ``share/mbrl_ros/config`` of an install."""
    candidates = [Path(__file__).resolve().parent.parent / "config", Path(sys.prefix) / "share" / PACKAGE / "config"]
    try:  # a colcon install
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "config")
    except Exception:  # noqa: BLE001 - ament_index is optional
        pass
    for c in candidates:
        if (c / "ros_graph.yaml").is_file():
            return c
    raise ValueError(f"no ROS parameter files found (looked in {', '.join(map(str, candidates))})")


def resolve(graph: str, args: Mapping[str, str], now: Optional[datetime.datetime] = None) -> ResolvedGraph:
    """Defaults + given arguments -> validated values (``ValueError`` with a clear message)."""
    info = graph_info(graph)
    known = {a.name: a.default for a in launch_arguments(graph)}
    unknown = set(args) - set(known)
    if unknown:
        raise ValueError(f"unknown launch argument(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    a = {**known, **{k: str(v) for k, v in args.items()}}
    use_sim = _as_bool("use_sim", a["use_sim"])
    task_id = a["task"].strip()
    if task_id not in TASKS_OF_ROBOT[info.robot]:
        raise ValueError(f"task:={task_id} does not run on the {info.robot}; choose one of {', '.join(TASKS_OF_ROBOT[info.robot])}")
    algo = a["algo"].strip()
    if algo not in ALGOS_OF_GRAPH_GAME[info.algo]:
        raise ValueError(f"algo:={algo} is not played by {graph}; choose one of {', '.join(ALGOS_OF_GRAPH_GAME[info.algo])}")
    name = a["config"].strip()
    if not name:
        config = config_dir() / "ros_graph.yaml"
    elif "/" not in name and not name.endswith(".yaml"):  # a short name: config/ros_<name>.yaml
        config = config_dir() / f"ros_{name}.yaml"
    else:
        config = Path(name).expanduser()
    if not config.is_file():
        raise ValueError(f"config:={config} does not exist")
    overrides = tuple(split_overrides(a["set"]))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"set:= item {item!r} is not of the form key=value")
    num = _as_int("num_collectors", a["num_collectors"], 1, MAX_COLLECTORS)
    if not use_sim and num != 1:
        raise ValueError("use_sim:=false drives one robot: num_collectors must be 1 (start more graphs for more robots)")
    if a["domain_id"].strip():
        domain = _as_int("domain_id", a["domain_id"], 0, 232)
    else:
        domain = _as_int("ROS_DOMAIN_ID", os.environ.get("ROS_DOMAIN_ID", "0") or "0", 0, 232)
    if a["device"] not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device:={a['device']} must be cpu, cuda or auto")
    if a["log_dir"].strip():
        log_dir = Path(a["log_dir"]).expanduser()
    else:
        stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
        log_dir = Path("runs") / f"{graph}-{stamp}"
    return ResolvedGraph(
        info=info, algo=algo, use_sim=use_sim, device_path=a["device_path"], config=config.resolve(), overrides=overrides,
        num_collectors=num, samples=_as_int("samples", a["samples"], 0, 10**9),
        seed=_as_int("seed", a["seed"], 0, 2**31 - 1), log_dir=log_dir.resolve(), domain_id=domain,
        task_id=task_id, realtime=_as_bool("realtime", a["realtime"]), device=a["device"],
        video=_as_bool("video", a["video"]),
    )


# ---------------------------------------------------------------------------------------
# Nodes
# ---------------------------------------------------------------------------------------
@dataclass
class NodeDescription:
    """One node process: ``ros2 run mbrl_ros <executable> --ros-args -r __node:=<name> ...``."""

    name: str
    executable: str  # console script (setup.py) == module under mbrl_ros.nodes
    parameters: list[Any] = field(default_factory=list)  # parameter file paths (str) and dicts, in order
    ends_run: bool = False  # the run is over when this node exits (the coordinator)
    required: bool = True  # its death stops the run (collectors: only when none is left)

    @property
    def module(self) -> str:
        return f"{PACKAGE}.nodes.{self.executable}"


def build_nodes(g: ResolvedGraph) -> list[NodeDescription]:
    """The nodes of a resolved graph, in start order (coordinator, learners, collectors)."""
    common: dict[str, Any] = {
        "algo": g.algo, "task": g.task_id, "seed": g.seed, "log_dir": str(g.log_dir), "device": g.device,
    }
    if g.overrides:  # (an empty list has no type in a ROS parameter file)
        common["game_set"] = list(g.overrides)
    files = [str(g.config)]
    nodes = [
        NodeDescription("game_coordinator", "game_coordinator", files + [{
            **common, "samples": g.samples, "num_collectors": g.num_collectors,
            "mcap_path": str(g.mcap_path), "use_sim": g.use_sim,
        }], ends_run=True),
        NodeDescription("model_learner", "model_learner", files + [{
            **common, "checkpoint_dir": str(g.log_dir / "model_learner"), "mcap_path": str(g.mcap_path),
        }]),
        NodeDescription("policy_improver", "policy_improver", files + [dict(common)]),
    ]
    if g.use_sim:
        for i in range(g.num_collectors):
            nodes.append(NodeDescription(f"collector_{i}", "collector", files + [{
                "task": g.task_id, "robot_id": f"sim{i}", "seed": g.seed + 1000 * i,
                "realtime": g.realtime, "log_dir": str(g.log_dir),
            }], required=False))
    else:
        nodes.append(NodeDescription("hardware_collector", "hardware_collector", files + [{
            "task": g.task_id, "robot_id": g.info.robot, "seed": g.seed, "device_path": g.device_path,
            "log_dir": str(g.log_dir),
        }]))
    return nodes


def environment(g: ResolvedGraph) -> dict[str, str]:
    """Environment of every node: the domain, localhost-only discovery in sim, per-run ROS logs."""
    env = {"ROS_DOMAIN_ID": str(g.domain_id), "ROS_LOG_DIR": str(g.log_dir / "ros_logs")}
    if g.use_sim:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


def node_command(node: NodeDescription, param_files: Sequence[str], python: str = sys.executable) -> list[str]:
    """argv that starts ``node`` without ``ros2 run`` (the parameter dicts written to files first)."""
    argv = [python, "-m", node.module, "--ros-args", "-r", f"__node:={node.name}"]
    for f in param_files:
        argv += ["--params-file", str(f)]
    return argv
