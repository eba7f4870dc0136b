"""Asking again for a latched message that never arrived (a NACK for one version).

The deployed policy and the model travel once, on latched topics of depth 1 (``latched_qos``).
On a keyless topic a depth-1 reader keeps one sample for *all* writers, so a message from
any other participant that arrives before the reader took the real one replaces it (found on
the rogue test: a rogue's policy v999 displaced the coordinator's newly deployed policy, and the
collector waited for it forever). A lost sample also has no other second chance: the game
state repeats every second, a policy or a model never does.

So the consumer that has waited ``after_s`` for the version the game names asks for it on a
resend topic (``std_msgs/UInt32``: the version), every ``after_s`` while it is still missing,
and the node that published that version sends the same message again, at most once per
``min_interval_s`` (anyone may ask: the answer is the producer's own, already signed
message, and the rate limit keeps a flood of requests from becoming a flood of answers).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

from std_msgs.msg import UInt32

from mbrl_ros.nodes import resend_qos


class ResendRequester:
    """The consumer's side: :meth:`missing` while the wanted version is not here (from any thread)."""

    def __init__(self, node: Any, topic: str, what: str, after_s: float, diag: Any) -> None:
        self._node, self._what, self.after_s, self._diag = node, what, float(after_s), diag
        self._pub = node.create_publisher(UInt32, topic, resend_qos())
        self._lock = threading.Lock()
        self._version: Optional[int] = None
        self._since = 0.0
        self._asked = 0.0

    def missing(self, version: int) -> bool:
        """``version`` is wanted and not here; asks for it when it has been missing for
        ``after_s`` (and again every ``after_s``). Returns whether it asked now."""
        now = time.monotonic()
        with self._lock:
            if version != self._version:
                self._version, self._since, self._asked = version, now, now
                return False
            if now - self._asked < self.after_s:
                return False
            self._asked = now
            waited = now - self._since
        self._pub.publish(UInt32(data=int(version)))
        self._diag.inc(f"{self._what}_resend_requests")
        self._node.get_logger().warning(f"{self._what} v{version} has not arrived after {waited:.1f} s: asked again")
        return True

    def arrived(self) -> None:
        """The wanted version is here (the next missing one starts a new wait)."""
        with self._lock:
            self._version = None


class ResendServer:
    """The producer's side: keeps its last message of each kind and sends it again on request."""

    def __init__(
        self, node: Any, topic: str, what: str, publish: Callable[[Any], None], diag: Any, min_interval_s: float = 1.0
    ) -> None:
        self._node, self._what, self._publish, self._diag = node, what, publish, diag
        self.min_interval_s = float(min_interval_s)
        self._lock = threading.Lock()
        self._version: Optional[int] = None
        self._msg: Any = None
        self._sent = -float("inf")
        node.create_subscription(UInt32, topic, self._on_request, resend_qos())

    def offer(self, version: int, msg: Any) -> None:
        """``msg`` (as published) is this node's ``version``: the one a request may get again."""
        with self._lock:
            self._version, self._msg = int(version), msg

    def _on_request(self, msg: UInt32) -> None:
        version = int(msg.data)
        now = time.monotonic()
        with self._lock:
            if self._msg is None or version != self._version:
                ok = False
            elif now - self._sent < self.min_interval_s:
                self._diag.inc(f"{self._what}_resend_rate_limited")
                return
            else:
                ok, self._sent, out = True, now, self._msg
        if not ok:  # a version this node does not hold (old, future, or another node's)
            self._diag.inc(f"{self._what}_resend_not_held")
            return
        self._publish(out)
        self._diag.inc(f"{self._what}_resends")
        self._node.get_logger().info(f"{self._what} v{version} sent again (a subscriber asked for it)")
