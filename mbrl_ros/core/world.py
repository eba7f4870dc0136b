"""Running a policy in the world (simulator or robot): data collection and evaluation.

The world is any gymnasium env following the project's env contract (``info["success"]``,
``env.task``, truncation at the task horizon; a hardware env may add ``info["aborted"]``).
Every episode is reset with a seed drawn from the caller's generator, so a run (and a resumed
run) sees exactly the same worlds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
from colorednoise import powerlaw_psd_gaussian

from mbrl_ros.core.buffers import Episode

ActFn = Callable[[np.ndarray], np.ndarray]


class BadAction(ValueError):
    """A policy produced an action of the wrong shape or with non-finite values."""


StepHook = Callable[[int], None]
AfterStepHook = Callable[[np.ndarray, dict], None]


def run_episode(
    env: Any,
    act: ActFn,
    seed: int,
    episode_id: str,
    policy_version: int,
    robot_id: str = "sim",
    before_step: Optional[StepHook] = None,
    after_step: Optional[AfterStepHook] = None,
) -> Episode:
    """One episode of ``act`` in ``env`` (reset with ``seed``) until termination or truncation.

    The one episode runner of the project: ``mbrl-ros train``, the evaluation and the ROS
    collectors (sim and robot) all play episodes through it. ``before_step(t)`` runs before
    step t (the collectors pace real time there and raise to abort on an e-stop);
    ``after_step(obs, info)`` after it (publish joint states). The action sent to the world is
    clipped to [-1, 1] and stored as sent.

    A faulted step (``info["aborted"]``: the robot's safety layer tripped, or the simulation went
    unstable) ends the episode with ``aborted=True`` and is not recorded: the world returns no real
    observation for it (the robot repeats its last good one with reward 0), while every step
    before it is real data. An episode that faults on its first step has no transitions.
    """
    obs, info = env.reset(seed=int(seed))
    observations, actions, rewards = [obs], [], []
    aux = [info["aux"]] if "aux" in info else None  # model-only measurements (task.aux_names)
    terminated = truncated = aborted = False
    success: Optional[bool] = None
    t = 0
    while not (terminated or truncated):
        if before_step is not None:
            before_step(t)
        applied = np.clip(np.asarray(act(obs), dtype=np.float64), -1.0, 1.0)
        obs, reward, terminated, truncated, info = env.step(applied)
        if after_step is not None:
            after_step(obs, info)
        if info.get("aborted", False):
            aborted, success = True, False  # an episode that did not finish has not succeeded
            break
        observations.append(obs)
        actions.append(applied)
        rewards.append(reward)
        if aux is not None:
            aux.append(info["aux"])
        success = bool(info.get("success", False))
        t += 1
    return Episode(
        obs=np.asarray(observations),
        actions=np.asarray(actions) if actions else np.zeros((0, np.size(applied))),
        rewards=np.asarray(rewards, dtype=np.float64),
        terminated=bool(terminated),
        episode_id=episode_id,
        policy_version=policy_version,
        robot_id=robot_id,
        aborted=aborted,
        success=success,
        aux=None if aux is None else np.asarray(aux),
    )


@dataclass(frozen=True)
class BehaviorNoise:
    """How the data-collecting policy explores around the deployed policy.

    Real data only trains the model (the policy player learns from synthetic rollouts), so the
    behaviour noise may differ from the policy's own Gaussian without biasing its gradient.
    ``color`` is the exponent beta of the noise's power spectrum 1/f^beta over an episode
    (0: white, independent per step; 1: pink, Eberhard et al., ICLR 2023: slow drifts that
    move the system further than white noise of the same variance, which the servos' position
    loops low-pass away); ``min_std`` floors the noise's std per action dimension (0: the
    policy's own std), so exploration does not die with the policy's std; ``mean_fraction``: the
    share of episodes (drawn per episode) played with the deployed policy's mean action, no noise,
    so the model also sees the path the deterministic policy takes (the one evaluated and deployed).
    """

    color: float = 0.0
    min_std: float = 0.0
    mean_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.color <= 2.0):
            raise ValueError(f"behaviour noise color must be in [0, 2] (white .. brown), got {self.color}")
        if not (0.0 <= self.min_std <= 1.0):
            raise ValueError(f"behaviour noise min_std must be in [0, 1], got {self.min_std}")
        if not (0.0 <= self.mean_fraction <= 1.0):
            raise ValueError(f"behaviour noise mean_fraction must be in [0, 1], got {self.mean_fraction}")


def behavior_policy(
    act: ActFn,
    act_dim: int,
    log_std: Optional[np.ndarray],
    rng: np.random.Generator,
    noise: BehaviorNoise = BehaviorNoise(),
    horizon: int = 0,
) -> ActFn:
    """The data-collecting policy of one episode: the deployed deterministic policy ``act``
    (checked: shape and finite values, else :class:`BadAction`) plus noise of std
    ``max(exp(log_std), noise.min_std)`` drawn from ``rng`` (none when ``log_std`` is None),
    white or coloured over ``horizon`` steps (:class:`BehaviorNoise`). The collectors and
    ``mbrl-ros train`` both collect with it, so a seed gives the same exploration everywhere."""
    std = None if log_std is None else np.maximum(np.exp(np.asarray(log_std, dtype=np.float64)), noise.min_std)
    # drawn only when asked for: a fraction of 0 leaves the episode's random stream as it was
    if std is not None and noise.mean_fraction > 0.0 and rng.random() < noise.mean_fraction:
        std = None  # this episode plays the mean action
    coloured = std is not None and noise.color > 0.0
    if coloured and horizon < 2:
        raise ValueError(f"coloured behaviour noise needs the episode horizon (>= 2 steps), got {horizon}")
    block: list[np.ndarray] = []  # the episode's coloured noise, [horizon, act_dim], drawn on the first step

    def unit_noise() -> np.ndarray:
        if not coloured:
            return rng.standard_normal(act_dim)
        if not block:  # the whole episode's sequence at once (its spectrum spans the episode)
            block.extend(powerlaw_psd_gaussian(noise.color, (act_dim, horizon), random_state=rng).T)
        return block.pop(0) if len(block) > 1 else block[0]  # past the horizon: hold the last value

    def behave(obs: np.ndarray) -> np.ndarray:
        a = np.asarray(act(obs), dtype=np.float64)
        if a.shape != (act_dim,) or not np.all(np.isfinite(a)):
            raise BadAction(f"bad action {a} (expected {act_dim} finite values)")
        return a if std is None else a + std * unit_noise()

    return behave


def collect_episodes(
    env: Any,
    act: ActFn,
    n_samples: int,
    rng: np.random.Generator,
    policy_version: int,
    id_prefix: str,
    robot_id: str = "sim",
) -> list[Episode]:
    """Whole episodes until at least ``n_samples`` transitions were collected."""
    if n_samples <= 0:
        raise ValueError(f"n_samples must be > 0, got {n_samples}")
    episodes: list[Episode] = []
    total = 0
    while total < n_samples:
        seed = int(rng.integers(0, 2**31 - 1))
        ep = run_episode(env, act, seed, f"{id_prefix}-{len(episodes)}", policy_version, robot_id)
        episodes.append(ep)
        total += len(ep)
    return episodes


def random_policy(act_dim: int, rng: np.random.Generator) -> ActFn:
    """Uniform random actions in [-1, 1] (the exploratory policy of MAL + random noise)."""
    return lambda _obs: rng.uniform(-1.0, 1.0, act_dim)


EVAL_SEED_BASE = 1_000_003  # evaluation worlds are disjoint from the training worlds' seed stream


def evaluation_seeds(episodes: int) -> list[int]:
    """The reset seeds of a task's evaluation episodes: fixed by the task, not by the training
    seed, so every run and every algorithm of a task is evaluated on the same start states and
    targets."""
    if episodes <= 0:
        raise ValueError(f"evaluation needs at least one episode, got {episodes}")
    return [EVAL_SEED_BASE + i for i in range(int(episodes))]


def evaluate(env: Any, act: ActFn, seeds: Sequence[int]) -> dict:
    """Deterministic evaluation: success at the final step, return and the task's final goal
    error (``task.goal_error``), averaged over episodes.

    A world whose resets are all the same (``env.deterministic_reset``, e.g. D'Claw turn fixed)
    plays one episode for all ``seeds``: a deterministic policy in a deterministic simulator
    would play the same episode every time (``unique_episodes`` says how many were played).
    """
    if len(seeds) == 0:
        raise ValueError("evaluation needs at least one episode")
    t0 = time.perf_counter()
    played = seeds[:1] if getattr(env, "deterministic_reset", False) else seeds
    succ, rets, lengths, errors = [], [], [], []
    for i, seed in enumerate(played):
        ep = run_episode(env, act, seed, f"eval-{i}", -2)
        succ.append(bool(ep.success))
        rets.append(ep.ret)
        lengths.append(len(ep))
        err = env.task.goal_error(ep.obs[-1]) if hasattr(env, "task") else None
        if err is not None:
            errors.append(float(err))
    return {
        "success": float(np.mean(succ)),
        "return": float(np.mean(rets)),
        "return_std": float(np.std(rets)),
        "final_error": float(np.mean(errors)) if errors else None,
        "successes": [bool(x) for x in succ],
        "episodes": len(seeds),
        "unique_episodes": len(played),
        "mean_length": float(np.mean(lengths)),
        "eval_s": time.perf_counter() - t0,
    }
