"""Why the MAL fixes stay on the decoy in ``hidden-region``: the final model and the follower, probed.

For each finished run of ``mbrl-ros train --task hidden-region`` (which keeps its last
checkpoint; the runs of ``experiments.hidden_region`` keep only their metrics) the script loads
that checkpoint and asks:

- **the model**: what the scripted route through the entrance and the scripted decoy policy
  are worth *in the model* (mean return over members and the task's 10 evaluation starts, and
  the fraction of model rollouts that end in the region), beside their worth in the world;
- **the deployed policy**: its return and success in the world and in the model;
- **a fresh follower**: the policy player started afresh (new networks) takes ``--steps`` NPG
  steps in the run's final model from the run's start states, ``--restarts`` times, once with the
  configured initial std and once with a broad one (std 1): the model's return ``J(pi, M)`` it
  reaches against the world's return and success of the same policy. It tells whether a best
  response computed from scratch (not from the policy that already sits on the decoy) would find
  the region in that model, or exploit a hole in it.

    .venv/bin/mbrl-ros train --algo mal --task hidden-region --seed 0 --out runs/hr/mal-s0
    .venv/bin/python -m experiments.hidden_region_probe runs/hr/mal-s0 [more runs]

Prints a table; ``--write`` puts it in BENCHMARKS.md (section "hidden_region_probe").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from experiments import common

SECTION = "hidden_region_probe"
TASK = "hidden-region"
PROBE_STARTS = 10


def _load(run: Path) -> Any:
    """The run's game restored from its checkpoint (its own config, on the CPU)."""
    from mbrl_ros.core.config import GameConfig
    from mbrl_ros.core.stackelberg import StackelbergGame
    from mbrl_ros.core.train import make_world

    cfg_path = run / "config.json"
    if not (run / "checkpoint").is_dir() or not cfg_path.is_file():
        raise ValueError(f"{run}: not a finished run (needs config.json and checkpoint/)")
    cfg = GameConfig.from_dict(json.loads(cfg_path.read_text()))
    if cfg.task_id != TASK:
        raise ValueError(f"{run}: a run of {cfg.task_id!r}, not {TASK!r}")
    game = StackelbergGame(cfg, make_world(TASK), make_world(TASK), "cpu")
    game.load(run / "checkpoint")
    return game


def in_model(game: Any, act: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
    """(mean return, fraction ending in the region) of ``act`` rolled out in every member."""
    import torch

    from mbrl_ros.core.model_rollout import model_step
    from mbrl_ros.core.world import evaluation_seeds
    from mbrl_ros.tasks.hidden_region import HiddenRegionEnv

    env, ens, task = HiddenRegionEnv(), game.model_player.ensemble, game.task
    starts = np.array([env.reset(seed=s)[0] for s in evaluation_seeds(PROBE_STARTS)])
    obs = torch.as_tensor(starts, dtype=torch.float32).unsqueeze(0).expand(ens.ensemble_size, -1, -1).contiguous()
    ret = torch.zeros(obs.shape[:2])
    with torch.no_grad():
        for _ in range(task.info.horizon):
            a = act(obs.numpy().astype(np.float64).reshape(-1, 4)).reshape(*obs.shape[:2], 2)
            obs, _, r = model_step(ens, task, obs, torch.as_tensor(a, dtype=torch.float32))
            ret += r
    return float(ret.mean()), float(task.success(obs).float().mean())


def in_world(act: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
    """(mean return, success) of ``act`` on the task's evaluation episodes."""
    from mbrl_ros.core.world import evaluate, evaluation_seeds
    from mbrl_ros.tasks.hidden_region import HiddenRegionEnv

    r = evaluate(HiddenRegionEnv(), act, evaluation_seeds(PROBE_STARTS))
    return r["return"], r["success"]


def fresh_followers(game: Any, steps: int, restarts: int, init_log_std: Optional[float]) -> list[dict]:
    """``restarts`` policy players started afresh, each ``steps`` NPG steps in the final model."""
    import copy

    import torch

    from mbrl_ros.core.policy_player import PolicyPlayer, StartStates

    cfg = copy.deepcopy(game.cfg)
    if init_log_std is not None:
        cfg.policy_init_log_std = float(init_log_std)
    starts = StartStates.from_buffer(game.buffer)
    out = []
    for i in range(restarts):
        torch.manual_seed(1000 + i)
        player = PolicyPlayer(game.task, cfg, "cpu")
        r = player.improve(game.model_player.ensemble, starts, steps)
        w_ret, w_succ = in_world(player.act)
        out.append({"J_model": r["J_model"], "world_return": w_ret, "world_success": w_succ})
    return out


def probe(run: Path, steps: int, restarts: int) -> dict:
    from mbrl_ros.tasks.hidden_region import scripted_action

    game = _load(run)

    def route(o: np.ndarray) -> np.ndarray:
        return scripted_action(o, True)

    def decoy(o: np.ndarray) -> np.ndarray:
        return scripted_action(o, False)

    def deployed(o: np.ndarray) -> np.ndarray:
        return game.policy_player.act(np.asarray(o).reshape(-1, 4)).reshape(np.shape(o)[:-1] + (2,))

    return {
        "run": common.relpath(run),
        "algo": game.cfg.algo,
        "seed": game.cfg.seed,
        "samples": game.samples,
        "route": {"model": in_model(game, route), "world": in_world(route)},
        "decoy": {"model": in_model(game, decoy), "world": in_world(decoy)},
        "deployed": {"model": in_model(game, deployed), "world": in_world(deployed)},
        "fresh": fresh_followers(game, steps, restarts, None),
        "fresh_broad": fresh_followers(game, steps, restarts, 0.0),
    }


def _followers(rows: list[dict]) -> str:
    return "; ".join(f"{r['J_model']:.1f} / {r['world_return']:.1f} ({r['world_success']:.1f})" for r in rows)


def report(results: list[dict], steps: int) -> str:
    lines = [
        f"Command: `{common.command_line()}`.",
        "",
        "Returns are means over the task's 10 evaluation starts (in the model: and over the 4 members); "
        "in brackets the fraction ending in the region. Fresh followers: a new policy player, "
        f"{steps} NPG steps in the run's final model; each entry `J(pi, M) / world return (world success)`.",
        "",
        "| run | game | samples | route: model / world | decoy: model / world | deployed policy: model / world "
        "| fresh follower (configured std) | fresh follower (std 1) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(r: dict, k: str) -> str:
        (m_ret, m_frac), (w_ret, w_frac) = r[k]["model"], r[k]["world"]
        return f"{m_ret:.1f} ({m_frac:.2f}) / {w_ret:.1f} ({w_frac:.2f})"

    for r in results:
        lines.append(
            f"| `{r['run']}` | {common.ALGO_LABELS.get(r['algo'], r['algo'])} | {r['samples']} "
            f"| {cell(r, 'route')} | {cell(r, 'decoy')} | {cell(r, 'deployed')} | {_followers(r['fresh'])} "
            f"| {_followers(r['fresh_broad'])} |"
        )
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="finished hidden-region run directories")
    ap.add_argument("--steps", type=int, default=50, help="NPG steps of each fresh follower")
    ap.add_argument("--restarts", type=int, default=3, help="fresh followers per run and std")
    ap.add_argument("--write", action="store_true", help="write the table to BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.restarts < 1:
        raise ValueError("--steps and --restarts must be >= 1")
    import torch

    torch.set_num_threads(1)
    results = [probe(Path(r), args.steps, args.restarts) for r in args.runs]
    text = report(results, args.steps)
    print(text)
    if args.write:
        common.update_benchmarks(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(common.script_main(main))
