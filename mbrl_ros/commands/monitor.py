"""``mbrl-ros monitor``: a terminal view of a running graph (for machines without rqt).

Joins the ROS domain and shows the live game phase and iteration, the sample budget, the
deployed policy and model versions, the e-stop, the evaluation success curve as a sparkline,
and every node's health from ``/diagnostics`` (OK / WARN / ERROR / STALE when a node has not
reported for a while). ``--once`` prints one view and exits (scripts, CI).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Optional

HELP = "terminal view of a running graph: phase, iteration, success curve, per-node health"

SPARK = "▁▂▃▄▅▆▇█"
LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}


def add_arguments(parser) -> None:
    parser.add_argument(
        "--domain-id", type=int, default=None, help="ROS_DOMAIN_ID to watch (default: the environment's)"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument("--once", action="store_true", help="print one view (after --timeout at most) and exit")
    parser.add_argument("--timeout", type=float, default=10.0, help="with --once: how long to wait for the game state")
    parser.add_argument("--stale-s", type=float, default=5.0, help="a node silent this long is STALE")


def sparkline(values: list[Optional[float]], lo: float = 0.0, hi: float = 1.0, width: int = 60) -> str:
    """One character per value in [lo, hi] (a space for a missing value), the last ``width`` values."""
    out = []
    for v in values[-width:]:
        if v is None:
            out.append(" ")
            continue
        x = 0.0 if hi <= lo else (min(max(float(v), lo), hi) - lo) / (hi - lo)
        out.append(SPARK[min(len(SPARK) - 1, int(round(x * (len(SPARK) - 1))))])
    return "".join(out)


def render(state: Optional[dict], nodes: dict[str, dict], now: float, stale_s: float = 5.0, domain: str = "") -> str:
    """The monitor's text for a game state and the latest diagnostics of each node."""
    lines = [f"mbrl_ros monitor   ROS_DOMAIN_ID={domain}   {time.strftime('%H:%M:%S')}"]
    if state is None:
        lines.append("game     (no /mbrl/game_state yet: is a game coordinator running in this domain?)")
    else:
        budget = max(1, int(state.get("sample_budget", 1)))
        done = int(state.get("samples", 0))
        filled = int(30 * min(1.0, done / budget))
        phase = "DONE" if state.get("done") else state.get("phase", "?")
        lines.append(
            f"game     {state.get('algo')} on {state.get('task_id')}   iteration {state.get('iteration')}   "
            f"phase {phase}   {'E-STOP' if state.get('estop') else ''}"
        )
        lines.append(
            f"samples  {done}/{budget} [{'#' * filled}{'.' * (30 - filled)}]   collecting: {state.get('collect')}"
        )
        lines.append(
            f"versions policy deployed v{state.get('deployed_policy_version')}   "
            f"candidate v{state.get('candidate_policy_version')}   model v{state.get('model_version')}"
        )
        curve = state.get("success_curve") or []
        last = next((c for c in reversed(curve) if c is not None), None)
        lines.append(f"success  {sparkline(curve)}  last {last if last is None else f'{last:.2f}'}")
    lines.append("nodes")
    if not nodes:
        lines.append("  (no /diagnostics yet)")
    for name in sorted(nodes):
        d = nodes[name]
        level = 3 if now - d["t"] > stale_s else d["level"]
        keys = (
            "phase",
            "samples",
            "buffer_transitions",
            "episodes_published",
            "steps_per_s",
            "model_version",
            "policy_version",
            "loop_jitter_p99_ms",
            "policy_handoff_ms",
        )
        facts = ", ".join(f"{k}={d['values'][k]}" for k in keys if k in d["values"])
        rejected = sum(int(v) for k, v in d["values"].items() if k.startswith("rejected_") and str(v).isdigit())
        if rejected:
            facts += f", rejected={rejected}"
        lines.append(f"  {LEVELS.get(level, '?'):5} {name:22} {d['message'][:60]:60} {facts}")
    return "\n".join(lines)


def run(args) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String

    from mbrl_ros import wire
    from mbrl_ros.nodes import GAME_STATE, latched_qos

    if args.interval <= 0:
        raise ValueError("--interval must be > 0")
    domain = args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    if not 0 <= domain <= 232:
        raise ValueError(f"--domain-id must be in [0, 232], got {domain}")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node("mbrl_ros_monitor", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    box: dict[str, Any] = {"state": None}
    nodes: dict[str, dict] = {}

    def on_state(msg: String) -> None:
        try:
            box["state"] = wire.unpack_game_state(msg.data).to_body()  # render() reads the validated fields
        except wire.WireError:
            pass

    def on_diag(msg: DiagnosticArray) -> None:
        for st in msg.status:
            if not st.name.startswith("mbrl_ros/"):
                continue
            level = int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(st.level)
            nodes[st.name.split("/", 1)[1]] = {
                "level": level,
                "message": st.message,
                "t": time.monotonic(),
                "values": {kv.key: kv.value for kv in st.values},
            }

    node.create_subscription(String, GAME_STATE, on_state, latched_qos())
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
    tty = sys.stdout.isatty()
    try:
        if args.once:
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline and (box["state"] is None or len(nodes) == 0):
                executor.spin_once(timeout_sec=0.1)
            end = time.monotonic() + min(1.5, max(0.0, deadline - time.monotonic()))  # collect more diagnostics
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.1)
            print(render(box["state"], nodes, time.monotonic(), args.stale_s, str(domain)))
            return 0 if box["state"] is not None else 1
        while True:
            end = time.monotonic() + args.interval
            while time.monotonic() < end:
                executor.spin_once(timeout_sec=0.05)
            text = render(box["state"], nodes, time.monotonic(), args.stale_s, str(domain))
            print(("\x1b[2J\x1b[H" if tty else "\n") + text, flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
