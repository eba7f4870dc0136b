"""Benchmark of the simulated ROBEL tasks (section "env" of BENCHMARKS.md).

1. Env step rate of each task beside the raw ``mj_step`` rate of the same model in the same
   run (each episode's control sequence replayed right after it with ``mj_step(m, d, nstep=40)``
   and nothing else); ratio = (env steps/s x 40) / raw physics steps/s. Best of several rounds.
   Times are CPU time of the benchmark thread (``time.thread_time``), so other processes on a
   shared machine do not count against either side.
2. Batched reward of 100k transitions (numpy float64/float32, torch float32 on CPU), one core.
3. D'Claw: error of the batched reward (finite-difference joint velocity) against the env's
   exact reward, on trajectories of three action processes.
4. Fidelity: per-step deviation from ROBEL's reference trajectories (max |obs error| and
   |reward error| over each episode).

Run: ``.venv/bin/python -m bench.bench_env [--steps 2000] [--rounds 3] [--no-write]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import glob  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from bench._report import update_section  # noqa: E402

from mbrl_ros.tasks import TASK_IDS, get_task, make_env  # noqa: E402
from mbrl_ros.tasks.sim import SimulationWarning  # noqa: E402

REFERENCE_DIR = os.environ.get("MBRL_ROS_REFERENCE_DIR", "/work/shared/reference")


def step_rates(task_id: str, n_steps: int, rounds: int, seed: int = 0) -> dict:
    """Env steps/s (step() only, resets excluded) and raw physics steps/s on the same model."""
    env = make_env(task_id)
    m, d = env.model, env.data
    act_dim, horizon = env.task.info.act_dim, env.task.info.horizon
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, size=(n_steps, act_dim))
    clock = time.thread_time
    best_env, best_raw = np.inf, np.inf
    for r in range(rounds):
        t_env = t_raw = 0.0
        i = n_episodes = 0
        while i < n_steps:
            # -- env: one episode, recording its start state and the ctrl sequence it produced
            env.reset(seed=seed + 1000 * r + n_episodes)
            start, ctrls = env.get_state(), []
            done = False
            while not done and i < n_steps:
                t0 = clock()
                _, _, term, trunc, _ = env.step(actions[i])
                t_env += clock() - t0
                ctrls.append(d.ctrl.copy())
                done = term or trunc
                i += 1
            n_episodes += 1
            # -- raw physics right after: same model, start and controls, mj_step only
            env.sim.set_state(start["qpos"], start["qvel"])
            t0 = clock()
            for c in ctrls:
                d.ctrl[:] = c
                mujoco.mj_step(m, d, nstep=40)
            t_raw += clock() - t0
        best_env, best_raw = min(best_env, t_env), min(best_raw, t_raw)
    env.close()
    env_sps = n_steps / best_env
    raw_pps = 40 * n_steps / best_raw
    return {"env_steps_s": env_sps, "raw_physics_steps_s": raw_pps, "ratio": env_sps * 40 / raw_pps,
            "episodes_per_round": n_episodes, "horizon": horizon}


def reward_timing(task_id: str, n: int = 100_000, repeats: int = 7) -> dict:
    import torch

    torch.set_num_threads(1)
    task = get_task(task_id)
    rng = np.random.default_rng(0)
    # Realistic values: env observations, tiled to n.
    env = make_env(task_id)
    obs_l = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SimulationWarning)  # only observations are wanted here
        for ep in range(3):
            o, _ = env.reset(seed=ep)
            for _ in range(task.info.horizon):
                obs_l.append(o)
                o, *_ = env.step(rng.uniform(-1, 1, task.info.act_dim))
    env.close()
    base = np.array(obs_l)
    reps = int(np.ceil((n + 1) / len(base)))
    traj = np.tile(base, (reps, 1))[: n + 1] + rng.normal(0, 1e-3, size=(n + 1, task.info.obs_dim))
    obs, nxt = traj[:-1].copy(), traj[1:].copy()
    act = rng.uniform(-1, 1, size=(n, task.info.act_dim))

    def best(f) -> float:
        f()  # warm-up (allocator, caches)
        ts = []
        for _ in range(repeats):
            t0 = time.thread_time()
            f()
            ts.append(time.thread_time() - t0)
        return 1e3 * min(ts)

    o32, a32, n32 = obs.astype(np.float32), act.astype(np.float32), nxt.astype(np.float32)
    t32 = [torch.as_tensor(x) for x in (o32, a32, n32)]
    return {
        "reward_f64_ms": best(lambda: task.reward(obs, act, nxt)),
        "reward_f32_ms": best(lambda: task.reward(o32, a32, n32)),
        "reward_torch_f32_ms": best(lambda: task.reward(*t32)),
        "done_success_f64_ms": best(lambda: (task.done(nxt), task.success(nxt))),
    }


def finite_difference_error(task_id: str, episodes: int = 20) -> list[dict]:
    """Batched (finite-difference) vs exact D'Claw reward on three action processes."""
    env = make_env(task_id)
    task = env.task
    rows = []
    for name, amp in (("uniform random", None), ("smooth AR(1), sd 0.5", 0.5), ("zero action", 0.0)):
        rng = np.random.default_rng(0)
        O, A, N, R, V = [], [], [], [], []
        for ep in range(episodes):
            o, _ = env.reset(seed=ep)
            a = np.zeros(task.info.act_dim)
            for _ in range(task.info.horizon):
                if amp is None:
                    a = rng.uniform(-1, 1, task.info.act_dim)
                elif amp > 0:
                    a = np.clip(0.7 * a + amp * rng.normal(0, 1, task.info.act_dim), -1, 1)
                n, r, _, _, info = env.step(a)
                O.append(o), A.append(a), N.append(n), R.append(r), V.append(info["reward_terms"]["joint_vel_cost"])
                o = n
        O, A, N, R, V = map(np.array, (O, A, N, R, V))
        batched = task.reward(O, A, N)
        fd = task.reward_terms(O, A, N)["joint_vel_cost"]
        err = batched - R
        ret_true = R.reshape(episodes, -1).sum(1)
        ret_err = err.reshape(episodes, -1).sum(1)
        rows.append({
            "actions": name,
            "true_vel_cost": float(V.mean()),
            "fd_vel_cost": float(fd.mean()),
            "mean_abs_step_err": float(np.abs(err).mean()),
            "max_abs_step_err": float(np.abs(err).max()),
            "mean_return": float(ret_true.mean()),
            "mean_return_err": float(ret_err.mean()),
            "corr": float(np.corrcoef(fd, V)[0, 1]) if V.std() > 0 else float("nan"),
        })
    env.close()
    return rows


