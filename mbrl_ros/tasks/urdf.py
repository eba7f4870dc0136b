"""URDF of the D'Claw (with its valve) and the D'Kitty, generated from ROBEL's MuJoCo scenes.

RViz, Foxglove and ``robot_state_publisher`` read URDF, not MJCF. Rather than keeping a
hand-written copy that drifts from the scene the tasks run on, the URDF is derived from the
compiled ``MjModel`` each time it is needed (``mbrl-ros urdf``, the collectors'
``/robot_description``); nothing generated is committed.

What is kept from the scene:

- one link per MuJoCo body of the robot (and of the valve), named after the body (``:`` in
  D'Kitty's ``A:...`` names becomes ``_``: link names are TF frame ids); bodies of the ghost
  overlay (``_FF10`` ...) and empty marker bodies (``target``, ``markers``) are left out;
- one URDF joint per MuJoCo joint, with the scene's joint name (``FFJ10`` ... ``THJ32``,
  ``valve_OBJRx``; ``A:FRJ10`` ... ``A:BRJ42``; D'Kitty's torso ``Tx Ty Tz Rx Ry Rz``), so the
  ``sensor_msgs/JointState`` the collectors publish drives it as is. A body with several joints
  (D'Kitty's torso) becomes a chain of massless links, one joint each, in MuJoCo's order:
  MuJoCo applies a body's joints one after the other in the body's frame, as the chain does;
- collision geometry as URDF primitives: boxes, spheres and cylinders as they are, a capsule as
  a cylinder and two spheres (URDF has no capsule), a mesh as its bounding box; colours from the
  geom or its material; masses and inertias from the compiled model.

The kinematics are exact (positions and orientations copied from the compiled model);
``test/test_urdf.py`` checks every link against MuJoCo's body positions within 1 mm over random
joint configurations. No ROS import: the nodes and the CLI use this module.
"""

from __future__ import annotations

import functools
import math
from typing import Optional
from xml.sax.saxutils import quoteattr

import mujoco
import numpy as np

from mbrl_ros.tasks.scenes import load_model

# Robot -> the scene its URDF is made from (D'Claw: the valve scene; D'Kitty: orient, whose
# robot is the same as stand's; the orient scene's marker bodies are dropped).
URDF_SCENES: dict[str, str] = {"dclaw": "dclaw-valve3", "dkitty": "dkitty-orient"}

# Nominal joint limits written on movable joints (URDF requires them; viewers ignore them).
# XH430-W350 at 12 V: 4.1 N·m stall torque, 46 rev/min no-load speed (4.8 rad/s).
_EFFORT_NM = 4.1
_VELOCITY_RAD_S = 4.8
# Below this mass a body has no inertial element (the world, MuJoCo's massless frames).
_MIN_MASS = 1e-9


def link_name(body_name: str) -> str:
    """The URDF link (and TF frame) name of a MuJoCo body: ``A:FR10`` -> ``A_FR10``."""
    return body_name.replace(":", "_")


def _fmt(values) -> str:
    # 12 significant digits: far below the test's 1 mm, and stable text for equal models.
    return " ".join(f"{float(v) + 0.0:.12g}" for v in np.atleast_1d(values))  # + 0.0: no "-0"


