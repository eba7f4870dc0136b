"""``mbrl-ros launch NAME [name:=value ...]``: start a node graph without the ROS 2 launch tools.

The same graph as ``ros2 launch mbrl_ros NAME.launch.py`` (both are built by
:mod:`mbrl_ros.graph`): one process per node, each node's output in ``<log_dir>/logs/<node>.log``,
its parameters in ``<log_dir>/params/<node>.yaml``. The run ends when the game coordinator
finishes (exit 0, a summary is printed), on Ctrl-C (every node is stopped cleanly, exit 130),
when a learner or the coordinator dies (every node is stopped, exit 1), or after ``--timeout``
seconds (exit 124). A dead collector is reported; the run goes on while another collector is
alive, and the exit status is then 1.

``role:=collectors`` starts collectors only: each leaves when the game it joined is over, and the
run ends (exit 0) when all have left; the summary and records are on the learner's machine.

``video:=true``: once the game is over and every node has stopped, one episode of the final
deployed policy (``policy`` in ``summary.json``) is rendered offscreen to ``<log_dir>/policy.gif``
by ``mbrl-ros render`` in a subprocess (OSMesa; without it a one-line reason is printed
instead). The video never changes the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import yaml

from mbrl_ros import graph

HELP = "start a PAL/MAL node graph (one process per node) without ros2 launch"


def _add_options(parser) -> None:
    parser.add_argument("--timeout", type=float, default=0.0, help="stop the run after this many seconds (0 = never)")
    parser.add_argument("--dry-run", action="store_true", help="print the node commands and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser) -> None:
    _add_options(parser)
    parser.add_argument(
        "name", choices=sorted(graph.ALL_GRAPHS), help="graph to start (deploy_*: run a policy, no learning)"
    )
    # REMAINDER: options may also follow the name:=value arguments (parsed again in run())
    parser.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        metavar="name:=value",
        help="launch arguments: " + ", ".join(a.name for a in graph.launch_arguments("pal_dclaw")),
    )


def _split_options(args) -> None:
    """Options given after NAME land in ``args.args``; move them onto ``args``."""
    later = argparse.ArgumentParser(prog=f"mbrl-ros launch {args.name}", add_help=False)
    _add_options(later)
    later.add_argument("tokens", nargs="*")
    ns = later.parse_intermixed_args(args.args)
    args.timeout = ns.timeout or args.timeout
    args.dry_run = ns.dry_run or args.dry_run
    args.no_progress = ns.no_progress or args.no_progress
    args.args = ns.tokens


def write_parameter_files(nodes: list[graph.NodeDescription], directory: Path) -> dict[str, list[str]]:
    """Dict parameters -> ``<dir>/<node>.yaml`` (ROS format); returns each node's ordered file list."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}
    for node in nodes:
        paths = []
        for i, p in enumerate(node.parameters):
            if isinstance(p, dict):
                path = directory / f"{node.name}{'' if i == len(node.parameters) - 1 else f'_{i}'}.yaml"
                path.write_text(yaml.safe_dump({node.name: {"ros__parameters": p}}, sort_keys=True))
                paths.append(str(path))
            else:
                paths.append(str(p))
        files[node.name] = paths
    return files


