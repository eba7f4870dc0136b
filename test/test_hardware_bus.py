"""The driver on the real dynamixel_sdk against the servo emulator on a pty: round trips, faults."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

dynamixel_sdk = pytest.importorskip("dynamixel_sdk")

from mbrl_ros.hardware import control_table as ct  # noqa: E402
from mbrl_ros.hardware.dynamixel_bus import BusReadError, DynamixelBus, MissingMotorError  # noqa: E402
from mbrl_ros.hardware.emulator import ServoEmulator, parse_fault  # noqa: E402
from mbrl_ros.hardware.robot_config import load_robot_config  # noqa: E402

CLAW_IDS = [10, 11, 12, 20, 21, 22, 30, 31, 32]


@pytest.fixture
def emu():
    e = ServoEmulator("dclaw", physics="first-order", realtime=False)
    e.start()
    yield e
    e.stop()


@pytest.fixture
def port(emu):
    ph = dynamixel_sdk.PortHandler(emu.port_path)
    assert ph.openPort()
    yield ph
    ph.closePort()


@pytest.fixture
def bus(emu):
    b = DynamixelBus(load_robot_config("dclaw", port=emu.port_path)).open()
    yield b
    b.close()


PH = dynamixel_sdk.PacketHandler(2.0)


def test_sdk_ping_read_write_round_trip(emu, port) -> None:
    model, result, error = PH.ping(port, 10)
    assert (model, result, error) == (ct.MODEL_NUMBERS["XH430-W350"], dynamixel_sdk.COMM_SUCCESS, 0)
    assert PH.ping(port, 99)[1] == dynamixel_sdk.COMM_RX_TIMEOUT  # no such motor
    # write then read back a RAM register and a 4-byte signed one
    assert PH.write1ByteTxRx(port, 11, 65, 1) == (dynamixel_sdk.COMM_SUCCESS, 0)
    assert PH.read1ByteTxRx(port, 11, 65)[0] == 1
    assert PH.write4ByteTxRx(port, 11, 116, 2100) == (dynamixel_sdk.COMM_SUCCESS, 0)
    assert PH.read4ByteTxRx(port, 11, 116)[0] == 2100
    # EEPROM is locked while torque is on; a read-only register refuses writes
    assert PH.write1ByteTxRx(port, 11, 64, 1)[1] == 0
    assert PH.write1ByteTxRx(port, 11, 11, 1)[1] == 7  # access error
    assert PH.write2ByteTxRx(port, 11, 126, 5)[1] == 7
    # reg write is held until action
    assert PH.regWriteTxRx(port, 12, 65, 1, [1]) == (dynamixel_sdk.COMM_SUCCESS, 0)
    assert PH.read1ByteTxRx(port, 12, 65)[0] == 0
    PH.action(port, dynamixel_sdk.BROADCAST_ID)
    assert PH.read1ByteTxRx(port, 12, 65)[0] == 1
    # factory reset is refused with a status error and forgets nothing
    result, error = PH.factoryReset(port, 12, 0xFF)
    assert result == dynamixel_sdk.COMM_SUCCESS and error == 1
    assert PH.read1ByteTxRx(port, 12, 7)[0] == 12 and PH.read1ByteTxRx(port, 12, 8)[0] == 3


def test_sync_and_bulk_round_trips(emu, port) -> None:
    sw = dynamixel_sdk.GroupSyncWrite(port, PH, 116, 4)
    goals = {i: 1500 + 10 * k for k, i in enumerate(CLAW_IDS)}
    for i, g in goals.items():
        sw.addParam(i, list(g.to_bytes(4, "little")))
    assert sw.txPacket() == dynamixel_sdk.COMM_SUCCESS
    sr = dynamixel_sdk.GroupSyncRead(port, PH, 116, 4)
    for i in CLAW_IDS:
        sr.addParam(i)
    assert sr.txRxPacket() == dynamixel_sdk.COMM_SUCCESS
    assert {i: sr.getData(i, 116, 4) for i in CLAW_IDS} == goals
    assert [g.raw for g in emu.goal_writes()] == list(goals.values())
    # bulk write different registers to different motors, bulk read them back
    bw = dynamixel_sdk.GroupBulkWrite(port, PH)
    assert bw.addParam(10, 65, 1, [1]) and bw.addParam(20, 116, 4, list((1800).to_bytes(4, "little")))
    assert bw.txPacket() == dynamixel_sdk.COMM_SUCCESS
    br = dynamixel_sdk.GroupBulkRead(port, PH)
    br.addParam(10, 65, 1)
    br.addParam(20, 116, 4)
    br.addParam(50, 7, 1)
    assert br.txRxPacket() == dynamixel_sdk.COMM_SUCCESS
    assert (br.getData(10, 65, 1), br.getData(20, 116, 4), br.getData(50, 7, 1)) == (1, 1800, 50)


def test_reboot_clears_a_hardware_error_and_torque_drops(bus, emu) -> None:
    bus.enable_torque()
    emu.inject("hardware_error", [21], errors=["overload", "overheating"])
    assert emu.torque_enabled()[21] is False  # shutdown bits drop torque, as a real servo does
    state = bus.read_state()
    assert state.alerts == (21,)  # status packets carry the alert bit
    assert bus.read_hardware_errors() == {21: ["overheating", "overload"]}
    with pytest.raises(Exception, match="torque on of ID 21"):
        bus.enable_torque([21])  # refused until a reboot
    bus.reboot(21)
    assert bus.read_hardware_errors() == {} and bus.read_state().alerts == ()
    bus.enable_torque([21])
    assert emu.torque_enabled()[21] is True


def test_calibrated_state_matches_the_simulated_joints(bus, emu) -> None:
    bus.enable_torque()
    target = np.array([0.3, -0.5, 0.9, -0.2, 0.0, 1.2, 0.1, -1.0, 0.4])
    bus.write_goal_positions(target)
    bus.read_state()  # a round trip: the emulator has handled the (reply-less) sync write
    emu.advance(1.0)
    state = bus.read_state()
    unit = ct.POSITION_RAD_PER_UNIT
    np.testing.assert_allclose(state.position, emu.joint_positions(), atol=unit)
    np.testing.assert_allclose(state.position, target, atol=2 * unit)
    assert state.object_position == pytest.approx(emu.object_angle(), abs=unit)
    # goals were converted with the calibration: the record holds raw and the joint angle
    last = {g.dxl_id: g for g in emu.goal_writes()}
    assert last[10].raw == round((0.3 + math.pi / 2) / unit) and last[10].rad == pytest.approx(0.3, abs=unit)


def test_bulk_read_mode_reads_the_same_state(emu) -> None:
    cfg = load_robot_config("dclaw", port=emu.port_path, read_mode="bulk")
    with DynamixelBus(cfg) as b:
        s = b.read_state()
    np.testing.assert_allclose(s.position, emu.joint_positions(), atol=ct.POSITION_RAD_PER_UNIT)


def test_missing_motors_are_named_at_open(emu) -> None:
    emu.inject("no_response", [21, 50])
    with pytest.raises(MissingMotorError, match="ID 21, 50") as info:
        DynamixelBus(load_robot_config("dclaw", port=emu.port_path, latency_timer_ms=2)).open()
    assert info.value.missing == (21, 50)


@pytest.mark.parametrize("fault", ["no-response:31", "crc:31", "drop:1.0", "delay:0.05"])
def test_a_failed_read_never_invents_data(bus, emu, fault) -> None:
    good = bus.read_state()
    kind, kwargs = parse_fault(fault)
    emu.inject(kind, **kwargs)
    with pytest.raises(BusReadError) as info:
        bus.read_state()
    if fault != "drop:1.0" and fault != "delay:0.05":
        assert info.value.dxl_id == 31
    assert bus.stats.read_failures == 1
    emu.clear_faults()
    time.sleep(0.06)  # let a delayed reply arrive and be flushed by the next transaction
    np.testing.assert_allclose(bus.read_state().position, good.position)


def test_a_short_delay_is_within_the_packet_timeout(bus, emu) -> None:
    emu.inject("delay", seconds=0.005)  # the timeout is 2 * 16 ms + 2 ms + wire time
    assert bus.read_state().position.shape == (9,)


def test_wrong_baud_rate_gets_no_answer(emu) -> None:
    cfg = load_robot_config("dclaw", port=emu.port_path, baud=57600, latency_timer_ms=2)
    with pytest.raises(MissingMotorError):
        DynamixelBus(cfg).open()


def test_close_turns_torque_off(emu) -> None:
    b = DynamixelBus(load_robot_config("dclaw", port=emu.port_path)).open()
    b.enable_torque()
    assert all(emu.torque_enabled()[i] for i in CLAW_IDS)
    b.close()
    # the broadcast torque-off has no reply: give the emulator a moment to handle it
    deadline = time.monotonic() + 1.0
    while any(emu.torque_enabled().values()) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not any(emu.torque_enabled().values())


def test_torque_goes_off_when_the_process_exits_without_close(emu) -> None:
    import subprocess
    import sys

    code = (
        "from mbrl_ros.hardware.dynamixel_bus import DynamixelBus\n"
        "from mbrl_ros.hardware.robot_config import load_robot_config\n"
        f"b = DynamixelBus(load_robot_config('dclaw', port={emu.port_path!r})).open()\n"
        "b.enable_torque()\n"
        "print('on', flush=True)\n"  # exits without close(): the atexit handler must turn torque off
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "on", out.stderr
    deadline = time.monotonic() + 1.0
    while any(emu.torque_enabled().values()) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert not any(emu.torque_enabled().values())


def test_mbrl_ros_emulate_serves_a_pty_with_faults() -> None:
    import signal
    import subprocess
    import sys
    import tempfile

    cmd = [sys.executable, "-m", "mbrl_ros.cli", "emulate", "--robot", "dclaw", "--physics", "first-order",
           "--fault", "no-response:21"]
    err = tempfile.TemporaryFile(mode="w+")  # where a hung exit would report its threads' stacks
    # started with SIGINT ignored (as a script's background job starts it): Ctrl-C still stops it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        port = proc.stdout.readline().strip()
        assert port.startswith("/dev/pts/"), port
        with pytest.raises(MissingMotorError) as info:
            DynamixelBus(load_robot_config("dclaw", port=port)).open()
        assert info.value.missing == (21,)
    finally:
        proc.send_signal(signal.SIGINT)
        # a clean exit (0) after Ctrl-C; generous: the emulator's threads join within 2 s each, but a
        # loaded CI machine can starve the process for several seconds
        try:
            code = proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave the emulator running after a failed test
            proc.wait()
            raise
        err.seek(0)
        assert code == 0, f"the emulator's exit after Ctrl-C: code {code}; stderr:\n{err.read()[-4000:]}"
    bad = subprocess.run(cmd[:-2] + ["--fault", "melt:3"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "bad fault spec" in bad.stderr
