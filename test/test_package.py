"""The package builds with colcon as a ROS 2 ament_python package and installs what ROS tools look for."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_FILES = ["pal_dclaw.launch.py", "mal_dclaw.launch.py", "pal_dkitty.launch.py", "mal_dkitty.launch.py"]
NODES = ["collector", "hardware_collector", "model_learner", "policy_improver", "game_coordinator", "mbrl-ros"]


def test_package_xml_is_format3_ament_python() -> None:
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "mbrl_ros"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.iter("exec_depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs", "diagnostic_msgs", "std_srvs", "lifecycle_msgs"} <= deps


def test_colcon_build_installs_package(tmp_path: Path) -> None:
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        colcon = shutil.which("colcon")  # type: ignore[assignment]
    if not colcon:
        pytest.skip("colcon is not installed (make setup installs it)")
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [str(colcon), "--log-base", str(tmp_path / "log"), "build", "--base-paths", str(ROOT),
         "--build-base", str(tmp_path / "build"), "--install-base", str(tmp_path / "install")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    share = tmp_path / "install" / "mbrl_ros" / "share"
    assert (share / "ament_index" / "resource_index" / "packages" / "mbrl_ros").is_file()
    assert (share / "mbrl_ros" / "package.xml").is_file()
    for name in LAUNCH_FILES:
        assert (share / "mbrl_ros" / "launch" / name).is_file(), name
    configs = {p.name for p in (share / "mbrl_ros" / "config").glob("*.yaml")}
    assert {"pal.yaml", "mal.yaml"} <= configs, configs
    lib = tmp_path / "install" / "mbrl_ros" / "lib" / "mbrl_ros"
    for node in NODES:  # `ros2 run mbrl_ros <node>` looks here
        assert (lib / node).is_file(), node
