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
(``ROS_DOMAIN_ID``, the discovery range and peers). ``role:=learner`` / ``role:=collectors``
split a run across machines (the coordinator and the players on one, collectors on others),
``peers:=HOST[,HOST]`` makes discovery unicast. The launch files wrap each
description in a ``launch_ros.actions.Node``; :mod:`mbrl_ros.commands.launch` starts one
process per description.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import re
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
    kind: str = "game"  # "game": a learning game; "deploy": a given policy on the robot, no learning nodes


GRAPHS: dict[str, GraphInfo] = {
    "pal_dclaw": GraphInfo("pal_dclaw", "pal", "dclaw", "dclaw-turn-fixed"),
    "mal_dclaw": GraphInfo("mal_dclaw", "mal", "dclaw", "dclaw-turn-fixed"),
    "pal_dkitty": GraphInfo("pal_dkitty", "pal", "dkitty", "dkitty-orient-random"),
    "mal_dkitty": GraphInfo("mal_dkitty", "mal", "dkitty", "dkitty-orient-random"),
}
# Deploy graphs: the policy_deployer node (contract, gate, e-stop, episode count) and the
# collector, no learning nodes (kept apart from GRAPHS, the learning games)
DEPLOY_GRAPHS: dict[str, GraphInfo] = {
    "deploy_dclaw": GraphInfo("deploy_dclaw", "deploy", "dclaw", "dclaw-turn-fixed", kind="deploy"),
    "deploy_dkitty": GraphInfo("deploy_dkitty", "deploy", "dkitty", "dkitty-orient-random", kind="deploy"),
}
ALL_GRAPHS: dict[str, GraphInfo] = {**GRAPHS, **DEPLOY_GRAPHS}
# The games a graph may play: PAL, or MAL and its two fixes (the model leads in all three).
ALGOS_OF_GRAPH_GAME = {"pal": ("pal",), "mal": ("mal", "mal-agent-reward", "mal-noise"), "deploy": ("deploy",)}
# Arguments of the learning graphs that a deploy graph does not take (their defaults apply)
_NOT_DEPLOY_ARGUMENTS = (
    "set",
    "samples",
    "algo",
    "device",
    "video",
    "role",
    "peers",
    "first_collector",
    "coordinator_key",
    "num_collectors",
    "init_from",
    "init_from_parts",
)
TASKS_OF_ROBOT = {
    "dclaw": ("dclaw-turn-fixed", "dclaw-turn-random"),
    "dkitty": ("dkitty-orient-random", "dkitty-stand-random"),
}
MAX_COLLECTORS = 32
ROLES = ("all", "learner", "collectors")
MAX_PEERS = 32
MAX_FIRST_COLLECTOR = 999  # collector i seeds its resets with seed + 1000 i
# Domains a run picks for itself when neither domain_id:= nor ROS_DOMAIN_ID says: 1..101 (not 0,
# every unconfigured ROS 2 program's domain; and Fast DDS's ports for domains above 101 fall
# into Linux's ephemeral port range).
RUN_DOMAINS = (1, 101)
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class LaunchArgument:
    """One ``name:=value`` argument of every graph (``DeclareLaunchArgument`` in the launch files)."""

    name: str
    default: str
    description: str


def launch_arguments(graph: str) -> list[LaunchArgument]:
    """The arguments of ``graph`` with their defaults (strings, as ``ros2 launch`` hands them over)."""
    info = graph_info(graph)
    if info.kind == "deploy":
        return _deploy_arguments(info)
    return _game_arguments(info)


def _deploy_arguments(info: GraphInfo) -> list[LaunchArgument]:
    """A deploy graph's arguments: the policy, the episode count, and the world's arguments."""
    kept = [a for a in _game_arguments(info) if a.name not in _NOT_DEPLOY_ARGUMENTS]
    return kept + [
        LaunchArgument(
            "policy",
            "",
            "the ONNX policy to run (policy.onnx / policy_final.onnx of a run); its "
            "contract must match the task, else nothing starts (exit 2)",
        ),
        LaunchArgument(
            "episodes",
            "10",
            "episodes to run, then exit 0 (0 = until stopped); the collector runs "
            "the policy's mean action (deterministic evaluation)",
        ),
    ]


