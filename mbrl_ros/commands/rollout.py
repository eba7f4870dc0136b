"""``mbrl-ros rollout``: run a policy (random, zero or an exported ONNX file) in a simulated task.

Example: ``mbrl-ros rollout --task dclaw-turn-fixed --policy random --episodes 5 --seed 0``.
Prints one line per episode (return, success, length) and a final JSON summary line
``{"task", "episodes", "mean_return", "success_rate", ...}``. An episode's success is the
task's success at its final step, as ROBEL reports it (``score/success-last-mean``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

HELP = "run a random, zero or ONNX policy in a simulated ROBEL task; prints returns and success"

Policy = Callable[[np.ndarray], np.ndarray]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task id (see `mbrl-ros tasks`) or gym id")
    parser.add_argument(
        "--policy",
        default="random",
        metavar="random|zero|FILE.onnx",
        help="'random' (uniform in [-1, 1]), 'zero', or an ONNX policy exported by training",
    )
    parser.add_argument("--episodes", type=int, default=5, help="number of episodes (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of resets and random actions (default 0)")
    parser.add_argument(
        "--randomize-dynamics", action="store_true", help="re-draw ROBEL's RandomDynamics physics at every reset"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def make_policy(spec: str, task_id: str, act_dim: int, seed: int = 0) -> tuple[Policy, str]:
    """A policy callable ``obs -> action`` from ``random``, ``zero`` or an ONNX path, and its name."""
    if spec == "random":
        rng = np.random.default_rng(seed)
        return (lambda obs: rng.uniform(-1.0, 1.0, size=act_dim)), "random"
    if spec == "zero":
        zeros = np.zeros(act_dim)
        return (lambda obs: zeros), "zero"
    path = Path(spec)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"--policy must be 'random', 'zero' or a .onnx file, got {spec!r}")
    if not path.is_file():
        raise ValueError(f"policy file not found: {path}")
    # Lazy import: ONNX Runtime is only needed for file policies.
    from mbrl_ros.core.onnx_export import load_onnx_policy

    policy = load_onnx_policy(path, expect_task=task_id)  # ContractError is a ValueError
    return policy.act, str(path)


def run_episode(
    env: Any, policy: Policy, seed: Optional[int] = None, on_step: Optional[Callable[[], None]] = None
) -> dict[str, Any]:
    """One episode; returns ``{"return", "success", "length", "terminated", "sim_warning"}``."""
    obs, info = env.reset(seed=seed)
    if on_step is not None:
        on_step()
    total, success, length = 0.0, bool(info.get("success", False)), 0
    terminated = truncated = False
    sim_warning = info.get("sim_warning")
    while not (terminated or truncated):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        total += float(reward)
        success = bool(info["success"])
        sim_warning = sim_warning or info.get("sim_warning")
        length += 1
        if on_step is not None:
            on_step()
    return {
        "return": total,
        "success": success,
        "length": length,
        "terminated": bool(terminated),
        "sim_warning": sim_warning,
    }


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mbrl_ros.tasks import canonical_task_id, make_env

    if args.episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {args.episodes}")
    task_id = canonical_task_id(args.task)
    env = make_env(task_id, randomize_dynamics=args.randomize_dynamics)
    try:
        policy, policy_name = make_policy(args.policy, task_id, env.task.info.act_dim, args.seed)
        returns, successes = [], []
        bar = tqdm(range(args.episodes), desc=task_id, unit="ep", disable=args.no_progress)
        for ep in bar:
            # Episode seeds are spread so that (seed, episode) pairs never collide across runs.
            r = run_episode(env, policy, seed=args.seed * 100_003 + ep)
            returns.append(r["return"])
            successes.append(r["success"])
            note = f"  sim_warning: {r['sim_warning']}" if r["sim_warning"] else ""
            tqdm.write(f"episode {ep}: return {r['return']:.2f} success {r['success']} length {r['length']}{note}")
    finally:
        env.close()
    summary = {
        "task": task_id,
        "policy": policy_name,
        "seed": args.seed,
        "episodes": len(returns),
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "success_rate": float(np.mean(successes)),
    }
    if not all(math.isfinite(v) for v in returns):
        raise ValueError("a return is not finite (simulation unstable)")
    print(json.dumps(summary), flush=True)
    return 0
