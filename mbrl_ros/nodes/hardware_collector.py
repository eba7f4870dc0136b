"""hardware_collector: the collector on a real robot, as a ROS 2 lifecycle node.

The same control loop, policy hand-off and episode publishing as the sim collector
(:class:`~mbrl_ros.nodes.collector.CollectorBase`), over the Dynamixel driver
(:class:`mbrl_ros.hardware.robot_env.HardwareEnv`). Brought up in the nav2 way:

- ``configure``: open ``device_path`` and ping every motor; a missing motor fails the
  transition with an error that names its ID;
- ``activate``: torque on (through the safety layer) and start collecting when the game says so;
- ``deactivate`` / ``cleanup`` / ``shutdown`` / ``error``: stop the loop, torque off
  (and close the port on cleanup/shutdown); torque is also turned off at process exit.

E-stop: the graph's ``/mbrl/estop`` topic and this node's own ``~/estop`` service
(``std_srvs/Trigger``) call ``HardwareEnv.estop()`` directly from the callback (torque off,
measured <= 50 ms by the driver); ``~/clear_estop``, or the graph's release
(``/mbrl/estop_clear``), allows the next episode. ``~/reboot_faulted`` (``std_srvs/Trigger``)
reboots every motor reporting a hardware error (``HardwareEnv.reboot_faulted``).
The scripted reset's timings are parameters (``reset_*``, ROBEL's values by default).
``dynamics`` (the sim collector's perturbed physics) is refused: the node stops at once with
exit status 2 rather than run a robot that the run believes perturbed.
D'Kitty: the torso pose comes from a ``geometry_msgs/PoseStamped`` tracker topic.

The driver paces the steps itself (deadline loop at the task's 10 Hz), so the node's own
real-time wait is off. Start it with ``use_sim:=false device_path:=/dev/ttyUSB0`` in a launch
graph; the lifecycle transitions (``ros2 lifecycle set /hardware_collector configure`` ...)
are driven by ``autostart`` (default true) or by an operator.
"""

from __future__ import annotations

import atexit
import time
from typing import Any, Optional

from geometry_msgs.msg import PoseStamped
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_srvs.srv import Trigger

from mbrl_ros.nodes import run_node
from mbrl_ros.nodes.collector import CollectorBase
from mbrl_ros.nodes.parameters import declare


