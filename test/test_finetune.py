"""Sim-to-real fine-tuning: ``--init-from`` starts a game at the loaded policy's return; fixed and
randomised dynamics of the simulated world (``--set dynamics=...``, ``--set randomize_dynamics=true``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl_ros.cli import main
from mbrl_ros.core.config import load_config
from mbrl_ros.core.train import init_game_from, parse_init_parts, train

torch.set_num_threads(1)

TINY = ["model_hidden=[32, 32]", "npg_trajectories=16", "eval_episodes=4", "n_init=60", "samples_per_iter=40",
        "buffer_size=200", "model_epochs_aggressive=10", "model_min_steps=20", "cg_iters=5"]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("source")
    train(load_config("pal", "pointmass", [*TINY, "max_iterations=3"]), out, progress=False)
    return out


def test_init_from_starts_the_game_at_the_loaded_policys_return(source_run: Path, tmp_path: Path) -> None:
    final = _rows(source_run / "metrics.jsonl")[-1]
    fresh = load_config("pal", "pointmass", [*TINY, "max_iterations=1", "seed=5"])  # other seed: other data
    summary = train(fresh, tmp_path / "ft", progress=False, init_from=source_run)
    first = _rows(tmp_path / "ft" / "metrics.jsonl")[0]
    assert first["iteration"] == 0
    # the same deterministic evaluation of the same policy in the same world: the same numbers
    assert first["eval_return"] == final["eval_return"] and first["eval_success"] == final["eval_success"]
    assert summary["init_from"]["parts"] == ["policy"] and summary["init_from"]["source_samples"] > 0
    assert summary["samples"] <= fresh.samples and first["samples"] == fresh.n_init  # only new samples count
    # a fresh game (no --init-from) starts elsewhere: the test can fail
    scratch = train(load_config("pal", "pointmass", [*TINY, "max_iterations=1", "seed=5"]), tmp_path / "s",
                    progress=False)
    assert _rows(tmp_path / "s" / "metrics.jsonl")[0]["eval_return"] != final["eval_return"], scratch


def test_init_from_parts_carry_the_model_and_the_buffer(source_run: Path) -> None:
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.tasks.pointmass import PointMassEnv

    cfg = load_config("pal", "pointmass", [*TINY, "seed=9"])
    src = StackelbergGame(cfg, PointMassEnv(), PointMassEnv())
    src.load(source_run / "checkpoint")
    game = StackelbergGame(cfg, PointMassEnv(), PointMassEnv())
    init_game_from(game, source_run, parse_init_parts("policy,model,buffer"))
    for a, b in zip(game.model_player.ensemble.parameters(), src.model_player.ensemble.parameters()):
        assert torch.equal(a, b)
    assert len(game.buffer) == len(EpisodeBuffer.load(source_run / "checkpoint")) > 0
    assert game.samples == 0 and game.referee.iteration == 0  # a new game, not a resume
    only_policy = StackelbergGame(cfg, PointMassEnv(), PointMassEnv())
    init_game_from(only_policy, source_run)
    assert len(only_policy.buffer) == 0
    assert not all(torch.equal(a, b) for a, b in zip(only_policy.model_player.ensemble.parameters(),
                                                      src.model_player.ensemble.parameters()))


def test_a_game_started_from_a_buffer_keeps_its_new_episodes_in_any_kind_of_buffer(source_run: Path) -> None:
    """The new game's episodes must not share ids with the source's (the buffer ignores an id it
    holds: the first new rounds were counted but dropped), and a MAL game aggregates a PAL run's
    FIFO episodes (it refused them: 'a fifo buffer needs a positive capacity')."""
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.tasks.pointmass import PointMassEnv

    for algo in ("pal", "mal"):
        cfg = load_config(algo, "pointmass", [*TINY, "seed=9", "n_init=60"])
        game = StackelbergGame(cfg, PointMassEnv(), PointMassEnv())
        init_game_from(game, source_run, parse_init_parts("policy,buffer"))
        assert game.buffer.kind == ("fifo" if algo == "pal" else "aggregate")
        before = {e.episode_id for e in game.buffer.episodes}
        game.collect()
        new = [e for e in game.buffer.episodes if e.episode_id not in before]
        assert sum(len(e) for e in new) == game.samples >= 60  # every counted sample is in the buffer
        assert all(e.episode_id.startswith("ft1-") for e in new)


def test_init_from_refuses_bad_sources_and_parts(source_run: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="unknown part"):
        parse_init_parts("policy,critic")
    with pytest.raises(ValueError, match="must include policy"):
        parse_init_parts("model")
    cfg = load_config("pal", "pointmass", [*TINY, "model_hidden=[16, 16]"])
    with pytest.raises(ValueError, match="does not fit"):
        train(cfg, tmp_path / "x", progress=False, init_from=source_run, init_parts=("policy", "model"))
    with pytest.raises(ValueError, match="one of them"):
        train(cfg, tmp_path / "y", progress=False, init_from=source_run, resume=source_run)
    assert main(["train", "--task", "pointmass", "--out", str(tmp_path / "z"), "--init-from", str(tmp_path)]) == 2
    assert "no checkpoint there" in capsys.readouterr().err
    assert main(["train", "--task", "pointmass-fixed", "--out", str(tmp_path / "z"),
                 "--init-from", str(source_run)]) == 2
    assert "learnt pointmass" in capsys.readouterr().err


# -- the simulated world's dynamics --------------------------------------------------------
def test_named_perturbations_lie_inside_robels_ranges_and_change_the_world() -> None:
    pytest.importorskip("mujoco")
    from mbrl_ros.core.train import make_world
    from mbrl_ros.tasks.sim import DYNAMICS_RANDOMIZATION, PERTURBATIONS, parse_dynamics

    r = DYNAMICS_RANDOMIZATION["dclaw"]
    for name in ("dclaw-weak", "dclaw-weakest"):
        p = PERTURBATIONS[name]
        assert r["kp"][0] <= p["actuator_gain"] < 2.0  # weaker than the scene's kp 2
        for key in ("joint_frictionloss", "valve_frictionloss"):
            assert r["dof_frictionloss"][0] <= p[key] <= r["dof_frictionloss"][1]
        assert r["dof_damping"][0] <= p["valve_damping"] <= r["dof_damping"][1]
    world = make_world("dclaw-turn-fixed", dynamics="dclaw-weak")
    phys = world.physics()
    assert phys["actuator_gain"][0] == 1.5 and phys["valve_frictionloss"] == 0.005
    world.reset(seed=3)
    assert world.physics()["actuator_gain"][0] == 1.5  # kept over resets
    assert parse_dynamics("actuator_gain:1.2/valve_damping:0.05", "dclaw") == {"actuator_gain": 1.2,
                                                                              "valve_damping": 0.05}
    for bad, match in (("valve_damping", "neither"), ("total_mass:2", "not a physics parameter"),
                       ("actuator_gain:nan", "finite")):
        with pytest.raises(ValueError, match=match):
            parse_dynamics(bad, "dclaw")
    with pytest.raises(ValueError, match="no dynamics"):
        make_world("pointmass", dynamics="dclaw-weak")


def test_randomized_dynamics_redraw_every_episode_inside_robels_ranges() -> None:
    pytest.importorskip("mujoco")
    from mbrl_ros.core.train import make_world
    from mbrl_ros.tasks.sim import DYNAMICS_RANDOMIZATION

    r = DYNAMICS_RANDOMIZATION["dclaw"]
    world = make_world("dclaw-turn-fixed", randomize_dynamics=True)
    gains = []
    for seed in range(4):
        world.reset(seed=seed)
        p = world.physics()
        gains.append(p["actuator_gain"][0])
        assert r["kp"][0] <= p["actuator_gain"][0] <= r["kp"][1]
        assert all(r["dof_damping"][0] <= d <= r["dof_damping"][1] for d in p["joint_damping"])
    assert len(set(gains)) == 4
    world.reset(seed=0)
    assert world.physics()["actuator_gain"][0] == gains[0]  # the draw follows the episode's seed
    # a fixed perturbation wins over the draw
    fixed = make_world("dclaw-turn-fixed", randomize_dynamics=True, dynamics="actuator_gain:1.1")
    fixed.reset(seed=1)
    assert fixed.physics()["actuator_gain"][0] == 1.1
    cfg = load_config("pal", "dclaw-turn-fixed", ["randomize_dynamics=true", "dynamics=dclaw-weak"])
    assert cfg.randomize_dynamics and cfg.dynamics == "dclaw-weak"
    np.testing.assert_equal(make_world("dclaw-turn-fixed").physics()["actuator_gain"][0], 2.0)


# -- the graph: dynamics:= ----------------------------------------------------------------
def test_graph_dynamics_reach_the_sim_collectors_and_the_coordinators_evaluation(tmp_path: Path) -> None:
    """``mbrl-ros launch pal_dclaw dynamics:=dclaw-weak`` (or ``set:=dynamics=dclaw-weak``): every sim
    collector runs the perturbed world and the coordinator evaluates on it (the game's ``dynamics``,
    as ``mbrl-ros train --set dynamics=``); bad names, a disagreement and a real robot are refused."""
    pytest.importorskip("mujoco")
    from mbrl_ros import graph

    assert "dynamics" in {a.name for a in graph.launch_arguments("pal_dclaw")}
    for args in ({"dynamics": "dclaw-weak"}, {"set": "dynamics=dclaw-weak"},
                 {"dynamics": "dclaw-weak", "set": "dynamics=dclaw-weak,n_init=100"}):
        g = graph.resolve("pal_dclaw", {"log_dir": str(tmp_path), "num_collectors": "2", **args})
        nodes = {n.name: n.parameters[-1] for n in graph.build_nodes(g)}
        assert g.dynamics == "dclaw-weak"
        assert nodes["collector_0"]["dynamics"] == nodes["collector_1"]["dynamics"] == "dclaw-weak"
        assert [x for x in nodes["game_coordinator"]["game_set"] if x.startswith("dynamics=")] == ["dynamics=dclaw-weak"]
    plain = {n.name: n.parameters[-1] for n in graph.build_nodes(graph.resolve("pal_dclaw", {"log_dir": str(tmp_path)}))}
    assert "dynamics" not in plain["collector_0"] and "game_set" not in plain["game_coordinator"]
    # parameter:value items too; a deploy graph measures a policy on the perturbed world
    g = graph.resolve("mal_dkitty", {"log_dir": str(tmp_path), "dynamics": "actuator_gain:2.9/total_mass:1.8"})
    assert graph.build_nodes(g)[-1].parameters[-1]["dynamics"] == "actuator_gain:2.9/total_mass:1.8"
    for bad, match in (({"dynamics": "dclaw-strong"}, "dynamics:=dclaw-strong refused: .*neither a named world"),
                       ({"dynamics": "dkitty-heavy"}, "not a physics parameter of the dclaw"),
                       ({"dynamics": "dclaw-weak", "set": "dynamics=dclaw-weakest"}, "disagree"),
                       ({"dynamics": "dclaw-weak", "use_sim": "false"}, "simulator setting"),
                       ({"set": "dynamics=dclaw-weak", "use_sim": "false"}, "simulator setting")):
        with pytest.raises(ValueError, match=match):
            graph.resolve("pal_dclaw", {"log_dir": str(tmp_path), **bad})


def test_graph_randomized_dynamics_reach_the_sim_collectors_only(tmp_path: Path) -> None:
    """``set:=randomize_dynamics=true`` (as ``mbrl-ros train --set randomize_dynamics=true``): every sim
    collector re-draws the world at each reset; the coordinator's game carries the setting (its
    evaluation world stays nominal, as train's); a real robot refuses it."""
    from mbrl_ros import graph

    g = graph.resolve("pal_dclaw", {"log_dir": str(tmp_path), "num_collectors": "2",
                                    "set": "randomize_dynamics=true,n_init=100"})
    nodes = {n.name: n.parameters[-1] for n in graph.build_nodes(g)}
    assert g.randomize_dynamics
    assert nodes["collector_0"]["randomize_dynamics"] is nodes["collector_1"]["randomize_dynamics"] is True
    assert "randomize_dynamics=true" in nodes["game_coordinator"]["game_set"]
    for off in ({}, {"set": "randomize_dynamics=false"}):
        nodes = {n.name: n.parameters[-1] for n in graph.build_nodes(graph.resolve("pal_dclaw", {"log_dir": str(tmp_path), **off}))}
        assert "randomize_dynamics" not in nodes["collector_0"]
    with pytest.raises(ValueError, match="randomize_dynamics is a simulator setting"):
        graph.resolve("pal_dclaw", {"log_dir": str(tmp_path), "use_sim": "false", "set": "randomize_dynamics=true"})
    with pytest.raises(ValueError, match="not a boolean"):
        graph.resolve("pal_dclaw", {"log_dir": str(tmp_path), "set": "randomize_dynamics=maybe"})