def _quat_to_rpy(quat: np.ndarray) -> np.ndarray:
    """URDF's fixed-axis roll, pitch, yaw (R = Rz(yaw) Ry(pitch) Rx(roll)) of a MuJoCo quaternion."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q)
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, q)
    r = m.reshape(3, 3)
    pitch = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    if abs(r[2, 0]) < 1.0 - 1e-12:
        roll = math.atan2(r[2, 1], r[2, 2])
        yaw = math.atan2(r[1, 0], r[0, 0])
    else:  # gimbal lock: yaw and roll share one degree of freedom; put it all in yaw
        roll = 0.0
        yaw = math.atan2(-r[0, 1], r[1, 1])
    return np.array([roll, pitch, yaw])


def _origin(pos, quat) -> str:
    return f'<origin xyz="{_fmt(pos)}" rpy="{_fmt(_quat_to_rpy(quat))}"/>'


def _body_name(model: mujoco.MjModel, b: int) -> str:
    return mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, b) or f"body{b}"


def _joint_name(model: mujoco.MjModel, j: int) -> str:
    return mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j) or f"joint{j}"


def robot_bodies(model: mujoco.MjModel) -> list[int]:
    """Bodies that become links, parents before children: the world and every body under it,
    except ghost-overlay subtrees (names starting with ``_``) and bodies with neither geoms, joints
    nor kept children (marker frames the environments move by hand)."""
    children: dict[int, list[int]] = {}
    for b in range(1, model.nbody):
        children.setdefault(int(model.body_parentid[b]), []).append(b)

    def keep(b: int) -> bool:
        if _body_name(model, b).startswith("_"):
            return False
        kept_children = [c for c in children.get(b, []) if keep(c)]
        return bool(model.body_geomnum[b] or model.body_jntnum[b] or kept_children)

    order: list[int] = []

    def visit(b: int) -> None:
        order.append(b)
        for c in children.get(b, []):
            if keep(c):
                visit(c)

    visit(0)
    return order


def _rgba(model: mujoco.MjModel, g: int) -> np.ndarray:
    mat = int(model.geom_matid[g])
    rgba = model.mat_rgba[mat] if mat >= 0 else model.geom_rgba[g]
    return np.clip(np.asarray(rgba, dtype=np.float64), 0.0, 1.0)


def _geom_shapes(model: mujoco.MjModel, g: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``(pos, quat, <geometry> element)`` in the body frame for one MuJoCo geom (may be several:
    a capsule is a cylinder and two spheres); [] for geoms a URDF cannot or need not show."""
    t = int(model.geom_type[g])
    size = model.geom_size[g]
    pos, quat = model.geom_pos[g].copy(), model.geom_quat[g].copy()
    T = mujoco.mjtGeom
    if t == T.mjGEOM_BOX:
        return [(pos, quat, f'<box size="{_fmt(2 * size)}"/>')]
    if t == T.mjGEOM_SPHERE:
        return [(pos, quat, f'<sphere radius="{_fmt(size[0])}"/>')]
    if t == T.mjGEOM_ELLIPSOID:
        return [(pos, quat, f'<box size="{_fmt(2 * size)}"/>')]
    if t == T.mjGEOM_CYLINDER:
        return [(pos, quat, f'<cylinder radius="{_fmt(size[0])}" length="{_fmt(2 * size[1])}"/>')]
    if t == T.mjGEOM_CAPSULE:
        r, half = float(size[0]), float(size[1])
        axis = np.zeros(3)
        mujoco.mju_rotVecQuat(axis, np.array([0.0, 0.0, half]), quat)
        return [
            (pos, quat, f'<cylinder radius="{_fmt(r)}" length="{_fmt(2 * half)}"/>'),
            (pos + axis, quat, f'<sphere radius="{_fmt(r)}"/>'),
            (pos - axis, quat, f'<sphere radius="{_fmt(r)}"/>'),
        ]
    if t == T.mjGEOM_MESH:
        # Collision meshes only (the visual meshes duplicate them): their bounding box in the
        # geom frame (MuJoCo's geom_aabb: centre, half sizes).
        if not (model.geom_contype[g] or model.geom_conaffinity[g]):
            return []
        centre, half = model.geom_aabb[g][:3], model.geom_aabb[g][3:]
        offset = np.zeros(3)
        mujoco.mju_rotVecQuat(offset, centre, quat)
        return [(pos + offset, quat, f'<box size="{_fmt(2 * half)}"/>')]
    return []  # planes and height fields are the floor, not the robot


def _link_xml(model: mujoco.MjModel, b: int, name: str) -> list[str]:
    lines = [f"  <link name={quoteattr(name)}>"]
    mass = float(model.body_mass[b])
    if mass > _MIN_MASS:
        ixx, iyy, izz = (float(x) for x in model.body_inertia[b])
        lines += [
            "    <inertial>",
            f"      {_origin(model.body_ipos[b], model.body_iquat[b])}",
            f'      <mass value="{_fmt(mass)}"/>',
            f'      <inertia ixx="{ixx:.12g}" ixy="0" ixz="0" iyy="{iyy:.12g}" iyz="0" izz="{izz:.12g}"/>',
            "    </inertial>",
        ]
    geoms = range(model.body_geomadr[b], model.body_geomadr[b] + model.body_geomnum[b])
    # ROBEL paints collision geoms in a translucent debug blue (D'Kitty); a URDF shows them as the
    # robot, so they take the colour of the body's opaque visual mesh instead
    painted = [
        _rgba(model, g)
        for g in geoms
        if model.geom_type[g] == mujoco.mjtGeom.mjGEOM_MESH
        and not (model.geom_contype[g] or model.geom_conaffinity[g])
        and _rgba(model, g)[3] >= 1.0
    ]
    for g in geoms:
        rgba = _rgba(model, g)
        if rgba[3] < 1.0 and (model.geom_contype[g] or model.geom_conaffinity[g]) and painted:
            rgba = painted[0]
        for pos, quat, geometry in _geom_shapes(model, g):
            color = "rgba_" + "".join(f"{int(round(255 * c)):02x}" for c in rgba)
            rgba_text = " ".join(f"{c:.4g}" for c in rgba)
            for kind in ("visual", "collision"):
                lines.append(f"    <{kind}>")
                lines.append(f"      {_origin(pos, quat)}")
                lines.append(f"      <geometry>{geometry}</geometry>")
                if kind == "visual":
                    lines.append(f'      <material name="{color}"><color rgba="{rgba_text}"/></material>')
                lines.append(f"    </{kind}>")
    lines.append("  </link>")
    return lines


