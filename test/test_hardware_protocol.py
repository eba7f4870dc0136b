"""Protocol 2.0 packets, control-table decoding, calibration and configuration (no serial port)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from mbrl_ros.hardware import control_table as ct
from mbrl_ros.hardware import protocol as p
from mbrl_ros.hardware.robot_config import load_robot_config, parse_angle, robot_config_from_dict
from mbrl_ros.hardware.safety import SafetyConfig, Severity


def test_crc_matches_manual_examples_and_the_sdk_table() -> None:
    # ROBOTIS e-Manual examples: ping ID 1, and read 4 bytes at 132 from ID 1.
    assert p.encode_packet(1, p.PING) == bytes.fromhex("fffffd0001030001194e")
    assert p.encode_packet(1, p.READ, bytes([0x84, 0, 4, 0])) == bytes.fromhex("fffffd000107000284000400 1d15".replace(" ", ""))
    import dynamixel_sdk

    ph = dynamixel_sdk.PacketHandler(2.0)
    data = os.urandom(300)
    assert p.crc16(data) == ph.updateCRC(0, list(data), len(data))


def test_byte_stuffing_round_trip_and_length_field() -> None:
    params = bytes([0xFF, 0xFF, 0xFD, 0x01, 0xFF, 0xFF, 0xFD])
    raw = p.encode_packet(7, p.WRITE, params)
    body = raw[7:-2]
    assert body.count(bytes([0xFF, 0xFF, 0xFD, 0xFD])) == 2  # both occurrences stuffed
    assert (raw[5] | raw[6] << 8) == len(body) + 2  # length counts the stuffed bytes
    pkt = p.decode_packet(raw)
    assert pkt.crc_ok and pkt.dxl_id == 7 and pkt.instruction == p.WRITE and pkt.params == params
    assert p.unstuff(p.stuff(params)) == params


def test_parser_resynchronises_and_flags_bad_crc() -> None:
    good = p.encode_status(3, 0, b"\x01\x02")
    bad = bytearray(p.encode_status(4, 0, b"\x09"))
    bad[-1] ^= 0xFF
    parser = p.PacketParser()
    stream = b"\x00\x13\xff" + good + bytes(bad) + good[:5]
    pkts = parser.feed(stream)
    assert [(q.dxl_id, q.crc_ok) for q in pkts] == [(3, True), (4, False)]
    assert pkts[0].params == b"\x00\x01\x02" and parser.crc_errors == 1
    assert parser.feed(good[5:])[0].dxl_id == 3  # the split packet completes


def test_hardware_error_bits_decode_to_names() -> None:
    assert ct.decode_hardware_error(0) == []
    assert ct.decode_hardware_error(0b0010_0101) == ["input_voltage", "overheating", "overload"]
    assert ct.decode_hardware_error(1 << 3 | 1 << 4) == ["motor_encoder", "electrical_shock"]
    assert ct.encode_hardware_error(["overload", "overheating"]) == 0b0010_0100
    with pytest.raises(ValueError):
        ct.encode_hardware_error(["melted"])
    assert ct.to_signed(0xFFFFFFFF, 4) == -1 and ct.to_signed(0x7FFF, 2) == 32767


def test_angles_and_calibration_follow_robel() -> None:
    assert parse_angle("-pi/2") == pytest.approx(-math.pi / 2)
    assert parse_angle("-3pi/2") == pytest.approx(-1.5 * math.pi)
    assert parse_angle("1.5*pi") == pytest.approx(1.5 * math.pi)
    with pytest.raises(ValueError):
        parse_angle("__import__('os')")
    claw = load_robot_config("dclaw")
    assert claw.joint_ids == (10, 11, 12, 20, 21, 22, 30, 31, 32) and claw.object_motor.dxl_id == 50
    top = claw.motor(10)
    assert top.offset == pytest.approx(-math.pi / 2)
    # q = scale * raw * 2pi/4096 + offset: raw 1024 on a top joint is 0 rad
    assert claw.raw_to_rad(top, 1024) == pytest.approx(0.0)
    kitty = load_robot_config("dkitty")
    fr_knee = kitty.motor(11)  # mirrored: scale -1, offset pi
    for q in (-1.0, 0.0, 0.7):
        assert kitty.raw_to_rad(fr_knee, kitty.rad_to_raw(fr_knee, q)) == pytest.approx(q, abs=ct.POSITION_RAD_PER_UNIT)
    assert kitty.raw_to_rad_s(fr_knee, 10) == pytest.approx(-10 * 0.229 * 2 * math.pi / 60)


def test_bad_configs_are_refused_with_clear_errors() -> None:
    base = {"robot": "dclaw", "joints": [{"name": "a", "id": 1}]}
    with pytest.raises(ValueError, match="baud"):
        robot_config_from_dict({**base, "baud": 12345})
    with pytest.raises(ValueError, match="duplicate"):
        robot_config_from_dict({**base, "joints": [{"name": "a", "id": 1}, {"name": "b", "id": 1}]})
    with pytest.raises(ValueError, match="unknown keys"):
        robot_config_from_dict({**base, "colour": "red"})
    with pytest.raises(ValueError, match="severity"):
        SafetyConfig.from_dict({"severity": {"velocity": "panic"}})
    with pytest.raises(ValueError, match="watchdog_torque_off_s"):
        SafetyConfig.from_dict({"watchdog_hold_s": 1.0, "watchdog_torque_off_s": 0.5})
    cfg = SafetyConfig.from_dict(load_robot_config("dclaw").safety, severity={"current": "warn"})
    assert cfg.severity["current"] is Severity.WARN and cfg.severity["velocity"] is Severity.ABORT


def test_every_goal_passes_the_final_clamp_without_a_port() -> None:
    from mbrl_ros.hardware.dynamixel_bus import DynamixelBus

    bus = DynamixelBus(load_robot_config("dclaw", port="/nonexistent"))
    out = bus.clamp(np.array([9.0, -9.0, 0.1, 0, 0, 0, 0, 0, 0]))
    assert out[0] == pytest.approx(1.35) and out[1] == pytest.approx(-2.0) and out[2] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="non-finite"):
        bus.clamp(np.array([np.nan] + [0.0] * 8))