@pytest.mark.ros
def test_collector_runs_the_perturbed_world_and_refuses_an_unknown_one(tmp_path: Path) -> None:
    """The sim collector node with ``dynamics:=dclaw-weak`` steps a MuJoCo model whose servo gain is
    ROBEL's 1.5, not the scene's 2.0; an unknown name stops it with one clear error, and the hardware
    collector refuses any (a simulator setting)."""
    pytest.importorskip("rclpy")
    pytest.importorskip("mujoco")
    import rclpy
    from rclpy.parameter import Parameter
    from ros_harness import free_domain_id

    from mbrl_ros import security
    from mbrl_ros.nodes.collector import Collector
    from mbrl_ros.nodes.hardware_collector import HardwareCollector
    from mbrl_ros.tasks import make_env

    key = security.Signer.generate().public_text
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=free_domain_id())
    try:
        node = Collector(context=context, parameter_overrides=[
            Parameter("dynamics", value="dclaw-weak"), Parameter("coordinator_key", value=key)])
        try:
            model = node.env.unwrapped.sim.model
            nominal = make_env("dclaw-turn-fixed").unwrapped.sim.model
            np.testing.assert_allclose(nominal.actuator_gainprm[:, 0], 2.0)
            np.testing.assert_allclose(model.actuator_gainprm[:, 0], 1.5)
            np.testing.assert_allclose(model.actuator_biasprm[:, 1], -1.5)
            assert node.env.physics()["valve_frictionloss"] == 0.005
            assert node.describe_parameter("dynamics").read_only
        finally:
            node.shutdown()
            node.destroy_node()
        with pytest.raises(ValueError, match="dynamics:=dclaw-strong refused: .*neither a named world"):
            Collector(context=context, parameter_overrides=[
                Parameter("dynamics", value="dclaw-strong"), Parameter("coordinator_key", value=key)])
        with pytest.raises(ValueError, match="dynamics:=dclaw-weak is a simulator setting"):
            HardwareCollector(context=context, parameter_overrides=[
                Parameter("dynamics", value="dclaw-weak"), Parameter("coordinator_key", value=key)])
        # randomised dynamics: a new draw at every reset, a fixed world applied after each draw
        node = Collector(context=context, parameter_overrides=[
            Parameter("randomize_dynamics", value=True), Parameter("dynamics", value="valve_damping:0.05"),
            Parameter("coordinator_key", value=key)])
        try:
            gains = []
            for seed in range(3):
                node.env.reset(seed=seed)
                gains.append(node.env.physics()["actuator_gain"][0])
                assert node.env.physics()["valve_damping"] == 0.05
            assert len(set(gains)) == 3 and node.describe_parameter("randomize_dynamics").read_only
        finally:
            node.shutdown()
            node.destroy_node()
        with pytest.raises(ValueError, match="randomize_dynamics is a simulator setting"):
            HardwareCollector(context=context, parameter_overrides=[
                Parameter("randomize_dynamics", value=True), Parameter("coordinator_key", value=key)])
    finally:
        rclpy.shutdown(context=context)


