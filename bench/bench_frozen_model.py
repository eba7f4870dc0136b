"""Is a stalled PAL run limited by its policy player or by its model? Many NPG steps in a frozen model.

From a run's last checkpoint (policy, value, ensemble and buffer at that point of the game), the
policy player keeps improving in the *same* model, with no new data, for ``--steps`` NPG steps
(the run's own settings). Every ``--chunk`` steps it reports:

- J(pi, M): the policy player's objective (its own synthetic rollouts: start-state mix, noise);
- the model's forecast of the evaluation: the deterministic policy rolled out in every member from
  the buffer's initial states (what the evaluation plays in the world), mean return;
- the world's answer: the deterministic evaluation (the run's evaluation episodes).

If the world's return follows the model's forecast, more policy optimisation per iteration would
help; if the forecast rises while the world's return stays, the model is what stops the run
(the policy finds what the model gets wrong, and only new data can correct it).

    .venv/bin/python -m bench.bench_frozen_model runs/s13_sym/pal-dclaw-turn-fixed-s0 [--steps 120 --chunk 20]

Writes the BENCHMARKS.md section "frozen_model" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
from bench._checkpoint import load_game  # noqa: E402
from bench._report import command_line, publish  # noqa: E402


def forecast(game, starts) -> float:
    """Mean return of the deterministic policy from the buffer's initial states, over members."""
    from mbrl_ros.core.model_rollout import rollout_policy

    pp = game.policy_player
    n = min(50, len(starts.initial_obs))
    obs = torch.as_tensor(starts.initial_obs[:n], dtype=torch.float32, device=pp.device)
    aux = None
    if starts.initial_aux is not None:
        aux = torch.as_tensor(starts.initial_aux[:n], dtype=torch.float32, device=pp.device)
    ro = rollout_policy(game.model_player.ensemble, game.task, pp.policy, obs, pp.horizon, deterministic=True,
                        start_aux=aux)
    return float(ro.returns.mean())


def one_step_progress(game, pp, ensemble=None) -> dict:
    """Along the world's deterministic evaluation episode: the progress toward the goal per step
    (decrease of ``task.goal_error``) in the world, and as each member of ``ensemble`` (default:
    the game's) predicts it one step at a time from the world's true states and actions (no
    compounding)."""
    import numpy as np

    from mbrl_ros.core.model_rollout import model_step
    from mbrl_ros.core.world import run_episode

    ep = run_episode(game.eval_world, lambda o: pp.act(o, True), game.eval_seeds[0], "one-step", 0)
    obs = np.asarray(ep.obs, dtype=np.float32)
    T = len(ep.actions)
    ensemble = game.model_player.ensemble if ensemble is None else ensemble
    E = ensemble.ensemble_size

    def batch(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, dtype=torch.float32).unsqueeze(0).expand(E, -1, -1)

    aux = batch(np.asarray(ep.aux, dtype=np.float32)[:T]) if ep.aux is not None else None
    with torch.no_grad():
        nxt, _aux, _r = model_step(ensemble, game.task, batch(obs[:T]),
                                   batch(np.clip(np.asarray(ep.actions, dtype=np.float32), -1.0, 1.0)), aux)
    err = np.asarray(game.task.goal_error(obs), dtype=np.float64)
    world = err[:T] - err[1 : T + 1]  # progress per step
    model = err[None, :T] - np.asarray(game.task.goal_error(nxt.numpy()), dtype=np.float64)
    rest = np.abs(world) < 0.005  # steps where the world does not move toward (or away from) the goal
    return {"world": float(world.sum()), "members": [float(m) for m in model.sum(1)], "rest_steps": int(rest.sum()),
            "rest_model": float(model[:, rest].sum(1).mean()) if rest.any() else 0.0}


def measure(run_dir: Path, steps: int, chunk: int) -> list[dict]:
    from mbrl_ros.core.policy_player import StartStates
    from mbrl_ros.core.world import evaluate

    game, _state = load_game(run_dir)
    cfg = game.cfg
    pp = game.policy_player
    starts = StartStates.from_buffer(game.buffer)
    pp.set_obs_normalization(starts.obs)
    torch.manual_seed(cfg.seed)
    progress = one_step_progress(game, pp)
    rows = []
    done, j_model = 0, None
    while True:
        ev = evaluate(game.eval_world, lambda o: pp.act(o, True), game.eval_seeds)
        rows.append({"run": run_dir.name, "parent": run_dir.parent.name, "samples": int(game.samples), "steps": done,
                     "J_model": j_model, "forecast": forecast(game, starts), "return": ev["return"],
                     "success": ev["success"], "final_error": ev.get("final_error"), "progress": progress})
        r = rows[-1]
        print(f"{r['parent']}/{r['run']} steps {done}: J(pi,M) {j_model if j_model is None else round(j_model, 1)} "
              f"forecast {r['forecast']:.1f} world {r['return']:.1f} success {r['success']:.2f}", flush=True)
        if done >= steps:
            return rows
        k = min(chunk, steps - done)
        j_model = pp.improve(game.model_player.ensemble, starts, k)["J_model"]
        done += k


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (with checkpoint/)")
    ap.add_argument("--steps", type=int, default=120, help="NPG steps in the frozen model")
    ap.add_argument("--chunk", type=int, default=20, help="NPG steps between measurements")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    if args.steps < 1 or args.chunk < 1:
        ap.error("--steps and --chunk must be positive")
    torch.set_num_threads(args.threads)
    lines = [
        "Each run's last checkpoint; the policy player keeps taking NPG steps (the run's settings) in the "
        "frozen model, no new data. J(pi, M): the player's objective on its own synthetic rollouts (start-state "
        "mix, action noise). Forecast: the deterministic policy's mean return in the members from the buffer's "
        "initial states. World: the deterministic evaluation in the simulator (return, final goal error, success).",
        "",
        "| run | samples | NPG steps | J(pi, M) | model's forecast | world return | world final error | world success |",
        "|---|---|---|---|---|---|---|---|",
    ]
    progress_lines = [
        "",
        "One-step predictions along the world's evaluation episode of each run's final policy (before the NPG "
        "steps above): progress = decrease of the goal error (D'Claw: |valve angle - target|, rad) summed over "
        "the episode, in the world and as each member predicts it one step at a time from the world's states "
        "and actions; at rest = the steps where the world's goal error moves by < 0.005 and what the members "
        "predict there (mean over members).",
        "",
        "| run | world progress | members' one-step progress | world steps at rest | members' progress at those steps |",
        "|---|---|---|---|---|",
    ]
    for run in args.runs:
        rows = measure(run, args.steps, args.chunk)
        p = rows[0]["progress"]
        progress_lines.append(f"| `{rows[0]['parent']}/{rows[0]['run']}` | {p['world']:+.3f} | "
                              + ", ".join(f"{m:+.3f}" for m in p["members"])
                              + f" | {p['rest_steps']} | {p['rest_model']:+.3f} |")
        for r in rows:
            j = "-" if r["J_model"] is None else f"{r['J_model']:.1f}"
            err = "-" if r["final_error"] is None else f"{r['final_error']:.3f}"
            lines.append(f"| `{r['parent']}/{r['run']}` | {r['samples']} | {r['steps']} | {j} | {r['forecast']:.1f} "
                         f"| {r['return']:.1f} | {err} | {r['success']:.2f} |")
    lines += progress_lines + ["", f"Command: `{command_line()}`."]
    publish("frozen_model", "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
