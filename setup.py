"""ament_python package setup for mbrl_ros (also a plain pip-installable package)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "mbrl_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.json") + glob("config/*.rviz")),
        ("share/" + package_name + "/hardware", glob("hardware/*.yaml") + glob("hardware/*.rules")),
        ("share/" + package_name + "/sim/scenes", glob("sim/scenes/*.xml")),
    ],
    include_package_data=True,
    package_data={package_name: ["py.typed"]},
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="mbrl_ros developers",
    maintainer_email="mbrl-ros@example.org",
    description="Game-theoretic model-based RL (PAL/MAL) for ROBEL D'Claw and D'Kitty on ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "mbrl-ros = mbrl_ros.cli:main",
            "collector = mbrl_ros.nodes.collector:main",
            "hardware_collector = mbrl_ros.nodes.hardware_collector:main",
            "model_learner = mbrl_ros.nodes.model_learner:main",
            "policy_improver = mbrl_ros.nodes.policy_improver:main",
            "game_coordinator = mbrl_ros.nodes.game_coordinator:main",
            "policy_deployer = mbrl_ros.nodes.policy_deployer:main",
        ],
    },
)
