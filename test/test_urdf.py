"""The generated URDF matches the MuJoCo scene it was made from (no ROS needed).

Two independent checks of the kinematics: a small URDF forward kinematics written here from the
URDF spec (parses only the URDF text), and MuJoCo's own URDF importer. Both are compared with
MuJoCo's body poses in the original scene over random joint configurations, within 1 mm.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest

from mbrl_ros.tasks import urdf
from mbrl_ros.tasks.scenes import load_model

TOL_M = 1e-3  # the bound; the generator is exact to ~1e-12, so this is a loose bound
ROBOTS = ("dclaw", "dkitty")
CLAW_JOINTS = ["FFJ10", "FFJ11", "FFJ12", "MFJ20", "MFJ21", "MFJ22", "THJ30", "THJ31", "THJ32"]


# -- a tiny URDF forward kinematics (URDF spec: child = parent * origin * motion(axis, q)) --------
def _rpy_matrix(rpy: np.ndarray) -> np.ndarray:
    r, p, y = rpy
    rx = np.array([[1, 0, 0], [0, math.cos(r), -math.sin(r)], [0, math.sin(r), math.cos(r)]])
    ry = np.array([[math.cos(p), 0, math.sin(p)], [0, 1, 0], [-math.sin(p), 0, math.cos(p)]])
    rz = np.array([[math.cos(y), -math.sin(y), 0], [math.sin(y), math.cos(y), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _floats(el, attr: str, default: str) -> np.ndarray:
    return np.array([float(x) for x in (el.get(attr, default) if el is not None else default).split()])


def urdf_fk(text: str, q: dict[str, float]) -> dict[str, np.ndarray]:
    """World 4x4 pose of every link for joint values ``q`` (missing joints at 0)."""
    root = ET.fromstring(text)
    joints = {j.find("child").get("link"): j for j in root.findall("joint")}
    poses: dict[str, np.ndarray] = {}

    def pose(link: str) -> np.ndarray:
        if link in poses:
            return poses[link]
        j = joints.get(link)
        if j is None:
            poses[link] = np.eye(4)
            return poses[link]
        o = j.find("origin")
        origin = np.eye(4)
        origin[:3, :3] = _rpy_matrix(_floats(o, "rpy", "0 0 0"))
        origin[:3, 3] = _floats(o, "xyz", "0 0 0")
        motion = np.eye(4)
        value = q.get(j.get("name"), 0.0)
        axis = _floats(j.find("axis"), "xyz", "1 0 0")
        if j.get("type") in ("revolute", "continuous"):
            motion[:3, :3] = _axis_angle(axis, value)
        elif j.get("type") == "prismatic":
            motion[:3, 3] = axis * value
        poses[link] = pose(j.find("parent").get("link")) @ origin @ motion
        return poses[link]

    for link in root.findall("link"):
        pose(link.get("name"))
    return poses


def _random_qpos(model: mujoco.MjModel, rng: np.random.Generator) -> np.ndarray:
    qpos = model.qpos0.copy()
    for j in range(model.njnt):
        lo, hi = model.jnt_range[j] if model.jnt_limited[j] else (-math.pi, math.pi)
        # D'Kitty's root slides span +-10 m; +-0.5 m is enough to move the robot around
        lo, hi = max(lo, -math.pi), min(hi, math.pi)
        if model.jnt_type[j] == mujoco.mjtJoint.mjJNT_SLIDE:
            lo, hi = max(lo, -0.5), min(hi, 0.5)
        qpos[model.jnt_qposadr[j]] = rng.uniform(lo, hi)
    return qpos


def _scene_poses(model: mujoco.MjModel, qpos: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = mujoco.MjData(model)
    data.qpos[:] = qpos
    mujoco.mj_kinematics(model, data)
    return {urdf.link_name(model.body(b).name): (data.xpos[b].copy(), data.xmat[b].reshape(3, 3).copy())
            for b in urdf.robot_bodies(model) if b > 0}


@pytest.mark.parametrize("robot", ROBOTS)
def test_urdf_forward_kinematics_matches_scene(robot):
    model = load_model(urdf.URDF_SCENES[robot])
    text = urdf.robot_urdf(robot)
    names = urdf.movable_joints(robot)
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(50):
        qpos = _random_qpos(model, rng)
        q = {n: float(qpos[model.joint(n).qposadr[0]]) for n in names}
        fk = urdf_fk(text, q)
        scene = _scene_poses(model, qpos)
        assert set(scene) <= set(fk)
        for link, (pos, rot) in scene.items():
            worst = max(worst, float(np.linalg.norm(fk[link][:3, 3] - pos)))
            # orientation too: a wrong frame would misplace the geometry even at the right origin
            assert np.allclose(fk[link][:3, :3], rot, atol=1e-6), link
    assert worst < TOL_M, f"{robot}: largest link position error {worst * 1e3:.4f} mm"


@pytest.mark.parametrize("robot", ROBOTS)
def test_mujoco_loads_the_urdf_with_the_same_kinematics(robot):
    """MuJoCo's URDF importer is an independent reader of the file (fixed joints kept as bodies;
    the massless links of D'Kitty's root chain get a token mass, which only the importer needs)."""
    text = urdf.robot_urdf(robot)
    ext = '<mujoco><compiler fusestatic="false" discardvisual="false" boundmass="1e-6" boundinertia="1e-9"/></mujoco>'
    loaded = mujoco.MjModel.from_xml_string(text.replace("</robot>", ext + "</robot>"))
    model = load_model(urdf.URDF_SCENES[robot])
    names = urdf.movable_joints(robot)
    assert [loaded.joint(j).name for j in range(loaded.njnt)] == names
    rng = np.random.default_rng(1)
    data = mujoco.MjData(loaded)
    for _ in range(20):
        qpos = _random_qpos(model, rng)
        for n in names:
            data.qpos[loaded.joint(n).qposadr[0]] = qpos[model.joint(n).qposadr[0]]
        mujoco.mj_kinematics(loaded, data)
        for link, (pos, _rot) in _scene_poses(model, qpos).items():
            b = mujoco.mj_name2id(loaded, mujoco.mjtObj.mjOBJ_BODY, link)
            assert b >= 0, link
            assert np.linalg.norm(data.xpos[b] - pos) < TOL_M, link


def test_joint_names_are_the_scene_and_joint_state_names():
    assert urdf.movable_joints("dclaw") == CLAW_JOINTS + ["valve_OBJRx"]
    kitty = urdf.movable_joints("dkitty")
    assert kitty[:6] == ["Tx", "Ty", "Tz", "Rx", "Ry", "Rz"]
    assert kitty[6:] == [f"A:{leg}J{i}{k}" for leg, i in (("FR", 1), ("FL", 2), ("BL", 3), ("BR", 4)) for k in range(3)]
    # the names the collectors put in sensor_msgs/JointState: the scene's actuated joints
    from mbrl_ros.nodes.collector import _joint_names  # noqa: PLC0415 (only the helper, no node)
    from mbrl_ros.tasks import make_env

    for task_id, robot in (("dclaw-turn-fixed", "dclaw"), ("dkitty-orient-random", "dkitty")):
        env = make_env(task_id)
        try:
            assert set(_joint_names(env)) <= set(urdf.movable_joints(robot))
        finally:
            env.close()


def test_urdf_is_well_formed_without_ghosts_or_markers():
    for robot in ROBOTS:
        root = ET.fromstring(urdf.robot_urdf(robot))
        links = [el.get("name") for el in root.findall("link")]
        assert len(links) == len(set(links))
        assert not any(n.startswith("_") or n in ("target", "markers") for n in links)
        # a tree: every link but the root is the child of exactly one joint
        children = [j.find("child").get("link") for j in root.findall("joint")]
        assert sorted(children) == sorted(set(links) - {"world"})
        for j in root.findall("joint"):
            if j.get("type") == "revolute":
                lim = j.find("limit")
                assert float(lim.get("lower")) < float(lim.get("upper"))
        assert root.findall(".//visual/geometry")  # something to look at
    claw = ET.fromstring(urdf.robot_urdf("dclaw"))
    assert {"valve", "valve_base", "FFL12", "THL32"} <= {el.get("name") for el in claw.findall("link")}
    assert claw.find("joint[@name='valve_OBJRx']").get("type") == "continuous"
    with pytest.raises(ValueError, match="unknown robot"):
        urdf.robot_urdf("dhand")


def test_cli_writes_the_urdf(tmp_path):
    out = tmp_path / "dclaw.urdf"
    r = subprocess.run([sys.executable, "-m", "mbrl_ros.cli", "urdf", "--robot", "dclaw", "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == urdf.robot_urdf("dclaw")
    r = subprocess.run([sys.executable, "-m", "mbrl_ros.cli", "urdf", "--robot", "dkitty"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == urdf.robot_urdf("dkitty")
    r = subprocess.run([sys.executable, "-m", "mbrl_ros.cli", "urdf", "--robot", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2


# -- the viewers' files: launch/view_dclaw.launch.py, config/view_dclaw.rviz, config/foxglove_mbrl.json --
ROOT = Path(__file__).resolve().parent.parent


def _fake_launch(monkeypatch, values: dict[str, str], installed: set[str]) -> list:
    """Stand-ins for launch / launch_ros / ament_index that record the actions the file builds."""
    built: list = []

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs
            built.append(self)

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, _context):
            return values.get(self.name, defaults[self.name])

    class PackageNotFoundError(Exception):
        pass

    def share(name):
        if name not in installed:
            raise PackageNotFoundError(name)
        return f"/opt/ros/share/{name}"

    mods = {name: types.ModuleType(name) for name in (
        "launch", "launch.actions", "launch.substitutions", "launch_ros", "launch_ros.actions",
        "ament_index_python", "ament_index_python.packages")}
    mods["launch"].LaunchDescription = lambda actions: list(actions)
    for n in ("DeclareLaunchArgument", "OpaqueFunction", "LogInfo"):
        setattr(mods["launch.actions"], n, type(n, (Action,), {}))
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = type("Node", (Action,), {})
    mods["ament_index_python.packages"].get_package_share_directory = share
    mods["ament_index_python.packages"].PackageNotFoundError = PackageNotFoundError
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("view_dclaw_launch", ROOT / "launch" / "view_dclaw.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defaults = {k: v[0] for k, v in module.ARGUMENTS.items()}
    ld = module.generate_launch_description()
    for action in ld:
        if type(action).__name__ == "OpaqueFunction":
            action.kwargs["function"](None)
    return built


def test_view_launch_file_imports_without_ros_and_builds_rsp_and_rviz(monkeypatch):
    # importing needs neither launch nor robot_state_publisher (none of them is installed here)
    spec = importlib.util.spec_from_file_location("view_dclaw_plain", ROOT / "launch" / "view_dclaw.launch.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))

    built = _fake_launch(monkeypatch, {"robot_id": "sim3"}, {"robot_state_publisher", "rviz2"})
    nodes = {a.kwargs["package"]: a.kwargs for a in built if type(a).__name__ == "Node"}
    rsp = nodes["robot_state_publisher"]
    assert rsp["parameters"] == [{"robot_description": urdf.robot_urdf("dclaw")}]
    assert rsp["remappings"] == [("joint_states", "/mbrl/sim3/urdf_joint_states")]
    config = nodes["rviz2"]["arguments"][1]
    assert config.endswith("view_sim3.rviz") and "/mbrl/sim3/markers" in Path(config).read_text()
    built = _fake_launch(monkeypatch, {}, {"robot_state_publisher", "rviz2"})
    config = [a.kwargs for a in built if type(a).__name__ == "Node" and a.kwargs["package"] == "rviz2"][0]["arguments"][1]
    assert Path(config) == ROOT / "config" / "view_dclaw.rviz"

    # neither installed: reported, nothing started
    built = _fake_launch(monkeypatch, {}, set())
    assert not [a for a in built if type(a).__name__ == "Node"]
    assert len([a for a in built if type(a).__name__ == "LogInfo"]) == 2


def test_rviz_config_and_foxglove_layout_name_the_published_topics():
    import yaml

    from mbrl_ros.nodes import METRICS_PREFIX
    from mbrl_ros.nodes.visualization import ROBOT_DESCRIPTION, markers_topic, urdf_joint_states_topic

    rviz = yaml.safe_load((ROOT / "config" / "view_dclaw.rviz").read_text())
    vm = rviz["Visualization Manager"]
    assert vm["Global Options"]["Fixed Frame"] == "world"
    displays = {d["Class"]: d for d in vm["Displays"]}
    model = displays["rviz_default_plugins/RobotModel"]
    assert model["Description Topic"]["Value"] == ROBOT_DESCRIPTION
    assert model["Description Topic"]["Durability Policy"] == "Transient Local"
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == markers_topic("sim0")

    layout = json.loads((ROOT / "config" / "foxglove_mbrl.json").read_text())
    panels = layout["configById"]

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])

    assert sorted(leaves(layout["layout"])) == sorted(panels)
    three_d = panels["3D!robot"]
    robot = three_d["layers"]["robot"]
    assert (robot["layerId"], robot["sourceType"], robot["topic"]) == ("foxglove.Urdf", "topic", ROBOT_DESCRIPTION)
    # the URDF layer places the links from the joint states itself: no /tf needed (tf2_msgs is not on PyPI)
    assert robot["controlMode"] == "jointStates" and robot["jointStatesTopic"] == urdf_joint_states_topic("sim0")
    assert markers_topic("sim0") in three_d["topics"] and three_d["followTf"] == "world"
    plotted = {p["value"] for k, v in panels.items() if k.startswith("Plot!") for p in v["paths"]}
    assert plotted == {f"{METRICS_PREFIX}{m}.data" for m in ("eval_success", "episode_success", "eval_return",
                                                             "episode_return")}
    # these metrics are the coordinator's: published and written to the MCAP record
    coordinator = (ROOT / "mbrl_ros" / "nodes" / "game_coordinator.py").read_text()
    for m in ("eval_success", "episode_success", "eval_return", "episode_return"):
        assert f'metrics.publish("{m}"' in coordinator
    assert any(k.startswith("DiagnosticSummary!") and v["topicToRender"] == "/diagnostics" for k, v in panels.items())


def test_render_shows_the_urdf_and_the_markers(tmp_path):
    """``mbrl-ros urdf --render``: MuJoCo's URDF importer reads the file, the robot is drawn in a
    simulated state, and the valve (blue) and target arrows are in the picture."""
    from mbrl_ros.commands.render import osmesa_available

    if not osmesa_available():
        pytest.skip("offscreen rendering needs OSMesa (Debian libosmesa6)")
    out = tmp_path / "view.png"
    r = subprocess.run([sys.executable, "-m", "mbrl_ros.cli", "urdf", "--robot", "dclaw", "--render", str(out),
                        "--width", "240", "--height", "180", "--seed", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # --render alone writes no URDF to stdout
    import imageio.v2 as imageio

    img = imageio.imread(out).astype(int)
    assert img.shape == (180, 240, 3)
    blue = (img[..., 2] > 150) & (img[..., 0] < 100)  # the valve arrow (0.15, 0.45, 0.95)
    assert blue.sum() > 5, "the valve marker is not in the picture"