def _game_arguments(info: GraphInfo) -> list[LaunchArgument]:
    return [
        LaunchArgument("use_sim", "true", "true: MuJoCo sim collectors; false: one hardware collector on device_path"),
        LaunchArgument("device_path", "/dev/ttyUSB0", "serial port of the Dynamixel bus (use_sim:=false)"),
        LaunchArgument(
            "config",
            "",
            "ROS parameter file for all nodes: a path, or a name (demo = config/ros_demo.yaml, "
            "smoke = config/ros_smoke.yaml); '' = config/ros_graph.yaml",
        ),
        LaunchArgument("set", "", "game hyper-parameter overrides 'key=value,key=value' (see config/<algo>.yaml)"),
        LaunchArgument("num_collectors", "1", f"sim collectors, one process each (1..{MAX_COLLECTORS})"),
        LaunchArgument("samples", "0", "budget of real samples (0 = the game config's budget)"),
        LaunchArgument("seed", "0", "seed of every node (collector i uses seed + 1000 i for its resets)"),
        LaunchArgument("log_dir", "", "run directory for logs, checkpoints, MCAP, metrics ('' = runs/<graph>-<time>)"),
        LaunchArgument("domain_id", "", "ROS_DOMAIN_ID for every node ('' = inherit the environment, else 0)"),
        LaunchArgument("task", info.task_id, f"task id (one of {', '.join(TASKS_OF_ROBOT[info.robot])})"),
        LaunchArgument(
            "algo",
            info.algo,
            f"game (one of {', '.join(ALGOS_OF_GRAPH_GAME[info.algo])}; "
            "mal-agent-reward and mal-noise are MAL with the poster's fixes)",
        ),
        LaunchArgument("realtime", "false", "collectors run at the task's 10 Hz (true) or as fast as possible"),
        LaunchArgument("device", "cpu", "torch device of the learners: cpu | cuda | auto"),
        LaunchArgument(
            "video",
            "false",
            "true: after the game, render one episode of the final policy offscreen to "
            "<log_dir>/policy.gif (mbrl-ros launch; needs OSMesa)",
        ),
        LaunchArgument(
            "role",
            "all",
            "which nodes this machine starts: all | learner (coordinator, model learner, "
            "policy improver) | collectors (num_collectors collectors that join the game "
            "they find and end when it is over)",
        ),
        LaunchArgument(
            "peers",
            "",
            "unicast discovery peers HOST[,HOST] (ROS_STATIC_PEERS; multicast discovery is "
            "then off); '' = localhost-only discovery in sim, the subnet on a robot",
        ),
        LaunchArgument(
            "first_collector",
            "0",
            "index of this machine's first collector (names, robot ids and reset "
            "seeds); give every collectors machine of a run its own range",
        ),
        LaunchArgument(
            "init_from",
            "",
            "a finished run (mbrl-ros train --out DIR) whose policy the game starts "
            "from instead of a fresh one (sim-to-real fine-tuning); '' = fresh",
        ),
        LaunchArgument(
            "init_from_parts",
            "policy",
            "what the game takes from init_from, as mbrl-ros train --init-from-parts: policy[,model][,buffer] "
            "(model: the model learner starts from the run's ensemble; buffer: the run's buffer episodes are "
            "both players' initial data, not samples of this game: the budget counts new samples only)",
        ),
        LaunchArgument(
            "dynamics",
            "",
            "fixed physics of the simulated world, as mbrl-ros train --set dynamics=: a named world "
            "(dclaw-weak, dclaw-weakest, dkitty-heavy) or 'parameter:value/...'; the sim collectors "
            "run it and the coordinator evaluates on it; '' = the scene as is; refused with use_sim:=false",
        ),
        LaunchArgument(
            "coordinator_key",
            "",
            "the coordinator's public key that collectors verify approved policies "
            "and game states with: 'ed25519:<base64>' or a .pub file; '' = the "
            "run's own (<log_dir>/keys/coordinator_ed25519.pub; role:=all only)",
        ),
    ]


