"""The e-stop authority of a graph: the node that owns ``/mbrl/estop`` and the release.

The game coordinator and the deploy graphs' policy deployer both own the e-stop with the same
rules: anyone may raise it (``true`` on the ``/mbrl/estop`` topic, or the ``/mbrl/estop``
service); ``false`` on the topic releases nothing (counted as
``rejected_estop_release_unsigned``); only the operator's ``/mbrl/estop_clear`` service releases
it, as a signed game state carrying a new release count (``mbrl_ros.security``), after which
the node withdraws its own latched ``true`` from the topic.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from mbrl_ros.nodes import ESTOP, ESTOP_CLEAR_SERVICE, ESTOP_SERVICE, latched_qos

if TYPE_CHECKING:  # mixed into a Node
    from rclpy.node import Node as _NodeMixin
else:
    _NodeMixin = object


class EstopAuthority(_NodeMixin):
    """Mixin for the node that owns the e-stop. The host provides ``_lock``, ``diag`` and
    ``_publish_state()`` (its signed game state carries ``_estop`` and ``_estop_release``)."""

    estop_scope = "every collector"  # what stops, in the service's answer
    estop_resumes = "the game continues"  # what a release resumes
    _lock: threading.RLock
    diag: Any

    def _publish_state(self) -> None:  # pragma: no cover - the host's
        raise NotImplementedError

    def init_estop(self) -> None:
        """Publisher, subscription and services of the e-stop; starts released."""
        self._estop = False
        self._estop_release = 0  # the operator's releases so far, signed in the game state
        self._estop_topic_timer: Any = None
        self._pub_estop = self.create_publisher(Bool, ESTOP, latched_qos())
        self.create_subscription(Bool, ESTOP, self._on_estop_topic, latched_qos())
        self.create_service(Trigger, ESTOP_SERVICE, self._srv_estop)
        self.create_service(Trigger, ESTOP_CLEAR_SERVICE, self._srv_estop_clear)
        self._publish_estop(False)

    def _publish_estop(self, on: bool) -> None:
        msg = Bool()
        msg.data = bool(on)
        self._pub_estop.publish(msg)

    def _set_estop(self, on: bool, why: str) -> None:
        with self._lock:
            changed, self._estop = self._estop != on, on
        if not changed:
            return
        if on:
            self.get_logger().warning(f"E-STOP: {why}")
            self.diag.fault(f"e-stop: {why}")
        else:
            self.get_logger().info(f"e-stop cleared: {why}")
            self.diag.clear_fault()
        self._publish_state()

    def _srv_estop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self._publish_estop(True)
        self._set_estop(True, "service call")
        resp.success, resp.message = True, f"e-stop: {self.estop_scope} stops now"
        return resp

    def _srv_estop_clear(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        """The operator's release, the only one: a signed game state with a new release count."""
        with self._lock:
            self._estop_release += 1
        self._set_estop(False, "service call (operator)")
        self._publish_state()  # the signed release, also when this node held no e-stop itself
        # then withdraw this node's own latched 'true' from the topic (a late joiner would read it as
        # a raise), a second later: the collectors have the signed release and ignore the 'false'
        self._estop_topic_timer = self.create_timer(1.0, self._withdraw_estop_topic)
        resp.success = True
        resp.message = f"e-stop released (signed release #{self._estop_release}); {self.estop_resumes}"
        return resp

    def _withdraw_estop_topic(self) -> None:
        self._estop_topic_timer.cancel()
        if not self._estop:
            self._publish_estop(False)

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:  # anyone may stop the robots
            self._set_estop(True, "/mbrl/estop topic")
        elif self._estop:  # ... but 'false' from anyone releases nothing: only the operator's service does
            self.diag.inc("rejected_estop_release_unsigned")
            self.diag.warn("refused e-stop release: 'false' on /mbrl/estop; only /mbrl/estop_clear releases it")
            self.get_logger().warning("ignored 'false' on /mbrl/estop: only /mbrl/estop_clear releases the e-stop")