def _joint_xml(model: mujoco.MjModel, j: Optional[int], name: str, parent: str, child: str, pos, quat) -> list[str]:
    """A URDF joint: MuJoCo joint ``j`` (``None``: fixed) from ``parent`` to ``child`` at (pos, quat)."""
    if j is None:
        kind = "fixed"
    else:
        t = int(model.jnt_type[j])
        if t not in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE):
            raise ValueError(f"joint {name!r}: only hinge and slide joints have a URDF equivalent")
        # URDF puts the joint at the child frame's origin and measures q from the zero pose;
        # MuJoCo measures from qpos0 about an anchor that may be off the body origin. ROBEL's
        # scenes have neither; refuse a scene that has, instead of writing wrong kinematics.
        if np.any(model.jnt_pos[j] != 0.0) or model.qpos0[model.jnt_qposadr[j]] != 0.0:
            raise ValueError(f"joint {name!r}: an anchor off the body origin or a nonzero ref is not supported")
        if t == mujoco.mjtJoint.mjJNT_SLIDE:
            kind = "prismatic"
        elif name.startswith("valve"):
            kind = "continuous"  # the valve turns freely (the sim reads it unwrapped, the sensor wraps)
        else:
            kind = "revolute"
    lines = [
        f'  <joint name={quoteattr(name)} type="{kind}">',
        f"    <parent link={quoteattr(parent)}/>",
        f"    <child link={quoteattr(child)}/>",
        f"    {_origin(pos, quat)}",
    ]
    if j is not None:
        lines.append(f'    <axis xyz="{_fmt(model.jnt_axis[j])}"/>')
        if kind in ("revolute", "prismatic"):
            lo, hi = model.jnt_range[j] if model.jnt_limited[j] else (-math.pi, math.pi)
            lines.append(
                f'    <limit lower="{_fmt(lo)}" upper="{_fmt(hi)}" effort="{_EFFORT_NM}" velocity="{_VELOCITY_RAD_S}"/>'
            )
        damping = float(model.dof_damping[model.jnt_dofadr[j]])
        friction = float(model.dof_frictionloss[model.jnt_dofadr[j]])
        lines.append(f'    <dynamics damping="{damping:.6g}" friction="{friction:.6g}"/>')
    lines.append("  </joint>")
    return lines


def model_to_urdf(model: mujoco.MjModel, robot_name: str) -> str:
    """The URDF text of every kept body of ``model`` (see the module doc), rooted at ``world``."""
    identity = np.array([1.0, 0.0, 0.0, 0.0])
    out = [
        '<?xml version="1.0"?>',
        "<!-- generated by mbrl_ros.tasks.urdf from the MuJoCo scene; do not edit -->",
        f"<robot name={quoteattr(robot_name)}>",
    ]
    for b in robot_bodies(model):
        name = "world" if b == 0 else link_name(_body_name(model, b))
        if b == 0:
            out.append('  <link name="world"/>')
            continue
        parent_body = int(model.body_parentid[b])
        parent = "world" if parent_body == 0 else link_name(_body_name(model, parent_body))
        joints = list(range(model.body_jntadr[b], model.body_jntadr[b] + model.body_jntnum[b]))
        if not joints:
            out += _joint_xml(model, None, f"{name}_fixed", parent, name, model.body_pos[b], model.body_quat[b])
        else:
            # One link per joint: the first joint carries the body's offset, the rest none.
            for k, j in enumerate(joints):
                jname = _joint_name(model, j)
                child = name if k == len(joints) - 1 else f"{name}__{jname}"
                pos, quat = (model.body_pos[b], model.body_quat[b]) if k == 0 else (np.zeros(3), identity)
                if child != name:
                    out.append(f"  <link name={quoteattr(child)}/>")
                out += _joint_xml(model, j, jname, parent, child, pos, quat)
                parent = child
        out += _link_xml(model, b, name)
    out.append("</robot>")
    return "\n".join(out) + "\n"


@functools.lru_cache(maxsize=None)
def robot_urdf(robot: str) -> str:
    """URDF text of ``robot`` (``dclaw``: claw and valve; ``dkitty``: torso on its 6 root joints
    and the legs), generated from its ROBEL scene (cached per process)."""
    if robot not in URDF_SCENES:
        raise ValueError(f"unknown robot {robot!r}; valid robots: {', '.join(URDF_SCENES)}")
    return model_to_urdf(load_model(URDF_SCENES[robot]), robot)


def movable_joints(robot: str) -> list[str]:
    """Names of the URDF's movable joints, in the scene's qpos order (the MuJoCo joint names)."""
    return list(_movable_joints(robot))


@functools.lru_cache(maxsize=None)
def _movable_joints(robot: str) -> tuple[str, ...]:
    if robot not in URDF_SCENES:
        raise ValueError(f"unknown robot {robot!r}; valid robots: {', '.join(URDF_SCENES)}")
    model = load_model(URDF_SCENES[robot])
    keep = set(robot_bodies(model))
    return tuple(_joint_name(model, j) for j in range(model.njnt) if int(model.jnt_bodyid[j]) in keep)
