"""The robot as RViz and Foxglove expect it: ``/robot_description``, markers, URDF joint states.

The collectors (sim and hardware, through :class:`~mbrl_ros.nodes.collector.CollectorBase`)
own one :class:`RobotVisualizer`. It publishes

=====================================  =============================  ======================================
topic                                  type                           QoS
=====================================  =============================  ======================================
``/robot_description``                 std_msgs/String (URDF)         RELIABLE, TRANSIENT_LOCAL, KEEP_LAST(1)
``/mbrl/<robot_id>/markers``           visualization_msgs/MarkerArray RELIABLE, TRANSIENT_LOCAL, KEEP_LAST(1)
``/mbrl/<robot_id>/urdf_joint_states`` sensor_msgs/JointState         sensor data (BEST_EFFORT)
=====================================  =============================  ======================================

- ``/robot_description``: the URDF generated from the robot's MuJoCo scene
  (:func:`mbrl_ros.tasks.urdf.robot_urdf`), once at start, latched, so RViz, Foxglove and
  ``robot_state_publisher`` get it whenever they join.
- markers, in the URDF's root frame ``world``: D'Claw: the valve's angle (namespace ``valve``) and
  its target (``target``: arrow, green once within the success radius, and the error as text);
  D'Kitty: the torso's heading (``heading``) and the target (``target``: direction and, in
  sim, the target's position). Updated with the joint states (at most ``joint_state_rate_hz``).
- URDF joint states: every movable joint of the URDF, including the ones the collectors'
  ``/mbrl/<robot_id>/joint_states`` do not carry (the valve of the sim D'Claw, D'Kitty's six torso
  joints), so that ``robot_state_publisher`` fed with this topic places every link
  (``launch/view_dclaw.launch.py``). They come from the task's observation, the same numbers
  the policy sees (D'Kitty on hardware: the tracker's torso pose).

``tf2_msgs`` is not on PyPI, so nothing here publishes ``/tf``: on a full ROS 2 install
``robot_state_publisher`` turns the URDF joint states into TF, and Foxglove's URDF layer reads
the URDF joint states directly. What is shown is computed without ROS (:func:`scene_view`,
:func:`marker_specs`; ``mbrl-ros urdf --render`` draws the same markers); :func:`make_markers`
only turns it into messages. The module imports no ROS package at import time.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

ROBOT_DESCRIPTION = "/robot_description"
FRAME = "world"  # the URDF's root link: RViz's and Foxglove's fixed / display frame

# Colours (r, g, b, a)
_BLUE = (0.15, 0.45, 0.95, 1.0)
_GREEN = (0.1, 0.8, 0.2, 1.0)
_ORANGE = (1.0, 0.55, 0.0, 1.0)
_WHITE = (1.0, 1.0, 1.0, 1.0)


def markers_topic(robot_id: str) -> str:
    return f"/mbrl/{robot_id}/markers"


def urdf_joint_states_topic(robot_id: str) -> str:
    return f"/mbrl/{robot_id}/urdf_joint_states"


@dataclass
class SceneView:
    """What the markers and the URDF joint states show, in the ``world`` frame (rad, m)."""

    robot: str
    joints: dict[str, float] = field(default_factory=dict)  # URDF joint name -> position
    valve: Optional[float] = None  # D'Claw: valve angle (the direction its first spoke points)
    target: Optional[float] = None  # D'Claw: target valve angle; D'Kitty orient: direction to the target
    error: Optional[float] = None  # D'Claw: wrapped target - valve
    success: Optional[bool] = None
    torso: Optional[np.ndarray] = None  # D'Kitty: torso position
    heading: Optional[float] = None  # D'Kitty: yaw of the direction the head faces
    target_xy: Optional[np.ndarray] = None  # D'Kitty orient: target position on the floor


@functools.lru_cache(maxsize=None)
def _scene_points(robot: str) -> dict[str, np.ndarray]:
    """Fixed points of the scene the markers hang on (from the compiled model at the zero pose)."""
    import mujoco

    from mbrl_ros.tasks.scenes import load_model
    from mbrl_ros.tasks.urdf import URDF_SCENES

    model = load_model(URDF_SCENES[robot])
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    if robot == "dclaw":
        return {"valve": data.xpos[model.body("valve").id].copy()}
    # D'Kitty's root joints move the torso from its body's place in the scene
    return {"torso0": model.body("kitty_frame").pos.copy()}


def scene_view(
    task: Any,
    obs: np.ndarray,
    joint_names: Sequence[str] = (),
    joint_positions: Sequence[float] = (),
    target: Optional[float] = None,
) -> SceneView:
    """The view of one observation of ``task`` (a :class:`~mbrl_ros.tasks.base.TaskSpec`).

    ``joint_names``/``joint_positions``: the collector's joint reading (names as in the URDF; names the
    URDF does not have, e.g. the hardware's ``valve``, are ignored). ``target``: D'Kitty orient's
    target yaw when the world knows it (places the target marker)."""
    from mbrl_ros.tasks.urdf import movable_joints

    robot = task.info.robot
    obs = np.asarray(obs, dtype=np.float64)
    urdf_joints = movable_joints(robot)
    view = SceneView(robot=robot)
    view.joints = {n: float(p) for n, p in zip(joint_names, joint_positions) if n in urdf_joints}
    if robot == "dclaw":
        from mbrl_ros.tasks import dclaw_turn as d

        view.valve = math.atan2(obs[d.OBS_OBJECT_Y], obs[d.OBS_OBJECT_X])
        view.error = float(obs[d.OBS_TARGET_ERROR])
        view.target = view.valve + view.error
        view.joints.setdefault("valve_OBJRx", view.valve)
        for name, q in zip(urdf_joints[:9], obs[d.OBS_CLAW_QPOS]):
            view.joints.setdefault(name, float(q))
    else:
        from mbrl_ros.tasks import dkitty as k

        root = obs[0:6]
        view.torso = _scene_points("dkitty")["torso0"] + root[:3]
        rot = k.euler_rxyz_to_mat(float(root[3]), float(root[4]), float(root[5]))
        head = rot @ np.array([0.0, 1.0, 0.0])  # the head faces the torso's +y
        view.heading = math.atan2(head[1], head[0])
        if task.info.obs_dim >= k.OBS_DESIRED_FACING.stop and task.scene == "dkitty-orient":
            desired = obs[k.OBS_DESIRED_FACING]
            view.target = math.atan2(desired[1], desired[0])
            if target is not None:
                view.target_xy = np.asarray(task.target_position(float(target)), dtype=np.float64)[:2]
        for name, q in zip(urdf_joints, list(root) + list(obs[k.OBS_KITTY_QPOS])):
            view.joints.setdefault(name, float(q))
    view.joints = {n: view.joints[n] for n in urdf_joints if n in view.joints}  # the URDF's order
    try:
        view.success = bool(np.asarray(task.success(obs[None]))[0])
    except Exception:  # noqa: BLE001 - a colour only
        view.success = None
    return view


def _quat_yaw(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation by ``yaw`` about world z (an ARROW marker points along its x)."""
    return (0.0, 0.0, math.sin(0.5 * yaw), math.cos(0.5 * yaw))


