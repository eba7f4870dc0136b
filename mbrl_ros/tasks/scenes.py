"""ROBEL's MJCF scenes, made loadable by modern MuJoCo.

The scenes ship in the ``robel`` wheel (installed with ``--no-deps`` for its assets only; the
package itself is never imported: it needs mujoco-py and gym<0.14). Every ROBEL XML, including
the included sub-files, starts with a license comment followed by ``<?xml version="1.0"?>``;
MuJoCo >= 3 rejects a declaration that is not on the first line. We copy the scene tree once to
a cache directory with that line removed from every ``.xml`` and load the task XML from there.

The cache lives in ``$MBRL_ROS_CACHE`` (default ``~/.cache/mbrl_ros``) under a name derived from
the robel version and a hash of the source files, so an upgraded wheel gets a fresh copy. It is
written to a temporary directory and renamed into place, so concurrent processes never see a
half-written tree.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import mujoco

# Scene name -> task XML, relative to the robel package directory.
SCENE_FILES: dict[str, str] = {
    "dclaw-valve3": "dclaw/assets/dclaw3xh_valve3_v0.xml",
    "dkitty-orient": "dkitty/assets/dkitty_orient-v0.xml",
    "dkitty-stand": "dkitty/assets/dkitty_stand-v0.xml",
}

# The sub-trees of the robel package the task XMLs reference (they include ../../robel-scenes/...).
_ASSET_DIRS = ("dclaw/assets", "dkitty/assets", "robel-scenes")
_XML_DECLARATION = re.compile(rb"^\s*<\?xml[^>]*\?>\s*$", re.M)


def robel_package_dir() -> Path:
    """Directory of the installed ``robel`` package, found without importing it."""
    spec = importlib.util.find_spec("robel")  # locates the package; does not execute it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the ROBEL scene assets are missing: install them with `pip install --no-deps robel==0.1.2`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def cache_root() -> Path:
    """Root of mbrl_ros's on-disk cache (``$MBRL_ROS_CACHE`` or ``~/.cache/mbrl_ros``)."""
    env = os.environ.get("MBRL_ROS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mbrl_ros"


def _source_files(src: Path) -> list[Path]:
    files: list[Path] = []
    for sub in _ASSET_DIRS:
        root = src / sub
        if not root.is_dir():
            raise RuntimeError(f"ROBEL asset directory missing: {root}")
        files.extend(p for p in sorted(root.rglob("*")) if p.is_file())
    return files


def _fingerprint(src: Path, files: list[Path]) -> str:
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
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def prepared_scene_dir() -> Path:
    """Return a cache copy of ROBEL's scene tree with the XML declarations removed (made once)."""
    src = robel_package_dir()
    files = _source_files(src)
    dest = cache_root() / f"robel-scenes-{_fingerprint(src, files)}"
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
    """Path of a loadable task XML (``scene`` is a key of :data:`SCENE_FILES`)."""
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
