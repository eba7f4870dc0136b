"""The real robot as a Gymnasium env: :class:`HardwareEnv` (the world interface of the collector).

``HardwareEnv(task_id)`` follows the same contract as the simulated env
(``mbrl_ros.tasks.make_env``): ``reset(seed=, options=)`` -> ``(obs, info)``,
``step(action)`` -> ``(obs, reward, terminated, truncated, info)`` with ``info["success"]``,
``info["reward_terms"]``, truncation at ``task.info.horizon`` and the attribute ``.task``.
Observations come from the same :meth:`TaskSpec.observation` as in the simulator, fed by the
bus (D'Claw: claw joints and the valve sensor, ID 50) and, for D'Kitty, by an external torso
tracker through :meth:`HardwareEnv.set_tracker_pose`.

Hardware-only API (used by the ROS hardware collector)::

    env = HardwareEnv("dclaw-turn-fixed", port="/dev/dynamixel", control_hz=10,
                      operator=lambda msg: input(msg + " [Enter]") == "")
    env.connect()              # open the port, ping every motor (MissingMotorError names absent IDs)
    obs, info = env.reset()    # scripted reset (torque on through the safety layer)
    obs, r, term, trunc, info = env.step(action)   # info["aborted"] is True on a faulted step
    env.estop()                # torque off now (<= 50 ms, measured); env.clear_estop() to go on
    env.reboot_faulted()       # reboot motors reporting a hardware error -> {ID: error bits}
    env.diagnostics()          # bus errors, hardware errors by ID, limit hits, loop jitter
    env.joint_state()          # last reading: names, position, velocity, effort (mA) for JointState
    env.disable_torque(); env.close()

A step writes one sync write of goal positions (through :class:`SafetyLayer`), waits for the
step's deadline (a deadline-based loop: no drift; overruns are counted), then reads every motor
once. ``control_hz`` defaults to the task's 10 Hz and may be raised (e.g. 100 Hz); the safety
layer then scales the per-action rate limit so joint speeds stay within the task's limits.

A faulted step (a safety abort, reads failing past the error timeout, a stale D'Kitty tracker
pose, an e-stop) returns the last good observation with ``reward = 0``, ``truncated = True``,
``info["aborted"] = True`` and ``info["abort_reason"]``; the robot is already in its safe
state. The next ``reset()`` re-activates the robot (except after an e-stop, which needs
``clear_estop()`` first: an operator's decision).

D'Kitty tracker: call ``set_tracker_pose(position_xyz, quaternion_wxyz, stamp)`` for every
tracker sample (a ROS ``PoseStamped`` subscriber does this); the position is in the task frame
(the simulator's torso slide joints: the origin where the robot starts, z = 0 at the nominal
height). Velocities are finite differences of consecutive samples. Without a pose, ``reset()``
and ``step()`` raise :class:`TrackerError`; a pose older than ``tracker_timeout_s`` aborts
the episode.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import gymnasium
import numpy as np

from mbrl_ros.hardware.dynamixel_bus import BusError, BusState, DynamixelBus
from mbrl_ros.hardware.reset import DKITTY_RESET_MODES, Operator, ResetConfig, dclaw_reset, dkitty_reset
from mbrl_ros.hardware.robot_config import RobotConfig, load_robot_config
from mbrl_ros.hardware.safety import SafetyConfig, SafetyError, SafetyEvent, SafetyLayer

log = logging.getLogger(__name__)


class TrackerError(RuntimeError):
    """D'Kitty needs a torso pose from an external tracker and has none (fresh enough)."""


