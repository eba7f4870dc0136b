"""The import contract (docs/architecture.md), read from the source with ``ast``: imports only go down.

Layers, bottom to top (a module may import its own layer and the ones below, never above):

0. ``mbrl_ros.core``, ``mbrl_ros.tasks`` (and the package root): the game and the tasks. No ROS
   package at all.
1. ``mbrl_ros.hardware`` (no ROS either: the ROS hardware collector wraps it), ``mbrl_ros.wire``
   and ``mbrl_ros.security`` (what travels on topics; may use ROS message types),
   ``mbrl_ros.graph`` (the node graphs as data; finds an install through ament_index).
2. ``mbrl_ros.nodes``: the rclpy adapters.
3. ``mbrl_ros.commands``, ``mbrl_ros.cli``, ``mbrl_ros.launch_description``: the entry points.
4. ``bench``, ``experiments``: on top of everything; packages, no ``sys.path`` edits, never ``test/``.

Every import counts, also those inside functions (a lazy import is still a dependency). A module
the table does not know fails the test, so a new module gets a layer when it is added.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS: dict[str, int] = {
    "mbrl_ros": 0,  # the package root (__init__.py)
    "mbrl_ros.core": 0,
    "mbrl_ros.tasks": 0,
    "mbrl_ros.hardware": 1,
    "mbrl_ros.wire": 1,
    "mbrl_ros.security": 1,
    "mbrl_ros.graph": 1,
    "mbrl_ros.nodes": 2,
    "mbrl_ros.commands": 3,
    "mbrl_ros.cli": 3,
    "mbrl_ros.launch_description": 3,
    "bench": 4,
    "experiments": 4,
}
LAYER_NAMES = {0: "core/tasks", 1: "hardware/wire/graph", 2: "nodes", 3: "commands/cli/launch", 4: "bench/experiments"}
NO_ROS = ("mbrl_ros", "mbrl_ros.core", "mbrl_ros.tasks", "mbrl_ros.hardware")
ROS_EXACT = {
    "rclpy",
    "launch",
    "launch_ros",
    "launch_pytest",
    "ament_index_python",
    "builtin_interfaces",
    "rosidl_runtime_py",
    "rosidl_parser",
    "rosbag2_py",
    "mcap_ros2",
    "ros2cli",
    "tf2_ros",
    "rmw",
}
ROS_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
ROS_PREFIXES = ("rcl", "rosidl", "rmw_", "tf2", "ros2", "launch_")


def is_ros(top: str) -> bool:
    """Is ``top`` (a top-level module name) a ROS 2 package?"""
    return top in ROS_EXACT or top.endswith(ROS_SUFFIXES) or top.startswith(ROS_PREFIXES)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    files = sorted((ROOT / "mbrl_ros").rglob("*.py"))
    files += sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "experiments").glob("*.py"))
    return files


def imports(path: Path, text: Optional[str] = None) -> Iterator[tuple[int, str]]:
    """Every imported module of a file (or of ``text`` as if it were that file), absolute:
    ``(line, "pkg.mod")``; ``from pkg import name`` also yields ``pkg.name`` (it may be a module:
    the layer lookup uses the longest known prefix)."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            for a in node.names:
                yield node.lineno, f"{name}.{a.name}"


def layer_of(name: str) -> Optional[int]:
    """The layer of a module of this repository (longest known prefix), None if not ours."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in LAYERS:
            return LAYERS[key]
    return None


def ros_free(mod: str) -> bool:
    """Must ``mod`` run without ROS (layer 0 and the hardware path)?"""
    return any(mod == p or (p != "mbrl_ros" and mod.startswith(p + ".")) for p in NO_ROS)


def test_every_module_has_a_layer() -> None:
    def known(mod: str) -> bool:
        parts = mod.split(".")
        return (
            parts[0] in ("bench", "experiments") or mod == "mbrl_ros" or ".".join(parts[:2]) in LAYERS
        )  # a new mbrl_ros/<x> must be placed, not inherit the root's

    unknown = [module_name(f) for f in source_files() if not known(module_name(f))]
    assert not unknown, (
        f"modules without a layer in test_layering.LAYERS (add them, and to docs/architecture.md): {unknown}"
    )


@pytest.mark.parametrize("path", source_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_down(path: Path) -> None:
    mod = module_name(path)
    own = layer_of(mod)
    assert own is not None
    bad = []
    for line, name in imports(path):
        top = name.split(".")[0]
        if top in ("test", "conftest", "ros_harness") or name.startswith("test."):
            bad.append(f"line {line}: imports the tests ({name})")
        theirs = layer_of(name)
        if theirs is not None and theirs > own:
            bad.append(f"line {line}: {name} ({LAYER_NAMES[theirs]}) from a lower layer ({LAYER_NAMES[own]})")
        if is_ros(top) and ros_free(mod):
            bad.append(f"line {line}: imports the ROS package {top}: {mod} must run without ROS")
    assert not bad, f"{path.relative_to(ROOT)}:\n  " + "\n  ".join(bad)


def _edits_sys_path(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value  # sys.path.insert(...), sys.path.append(...)
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "path"
            and isinstance(target.value, ast.Name)
            and target.value.id == "sys"
        ):
            lines.append(node.lineno)
    return lines


def test_bench_experiments_and_tests_never_edit_sys_path() -> None:
    files = sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "experiments").glob("*.py"))
    files += sorted((ROOT / "test").glob("*.py"))
    bad = {str(f.relative_to(ROOT)): lines for f in files if (lines := _edits_sys_path(ast.parse(f.read_text())))}
    assert not bad, f"sys.path edits (run as python -m bench.x; pytest has pythonpath = .): {bad}"


def test_the_checks_catch_what_they_should(tmp_path: Path) -> None:
    """The contract test itself can fail: a planted upward import, a ROS import in core, a sys.path edit."""
    assert is_ros("rclpy") and is_ros("std_msgs") and is_ros("lifecycle_msgs") and is_ros("rcl_interfaces")
    assert not is_ros("numpy") and not is_ros("torch") and not is_ros("mujoco")
    assert layer_of("mbrl_ros.nodes.collector") == 2 and layer_of("mbrl_ros.core.npg") == 0
    assert layer_of("mbrl_ros.hardware.emulator.server") == 1 and layer_of("numpy") is None
    assert _edits_sys_path(ast.parse("import sys\nsys.path.insert(0, 'x')\n")) == [2]
    assert _edits_sys_path(ast.parse("import sys\nsys.path = []\n")) == [2]
    assert _edits_sys_path(ast.parse("import sys\nprint(sys.argv)\n")) == []
    # a core module importing a node and rclpy, parsed as if it lived in mbrl_ros/core
    planted = ROOT / "mbrl_ros" / "core" / "_planted_for_test.py"
    code = "def f():\n    import rclpy\n    from mbrl_ros.nodes import collector\n    from ..hardware import safety\n"
    names = list(imports(planted, code))  # parsed only: nothing is written
    assert (2, "rclpy") in names and (3, "mbrl_ros.nodes") in names and (4, "mbrl_ros.hardware") in names
    assert ros_free(module_name(planted)) and is_ros("rclpy")
    assert layer_of("mbrl_ros.nodes") > layer_of(module_name(planted))  # what test_imports_only_go_down flags
    assert ros_free("mbrl_ros.hardware.emulator") and not ros_free("mbrl_ros.nodes.collector")
    assert not ros_free("mbrl_ros.wire")  # std_msgs is fine there
