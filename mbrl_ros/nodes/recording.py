"""Record topics to MCAP exactly as rosbag2 does (profile ``ros2``, ``ros2msg`` schemas, CDR data).

``rosbag2_py`` is not installable from PyPI, so :class:`McapRecorder` writes the MCAP container
itself with the ``mcap`` package: one schema per message type (:func:`message_definition`: the
type's ``.msg`` text from its installed share directory, comments stripped, every type it uses
appended after ``===`` separators, as rosbag2 writes them; any installed message type), one
channel per topic, and each message as the CDR bytes rclpy serialises, so ``ros2 bag info/play``
and Foxglove read the file. :class:`TopicRecorder` adds the topics of a running graph that match
a pattern (the robot's view for Foxglove: :data:`VISUAL_TOPICS`), subscribed raw. Messages are
written unchunked and the file is flushed after each one: a run killed at any moment leaves a
readable file (everything but the footer), which is what lets the model learner rebuild its
buffer from it after a restart (:func:`read_messages` tolerates a missing footer and a torn last
record).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import sys
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

# ROS 2 primitive types of a .msg field (``string<=N`` is a bounded string; ``[]``, ``[N]``,
# ``[<=N]`` make arrays of any type)
PRIMITIVE_TYPES = frozenset(
    (
        "bool",
        "byte",
        "char",
        "float32",
        "float64",
        "int8",
        "uint8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "string",
        "wstring",
    )
)


_IDENT = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def type_name(msg: Any) -> str:
    """``std_msgs/msg/Float64`` for a message instance or class (rosbag2's type string)."""
    cls = msg if isinstance(msg, type) else type(msg)
    pkg = cls.__module__.split(".")[0]
    return f"{pkg}/msg/{cls.__name__}"


def split_type(datatype: str, context_package: str = "") -> tuple[str, str]:
    """``pkg/msg/Name``, ``pkg/Name`` or (with ``context_package``) ``Name`` -> ``(pkg, Name)``."""
    parts = str(datatype).strip().split("/")
    if len(parts) == 3 and parts[1] == "msg":
        pkg, name = parts[0], parts[2]
    elif len(parts) == 2:
        pkg, name = parts
    elif len(parts) == 1 and context_package:
        pkg, name = context_package, parts[0]
    else:
        pkg = name = ""
    if not (_IDENT.match(pkg) and _IDENT.match(name)):
        raise ValueError(f"{datatype!r} is not a ROS message type (pkg/msg/Name)")
    return pkg, name


def share_directories(package: str = "") -> list[Path]:
    """Where installed ``.msg`` files are looked for, in order: the prefix of ``package``'s Python
    module (the definitions of the very code that serialises the messages), ``sys.prefix/share``
    (the PyPI ROS wheels install ``<venv>/share/<pkg>/msg/<Name>.msg``), then every
    ``AMENT_PREFIX_PATH`` entry's ``share`` (a sourced ROS 2 install or workspace)."""
    roots: list[Path] = []
    if package:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        if origin:  # <prefix>/lib/pythonX.Y/site-packages/<pkg>/__init__.py
            parents = Path(origin).absolute().parents  # (not resolved: a symlink install keeps its prefix)
            if len(parents) > 4:
                roots.append(parents[4] / "share")
    roots.append(Path(sys.prefix) / "share")
    for entry in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if entry.strip():
            roots.append(Path(entry.strip()) / "share")
    return list(dict.fromkeys(roots))


def _msg_file(pkg: str, name: str) -> Path:
    roots = share_directories(pkg)
    for root in roots:
        path = root / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    raise ValueError(
        f"no message definition for {pkg}/msg/{name}: {pkg}/msg/{name}.msg is not installed under "
        f"{', '.join(str(r) for r in roots)} (is the package installed, or AMENT_PREFIX_PATH set?)"
    )


@functools.lru_cache(maxsize=None)
def _parse_msg(pkg: str, name: str) -> tuple[str, tuple[str, ...]]:
    """The ``.msg`` text of ``pkg/Name`` without comments and blank lines (one space between a field's
    type and name), and the ``pkg/Name`` of every non-primitive field type, sorted."""
    path = _msg_file(pkg, name)
    lines: list[str] = []
    deps: set[str] = set()
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.replace("\t", " ").split("#", 1)[0].strip()  # rosidl: '#' starts a comment anywhere
        if not line:
            continue
        ftype, _, rest = line.partition(" ")
        rest = rest.strip()
        if not rest:
            raise ValueError(f"{path}: malformed line {raw!r}")
        if "=" in rest:  # a constant (always of a primitive type)
            cname, _, value = rest.partition("=")
            lines.append(f"{ftype} {cname.strip()}={value.strip()}")
            continue
        fname, _, default = rest.partition(" ")
        lines.append(f"{ftype} {fname}" + (f" {default.strip()}" if default.strip() else ""))
        base = ftype.split("[", 1)[0].split("<=", 1)[0]  # Name[], Name[3], Name[<=3]; string<=10
        if base not in PRIMITIVE_TYPES:
            dep_pkg, dep_name = split_type(base, context_package=pkg)
            deps.add(f"{dep_pkg}/{dep_name}")
    return "\n".join(lines), tuple(sorted(deps))


@functools.lru_cache(maxsize=None)
def message_definition(datatype: str) -> str:
    """The ``ros2msg`` schema of ``datatype`` (``pkg/msg/Name``) as rosbag2 writes it: the type's
    ``.msg`` text from its installed share directory (comments stripped), then every type it uses,
    recursively and once each (depth first, sorted per message), each after a line of 80 ``=`` and
    a line ``MSG: pkg/Name``. ``ValueError`` names a type that is not installed."""
    pkg, name = split_type(datatype)
    seen = {f"{pkg}/{name}"}
    text, deps = _parse_msg(pkg, name)
    parts = [text]

    def append(dependencies: tuple[str, ...], needed_by: str) -> None:
        for dep in dependencies:
            if dep in seen:
                continue
            seen.add(dep)
            dep_pkg, dep_name = dep.split("/")
            try:
                dep_text, dep_deps = _parse_msg(dep_pkg, dep_name)
            except ValueError as exc:
                raise ValueError(f"{exc} (needed by {needed_by})") from None
            parts.append(_SEP + f"MSG: {dep}\n" + dep_text)
            append(dep_deps, dep)

    append(deps, f"{pkg}/{name}")
    return "".join(parts)


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
        definition = message_definition(datatype)  # cached; ValueError for a type that is not installed
        t = time.time_ns() if log_time_ns is None else int(log_time_ns)
        with self._lock:
            if self._closed:
                return
            sid = self._schemas.get(datatype)
            if sid is None:
                sid = self._writer.register_schema(datatype, "ros2msg", definition.encode())
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


# The topics that replay the robot in Foxglove (config/foxglove_mbrl.json) from a run's record
VISUAL_TOPICS: tuple[str, ...] = (
    r"/robot_description",
    r"/mbrl/[^/]+/urdf_joint_states",
    r"/mbrl/[^/]+/markers",
    r"/diagnostics",
)


class TopicRecorder:
    """Record every topic whose name fully matches one of ``patterns`` (regular expressions) into
    ``recorder``, as ``ros2 bag record --regex`` would.

    Every ``period_s`` the graph is searched for new matching topics (``get_topic_names_and_types``,
    tens of microseconds a call: frequent enough that a fast simulated episode is rarely missed);
    a topic is subscribed once it has a publisher, with that publisher's reliability and durability
    (a latched ``/robot_description`` or marker array still arrives when it was published before the
    subscription; a best-effort joint-state stream is matched), and raw: the CDR bytes go to
    :meth:`McapRecorder.write_cdr` without being deserialised. The timer and the subscriptions share
    their own callback group. A topic of a type without an installed definition (or of several types)
    is skipped with one warning."""

    def __init__(
        self,
        node: Any,
        recorder: McapRecorder,
        patterns: Sequence[str] = VISUAL_TOPICS,
        period_s: float = 0.25,
        depth: int = 100,
    ) -> None:
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

        self.node = node
        self.recorder = recorder
        self.patterns = [re.compile(p) for p in patterns]
        self.depth = int(depth)
        self.group = MutuallyExclusiveCallbackGroup()
        self.topics: dict[str, str] = {}  # recorded topic -> type
        self.counts: dict[str, int] = {}
        self._subs: list[Any] = []
        self._skipped: set[str] = set()
        self._lock = threading.Lock()
        self.discover()
        self._timer = node.create_timer(float(period_s), self.discover, callback_group=self.group)

    def wanted(self, topic: str) -> bool:
        return any(p.fullmatch(topic) for p in self.patterns)

    def discover(self) -> None:
        """Subscribe to the matching topics that appeared since the last call."""
        try:
            found = self.node.get_topic_names_and_types()
        except Exception:  # noqa: BLE001 - the node is shutting down
            return
        for topic, types in found:
            if topic in self.topics or topic in self._skipped or not self.wanted(topic):
                continue
            if len(types) != 1:
                self._skip(topic, f"it has {len(types)} types ({', '.join(types)})")
                continue
            datatype = types[0]
            try:
                msg_type = _message_class(datatype)
                message_definition(datatype)
            except (ImportError, AttributeError, ValueError) as exc:
                self._skip(topic, str(exc))
                continue
            qos = self._publisher_qos(topic)
            if qos is None:  # no publisher yet (a subscriber made the topic known): look again later
                continue
            sub = self.node.create_subscription(
                msg_type,
                topic,
                functools.partial(self._on_message, topic, datatype),
                qos,
                callback_group=self.group,
                raw=True,
            )
            self._subs.append(sub)
            self.topics[topic] = datatype
            self.node.get_logger().info(f"recording {topic} ({datatype})")

    def _skip(self, topic: str, why: str) -> None:
        self._skipped.add(topic)
        self.node.get_logger().warning(f"not recording {topic}: {why}")

    def _publisher_qos(self, topic: str) -> Any:
        """Reliable / transient local when every publisher offers it, else best effort / volatile
        (what every publisher is compatible with); ``None`` without a publisher."""
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        infos = self.node.get_publishers_info_by_topic(topic)
        if not infos:
            return None
        reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
        latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        return QoSProfile(
            depth=self.depth,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )

    def _on_message(self, topic: str, datatype: str, data: bytes) -> None:
        self.recorder.write_cdr(topic, datatype, data)
        with self._lock:
            self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        """Stop discovering and drop the subscriptions."""
        self._timer.cancel()
        for sub in self._subs:
            try:
                self.node.destroy_subscription(sub)
            except Exception:  # noqa: BLE001 - the node is already being destroyed
                pass
        self._subs.clear()


def _message_class(datatype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Name`` (``ImportError``/``AttributeError`` when absent)."""
    pkg, name = split_type(datatype)
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


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
