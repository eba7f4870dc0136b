"""``mbrl-ros render``: write a GIF of a policy in a simulated task (offscreen, no display).

Example: ``mbrl-ros render --task dclaw-turn-fixed --policy random --out dclaw.gif``.
Rendering is CPU-only through OSMesa (Debian ``libosmesa6``): ``MUJOCO_GL`` and
``PYOPENGL_PLATFORM`` must name the backend before MuJoCo is imported, so this module sets them
(``osmesa`` unless the user chose another backend) at import time, before anything loads MuJoCo.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault(
    "PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"] if os.environ["MUJOCO_GL"] in ("osmesa", "egl") else "osmesa"
)

import argparse  # noqa: E402
import ctypes.util  # noqa: E402
from pathlib import Path  # noqa: E402

HELP = "render a policy in a simulated ROBEL task to an animated GIF (offscreen, OSMesa)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task id (see `mbrl-ros tasks`) or gym id")
    parser.add_argument(
        "--policy", default="random", metavar="random|zero|FILE.onnx", help="policy to run (default random)"
    )
    parser.add_argument("--out", required=True, metavar="FILE.gif", help="output GIF")
    parser.add_argument("--episodes", type=int, default=1, help="episodes, one after the other (default 1)")
    parser.add_argument("--width", type=int, default=480, help="frame width in pixels (default 480)")
    parser.add_argument("--height", type=int, default=480, help="frame height in pixels (default 480)")
    parser.add_argument("--seed", type=int, default=0, help="seed of resets and random actions (default 0)")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each episode after this many steps")


def osmesa_available() -> bool:
    """True when the OSMesa library that MUJOCO_GL=osmesa needs can be found."""
    return ctypes.util.find_library("OSMesa") is not None


def render_frames(
    task_id: str,
    policy_spec: str,
    episodes: int = 1,
    width: int = 480,
    height: int = 480,
    seed: int = 0,
    max_steps: int | None = None,
    progress: bool = True,
) -> tuple[list, list[dict]]:
    """Run the policy and return the RGB frames (one per reset and per step) and episode stats."""
    import numpy as np
    from tqdm import tqdm

    from mbrl_ros.commands.rollout import make_policy
    from mbrl_ros.tasks import canonical_task_id, make_env

    task_id = canonical_task_id(task_id)
    if episodes <= 0:
        raise ValueError(f"--episodes must be positive, got {episodes}")
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise ValueError(f"--width/--height must be in [16, 4096], got {width}x{height}")
    if max_steps is not None and max_steps <= 0:
        raise ValueError(f"--max-steps must be positive, got {max_steps}")
    env = make_env(task_id, render_mode="rgb_array", width=width, height=height)
    frames: list = []
    stats: list[dict] = []
    try:
        policy, _ = make_policy(policy_spec, task_id, env.task.info.act_dim, seed)
        horizon = env.task.info.horizon if max_steps is None else min(max_steps, env.task.info.horizon)
        bar = tqdm(total=episodes * horizon, desc=f"render {task_id}", unit="step", disable=not progress)
        for ep in range(episodes):
            obs, info = env.reset(seed=seed * 100_003 + ep)
            frames.append(env.render())
            total, steps, done = 0.0, 0, False
            while not done and steps < horizon:
                obs, reward, terminated, truncated, info = env.step(policy(obs))
                frames.append(env.render())
                total += float(reward)
                steps += 1
                done = terminated or truncated
                bar.update(1)
            stats.append({"episode": ep, "return": total, "success": bool(info.get("success", False)), "length": steps})
        bar.close()
    finally:
        env.close()  # releases the GL context explicitly (its finaliser would raise at exit)
    return [np.asarray(f) for f in frames], stats


def run(args: argparse.Namespace) -> int:
    import imageio.v3 as iio
    from tqdm import tqdm

    out = Path(args.out)
    if out.suffix.lower() != ".gif":
        raise ValueError(f"--out must be a .gif file, got {args.out!r}")
    if os.environ.get("MUJOCO_GL") == "osmesa" and not osmesa_available():
        raise ValueError("offscreen rendering needs OSMesa: install Debian's libosmesa6 (apt-get install libosmesa6)")
    frames, stats = render_frames(
        args.task, args.policy, args.episodes, args.width, args.height, args.seed, args.max_steps
    )
    for s in stats:
        tqdm.write(f"episode {s['episode']}: return {s['return']:.2f} success {s['success']} length {s['length']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # 100 ms per frame = the 10 Hz control rate: the GIF plays in real time.
    iio.imwrite(out, frames, extension=".gif", duration=100, loop=0)
    print(f"wrote {out} ({len(frames)} frames, {args.width}x{args.height})")
    return 0
