"""Deploy a policy on the D'Claw: `ros2 launch mbrl_ros deploy_dclaw.launch.py policy:=FILE.onnx [name:=value ...]`.

The policy_deployer node (contract check, policy gate, e-stop, episode count) and the collector
(sim, or the robot with use_sim:=false device_path:=...), no learning nodes; the same graph as
`mbrl-ros launch deploy_dclaw`. See docs/hardware.md (Deploying a policy).
"""

from mbrl_ros.launch_description import generate_for

GRAPH = "deploy_dclaw"


def generate_launch_description():
    return generate_for(GRAPH)
