"""``mbrl-ros urdf``: write the URDF of the D'Claw (with the valve) or the D'Kitty.

The URDF is generated from the ROBEL MuJoCo scene the tasks run on
(:mod:`mbrl_ros.tasks.urdf`), so it is never out of date; nothing generated is committed.

``--render FILE.png`` draws what RViz and Foxglove show, offscreen (OSMesa): the URDF (loaded by
MuJoCo's own URDF importer, not the scene) in the state of a simulated episode after a few random
steps, with the markers the collectors publish (valve and target arrows; heading, target).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "osmesa")  # before anything imports MuJoCo (see commands/render.py)
os.environ.setdefault(
    "PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"] if os.environ["MUJOCO_GL"] in ("osmesa", "egl") else "osmesa"
)

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

HELP = "write the URDF of a robot (generated from its MuJoCo scene) to a file or stdout; --render: a PNG of the view"
_TASK = {"dclaw": "dclaw-turn-random", "dkitty": "dkitty-orient-random"}  # the episode a rendered view shows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--robot",
        required=True,
        choices=("dclaw", "dkitty"),
        help="dclaw (claw and valve) or dkitty (torso on its 6 root joints, legs)",
    )
    parser.add_argument(
        "-o", "--out", default=None, help="output file ('-' = stdout; default stdout unless --render is given)"
    )
    parser.add_argument(
        "--render",
        metavar="FILE.png",
        default=None,
        help="also render the URDF with the markers, as the viewers show them (OSMesa)",
    )
    parser.add_argument("--width", type=int, default=480, help="--render width in pixels (default 480)")
    parser.add_argument("--height", type=int, default=360, help="--render height in pixels (default 360)")
    parser.add_argument("--seed", type=int, default=0, help="--render: seed of the episode shown (default 0)")
    parser.add_argument("--steps", type=int, default=10, help="--render: random steps before the picture (default 10)")


def render_view(robot: str, width: int = 480, height: int = 360, seed: int = 0, steps: int = 10):
    """RGB image (height, width, 3) of the generated URDF in a simulated state, with the markers.

    The robot is the URDF as MuJoCo's URDF importer reads it (a check of the file in itself), posed
    with the URDF joint states the collectors would publish for that state."""
    import math

    import mujoco
    import numpy as np

    from mbrl_ros.nodes.visualization import marker_specs, scene_view
    from mbrl_ros.tasks import make_env
    from mbrl_ros.tasks.urdf import robot_urdf

    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise ValueError(f"--width/--height must be in [16, 4096], got {width}x{height}")
    if steps < 0:
        raise ValueError(f"--steps must be >= 0, got {steps}")
    # keep every link a body (fusestatic off) and give the massless root-chain links of D'Kitty a
    # token mass: MuJoCo's importer refuses massless moving bodies, viewers do not care
    ext = '<mujoco><compiler fusestatic="false" discardvisual="true" boundmass="1e-6" boundinertia="1e-9"/></mujoco>'
    spec = mujoco.MjSpec.from_string(robot_urdf(robot).replace("</robot>", ext + "</robot>"))
    # a floor and lights for the picture (the URDF has neither; RViz and Foxglove bring their own)
    spec.worldbody.add_geom(type=mujoco.mjtGeom.mjGEOM_PLANE, size=[2.0, 2.0, 0.01], rgba=[0.82, 0.84, 0.86, 1.0])
    for light in ([0.6, -0.6, 1.2], [-0.6, 0.4, 1.0]):
        spec.worldbody.add_light(pos=light, dir=-np.asarray(light) / np.linalg.norm(light), diffuse=[0.6, 0.6, 0.6])
    spec.visual.global_.offwidth, spec.visual.global_.offheight = width, height
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.4, 0.4, 0.4]
    model = spec.compile()
    data = mujoco.MjData(model)

    env = make_env(_TASK[robot])
    try:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            obs, *_ = env.step(rng.uniform(-1.0, 1.0, env.action_space.shape))
        world: Any = env.unwrapped  # the RobelEnv: its task and simulator state
        view = scene_view(world.task, obs, target=world.get_state()["target"])
    finally:
        env.close()
    for name, q in view.joints.items():
        data.qpos[model.joint(name).qposadr[0]] = q
    mujoco.mj_kinematics(model, data)

    cam = mujoco.MjvCamera()
    cam.type = mujoco.mjtCamera.mjCAMERA_FREE
    if robot == "dclaw":
        cam.lookat[:] = (0.0, 0.0, 0.16)
        cam.distance, cam.azimuth, cam.elevation = 0.58, 100.0, -22.0
    else:
        torso = view.torso if view.torso is not None else np.zeros(3)
        cam.lookat[:] = (float(torso[0]), float(torso[1]), 0.15)
        cam.distance, cam.azimuth, cam.elevation = 1.6, 120.0, -30.0
    renderer = mujoco.Renderer(model, height=height, width=width)
    try:
        renderer.update_scene(data, camera=cam)
        scn = renderer.scene
        for sp in marker_specs(view):
            if scn.ngeom >= scn.maxgeom or sp.kind == "text":
                continue  # (text markers are RViz/Foxglove labels)
            x, y, z, w = sp.orientation
            mat = np.zeros(9)
            mujoco.mju_quat2Mat(mat, np.array([w, x, y, z]))
            pos = np.array(sp.position)
            if sp.kind == "arrow":
                # MuJoCo's arrow points along its z axis: from the marker's position along its x axis
                x_axis = mat.reshape(3, 3)[:, 0]
                geom = scn.geoms[scn.ngeom]
                mujoco.mjv_initGeom(
                    geom,
                    mujoco.mjtGeom.mjGEOM_ARROW,
                    np.zeros(3),
                    np.zeros(3),
                    np.zeros(9),
                    np.array(sp.rgba, dtype=np.float32),
                )
                mujoco.mjv_connector(
                    geom, mujoco.mjtGeom.mjGEOM_ARROW, 0.5 * sp.scale[1], pos, pos + sp.scale[0] * x_axis
                )
            else:  # cylinder: scale = diameter x, diameter y, height
                geom = scn.geoms[scn.ngeom]
                mujoco.mjv_initGeom(
                    geom,
                    mujoco.mjtGeom.mjGEOM_CYLINDER,
                    np.array([0.5 * sp.scale[0], 0.5 * sp.scale[1], 0.5 * sp.scale[2]]),
                    pos,
                    mat,
                    np.array(sp.rgba, dtype=np.float32),
                )
            scn.ngeom += 1
        image = renderer.render().copy()
    finally:
        renderer.close()
    assert math.isfinite(float(image.mean()))
    return image


def run(args: argparse.Namespace) -> int:
    from mbrl_ros.tasks.urdf import robot_urdf

    text = robot_urdf(args.robot)
    out = args.out if args.out is not None else (None if args.render else "-")
    if out == "-":
        sys.stdout.write(text)
    elif out is not None:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"{args.robot}: {path} ({text.count('<link ')} links)", file=sys.stderr)
    if args.render:
        from mbrl_ros.commands.render import osmesa_available

        if os.environ.get("MUJOCO_GL") == "osmesa" and not osmesa_available():
            raise ValueError("--render needs OSMesa (Debian: apt-get install libosmesa6)")
        import imageio.v2 as imageio

        image = render_view(args.robot, args.width, args.height, args.seed, args.steps)
        path = Path(args.render)
        path.parent.mkdir(parents=True, exist_ok=True)
        imageio.imwrite(path, image)
        print(f"{args.robot}: view rendered to {path} ({args.width}x{args.height})", file=sys.stderr)
    return 0