def fidelity() -> list[dict]:
    rows = []
    for path in sorted(glob.glob(os.path.join(REFERENCE_DIR, "robel_*.npz"))):
        with np.load(path, allow_pickle=False) as z:
            ref = {k: z[k] for k in z.files}
        env = make_env(str(ref["task"]))
        target = float(ref["target_valve_angle"] if "target_valve_angle" in ref else ref["target_angle"])
        obs0, _ = env.reset(options={"qpos": ref["qpos0"], "qvel": ref["qvel0"], "target": target})
        obs_err, rew_err, succ_ok, done_ok = [], [], 0, 0
        for t, a in enumerate(ref["actions"]):
            obs, r, term, _, info = env.step(a)
            obs_err.append(np.abs(obs - ref["obs"][t]).max())
            rew_err.append(abs(r - ref["rewards"][t]))
            succ_ok += info["success"] == bool(ref["success"][t])
            done_ok += term == bool(ref["dones"][t])
            if term:
                break
        env.close()
        rows.append({"file": Path(path).stem, "task": str(ref["task"]), "obs_err": obs_err, "rew_err": rew_err,
                     "steps": len(obs_err), "obs0_err": float(np.abs(obs0 - ref["obs0"]).max()),
                     "obs_err_first5": float(max(obs_err[:5])), "obs_err_max": float(max(obs_err)),
                     "rew_err_first5": float(max(rew_err[:5])), "rew_err_max": float(max(rew_err)),
                     "success_match": f"{succ_ok}/{len(obs_err)}", "done_match": f"{done_ok}/{len(obs_err)}"})
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000, help="env steps per task and round (default 2000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds, best kept (default 3)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = p.parse_args()

    md = ["### Env step rate vs raw MuJoCo (random actions; CPU time of one thread, best of "
          f"{args.rounds} rounds of {args.steps} steps)", "",
          "| task | env steps/s | raw physics steps/s | env steps x 40 / physics steps | ",
          "|---|---|---|---|"]
    for task_id in TASK_IDS:
        r = step_rates(task_id, args.steps, args.rounds)
        line = f"| {task_id} | {r['env_steps_s']:.0f} | {r['raw_physics_steps_s']:.0f} | {r['ratio']:.3f} |"
        print(line, flush=True)
        md.append(line)

    md += ["", "### Batched reward, 100k transitions, one thread (CPU time, best of 7)", "",
           "| task | reward numpy f64 (ms) | numpy f32 (ms) | torch f32 CPU (ms) | done+success f64 (ms) |",
           "|---|---|---|---|---|"]
    for task_id in TASK_IDS:
        r = reward_timing(task_id)
        line = (f"| {task_id} | {r['reward_f64_ms']:.1f} | {r['reward_f32_ms']:.1f} | "
                f"{r['reward_torch_f32_ms']:.1f} | {r['done_success_f64_ms']:.1f} |")
        print(line, flush=True)
        md.append(line)

    md += ["", "### D'Claw batched reward (finite-difference joint velocity) vs exact reward",
           "", "dclaw-turn-fixed, 20 episodes of 40 steps per action process.", "",
           "| actions | exact joint_vel_cost (mean/step) | FD estimate (mean/step) | mean abs reward error/step "
           "| max abs error/step | mean return | mean return error | corr(FD, exact) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in finite_difference_error("dclaw-turn-fixed"):
        line = (f"| {r['actions']} | {r['true_vel_cost']:.3f} | {r['fd_vel_cost']:.3f} | {r['mean_abs_step_err']:.3f} "
                f"| {r['max_abs_step_err']:.3f} | {r['mean_return']:.1f} | {r['mean_return_err']:.1f} | {r['corr']:.2f} |")
        print(line, flush=True)
        md.append(line)

    fid = fidelity()
    if fid:
        md += ["", "### Fidelity to ROBEL's reference trajectories (replayed actions)", "",
               "| reference | steps | obs0 err | max obs err, steps 1-5 | max obs err, episode | max reward err, "
               "steps 1-5 | max reward err, episode | success match | done match |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in fid:
            line = (f"| {r['file']} | {r['steps']} | {r['obs0_err']:.1e} | {r['obs_err_first5']:.1e} | "
                    f"{r['obs_err_max']:.1e} | {r['rew_err_first5']:.1e} | {r['rew_err_max']:.1e} | "
                    f"{r['success_match']} | {r['done_match']} |")
            print(line, flush=True)
            md.append(line)
        marks = [1, 2, 5, 10, 20, 40, 60, 80]
        md += ["", "Per-step deviation: max |obs error| / max |reward error| at step t over the reference files of a task "
               "(files whose episode ended earlier drop out).", "",
               "| task | " + " | ".join(f"t={t}" for t in marks) + " |", "|---|" + "---|" * len(marks)]
        for task in sorted({r["task"] for r in fid}):
            cells = []
            for t in marks:
                o = [r["obs_err"][t - 1] for r in fid if r["task"] == task and len(r["obs_err"]) >= t]
                w = [r["rew_err"][t - 1] for r in fid if r["task"] == task and len(r["rew_err"]) >= t]
                cells.append(f"{max(o):.0e} / {max(w):.0e}" if o else "-")
            line = f"| {task} | " + " | ".join(cells) + " |"
            print(line, flush=True)
            md.append(line)
    md += ["", "Command: `.venv/bin/python -m bench.bench_env` (the machine is shared: rates are noisy)."]
    if not args.no_write:
        update_section("env", "\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
