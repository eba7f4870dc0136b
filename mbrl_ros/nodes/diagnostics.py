"""Monitoring helpers: ``/diagnostics`` status and plottable ``std_msgs/Float64`` metric topics.

``diagnostic_updater`` is not installable from PyPI, so :class:`DiagnosticsPublisher` is the
small part of it we need: one ``DiagnosticStatus`` per node (name ``mbrl_ros/<node>``) with
key/value pairs (counters, rates, versions, buffer sizes, rejected messages per reason, limit
hits, loop jitter) and a level that is WARN for a while after something was rejected and ERROR
while a fault is set. rqt_robot_monitor and ``mbrl-ros monitor`` read it.

:class:`MetricPublisher` publishes scalars on ``/mbrl/metrics/<name>`` (rqt_plot, Foxglove)
and hands every value to an optional recorder (the coordinator writes them to MCAP).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Float64

from mbrl_ros.nodes import DIAGNOSTICS, METRICS_PREFIX, metrics_qos

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


class DiagnosticsPublisher:
    """One node's health on ``/diagnostics``, published every ``period_s`` and on demand."""

    def __init__(self, node, period_s: float = 1.0, hardware_id: str = "", warn_hold_s: float = 10.0) -> None:
        self._node = node
        self._pub = node.create_publisher(DiagnosticArray, DIAGNOSTICS, 10)
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._counters: dict[str, int] = {}
        self._rates: dict[str, tuple[int, float, float]] = {}  # key -> (count at t0, t0, last rate)
        self._warn: tuple[str, float] = ("", 0.0)
        self._fault = ""
        self._message = "ok"
        self.hardware_id = hardware_id
        self.warn_hold_s = warn_hold_s
        self._timer = node.create_timer(period_s, self.publish)

    # -- updates (thread-safe) ----------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        with self._lock:
            self._values[key] = value

    def inc(self, key: str, n: int = 1) -> int:
        with self._lock:
            self._counters[key] = self._counters.get(key, 0) + n
            return self._counters[key]

    def count(self, key: str) -> int:
        with self._lock:
            return self._counters.get(key, 0)

    def track_rate(self, key: str) -> None:
        """Report ``<key>_per_s`` computed from the counter ``key`` between two publications."""
        with self._lock:
            self._rates.setdefault(key, (self._counters.get(key, 0), time.monotonic(), 0.0))

    def status_message(self, message: str) -> None:
        """The one-line summary shown when nothing is wrong."""
        with self._lock:
            self._message = message

    def warn(self, message: str) -> None:
        """WARN for ``warn_hold_s`` seconds (a rejected message, a refused result)."""
        with self._lock:
            self._warn = (message, time.monotonic() + self.warn_hold_s)
        self.publish()

    def fault(self, message: str) -> None:
        """ERROR until :meth:`clear_fault` (e-stop, hardware fault)."""
        with self._lock:
            self._fault = message
        self.publish()

    def clear_fault(self) -> None:
        with self._lock:
            self._fault = ""
        self.publish()

    # -- publication --------------------------------------------------------------------
    def status(self) -> DiagnosticStatus:
        now = time.monotonic()
        with self._lock:
            if self._fault:
                level, message = ERROR, self._fault
            elif self._warn[0] and now < self._warn[1]:
                level, message = WARN, self._warn[0]
            else:
                level, message = OK, self._message
            values = dict(self._values)
            values.update(self._counters)
            for key, (c0, t0, last) in list(self._rates.items()):
                c = self._counters.get(key, 0)
                dt = now - t0
                rate = (c - c0) / dt if dt >= 0.5 else last
                if dt >= 0.5:
                    self._rates[key] = (c, now, rate)
                values[f"{key}_per_s"] = round(rate, 3)
        st = DiagnosticStatus()
        st.level = level
        st.name = f"mbrl_ros/{self._node.get_name()}"
        st.message = str(message)[:500]
        st.hardware_id = self.hardware_id
        st.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in sorted(values.items())]
        return st

    def publish(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self._node.get_clock().now().to_msg()
        msg.status = [self.status()]
        try:
            self._pub.publish(msg)
        except Exception:  # noqa: BLE001 - the context may already be shut down at exit
            pass


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


class MetricPublisher:
    """Scalars on ``/mbrl/metrics/<name>`` (one Float64 topic each, created on first use)."""

    def __init__(self, node, recorder: Optional[Callable[[str, Any], None]] = None) -> None:
        self._node = node
        self._pubs: dict[str, Any] = {}
        self._recorder = recorder
        self._lock = threading.Lock()

    def topic(self, name: str) -> str:
        return METRICS_PREFIX + name

    def publish(self, name: str, value: float) -> None:
        with self._lock:
            pub = self._pubs.get(name)
            if pub is None:
                pub = self._node.create_publisher(Float64, self.topic(name), metrics_qos())
                self._pubs[name] = pub
        msg = Float64()
        msg.data = float(value)
        pub.publish(msg)
        if self._recorder is not None:
            self._recorder(self.topic(name), msg)