class HardwareCollector(CollectorBase, LifecycleNode):
    node_name = "hardware_collector"

    def __init__(self, **kwargs: Any) -> None:
        LifecycleNode.__init__(self, self.node_name, **kwargs)
        self._declare_collector_parameters(realtime_default=False)
        if self.dynamics:  # refused, not ignored: a run that believes its robot is perturbed would mislead
            raise ValueError(
                f"dynamics:={self.dynamics} is a simulator setting: a robot's physics are its own "
                "(run the perturbed world with use_sim:=true)"
            )
        if self.randomize_dynamics:
            raise ValueError(
                "randomize_dynamics is a simulator setting: a robot's physics are its own (train with "
                "randomised dynamics in simulation, then fine-tune on the robot)"
            )
        self.realtime = False  # the driver's own deadline loop paces the steps (waiting twice would halve the rate)
        self.device_path = declare(
            self, "device_path", "/dev/ttyUSB0", "serial port of the Dynamixel bus", read_only=True
        )
        self.robot_config = declare(
            self, "robot_config", "", "hardware YAML ('' = hardware/<robot>.yaml)", read_only=True
        )
        self.tracker_topic = declare(
            self, "tracker_topic", "", "D'Kitty torso pose topic ('' = /mbrl/<robot_id>/torso_pose)", read_only=True
        )
        self.autostart = declare(
            self, "autostart", True, "configure and activate at start (else wait for an operator)", read_only=True
        )
        from mbrl_ros.hardware.reset import ResetConfig  # (the driver stack loads with the node, not the package)

        robel = ResetConfig()
        self.reset_config = ResetConfig(
            object_settle_s=declare(
                self,
                "reset_object_settle_s",
                robel.object_settle_s,
                "D'Claw reset: wait after the valve reached its start angle (ROBEL: 1 s)",
                read_only=True,
                lo=0.0,
                hi=30.0,
            ),
            object_timeout_s=declare(
                self,
                "reset_object_timeout_s",
                robel.object_timeout_s,
                "D'Claw reset: longest the valve motor may take to reach the start angle",
                read_only=True,
                lo=0.1,
                hi=120.0,
            ),
            move_timeout_s=declare(
                self,
                "reset_move_timeout_s",
                robel.move_timeout_s,
                "longest one reset motion may take",
                read_only=True,
                lo=0.1,
                hi=60.0,
            ),
            velocity_rad_s=declare(
                self,
                "reset_velocity_rad_s",
                robel.velocity_rad_s,
                "joint speed of reset motions (rad/s)",
                read_only=True,
                lo=0.05,
                hi=5.0,
            ),
        )
        self._active = False
        self._setup_comms()
        self.create_service(Trigger, "~/estop", self._srv_estop, callback_group=self.estop_group)
        self.create_service(Trigger, "~/clear_estop", self._srv_clear_estop, callback_group=self.estop_group)
        self.create_service(Trigger, "~/reboot_faulted", self._srv_reboot)
        topic = self.tracker_topic or f"/mbrl/{self.robot_id}/torso_pose"
        self.create_subscription(PoseStamped, topic, self._on_pose, 10)
        self.create_timer(1.0, self._publish_hardware_diagnostics)
        atexit.register(self._torque_off_quietly)
        if self.autostart:
            self._autostart_timer = self.create_timer(0.1, self._autostart_once)

    def _autostart_once(self) -> None:
        self._autostart_timer.cancel()
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # -- lifecycle ----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from mbrl_ros.hardware.robot_env import HardwareEnv

        try:
            env = HardwareEnv(
                self.task_id, self.robot_config or None, port=self.device_path, reset_config=self.reset_config
            )
            env.connect()  # pings every motor: MissingMotorError names the absent IDs
            self._setup_world(env)
        except Exception as exc:  # noqa: BLE001 - every configure failure is reported the same way
            self.get_logger().error(f"configure failed on {self.device_path}: {exc}")
            self.diag.fault(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"{self.robot_id}: connected on {self.device_path}, every motor answered")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.env.enable_torque()
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"activate failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._active = True
        self._start_loop()
        self.diag.clear_fault()
        self.get_logger().info(f"{self.robot_id}: torque on, collecting when the game says so")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt(close=True)
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt(close=True)
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt(close=True)
        return TransitionCallbackReturn.SUCCESS

    def _halt(self, close: bool = False) -> None:
        """Stop the loop (a running episode is dropped), torque off, optionally close the port."""
        self._active = False
        self._stop_loop()
        self._torque_off_quietly()
        if close and self.env is not None:
            self.env.close()
            self.env = None

    def _torque_off_quietly(self) -> None:
        try:
            if self.env is not None:
                self.env.disable_torque()
        except Exception:  # noqa: BLE001 - not connected: nothing is powered
            pass

    # -- e-stop, reboot, tracker --------------------------------------------------------
    def on_estop(self) -> None:
        if self.env is None:
            return
        try:
            latency, verified = self.env.estop()
            self.diag.set("estop_latency_ms", round(1000 * latency, 2))
            self.get_logger().warning(f"torque off in {1000 * latency:.1f} ms (verified: {verified})")
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"e-stop on the bus failed: {exc}")

    def _srv_estop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        t0 = time.perf_counter()
        with self._lock:
            self._estop = True
        self.on_estop()
        self.diag.fault("e-stop (service)")
        resp.success, resp.message = True, f"torque off ({1000 * (time.perf_counter() - t0):.1f} ms)"
        return resp

    def _srv_clear_estop(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        if self.estop_latch.held:  # the graph's e-stop: only the coordinator's signed release clears it
            resp.success, resp.message = (
                False,
                "the graph's e-stop holds: only the coordinator releases it (/mbrl/estop_clear)",
            )
            return resp
        with self._lock:
            self._estop = False
        if self.env is not None:
            self.env.clear_estop()
        self.diag.clear_fault()
        resp.success, resp.message = True, "e-stop cleared; the next episode re-activates the robot"
        return resp

    def _srv_reboot(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        if self.env is None:
            resp.success, resp.message = False, "not configured"
            return resp
        try:
            rebooted = self.env.reboot_faulted()
        except Exception as exc:  # noqa: BLE001 - a bus error or a silent motor: the operator reads why
            resp.success, resp.message = False, f"reboot failed: {exc}"
            return resp
        resp.success = True
        resp.message = (
            f"rebooted motors {sorted(rebooted)} ({rebooted})" if rebooted else "no motor reports a hardware error"
        )
        if rebooted:
            self.get_logger().warning(resp.message)
        return resp

    def _on_pose(self, msg: PoseStamped) -> None:
        if self.env is None or not hasattr(self.env, "set_tracker_pose"):
            return
        p, q = msg.pose.position, msg.pose.orientation
        try:
            self.env.set_tracker_pose((p.x, p.y, p.z), (q.w, q.x, q.y, q.z))
        except ValueError as exc:
            self.diag.inc("rejected_tracker_pose")
            self.diag.warn(f"rejected tracker pose: {exc}")

    def _publish_hardware_diagnostics(self) -> None:
        if self.env is None:
            return
        d = self.env.diagnostics()
        loop = d.get("loop", {})
        self.diag.set("loop_jitter_p99_ms", round(loop.get("jitter_ms_p99", 0.0), 3))
        self.diag.set("overruns", loop.get("overruns", 0))
        self.diag.set("bus_read_failures", d.get("bus", {}).get("read_failures", 0))
        self.diag.set("limit_hits", d.get("limit_hits", 0))
        self.diag.set("hardware_errors", d.get("hardware_errors", {}))

    def shutdown(self) -> None:
        self._halt(close=True)


def main(args: Optional[list[str]] = None) -> None:
    run_node(HardwareCollector, args)


if __name__ == "__main__":
    main()
