"""Hyper-parameters of one game: a typed dataclass, loaded from ``config/<algo>.yaml``.

Each algorithm has one flat YAML file named after it (``config/pal.yaml``, ``config/mal.yaml``,
...) holding the paper's defaults (appendix B, tables 1-3); a game that is another plus a few
keys (the MAL fixes) says ``extends: mal`` and holds only those keys. A file may carry a ``tasks:``
mapping with per-task values (applied after the top-level ones); a task may also have its own
``config/task-<task>.yaml`` (common values, then per algorithm under ``algos:``), applied next;
``key=value`` overrides from the command line (``--set``) are applied last. Per-task horizon rules: the number of real
samples per iteration is ``N = min(samples_per_iter_horizons * H, samples_per_iter_cap)`` unless
``samples_per_iter`` is set explicitly, and the synthetic rollout horizon is ``min(H, 500)``
unless ``rollout_horizon`` is set.

Unknown keys and bad values raise ``ValueError`` with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import yaml

from mbrl_ros.core.schedule import GAMES, game_spec

AGENT_REWARD_SCALES = ("fitted", "loss", "unit")  # units of MAL + agent reward's return term (model_player.py)
# whose return MAL + agent reward pays the model for (model_player.py): the present policy along short
# rollouts from data states, or a soft best response over intent-shifted copies of it from episode starts
AGENT_REWARD_FOLLOWERS = ("policy", "soft")
# where the return term may move the model: everywhere, or only where the members disagree more
# than on the data (model_rollout.differentiable_return's gate_ref)
AGENT_REWARD_GATES = ("none", "disagreement")

if typing.TYPE_CHECKING:
    from mbrl_ros.core.world import BehaviorNoise


@dataclass
class GameConfig:
    """All hyper-parameters of one Stackelberg (or independent) game between policy and model."""

    # --- the game -------------------------------------------------------------------------
    algo: str = "pal"  # pal | mal | gda | br | mal-agent-reward | mal-noise
    task_id: str = "dclaw-turn-fixed"  # task id (see `mbrl-ros tasks`)
    seed: int = 0  # seeds numpy, torch and every episode reset
    samples: int = 20000  # total budget of real (world) transitions used for learning
    n_init: int = 2500  # N_init: transitions collected with the initial policy before iteration 1
    samples_per_iter: int = 0  # N: real transitions per iteration; 0 = horizon rule below
    samples_per_iter_horizons: int = 5  # horizon rule: N = min(this * H, cap)
    samples_per_iter_cap: int = 1000  # horizon rule cap on N
    buffer_size: int = 2500  # B: FIFO capacity in transitions (fifo games); 0 = unbounded
    max_iterations: int = 0  # stop after this many iterations as well (0 = only the sample budget)
    stop_success: float = 0.0  # also stop once eval success >= this for stop_success_iters iterations (0 = off)
    stop_success_iters: int = 3  # consecutive iterations for stop_success

    # --- model player: ensemble of MLP dynamics models (appendix B) ------------------------
    ensemble_size: int = 4  # number of members, trained in one batched computation
    model_hidden: list[int] = field(default_factory=lambda: [512, 512])  # hidden widths per member
    model_activation: str = "relu"  # relu | silu | tanh
    model_lr: float = 1e-3  # Adam learning rate
    model_weight_decay: float = 0.0  # L2 penalty on the weights (Adam weight_decay)
    model_batch_size: int = 200  # minibatch per member and gradient step
    model_epochs_aggressive: int = 100  # epochs of a best-response (follower) fit
    model_epochs_conservative: int = 10  # epochs of a conservative (leader) fit, warm start
    model_min_steps: int = 100  # every fit takes at least this many gradient steps
    model_max_steps: int = 100000  # and at most this many
    model_holdout: float = 0.0  # fraction of episodes held out for early stopping of aggressive fits (0 = off)
    model_eval_every: int = 25  # gradient steps between held-out evaluations
    model_patience: int = 4  # held-out evaluations without improvement before an aggressive fit stops
    model_reinit: bool = False  # re-initialise the members before every fit (no warm start)
    model_clamp_margin: float = 1.0  # rollout states clamped to the data box widened by this x its width
    model_symmetry: bool = True  # members read a task's symmetric angles mod their period (D'Claw's 3-spoke valve)
    learned_reward: bool = False  # predict the reward with the ensemble instead of task.reward
    model_bf16: bool = False  # bfloat16 autocast of the fit's matmuls (faster on CPUs with AVX512-BF16)
    model_goal_share: float = 0.0  # share of the fit's loss on the task's goal dims (0 = a plain mean over dims)
    # each minibatch draws this share from the newest model_recent_window transitions (0 = uniform
    # over the buffer): an aggregating (MAL) model still sees all data but tracks the policy's states
    model_recent_share: float = 0.0
    model_recent_window: int = 2500

    # --- policy player: model-based NPG (Subroutine 1, table 1) ----------------------------
    policy_hidden: list[int] = field(default_factory=lambda: [64, 64])  # tanh MLP for the mean
    policy_init_log_std: float = -1.0  # initial log std of the Gaussian (std = exp(-1))
    policy_min_log_std: float = -2.5  # the learned log std is kept above this
    # ... and below this (2.0: no cap in practice). A cap stops the model rewarding exploration
    # noise the world does not (D'Kitty stand: std 0.37 -> 1.13 uncapped); it did not change
    # what D'Kitty stand learns (docs/algorithms.md), so it is off by default.
    policy_max_log_std: float = 2.0
    policy_symmetry: bool = False  # policy and value read a task's symmetric angles mod their period (D'Claw's valve)
    policy_mirror: bool = (
        False  # the policy's mean is equivariant under the task's mirror (D'Claw: turns both ways alike)
    )
    value_hidden: list[int] = field(default_factory=lambda: [128, 128])  # value MLP
    value_lr: float = 1e-3  # Adam learning rate of the value MLP
    value_epochs: int = 2  # passes over the synthetic data per value refit
    value_batch_size: int = 512  # minibatch of the value refit
    gamma: float = 0.995  # discount
    gae_lambda: float = 0.97  # GAE lambda
    npg_steps_aggressive: int = 25  # K of a best-response (follower) policy update
    npg_steps_conservative: int = 4  # K of a conservative (leader) policy update
    npg_trajectories: int = 200  # synthetic start states per NPG step (rolled out in every member)
    rollout_horizon: int = 0  # synthetic horizon; 0 = min(task horizon, 500)
    npg_step_size: float = 0.05  # delta of the normalised step sqrt(delta / g^T F^-1 g)
    cg_iters: int = 10  # conjugate-gradient iterations (the reference NPG default; 25 changes little)
    cg_damping: float = 1e-3  # damping added to the Fisher matrix
    fvp_fraction: float = 0.25  # fraction of synthetic samples used in Fisher-vector products
    start_state_mix: float = 0.0  # fraction of start states drawn from intermediate real states
    entropy_coef: float = 0.0  # entropy bonus in the NPG surrogate (units of whitened advantages)
    optimism_coef: float = 0.0  # ensemble-disagreement advantage weight (whitened units; 0 off, < 0 pessimism)
    follower_restarts: int = 0  # fresh policies a policy follower also trains; the worst member's best wins

    # --- data collection: the behaviour noise around the deployed policy (core.world.BehaviorNoise)
    explore_noise_color: float = 0.0  # spectrum exponent over an episode: 0 white, 1 pink, 2 brown
    explore_min_std: float = 0.0  # floor of the behaviour noise's std (0: the policy's own std)
    explore_mean_fraction: float = 0.0  # share of collected episodes played with the mean action (no noise)

    # --- MAL fixes (poster) ----------------------------------------------------------------
    alpha: float = 0.75  # mixing weight of the model objective for mal-agent-reward / mal-noise
    agent_reward_horizon: int = 8  # horizon of the differentiable model return (mal-agent-reward)
    agent_reward_batch: int = 64  # start states per step of the differentiable return
    # the return term's unit: fitted = the per-dimension loss after a plain half of the fit; loss = the
    # per-dimension loss before the fit; unit = order 1 (model_player.py)
    agent_reward_scale: str = "fitted"
    agent_reward_follower: str = "policy"  # policy | soft (see AGENT_REWARD_FOLLOWERS)
    agent_reward_intents: int = 8  # soft: intent-shifted copies of the policy the soft best response weighs
    agent_reward_gate: str = "none"  # none | disagreement (see AGENT_REWARD_GATES)
    agent_reward_temperature: float = 0.1  # soft: temperature over J/R of the copies (0.1: near max)
    noise_policy: str = "mlp"  # random policies of mal-noise: mlp (fresh random network) | ou | uniform

    # --- the policy gate (mbrl_ros.core.gate; the same in mbrl-ros train and the graph) ------
    gate_probe_size: int = 256  # real observations (plus a noisy copy) the gate probes the candidate on
    gate_model_horizon: int = 10  # steps of the model-predicted joint-limit check (0 = off)
    gate_joint_margin: float = 0.1  # rad beyond a joint limit the model may predict
    gate_max_violation_fraction: float = 0.05  # allowed predicted violations beyond the deployed policy's
    gate_max_log_std: float = 1.0  # largest exploration log std a policy may carry
    gate_model_severity: str = "auto"  # abort | warn | off | auto (warn in simulation, abort on a robot)
    gate_model_confidence: float = (
        1.0  # a predicted violation counts when the members' mean clears the limit by this many stds
    )

    # --- evaluation and run ----------------------------------------------------------------
    eval_episodes: int = 50  # deterministic evaluation episodes (fixed by the task; one if its reset is deterministic)
    eval_every: int = 1  # iterations between evaluations (the first and the last are always evaluated)
    checkpoint_every: int = 1  # iterations between checkpoints (0 = only at the end)
    device: str = "auto"  # cpu | cuda | auto (CUDA when available)

    # --- the simulated world (sim-to-real experiments; mbrl_ros.tasks.sim) -------------------
    randomize_dynamics: bool = False  # training world re-draws ROBEL's RandomDynamics every episode (evaluation: not)
    dynamics: str = ""  # fixed physics of training and evaluation worlds: a PERTURBATIONS name or 'param:value/...'

    # -- derived values -----------------------------------------------------------------
    def n_per_iter(self, horizon: int) -> int:
        """N: real samples per iteration (explicit value, or the per-task horizon rule)."""
        if self.samples_per_iter > 0:
            return self.samples_per_iter
        return min(self.samples_per_iter_horizons * horizon, self.samples_per_iter_cap)

    def synthetic_horizon(self, horizon: int) -> int:
        """Synthetic rollout horizon: explicit value, or min(task horizon, 500)."""
        return self.rollout_horizon if self.rollout_horizon > 0 else min(horizon, 500)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "GameConfig":
        cfg = cls()
        apply_overrides(cfg, values)
        return cfg

    def validate(self) -> None:
        """Raise ValueError on any out-of-range value."""
        game_spec(self.algo)  # unknown algorithm -> ValueError listing the valid ones
        positive = [
            "samples",
            "ensemble_size",
            "model_batch_size",
            "model_min_steps",
            "model_max_steps",
            "model_eval_every",
            "model_patience",
            "value_epochs",
            "value_batch_size",
            "npg_trajectories",
            "cg_iters",
            "eval_episodes",
            "eval_every",
            "agent_reward_horizon",
            "agent_reward_batch",
            "samples_per_iter_horizons",
            "samples_per_iter_cap",
            "model_recent_window",
            "stop_success_iters",
        ]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        non_negative = [
            "n_init",
            "samples_per_iter",
            "buffer_size",
            "max_iterations",
            "model_epochs_aggressive",
            "model_epochs_conservative",
            "npg_steps_aggressive",
            "npg_steps_conservative",
            "rollout_horizon",
            "checkpoint_every",
            "model_weight_decay",
            "model_clamp_margin",
            "entropy_coef",
            "gate_model_horizon",
            "gate_joint_margin",
            "gate_model_confidence",
        ]
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ["model_lr", "value_lr", "npg_step_size", "cg_damping"]:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in [
            "gamma",
            "gae_lambda",
            "alpha",
            "start_state_mix",
            "fvp_fraction",
            "stop_success",
            "explore_mean_fraction",
            "model_recent_share",
        ]:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.model_goal_share < 1.0:
            raise ValueError(f"model_goal_share must be in [0, 1), got {self.model_goal_share}")
        if not 0.0 <= self.model_holdout < 0.5:
            raise ValueError(f"model_holdout must be in [0, 0.5), got {self.model_holdout}")
        if self.fvp_fraction <= 0:
            raise ValueError("fvp_fraction must be > 0")
        if self.model_min_steps > self.model_max_steps:
            raise ValueError(f"model_min_steps ({self.model_min_steps}) > model_max_steps ({self.model_max_steps})")
        if self.model_activation not in ("relu", "silu", "tanh"):
            raise ValueError(f"model_activation must be relu, silu or tanh, got {self.model_activation!r}")
        if self.gate_probe_size < 8:
            raise ValueError(f"gate_probe_size must be >= 8, got {self.gate_probe_size}")
        if not 0.0 <= self.gate_max_violation_fraction <= 1.0:
            raise ValueError(f"gate_max_violation_fraction must be in [0, 1], got {self.gate_max_violation_fraction}")
        if self.gate_model_severity not in ("auto", "abort", "warn", "off"):
            raise ValueError(f"gate_model_severity must be auto, abort, warn or off, got {self.gate_model_severity!r}")
        self.behavior_noise()  # raises on a bad colour or floor
        if not 0 <= self.follower_restarts <= 32:
            raise ValueError(f"follower_restarts must be in [0, 32], got {self.follower_restarts}")
        if not -10.0 <= self.optimism_coef <= 10.0:
            raise ValueError(f"optimism_coef must be in [-10, 10], got {self.optimism_coef}")
        if self.noise_policy not in ("mlp", "ou", "uniform"):
            raise ValueError(f"noise_policy must be mlp, ou or uniform, got {self.noise_policy!r}")
        if self.agent_reward_scale not in AGENT_REWARD_SCALES:
            raise ValueError(
                f"agent_reward_scale must be one of {', '.join(AGENT_REWARD_SCALES)}, got {self.agent_reward_scale!r}"
            )
        if self.agent_reward_follower not in AGENT_REWARD_FOLLOWERS:
            raise ValueError(
                f"agent_reward_follower must be one of {', '.join(AGENT_REWARD_FOLLOWERS)}, "
                f"got {self.agent_reward_follower!r}"
            )
        if self.agent_reward_gate not in AGENT_REWARD_GATES:
            raise ValueError(
                f"agent_reward_gate must be one of {', '.join(AGENT_REWARD_GATES)}, got {self.agent_reward_gate!r}"
            )
        if not 1 <= self.agent_reward_intents <= 64:
            raise ValueError(f"agent_reward_intents must be in [1, 64], got {self.agent_reward_intents}")
        if not self.agent_reward_temperature > 0:
            raise ValueError(f"agent_reward_temperature must be > 0, got {self.agent_reward_temperature}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"device must be cpu, cuda or auto, got {self.device!r}")
        for name in ["model_hidden", "policy_hidden", "value_hidden"]:
            widths = getattr(self, name)
            if not widths or any(int(w) <= 0 for w in widths):
                raise ValueError(f"{name} must be a non-empty list of positive widths, got {widths}")
        if self.policy_min_log_std >= self.policy_init_log_std + 10:
            raise ValueError("policy_min_log_std is above any sensible initial log std")
        if not self.policy_min_log_std < self.policy_max_log_std:
            raise ValueError(
                f"policy_max_log_std ({self.policy_max_log_std}) must exceed policy_min_log_std "
                f"({self.policy_min_log_std})"
            )

    def behavior_noise(self) -> "BehaviorNoise":
        """The collectors' exploration noise (the same in ``mbrl-ros train`` and the graph)."""
        from mbrl_ros.core.world import BehaviorNoise

        return BehaviorNoise(
            color=float(self.explore_noise_color),
            min_std=float(self.explore_min_std),
            mean_fraction=float(self.explore_mean_fraction),
        )


