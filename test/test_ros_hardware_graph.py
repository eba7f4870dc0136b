"""The whole graph on the (emulated) robot: ``mbrl-ros launch pal_dclaw use_sim:=false``.

The servo emulator runs in this process (MuJoCo physics, real time) on a pty; the launcher
starts the coordinator, both learners and the lifecycle hardware collector on that pty, exactly
as on a robot (``device_path:=/dev/ttyUSB0``). One run checks, end to end over real DDS:

- PAL plays at least two iterations on data collected through the Dynamixel driver at 10 Hz;
- the coordinator's e-stop service turns every motor's torque off (the emulator's Torque Enable
  registers) within a bounded time, torque stays off while the e-stop holds, and after
  ``/mbrl/estop_clear`` the hardware collector resumes and the game finishes;
- no Goal Position outside the joint limits ever reached a servo (the emulator's write record).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("dynamixel_sdk")
pytest.importorskip("mujoco")

from ros_harness import TINY_GAME, Probe, free_domain_id  # noqa: E402

from mbrl_ros import wire  # noqa: E402

pytestmark = pytest.mark.ros
TASK_ID = "dclaw-turn-fixed"
ESTOP_BOUND_S = 0.1  # service call -> every Torque Enable register 0, through DDS (6.5-25.3 ms with two training runs beside it)


def _graph_nice_values(domain: int) -> dict[str, int]:
    """Nice value of each graph node process on ``domain`` (by module name, from /proc)."""
    found: dict[str, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if f"ROS_DOMAIN_ID={domain}".encode() not in environ or b"-m" not in argv:
            continue
        module = argv[argv.index(b"-m") + 1].decode()
        if module.startswith("mbrl_ros.nodes."):
            found[module.rsplit(".", 1)[1]] = int(stat.rsplit(")", 1)[1].split()[16])  # field 19: nice
    return found


def _driver_estop_times(log: str) -> list[str]:
    """The hardware collector's own e-stop latencies ("torque off in X ms") from its log."""
    return [ln.split("torque off in")[1].split("(")[0].strip() for ln in log.splitlines() if "torque off in" in ln]


def _torque_all_off(emu) -> bool:
    return not any(emu.torque_enabled().values())


def _joints_on(emu) -> bool:
    on = emu.torque_enabled()
    return all(on[i] for i in emu.config.joint_ids)


