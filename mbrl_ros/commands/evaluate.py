"""``mbrl-ros eval``: run an exported ONNX policy in the simulated task and report success and return.

Example: ``mbrl-ros eval --policy runs/pal0/policy.onnx --task dclaw-turn-fixed --episodes 20``.
The policy's contract (task, sizes, weights hash) is checked before anything runs; success is
the task's success at the final step of each episode (as ROBEL reports it).
"""

from __future__ import annotations

import argparse
import json

HELP = "evaluate an exported ONNX policy in simulation (prints JSON with success and return)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", required=True, metavar="FILE.onnx", help="policy exported by `mbrl-ros train`")
    parser.add_argument("--task", default=None, help="task id (default: the task in the policy's contract)")
    parser.add_argument("--episodes", type=int, default=20, help="number of deterministic episodes (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation worlds (default 0)")


def run(args: argparse.Namespace) -> int:
    from mbrl_ros.core.onnx_export import load_onnx_policy
    from mbrl_ros.core.train import POINTMASS_IDS, make_world
    from mbrl_ros.core.world import evaluate

    if args.episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {args.episodes}")
    task_id = args.task
    if task_id is not None and task_id not in POINTMASS_IDS:
        from mbrl_ros.tasks import canonical_task_id

        task_id = canonical_task_id(task_id)
    policy = load_onnx_policy(args.policy, expect_task=task_id)  # ContractError is a ValueError
    world = make_world(policy.task_id)
    seeds = [10_000_019 + 1000 * args.seed + i for i in range(args.episodes)]
    result = evaluate(world, policy.act, seeds)
    print(
        json.dumps(
            {
                "task": policy.task_id,
                "policy": str(args.policy),
                "version": policy.contract["version"],
                "iteration": policy.contract["iteration"],
                "episodes": result["episodes"],
                "success": result["success"],
                "return": result["return"],
                "return_std": result["return_std"],
            }
        )
    )
    return 0
