"""PAL on the D'Kitty: `ros2 launch mbrl_ros pal_dkitty.launch.py [name:=value ...]`.

The nodes, their parameters and the launch arguments come from :mod:`mbrl_ros.graph`, the
same description `mbrl-ros launch pal_dkitty` starts without the ROS 2 launch tools. See
docs/ros_graph.md for the arguments.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mbrl_ros import graph

GRAPH = "pal_dkitty"


def _graph_actions(context, *args, **kwargs):
    """Resolve the launch arguments and turn every node description into a launch_ros Node."""
    values = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph.launch_arguments(GRAPH)}
    resolved = graph.resolve(GRAPH, values)
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


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
        for a in graph.launch_arguments(GRAPH)
    ]
    return LaunchDescription(declared + [OpaqueFunction(function=_graph_actions)])
