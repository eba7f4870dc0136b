"""One graph description: the launch files and ``mbrl-ros launch`` start the same nodes.

The launch files import ``launch``/``launch_ros`` (not installable from PyPI), so this test runs
them against small stand-ins of those modules that record what the launch file builds, and
compares it with what the CLI launcher would start. No ROS middleware is involved.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import yaml

from mbrl_ros import graph
from mbrl_ros.commands import launch as launch_cmd

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_DIR = ROOT / "launch"


class _Recorder:
    """Stand-ins for the launch / launch_ros classes the launch files use."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []
        self.env: dict[str, str] = {}
        self.declared: dict[str, str] = {}


def _fake_launch_modules(rec: _Recorder, values: dict[str, str]) -> dict[str, types.ModuleType]:
    launch = types.ModuleType("launch")
    actions = types.ModuleType("launch.actions")
    subs = types.ModuleType("launch.substitutions")
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")

    class LaunchDescription(list):
        pass

    class DeclareLaunchArgument:
        def __init__(self, name, default_value="", description=""):
            rec.declared[name] = default_value
            assert description, f"launch argument {name} has no description"

    class OpaqueFunction:
        def __init__(self, function):
            self.function = function

    class SetEnvironmentVariable:
        def __init__(self, name, value):
            rec.env[name] = value

    class Shutdown:
        pass

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return values.get(self.name, rec.declared[self.name])

    class Node:
        def __init__(self, **kwargs):
            rec.nodes.append(kwargs)

    launch.LaunchDescription = LaunchDescription
    actions.DeclareLaunchArgument = DeclareLaunchArgument
    actions.OpaqueFunction = OpaqueFunction
    actions.SetEnvironmentVariable = SetEnvironmentVariable
    actions.Shutdown = Shutdown
    subs.LaunchConfiguration = LaunchConfiguration
    ros_actions.Node = Node
    launch.actions, launch.substitutions, launch_ros.actions = actions, subs, ros_actions
    return {"launch": launch, "launch.actions": actions, "launch.substitutions": subs,
            "launch_ros": launch_ros, "launch_ros.actions": ros_actions}