def quat_wxyz_to_mat(q: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z); the quaternion is normalised first."""
    w, x, y, z = np.asarray(q, dtype=float) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _wrap(x: np.ndarray) -> np.ndarray:
    return np.mod(x + math.pi, 2 * math.pi) - math.pi


class HardwareEnv(gymnasium.Env):
    """One ROBEL task on the real robot (see the module docstring).

    Args:
        task_id: a task id of ``mbrl_ros.tasks.TASK_IDS`` (or its gym id).
        robot_config: a :class:`RobotConfig`, a YAML path, or ``None`` for ``hardware/<robot>.yaml``.
        port: overrides the config's port (e.g. the emulator's pty).
        safety: a :class:`SafetyConfig` or a mapping of overrides to the YAML ``safety:`` section.
        control_hz: control rate (default: the task's, 10 Hz).
        operator: asked when a scripted reset cannot finish (message -> True to go on).
        reset_mode: D'Kitty only: "scripted" | "manual-auto" | "manual".
        reset_config: timings/tolerances of the scripted resets.
        on_event: called with every :class:`SafetyEvent`.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        task_id: str,
        robot_config: Union[RobotConfig, str, Path, None] = None,
        *,
        port: Optional[str] = None,
        safety: Union[SafetyConfig, Mapping[str, Any], None] = None,
        control_hz: Optional[float] = None,
        operator: Optional[Operator] = None,
        reset_mode: str = "scripted",
        reset_config: Optional[ResetConfig] = None,
        on_event: Optional[Callable[[SafetyEvent], None]] = None,
    ) -> None:
        from mbrl_ros.tasks import get_task

        self.task: Any = get_task(task_id)  # a ROBEL task: its robot's initial_state, targets and reward terms
        info = self.task.info
        if isinstance(robot_config, RobotConfig):
            cfg = robot_config
        else:
            cfg = load_robot_config(robot_config if robot_config is not None else info.robot)
        if port is not None:
            cfg = cfg.with_overrides(port=str(port))
        if cfg.robot != info.robot:
            raise ValueError(
                f"task {info.task_id} is for {info.robot}, the hardware config {cfg.source} for {cfg.robot}"
            )
        if len(cfg.joints) != info.act_dim:
            raise ValueError(f"{cfg.source}: {len(cfg.joints)} joints, task {info.task_id} acts on {info.act_dim}")
        if info.robot == "dclaw" and cfg.object_motor is None:
            raise ValueError(f"{cfg.source}: the D'Claw needs object_motor (the valve sensor)")
        self.config = cfg
        if isinstance(safety, SafetyConfig):
            self.safety_config = safety
        else:
            self.safety_config = SafetyConfig.from_dict(cfg.safety, **dict(safety or {}))
        hz = float(control_hz) if control_hz is not None else 1.0 / info.dt
        if not (math.isfinite(hz) and 0 < hz <= 500):
            raise ValueError(f"control_hz must be in (0, 500], got {control_hz}")
        self.control_hz = hz
        self.period = 1.0 / hz
        if reset_mode not in DKITTY_RESET_MODES:
            raise ValueError(f"reset_mode must be one of {DKITTY_RESET_MODES}, got {reset_mode!r}")
        self.reset_mode = reset_mode
        self.reset_config = reset_config or ResetConfig()
        self.operator = operator
        self.on_event = on_event
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(info.act_dim,), dtype=np.float32)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(info.obs_dim,), dtype=np.float64)

        self.bus = DynamixelBus(cfg)
        self.safety: Optional[SafetyLayer] = None
        self._obs: Optional[np.ndarray] = None
        self._aux = np.zeros(self.task.aux_dim)  # model-only measurements of the last observation
        self._last_action = np.zeros(info.act_dim)
        self._target = 0.0
        self._target_pos = np.zeros(2)
        self._steps = 0
        self._deadline = 0.0
        self._aborted = False
        self._abort_reason = ""
        self.jitter_s: deque[float] = deque(maxlen=1000)
        self.overruns = 0
        self.episodes = 0
        self.aborted_episodes = 0
        self._tracker_lock = threading.Lock()
        self._pose: Optional[tuple[float, np.ndarray, np.ndarray]] = None  # (stamp, root_qpos(6), root_qvel(6))

    # -- connection and torque -----------------------------------------------------------------
    def connect(self) -> None:
        """Open the port and ping every motor (raises ``MissingMotorError`` naming absent IDs)."""
        self.bus.open()
        if self.safety is None:
            self.safety = SafetyLayer(
                self.bus, self.task, self.safety_config, on_event=self.on_event, control_period_s=self.period
            )

    def _need_safety(self) -> SafetyLayer:
        if self.safety is None or not self.bus.is_open:
            raise RuntimeError("HardwareEnv is not connected: call connect() first")
        return self.safety

    def enable_torque(self) -> None:
        """Torque on through the safety layer (goals := present position, soft start, watchdog)."""
        self._need_safety().activate()

    def disable_torque(self) -> None:
        """Torque off on every motor (the robot goes limp)."""
        self._need_safety().deactivate()

    def estop(self) -> tuple[float, bool]:
        """Emergency stop, from any thread: torque off now; returns ``(latency_s, verified)``."""
        latency, verified = self._need_safety().estop()
        self._abort("e-stop")
        return latency, verified

    def clear_estop(self) -> None:
        """Allow the next ``reset()`` to re-activate the robot after an e-stop."""
        self._need_safety().clear_estop()

    def reboot_faulted(self) -> dict[int, list[str]]:
        """Reboot every motor that reports a hardware error; returns ``{ID: error bits}`` of those rebooted.

        Reads the Hardware Error Status (register 70) of every motor. A reboot clears the error
        and leaves that motor's torque off, so a running episode is aborted first (the robot goes
        to its safe state) and the next ``reset()`` re-activates the whole robot. Motors that do
        not answer cannot be rebooted: after rebooting the others, ``BusError`` names them.
        """
        safety = self._need_safety()
        errors = self.bus.read_hardware_errors()
        silent = sorted(i for i, bits in errors.items() if bits == ["no_response"])
        faulted = {i: bits for i, bits in errors.items() if i not in silent}
        if faulted and safety.active:
            safety.trip(f"rebooting motors {sorted(faulted)} ({errors})")
            self._abort(f"motors {sorted(faulted)} rebooted")
        for dxl_id in sorted(faulted):
            self.bus.reboot(dxl_id)
            safety.hardware_errors_cleared([dxl_id])
            log.warning("rebooted motor %d (hardware error: %s)", dxl_id, ", ".join(faulted[dxl_id]))
        if silent:
            raise BusError(
                f"motors {silent} do not answer and were not rebooted (check cable and power); "
                f"rebooted: {sorted(faulted) or 'none'}"
            )
        return faulted

    # -- tracker (D'Kitty) -----------------------------------------------------------------------
    def set_tracker_pose(self, position: Any, quaternion_wxyz: Any, stamp: Optional[float] = None) -> None:
        """One torso pose sample: position (task frame, m) and orientation (w, x, y, z).

        ``stamp`` is a ``time.monotonic()`` time; leave it ``None`` to stamp on arrival (a ROS
        header stamp is on another clock). Velocities are computed from the previous sample.
        """
        p = np.asarray(position, dtype=float).reshape(-1)
        q = np.asarray(quaternion_wxyz, dtype=float).reshape(-1)
        if p.shape != (3,) or q.shape != (4,) or not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise ValueError(f"tracker pose needs a finite position (3,) and quaternion (4,), got {p}, {q}")
        if not 0.5 < np.linalg.norm(q) < 1.5:
            raise ValueError(f"tracker quaternion is far from unit length: {q}")
        from mbrl_ros.tasks.dkitty import mat_to_euler_rxyz

        t = time.monotonic() if stamp is None else float(stamp)
        root = np.concatenate([p, mat_to_euler_rxyz(quat_wxyz_to_mat(q))])
        with self._tracker_lock:
            vel = np.zeros(6)
            if self._pose is not None and t > self._pose[0]:
                dt = t - self._pose[0]
                prev = self._pose[1]
                vel[:3] = (root[:3] - prev[:3]) / dt
                vel[3:] = _wrap(root[3:] - prev[3:]) / dt
            elif self._pose is not None and t <= self._pose[0]:
                return  # out-of-order sample
            self._pose = (t, root, vel)

    def _tracker_state(self, required: bool = True) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """``(root_qpos, root_qvel)`` of a fresh pose; ``None`` when stale (or never received and
        not ``required``); raises :class:`TrackerError` when ``required`` and none ever arrived."""
        with self._tracker_lock:
            pose = self._pose
        if pose is None:
            if required:
                raise TrackerError(
                    f"{self.task.info.task_id} needs the torso pose from an external tracker and none was received: "
                    "feed HardwareEnv.set_tracker_pose() (e.g. from a geometry_msgs/PoseStamped subscriber)"
                )
            return None
        age = time.monotonic() - pose[0]
        if age > self.safety_config.tracker_timeout_s:
            return None
        return pose[1], pose[2]

    def _fresh_pose(self) -> tuple[np.ndarray, np.ndarray]:
        st = self._tracker_state(required=True)
        if st is None:
            with self._tracker_lock:
                age = time.monotonic() - self._pose[0] if self._pose is not None else float("inf")
            raise TrackerError(
                f"the torso pose is {age:.2f} s old (tracker_timeout_s = "
                f"{self.safety_config.tracker_timeout_s}): is the tracker running?"
            )
        return st

    def _upright(self) -> Optional[float]:
        st = self._tracker_state(required=False)
        if st is None:
            return None
        from mbrl_ros.tasks.dkitty import euler_rxyz_to_mat

        return float(euler_rxyz_to_mat(*st[0][3:6])[2, 2])

    # -- gym API ---------------------------------------------------------------------------------
    def reset(
        self, *, seed: Optional[int] = None, options: Optional[Mapping[str, Any]] = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Scripted reset to a new episode start; ``options``: ``{"target": float, "initial": float}``.

        ``initial`` is the D'Claw valve start angle (default: sampled as in simulation);
        ``target`` the valve target (D'Claw) or target yaw (D'Kitty orient).
        """
        super().reset(seed=seed)
        safety = self._need_safety()
        opts = dict(options or {})
        unknown = set(opts) - {"target", "initial"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; valid: 'target', 'initial'")
        if safety.state == "estopped":
            raise SafetyError("e-stopped: check the robot, then call clear_estop() before reset()")
        info = self.task.info
        if info.robot == "dkitty":
            self._fresh_pose()  # no (fresh) pose: fail before anything moves
        init = self.task.initial_state(self.np_random)
        if safety.state in ("faulted", "torque_off") or not safety.active:
            safety.activate()
        if info.robot == "dclaw":
            initial = float(opts.get("initial", init.qpos[18]))
            self._target = self.task.canonical_target(float(opts.get("target", init.target)))
            report = dclaw_reset(safety, initial, self.reset_config, self.operator)
        else:
            if info.task_id.startswith("dkitty-stand"):
                final_pose = init.qpos[6:18]
            else:
                final_pose = np.zeros(12)
            report = dkitty_reset(safety, final_pose, self._upright, self.reset_mode, self.reset_config, self.operator)
            if info.task_id.startswith("dkitty-orient"):
                # The robot cannot be turned to a sampled start yaw; keep ROBEL's relative geometry:
                # target yaw = present yaw + (sampled target - sampled initial yaw).
                yaw = float(self._fresh_pose()[0][5])
                self._target = float(opts.get("target", yaw + init.target - init.qpos[5]))
                self._target_pos = self.task.target_position(self._target)
        state = safety.read_state()
        if state is None:
            raise SafetyError(f"reset ended in a safety abort: {safety.abort_reason}")
        self._last_action = np.zeros(info.act_dim)
        self._steps = 0
        self._aborted, self._abort_reason = False, ""
        self._obs = self._observe(state)
        self._deadline = time.monotonic() + self.period
        self.episodes += 1
        reset_info = {"target": self._target, "success": bool(self.task.success(self._obs)), "reset": report}
        if self.task.aux_dim:
            reset_info["aux"] = self._aux.copy()
        return self._obs.copy(), reset_info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        safety = self._need_safety()
        info = self.task.info
        if self._aborted:
            return self._aborted_step("episode already aborted: " + self._abort_reason)
        if info.robot == "dkitty":
            self._tracker_state(required=True)  # never received -> TrackerError
        try:
            res = safety.command(np.asarray(action, dtype=np.float64).reshape(-1))
        except SafetyError as exc:  # e.g. the watchdog turned torque off while the policy was slow
            return self._aborted_step(str(exc))
        if res.aborted:
            return self._aborted_step(safety.abort_reason)
        self._wait_deadline()
        state = safety.read_state()
        if state is None:
            return self._aborted_step(safety.abort_reason or "bus read failed")
        if info.robot == "dkitty" and self._tracker_state(required=True) is None:
            reason = f"tracker: torso pose older than {self.safety_config.tracker_timeout_s} s"
            safety.trip(reason)
            return self._aborted_step(reason)
        self._last_action = res.action
        prev = self._obs
        obs = self._observe(state)
        self._obs = obs
        self._steps += 1
        qvel = state.velocity if info.robot == "dclaw" else None
        terms = self.task.reward_terms(prev, res.action, obs, next_qvel=qvel)
        reward_terms = {k: float(v) for k, v in terms.items()}
        out_info = {
            "success": bool(self.task.success(obs)),
            "reward_terms": reward_terms,
            "aborted": False,
            "target": self._target,
            "loop_jitter_ms": self.jitter_s[-1] * 1e3 if self.jitter_s else 0.0,
            "safety_events": [e.message for e in res.events],
        }
        if self.task.aux_dim:
            out_info["aux"] = self._aux.copy()
        reward = math.fsum(reward_terms.values())
        terminated = bool(self.task.done(obs))
        truncated = self._steps >= info.horizon
        return obs.copy(), reward, terminated, truncated, out_info

    def _aborted_step(self, reason: str) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._abort(reason)
        obs = self._obs.copy() if self._obs is not None else np.zeros(self.task.info.obs_dim)
        info = {
            "success": False,
            "reward_terms": {},
            "aborted": True,
            "abort_reason": self._abort_reason,
            "target": self._target,
        }
        if self.task.aux_dim:
            info["aux"] = self._aux.copy()
        return obs, 0.0, False, True, info

    def _abort(self, reason: str) -> None:
        if not self._aborted:
            self._aborted = True
            self._abort_reason = reason
            self.aborted_episodes += 1
            log.error("episode aborted: %s", reason)

    def _wait_deadline(self) -> None:
        """Sleep until this step's deadline (coarse sleep, then a short spin), record the jitter."""
        now = time.monotonic()
        if now > self._deadline:
            self.overruns += 1
            self.jitter_s.append(now - self._deadline)
            self._deadline = now + self.period  # re-phase rather than run late steps back to back
            return
        if self._deadline - now > 0.002:
            time.sleep(self._deadline - now - 0.001)
        while time.monotonic() < self._deadline:
            pass
        self.jitter_s.append(time.monotonic() - self._deadline)
        self._deadline += self.period

    def _observe(self, state: BusState) -> np.ndarray:
        if self.task.info.robot == "dclaw":
            d = {
                "claw_qpos": state.position,
                "claw_qvel": state.velocity,
                "object_qpos": state.object_position,
                "last_action": self._last_action,
                "target": self._target,
            }
        else:
            root, root_vel = self._fresh_pose()
            d = {
                "root_qpos": root,
                "root_qvel": root_vel,
                "kitty_qpos": state.position,
                "kitty_qvel": state.velocity,
                "last_action": self._last_action,
                "target_pos": self._target_pos,
            }
        self._aux = self.task.aux_observation(d)
        return self.task.observation(d)

    # -- diagnostics -----------------------------------------------------------------------------
    @property
    def joint_names(self) -> list[str]:
        """Names of the actuated joints in action order (the hardware YAML's motor names)."""
        return [m.name for m in self.config.joints]

    def joint_state(self) -> Optional[dict[str, Any]]:
        """The last reading, for ``sensor_msgs/JointState``: names, position (rad), velocity (rad/s),
        effort (present current, mA) and the monotonic stamp; D'Claw adds the valve. ``None`` before
        the first read."""
        st = self.safety.last_state if self.safety is not None else None
        if st is None:
            return None
        names = self.joint_names
        pos, vel, cur = list(st.position), list(st.velocity), list(st.current)
        if st.object_position is not None and self.config.object_motor is not None:
            names.append(self.config.object_motor.name)
            pos.append(st.object_position)
            vel.append(st.object_velocity or 0.0)
            cur.append(0.0)
        return {"name": names, "position": pos, "velocity": vel, "effort": cur, "stamp": st.stamp}

    def diagnostics(self) -> dict[str, Any]:
        """Bus errors, hardware errors by ID, limit hits, loop jitter (plain Python types)."""
        st = self.bus.stats
        jit = np.array(self.jitter_s) * 1e3 if self.jitter_s else np.zeros(1)
        out: dict[str, Any] = {
            "task_id": self.task.info.task_id,
            "port": self.config.port,
            "connected": self.bus.is_open,
            "control_hz": self.control_hz,
            "bus": {
                "reads": st.reads,
                "read_failures": st.read_failures,
                "writes": st.writes,
                "write_failures": st.write_failures,
                "last_error": st.last_error,
                "failures_by_id": dict(st.failures_by_id),
                "latency_timer_ms": self.bus.latency_ms,
            },
            "loop": {
                "jitter_ms_p50": float(np.percentile(jit, 50)),
                "jitter_ms_p99": float(np.percentile(jit, 99)),
                "jitter_ms_max": float(jit.max()),
                "overruns": self.overruns,
                "steps": len(self.jitter_s),
            },
            "episodes": self.episodes,
            "aborted_episodes": self.aborted_episodes,
            "abort_reason": self._abort_reason,
        }
        if self.safety is not None:
            out["safety"] = self.safety.diagnostics()
            out["hardware_errors"] = out["safety"]["hardware_errors"]
            out["limit_hits"] = out["safety"]["limit_hits"]
        if self.task.info.robot == "dkitty":
            with self._tracker_lock:
                out["tracker_age_s"] = None if self._pose is None else time.monotonic() - self._pose[0]
        return out

    def close(self) -> None:
        """Torque off, stop the watchdog, close the port."""
        if self.safety is not None:
            self.safety.close()
        self.bus.close()
        super().close()
