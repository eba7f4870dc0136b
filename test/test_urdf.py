"""The generated URDF matches the MuJoCo scene it was made from (no ROS needed).

Two independent checks of the kinematics: a small URDF forward kinematics written here from the
URDF spec (parses only the URDF text), and MuJoCo's own URDF importer. Both are compared with
MuJoCo's body poses in the original scene over random joint configurations, within 1 mm.
"""

from __future__ import annotations

import math
import subprocess
import sys
import xml.etree.ElementTree as ET

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
