"""MAL on the D'Kitty: `ros2 launch mbrl_ros mal_dkitty.launch.py [name:=value ...]`.

The nodes, their parameters and the launch arguments come from :mod:`mbrl_ros.graph`, the
same description `mbrl-ros launch mal_dkitty` starts without the ROS 2 launch tools. See
docs/ros_graph.md for the arguments.
"""

from mbrl_ros.launch_description import generate_for

GRAPH = "mal_dkitty"


def generate_launch_description():
    return generate_for(GRAPH)
