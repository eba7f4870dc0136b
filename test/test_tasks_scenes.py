"""ROBEL's MJCF scenes: the declaration-free cache copy and the loaded models."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_ros.tasks import scenes


def test_cache_copy_has_no_xml_declarations_and_keeps_assets():
    root = scenes.prepared_scene_dir()
    xmls = list(root.rglob("*.xml"))
    assert len(xmls) >= 10
    for p in xmls:
        assert b"<?xml" not in p.read_bytes(), p
    assert any(root.rglob("*.stl")) and any(root.rglob("*.png"))
    assert (root / ".complete").exists()
    assert scenes.prepared_scene_dir() == root  # made once, then reused


@pytest.mark.parametrize(
    "scene, nq, nu, joint0",
    [("dclaw-valve3", 19, 9, "FFJ10"), ("dkitty-orient", 18, 12, "Tx"), ("dkitty-stand", 18, 12, "Tx")],
)
def test_scenes_load_with_robel_layout(scene, nq, nu, joint0):
    import mujoco

    m = scenes.load_model(scene)
    assert (m.nq, m.nu) == (nq, nu)
    assert mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, 0) == joint0
    assert m.opt.timestep == 0.0025
    # Position servos: force = kp * (ctrl - q), i.e. biasprm[1] = -kp.
    np.testing.assert_array_equal(m.actuator_biasprm[:, 1], -m.actuator_gainprm[:, 0])


def test_each_model_is_a_private_copy():
    a, b = scenes.load_model("dclaw-valve3"), scenes.load_model("dclaw-valve3")
    a.dof_damping[0] = 123.0
    assert b.dof_damping[0] != 123.0


def test_unknown_scene_is_a_value_error():
    with pytest.raises(ValueError, match="valid scenes"):
        scenes.scene_path("dclaw-screw")


def test_scenes_are_the_projects_overlays_from_sim_with_their_cameras():
    import mujoco

    for scene in scenes.SCENE_FILES:
        path = scenes.scene_path(scene)
        source = scenes.overlay_dir() / f"{scene}.xml"
        assert path.read_bytes() == source.read_bytes()  # the committed sim/scenes file, unchanged
        assert path.parent == (scenes.prepared_scene_dir() / scenes.ROBEL_SCENES[scene]).parent
    m = scenes.load_model("dclaw-valve3")
    cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "mbrl_front")
    assert cam >= 0
    assert mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, "targeting") >= 0  # ROBEL's own are still there
    d = mujoco.MjData(m)
    mujoco.mj_forward(m, d)
    # it looks at the claw: the point 0.8 m ahead along the view axis is (0, 0, 0.17)
    ahead = d.cam_xpos[cam] - 0.8 * d.cam_xmat[cam].reshape(3, 3)[:, 2]
    np.testing.assert_allclose(ahead, [0.0, 0.0, 0.17], atol=2e-3)
    for scene in ("dkitty-orient", "dkitty-stand"):
        k = scenes.load_model(scene)
        assert mujoco.mj_name2id(k, mujoco.mjtObj.mjOBJ_CAMERA, "mbrl_overview") >= 0


def test_a_source_checkout_prepares_into_the_ignored_sim_folder(tmp_path, monkeypatch):
    import subprocess
    from pathlib import Path

    root = Path(scenes.__file__).resolve().parents[2]
    if not (root / "sim" / "scenes").is_dir():
        pytest.skip("not a source checkout (installed package): scenes go to the cache")
    monkeypatch.delenv("MBRL_ROS_SCENES", raising=False)
    assert scenes.prepared_root() == root / "sim" / "prepared"
    ignored = subprocess.run(["git", "check-ignore", "-q", "sim/prepared/x.xml"], cwd=root)
    if ignored.returncode == 128:
        pytest.skip("git unavailable")
    assert ignored.returncode == 0  # generated, never committed
    monkeypatch.setenv("MBRL_ROS_SCENES", str(tmp_path))
    assert scenes.prepared_root() == tmp_path
