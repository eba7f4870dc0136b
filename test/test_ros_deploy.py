"""Deploy graphs: ``mbrl-ros launch deploy_dclaw policy:=FILE.onnx`` on the sim and on the servo emulator.

- sim: 2 episodes of a policy run deterministically, printed one line each with a summary,
  recorded to MCAP with what replays the robot in Foxglove (URDF, URDF joint states, markers,
  diagnostics), exit 0; no learning node starts; every recorded joint position inside the task's
  range;
- emulator (``use_sim:=false`` on a pty, as on a robot): the same through the Dynamixel driver and
  the scripted resets; no Goal Position outside the joints' limits ever reached a servo;
- a policy of the other robot is refused with one line and exit status 2 (also under
  ``--dry-run``), before any node starts: the emulator sees no write at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mbrl_ros import graph

TASK_ID = "dclaw-turn-fixed"


def _policy_file(tmp_path: Path, task_id: str) -> Path:
    """A fresh initial policy of ``task_id`` as the ONNX file a run writes."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.policy_player import PolicyPlayer
    from mbrl_ros.tasks import get_task

    player = PolicyPlayer(get_task(task_id), load_config("pal", task_id), "cpu")
    path = tmp_path / f"{task_id}.onnx"
    path.write_bytes(player.to_onnx_bytes(0, 0))
    return path