def graph_info(graph: str) -> GraphInfo:
    try:
        return ALL_GRAPHS[graph]
    except KeyError:
        raise ValueError(f"unknown graph {graph!r}; choose one of {', '.join(ALL_GRAPHS)}") from None


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
    role: str = "all"
    peers: tuple[str, ...] = ()
    first_collector: int = 0
    coordinator_key: str = ""  # '' = the run's own key file (public_key_path)
    init_from: str = ""  # learning graphs: a finished run whose policy the game starts from
    init_parts: tuple[str, ...] = ("policy",)  # with init_from: what the game takes from it (policy, model, buffer)
    dynamics: str = ""  # sim only: the world's fixed physics (mbrl_ros.tasks.sim.parse_dynamics)
    randomize_dynamics: bool = False  # sim only: collectors re-draw ROBEL's RandomDynamics every reset
    policy: str = ""  # deploy graphs: the ONNX policy (checked against the task by resolve)
    episodes: int = 0  # deploy graphs: episodes to run (0 = until stopped)
    exploration: bool = True  # collectors sample the policy's Gaussian (deploy graphs: false, the mean action)

    @property
    def public_key_path(self) -> Path:
        """Where the coordinator of this run writes its public key (``mbrl_ros.security.key_paths``)."""
        return self.log_dir / "keys" / "coordinator_ed25519.pub"

    @property
    def mcap_path(self) -> Path:
        return self.log_dir / "record" / "transitions.mcap"

    @property
    def video_path(self) -> Path:
        """Where ``video:=true`` writes the final policy's episode."""
        return self.log_dir / "policy.gif"


def split_overrides(text: str) -> list[str]:
    """``"a=1,b=[64,64];c=x"`` -> ``["a=1", "b=[64,64]", "c=x"]`` (commas inside brackets kept)."""
    items: list[str] = []
    cur: list[str] = []
    depth = 0
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


def parse_peers(text: str) -> tuple[str, ...]:
    """``"10.0.0.2,robot-1.lab"`` -> ``("10.0.0.2", "robot-1.lab")``: IPv4 addresses or host names.

    Fast DDS takes the first IPv4 address a peer resolves to, so IPv6 literals are refused here
    rather than silently ignored there; a name is checked for its form only (it may resolve on
    the lab network and nowhere else)."""
    peers: list[str] = []
    for item in re.split(r"[,;\s]+", text.strip()):
        if not item:
            continue
        try:
            addr = ipaddress.ip_address(item)
        except ValueError:
            addr = None
        if addr is not None and addr.version != 4:
            raise ValueError(f"peers:= {item} is an IPv6 address; Fast DDS discovery peers must be IPv4 or host names")
        if addr is None:
            labels = item.rstrip(".").split(".")
            if len(item) > 253 or not all(_HOST_LABEL.match(lb) for lb in labels) or labels[-1].isdigit():
                raise ValueError(f"peers:= {item!r} is neither an IPv4 address nor a host name")
        if item not in peers:
            peers.append(item)
    if len(peers) > MAX_PEERS:
        raise ValueError(f"peers:= names {len(peers)} hosts; at most {MAX_PEERS}")
    return tuple(peers)


