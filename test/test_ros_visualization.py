"""The robot for RViz and Foxglove: marker messages, ``/robot_description`` latched for a late
subscriber, markers and URDF joint states from a collector running an episode (real DDS)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("visualization_msgs", reason="ros-visualization-msgs is not installed")

from ros_harness import Graph, Probe  # noqa: E402

from mbrl_ros import wire  # noqa: E402
from mbrl_ros.nodes import visualization as viz  # noqa: E402
from mbrl_ros.tasks import make_env  # noqa: E402
from mbrl_ros.tasks import urdf  # noqa: E402

TASKS = ("dclaw-turn-fixed", "dclaw-turn-random", "dkitty-orient-random", "dkitty-stand-random")
EXPECTED_NS = {  # namespace -> ids, per task
    "dclaw-turn-fixed": {("valve", 0), ("target", 0), ("target", 1)},
    "dclaw-turn-random": {("valve", 0), ("target", 0), ("target", 1)},
    "dkitty-orient-random": {("heading", 0), ("target", 0), ("target", 1)},
    "dkitty-stand-random": {("heading", 0)},
}


def _assert_valid(markers, task_id: str) -> None:
    from visualization_msgs.msg import Marker, MarkerArray

    assert isinstance(markers, MarkerArray)
    keys = [(m.ns, m.id) for m in markers.markers]
    assert len(keys) == len(set(keys)), "namespace/id pairs must be unique (an update replaces them)"
    assert set(keys) == EXPECTED_NS[task_id]
    for m in markers.markers:
        assert m.header.frame_id == "world" == viz.FRAME
        assert m.action == Marker.ADD
        assert m.type in (Marker.ARROW, Marker.CYLINDER, Marker.TEXT_VIEW_FACING)
        p, q = m.pose.position, m.pose.orientation
        values = [p.x, p.y, p.z, q.x, q.y, q.z, q.w, m.scale.x, m.scale.y, m.scale.z,
                  m.color.r, m.color.g, m.color.b, m.color.a]
        assert all(math.isfinite(v) for v in values), m
        assert abs(math.sqrt(q.x**2 + q.y**2 + q.z**2 + q.w**2) - 1.0) < 1e-6
        assert m.scale.z > 0 and 0.0 < m.color.a <= 1.0
        if m.type != Marker.TEXT_VIEW_FACING:
            assert m.scale.x > 0 and m.scale.y > 0
        else:
            assert m.text


@pytest.mark.parametrize("task_id", TASKS)
def test_markers_are_valid_and_show_the_world(task_id):
    env = make_env(task_id)
    try:
        obs, _ = env.reset(seed=3)
        for _ in range(3):
            obs, *_ = env.step(np.zeros(env.action_space.shape))
        task = env.unwrapped.task
        target = env.unwrapped.get_state()["target"]
        import mujoco

        # mj_step leaves xpos at the last substep's start: recompute the poses of the final state
        mujoco.mj_kinematics(env.unwrapped.sim.model, env.unwrapped.sim.data)
        view = viz.scene_view(task, obs, target=target)
        _assert_valid(viz.make_markers(view), task_id)
        # every movable URDF joint gets a position (what robot_state_publisher needs)
        assert list(view.joints) == urdf.movable_joints(task.info.robot)
        if task.info.robot == "dclaw":
            sim = env.unwrapped.sim
            assert math.isclose(math.remainder(view.valve - sim.object_qpos(), 2 * math.pi), 0.0, abs_tol=1e-5)
            assert math.isclose(math.remainder(view.target - target, 2 * math.pi), 0.0, abs_tol=1e-5)
            # the valve arrow points where the valve's first spoke is in the scene (within 0.01 rad:
            # the scene's valve quaternion (0.7074, 0, 0, -0.7068) is -90 deg to 4 digits only)
            data, model = sim.data, sim.model
            spoke = data.geom_xpos[model.body_geomadr[model.body("valve").id] + 1] - data.xpos[model.body("valve").id]
            assert math.isclose(math.remainder(math.atan2(spoke[1], spoke[0]) - view.valve, 2 * math.pi), 0.0,
                                abs_tol=1e-2)
        else:
            data, model = env.unwrapped.sim.data, env.unwrapped.sim.model
            assert np.allclose(view.torso, data.xpos[model.body("kitty_frame").id], atol=1e-6)
            head = data.xmat[model.body("kitty_frame").id].reshape(3, 3)[:, 1]
            assert math.isclose(math.remainder(math.atan2(head[1], head[0]) - view.heading, 2 * math.pi), 0.0,
                                abs_tol=1e-6)
            if task_id == "dkitty-orient-random":
                assert np.allclose(view.target_xy, task.target_position(target)[:2])
    finally:
        env.close()


def test_target_colour_follows_success():
    from mbrl_ros.tasks import get_task

    task = get_task("dclaw-turn-fixed")
    obs = np.zeros(task.info.obs_dim)
    obs[9] = 1.0  # valve at 0
    colours = {}
    for err in (0.05, 1.0):
        obs[20] = err
        m = {(x.ns, x.id): x for x in viz.make_markers(viz.scene_view(task, obs)).markers}
        colours[err] = (m[("target", 0)].color.g, m[("target", 0)].color.r)
        assert f"{err:+.2f}" in m[("target", 1)].text
    assert colours[0.05][0] > colours[0.05][1] and colours[1.0][1] > colours[1.0][0]  # green, then orange


def _onnx_policy(task_id: str) -> bytes:
    """A small random ONNX policy with the task's contract (version 0)."""
    import torch

    torch.set_num_threads(1)
    from mbrl_ros.core.networks import GaussianMLPPolicy
    from mbrl_ros.core.onnx_export import export_policy_onnx
    from mbrl_ros.tasks import get_task

    info = get_task(task_id).info
    return export_policy_onnx(GaussianMLPPolicy(info.obs_dim, info.act_dim, [16, 16]), info, 0, 0)


