"""The simulated world: ROBEL's robots in MuJoCo, and the Gymnasium environment over them.

:class:`RobelSim` is the low-level world (model, data, joint groups, substeps, instability
checks); the emulator and the gym env both use it. :class:`RobelEnv` runs one ROBEL task on it:
the task spec (``dclaw_turn.py`` / ``dkitty.py``) supplies the action map, observation, reward,
termination and reset distribution; this module only moves MuJoCo.

Step, exactly as ROBEL: ``a = clip(a)``, joint targets denormalised, clipped to the qpos range
and rate limited from the current joint positions (``TaskSpec.action_to_targets``), written to
``ctrl``, then 40 substeps of 2.5 ms (``mj_step(..., nstep=40)``: no Python in the substep loop).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Optional, Sequence, Union

import gymnasium
import mujoco
import numpy as np

from mbrl_ros.tasks.base import InitialState
from mbrl_ros.tasks.scenes import load_model

ROBOTS = ("dclaw", "dkitty")
_DEFAULT_SCENE = {"dclaw": "dclaw-valve3", "dkitty": "dkitty-orient"}
_WARNING_NAMES = {int(w): w.name for w in mujoco.mjtWarning.__members__.values()}
# A generalised velocity (rad/s, or m/s for the torso's free joint) above this is a simulation
# that diverged without MuJoCo flagging it (a D'Kitty stand run recorded 2.2e6): no motion of
# these robots comes near it (30 random-action episodes per task peak at 2.7 on D'Claw, 4.2 on
# D'Kitty orient and 47 on D'Kitty stand, whose falls tumble the torso). Such a step is aborted
# like a BADQACC one, so it never reaches the data (an aggregating MAL buffer kept it forever).
MAX_PLAUSIBLE_SPEED = 100.0

# ROBEL's RandomDynamics variants (robel/dclaw/turn.py, robel/dkitty/{orient,stand}.py).
_GEOM_FRICTION = ((0.8, 1.2), (0.003, 0.007), (0.00005, 0.00015))  # slide, spin, roll; all geoms, one draw
DYNAMICS_RANDOMIZATION: dict[str, dict[str, Any]] = {
    "dclaw": dict(
        dof_damping=(0.005, 0.1),
        dof_frictionloss=(0.001, 0.005),
        dofs_all_same=False,
        kp=(1.0, 3.0),
        mount_offset=(-0.01, 0.01),
    ),
    "dkitty-orient": dict(
        dof_damping=(0.1, 0.2),
        dof_frictionloss=(0.001, 0.005),
        dofs_all_same=True,
        kp=(2.8, 3.2),
        total_mass=(1.6, 2.0),
        hfield=(0.0, 0.05),
    ),
    "dkitty-stand": dict(
        dof_damping=(0.1, 0.2),
        dof_frictionloss=(0.001, 0.005),
        dofs_all_same=True,
        kp=(2.0, 4.0),
        total_mass=(1.6, 2.0),
        hfield=(0.0, 0.05),
    ),
}

# Physical parameters that set_physics can change: name -> (robots, description).
PHYSICS_PARAMS: dict[str, tuple[tuple[str, ...], str]] = {
    "actuator_gain": (ROBOTS, "position-servo kp of every actuator (biasprm[1] = -kp kept consistent)"),
    "joint_damping": (ROBOTS, "damping of the actuated joints (scalar or one per joint)"),
    "joint_frictionloss": (ROBOTS, "dry friction of the actuated joints (scalar or one per joint)"),
    "geom_friction": (ROBOTS, "sliding friction coefficient of every geom"),
    "valve_damping": (("dclaw",), "damping of the valve joint"),
    "valve_frictionloss": (("dclaw",), "dry friction of the valve joint"),
    "total_mass": (("dkitty",), "total robot mass in kg (mj_setTotalmass scales all bodies)"),
}

# Named fixed worlds for sim-to-real experiments (``--set dynamics=NAME``), every value inside
# ROBEL's RandomDynamics ranges above. The D'Claw scene's joint and valve damping (0.1) is already
# the top of ROBEL's range, so a "stiffer" claw is made with dry friction and contact friction.
PERTURBATIONS: dict[str, dict[str, float]] = {
    # a weak, sticky claw: kp 1.5 of 2.0 (range 1..3), friction loss at the range's top (0.005,
    # nominal 0) on every claw joint and the valve, contact friction 1.2 (range 0.8..1.2)
    "dclaw-weak": {
        "actuator_gain": 1.5,
        "joint_frictionloss": 0.005,
        "valve_frictionloss": 0.005,
        "valve_damping": 0.1,
        "geom_friction": 1.2,
    },
    # the same with the weakest servo ROBEL draws (kp 1.0)
    "dclaw-weakest": {
        "actuator_gain": 1.0,
        "joint_frictionloss": 0.005,
        "valve_frictionloss": 0.005,
        "valve_damping": 0.1,
        "geom_friction": 1.2,
    },
    # a heavy, stiff D'Kitty: kp 2.8 (range 2.8..3.2 for orient), mass 2.0 kg (1.6..2.0)
    "dkitty-heavy": {"actuator_gain": 2.8, "total_mass": 2.0, "joint_frictionloss": 0.005},
}


def parse_dynamics(text: str, robot: str) -> dict[str, float]:
    """``--set dynamics=...``: '' (the scene as is), a name of :data:`PERTURBATIONS`, or
    ``name:value`` items separated by ``/`` or spaces (e.g. ``actuator_gain:1.2/valve_damping:0.1``,
    names of :data:`PHYSICS_PARAMS`). Returns ``{parameter: value}``; ``ValueError`` names the bad item."""
    text = str(text or "").strip()
    if not text:
        return {}
    if text in PERTURBATIONS:
        out = dict(PERTURBATIONS[text])
    else:
        out = {}
        for item in text.replace("/", " ").split():
            name, sep, value = item.partition(":")
            if not sep:
                raise ValueError(
                    f"dynamics item {item!r} is neither a named world ({', '.join(PERTURBATIONS)}) nor parameter:value"
                )
            out[name.strip()] = _finite_scalar(value, f"dynamics {name}")
    for name in out:
        if name not in PHYSICS_PARAMS or robot not in PHYSICS_PARAMS[name][0]:
            valid = [k for k, (robots, _) in PHYSICS_PARAMS.items() if robot in robots]
            raise ValueError(f"dynamics: {name!r} is not a physics parameter of the {robot}; valid: {', '.join(valid)}")
    return out


def apply_dynamics(env: Any, text: str) -> dict[str, float]:
    """Fix the world's physics to ``text`` (see :func:`parse_dynamics`); the values persist over
    resets and override a per-episode randomisation. Returns what was applied."""
    values = parse_dynamics(text, env.task.info.robot)
    for name, value in values.items():
        env.set_physics(name, value)
    return values


class SimulationWarning(RuntimeWarning):
    """MuJoCo reported an instability (e.g. mjWARN_BADQACC) during a step."""


def _finite_vector(value: Any, size: int, what: str) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a numeric array of shape ({size},): {exc}") from None
    if v.shape != (size,):
        raise ValueError(f"{what} must have shape ({size},), got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{what} contains non-finite values: {v}")
    return v


def _finite_scalar(value: Any, what: str) -> float:
    try:
        v = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a finite real number, got {value!r}") from exc
    if not math.isfinite(v):
        raise ValueError(f"{what} must be a finite real number, got {value!r}")
    return v


class RobelSim:
    """One ROBEL robot in MuJoCo: ``model``, ``data`` and its joint groups.

    D'Claw: claw = qpos[0:9] (actuators 0..8), 9 ghost overlay joints, valve = qpos[18].
    D'Kitty: torso = qpos[0:6] (Tx, Ty, Tz slides, Rx, Ry, Rz hinges), legs = qpos[6:18].
    ``task_id`` picks the scene (D'Kitty orient has a target site, stand does not); without
    one, D'Claw loads the valve scene and D'Kitty the orient scene.
    """

    def __init__(self, robot: str, task_id: Optional[str] = None, frame_skip: int = 40) -> None:
        if robot not in ROBOTS:
            raise ValueError(f"unknown robot {robot!r}; valid robots: {', '.join(ROBOTS)}")
        scene = _DEFAULT_SCENE[robot]
        if task_id is not None:
            from mbrl_ros.tasks import get_task

            task: Any = get_task(task_id)  # a ROBEL task: its scene
            if task.info.robot != robot:
                raise ValueError(f"task {task_id!r} is for robot {task.info.robot!r}, not {robot!r}")
            scene = task.scene
        self.robot = robot
        self.scene = scene
        self.model = load_model(scene)
        self.data = mujoco.MjData(self.model)
        self.frame_skip = int(frame_skip)
        if robot == "dclaw":
            self.actuated = slice(0, 9)
            self.object_index: Optional[int] = 18
        else:
            self.actuated = slice(6, 18)
            self.object_index = None
        self.n_actuated = self.actuated.stop - self.actuated.start
        if self.model.nu != self.n_actuated:
            raise RuntimeError(f"{scene}: expected {self.n_actuated} actuators, found {self.model.nu}")
        self._warning_numbers = self.data.warning.number  # writable view into mjData
        self.warning_totals: dict[str, int] = {}
        self.reset()

    # -- state access -------------------------------------------------------------------
    def actuated_qpos(self) -> np.ndarray:
        """Positions of the actuated joints (claw 9 / legs 12), rad."""
        return self.data.qpos[self.actuated].copy()

    def actuated_qvel(self) -> np.ndarray:
        return self.data.qvel[self.actuated].copy()

    def object_qpos(self) -> float:
        """D'Claw valve angle (rad, unwrapped)."""
        if self.object_index is None:
            raise ValueError("dkitty has no object joint")
        return float(self.data.qpos[self.object_index])

    def object_qvel(self) -> float:
        if self.object_index is None:
            raise ValueError("dkitty has no object joint")
        return float(self.data.qvel[self.object_index])

    def root_qpos(self) -> np.ndarray:
        """D'Kitty torso pose: x, y, z offset and 'rxyz' Euler angles."""
        if self.robot != "dkitty":
            raise ValueError("dclaw has no root joints")
        return self.data.qpos[0:6].copy()

    def root_qvel(self) -> np.ndarray:
        if self.robot != "dkitty":
            raise ValueError("dclaw has no root joints")
        return self.data.qvel[0:6].copy()

    # -- commands ---------------------------------------------------------------------
    def set_ctrl(self, q_target: Any) -> None:
        """Joint position targets of the actuated joints (validated: right size, finite)."""
        self.data.ctrl[:] = _finite_vector(q_target, self.n_actuated, "joint targets")

    def set_state(self, qpos: Any, qvel: Any) -> None:
        """Reset the data and set the full qpos/qvel (ctrl = 0, time = 0), then ``mj_forward``."""
        qpos = _finite_vector(qpos, self.model.nq, "qpos")
        qvel = _finite_vector(qvel, self.model.nv, "qvel")
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = qpos
        self.data.qvel[:] = qvel
        mujoco.mj_forward(self.model, self.data)

    def reset(self) -> None:
        """ROBEL's reset pose at rest (D'Claw: [0, -pi/3, pi/3] x 3, valve 0; D'Kitty: all 0)."""
        qpos = self.model.qpos0.copy()
        if self.robot == "dclaw":
            from mbrl_ros.tasks.dclaw_turn import RESET_POSE

            qpos[self.actuated] = RESET_POSE
        self.set_state(qpos, np.zeros(self.model.nv))

    def advance(self, n_substeps: Optional[int] = None) -> list[str]:
        """Run ``n_substeps`` physics steps (default: frame_skip) with the current ctrl.

        Returns the MuJoCo warnings raised meanwhile (e.g. ``["mjWARN_BADQACC"]``). After a
        BADQACC MuJoCo has already auto-reset the data, so the caller must not trust the state.
        """
        n = self.frame_skip if n_substeps is None else int(n_substeps)
        if n < 0:
            raise ValueError(f"n_substeps must be >= 0, got {n}")
        nums = self._warning_numbers
        nums[:] = 0  # MuJoCo's own counters are cleared by resets, so count per call instead
        if n:
            mujoco.mj_step(self.model, self.data, nstep=n)
        if not nums.any():
            return []
        raised = [_WARNING_NAMES.get(int(i), str(i)) for i in np.flatnonzero(nums)]
        for name in raised:
            self.warning_totals[name] = self.warning_totals.get(name, 0) + 1
        return raised


class RobelEnv(gymnasium.Env):
    """A ROBEL task in MuJoCo behind the Gymnasium API (``mbrl_ros.tasks.make_env``).

    Args:
        task_id: one of ``mbrl_ros.tasks.TASK_IDS`` (or its gym id).
        randomize_dynamics: re-draw ROBEL's RandomDynamics parameters at every reset.
        observation_noise: ROBEL's ``sim_observation_noise`` (uniform noise of this fraction of
            each joint range on the joint readings; ROBEL's *RandomDynamics tasks use 0.05).
        success_threshold: D'Claw success radius in rad (default 0.1).
        render_mode: ``None`` or ``"rgb_array"``; ``width``/``height`` size the frames.

    ``reset(options={"qpos": (nq,), "qvel": (nv,), "target": float})`` sets the exact state
    (any subset; the rest is sampled as usual); ``target`` is the valve target angle (D'Claw)
    or the target yaw (D'Kitty orient). ``step`` returns ``info["success"]``,
    ``info["reward_terms"]`` and ``info["sim_warning"]`` (None, or the MuJoCo warnings of a
    step that went unstable: such a step is also ``truncated`` and ``info["aborted"]``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        task_id: str,
        *,
        randomize_dynamics: bool = False,
        observation_noise: Optional[float] = None,
        success_threshold: Optional[float] = None,
        render_mode: Optional[str] = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        from mbrl_ros.tasks import get_task

        self.task: Any = get_task(task_id, success_threshold=success_threshold)  # a ROBEL task (its robot's API)
        info = self.task.info
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if observation_noise is not None and not (math.isfinite(observation_noise) and observation_noise >= 0):
            raise ValueError(f"observation_noise must be a number >= 0, got {observation_noise}")
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        self.render_mode = render_mode
        self.width, self.height = int(width), int(height)
        self.randomize_dynamics = bool(randomize_dynamics)
        self.observation_noise = observation_noise

        self.sim = RobelSim(info.robot, task_id=info.task_id, frame_skip=info.frame_skip)
        self.model, self.data = self.sim.model, self.sim.data
        self._act = self.sim.actuated
        self._noise_amp: Optional[tuple[np.ndarray, np.ndarray, float]] = None
        if observation_noise:
            lim = self.task.limits
            self._noise_amp = (
                observation_noise * (lim.qpos_high - lim.qpos_low),
                observation_noise * 2.0 * lim.qvel_max,
                observation_noise * 2.0 * math.pi,  # D'Claw valve group: qpos_range (-pi, pi)
            )

        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(info.act_dim,), dtype=np.float32)
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, shape=(info.obs_dim,), dtype=np.float64)

        # Pristine model values: DR draws around them, set_physics(name, None) restores them.
        m = self.model
        self._pristine = {
            "gainprm": m.actuator_gainprm.copy(),
            "biasprm": m.actuator_biasprm.copy(),
            "dof_damping": m.dof_damping.copy(),
            "dof_frictionloss": m.dof_frictionloss.copy(),
            "geom_friction": m.geom_friction.copy(),
            "body_pos": m.body_pos.copy(),
            "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(),
            "hfield_data": m.hfield_data.copy(),
        }
        self._physics_overrides: dict[str, Any] = {}
        self._initial_range = getattr(self.task, "initial_range", None)
        self._target_range = getattr(self.task, "target_range", None)
        self._target_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "target")
        self._target_site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "target")
        self._mount_body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "mount")

        self._renderer: Optional[mujoco.Renderer] = None
        self._target = 0.0
        self._target_pos = np.zeros(2)
        self._last_action = np.zeros(info.act_dim)
        self._qvel_reading = np.zeros(info.act_dim)  # actuated qvel as observed (noise included)
        self._aux = np.zeros(self.task.aux_dim)  # model-only measurements of the last observation
        self._obs: Optional[np.ndarray] = None
        self._steps = 0

    # -- reset ----------------------------------------------------------------------------
    def reset(
        self, *, seed: Optional[int] = None, options: Optional[Mapping[str, Any]] = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: sample ROBEL's reset (seeded), or set the state given in ``options``."""
        super().reset(seed=seed)
        exact = self._validate_options(options)
        if self.randomize_dynamics:
            self._randomize()
        init: InitialState = self.task.initial_state(self.np_random, self._initial_range, self._target_range)
        qpos = exact.get("qpos", init.qpos)
        qvel = exact.get("qvel", init.qvel)
        target = exact.get("target", init.target)
        # An explicit state is taken as is: no settling (D'Kitty stand settles sampled poses only).
        settle = 0 if "qpos" in exact else init.settle_substeps

        self.sim.set_state(qpos, qvel)
        self._set_target(target)
        sim_warnings: list[str] = []
        if settle:
            self.data.ctrl[:] = self.data.qpos[self._act]
            sim_warnings = self.sim.advance(settle)
        self._last_action = np.zeros(self.task.info.act_dim)
        self._steps = 0
        obs = self._observe()
        self._obs = obs
        info: dict[str, Any] = {"target": self._target, "success": bool(self.task.success(obs)), "sim_warning": None}
        if self.task.aux_dim:
            info["aux"] = self._aux.copy()
        if sim_warnings:
            info["sim_warning"] = self._report(sim_warnings, "reset")
            info["aborted"] = True
        return obs.copy(), info

    def _validate_options(self, options: Optional[Mapping[str, Any]]) -> dict[str, Any]:
        if options is None:
            return {}
        if not isinstance(options, Mapping):
            raise ValueError(f"reset options must be a dict, got {type(options).__name__}")
        unknown = set(options) - {"qpos", "qvel", "target"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; valid: 'qpos', 'qvel', 'target'")
        out: dict[str, Any] = {}
        if options.get("qpos") is not None:
            out["qpos"] = _finite_vector(options["qpos"], self.model.nq, "reset option 'qpos'")
        if options.get("qvel") is not None:
            out["qvel"] = _finite_vector(options["qvel"], self.model.nv, "reset option 'qvel'")
        if options.get("target") is not None:
            if self._target_range is None:
                raise ValueError(f"{self.task.info.task_id} has no target to set")
            out["target"] = _finite_scalar(options["target"], "reset option 'target'")
        return out

    def _set_target(self, target: float) -> None:
        self._target = self.task.canonical_target(target)
        if self.task.info.robot == "dclaw":
            # Visual marker only (ROBEL: body 'target' quat = euler2quat(0, 0, target)).
            half = 0.5 * self._target
            self.model.body_quat[self._target_body] = (math.cos(half), 0.0, 0.0, math.sin(half))
        elif self._target_site >= 0:
            self._target_pos = self.task.target_position(self._target)
            self.model.site_pos[self._target_site] = (self._target_pos[0], self._target_pos[1], 0.0)
            mujoco.mj_forward(self.model, self.data)

    # -- step -----------------------------------------------------------------------------
    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One 0.1 s control step: ROBEL's action pipeline, 40 substeps, observation, reward.

        A wrong shape or non-finite action raises ``ValueError`` before MuJoCo is touched.
        """
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        task, data = self.task, self.data
        a, q = task.action_to_targets(action, data.qpos[self._act])
        data.ctrl[:] = q
        sim_warnings = self.sim.advance()
        self._last_action = a
        prev = self._obs
        obs = self._observe()
        self._obs = obs
        self._steps += 1
        truncated = self._steps >= task.info.horizon
        info: dict[str, Any] = {"sim_warning": None}
        if not np.isfinite(obs).all():
            sim_warnings = sim_warnings + ["non-finite observation"]
            obs = np.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0)
            self._obs = obs
        elif not sim_warnings and (speed := float(np.abs(data.qvel).max())) > MAX_PLAUSIBLE_SPEED:
            sim_warnings = [f"implausible speed {speed:.3g} > {MAX_PLAUSIBLE_SPEED:g}"]
        if sim_warnings:
            info["sim_warning"] = self._report(sim_warnings, f"step {self._steps}")
            info["aborted"] = True
            truncated = True
        terms, done, success = task.evaluate(prev, a, obs, next_qvel=self._qvel_reading)
        info["reward_terms"] = terms = {k: float(v) for k, v in terms.items()}
        info["success"] = bool(success)
        if task.aux_dim:
            info["aux"] = self._aux.copy()
        reward = math.fsum(terms.values())
        terminated = bool(done)
        return obs.copy(), reward, terminated, truncated, info

    def _report(self, names: Sequence[str], where: str) -> str:
        msg = f"{self.task.info.task_id}: MuJoCo {', '.join(names)} at {where} (state is unreliable)"
        warnings.warn(msg, SimulationWarning, stacklevel=3)
        return msg

    def _observe(self) -> np.ndarray:
        d, act = self.data, self._act
        qpos, qvel = d.qpos[act].copy(), d.qvel[act].copy()
        if self._noise_amp is not None:
            rng, (pos_amp, vel_amp, obj_amp) = self.np_random, self._noise_amp
            qpos += pos_amp * rng.uniform(-0.5, 0.5, size=qpos.shape)
            qvel += vel_amp * rng.uniform(-0.5, 0.5, size=qvel.shape)
        self._qvel_reading = qvel
        if self.task.info.robot == "dclaw":
            theta = float(d.qpos[18])
            if self._noise_amp is not None:
                theta += obj_amp * float(self.np_random.uniform(-0.5, 0.5))
            state = {
                "claw_qpos": qpos,
                "claw_qvel": qvel,
                "object_qpos": theta,
                "last_action": self._last_action,
                "target": self._target,
            }
        else:
            state = {
                "root_qpos": d.qpos[0:6],
                "root_qvel": d.qvel[0:6],
                "kitty_qpos": qpos,
                "kitty_qvel": qvel,
                "last_action": self._last_action,
                "target_pos": self._target_pos,
            }
        self._aux = self.task.aux_observation(state)
        return self.task.observation(state)

    @property
    def deterministic_reset(self) -> bool:
        """Every reset gives the same start state (a fixed task, no dynamics randomisation, no
        observation noise): a deterministic policy then plays the same episode every time."""
        return (
            self.task.reset_is_deterministic(self._initial_range, self._target_range)
            and not self.randomize_dynamics
            and self._noise_amp is None
        )

    # -- state, goals and physics for experiments -----------------------------------------
    def get_state(self) -> dict[str, Any]:
        """``{"qpos", "qvel", "target"}``: pass it as ``reset(options=...)`` to return here."""
        return {"qpos": self.data.qpos.copy(), "qvel": self.data.qvel.copy(), "target": self._target}

    def set_target_distribution(self, low: float, high: float) -> None:
        """Goal distribution of later resets: target ~ U(low, high) (rad; low == high: fixed).

        D'Claw: absolute valve target angle (ROBEL random: (2pi/3, 4pi/3), fixed: pi), wrapped
        to [-pi, pi). D'Kitty orient: target yaw (ROBEL random: (2pi/3, 4pi/3)).
        """
        self._target_range = self._checked_range(low, high, "target", self.task.target_range)

    def set_initial_distribution(self, low: float, high: float) -> None:
        """Initial valve angle (D'Claw) or torso yaw (D'Kitty orient) ~ U(low, high) for later resets."""
        self._initial_range = self._checked_range(low, high, "initial", self.task.initial_range)

    def _checked_range(self, low: float, high: float, what: str, default: Any) -> tuple[float, float]:
        if default is None:
            raise ValueError(f"{self.task.info.task_id} has no {what} angle distribution")
        lo, hi = _finite_scalar(low, f"{what} low"), _finite_scalar(high, f"{what} high")
        if lo > hi:
            raise ValueError(f"{what} distribution needs low <= high, got ({lo}, {hi})")
        return (lo, hi)

    @property
    def target_distribution(self) -> Optional[tuple[float, float]]:
        return self._target_range

    def physics(self) -> dict[str, Any]:
        """Current values of the parameters :meth:`set_physics` can change."""
        m, act = self.model, self._act
        out: dict[str, Any] = {
            "actuator_gain": m.actuator_gainprm[:, 0].tolist(),
            "joint_damping": m.dof_damping[act].tolist(),
            "joint_frictionloss": m.dof_frictionloss[act].tolist(),
            "geom_friction": m.geom_friction[:, 0].tolist(),
        }
        if self.task.info.robot == "dclaw":
            out["valve_damping"] = float(m.dof_damping[18])
            out["valve_frictionloss"] = float(m.dof_frictionloss[18])
        else:
            out["total_mass"] = float(m.body_mass.sum())
        return out

    def set_physics(self, name: str, value: Union[float, Sequence[float], None]) -> None:
        """Change one physical parameter now (mid-episode is fine); it persists across resets
        (applied after any domain randomisation). ``value=None`` restores the scene's value.
        Names: see ``PHYSICS_PARAMS`` (actuator_gain, joint_damping, valve_damping, ...)."""
        robot = self.task.info.robot
        if name not in PHYSICS_PARAMS or robot not in PHYSICS_PARAMS[name][0]:
            valid = [k for k, (robots, _) in PHYSICS_PARAMS.items() if robot in robots]
            raise ValueError(f"unknown physics parameter {name!r} for {robot}; valid: {', '.join(valid)}")
        if value is None:
            self._physics_overrides.pop(name, None)
            self._restore(name)
            return
        n = {"joint_damping": self.sim.n_actuated, "joint_frictionloss": self.sim.n_actuated}.get(name, 1)
        try:
            v = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be a number" + (f" or {n} numbers" if n > 1 else "") + f", got {value!r}"
            ) from None
        if v.ndim == 0:
            v = np.full(n, float(v))
        if v.shape != (n,):
            raise ValueError(f"{name} takes a scalar" + (f" or {n} values" if n > 1 else "") + f", got shape {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite, got {value!r}")
        strictly_positive = name in ("actuator_gain", "total_mass")
        if np.any(v <= 0) if strictly_positive else np.any(v < 0):
            raise ValueError(f"{name} must be {'> 0' if strictly_positive else '>= 0'}, got {value!r}")
        self._physics_overrides[name] = v
        self._apply_physics(name, v)

    def _apply_physics(self, name: str, v: np.ndarray) -> None:
        m, act = self.model, self._act
        if name == "actuator_gain":
            m.actuator_gainprm[:, 0] = v[0]
            m.actuator_biasprm[:, 1] = -v[0]  # position servo: force = kp * (ctrl - q)
        elif name == "joint_damping":
            m.dof_damping[act] = v
        elif name == "joint_frictionloss":
            m.dof_frictionloss[act] = v
        elif name == "geom_friction":
            m.geom_friction[:, 0] = v[0]
        elif name == "valve_damping":
            m.dof_damping[18] = v[0]
        elif name == "valve_frictionloss":
            m.dof_frictionloss[18] = v[0]
        elif name == "total_mass":
            mujoco.mj_setTotalmass(m, float(v[0]))

    def _restore(self, name: str) -> None:
        m, p, act = self.model, self._pristine, self._act
        if name == "actuator_gain":
            m.actuator_gainprm[:] = p["gainprm"]
            m.actuator_biasprm[:] = p["biasprm"]
        elif name in ("joint_damping", "valve_damping"):
            idx = act if name == "joint_damping" else 18
            m.dof_damping[idx] = p["dof_damping"][idx]
        elif name in ("joint_frictionloss", "valve_frictionloss"):
            idx = act if name == "joint_frictionloss" else 18
            m.dof_frictionloss[idx] = p["dof_frictionloss"][idx]
        elif name == "geom_friction":
            m.geom_friction[:] = p["geom_friction"]
        elif name == "total_mass":
            m.body_mass[:] = p["body_mass"]
            m.body_inertia[:] = p["body_inertia"]

    def _randomize(self) -> None:
        """ROBEL's RandomDynamics draws (absolute values from fixed ranges), then overrides."""
        rng: Any = self.np_random  # ranges come as (lo, hi) pairs from the tables
        m = self.model
        key = "dclaw" if self.task.info.robot == "dclaw" else self.task.scene
        r = DYNAMICS_RANDOMIZATION[key]
        dofs = list(range(self._act.start, self._act.stop)) + ([18] if key == "dclaw" else [])
        size = 1 if r["dofs_all_same"] else len(dofs)
        m.dof_damping[dofs] = rng.uniform(*r["dof_damping"], size=size)
        m.dof_frictionloss[dofs] = rng.uniform(*r["dof_frictionloss"], size=size)
        kp = rng.uniform(*r["kp"])
        m.actuator_gainprm[:, 0] = kp
        m.actuator_biasprm[:, 1] = -kp
        for axis, bounds in enumerate(_GEOM_FRICTION):
            m.geom_friction[:, axis] = rng.uniform(*bounds)
        if "mount_offset" in r:
            b = self._mount_body
            m.body_pos[b] = self._pristine["body_pos"][b] + rng.uniform(*r["mount_offset"], size=3)
        if "total_mass" in r:
            mujoco.mj_setTotalmass(m, rng.uniform(*r["total_mass"]))
        if "hfield" in r and m.nhfield:
            m.hfield_data[:] = rng.uniform(*r["hfield"], size=m.hfield_data.shape)
            if self._renderer is not None:
                mujoco.mjr_uploadHField(m, self._renderer._mjr_context, 0)
        for name, v in self._physics_overrides.items():
            self._apply_physics(name, v)

    # -- rendering ------------------------------------------------------------------------
    def render(self) -> Optional[np.ndarray]:
        """An RGB frame (height, width, 3) when ``render_mode="rgb_array"``.

        Offscreen rendering needs an OpenGL backend chosen before ``import mujoco``
        (e.g. ``MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa``); ``mbrl-ros render`` sets it.
        """
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            vis = self.model.vis.global_
            vis.offwidth = max(vis.offwidth, self.width)
            vis.offheight = max(vis.offheight, self.height)
            # ROBEL's scenes ask for 4096 px shadow maps and 4x multisampling: minutes per GIF on
            # software OpenGL. 1024 px and 2 samples look the same at GIF sizes, ~5x faster.
            self.model.vis.quality.shadowsize = min(self.model.vis.quality.shadowsize, 1024)
            self.model.vis.quality.offsamples = min(self.model.vis.quality.offsamples, 2)
            self._renderer = mujoco.Renderer(self.model, height=self.height, width=self.width)
            self._camera = self._make_camera()
        self._update_markers()
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render().copy()

    def _make_camera(self) -> Union[mujoco.MjvCamera, str]:
        if self.task.info.robot == "dkitty":
            return "trackingY"  # the scene's own camera, following the torso
        cam = mujoco.MjvCamera()
        cam.type = mujoco.mjtCamera.mjCAMERA_FREE
        cam.lookat[:] = (0.0, 0.0, 0.17)
        cam.distance, cam.azimuth, cam.elevation = 0.8, 90.0, -25.0
        return cam

    def _update_markers(self) -> None:
        """D'Kitty orient's current/target heading markers (visual only, as ROBEL moves them)."""
        if self.task.scene != "dkitty-orient" or self._obs is None:
            return
        m = self.model
        bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "markers")
        m.body_pos[bid][:2] = self.data.qpos[0:2]
        for name, vec in (("current_angle", self._obs[49:51]), ("target_angle", self._obs[51:53])):
            half = 0.5 * math.atan2(vec[1], vec[0])
            m.body_quat[mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, name)] = (math.cos(half), 0, 0, math.sin(half))
        mujoco.mj_kinematics(m, self.data)

    def close(self) -> None:
        """Release the offscreen renderer (its finaliser would otherwise complain at exit)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()