def run_domain(log_dir: Path) -> int:
    """The ROS domain a run picks for itself (stable for one run directory): 1..101."""
    lo, hi = RUN_DOMAINS
    digest = hashlib.sha256(str(log_dir).encode("utf-8")).digest()
    return lo + int.from_bytes(digest[:4], "big") % (hi - lo + 1)


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
    hidden = {x.name: x.default for x in _game_arguments(info)} if info.kind == "deploy" else {}
    a = {**hidden, **known, **{k: str(v) for k, v in args.items()}}
    use_sim = _as_bool("use_sim", a["use_sim"])
    task_id = a["task"].strip()
    if task_id not in TASKS_OF_ROBOT[info.robot]:
        raise ValueError(
            f"task:={task_id} does not run on the {info.robot}; choose one of {', '.join(TASKS_OF_ROBOT[info.robot])}"
        )
    algo = a["algo"].strip()
    if algo not in ALGOS_OF_GRAPH_GAME[info.algo]:
        raise ValueError(
            f"algo:={algo} is not played by {graph}; choose one of {', '.join(ALGOS_OF_GRAPH_GAME[info.algo])}"
        )
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
        raise ValueError(
            "use_sim:=false drives one robot: num_collectors must be 1 (start more graphs for more robots)"
        )
    role = a["role"].strip().lower()
    if role not in ROLES:
        raise ValueError(f"role:={a['role']} must be one of {', '.join(ROLES)}")
    peers = parse_peers(a["peers"])
    first = _as_int("first_collector", a["first_collector"], 0, MAX_FIRST_COLLECTOR)
    if first + num - 1 > MAX_FIRST_COLLECTOR:
        raise ValueError(
            f"first_collector:={first} with num_collectors:={num} goes past collector {MAX_FIRST_COLLECTOR}"
        )
    if a["device"] not in ("cpu", "cuda", "auto"):
        raise ValueError(f"device:={a['device']} must be cpu, cuda or auto")
    if a["log_dir"].strip():
        log_dir = Path(a["log_dir"]).expanduser()
    else:
        stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
        log_dir = Path("runs") / f"{graph}-{stamp}" if role == "all" else Path("runs") / f"{graph}-{role}-{stamp}"
    key = a["coordinator_key"].strip()
    if role == "collectors" and not key:
        raise ValueError(
            "role:=collectors needs coordinator_key:= (the 'ed25519:...' line the learner's mbrl-ros launch "
            "printed, or a copy of its <log_dir>/keys/coordinator_ed25519.pub): collectors run only what "
            "that key signed"
        )
    if key and not key.startswith("ed25519:") and not Path(key).expanduser().is_file():
        raise ValueError(f"coordinator_key:={key} is neither 'ed25519:<base64>' nor an existing key file")
    if a["domain_id"].strip():
        domain = _as_int("domain_id", a["domain_id"], 0, 232)
    elif os.environ.get("ROS_DOMAIN_ID", "").strip():
        domain = _as_int("ROS_DOMAIN_ID", os.environ["ROS_DOMAIN_ID"], 0, 232)
    elif role != "all":
        # the machines of a split run must meet in one domain, which no machine can pick alone
        raise ValueError(
            f"role:={role} needs the run's domain on every machine: pass domain_id:=N (the same N on "
            "the learner and every collectors machine) or set ROS_DOMAIN_ID"
        )
    else:
        domain = run_domain(log_dir.resolve())
    policy, episodes, exploration = "", 0, True
    init_from, init_parts = resolve_init_from(a["init_from"], a["init_from_parts"], task_id)
    dynamics, overrides = resolve_dynamics(a["dynamics"], overrides, use_sim, info)
    randomize = resolve_randomize_dynamics(overrides, use_sim)
    if info.kind == "deploy":
        policy = str(check_deploy_policy(a["policy"], task_id, info.robot))
        episodes = _as_int("episodes", a["episodes"], 0, 10**6)
        exploration = False  # evaluation: the mean action, as the in-process evaluation
    return ResolvedGraph(
        policy=policy,
        episodes=episodes,
        exploration=exploration,
        init_from=init_from,
        init_parts=init_parts,
        dynamics=dynamics,
        randomize_dynamics=randomize,
        info=info,
        algo=algo,
        use_sim=use_sim,
        device_path=a["device_path"],
        config=config.resolve(),
        overrides=overrides,
        num_collectors=num,
        samples=_as_int("samples", a["samples"], 0, 10**9),
        seed=_as_int("seed", a["seed"], 0, 2**31 - 1),
        log_dir=log_dir.resolve(),
        domain_id=domain,
        task_id=task_id,
        realtime=_as_bool("realtime", a["realtime"]),
        device=a["device"],
        video=_as_bool("video", a["video"]),
        role=role,
        peers=peers,
        first_collector=first,
        coordinator_key=str(Path(key).expanduser().resolve()) if key and not key.startswith("ed25519:") else key,
    )