@pytest.mark.ros
def test_collector_latches_robot_description_and_publishes_markers(tmp_path: Path) -> None:
    """A subscriber that joins after the collector published ``/robot_description`` still gets it;
    during an episode the collector publishes markers and the URDF joint states (valve included)."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String, UInt8MultiArray
    from visualization_msgs.msg import MarkerArray

    from mbrl_ros.nodes import GAME_STATE, POLICY_DEPLOYED, latched_qos, sensor_qos

    task_id = "dclaw-turn-fixed"
    graph = Graph(tmp_path)
    probe = Probe(graph.domain_id)
    try:
        signer = graph.signer()  # this test plays the coordinator: the collector runs only what it signs
        graph.start("collector", "collector_viz", {"task": task_id, "robot_id": "viz0", "seed": 0,
                                                   "joint_state_rate_hz": 50.0})
        diags = probe.subscribe(DiagnosticArray, "/diagnostics", 50)
        probe.spin_until(lambda: any(st.name == "mbrl_ros/collector_viz" for _t, m in diags for st in m.status), 120,
                         "the collector's first diagnostics (it is up)")
        probe.spin_for(1.0)
        # the late subscriber
        descriptions = probe.subscribe(String, viz.ROBOT_DESCRIPTION, latched_qos())
        probe.spin_until(lambda: descriptions, 30, "/robot_description for a late subscriber")
        assert descriptions[-1][1].data == urdf.robot_urdf("dclaw")

        markers = probe.subscribe(MarkerArray, viz.markers_topic("viz0"), latched_qos())
        joints = probe.subscribe(JointState, viz.urdf_joint_states_topic("viz0"), sensor_qos())
        # a game that asks for data, and an approved policy: the collector runs episodes
        pub_s = probe.publisher(String, GAME_STATE, latched_qos())
        pub_p = probe.publisher(UInt8MultiArray, POLICY_DEPLOYED, latched_qos())
        pub_p.publish(wire.to_msg(signer.sign_record(wire.pack_policy(
            _onnx_policy(task_id), task_id=task_id, policy_version=0, model_version=0, iteration=0, approved=True,
            published_at=time.time()))))
        # built with the wire's own GameState type, so a change of the schema shows here at once
        state = wire.GameState(
            algo="pal", task_id=task_id, iteration=0, phase="collect", model_version=0, policy_version=0,
            deployed_policy_version=0, candidate_policy_version=None, data_policy_version=-1, samples=0,
            sample_budget=100000, round_samples=0, round_target=100000, round_random_samples=0,
            round_random_target=0, behavior="policy", collect=True, estop=False, done=False, request=None,
            eval_success=None, success_curve=(), wall_s=0.0)
        pub_s.publish(String(data=signer.sign_json(state.to_json(), "game_state")))
        probe.spin_until(lambda: markers and joints, 90, "markers and URDF joint states during an episode")
        _assert_valid(markers[-1][1], task_id)
        js = joints[-1][1]
        assert list(js.name) == urdf.movable_joints("dclaw")
        assert len(js.position) == len(js.name) and all(math.isfinite(v) for v in js.position)
    finally:
        probe.close()
        graph.close()


@pytest.mark.ros
@pytest.mark.parametrize("task_id", ["dclaw-turn-random", "dkitty-orient-random"])
def test_visualizer_publishes_latched_description_and_markers(task_id: str) -> None:
    """The visualizer alone on a node (no game): a subscriber that joins after everything was
    published still gets the URDF and the last markers (both latched); URDF joint states arrive
    while it updates, for every movable joint of the URDF."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import String
    from visualization_msgs.msg import MarkerArray

    from ros_harness import free_domain_id
    from mbrl_ros.nodes import latched_qos, sensor_qos
    from mbrl_ros.nodes.collector import _joint_names, _joint_readings

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=free_domain_id())
    env = make_env(task_id)
    try:
        pub_node = rclpy.create_node("viz_test_publisher", context=ctx)
        sub_node = rclpy.create_node("viz_test_late_subscriber", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(pub_node)
        executor.add_node(sub_node)
        visualizer = viz.RobotVisualizer(pub_node, task_id, "viz7")
        assert visualizer.description == urdf.robot_urdf(env.unwrapped.task.info.robot)
        visualizer.update(env)  # no observation before the first reset: nothing, no error
        env.reset(seed=0)
        names = _joint_names(env)
        visualizer.update(env, _joint_readings(env, names))
        joints: list = []
        sub_node.create_subscription(JointState, viz.urdf_joint_states_topic("viz7"), joints.append, sensor_qos())
        descriptions: list = []
        markers: list = []
        sub_node.create_subscription(String, viz.ROBOT_DESCRIPTION, descriptions.append, latched_qos())
        sub_node.create_subscription(MarkerArray, viz.markers_topic("viz7"), markers.append, latched_qos())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (descriptions and markers and joints):
            executor.spin_once(timeout_sec=0.05)
            visualizer.update(env, _joint_readings(env, names))  # the joint states are not latched
        assert descriptions and markers and joints, (len(descriptions), len(markers), len(joints))
        assert descriptions[0].data == visualizer.description
        _assert_valid(markers[-1], task_id)
        assert list(joints[-1].name) == urdf.movable_joints(env.unwrapped.task.info.robot)
        assert all(math.isfinite(v) for v in joints[-1].position)
    finally:
        env.close()
        rclpy.shutdown(context=ctx)