def _run_launch_file(name: str, values: dict[str, str], monkeypatch) -> _Recorder:
    rec = _Recorder()
    for mod_name, mod in _fake_launch_modules(rec, values).items():
        monkeypatch.setitem(sys.modules, mod_name, mod)
    spec = importlib.util.spec_from_file_location(f"launch_file_{name}", LAUNCH_DIR / f"{name}.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.GRAPH == name
    ld = module.generate_launch_description()
    for action in ld:
        if hasattr(action, "function"):
            action.function(context=None)
    return rec


@pytest.mark.parametrize("name", sorted(graph.GRAPHS))
def test_launch_file_builds_the_same_graph_as_the_cli(name: str, tmp_path: Path, monkeypatch) -> None:
    values = {"log_dir": str(tmp_path), "num_collectors": "2", "seed": "7", "samples": "1000", "domain_id": "17",
              "set": "n_init=100,samples_per_iter=50"}
    rec = _run_launch_file(name, values, monkeypatch)
    assert rec.declared == {a.name: a.default for a in graph.launch_arguments(name)}
    for required in ("use_sim", "device_path", "config", "num_collectors", "samples", "seed", "log_dir"):
        assert required in rec.declared

    g = graph.resolve(name, values)
    cli_nodes = graph.build_nodes(g)
    assert [n["name"] for n in rec.nodes] == [n.name for n in cli_nodes]
    assert [n["executable"] for n in rec.nodes] == [n.executable for n in cli_nodes]
    assert [n["parameters"] for n in rec.nodes] == [n.parameters for n in cli_nodes]
    assert all(n["package"] == "mbrl_ros" for n in rec.nodes)
    assert rec.env == graph.environment(g) and rec.env["ROS_DOMAIN_ID"] == "17"
    assert rec.env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"

    # the CLI writes the same dict parameters into the files it passes with --params-file
    files = launch_cmd.write_parameter_files(cli_nodes, tmp_path / "params")
    for launch_node, cli_node in zip(rec.nodes, cli_nodes):
        last = yaml.safe_load(Path(files[cli_node.name][-1]).read_text())
        assert last == {cli_node.name: {"ros__parameters": launch_node["parameters"][-1]}}
        argv = graph.node_command(cli_node, files[cli_node.name])
        assert argv[1:3] == ["-m", f"mbrl_ros.nodes.{launch_node['executable']}"]
        assert f"__node:={launch_node['name']}" in argv


def test_graph_parameters_follow_the_launch_arguments(tmp_path: Path) -> None:
    g = graph.resolve("mal_dkitty", {"log_dir": str(tmp_path), "num_collectors": "3", "seed": "5",
                                     "task": "dkitty-stand-random", "samples": "5000", "realtime": "true"})
    nodes = {n.name: n for n in graph.build_nodes(g)}
    assert list(nodes) == ["game_coordinator", "model_learner", "policy_improver", "collector_0", "collector_1", "collector_2"]
    coord = nodes["game_coordinator"].parameters[-1]
    assert (coord["algo"], coord["task"], coord["samples"], coord["seed"]) == ("mal", "dkitty-stand-random", 5000, 5)
    # both learners look an episode that never arrived live up in the run's record (a demo run hung
    # 10 minutes when the policy improver, without the path, waited for 5 episodes it had missed)
    assert nodes["model_learner"].parameters[-1]["mcap_path"] == coord["mcap_path"]
    assert nodes["policy_improver"].parameters[-1]["mcap_path"] == coord["mcap_path"]
    seeds = [nodes[f"collector_{i}"].parameters[-1]["seed"] for i in range(3)]
    assert seeds == [5, 1005, 2005] and nodes["collector_2"].parameters[-1]["realtime"] is True
    assert nodes["game_coordinator"].ends_run and not nodes["collector_0"].required
    hw = graph.build_nodes(graph.resolve("pal_dclaw", {"log_dir": str(tmp_path), "use_sim": "false",
                                                       "device_path": "/dev/ttyACM3"}))
    assert hw[-1].executable == "hardware_collector" and hw[-1].parameters[-1]["device_path"] == "/dev/ttyACM3"
    # a robot's graph discovers on the subnet unless the environment says otherwise (see the roles test)
    assert graph.environment(graph.resolve("pal_dclaw", {"use_sim": "false"}))["ROS_AUTOMATIC_DISCOVERY_RANGE"] in (
        os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE") or "SUBNET",)
    noise = graph.build_nodes(graph.resolve("mal_dclaw", {"log_dir": str(tmp_path), "algo": "mal-noise"}))
    assert {n.parameters[-1]["algo"] for n in noise if n.executable != "collector"} == {"mal-noise"}


@pytest.mark.parametrize("args, message", [
    ({"use_sim": "maybe"}, "boolean"),
    ({"num_collectors": "0"}, "out of range"),
    ({"num_collectors": "two"}, "not an integer"),
    ({"task": "dkitty-orient-random"}, "does not run on the dclaw"),
    ({"use_sim": "false", "num_collectors": "2"}, "num_collectors must be 1"),
    ({"domain_id": "300"}, "out of range"),
    ({"config": "/nonexistent.yaml"}, "does not exist"),
    ({"set": "samples"}, "key=value"),
    ({"device": "tpu"}, "cpu, cuda or auto"),
    ({"algo": "mal-noise"}, "not played by pal_dclaw"),
    ({"colour": "red"}, "unknown launch argument"),
])
def test_bad_launch_arguments_raise_clear_errors(args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        graph.resolve("pal_dclaw", args)


def test_launch_tokens_and_unknown_graph() -> None:
    assert graph.parse_launch_tokens(["seed:=3", "set:=a=1,b=2"], "pal_dclaw") == {"seed": "3", "set": "a=1,b=2"}
    assert graph.split_overrides("samples=10, model_hidden=[64,64];x=1") == ["samples=10", "model_hidden=[64,64]", "x=1"]
    g = graph.resolve("pal_dclaw", {"set": "model_hidden=[64,64],samples=500"})
    assert g.overrides == ("model_hidden=[64,64]", "samples=500")
    with pytest.raises(ValueError, match="name:=value"):
        graph.parse_launch_tokens(["seed=3"], "pal_dclaw")
    with pytest.raises(ValueError, match="unknown graph"):
        graph.resolve("pal_cartpole", {})


def test_cli_dry_run_prints_one_command_per_node(tmp_path: Path, capsys) -> None:
    from mbrl_ros import cli

    code = cli.main(["launch", "pal_dclaw", f"log_dir:={tmp_path}", "num_collectors:=2", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert [line.split(":")[0] for line in out.splitlines()[:5]] == [
        "game_coordinator", "model_learner", "policy_improver", "collector_0", "collector_1"]
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in out
    assert cli.main(["launch", "pal_dclaw", "num_collectors:=99", "--dry-run"]) == 2


@pytest.mark.parametrize("name", ["demo", "smoke"])
def test_demo_and_smoke_configurations_are_valid(name: str, tmp_path: Path) -> None:
    """``config:=demo`` (what ``make demo`` runs, with ``video:=true``) and ``config:=smoke`` (the
    tests' quick graph): the ROS parameter file parses, its game_overrides apply to PAL's game
    configuration for D'Claw turn fixed, and the graph resolves with them."""
    rclpy_parameter = pytest.importorskip("rclpy.parameter")
    from mbrl_ros.core.config import load_config

    path = graph.config_dir() / f"ros_{name}.yaml"
    for node in ("game_coordinator", "model_learner", "policy_improver", "collector_0"):
        params = rclpy_parameter.parameter_dict_from_yaml_file(str(path), use_wildcard=True, target_nodes=[node])
        assert params["torch_threads"].value.integer_value >= 0
        overrides = list(params["game_overrides"].value.string_array_value)
    assert overrides and all("=" in o for o in overrides)
    cfg = load_config("pal", "dclaw-turn-fixed", overrides)
    assert cfg.samples > cfg.n_init > 0

    tokens = [f"config:={name}", "video:=true", f"log_dir:={tmp_path}"]
    g = graph.resolve("pal_dclaw", graph.parse_launch_tokens(tokens, "pal_dclaw"))
    assert g.config == path.resolve() and g.video and g.video_path == tmp_path.resolve() / "policy.gif"
    assert all([p for p in n.parameters if isinstance(p, str)][0] == str(path.resolve()) for n in graph.build_nodes(g))
    # the robot's topics are recorded in simulation and on a robot alike (the parameter's default);
    # the graph sets nothing before the parameter files, which have the last word
    coordinator = next(n for n in graph.build_nodes(g) if n.name == "game_coordinator")
    assert coordinator.parameters[0] == str(path.resolve())
    assert not any(isinstance(p, dict) and "record_visuals" in p for p in coordinator.parameters)
    if name == "smoke":  # the quick one: a small budget and small models
        assert cfg.samples <= 1000 and cfg.ensemble_size <= 2 and max(cfg.model_hidden) <= 64
    assert not graph.resolve("pal_dclaw", {}).video  # video is off by default
    with pytest.raises(ValueError, match="boolean"):
        graph.resolve("pal_dclaw", {"video": "sometimes"})


# ---------------------------------------------------------------------------------------
# Roles, peers and the run's domain (issue 16)
# ---------------------------------------------------------------------------------------
KEY = "ed25519:" + "A" * 43 + "="  # the form of a public key (32 zero bytes)
@pytest.mark.parametrize("name", sorted(graph.GRAPHS))
def test_roles_split_the_graph_and_the_launch_file_agrees(name: str, tmp_path: Path, monkeypatch) -> None:
    base = {"log_dir": str(tmp_path), "num_collectors": "2", "domain_id": "42", "peers": "10.77.0.1,learner-box.lab",
            "coordinator_key": KEY}
    everything = [n.name for n in graph.build_nodes(graph.resolve(name, base))]
    learner = graph.resolve(name, {**base, "role": "learner"})
    collectors = graph.resolve(name, {**base, "role": "collectors", "first_collector": "4"})
    ln, cn = graph.build_nodes(learner), graph.build_nodes(collectors)
    assert [n.name for n in ln] == ["game_coordinator", "model_learner", "policy_improver"] == everything[:3]
    assert [n.name for n in cn] == ["collector_4", "collector_5"]
    assert [n.parameters[-1]["robot_id"] for n in cn] == ["sim4", "sim5"]
    assert [n.parameters[-1]["seed"] for n in cn] == [4000, 5000]  # other machines' collectors draw other resets
    assert all(n.parameters[-1]["exit_when_done"] is True and not n.required and not n.ends_run for n in cn)
    assert all(n.parameters[-1]["coordinator_key"] == KEY for n in cn)  # they run only what that key signed
    # with a coordinator in the same graph the launcher ends the collectors, they do not leave on their own,
    # and they trust the key this run's coordinator creates
    whole = graph.resolve(name, {k: v for k, v in base.items() if k != "coordinator_key"})
    for n in graph.build_nodes(whole)[3:]:
        assert "exit_when_done" not in n.parameters[-1]
        assert n.parameters[-1]["coordinator_key"] == str(tmp_path.resolve() / "keys" / "coordinator_ed25519.pub")
    for g in (learner, collectors):
        env = graph.environment(g)
        assert env["ROS_STATIC_PEERS"] == "10.77.0.1;learner-box.lab"
        assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"  # unicast to the peers, no multicast
        assert env["ROS_DOMAIN_ID"] == "42"
    for values, g in (({**base, "role": "learner"}, learner),
                      ({**base, "role": "collectors", "first_collector": "4"}, collectors)):
        rec = _run_launch_file(name, values, monkeypatch)
        assert rec.declared["role"] == "all" and rec.declared["peers"] == "" and rec.declared["first_collector"] == "0"
        assert rec.declared["coordinator_key"] == ""
        assert [n["name"] for n in rec.nodes] == [n.name for n in graph.build_nodes(g)]
        assert [n["parameters"] for n in rec.nodes] == [n.parameters for n in graph.build_nodes(g)]
        assert rec.env == graph.environment(g)


def test_discovery_defaults_keep_a_run_to_itself(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    monkeypatch.setenv("ROS_STATIC_PEERS", "192.0.2.99")  # a shell's leftover: not inherited
    sim = graph.resolve("pal_dclaw", {"log_dir": str(tmp_path / "a")})
    env = graph.environment(sim)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env["ROS_STATIC_PEERS"] == ""
    hw = graph.environment(graph.resolve("pal_dclaw", {"log_dir": str(tmp_path / "a"), "use_sim": "false"}))
    assert hw["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SUBNET"
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "OFF")  # an explicit choice for a robot is kept
    assert graph.environment(graph.resolve("pal_dclaw", {"use_sim": "false"}))["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "OFF"
    # each run its own domain (stable for its run directory, 1..101), unless told
    lo, hi = graph.RUN_DOMAINS
    domains = {graph.resolve("pal_dclaw", {"log_dir": str(tmp_path / f"run{i}")}).domain_id for i in range(40)}
    assert len(domains) > 20 and all(lo <= d <= hi for d in domains)
    assert sim.domain_id == graph.resolve("pal_dclaw", {"log_dir": str(tmp_path / "a")}).domain_id
    assert graph.resolve("pal_dclaw", {"domain_id": "7"}).domain_id == 7
    monkeypatch.setenv("ROS_DOMAIN_ID", "9")
    assert graph.resolve("pal_dclaw", {}).domain_id == 9
    assert graph.resolve("pal_dclaw", {"role": "collectors", "coordinator_key": KEY}).domain_id == 9


@pytest.mark.parametrize("args, message", [
    ({"role": "observer"}, "role:=observer must be one of"),
    ({"role": "learner"}, "needs the run's domain"),  # (no domain_id and no ROS_DOMAIN_ID)
    ({"role": "collectors", "coordinator_key": KEY}, "needs the run's domain"),
    ({"role": "collectors", "domain_id": "3"}, "needs coordinator_key"),
    ({"coordinator_key": "/nonexistent/coordinator.pub"}, "neither 'ed25519:<base64>' nor an existing key file"),
    ({"peers": "fe80::1", "domain_id": "3"}, "IPv6"),
    ({"peers": "bad_host!", "domain_id": "3"}, "neither an IPv4 address nor a host name"),
    ({"peers": "10.0.0.300", "domain_id": "3"}, "neither an IPv4 address nor a host name"),
    ({"peers": ",".join(f"10.0.0.{i}" for i in range(40)), "domain_id": "3"}, "at most 32"),
    ({"first_collector": "-1"}, "out of range"),
    ({"first_collector": "998", "num_collectors": "4"}, "goes past collector"),
])
def test_bad_role_and_peer_arguments(args: dict, message: str, monkeypatch) -> None:
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    with pytest.raises(ValueError, match=message):
        graph.resolve("pal_dclaw", args)


def test_peers_parse_and_hardware_collectors_role(tmp_path: Path) -> None:
    assert graph.parse_peers(" 10.0.0.2, robot-1.lab ;10.0.0.2 ") == ("10.0.0.2", "robot-1.lab")
    assert graph.parse_peers("") == ()
    g = graph.resolve("pal_dclaw", {"log_dir": str(tmp_path), "use_sim": "false", "role": "collectors",
                                    "domain_id": "5", "first_collector": "2", "peers": "10.0.0.1", "coordinator_key": KEY})
    (hw,) = graph.build_nodes(g)
    assert (hw.name, hw.executable, hw.ends_run) == ("hardware_collector_2", "hardware_collector", True)
    p = hw.parameters[-1]
    assert (p["robot_id"], p["seed"], p["exit_when_done"]) == ("dclaw2", 2000, True)
    pub = tmp_path / "coordinator.pub"
    pub.write_text(KEY + "\n")
    (hw0,) = graph.build_nodes(graph.resolve("pal_dclaw", {"use_sim": "false", "role": "collectors", "domain_id": "5",
                                                          "coordinator_key": str(pub)}))
    assert hw0.parameters[-1]["coordinator_key"] == str(pub.resolve())
    assert hw0.name == "hardware_collector" and hw0.parameters[-1]["robot_id"] == "dclaw"


def test_cli_dry_run_of_the_two_halves(tmp_path: Path, capsys, monkeypatch) -> None:
    from mbrl_ros import cli

    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)

    assert cli.main(["launch", "mal_dclaw", "role:=learner", "domain_id:=12", "peers:=10.1.0.2",
                     f"log_dir:={tmp_path / 'l'}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()[:3]] == ["game_coordinator", "model_learner", "policy_improver"]
    assert "collector_0" not in out and "ROS_STATIC_PEERS=10.1.0.2" in out and "ROS_DOMAIN_ID=12" in out
    assert cli.main(["launch", "mal_dclaw", "role:=collectors", "num_collectors:=3", "domain_id:=12",
                     "peers:=10.1.0.1", f"coordinator_key:={KEY}", f"log_dir:={tmp_path / 'c'}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert [line.split(":")[0] for line in out.splitlines()[:3]] == ["collector_0", "collector_1", "collector_2"]
    assert "game_coordinator" not in out
    assert cli.main(["launch", "mal_dclaw", "role:=collectors", "peers:=10.1.0.1", f"coordinator_key:={KEY}",
                     "--dry-run"]) == 2  # no domain