def resolve_init_from(run: str, parts_text: str, task_id: str) -> tuple[str, tuple[str, ...]]:
    """``init_from:=RUN init_from_parts:=policy,model,buffer`` -> (the run's checkpoint directory,
    the parts), checked as ``mbrl-ros train --init-from RUN --init-from-parts ...`` checks them
    (:func:`mbrl_ros.core.train.parse_init_parts`, :func:`~mbrl_ros.core.train.init_checkpoint_dir`):
    ``ValueError`` (one line) on an unknown part, parts without a run, a run without checkpoint
    (or without the buffer a ``buffer`` part takes), or a run of another task."""
    run, parts_text = str(run).strip(), str(parts_text).strip()
    if not run:
        if parts_text not in ("", "policy"):
            raise ValueError(
                f"init_from_parts:={parts_text} needs init_from:= (the finished run whose parts the game starts from)"
            )
        return "", ("policy",)
    import json

    from mbrl_ros.core.train import init_checkpoint_dir, parse_init_parts  # (torch: only for a fine-tuning run)

    try:
        parts = parse_init_parts(parts_text)
    except ValueError as exc:
        raise ValueError(str(exc).replace("--init-from-parts", f"init_from_parts:={parts_text}")) from None
    try:
        src = init_checkpoint_dir(run)
    except ValueError as exc:
        raise ValueError(str(exc).replace("--init-from ", "init_from:=", 1)) from None
    learnt = json.loads((src / "state.json").read_text()).get("config", {}).get("task_id")
    if learnt != task_id:
        raise ValueError(f"init_from:={run} learnt {learnt}, this graph plays {task_id}")
    if "buffer" in parts and not (src / "buffer.json").is_file():
        raise ValueError(f"init_from:={run} has no buffer to start from ({src / 'buffer.json'} is missing)")
    return str(src.resolve()), parts


def _override_values(overrides: tuple[str, ...], key: str) -> list[str]:
    """The values given to ``key`` by ``set:=key=value,...`` items, in order."""
    return [item.split("=", 1)[1].strip() for item in overrides if item.split("=", 1)[0].strip() == key]


def resolve_dynamics(
    text: str, overrides: tuple[str, ...], use_sim: bool, info: GraphInfo
) -> tuple[str, tuple[str, ...]]:
    """The world's fixed physics from ``dynamics:=`` or a ``set:=dynamics=...`` item (the same
    thing; both given, they must agree), checked against the robot (``ValueError``: an unknown
    name, a parameter the robot has not, or a real robot: ``use_sim:=false``). Returns it with the
    game overrides, which then carry ``dynamics=...`` so that the coordinator evaluates on the
    world the collectors run (as ``mbrl-ros train --set dynamics=`` does)."""
    dynamics = str(text).strip()
    given = _override_values(overrides, "dynamics")
    if given and dynamics and given[-1] != dynamics:
        raise ValueError(f"dynamics:={dynamics} and set:=dynamics={given[-1]} disagree; give the world's dynamics once")
    dynamics = dynamics or (given[-1] if given else "")
    if not dynamics:
        return "", overrides
    if not use_sim:
        raise ValueError(
            f"dynamics:={dynamics} is a simulator setting: use_sim:=false drives a real robot, whose "
            "physics are its own"
        )
    try:
        from mbrl_ros.tasks.sim import parse_dynamics
    except ImportError as exc:
        raise ValueError(f"dynamics:={dynamics} needs the simulator ({exc})") from None
    try:
        parse_dynamics(dynamics, info.robot)
    except ValueError as exc:
        raise ValueError(f"dynamics:={dynamics} refused: {exc}") from None
    if info.kind == "game" and not given:
        overrides = overrides + (f"dynamics={dynamics}",)
    return dynamics, overrides