# -- the graph: init_from:= ---------------------------------------------------------------
@pytest.mark.ros
def test_launch_init_from_starts_the_graph_game_at_the_loaded_policys_return(tmp_path: Path) -> None:
    """``mbrl-ros launch pal_dclaw init_from:=RUN``: the coordinator's iteration-0 evaluation is
    the loaded policy's (evaluated here in-process on the same seeds), not a fresh policy's."""
    pytest.importorskip("rclpy")
    pytest.importorskip("mujoco")
    import os
    import subprocess
    import sys

    from ros_harness import free_domain_id

    from mbrl_ros import graph
    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.core.rules import GameRules
    from mbrl_ros.core.schedule import game_spec
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.core.train import make_world
    from mbrl_ros.core.world import evaluate

    smoke = yaml_overrides(graph.config_dir() / "ros_smoke.yaml")
    cfg = load_config("pal", "dclaw-turn-fixed", [*smoke, "seed=11"])  # another seed: another initial policy
    source = tmp_path / "source"
    game = StackelbergGame(cfg, make_world(cfg.task_id), None, "cpu")
    game.save(source / "checkpoint")
    act = load_onnx_policy(game.policy_player.to_onnx_bytes(0, 0), expect_task=cfg.task_id).act
    expected = evaluate(make_world(cfg.task_id), act,
                        GameRules(cfg, game_spec("pal"), 40).eval_seeds(cfg.eval_episodes))
    log_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", "pal_dclaw", "config:=smoke", f"samples:={cfg.n_init}",
            f"init_from:={source}", f"log_dir:={log_dir}", f"domain_id:={free_domain_id()}", "--no-progress",
            "--timeout", "300"]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=400,
                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, r.stdout.decode(errors="replace")
    first = _rows(log_dir / "metrics.jsonl")[0]
    assert first["iteration"] == 0
    assert first["eval_return"] == pytest.approx(expected["return"], abs=1e-6)
    assert "initial policy loaded from" in (log_dir / "logs" / "policy_improver.log").read_text()


