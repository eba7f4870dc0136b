"""`mbrl-ros tasks`, `mbrl-ros rollout` and `mbrl-ros render` (the last in a subprocess: the
OpenGL backend must be chosen before MuJoCo is imported)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from mbrl_ros.cli import main

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def test_tasks_table(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["task", "id"]
    rows = {line.split()[0]: line.split() for line in out[2:]}
    assert rows["dclaw-turn-fixed"][1:6] == ["mbrl_ros/DClawTurnFixed-v0", "21", "9", "40", "10"]
    assert rows["dkitty-stand-random"][1:6] == ["mbrl_ros/DKittyStandRandom-v0", "61", "12", "80", "10"]
    assert main(["tasks", "--json"]) == 0
    rec = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["obs_dim"] for r in rec] == [21, 21, 53, 61, 4] and rec[0]["model_dim"] == 29  # 4: hidden-region


def _summary(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_rollout_prints_episodes_and_summary(capsys):
    assert main(["rollout", "--task", "dclaw-turn-fixed", "--policy", "zero", "--episodes", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if x.startswith("episode")]
    assert len(lines) == 2 and "success False" in lines[0]
    s = _summary(out)
    assert s["task"] == "dclaw-turn-fixed" and s["episodes"] == 2 and s["success_rate"] == 0.0
    # The fixed task with a zero action is deterministic: both episodes return the same.
    returns = [float(x.split()[3]) for x in lines]
    assert returns[0] == returns[1] == pytest.approx(s["mean_return"], abs=0.01) and s["mean_return"] < -300


def test_rollout_bad_input_is_a_clear_error(capsys):
    assert main(["rollout", "--task", "dclaw-valve", "--episodes", "1"]) == 2
    assert "valid task ids" in capsys.readouterr().err
    assert main(["rollout", "--task", "dclaw-turn-fixed", "--policy", "missing.onnx"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["rollout", "--task", "dclaw-turn-fixed", "--episodes", "0"]) == 2


def test_rollout_runs_an_onnx_policy_and_checks_its_task(tmp_path, capsys):
    try:
        from mbrl_ros.core.networks import GaussianMLPPolicy
        from mbrl_ros.core.onnx_export import export_policy_onnx
    except ImportError as exc:  # pragma: no cover - core layer absent
        pytest.skip(f"core ONNX export unavailable: {exc}")
    from mbrl_ros.tasks import get_task

    info = get_task("dclaw-turn-random").info
    torch.manual_seed(0)
    path = tmp_path / "policy.onnx"
    path.write_bytes(export_policy_onnx(GaussianMLPPolicy(info.obs_dim, info.act_dim), info, iteration=1, version=1))
    assert main(["rollout", "--task", "dclaw-turn-random", "--policy", str(path), "--episodes", "1",
                 "--no-progress"]) == 0
    assert _summary(capsys.readouterr().out)["episodes"] == 1
    # A policy trained for another task is refused before anything runs.
    assert main(["rollout", "--task", "dclaw-turn-fixed", "--policy", str(path), "--episodes", "1"]) == 2


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is None, reason="OSMesa missing (apt-get install libosmesa6)")
def test_render_writes_a_non_blank_gif(tmp_path):
    import imageio.v3 as iio

    out = tmp_path / "claw.gif"
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    cmd = [sys.executable, "-m", "mbrl_ros.cli", "render", "--task", "dclaw-turn-fixed", "--policy", "random",
           "--out", str(out), "--width", "64", "--height", "64", "--max-steps", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames = iio.imread(out, index=None)
    assert frames.shape == (3, 64, 64, 3)  # reset frame + 2 steps
    for f in frames:
        assert f.std() > 10 and len(np.unique(f.reshape(-1, 3), axis=0)) > 50  # a scene, not a blank
    assert np.abs(frames[0].astype(int) - frames[2].astype(int)).max() > 0  # the claw moved


@pytest.mark.skipif(ctypes.util.find_library("OSMesa") is None, reason="OSMesa missing (apt-get install libosmesa6)")
def test_launch_video_writer_produces_a_readable_gif_of_the_right_size(tmp_path, monkeypatch):
    """``mbrl-ros launch ... video:=true`` writes its GIF with ``launch.render_video``: 3 steps of a
    random policy at 64x48 read back with imageio (frame count = reset + steps, frame size)."""
    import imageio.v3 as iio

    from mbrl_ros.commands.launch import render_video

    # (importing the render module sets these defaults; monkeypatch restores the environment after)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    out = tmp_path / "policy.gif"
    ok, message = render_video("dclaw-turn-fixed", "random", out, width=64, height=48, steps=3, timeout_s=240)
    assert ok and message == str(out), message
    frames = iio.imread(out, index=None)
    assert frames.shape == (4, 48, 64, 3)  # the reset frame + 3 steps, height x width x RGB
    assert all(f.std() > 10 for f in frames)  # a scene, not a blank
    ok, message = render_video("dclaw-turn-fixed", str(tmp_path / "missing.onnx"), tmp_path / "no.gif", width=64,
                               height=48, steps=3, timeout_s=240)
    assert not ok and "rendering failed" in message and not (tmp_path / "no.gif").exists()


def test_launch_video_without_osmesa_prints_a_reason_and_the_summary_line(tmp_path, monkeypatch, capsys):
    """``video:=true`` without OSMesa: no render is attempted, the summary's ``video`` line says why."""
    import json

    from mbrl_ros import graph
    from mbrl_ros.commands import launch, render

    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")
    monkeypatch.setattr(render, "osmesa_available", lambda: False)
    ok, message = launch.render_video("dclaw-turn-fixed", "zero", tmp_path / "policy.gif")
    assert not ok and "OSMesa" in message and not (tmp_path / "policy.gif").exists()

    g = graph.resolve("pal_dclaw", {"log_dir": str(tmp_path), "video": "true"})
    assert launch.write_video(g) == "not written: the run has no final policy"  # no summary.json yet
    (tmp_path / "policy_final.onnx").write_bytes(b"onnx")
    summary = {"algo": "pal", "task": "dclaw-turn-fixed", "iterations": 1, "samples": 10, "sample_budget": 10,
               "episodes": 1, "final_eval_success": 0.0, "best_eval_success": 0.0, "wall_s": 1.0,
               "policy": str(tmp_path / "policy_final.onnx")}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    line = launch.write_video(g)
    assert line.startswith("not written: offscreen rendering needs OSMesa")
    launch.print_summary(tmp_path, video=line)
    out = capsys.readouterr().out
    assert f"  video          {line}\n" in out
    launch.print_summary(tmp_path)  # without video:=true there is no video line
    assert "  video " not in capsys.readouterr().out