@dataclass(frozen=True)
class MarkerSpec:
    """One marker, without ROS types (the renderer of ``mbrl-ros urdf --render`` draws these too)."""

    ns: str
    id: int
    kind: str  # "arrow" (along its x axis, length scale[0]), "cylinder" or "text"
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float]  # x, y, z, w
    scale: tuple[float, float, float]
    rgba: tuple[float, float, float, float]
    text: str = ""


def marker_specs(view: SceneView) -> list[MarkerSpec]:
    """The markers of a :class:`SceneView` in frame ``world``; namespaces and ids are fixed per
    robot, so every update replaces the previous markers."""

    def spec(ns, mid, kind, pos, quat, scale, rgba, text=""):
        return MarkerSpec(
            ns,
            mid,
            kind,
            tuple(float(v) for v in pos),
            tuple(float(v) for v in quat),
            tuple(float(v) for v in scale),
            tuple(float(v) for v in rgba),
            text,
        )

    out: list[MarkerSpec] = []
    ok = _GREEN if view.success else _ORANGE
    upright = (0.0, 0.0, 0.0, 1.0)
    if view.robot == "dclaw":
        centre = _scene_points("dclaw")["valve"]
        z = float(centre[2]) + 0.085  # just above the valve's spokes (their top is 0.075 above the valve body)
        if view.valve is not None:
            out.append(
                spec("valve", 0, "arrow", (centre[0], centre[1], z), _quat_yaw(view.valve), (0.11, 0.01, 0.01), _BLUE)
            )
        if view.target is not None:
            out.append(
                spec(
                    "target",
                    0,
                    "arrow",
                    (centre[0], centre[1], z + 0.01),
                    _quat_yaw(view.target),
                    (0.13, 0.014, 0.014),
                    ok,
                )
            )
            label = f"target error {view.error:+.2f} rad" if view.error is not None else "target"
            out.append(
                spec("target", 1, "text", (centre[0], centre[1], z + 0.06), upright, (0.0, 0.0, 0.02), _WHITE, label)
            )
    else:
        if view.torso is not None and view.heading is not None:
            p = view.torso + np.array([0.0, 0.0, 0.12])
            out.append(spec("heading", 0, "arrow", p, _quat_yaw(view.heading), (0.3, 0.02, 0.02), _BLUE))
            if view.target is not None:
                out.append(
                    spec(
                        "target",
                        0,
                        "arrow",
                        p + np.array([0.0, 0.0, 0.03]),
                        _quat_yaw(view.target),
                        (0.3, 0.02, 0.02),
                        ok,
                    )
                )
        if view.target_xy is not None:
            out.append(
                spec(
                    "target", 1, "cylinder", (view.target_xy[0], view.target_xy[1], 0.01), upright, (0.1, 0.1, 0.02), ok
                )
            )
    return out