def resolve_randomize_dynamics(overrides: tuple[str, ...], use_sim: bool) -> bool:
    """``set:=randomize_dynamics=true`` (the game setting of ``mbrl-ros train``): the sim
    collectors re-draw ROBEL's RandomDynamics at every reset (the coordinator's evaluation world
    stays nominal, as in ``mbrl-ros train``). ``ValueError`` on a real robot."""
    given = _override_values(overrides, "randomize_dynamics")
    if not given or not _as_bool("randomize_dynamics", given[-1]):
        return False
    if not use_sim:
        raise ValueError(
            "randomize_dynamics is a simulator setting: use_sim:=false drives a real robot, whose physics are "
            "its own (train with randomised dynamics in simulation, then fine-tune on the robot)"
        )
    return True


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
    """The nodes of a resolved graph, in start order (coordinator, learners, collectors).

    ``role`` picks a part: ``learner`` the coordinator and the two players, ``collectors`` the
    collectors only, which then leave when the game they joined is over (``exit_when_done``)."""
    nodes: list[NodeDescription] = []
    if g.info.kind == "deploy":
        return [_deployer_node(g)] + _collector_nodes(g)
    if g.role in ("all", "learner"):
        nodes += _learner_nodes(g)
    if g.role in ("all", "collectors"):
        nodes += _collector_nodes(g)
    return nodes


def _learner_nodes(g: ResolvedGraph) -> list[NodeDescription]:
    common: dict[str, Any] = {
        "algo": g.algo,
        "task": g.task_id,
        "seed": g.seed,
        "log_dir": str(g.log_dir),
        "device": g.device,
    }
    if g.overrides:  # (an empty list has no type in a ROS parameter file)
        common["game_set"] = list(g.overrides)
    files = [str(g.config)]
    # init_from:= and its parts: every learning node (the policy improver loads the policy, the model
    # learner the model, both players the buffer, the coordinator records what the game started from)
    init: dict[str, Any] = {"init_from": g.init_from, "init_from_parts": ",".join(g.init_parts)} if g.init_from else {}
    nodes = [
        NodeDescription(
            "game_coordinator",
            "game_coordinator",
            files
            + [
                {
                    **common,
                    "samples": g.samples,
                    "num_collectors": g.num_collectors,
                    "mcap_path": str(g.mcap_path),
                    "use_sim": g.use_sim,
                    **init,
                }
            ],
            ends_run=True,
        ),
        NodeDescription(
            "model_learner",
            "model_learner",
            files
            + [
                {
                    **common,
                    "checkpoint_dir": str(g.log_dir / "model_learner"),
                    "mcap_path": str(g.mcap_path),
                    **init,
                }
            ],
        ),
        NodeDescription(
            "policy_improver",
            "policy_improver",
            # the record too: an episode that never arrived live (e.g. published before this node's
            # subscription matched the collector's writer) is looked up there, as the model learner does
            files + [{**common, "mcap_path": str(g.mcap_path), **init}],
        ),
    ]
    return nodes


def check_deploy_policy(path: str, task_id: str, robot: str) -> Path:
    """The policy a deploy graph runs: an existing ONNX file whose contract is ``task_id``'s
    (task, observation and action sizes). ``ValueError`` (one line) otherwise: nothing starts."""
    text = str(path).strip()
    if not text:
        raise ValueError("policy:= is required: the ONNX policy to deploy (e.g. runs/<run>/policy.onnx)")
    p = Path(text).expanduser()
    if not p.is_file():
        raise ValueError(f"policy:={text} does not exist")
    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.tasks import get_task

    try:
        contract = load_onnx_policy(p.read_bytes()).contract
    except Exception as exc:  # noqa: BLE001 - ContractError, or onnxruntime's own errors on a corrupt file
        raise ValueError(f"policy:={text} refused: {' '.join(str(exc).split())}") from None
    theirs = str(contract.get("task_id"))
    info = get_task(task_id).info
    if theirs != task_id:
        other = theirs.split("-")[0]
        what = f"the {other}" if other != robot else f"task {theirs}"
        raise ValueError(
            f"policy:={text} refused: it was trained for {theirs} ({what}), this graph runs {task_id} "
            f"on the {robot}; nothing was started"
        )
    if int(contract["obs_dim"]) != info.obs_dim or int(contract["act_dim"]) != info.act_dim:
        raise ValueError(
            f"policy:={text} refused: contract sizes {contract['obs_dim']}/{contract['act_dim']} do not "
            f"match {task_id}'s {info.obs_dim}/{info.act_dim}; nothing was started"
        )
    return p.resolve()