def test_pal_on_the_emulated_dclaw_learns_estops_within_bounds_and_resumes(tmp_path: Path) -> None:
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.hardware.emulator import ServoEmulator
    from mbrl_ros.nodes import ESTOP_CLEAR_SERVICE, ESTOP_SERVICE, GAME_STATE, TRANSITIONS, latched_qos
    from mbrl_ros.nodes.recording import read_ros_messages
    from mbrl_ros.tasks import get_task
    from std_msgs.msg import UInt8MultiArray

    emu = ServoEmulator("dclaw", physics="mujoco", realtime=True)
    pty = emu.start()
    log_dir = tmp_path / "run"
    config = tmp_path / "hardware.yaml"
    config.write_text(yaml.safe_dump({
        # 1 episode (40 steps, 4 s at 10 Hz) per round: N_init, then two PAL iterations
        "/**": {"ros__parameters": {"game_overrides": TINY_GAME + ["n_init=40", "samples=120"], "torch_threads": 1}},
        "game_coordinator": {"ros__parameters": {"gate_probe_size": 32, "gate_model_horizon": 3}},
        # ROBEL waits 1 s for the valve to settle; 0.2 s is plenty for the emulated valve
        "hardware_collector": {"ros__parameters": {"reset_object_settle_s": 0.2, "reset_move_timeout_s": 1.5}},
    }))
    domain = free_domain_id()
    env = dict(os.environ, PYTHONUNBUFFERED="1", ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", "pal_dclaw", "use_sim:=false", f"device_path:={pty}",
            f"config:={config}", f"log_dir:={log_dir}", f"domain_id:={domain}", "--no-progress", "--timeout", "150"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    probe = Probe(domain)
    states: list = probe.subscribe(String, GAME_STATE, latched_qos())

    def state() -> dict:
        return wire.unpack_game_state(states[-1][1].data).to_body() if states else {}

    try:
        # 1. the first round is in (N_init through the driver), collection runs again, torque is on
        # (about 30 s on an idle 2-core machine; over 90 s once with a training run on one core)
        probe.spin_until(lambda: proc.poll() is None and state().get("samples", 0) >= 40 and state()["collect"]
                         and _joints_on(emu), 180, "the hardware collector running iteration 1")
        samples_at_estop = state()["samples"]
        # learning is batch work: its nodes run niced, the control path (collector, coordinator) is not
        nice, base = _graph_nice_values(domain), os.getpriority(os.PRIO_PROCESS, 0)
        assert nice.get("model_learner") == nice.get("policy_improver") == max(10, base), nice
        assert nice.get("hardware_collector") == nice.get("game_coordinator") == base, nice

        # 2. e-stop through the coordinator's service: time until every Torque Enable register reads 0
        client = probe.node.create_client(Trigger, ESTOP_SERVICE)
        probe.spin_until(client.service_is_ready, 10, "the e-stop service")
        t0 = time.monotonic()
        fut = client.call_async(Trigger.Request())
        t_off = None
        while time.monotonic() - t0 < 5.0 and (t_off is None or not fut.done()):
            probe.executor.spin_once(timeout_sec=0.0005)
            if t_off is None and _torque_all_off(emu):
                t_off = time.monotonic() - t0
        assert fut.done() and fut.result().success
        if t_off is None or t_off >= ESTOP_BOUND_S:
            # where the time went: the driver logs its own part (waiting for a bus transaction in
            # flight + the torque-off packets); the rest is DDS, the two nodes' callbacks and the
            # emulator thread in this process
            time.sleep(0.5)
            driver = _driver_estop_times((log_dir / "logs" / "hardware_collector.log").read_text(errors="replace"))
            pytest.fail(f"torque off after {t_off} s (bound {ESTOP_BOUND_S} s); driver: {driver[-1:]}; "
                        f"load average {os.getloadavg()}")
        # while the e-stop holds nothing moves: torque stays off, collection is paused
        held_until = time.monotonic() + 1.5
        while time.monotonic() < held_until:
            probe.executor.spin_once(timeout_sec=0.01)
            assert _torque_all_off(emu), f"torque came back during the e-stop: {emu.torque_enabled()}"
        assert state()["estop"] and not state()["collect"]

        # 3. release: the hardware collector resumes and the game runs to its end
        released_at = time.time()
        assert probe.call(Trigger, ESTOP_CLEAR_SERVICE).success
        out, _ = proc.communicate(timeout=150)
    finally:
        probe.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
        emu.stop()
    text = out.decode(errors="replace")
    hw_log = (log_dir / "logs" / "hardware_collector.log").read_text(errors="replace")
    assert proc.returncode == 0, text + hw_log[-3000:]
    print(f"e-stop service -> torque off on every motor: {1000 * t_off:.1f} ms "
          f"(the driver's part: {_driver_estop_times(hw_log)})")

    summary = json.loads((log_dir / "summary.json").read_text())
    assert summary["iterations"] >= 2 and summary["samples"] >= 120 > samples_at_estop
    assert summary["sequence_gaps"] == 0 and summary["refused_out_of_order"] == 0
    assert load_onnx_policy(summary["policy"], expect_task=TASK_ID).contract["version"] >= 2
    task = get_task(TASK_ID)
    episodes = [wire.unpack_episode(wire.from_msg(m), task)
                for m, _t in read_ros_messages(Path(summary["mcap"]), TRANSITIONS, UInt8MultiArray)]
    assert len(episodes) == summary["episodes"] and {e.robot_id for e in episodes} == {"dclaw"}
    # whole episodes, or the real steps before a safety abort (flagged aborted, with its reason)
    assert all(e.length == task.info.horizon or (e.aborted and e.extra.get("fault")) for e in episodes)
    assert sorted(e.sequence for e in episodes) == list(range(len(episodes)))
    assert any(e.stamp > released_at for e in episodes), "no episode was collected after the e-stop was released"
    assert "torque off in" in hw_log and "e-stop released" in hw_log

    # 4. every Goal Position that reached a servo: inside the joints' hard limits, and inside the
    #    task's range unless a reset had to disentangle the fingers (ROBEL lifts the tops to pi/4)
    cfg = emu.config
    writes = emu.goal_writes()
    assert len(writes) >= 9 * summary["samples"]  # one goal per joint and step at least
    unit = 2 * np.pi / 4096
    for lo, hi, name in ((cfg.lower, cfg.upper, "hard"),
                         (np.maximum(task.limits.qpos_low, cfg.lower), np.minimum(task.limits.qpos_high, cfg.upper),
                          "task")):
        if name == "task" and "disentangle retry" in hw_log:
            continue
        for j, dxl_id in enumerate(cfg.joint_ids):
            q = np.array([w.rad for w in writes if w.dxl_id == dxl_id])
            assert q.size and q.min() >= lo[j] - unit and q.max() <= hi[j] + unit, \
                f"ID {dxl_id}: goals in [{q.min():.3f}, {q.max():.3f}], {name} limits [{lo[j]:.3f}, {hi[j]:.3f}]"
