"""Watch the D'Claw in RViz: `ros2 launch mbrl_ros view_dclaw.launch.py [robot_id:=sim0] [rviz:=true]`.

For full ROS 2 installs (``robot_state_publisher`` and ``rviz2`` are not on PyPI). Start it next to
a running graph (``mbrl-ros launch pal_dclaw``, or a deploy graph) on the same ``ROS_DOMAIN_ID``:

- ``robot_state_publisher`` gets the URDF generated from the MuJoCo scene
  (:func:`mbrl_ros.tasks.urdf.robot_urdf`) as its ``robot_description`` parameter and reads the
  collector's URDF joint states (``/mbrl/<robot_id>/urdf_joint_states``: claw and valve), so it
  publishes TF for every link; the pip-only stack cannot publish TF itself (``tf2_msgs`` is not on
  PyPI);
- ``rviz2`` opens ``config/view_dclaw.rviz``: the robot model from ``/robot_description``, the
  valve and target markers (``/mbrl/<robot_id>/markers``: the file names ``sim0``'s, another
  ``robot_id`` gets a temporary copy naming its own), TF, fixed frame ``world``.

``robot:=dkitty`` shows the D'Kitty instead (same topics). Importing this file needs neither
``launch`` nor ``robot_state_publisher``: they are imported or looked up when the description is
generated, and a missing ``robot_state_publisher`` or ``rviz2`` is reported and skipped.
"""

from __future__ import annotations

GRAPH = None  # not a learning graph of mbrl_ros.graph: a viewer next to one
ARGUMENTS = {
    "robot_id": ("sim0", "robot id of the collector to watch (/mbrl/<robot_id>/...)"),
    "robot": ("dclaw", "dclaw or dkitty: the URDF to load"),
    "rviz": ("true", "start rviz2 with config/view_dclaw.rviz"),
    "rviz_config": ("", "RViz config file ('' = config/view_dclaw.rviz of this package)"),
}


def _package_available(name: str) -> bool:
    """A ROS package is installed (ament index), without importing or starting it."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return False
    try:
        get_package_share_directory(name)
        return True
    except PackageNotFoundError:
        return False


def _rviz_config_for(robot_id: str, template) -> str:
    """The packaged RViz config shows ``sim0``'s markers; for another robot, a temporary copy
    with its marker topic."""
    import tempfile
    from pathlib import Path

    from mbrl_ros.nodes.visualization import markers_topic

    if robot_id == "sim0":
        return str(template)
    text = Path(template).read_text().replace(markers_topic("sim0"), markers_topic(robot_id))
    out = Path(tempfile.mkdtemp(prefix="mbrl_ros_rviz_")) / f"view_{robot_id}.rviz"
    out.write_text(text)
    return str(out)


def _actions(context, *args, **kwargs) -> list:
    from launch.actions import LogInfo
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from mbrl_ros import graph
    from mbrl_ros.nodes.visualization import urdf_joint_states_topic
    from mbrl_ros.tasks.urdf import robot_urdf

    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    robot, robot_id = value["robot"], value["robot_id"]
    actions: list = []
    if _package_available("robot_state_publisher"):
        actions.append(Node(
            package="robot_state_publisher", executable="robot_state_publisher", name=f"robot_state_publisher_{robot}",
            parameters=[{"robot_description": robot_urdf(robot)}],
            remappings=[("joint_states", urdf_joint_states_topic(robot_id))],
            output="screen",
        ))
    else:
        actions.append(LogInfo(msg="robot_state_publisher is not installed: no TF (the markers still show)"))
    if value["rviz"].lower() in ("true", "1", "yes"):
        config = value["rviz_config"] or _rviz_config_for(robot_id, graph.config_dir() / "view_dclaw.rviz")
        if _package_available("rviz2"):
            actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", config],
                                output="screen"))
        else:
            actions.append(LogInfo(msg="rviz2 is not installed: open the Foxglove layout config/foxglove_mbrl.json instead"))
    return actions


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_actions)])