class Launcher:
    """Starts, watches and stops the node processes of one resolved graph."""

    def __init__(self, g: graph.ResolvedGraph) -> None:
        self.g = g
        self.nodes = graph.build_nodes(g)
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}
        self.dead: dict[str, int] = {}

    def commands(self) -> dict[str, list[str]]:
        files = write_parameter_files(self.nodes, self.g.log_dir / "params")
        return {n.name: graph.node_command(n, files[n.name]) for n in self.nodes}

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(graph.environment(self.g))
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("MKL_NUM_THREADS", "1")
        return env

    def start(self) -> None:
        (self.g.log_dir / "logs").mkdir(parents=True, exist_ok=True)
        env = self.environment()
        for name, argv in self.commands().items():
            log = self.g.log_dir / "logs" / f"{name}.log"
            self.logs[name] = log
            with open(log, "ab") as f:
                # own session: Ctrl-C reaches the launcher only, which then stops nodes in order
                self.procs[name] = subprocess.Popen(
                    argv, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
        # which process is which node (for tools and tests that act on one node)
        (self.g.log_dir / "pids.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))

    def poll(self) -> Optional[tuple[str, int]]:
        """The first node (name, status) that exited since the last poll, if any."""
        for name, p in self.procs.items():
            if name not in self.dead and p.poll() is not None:
                self.dead[name] = p.returncode
                return name, p.returncode
        return None

    def alive(self, names) -> list[str]:
        return [n for n in names if n in self.procs and self.procs[n].poll() is None]

    def stop(self, grace_s: float = 8.0) -> None:
        """SIGINT every node (rclpy shuts down cleanly), then SIGTERM, then SIGKILL."""
        for sig, wait in ((signal.SIGINT, grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            live = [p for p in self.procs.values() if p.poll() is None]
            if not live:
                return
            for p in live:
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and any(p.poll() is None for p in live):
                time.sleep(0.05)

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join(self.logs[name].read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


VIDEO_SIZE = (320, 320)  # width, height of the launch video's frames
VIDEO_STEPS = 40  # one D'Claw episode (4 s at 10 Hz; the GIF plays in real time)
VIDEO_TIMEOUT_S = 600.0


def render_video(
    task_id: str,
    policy: str,
    out: Path,
    width: int = VIDEO_SIZE[0],
    height: int = VIDEO_SIZE[1],
    steps: int = VIDEO_STEPS,
    seed: int = 0,
    timeout_s: float = VIDEO_TIMEOUT_S,
) -> tuple[bool, str]:
    """One episode of ``policy`` (an ONNX path, ``zero`` or ``random``) rendered offscreen to the GIF
    ``out`` by ``mbrl-ros render`` in a subprocess (MuJoCo's GL backend is chosen before MuJoCo
    loads there, and nothing of it touches this process). Returns ``(ok, message)``: the path
    written, or a one-line reason why not (no OSMesa, a render error, the timeout)."""
    from mbrl_ros.commands.render import osmesa_available  # sets MUJOCO_GL=osmesa unless chosen

    if os.environ.get("MUJOCO_GL") == "osmesa" and not osmesa_available():
        return False, "offscreen rendering needs OSMesa (apt-get install libosmesa6)"
    argv = [
        sys.executable,
        "-m",
        "mbrl_ros.cli",
        "render",
        "--task",
        task_id,
        "--policy",
        str(policy),
        "--out",
        str(out),
        "--episodes",
        "1",
        "--width",
        str(width),
        "--height",
        str(height),
        "--max-steps",
        str(steps),
        "--seed",
        str(seed),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"rendering did not finish in {timeout_s:.0f} s"
    if proc.returncode != 0 or not Path(out).is_file():
        lines = [x for x in proc.stdout.decode(errors="replace").splitlines() if x.strip()]
        return False, f"rendering failed ({proc.returncode}): {lines[-1] if lines else 'no output'}"
    return True, str(out)


def write_video(g: graph.ResolvedGraph) -> str:
    """``video:=true`` at the end of a run: the final policy's episode as ``<log_dir>/policy.gif``.
    Returns the summary's video line (the path, or why there is none)."""
    s = _read_json(g.log_dir / "summary.json")
    policy = (s or {}).get("policy")
    if not policy or not Path(policy).is_file():
        return "not written: the run has no final policy"
    print(f"rendering the final policy to {g.video_path} ...", flush=True)
    try:
        ok, message = render_video(g.task_id, policy, g.video_path, seed=g.seed)
    except KeyboardInterrupt:
        return "not written: interrupted"
    return message if ok else f"not written: {message}"


def print_summary(log_dir: Path, video: Optional[str] = None) -> None:
    s = _read_json(log_dir / "summary.json")
    if s is None:
        print(f"no summary (the coordinator did not finish); logs in {log_dir / 'logs'}")
        return
    success = s.get("final_eval_success")
    print(f"  game           {s['algo']} on {s['task']}")
    print(f"  iterations     {s['iterations']}")
    print(f"  real samples   {s['samples']} of {s['sample_budget']} ({s['episodes']} episodes)")
    print(
        f"  success        {('%.2f' % success) if success is not None else 'n/a'} (deterministic eval, final policy); "
        f"best {s.get('best_eval_success')}"
    )
    if s.get("samples_to_90") is not None:
        print(
            f"  90% held at    {s['samples_to_90']} real samples (3 evaluations in a row; first reached at "
            f"{s.get('first_touch_90')})"
        )
    print(f"  wall time      {s['wall_s']:.1f} s")
    print(f"  policy         {s.get('policy')}")
    print(f"  metrics        {s.get('metrics')}")
    print(f"  MCAP record    {s.get('mcap')}")
    print(f"  plots          {s.get('plot')}")
    if video is not None:
        print(f"  video          {video}")
    print(f"  logs           {log_dir / 'logs'}")


def run(args) -> int:
    _split_options(args)
    g = graph.resolve(args.name, graph.parse_launch_tokens(args.args, args.name))
    launcher = Launcher(g)
    if args.dry_run:
        for name, argv in launcher.commands().items():
            print(f"{name}: {' '.join(argv)}")
        print("environment: " + " ".join(f"{k}={v}" for k, v in graph.environment(g).items()))
        return 0
    env = graph.environment(g)
    where = (
        f"peers {env['ROS_STATIC_PEERS']}" if g.peers else f"discovery {env['ROS_AUTOMATIC_DISCOVERY_RANGE'].lower()}"
    )
    print(
        f"mbrl-ros launch {args.name}: {len(launcher.nodes)} nodes (role {g.role}), ROS_DOMAIN_ID={g.domain_id}, "
        f"{where}, log dir {g.log_dir}"
    )
    print(f"  watch it with: mbrl-ros monitor --domain-id {g.domain_id}")
    launcher.start()
    status = _watch(launcher, args)  # every node has stopped when it returns
    if g.role == "collectors":  # the game's records are on the learner's machine
        print(
            f"  the game's summary, records and policy are in the learner's log_dir; collector logs in {g.log_dir / 'logs'}"
        )
        return status
    if g.info.kind == "deploy":
        print_deploy_summary(g.log_dir)
        return status
    video = write_video(g) if g.video else None
    print_summary(g.log_dir, video=video)
    return status


class _EpisodePrinter:
    """Deploy graphs: each new line of ``<log_dir>/episodes.jsonl`` (the policy_deployer's count) as it comes."""

    def __init__(self, log_dir: Path) -> None:
        self.path, self.seen = log_dir / "episodes.jsonl", 0

    def poll(self) -> None:
        try:
            lines = [x for x in self.path.read_text().splitlines() if x.strip()]
        except OSError:
            return
        for line in lines[self.seen :]:
            try:
                e = json.loads(line)
            except ValueError:
                break  # a line being written: read it next time
            self.seen += 1
            print(
                f"  episode {e['episode']:>4}  success {'yes' if e['success'] else 'no ':3}  return {e['return']:9.2f}"
                f"  ({e['robot_id']}, {e['wall_s']:.1f} s)",
                flush=True,
            )


def print_deploy_summary(log_dir: Path) -> None:
    s = _read_json(log_dir / "summary.json")
    if s is None:
        print(f"no summary (the policy deployer did not finish); logs in {log_dir / 'logs'}")
        return
    success, ret = s.get("success"), s.get("mean_return")
    print(f"  policy         {s['policy']} (v{s['policy_version']}, sha256 {s['sha256'][:12]})")
    print(f"  world          {s['task']} ({'simulation' if s['use_sim'] else 'robot'})")
    print(
        f"  episodes       {s['episodes']}" + (f" of {s['episodes_requested']}" if s.get("episodes_requested") else "")
    )
    print(f"  success        {('%.2f' % success) if success is not None else 'n/a'} (deterministic: the mean action)")
    print(f"  mean return    {('%.2f' % ret) if ret is not None else 'n/a'}")
    print(f"  wall time      {s['wall_s']:.1f} s")
    print(f"  MCAP record    {s.get('mcap')}")
    print(f"  episodes       {s.get('episodes_file')}")
    print(f"  logs           {log_dir / 'logs'}")


def _watch(launcher: Launcher, args) -> int:
    g = launcher.g
    if g.role == "collectors" and not any(n.ends_run for n in launcher.nodes):
        return _watch_collectors(launcher, args)
    collectors = [n.name for n in launcher.nodes if not n.required]
    ender = next(n.name for n in launcher.nodes if n.ends_run)
    bar = None
    episodes = _EpisodePrinter(g.log_dir) if g.info.kind == "deploy" else None
    if episodes is not None:
        pass  # per-episode lines instead of a progress bar
    elif not args.no_progress and g.role != "collectors":
        from tqdm import tqdm

        bar = tqdm(total=None, unit="sample", desc=args.name, dynamic_ncols=True, file=sys.stdout)
    failed = False
    t0 = time.monotonic()
    key_shown = g.role != "learner"
    try:
        while True:
            time.sleep(0.2)
            if not key_shown and g.public_key_path.is_file():  # the coordinator has created the run's key
                key_shown = True
                key = g.public_key_path.read_text().strip()
                print(
                    f"\n  collectors join with: mbrl-ros launch {args.name} role:=collectors domain_id:={g.domain_id} "
                    f"peers:=<this machine> coordinator_key:={key} [num_collectors:=N first_collector:=K]",
                    flush=True,
                )
            if bar is not None:
                s = _read_json(g.log_dir / "game_state.json")
                if s:
                    bar.total = s.get("sample_budget")
                    bar.n = s.get("samples", 0)
                    curve = [c for c in (s.get("success_curve") or []) if c is not None]
                    bar.set_postfix_str(
                        f"it {s['iteration']} {s['phase']} eval success {curve[-1] if curve else '-'}", refresh=False
                    )
                    bar.refresh()
            if episodes is not None:
                episodes.poll()
            ev = launcher.poll()
            if ev is not None:
                name, code = ev
                if episodes is not None and name == ender:
                    episodes.poll()
                    if code == 2:  # the deployer refused the policy before anything moved
                        lines = [x for x in launcher.tail(name, 40).splitlines() if "refused" in x or "error" in x]
                        print(f"\n{args.name}: {lines[-1].strip() if lines else 'policy refused'}")
                        return 2
                if name == ender and code == 0:
                    what = "deployment" if episodes is not None else "game"
                    print(f"\n{args.name}: {what} over" + (" (but a node died during the run)" if failed else ""))
                    return 1 if failed else 0
                if name in collectors and launcher.alive(collectors):
                    failed = True
                    print(
                        f"\n{name} exited with status {code}; the run continues with {', '.join(launcher.alive(collectors))}"
                    )
                    continue
                print(
                    f"\n{name} exited with status {code}; stopping the graph. Last lines of its log:\n{launcher.tail(name)}"
                )
                return 1
            if args.timeout and time.monotonic() - t0 > args.timeout:
                print(f"\n--timeout {args.timeout:.0f} s reached; stopping the graph")
                return 124
    except KeyboardInterrupt:
        print("\nCtrl-C: stopping the graph")
        return 130
    finally:
        if bar is not None:
            bar.close()
        launcher.stop()


def _watch_collectors(launcher: Launcher, args) -> int:
    """``role:=collectors`` (sim): no coordinator here. Each collector leaves when the game it
    joined is over (status 0); the run is over when every collector has left. A collector that
    fails is reported and the others go on; the status is then 1."""
    names = [n.name for n in launcher.nodes]
    failed: list[str] = []
    t0 = time.monotonic()
    try:
        while True:
            time.sleep(0.2)
            ev = launcher.poll()
            if ev is not None:
                name, code = ev
                if code != 0:
                    failed.append(name)
                    print(f"\n{name} exited with status {code}. Last lines of its log:\n{launcher.tail(name)}")
                if not launcher.alive(names):
                    print(
                        f"\n{args.name}: game over for this machine's collectors"
                        + (f" ({', '.join(failed)} failed)" if failed else "")
                    )
                    return 1 if failed else 0
            if args.timeout and time.monotonic() - t0 > args.timeout:
                print(f"\n--timeout {args.timeout:.0f} s reached; stopping the collectors")
                return 124
    except KeyboardInterrupt:
        print("\nCtrl-C: stopping the collectors")
        return 130
    finally:
        launcher.stop()
