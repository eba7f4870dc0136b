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