def yaml_overrides(path: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load(path.read_text())["/**"]["ros__parameters"]["game_overrides"])


# -- the graph: init_from_parts:= ---------------------------------------------------------
def _fake_checkpoint(path: Path, task_id: str = "dclaw-turn-fixed", buffer: bool = True) -> Path:
    """What graph.resolve looks at (state.json, weights.safetensors, buffer.json): no tensors needed."""
    d = path / "checkpoint"
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"config": {"task_id": task_id}, "samples": 0}))
    (d / "weights.safetensors").write_bytes(b"")
    if buffer:
        (d / "buffer.json").write_text(json.dumps({"kind": "fifo", "capacity": 10, "total_added": 0, "episodes": []}))
    return path


def test_launch_init_from_parts_are_checked_and_reach_the_learning_nodes(tmp_path: Path, capsys) -> None:
    """``init_from_parts:=policy,model,buffer``: checked as ``--init-from-parts`` (the same
    parse_init_parts), one line and exit 2 for a bad value; the learning nodes get the run and the parts."""
    from mbrl_ros import cli, graph

    src = _fake_checkpoint(tmp_path / "src")
    assert {"init_from", "init_from_parts"} <= {a.name for a in graph.launch_arguments("pal_dclaw")}
    assert "init_from_parts" not in {a.name for a in graph.launch_arguments("deploy_dclaw")}
    g = graph.resolve("pal_dclaw", {"log_dir": str(tmp_path / "run"), "init_from": str(src),
                                    "init_from_parts": "policy, model,buffer"})
    assert g.init_parts == ("policy", "model", "buffer") and g.init_from == str((src / "checkpoint").resolve())
    nodes = {n.name: n.parameters[-1] for n in graph.build_nodes(g)}
    for name in ("game_coordinator", "model_learner", "policy_improver"):
        assert (nodes[name]["init_from"], nodes[name]["init_from_parts"]) == (g.init_from, "policy,model,buffer")
    assert "init_from" not in nodes["collector_0"]
    default = graph.resolve("pal_dclaw", {"log_dir": str(tmp_path / "run"), "init_from": str(src)})
    assert default.init_parts == ("policy",)
    assert {n.parameters[-1]["init_from_parts"] for n in graph.build_nodes(default) if n.executable != "collector"} == {
        "policy"}
    fresh = graph.build_nodes(graph.resolve("pal_dclaw", {"log_dir": str(tmp_path / "run")}))
    assert not any("init_from" in n.parameters[-1] or "init_from_parts" in n.parameters[-1] for n in fresh)

    other = _fake_checkpoint(tmp_path / "kitty", task_id="dkitty-orient-random")
    no_buffer = _fake_checkpoint(tmp_path / "nobuf", buffer=False)
    for args, match in (({"init_from": str(src), "init_from_parts": "policy,critic"},
                         "init_from_parts:=policy,critic: unknown part\\(s\\) critic"),
                        ({"init_from": str(src), "init_from_parts": "model,buffer"}, "must include policy"),
                        ({"init_from_parts": "policy,model"}, "needs init_from:="),
                        ({"init_from": str(tmp_path), "init_from_parts": "policy,model"}, "init_from:=.*no checkpoint there"),
                        ({"init_from": str(other)}, "learnt dkitty-orient-random, this graph plays dclaw-turn-fixed"),
                        ({"init_from": str(no_buffer), "init_from_parts": "policy,buffer"}, "no buffer")):
        with pytest.raises(ValueError, match=match):
            graph.resolve("pal_dclaw", {"log_dir": str(tmp_path / "run"), **args})
    assert graph.resolve("pal_dclaw", {"init_from": str(no_buffer), "init_from_parts": "policy,model"}).init_from
    capsys.readouterr()
    for bad in ("init_from_parts:=policy,critic", "init_from_parts:=buffer"):
        assert cli.main(["launch", "pal_dclaw", f"init_from:={src}", bad, "--dry-run"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mbrl-ros launch: error: ") and "init_from_parts" in err and "\n" not in err
    assert cli.main(["launch", "pal_dclaw", f"init_from:={tmp_path / 'nowhere'}", "init_from_parts:=policy,model",
                     "--dry-run"]) == 2
    assert "no checkpoint there" in capsys.readouterr().err
    assert cli.main(["launch", "deploy_dclaw", "init_from_parts:=policy", "--dry-run"]) == 2  # not a deploy argument


@pytest.fixture(scope="module")
def dclaw_source(tmp_path_factory) -> Path:
    """A finished D'Claw run with the graph's smoke widths: one fitted model, 15 episodes in its buffer."""
    pytest.importorskip("mujoco")
    from mbrl_ros import graph

    out = tmp_path_factory.mktemp("dclaw_source")
    smoke = yaml_overrides(graph.config_dir() / "ros_smoke.yaml")
    train(load_config("pal", "dclaw-turn-fixed", [*smoke, "samples=600", "seed=11"]), out, progress=False)
    return out


@pytest.mark.ros
def test_learner_nodes_start_from_the_runs_model_and_buffer_as_the_in_process_game(dclaw_source: Path,
                                                                                   tmp_path: Path) -> None:
    """The model learner with ``init_from`` and ``init_from_parts:=policy,model,buffer`` holds the
    source's ensemble (and fit count) and buffer episodes, exactly what ``init_game_from`` gives the
    in-process game; the source's transitions are not samples of this game (ledger, count), a new
    episode adds to them, and a restart restores them once. The policy improver has the buffer too."""
    pytest.importorskip("rclpy")
    import rclpy
    from rclpy.parameter import Parameter
    from ros_harness import free_domain_id

    from mbrl_ros import graph, wire
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.checkpoint import read_checkpoint
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.core.train import make_world
    from mbrl_ros.nodes.model_learner import ModelLearner
    from mbrl_ros.nodes.policy_improver import PolicyImprover

    smoke = yaml_overrides(graph.config_dir() / "ros_smoke.yaml")
    tensors, state = read_checkpoint(dclaw_source / "checkpoint")
    source_buffer = EpisodeBuffer.load(dclaw_source / "checkpoint")
    source_ids = source_buffer.episode_ids()
    assert len(source_ids) == 15 and state["model_fits"] == 1
    game = StackelbergGame(load_config("pal", "dclaw-turn-fixed", smoke), make_world("dclaw-turn-fixed"), None, "cpu")
    init_game_from(game, dclaw_source, ("policy", "model", "buffer"))

    def params(parts: str, *extra: str) -> list:
        # niceness 0: these nodes run inside pytest, whose nice value could not be lowered again
        return [Parameter("niceness", value=0), Parameter("algo", value="pal"), Parameter("task", value="dclaw-turn-fixed"),
                Parameter("game_overrides", value=smoke + list(extra)), Parameter("init_from", value=str(dclaw_source)),
                Parameter("init_from_parts", value=parts), Parameter("checkpoint_dir", value=str(tmp_path / "ml"))]

    def same_buffer(buf: EpisodeBuffer, ref: EpisodeBuffer) -> None:
        assert buf.episode_ids() == ref.episode_ids() and buf.kind == ref.kind and buf.capacity == ref.capacity
        for key, value in ref.arrays().items():
            np.testing.assert_array_equal(buf.arrays()[key], value)
        for a, b in zip(buf.initial_states(), ref.initial_states()):
            np.testing.assert_array_equal(a, b)

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=free_domain_id())
    nodes = []
    try:
        ml = ModelLearner(context=context, parameter_overrides=params("policy,model,buffer"))
        nodes.append(ml)
        for key, value in ml.player.ensemble.state_dict().items():
            assert torch.equal(value, tensors[f"ensemble.{key}"]), key
            assert torch.equal(value, game.model_player.ensemble.state_dict()[key]), key
        assert ml.player.n_fits == game.model_player.n_fits == 1  # a warm start, as in-process
        same_buffer(ml.buffer, game.buffer)
        assert ml.buffer.episode_ids() == source_ids
        assert ml.intake.ids == [] and ml.intake.samples == 0  # the source's episodes are not this game's
        ep = source_buffer.episodes[0]  # a new episode of this game (another id) lands after them
        rec = wire.EpisodeRecord(robot_id="sim0", episode_id="sim0-test-000000", sequence=0, policy_version=0,
                                 task_id="dclaw-turn-fixed", obs=ep.obs, actions=ep.actions, rewards=ep.rewards,
                                 terminated=ep.terminated, stream="test", aux=ep.aux)
        ml._on_transitions(wire.to_msg(wire.pack_episode(rec)))
        assert ml.buffer.episode_ids() == source_ids + ["sim0-test-000000"]
        assert ml.intake.ids == ["sim0-test-000000"] and ml.intake.samples == len(ep)
        ml._checkpoint(None, {})
        restarted = ModelLearner(context=context, parameter_overrides=params("policy,model,buffer"))
        nodes.append(restarted)
        assert restarted.buffer.episode_ids() == source_ids + ["sim0-test-000000"]  # from its checkpoint, once
        assert restarted.intake.ids == ["sim0-test-000000"] and restarted.intake.samples == len(ep)
        assert all(torch.equal(v, tensors[f"ensemble.{k}"]) for k, v in restarted.player.ensemble.state_dict().items())

        only_policy = ModelLearner(context=context, parameter_overrides=params("policy")[:-1])
        nodes.append(only_policy)
        assert len(only_policy.buffer) == 0 and only_policy.player.n_fits == 0
        assert not all(torch.equal(a, b) for a, b in zip(only_policy.player.ensemble.parameters(),
                                                          game.model_player.ensemble.parameters()))

        pi = PolicyImprover(context=context, parameter_overrides=params("policy,model,buffer"))
        nodes.append(pi)
        same_buffer(pi.buffer, game.buffer)
        for key, value in pi.player.policy.state_dict().items():
            assert torch.equal(value, game.policy_player.policy.state_dict()[key]), key
        pi_policy_only = PolicyImprover(context=context, parameter_overrides=params("policy,model"))
        nodes.append(pi_policy_only)
        assert len(pi_policy_only.buffer) == 0

        with pytest.raises(ValueError, match="init_from_parts:=policy,critic: unknown part\\(s\\) critic"):
            ModelLearner(context=context, parameter_overrides=params("policy,critic"))
        with pytest.raises(ValueError, match="ensemble network does not fit"):
            ModelLearner(context=context, parameter_overrides=params("policy,model", "model_hidden=[16,16]"))
    finally:
        for n in nodes:
            n.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.ros
def test_launch_init_from_parts_policy_model_buffer_runs_the_graph_game(dclaw_source: Path, tmp_path: Path) -> None:
    """``mbrl-ros launch pal_dclaw config:=smoke init_from:=RUN init_from_parts:=policy,model,buffer``
    starts and completes: the model learner fits on the source's episodes plus this game's, the
    budget and the record hold this game's samples only, the summary says where the game started."""
    pytest.importorskip("rclpy")
    import os
    import subprocess
    import sys

    from ros_harness import free_domain_id

    from mbrl_ros.core.buffers import EpisodeBuffer

    source_ids = EpisodeBuffer.load(dclaw_source / "checkpoint").episode_ids()
    log_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", "pal_dclaw", "config:=smoke", "samples:=600",
            f"init_from:={dclaw_source}", "init_from_parts:=policy,model,buffer", f"log_dir:={log_dir}",
            f"domain_id:={free_domain_id()}", "--no-progress", "--timeout", "400"]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=500,
                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["init_from"] == json.loads((log_dir / "init_from.json").read_text())
    assert summary["init_from"]["parts"] == ["policy", "model", "buffer"] and summary["init_from"]["source_samples"] == 600
    assert summary["samples"] == 600 and summary["episodes"] == 15  # this game's own, not the source's 600 too
    model_log = (log_dir / "logs" / "model_learner.log").read_text()
    assert "initial model loaded from" in model_log and "initial buffer loaded from" in model_log
    assert "1000 transitions" in model_log  # the first fit: the source's 600 and this game's first 400
    assert "initial buffer loaded from" in (log_dir / "logs" / "policy_improver.log").read_text()
    ledger = json.loads((log_dir / "model_learner" / "learner_state.json").read_text())["intake"]
    final_ids = [e["episode_id"] for e in json.loads((log_dir / "model_learner" / "buffer.json").read_text())["episodes"]]
    assert not set(source_ids) & set(ledger["ids"]) and ledger["samples"] == 600  # never counted, never re-sent
    assert final_ids == source_ids[5:] + ledger["ids"]  # the FIFO (1000) dropped the source's oldest 200 transitions
