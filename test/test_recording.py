"""The MCAP recorder's message definitions, without DDS: real messages serialised by rclpy, written
by :class:`McapRecorder`, read back by ``mcap_ros2``'s decoder (which builds its CDR reader from
the recorded ``ros2msg`` schema text alone, so equal field values prove that the definitions match
the bytes), and the refusal of a type that is not installed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from mbrl_ros.nodes import recording  # noqa: E402

_SEP = "\n" + "=" * 80 + "\n"

# The std_msgs definitions the recorder wrote before they were built from the installed .msg files
FORMER_DEFINITIONS = {
    "std_msgs/msg/UInt8MultiArray": (
        "MultiArrayLayout layout\nuint8[] data"
        + _SEP
        + "MSG: std_msgs/MultiArrayLayout\nMultiArrayDimension[] dim\nuint32 data_offset"
        + _SEP
        + "MSG: std_msgs/MultiArrayDimension\nstring label\nuint32 size\nuint32 stride"
    ),
    "std_msgs/msg/Float64": "float64 data",
    "std_msgs/msg/String": "string data",
    "std_msgs/msg/Bool": "bool data",
}


def _decoded(path: Path) -> dict[str, list]:
    """topic -> decoded messages (``mcap_ros2``: schema text in, objects out)."""
    pytest.importorskip("mcap_ros2")
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for _schema, channel, _message, decoded in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append(decoded)
    return out


def test_std_msgs_definitions_are_unchanged():
    for datatype, text in FORMER_DEFINITIONS.items():
        assert recording.message_definition(datatype) == text
    # the dependency blocks are rosbag2's: 80 '=' and "MSG: pkg/Name", each type once
    marker = recording.message_definition("visualization_msgs/msg/MarkerArray")
    names = re.findall(r"^MSG: (\S+)$", marker, flags=re.M)
    assert len(names) == len(set(names)) and {"visualization_msgs/Marker", "std_msgs/Header",
                                                "builtin_interfaces/Time", "geometry_msgs/Pose"} <= set(names)
    assert "#" not in marker and "\n\n" not in marker  # comments and blank lines stripped
    assert recording.message_definition("sensor_msgs/JointState") == recording.message_definition(
        "sensor_msgs/msg/JointState")


def test_recorded_messages_decode_from_the_schema_alone(tmp_path: Path):
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64, String, UInt8MultiArray
    from visualization_msgs.msg import Marker, MarkerArray

    js = JointState()
    js.header.stamp = Time(sec=12, nanosec=345)
    js.header.frame_id = "world"
    js.name = ["FFJ10", "valve_OBJRx"]
    js.position = [0.25, -1.5]
    js.velocity = [0.5, 0.0]

    m = Marker()
    m.header.frame_id = "world"
    m.ns, m.id, m.type, m.action = "target", 1, Marker.TEXT_VIEW_FACING, Marker.ADD
    m.pose.position.x, m.pose.position.z = 0.1, 0.3
    m.pose.orientation.z, m.pose.orientation.w = 0.6, 0.8
    m.scale.z = 0.02
    m.color.r, m.color.a = 1.0, 0.5
    m.text = "target error +0.05 rad"
    m.lifetime.sec = 3
    ma = MarkerArray(markers=[m])

    diag = DiagnosticArray()
    diag.header.stamp = Time(sec=7, nanosec=0)
    diag.status = [DiagnosticStatus(level=DiagnosticStatus.WARN, name="mbrl_ros/collector_0", message="late",
                                    hardware_id="sim0", values=[KeyValue(key="steps", value="40")])]

    urdf = String(data='<robot name="dclaw"><link name="world"/></robot>')
    pose = PoseWithCovarianceStamped()  # a fixed-size array
    pose.pose.covariance[7] = 2.5
    desc = ParameterDescriptor(name="p", read_only=True,  # a bounded array of a same-package type
                               floating_point_range=[FloatingPointRange(from_value=-1.0, to_value=2.0, step=0.5)])
    blob = UInt8MultiArray(data=bytes([1, 2, 3]))

    path = tmp_path / "record.mcap"
    rec = recording.McapRecorder(path)
    rec.write("/robot_description", urdf)
    rec.write("/mbrl/sim0/urdf_joint_states", js)
    rec.write("/mbrl/sim0/markers", ma)
    rec.write("/diagnostics", diag)
    rec.write("/pose", pose)
    rec.write("/descriptor", desc)
    rec.write("/mbrl/transitions", blob)
    rec.write("/mbrl/metrics/eval_success", Float64(data=0.75))
    rec.close()

    got = _decoded(path)
    assert got["/robot_description"][0].data == urdf.data
    j = got["/mbrl/sim0/urdf_joint_states"][0]
    assert (j.header.stamp.sec, j.header.stamp.nanosec, j.header.frame_id) == (12, 345, "world")
    assert list(j.name) == ["FFJ10", "valve_OBJRx"]
    assert list(j.position) == [0.25, -1.5] and list(j.velocity) == [0.5, 0.0] and list(j.effort) == []
    (mk,) = got["/mbrl/sim0/markers"][0].markers
    assert (mk.header.frame_id, mk.ns, mk.id, mk.type, mk.action) == ("world", "target", 1, Marker.TEXT_VIEW_FACING,
                                                                      Marker.ADD)
    assert (mk.pose.position.x, mk.pose.position.z, mk.pose.orientation.z, mk.pose.orientation.w) == (0.1, 0.3, 0.6,
                                                                                                    0.8)
    assert (mk.scale.z, mk.color.r, mk.color.a, mk.text, mk.lifetime.sec) == (0.02, 1.0, 0.5, m.text, 3)
    assert mk.color.a == pytest.approx(0.5) and not mk.frame_locked and list(mk.points) == []
    (st,) = got["/diagnostics"][0].status
    assert got["/diagnostics"][0].header.stamp.sec == 7
    assert (st.level, st.name, st.message, st.hardware_id) == (1, "mbrl_ros/collector_0", "late", "sim0")  # byte WARN
    assert [(kv.key, kv.value) for kv in st.values] == [("steps", "40")]
    cov = list(got["/pose"][0].pose.covariance)
    assert len(cov) == 36 and cov[7] == 2.5 and sum(cov) == 2.5
    (fr,) = got["/descriptor"][0].floating_point_range
    assert got["/descriptor"][0].read_only and (fr.from_value, fr.to_value, fr.step) == (-1.0, 2.0, 0.5)
    assert bytes(got["/mbrl/transitions"][0].data) == bytes([1, 2, 3])
    assert got["/mbrl/metrics/eval_success"][0].data == 0.75
    # and this module's own reader still reads the same file
    assert [t for t, *_ in recording.read_messages(path)][:2] == ["/robot_description", "/mbrl/sim0/urdf_joint_states"]


def test_an_unknown_type_is_refused_with_a_clear_error(tmp_path: Path):
    rec = recording.McapRecorder(tmp_path / "record.mcap")
    with pytest.raises(ValueError, match=r"no message definition for nonexistent_msgs/msg/Foo: .*Foo\.msg is not "
                                         r"installed under .*share"):
        rec.write_cdr("/x", "nonexistent_msgs/msg/Foo", b"\x00\x01\x00\x00")
    with pytest.raises(ValueError, match="no message definition for std_msgs/msg/NoSuchType"):
        rec.write_cdr("/x", "std_msgs/msg/NoSuchType", b"")
    with pytest.raises(ValueError, match="is not a ROS message type"):
        rec.write_cdr("/x", "Foo", b"")
    rec.write("/ok", __import__("std_msgs.msg", fromlist=["Bool"]).Bool(data=True))
    rec.close()
    assert rec.count == 1 and [t for t, *_ in recording.read_messages(rec.path)] == ["/ok"]


def test_visual_topics_are_the_ones_the_collectors_publish():
    from mbrl_ros.nodes import DIAGNOSTICS, joint_states_topic
    from mbrl_ros.nodes.visualization import ROBOT_DESCRIPTION, markers_topic, urdf_joint_states_topic

    def wanted(topic: str) -> bool:
        return any(re.fullmatch(p, topic) for p in recording.VISUAL_TOPICS)

    for robot_id in ("sim0", "sim12", "dclaw"):
        assert wanted(urdf_joint_states_topic(robot_id)) and wanted(markers_topic(robot_id))
        assert not wanted(joint_states_topic(robot_id))  # the servos' joint states are not the URDF's
    assert wanted(ROBOT_DESCRIPTION) and wanted(DIAGNOSTICS)
    assert not any(wanted(t) for t in ("/diagnostics_agg", "/mbrl/a/b/markers", "/mbrl/transitions",
                                       "/robot_description/extra"))