def _deployer_node(g: ResolvedGraph) -> NodeDescription:
    return NodeDescription(
        "policy_deployer",
        "policy_deployer",
        [
            str(g.config),
            {
                "task": g.task_id,
                "policy": g.policy,
                "episodes": g.episodes,
                "log_dir": str(g.log_dir),
                "mcap_path": str(g.mcap_path),
                "use_sim": g.use_sim,
                "seed": g.seed,
            },
        ],
        ends_run=True,
    )


def _collector_nodes(g: ResolvedGraph) -> list[NodeDescription]:
    files = [str(g.config)]
    alone = g.role == "collectors"  # no coordinator here: a collector ends with the game it joined
    # the key that signs what the collectors may run: given, or the one this run's coordinator creates
    extra: dict[str, Any] = {"coordinator_key": g.coordinator_key or str(g.public_key_path)}
    if alone:
        extra["exit_when_done"] = True
    if not g.exploration:  # deploy graphs: the policy's mean action (deterministic evaluation)
        extra["exploration"] = False
    if g.dynamics and g.use_sim:  # the simulated world's fixed physics (resolve refuses it on a robot)
        extra["dynamics"] = g.dynamics
    if g.randomize_dynamics and g.use_sim:  # re-drawn at every reset (resolve refuses it on a robot)
        extra["randomize_dynamics"] = True
    nodes = []
    if g.use_sim:
        for i in range(g.first_collector, g.first_collector + g.num_collectors):
            nodes.append(
                NodeDescription(
                    f"collector_{i}",
                    "collector",
                    files
                    + [
                        {
                            "task": g.task_id,
                            "robot_id": f"sim{i}",
                            "seed": g.seed + 1000 * i,
                            "realtime": g.realtime,
                            "log_dir": str(g.log_dir),
                            **extra,
                        }
                    ],
                    required=False,
                )
            )
    else:
        k = g.first_collector  # 0: the one robot of a graph, named as before
        nodes.append(
            NodeDescription(
                "hardware_collector" if k == 0 else f"hardware_collector_{k}",
                "hardware_collector",
                files
                + [
                    {
                        "task": g.task_id,
                        "robot_id": g.info.robot if k == 0 else f"{g.info.robot}{k}",
                        "seed": g.seed + 1000 * k,
                        "device_path": g.device_path,
                        "log_dir": str(g.log_dir),
                        **extra,
                    }
                ],
                ends_run=alone,
            )
        )
    return nodes


def environment(g: ResolvedGraph) -> dict[str, str]:
    """Environment of every node: the domain, the discovery range and peers, per-run ROS logs.

    - ``peers`` given: ``ROS_STATIC_PEERS`` and the LOCALHOST range. Fast DDS (rmw_fastrtps) then
      listens for discovery on unicast only and announces itself to the peers and to this host,
      so the run needs no multicast on the network (and sees no one it was not told about).
    - no peers, sim: LOCALHOST, nothing leaves the machine.
    - no peers, robot: the environment's range, else SUBNET (multicast discovery on the lab's
      network: collectors on other machines of the same domain find the game).
    ``ROS_STATIC_PEERS`` is always set (empty without peers) so a shell's leftover value does not
    pull strangers into the run."""
    env = {
        "ROS_DOMAIN_ID": str(g.domain_id),
        "ROS_LOG_DIR": str(g.log_dir / "ros_logs"),
        "ROS_STATIC_PEERS": ";".join(g.peers),
    }
    if g.peers or g.use_sim:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    else:
        env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").strip() or "SUBNET"
    return env


def node_command(node: NodeDescription, param_files: Sequence[str], python: str = sys.executable) -> list[str]:
    """argv that starts ``node`` without ``ros2 run`` (the parameter dicts written to files first)."""
    argv = [python, "-m", node.module, "--ros-args", "-r", f"__node:={node.name}"]
    for f in param_files:
        argv += ["--params-file", str(f)]
    return argv