def _launch(args: list[str], timeout: float = 240.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", *args, "--no-progress"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(errors="replace"), "")


def _recorded_episodes(summary: dict) -> list:
    from std_msgs.msg import UInt8MultiArray

    from mbrl_ros import wire
    from mbrl_ros.nodes import TRANSITIONS
    from mbrl_ros.nodes.recording import read_ros_messages
    from mbrl_ros.tasks import get_task

    task = get_task(TASK_ID)
    return [wire.unpack_episode(wire.from_msg(m), task)
            for m, _t in read_ros_messages(Path(summary["mcap"]), TRANSITIONS, UInt8MultiArray)]


# -- without ROS: the graph ----------------------------------------------------------------
def test_deploy_graph_has_the_deployer_and_a_deterministic_collector_only(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    policy = _policy_file(tmp_path, TASK_ID)
    g = graph.resolve("deploy_dclaw", {"policy": str(policy), "episodes": "3", "log_dir": str(tmp_path / "run")})
    nodes = graph.build_nodes(g)
    assert [n.executable for n in nodes] == ["policy_deployer", "collector"]
    assert nodes[0].ends_run and nodes[0].parameters[-1]["episodes"] == 3
    assert nodes[1].parameters[-1]["exploration"] is False  # evaluation: the mean action
    hw = graph.build_nodes(graph.resolve("deploy_dclaw", {"policy": str(policy), "use_sim": "false",
                                                          "log_dir": str(tmp_path / "hw")}))
    assert [n.executable for n in hw] == ["policy_deployer", "hardware_collector"]
    assert hw[1].parameters[-1]["exploration"] is False
    names = {a.name for a in graph.launch_arguments("deploy_dkitty")}
    assert {"policy", "episodes", "use_sim", "device_path", "log_dir"} <= names and "samples" not in names
    with pytest.raises(ValueError, match="policy:= is required"):
        graph.resolve("deploy_dclaw", {"log_dir": str(tmp_path / "x")})
    with pytest.raises(ValueError, match="unknown launch argument"):
        graph.resolve("deploy_dclaw", {"policy": str(policy), "samples": "10"})


def test_wrong_robot_policy_is_refused_with_exit_2_before_anything_starts(tmp_path: Path) -> None:
    pytest.importorskip("mujoco")
    kitty = _policy_file(tmp_path, "dkitty-orient-random")
    log_dir = tmp_path / "run"
    for extra in (["--dry-run"], []):
        r = _launch(["deploy_dclaw", f"policy:={kitty}", f"log_dir:={log_dir}", "episodes:=1", *extra], timeout=120)
        lines = [x for x in r.stdout.splitlines() if x.strip()]
        assert r.returncode == 2, r.stdout
        assert len(lines) == 1 and "refused" in lines[0] and "dkitty" in lines[0], r.stdout
        assert not log_dir.exists()  # no node, no parameter file, no record


# -- over DDS ------------------------------------------------------------------------------
@pytest.mark.ros
def test_deploy_on_the_sim_runs_two_episodes_prints_and_records(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    pytest.importorskip("mujoco")
    from ros_harness import free_domain_id

    policy = _policy_file(tmp_path, TASK_ID)
    log_dir = tmp_path / "run"
    r = _launch(["deploy_dclaw", f"policy:={policy}", "episodes:=2", f"log_dir:={log_dir}",
                 f"domain_id:={free_domain_id()}", "--timeout", "200"])
    assert r.returncode == 0, r.stdout + _logs(log_dir)
    assert sum(1 for x in r.stdout.splitlines() if x.strip().startswith("episode ") and "return" in x) == 2, r.stdout
    assert "success" in r.stdout and "mean return" in r.stdout
    assert sorted(p.name for p in (log_dir / "logs").iterdir()) == ["collector_0.log", "policy_deployer.log"]
    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["episodes"] == 2 and summary["use_sim"] and 0.0 <= summary["success"] <= 1.0
    episodes = _recorded_episodes(summary)
    assert len(episodes) == 2 and all(e.policy_version == 0 and e.behavior == "policy" for e in episodes)
    assert [round(e.episode_return, 4) for e in episodes] == summary["returns"]
    # deterministic: the recorded actions are the policy's mean action on the recorded observations
    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.core.gate import joint_slots
    from mbrl_ros.tasks import get_task

    act = load_onnx_policy(str(policy), expect_task=TASK_ID).act
    for e in episodes:
        np.testing.assert_allclose(np.clip(e.actions, -1, 1), np.clip(act(e.obs[: len(e.actions)]), -1, 1), atol=1e-4)
    task = get_task(TASK_ID)
    q = np.concatenate([e.obs[:, joint_slots(task)] for e in episodes])
    assert np.all(q >= task.limits.qpos_low - 0.05) and np.all(q <= task.limits.qpos_high + 0.05)
    assert_record_replays_the_robot(Path(summary["mcap"]), "sim0", "policy_deployer")


def assert_record_replays_the_robot(mcap: Path, robot_id: str, recorder: str, task_id: str = TASK_ID) -> None:
    """The record holds what config/foxglove_mbrl.json replays: the URDF, the URDF joint states and
    the markers of the robot, and the diagnostics of the recording node and the robot's collector."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    from mbrl_ros.nodes import DIAGNOSTICS
    from mbrl_ros.nodes.recording import read_messages, read_ros_messages
    from mbrl_ros.nodes.visualization import ROBOT_DESCRIPTION, markers_topic, urdf_joint_states_topic
    from mbrl_ros.tasks import get_task, urdf

    types = {topic: datatype for topic, datatype, _data, _t in read_messages(mcap)}
    assert types.get(ROBOT_DESCRIPTION) == "std_msgs/msg/String", types
    assert types.get(urdf_joint_states_topic(robot_id)) == "sensor_msgs/msg/JointState", types
    assert types.get(markers_topic(robot_id)) == "visualization_msgs/msg/MarkerArray", types
    assert types.get(DIAGNOSTICS) == "diagnostic_msgs/msg/DiagnosticArray", types
    descriptions = [m.data for m, _t in read_ros_messages(mcap, ROBOT_DESCRIPTION, String)]
    assert descriptions and descriptions[0] == urdf.robot_urdf(get_task(task_id).info.robot)
    joints = [m for m, _t in read_ros_messages(mcap, urdf_joint_states_topic(robot_id), JointState)]
    assert joints and all(list(m.name) == urdf.movable_joints(get_task(task_id).info.robot) for m in joints)
    markers = [m for m, _t in read_ros_messages(mcap, markers_topic(robot_id), MarkerArray)]
    assert markers and {(x.ns, x.header.frame_id) for x in markers[-1].markers} >= {("valve", "world"),
                                                                                   ("target", "world")}
    names = {st.name for m, _t in read_ros_messages(mcap, DIAGNOSTICS, DiagnosticArray) for st in m.status}
    assert {f"mbrl_ros/{recorder}", "mbrl_ros/collector_0"} <= names, names


@pytest.mark.ros
def test_deploy_on_the_emulated_dclaw_keeps_every_goal_inside_the_limits(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    pytest.importorskip("dynamixel_sdk")
    pytest.importorskip("mujoco")
    from ros_harness import free_domain_id

    from mbrl_ros.hardware.emulator import ServoEmulator
    from mbrl_ros.tasks import get_task

    policy = _policy_file(tmp_path, TASK_ID)
    kitty = _policy_file(tmp_path, "dkitty-orient-random")
    config = tmp_path / "hardware.yaml"
    config.write_text(yaml.safe_dump({
        "hardware_collector": {"ros__parameters": {"reset_object_settle_s": 0.2, "reset_move_timeout_s": 1.5}},
    }))
    emu = ServoEmulator("dclaw", physics="mujoco", realtime=True)
    pty = emu.start()
    log_dir = tmp_path / "run"
    try:
        # the other robot's policy: refused before the bus is opened
        wrong = _launch(["deploy_dclaw", f"policy:={kitty}", "use_sim:=false", f"device_path:={pty}",
                         f"log_dir:={tmp_path / 'wrong'}", "episodes:=1"], timeout=120)
        assert wrong.returncode == 2 and not emu.goal_writes() and not any(emu.torque_enabled().values())
        r = _launch(["deploy_dclaw", f"policy:={policy}", "use_sim:=false", f"device_path:={pty}",
                     f"config:={config}", "episodes:=2", f"log_dir:={log_dir}", f"domain_id:={free_domain_id()}",
                     "--timeout", "200"])
    finally:
        emu.stop()
    hw_log = _logs(log_dir)
    assert r.returncode == 0, r.stdout + hw_log
    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["episodes"] == 2 and not summary["use_sim"]
    episodes = _recorded_episodes(summary)
    task = get_task(TASK_ID)
    assert len(episodes) == 2 and {e.robot_id for e in episodes} == {"dclaw"}
    assert all(e.length == task.info.horizon for e in episodes)
    cfg, writes, unit = emu.config, emu.goal_writes(), 2 * np.pi / 4096
    assert len(writes) >= 9 * 2 * task.info.horizon
    lo, hi = np.maximum(task.limits.qpos_low, cfg.lower), np.minimum(task.limits.qpos_high, cfg.upper)
    if "disentangle retry" in hw_log:  # a reset may lift the tops beyond the task's range, never the hard limits
        lo, hi = cfg.lower, cfg.upper
    for j, dxl_id in enumerate(cfg.joint_ids):
        q = np.array([w.rad for w in writes if w.dxl_id == dxl_id])
        assert q.size and q.min() >= lo[j] - unit and q.max() <= hi[j] + unit, \
            f"ID {dxl_id}: goals in [{q.min():.3f}, {q.max():.3f}], limits [{lo[j]:.3f}, {hi[j]:.3f}]"


def _logs(log_dir: Path) -> str:
    d = log_dir / "logs"
    if not d.is_dir():
        return ""
    return "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in sorted(d.glob("*.log")))


@pytest.mark.parametrize("name", sorted(graph.DEPLOY_GRAPHS))
def test_deploy_launch_file_builds_the_same_graph_as_the_cli(name: str, tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mujoco")
    from test_ros_graph_description import _run_launch_file

    task_id = graph.DEPLOY_GRAPHS[name].task_id
    values = {"log_dir": str(tmp_path), "policy": str(_policy_file(tmp_path, task_id)), "episodes": "4",
              "domain_id": "17"}
    rec = _run_launch_file(name, values, monkeypatch)
    assert rec.declared == {a.name: a.default for a in graph.launch_arguments(name)}
    nodes = graph.build_nodes(graph.resolve(name, values))
    assert [n["name"] for n in rec.nodes] == [n.name for n in nodes] == ["policy_deployer", "collector_0"]
    assert [n["parameters"] for n in rec.nodes] == [n.parameters for n in nodes]
