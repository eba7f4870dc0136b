"""The project's MuJoCo scenes: ROBEL's MJCF assets plus mbrl_ros's overlays from ``sim/``, made
loadable by modern MuJoCo.

The robot models and meshes ship in the ``robel`` wheel (installed with ``--no-deps`` for its
assets only; the package itself is never imported: it needs mujoco-py and gym<0.14). Every ROBEL
XML, including the included sub-files, starts with a license comment followed by
``<?xml version="1.0"?>``; MuJoCo >= 3 rejects a declaration that is not on the first line.

Preparing (once, at ``make setup`` or on first use) copies ROBEL's scene tree with that line
removed from every ``.xml`` and puts the project's scene files from ``sim/scenes/`` (committed:
each includes ROBEL's task XML and adds the project's cameras) next to the file they include,
because MuJoCo resolves includes from the main file's directory. Tasks load the project's scene.

Where the prepared tree goes: ``$MBRL_ROS_SCENES`` if set; else ``sim/prepared/`` in a source
checkout (generated, git-ignored); else ``$MBRL_ROS_CACHE`` (default ``~/.cache/mbrl_ros``), e.g.
for an installed package. Its name carries a hash of the robel version, ROBEL's files and the
overlays, so a new wheel or an edited overlay gets a fresh copy. It is written to a temporary
directory and renamed into place, so concurrent processes never see a half-written tree.
``python -m mbrl_ros.tasks.scenes`` prepares it and prints where.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import mujoco

# Scene name -> ROBEL's task XML, relative to the robel package directory. The project's scene
# ``sim/scenes/<name>.xml`` includes it and is prepared beside it as ``mbrl_ros-<name>.xml``.
ROBEL_SCENES: dict[str, str] = {
    "dclaw-valve3": "dclaw/assets/dclaw3xh_valve3_v0.xml",
    "dkitty-orient": "dkitty/assets/dkitty_orient-v0.xml",
    "dkitty-stand": "dkitty/assets/dkitty_stand-v0.xml",
}
# Scene name -> the XML the tasks load, relative to the prepared tree.
SCENE_FILES: dict[str, str] = {
    name: str(Path(robel).parent / f"mbrl_ros-{name}.xml") for name, robel in ROBEL_SCENES.items()
}

# The sub-trees of the robel package the task XMLs reference (they include ../../robel-scenes/...).
_ASSET_DIRS = ("dclaw/assets", "dkitty/assets", "robel-scenes")
_XML_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>\s*$", re.M)
_SOURCE_SIM = Path(__file__).resolve().parents[2] / "sim"  # the source checkout's sim/


def robel_package_dir() -> Path:
    """Directory of the installed ``robel`` package, found without importing it."""
    spec = importlib.util.find_spec("robel")  # locates the package; does not execute it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the ROBEL scene assets are missing: install them with `pip install --no-deps robel==0.1.2`")
    return Path(list(spec.submodule_search_locations)[0])


def overlay_dir() -> Path:
    """The project's scene files: ``sim/scenes`` of the source tree, else an installed
    ``share/mbrl_ros/sim/scenes`` (a colcon install prefix above this file, or the Python prefix)."""
    here = Path(__file__).resolve()
    candidates = [_SOURCE_SIM / "scenes"]
    candidates += [p / "share" / "mbrl_ros" / "sim" / "scenes" for p in here.parents]
    candidates.append(Path(sys.prefix) / "share" / "mbrl_ros" / "sim" / "scenes")
    for d in candidates:
        if all((d / f"{name}.xml").is_file() for name in ROBEL_SCENES):
            return d
    raise RuntimeError(f"the project's scene files (sim/scenes/*.xml) were not found in {candidates[:2]}")


def cache_root() -> Path:
    """Root of mbrl_ros's on-disk cache (``$MBRL_ROS_CACHE`` or ``~/.cache/mbrl_ros``)."""
    env = os.environ.get("MBRL_ROS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mbrl_ros"


def prepared_root() -> Path:
    """Where prepared scene trees live (see the module docstring)."""
    env = os.environ.get("MBRL_ROS_SCENES")
    if env:
        return Path(env)
    if (_SOURCE_SIM / "scenes").is_dir() and os.access(_SOURCE_SIM, os.W_OK):
        return _SOURCE_SIM / "prepared"
    return cache_root()


def _source_files(src: Path) -> list[Path]:
    files: list[Path] = []
    for sub in _ASSET_DIRS:
        root = src / sub
        if not root.is_dir():
            raise RuntimeError(f"ROBEL asset directory missing: {root}")
        files.extend(p for p in sorted(root.rglob("*")) if p.is_file())
    return files


def _fingerprint(src: Path, files: list[Path], overlays: Path) -> str:
    h = hashlib.sha256()
    try:
        h.update(metadata.version("robel").encode())
    except metadata.PackageNotFoundError:  # pragma: no cover - assets without dist-info
        pass
    for p in files:
        st = p.stat()
        h.update(f"{p.relative_to(src)}:{st.st_size}".encode())
        if p.suffix == ".xml":
            h.update(p.read_bytes())
    for name in sorted(ROBEL_SCENES):
        h.update((overlays / f"{name}.xml").read_bytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def prepared_scene_dir() -> Path:
    """The prepared scene tree: ROBEL's assets without XML declarations, plus the project's
    scenes from ``sim/scenes`` (made once per content, then reused)."""
    src = robel_package_dir()
    files = _source_files(src)
    overlays = overlay_dir()
    dest = prepared_root() / f"robel-scenes-{_fingerprint(src, files, overlays)}"
    if (dest / ".complete").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".robel-scenes-", dir=dest.parent))
    try:
        for p in files:
            out = tmp / p.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            if p.suffix == ".xml":
                # Keep the license comment; drop only the misplaced declaration line.
                out.write_bytes(_XML_DECLARATION.sub(b"", p.read_bytes()))
            else:
                shutil.copyfile(p, out)
        for name in ROBEL_SCENES:
            shutil.copyfile(overlays / f"{name}.xml", tmp / SCENE_FILES[name])
        (tmp / ".complete").write_text("ok\n")
        try:
            os.rename(tmp, dest)
        except OSError:
            # Another process won the race; its copy is identical.
            if not (dest / ".complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def scene_path(scene: str) -> Path:
    """Path of a loadable scene XML (``scene`` is a key of :data:`SCENE_FILES`)."""
    if scene not in SCENE_FILES:
        raise ValueError(f"unknown scene {scene!r}; valid scenes: {', '.join(SCENE_FILES)}")
    return prepared_scene_dir() / SCENE_FILES[scene]


@functools.lru_cache(maxsize=None)
def _compiled_model(scene: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_path(str(scene_path(scene)))


def load_model(scene: str) -> mujoco.MjModel:
    """A fresh, private ``MjModel`` of a ROBEL scene.

    The XML is compiled once per process; each caller gets its own deep copy because the
    environments mutate the model (domain randomisation, ``set_physics``, target markers).
    """
    return copy.deepcopy(_compiled_model(scene))


def main() -> int:
    """``python -m mbrl_ros.tasks.scenes``: prepare the scenes (``make setup`` does) and print where."""
    root = prepared_scene_dir()
    for name in SCENE_FILES:
        load_model(name)  # compile each once: a broken overlay fails here, at setup
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
