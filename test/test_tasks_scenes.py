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
