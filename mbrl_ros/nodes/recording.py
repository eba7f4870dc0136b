"""Record topics to MCAP exactly as rosbag2 does (profile ``ros2``, ``ros2msg`` schemas, CDR data).

``rosbag2_py`` is not installable from PyPI, so :class:`McapRecorder` writes the MCAP container
itself with the ``mcap`` package: one schema per message type (the ROS 2 ``.msg`` definition
text, dependencies appended after ``===`` separators, as rosbag2 writes them), one channel per
topic, and each message as the CDR bytes rclpy serialises, so ``ros2 bag info/play`` and
Foxglove read the file. Messages are written unchunked and the file is flushed after each one:
a run killed at any moment leaves a readable file (everything but the footer), which is what
lets the model learner rebuild its buffer from it after a restart (:func:`read_messages`
tolerates a missing footer and a torn last record).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from mcap.exceptions import McapError
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap.writer import CompressionType
from mcap.writer import Writer as _McapWriter

_SEP = "\n" + "=" * 80 + "\n"

# ROS 2 message definitions of the recorded types (std_msgs, comments stripped).
MSG_DEFINITIONS: dict[str, str] = {
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


def type_name(msg: Any) -> str:
    """``std_msgs/msg/Float64`` for a message instance or class (rosbag2's type string)."""
    cls = msg if isinstance(msg, type) else type(msg)
    pkg = cls.__module__.split(".")[0]
    return f"{pkg}/msg/{cls.__name__}"


class McapRecorder:
    """Append ROS messages to one MCAP file; thread-safe; crash-tolerant (see module doc)."""

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")
        self._writer = _McapWriter(self._file, use_chunking=False, compression=CompressionType.NONE)
        self._writer.start(profile="ros2", library="mbrl_ros recording")
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.count = 0

    def write(self, topic: str, msg: Any, log_time_ns: Optional[int] = None) -> None:
        """Serialise ``msg`` (an rclpy message) to CDR and append it on ``topic``."""
        from rclpy.serialization import serialize_message

        self.write_cdr(topic, type_name(msg), serialize_message(msg), log_time_ns)

    def write_cdr(self, topic: str, datatype: str, cdr: bytes, log_time_ns: Optional[int] = None) -> None:
        if datatype not in MSG_DEFINITIONS:
            raise ValueError(f"no message definition for {datatype}; known: {', '.join(MSG_DEFINITIONS)}")
        t = time.time_ns() if log_time_ns is None else int(log_time_ns)
        with self._lock:
            if self._closed:
                return
            sid = self._schemas.get(datatype)
            if sid is None:
                sid = self._writer.register_schema(datatype, "ros2msg", MSG_DEFINITIONS[datatype].encode())
                self._schemas[datatype] = sid
            cid = self._channels.get(topic)
            if cid is None:
                cid = self._writer.register_channel(topic, "cdr", sid)
                self._channels[topic] = cid
            seq = self._seq.get(topic, 0)
            self._seq[topic] = seq + 1
            self._writer.add_message(channel_id=cid, log_time=t, data=bytes(cdr), publish_time=t, sequence=seq)
            self._file.flush()
            self.count += 1

    def close(self) -> None:
        """Write the summary and footer (a file without them is still readable here)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._writer.finish()
            finally:
                self._file.close()


def read_messages(
    path: Union[str, Path], topics: Optional[Sequence[str]] = None
) -> Iterator[tuple[str, str, bytes, int]]:
    """Yield ``(topic, datatype, cdr_bytes, log_time_ns)`` in file order.

    Works on a finished file and on one still being written or cut short by a crash: reading
    stops quietly at the first incomplete record.
    """
    schemas: dict[int, Schema] = {}
    channels: dict[int, Channel] = {}
    wanted = set(topics) if topics is not None else None
    with open(path, "rb") as f:
        reader = StreamReader(f, skip_magic=False, validate_crcs=False)
        it = iter(reader.records)
        while True:
            try:
                rec = next(it)
            except StopIteration:
                return
            except (McapError, EOFError, ValueError, OSError, Exception):  # noqa: BLE001 - torn tail
                return
            if isinstance(rec, Schema):
                schemas[rec.id] = rec
            elif isinstance(rec, Channel):
                channels[rec.id] = rec
            elif isinstance(rec, Message):
                ch = channels.get(rec.channel_id)
                if ch is None or (wanted is not None and ch.topic not in wanted):
                    continue
                sc = schemas.get(ch.schema_id)
                yield ch.topic, (sc.name if sc else ""), rec.data, rec.log_time


def read_ros_messages(path: Union[str, Path], topic: str, msg_type: Any) -> Iterator[tuple[Any, int]]:
    """Deserialise the messages of one topic with rclpy: yields ``(msg, log_time_ns)``."""
    from rclpy.serialization import deserialize_message

    for _topic, _dt, data, t in read_messages(path, [topic]):
        yield deserialize_message(data, msg_type), t