def make_markers(view: SceneView, stamp: Any = None) -> Any:
    """The ``visualization_msgs/MarkerArray`` of a :class:`SceneView` (frame ``world``, ADD)."""
    from visualization_msgs.msg import Marker, MarkerArray

    types = {"arrow": Marker.ARROW, "cylinder": Marker.CYLINDER, "text": Marker.TEXT_VIEW_FACING}
    out = MarkerArray()
    for sp in marker_specs(view):
        m = Marker()
        m.header.frame_id = FRAME
        if stamp is not None:
            m.header.stamp = stamp
        m.ns, m.id, m.type, m.action = sp.ns, sp.id, types[sp.kind], Marker.ADD
        m.pose.position.x, m.pose.position.y, m.pose.position.z = sp.position
        m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z, m.pose.orientation.w = sp.orientation
        m.scale.x, m.scale.y, m.scale.z = sp.scale
        m.color.r, m.color.g, m.color.b, m.color.a = sp.rgba
        m.text = sp.text
        m.frame_locked = False
        out.markers.append(m)
    return out


def _last_observation(env: Any) -> Optional[np.ndarray]:
    """The world's latest observation: ``RobelEnv`` and ``HardwareEnv`` both keep it as ``_obs``
    (read without a lock: the control loop replaces the array, it never writes into it)."""
    obs = getattr(getattr(env, "unwrapped", env), "_obs", None)
    return None if obs is None else np.asarray(obs)


def _world_target(env: Any) -> Optional[float]:
    """The world's target (D'Kitty orient: target yaw), where the world tells it."""
    unwrapped = getattr(env, "unwrapped", env)
    get_state = getattr(unwrapped, "get_state", None)
    try:
        if callable(get_state):
            return float(get_state()["target"])
        t = getattr(unwrapped, "_target", None)
        return None if t is None else float(t)
    except Exception:  # noqa: BLE001 - the marker is optional
        return None


class RobotVisualizer:
    """Publishes ``/robot_description`` (now, latched), then markers and URDF joint states on
    :meth:`update` (see the module doc). Never raises into the collector: a failure is logged once."""

    def __init__(self, node: Any, task_id: str, robot_id: str) -> None:
        from sensor_msgs.msg import JointState
        from std_msgs.msg import String

        from mbrl_ros.nodes import latched_qos, sensor_qos
        from mbrl_ros.tasks import get_task

        self.node = node
        self.task = get_task(task_id)
        self.robot = self.task.info.robot
        self._js_type = JointState
        self._pub_desc = node.create_publisher(String, ROBOT_DESCRIPTION, latched_qos())
        try:
            from visualization_msgs.msg import MarkerArray

            self._pub_markers = node.create_publisher(MarkerArray, markers_topic(robot_id), latched_qos())
        except ImportError:  # an install without ros-visualization-msgs: the rest still works
            node.get_logger().warning(
                "no markers: visualization_msgs is not installed (pip install ros-visualization-msgs)"
            )
            self._pub_markers = None
        self._pub_js = node.create_publisher(JointState, urdf_joint_states_topic(robot_id), sensor_qos())
        self._failed = False
        self.description: Optional[str] = None
        t0 = time.perf_counter()
        try:
            from mbrl_ros.tasks.urdf import robot_urdf

            self.description = robot_urdf(self.robot)
        except Exception as exc:  # noqa: BLE001 - e.g. a robot computer without the ROBEL scene assets
            node.get_logger().warning(f"no /robot_description: the URDF could not be generated ({exc})")
            return
        self._pub_desc.publish(String(data=self.description))
        node.get_logger().info(
            f"/robot_description: {self.robot} URDF ({len(self.description)} characters, "
            f"{1000 * (time.perf_counter() - t0):.0f} ms)"
        )

    def update(self, env: Any, reading: Optional[dict] = None) -> None:
        """Markers and URDF joint states of the world's current state (``reading``: the collector's
        joint reading ``{name, position, ...}``)."""
        if env is None:
            return
        try:
            obs = _last_observation(env)
            if obs is None:
                return
            names = list(reading["name"]) if reading else []
            positions = list(reading["position"]) if reading else []
            target = _world_target(env) if self.robot == "dkitty" else None
            view = scene_view(self.task, obs, names, positions, target)
            stamp = self.node.get_clock().now().to_msg()
            if self._pub_markers is not None:
                self._pub_markers.publish(make_markers(view, stamp))
            js = self._js_type()
            js.header.stamp = stamp
            js.name = list(view.joints)
            js.position = [float(v) for v in view.joints.values()]
            self._pub_js.publish(js)
        except Exception as exc:  # noqa: BLE001 - a viewer aid must never stop the control loop
            if not self._failed:
                self._failed = True
                self.node.get_logger().warning(f"markers not published: {type(exc).__name__}: {exc}")