# ---------------------------------------------------------------------------------------------
# Loading

_FIELDS = {f.name: f for f in dataclasses.fields(GameConfig)}
_HINTS = typing.get_type_hints(GameConfig)


def config_dir() -> Path:
    """Directory of the algorithm YAML files (source tree, or the ament share directory)."""
    env = os.environ.get("MBRL_ROS_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "config")
    candidates.append(Path(sys.prefix) / "share" / "mbrl_ros" / "config")
    for c in candidates:
        if (c / "pal.yaml").is_file():
            return c
    raise ValueError(f"no algorithm config directory found (looked in {', '.join(map(str, candidates))})")


def _coerce(name: str, value: Any) -> Any:
    """Check/convert one value to the field's type; strings from ``--set`` are parsed as YAML."""
    if name not in _FIELDS:
        close = [k for k in _FIELDS if k.split("_")[0] == name.split("_")[0]]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown config key {name!r}{hint}")
    hint = _HINTS[name]
    if isinstance(value, str) and hint is not str:
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"{name}: cannot parse {value!r}: {exc}") from None
    bad = ValueError(f"{name}: expected {getattr(hint, '__name__', str(hint))}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if typing.get_origin(hint) is list:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise ValueError(f"{name}: expected a list of integers, got {value!r}")
        return [int(v) for v in value]
    raise bad  # pragma: no cover - every field type is handled above


def apply_overrides(cfg: GameConfig, overrides: Union[Mapping[str, Any], Iterable[str], None]) -> GameConfig:
    """Apply ``{key: value}`` or ``["key=value", ...]`` to ``cfg`` in place (validated types)."""
    if overrides is None:
        return cfg
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise ValueError(f"override {item!r} is not of the form key=value")
            key, value = item.split("=", 1)
            items.append((key.strip(), value.strip()))
    for key, value in items:
        setattr(cfg, key, _coerce(key, value))
    return cfg


TEST_TASKS = ("pointmass", "pointmass-fixed")  # tiny tasks of mbrl_ros.tasks.pointmass (tests only)


def canonical_task(task_id: str) -> str:
    """Short task id for a task id or gym id (ValueError listing the valid ids)."""
    if task_id in TEST_TASKS:
        return task_id
    from mbrl_ros.tasks import canonical_task_id

    return canonical_task_id(task_id)


def _algo_file(algo: str, directory: Path, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """``config/<algo>.yaml`` as a mapping, with ``extends: <base>`` resolved.

    A game that is another game plus a few keys (MAL + random noise is MAL whose model also
    sees random policies' data) names that game with ``extends:`` and writes only what differs,
    so it follows the base's defaults and measured per-task values instead of a stale copy.
    Top-level keys override the base's; under ``tasks:`` each task's keys override the base's
    keys for that task.
    """
    path = directory / f"{algo}.yaml"
    if not path.is_file():
        raise ValueError(f"no config file for algorithm {algo!r}: {path}")
    if algo in seen:
        raise ValueError(f"{path}: 'extends' forms a cycle: {' -> '.join((*seen, algo))}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at top level")
    tasks = data.pop("tasks", None) or {}
    if not isinstance(tasks, dict) or not all(isinstance(v, dict) or v is None for v in tasks.values()):
        raise ValueError(f"{path}: 'tasks' must map task ids to mappings of keys")
    base = data.pop("extends", None)
    if base is None:
        return {**data, "tasks": {t: dict(v or {}) for t, v in tasks.items()}}
    if not isinstance(base, str):
        raise ValueError(f"{path}: 'extends' must name another algorithm's file, got {base!r}")
    merged = _algo_file(base, directory, (*seen, algo))
    merged_tasks = merged.pop("tasks")
    for task, values in tasks.items():
        merged_tasks[task] = {**merged_tasks.get(task, {}), **(values or {})}
    return {**merged, **data, "tasks": merged_tasks}


def load_config(
    algo: str,
    task_id: str,
    overrides: Union[Mapping[str, Any], Iterable[str], None] = None,
    directory: Optional[Path] = None,
) -> GameConfig:
    """The configuration of ``algo`` on ``task_id``: YAML defaults, per-task values, then overrides."""
    game_spec(algo)  # unknown algorithm -> clear ValueError
    task_id = canonical_task(task_id)
    data = _algo_file(algo, Path(directory or config_dir()))
    per_task = data.pop("tasks")
    cfg = GameConfig()
    apply_overrides(cfg, data)
    if task_id in per_task:
        apply_overrides(cfg, per_task[task_id] or {})
    # a task may bring its own file, config/task-<task>.yaml: values for every algorithm, then
    # per algorithm under ``algos:`` (a new task is one file, not an entry in every algorithm's)
    task_path = Path(directory or config_dir()) / f"task-{task_id}.yaml"
    if task_path.is_file():
        task_data = yaml.safe_load(task_path.read_text()) or {}
        if not isinstance(task_data, dict):
            raise ValueError(f"{task_path}: expected a mapping at top level")
        per_algo = task_data.pop("algos", None) or {}
        apply_overrides(cfg, task_data)
        apply_overrides(cfg, per_algo.get(algo) or {})
    cfg.algo, cfg.task_id = algo, task_id
    apply_overrides(cfg, overrides)
    if cfg.algo != algo or cfg.task_id != task_id:
        raise ValueError("algo and task_id are chosen with --algo/--task, not with --set")
    cfg.validate()
    return cfg


__all__ = ["GameConfig", "load_config", "apply_overrides", "config_dir", "GAMES"]
