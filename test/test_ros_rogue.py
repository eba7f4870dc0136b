"""A rogue participant on the running sim graph cannot move the robot or release its e-stop.

``mbrl-ros launch pal_dclaw`` (one sim collector) plays a tiny game on a private domain; a probe
in this test process joins the domain as any participant can (the PyPI Fast DDS has no DDS
Security) and publishes:

1. an ONNX policy v999 marked ``"approved": true`` but unsigned, then the same signed by a key
   of its own, on ``/mbrl/policy/deployed``;
2. game states naming v999: unsigned, signed by its own key under the coordinator's key id
   (forged), and a real signed state of the coordinator recorded earlier (replayed);
3. an e-stop (any participant may raise one), then a release: ``false`` on ``/mbrl/estop``, a
   forged state with ``estop: false`` and a large ``estop_release``, and a replayed signed state.

The collector never runs v999 (no episode of it, never received), stays stopped until the
coordinator's own release (its ``/mbrl/estop_clear`` service, the operator's command), and its
diagnostics count every rejection by reason. Then the operator's release resumes collection.
Once in simulation, once on the servo emulator through the lifecycle hardware collector
(``use_sim:=false``), where every motor's torque must also stay off while the e-stop holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("cryptography")

from ros_harness import TINY_GAME, Probe, diagnostics_of, free_domain_id  # noqa: E402

from mbrl_ros import security, wire  # noqa: E402

pytestmark = pytest.mark.ros
TASK_ID = "dclaw-turn-fixed"
ROGUE_VERSION = 999


def _rogue_onnx() -> bytes:
    import torch

    torch.set_num_threads(1)
    from mbrl_ros.core.networks import GaussianMLPPolicy
    from mbrl_ros.core.onnx_export import export_policy_onnx
    from mbrl_ros.tasks import get_task

    info = get_task(TASK_ID).info
    return export_policy_onnx(GaussianMLPPolicy(info.obs_dim, info.act_dim, [16, 16]), info, 0, ROGUE_VERSION)


def _count(d: dict, key: str) -> int:
    try:
        return int(float((d or {}).get(key, 0)))
    except (TypeError, ValueError):
        return 0


@pytest.mark.parametrize("world", ["sim", "emulator"])
def test_rogue_policy_state_and_estop_release_are_rejected(world: str, tmp_path: Path) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from std_msgs.msg import Bool, String, UInt8MultiArray
    from std_srvs.srv import Trigger

    from mbrl_ros.nodes import (
        ESTOP,
        ESTOP_CLEAR_SERVICE,
        GAME_STATE,
        POLICY_DEPLOYED,
        TRANSITIONS,
        latched_qos,
        transitions_qos,
    )

    emu = None
    extra: list[str] = []
    node = "collector_0"
    if world == "emulator":  # the lifecycle hardware collector over the Dynamixel driver, on emulated servos
        pytest.importorskip("dynamixel_sdk")
        from mbrl_ros.hardware.emulator import ServoEmulator

        emu = ServoEmulator("dclaw", physics="mujoco", realtime=True)
        extra = ["use_sim:=false", f"device_path:={emu.start()}"]
        node = "hardware_collector"
    log_dir = tmp_path / "run"
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        # a budget the test does not reach: the graph keeps playing while the rogue acts
        "/**": {"ros__parameters": {"game_overrides": TINY_GAME + ["samples=100000"], "torch_threads": 1}},
        "game_coordinator": {"ros__parameters": {"gate_probe_size": 32, "gate_model_horizon": 3, "eval_in_sim": False}},
        "hardware_collector": {"ros__parameters": {"reset_object_settle_s": 0.2, "reset_move_timeout_s": 1.5}},
    }))
    domain = free_domain_id()
    argv = [sys.executable, "-m", "mbrl_ros.cli", "launch", "pal_dclaw", f"log_dir:={log_dir}", f"config:={config}",
            f"domain_id:={domain}", "--no-progress", "--timeout", "400", *extra]
    # the launcher's output goes to a file: an unread pipe fills and blocks the launcher, which then
    # cannot stop its nodes when the test ends (they outlived earlier runs and loaded the machine)
    launcher_log = (tmp_path / "launcher.log").open("wb")
    proc = subprocess.Popen(argv, stdout=launcher_log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    probe = Probe(domain)

    def torque_off() -> bool:
        return emu is None or not any(emu.torque_enabled().values())
    rogue = security.Signer.generate()
    onnx = _rogue_onnx()
    try:
        states = probe.subscribe(String, GAME_STATE, latched_qos())
        episodes = probe.subscribe(UInt8MultiArray, TRANSITIONS, transitions_qos())
        diags = probe.subscribe(DiagnosticArray, "/diagnostics", 100)
        pub_policy = probe.publisher(UInt8MultiArray, POLICY_DEPLOYED, latched_qos())
        pub_state = probe.publisher(String, GAME_STATE, latched_qos())
        pub_estop = probe.publisher(Bool, ESTOP, latched_qos())

        def state() -> dict:
            return json.loads(states[-1][1].data) if states else {}

        def recorded() -> list[wire.EpisodeRecord]:
            return [wire.unpack_episode(wire.from_msg(m)) for _t, m in episodes]

        def collector() -> dict:
            return diagnostics_of(diags, node) or {}

        probe.spin_until(lambda: proc.poll() is None and len(recorded()) >= 3
                         and state().get("deployed_policy_version", -1) >= 1, 240,
                         "the graph collecting with a policy the coordinator deployed")
        assert "signature" in state()  # the coordinator signs its states
        old_signed = states[-1][1].data  # a real, signed state: replayed below

        # 1. an unsigned "approved" policy, and one signed by the rogue's own key
        unsigned = wire.pack_policy(onnx, task_id=TASK_ID, policy_version=ROGUE_VERSION, model_version=0, iteration=0,
                                    approved=True, published_at=time.time())
        # 2. game states that name it: unsigned, forged under the coordinator's key id, replayed
        body = {k: v for k, v in state().items() if k != "signature"}
        body.update(deployed_policy_version=ROGUE_VERSION, collect=True, estop=False)
        forged = json.loads(rogue.sign_json(json.dumps(body), "game_state"))
        forged["signature"]["key_id"] = state()["signature"]["key_id"]
        attempts = [
            ("rejected_policy_unsigned", pub_policy, wire.to_msg(unsigned)),
            ("rejected_policy_wrong_key", pub_policy, wire.to_msg(rogue.sign_record(unsigned))),
            ("rejected_game_state_unsigned", pub_state, String(data=json.dumps(body))),
            ("rejected_game_state_forged", pub_state, String(data=json.dumps(forged))),
            ("rejected_game_state_replay", pub_state, String(data=old_signed)),
        ]
        # A latched publisher keeps only its newest message (depth 1, reliable): one sent before the
        # collector read the previous replaces it on a loaded machine, so the rogue re-sends each
        # kind until the collector has counted its rejection (the collector must reject every one).
        deadline = time.monotonic() + 60
        while missing := [a for a in attempts if _count(collector(), a[0]) < 1]:
            assert time.monotonic() < deadline, f"rejections never counted: {[a[0] for a in missing]}: {collector()}"
            for _name, pub, msg in missing:
                pub.publish(msg)
                probe.spin_for(0.5)
            probe.spin_for(1.5)  # the collector's diagnostics come every second
        n_before = len(recorded())
        probe.spin_until(lambda: len(recorded()) >= n_before + 2, 120, "collection going on with the real policy")

        # 3. the rogue raises the e-stop (allowed), then tries to release it three ways
        pub_estop.publish(Bool(data=True))
        probe.spin_until(lambda: state().get("estop") is True and _count(collector(), "_level") == 2, 30,
                         "the e-stop raised by any participant")
        probe.spin_for(2.0)  # an episode running at the raise is dropped, not published
        stopped_at = len(recorded())
        pub_estop.publish(Bool(data=False))
        release = {k: v for k, v in state().items() if k != "signature"}
        release.update(estop=False, collect=True, estop_release=10**6)
        forged_release = json.loads(rogue.sign_json(json.dumps(release), "game_state"))
        forged_release["signature"]["key_id"] = state()["signature"]["key_id"]
        pub_state.publish(String(data=json.dumps(forged_release)))
        probe.spin_for(0.3)
        pub_state.publish(String(data=old_signed))
        held_until = time.monotonic() + 6.0
        while time.monotonic() < held_until:  # the robot stays limp all along
            probe.executor.spin_once(timeout_sec=0.02)
            assert torque_off(), f"torque came back during the e-stop: {emu.torque_enabled()}"
        c = collector()
        assert len(recorded()) == stopped_at, "an episode was published while the e-stop held"
        assert state()["estop"] is True and c["_level"] == 2  # the coordinator did not release either
        assert _count(c, "rejected_estop_release_unsigned") >= 1 and _count(c, "rejected_game_state_forged") >= 2
        assert _count(c, "rejected_game_state_replay") >= 2
        coord = diagnostics_of(diags, "game_coordinator") or {}
        assert _count(coord, "rejected_estop_release_unsigned") >= 1

        # the operator's release through the coordinator's service: collection resumes
        assert probe.call(Trigger, ESTOP_CLEAR_SERVICE, timeout=20).success
        probe.spin_until(lambda: len(recorded()) > stopped_at, 120, "collection after the coordinator's release")
        assert state()["estop"] is False
    finally:
        probe.close()
        if emu is not None:
            emu.stop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        launcher_log.close()
    # v999 never ran: no episode of it, the collector never took it in
    assert all(e.policy_version != ROGUE_VERSION for e in recorded())
    assert "policy v999 received" not in (log_dir / "logs" / f"{node}.log").read_text(errors="replace")
