"""The lifecycle hardware collector against the servo emulator (``mbrl-ros emulate``) over real DDS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("dynamixel_sdk")

from ros_harness import Graph, Probe, diagnostics_of  # noqa: E402

pytestmark = pytest.mark.ros


def _emulator(*faults: str) -> tuple[subprocess.Popen, str]:
    argv = [sys.executable, "-m", "mbrl_ros.cli", "emulate", "--robot", "dclaw"]
    for f in faults:
        argv += ["--fault", f]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith("/dev/"):
        p.kill()
        pytest.skip(f"the servo emulator did not start (no pty?): {line!r}")
    return p, line


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def test_configure_names_a_missing_motor(graph: Graph) -> None:
    emu, pty = _emulator("no-response:21")
    try:
        graph.start("hardware_collector", "hardware_collector",
                    {"task": "dclaw-turn-fixed", "robot_id": "claw", "device_path": pty})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "configure failed" not in graph.log("hardware_collector"):
            time.sleep(0.2)
    finally:
        _stop(emu)
    log = graph.log("hardware_collector")
    assert "configure failed" in log and "21" in log, log
    assert graph.procs["hardware_collector"].poll() is None  # unconfigured, still up for an operator


def test_estop_service_turns_torque_off_fast(graph: Graph) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from std_srvs.srv import Trigger

    emu, pty = _emulator()
    probe = Probe(graph.domain_id)
    try:
        graph.start("hardware_collector", "hardware_collector",
                    {"task": "dclaw-turn-fixed", "robot_id": "claw", "device_path": pty})
        diags = probe.subscribe(DiagnosticArray, "/diagnostics", 50)
        probe.spin_until(lambda: "torque on" in graph.log("hardware_collector"), 60, "the active robot")
        resp = probe.call(Trigger, "/hardware_collector/estop", timeout=20)
        assert resp.success and "torque off" in resp.message
        probe.spin_until(lambda: "estop_latency_ms" in (diagnostics_of(diags, "hardware_collector") or {}), 10,
                         "the e-stop diagnostic")
        d = diagnostics_of(diags, "hardware_collector")
        assert d["_level"] == 2 and float(d["estop_latency_ms"]) < 50.0
        assert probe.call(Trigger, "/hardware_collector/clear_estop").success
        assert "no motor reports" in probe.call(Trigger, "/hardware_collector/reboot_faulted").message
    finally:
        probe.close()
        _stop(emu)
