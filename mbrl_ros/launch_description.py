"""Turn a graph of :mod:`mbrl_ros.graph` into a ROS 2 ``LaunchDescription`` (for ``ros2 launch``).

The launch files in ``launch/`` are one line over :func:`generate_for`. ``launch`` and
``launch_ros`` come with a full ROS 2 install (they are not on PyPI), so they are imported
inside the functions: importing this module never needs them, and ``mbrl-ros launch`` starts
the same graph without them.
"""

from __future__ import annotations

from mbrl_ros import graph


def _graph_actions(context, graph_name: str) -> list:
    """Resolve the launch arguments and turn every node description into a launch_ros Node."""
    from launch.actions import SetEnvironmentVariable, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph.launch_arguments(graph_name)}
    resolved = graph.resolve(graph_name, values)
    actions = [SetEnvironmentVariable(name, value) for name, value in graph.environment(resolved).items()]
    for node in graph.build_nodes(resolved):
        actions.append(
            Node(
                package=graph.PACKAGE,
                executable=node.executable,
                name=node.name,
                parameters=node.parameters,
                output="screen",
                # the run is over when the coordinator finishes; a dead learner ends it too
                on_exit=Shutdown() if (node.ends_run or node.required) else None,
            )
        )
    return actions


def generate_for(graph_name: str):
    """The LaunchDescription of one named graph: its declared arguments, then its nodes."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    from launch import LaunchDescription  # type: ignore[attr-defined]  # ROS 2 launch (full installs; no stubs)

    declared = [
        DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
        for a in graph.launch_arguments(graph_name)
    ]
    nodes = OpaqueFunction(function=lambda context, *args, **kwargs: _graph_actions(context, graph_name))
    return LaunchDescription(declared + [nodes])
