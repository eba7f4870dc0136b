"""The natural-gradient solver: conjugate-gradient iterations and the Fisher subsample, measured.

From a checkpoint of a real run (the policy, value and model at that point of the game), one
NPG step is taken with each solver setting on the *same* synthetic batch, and measured by:

- the achieved KL of the step (the normalised step aims at delta / 2);
- the residual of the CG solve, ||F x - g|| / ||g|| (on all samples, damping included);
- the improvement of J(pi, M) after the step, on a large fixed batch of rollouts with common
  random numbers (the same start states and the same noise before and after);
- the time of the step.

    .venv/bin/python -m bench.bench_npg_solver runs/explore/A-s0 [--repeats 5] [--no-report]

Writes the BENCHMARKS.md section "npg_solver" unless ``--no-report``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
from bench._checkpoint import load_game
from bench._report import command_line, publish

SETTINGS = [(10, 0.25), (10, 1.0), (25, 0.25), (25, 1.0)]  # (cg_iters, fvp_fraction)


def j_model(game, policy, starts, seed: int) -> float:
    from mbrl_ros.core.model_rollout import rollout_policy

    torch.manual_seed(seed)  # common random numbers: the same action noise for every policy
    ro = rollout_policy(game.model_player.ensemble, game.task, policy, starts[0], game.policy_player.horizon,
                        start_aux=starts[1])
    return float(ro.returns.mean())


def measure(run_dir: Path, repeats: int) -> dict:
    from mbrl_ros.core.model_rollout import rollout_policy
    from mbrl_ros.core.npg import flat, gaussian_fisher_product, npg_update
    from mbrl_ros.core.policy_player import StartStates

    game, _state = load_game(run_dir)
    cfg = game.cfg
    pp = game.policy_player
    starts = StartStates.from_buffer(game.buffer)
    pp.set_obs_normalization(starts.obs)
    H = pp.horizon
    eval_cfg = copy.copy(cfg)
    eval_cfg.npg_trajectories = 1000
    pp.cfg = eval_cfg
    torch.manual_seed(12345)
    eval_starts = pp._start_states(starts)
    pp.cfg = cfg
    rows: dict[tuple, list[dict]] = {s: [] for s in SETTINGS}
    for r in range(repeats):
        torch.manual_seed(1000 + r)
        s_obs, s_aux = pp._start_states(starts)
        ro = rollout_policy(game.model_player.ensemble, game.task, pp.policy, s_obs, H, start_aux=s_aux)
        a, _, mask, _ = pp.advantages(ro)  # the policy player's own whitened advantages
        obs, act = ro.obs[:, :H][mask], ro.actions[mask]
        j0 = j_model(game, pp.policy, eval_starts, 777 + r)
        for cg_iters, frac in SETTINGS:
            policy = copy.deepcopy(pp.policy)
            before = [p.detach().clone() for p in policy.parameters()]
            torch.manual_seed(55 + r)
            t0 = time.perf_counter()
            step = npg_update(policy, obs, act, a, cfg.npg_step_size, cg_iters, cfg.cg_damping, frac,
                              entropy_coef=cfg.entropy_coef)
            dt = time.perf_counter() - t0
            # residual of the solve on all samples: x = step / alpha
            x = flat([p.detach() - b for p, b in zip(policy.parameters(), before)]) / step["alpha"]
            ref = copy.deepcopy(pp.policy)
            mean = ref(obs)
            logp = -0.5 * (((act - mean) / torch.exp(ref.log_std)) ** 2).sum(-1) - ref.log_std.sum()
            g = flat(torch.autograd.grad((torch.exp(logp - logp.detach()) * a).mean() + cfg.entropy_coef * ref.entropy(),
                                         list(ref.parameters())))
            fx = gaussian_fisher_product(ref, obs, cfg.cg_damping)(x)
            resid = float((fx - g).norm() / g.norm())
            gain = j_model(game, policy, eval_starts, 777 + r) - j0
            rows[(cg_iters, frac)].append({"kl": step["kl"], "resid": resid, "gain": gain, "s": dt})
    return {"config": {"npg_step_size": cfg.npg_step_size, "npg_trajectories": cfg.npg_trajectories,
                       "cg_damping": cfg.cg_damping}, "samples": int(game.samples), "rows": rows}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders (with checkpoint/)")
    ap.add_argument("--repeats", type=int, default=5, help="synthetic batches per run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["One NPG step from each run's last checkpoint, the same synthetic batch for every solver setting; "
             f"{args.repeats} batches per run. KL target of the normalised step: delta / 2. "
             "Residual: ||(F + damping) x - g|| / ||g|| on all samples. Gain: J(pi, M) after minus before, "
             "1000 start states x the members, common random numbers. Medians over batches.", "",
             "| run | samples | CG iterations | Fisher subsample | KL (target) | CG residual | J(pi, M) gain | step s |",
             "|---|---|---|---|---|---|---|---|"]
    for run in args.runs:
        m = measure(run, args.repeats)
        target = m["config"]["npg_step_size"] / 2
        for (cg, frac), rs in m["rows"].items():
            med = lambda k: statistics.median(r[k] for r in rs)
            lines.append(f"| `{run.name}` | {m['samples']} | {cg} | {frac:.2f} | {med('kl'):.4f} ({target:.3f}) "
                         f"| {med('resid'):.3f} | {med('gain'):+.1f} | {med('s'):.2f} |")
    lines += ["", f"Command: `{command_line()}`."]
    publish("npg_solver", "\n".join(lines), write=not args.no_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
