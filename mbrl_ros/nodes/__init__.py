"""rclpy nodes of the mbrl_ros graph: thin adapters over ``mbrl_ros.core`` and the tasks.

Topic and service names and their QoS live here so every node (and ``mbrl-ros monitor``, the
tests and the benchmark) agrees on them. All interfaces are standard ROS 2 ones:

==============================  ==============================  =======================================
name                            type                            QoS
==============================  ==============================  =======================================
/mbrl/transitions               std_msgs/UInt8MultiArray        RELIABLE, VOLATILE, KEEP_ALL
/mbrl/model                     std_msgs/UInt8MultiArray        RELIABLE, TRANSIENT_LOCAL, KEEP_LAST(1)
/mbrl/policy/candidate          std_msgs/UInt8MultiArray        RELIABLE, TRANSIENT_LOCAL, KEEP_LAST(1)
/mbrl/policy/deployed           std_msgs/UInt8MultiArray        RELIABLE, TRANSIENT_LOCAL, KEEP_LAST(1)
/mbrl/policy/weights            std_msgs/UInt8MultiArray        RELIABLE, TRANSIENT_LOCAL, KEEP_LAST(4)
/mbrl/policy/deployed/resend    std_msgs/UInt32 (version)       RELIABLE, VOLATILE, KEEP_LAST(10)
/mbrl/model/resend              std_msgs/UInt32 (version)       RELIABLE, VOLATILE, KEEP_LAST(10)
/mbrl/game_state                std_msgs/String (JSON)          RELIABLE, TRANSIENT_LOCAL, KEEP_LAST(1)
/mbrl/estop                     std_msgs/Bool                   RELIABLE, TRANSIENT_LOCAL, KEEP_LAST(1)
/mbrl/metrics/<name>            std_msgs/Float64                RELIABLE, VOLATILE, KEEP_LAST(100)
/mbrl/<robot_id>/joint_states   sensor_msgs/JointState          BEST_EFFORT, VOLATILE, KEEP_LAST(10)
/diagnostics                    diagnostic_msgs/DiagnosticArray RELIABLE, VOLATILE, KEEP_LAST(10)
/mbrl/estop (service)           std_srvs/Trigger                e-stop every collector now
/mbrl/estop_clear (srv)         std_srvs/Trigger                release the e-stop
==============================  ==============================  =======================================

The two resend topics ask for a deployed policy or a model that did not arrive
(:mod:`mbrl_ros.nodes.resend`): a latched depth-1 reader loses a sample that another writer's
message replaces before it was taken.
"""

from __future__ import annotations

TRANSITIONS = "/mbrl/transitions"
MODEL = "/mbrl/model"
POLICY_CANDIDATE = "/mbrl/policy/candidate"
POLICY_DEPLOYED = "/mbrl/policy/deployed"
POLICY_WEIGHTS = "/mbrl/policy/weights"
POLICY_DEPLOYED_RESEND = "/mbrl/policy/deployed/resend"
MODEL_RESEND = "/mbrl/model/resend"
GAME_STATE = "/mbrl/game_state"
ESTOP = "/mbrl/estop"
ESTOP_SERVICE = "/mbrl/estop"
ESTOP_CLEAR_SERVICE = "/mbrl/estop_clear"
METRICS_PREFIX = "/mbrl/metrics/"
DIAGNOSTICS = "/diagnostics"
TRANSITIONS_DEPTH = 1000  # > episodes in flight at full sim speed between two spins of a learner


def joint_states_topic(robot_id: str) -> str:
    return f"/mbrl/{robot_id}/joint_states"


def latched_qos():
    """Policies, models, game state, e-stop: a late joiner gets the latest (and only the latest)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=1,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def weights_qos():
    """Policy weights (safetensors) of the last few versions: the model player of MAL + agent
    reward needs the *deployed* version's, which is one behind the newest after a gate refusal."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=4,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def resend_qos():
    """Requests to send a version again: reliable, for the ones asking now (nothing latched)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=10,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def transitions_qos():
    """Episodes: reliable and KEEP_ALL, so a slow subscriber never loses one (the writer keeps every
    unacknowledged episode instead of overwriting the oldest, as KEEP_LAST would under a backlog)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        depth=TRANSITIONS_DEPTH,
        history=HistoryPolicy.KEEP_ALL,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def metrics_qos():
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)


def sensor_qos():
    from rclpy.qos import qos_profile_sensor_data

    return qos_profile_sensor_data


def run_node(factory, args=None) -> None:
    """``rclpy.init``, build the node, spin until Ctrl-C or ``node.finished``, clean up, exit.

    The demo_nodes_py pattern, plus: a ``ValueError`` while building the node (a bad
    parameter) is one clear log line and exit status 2; ``node.exit_code`` is the status.
    A node class with ``executor_threads > 1`` spins in a ``MultiThreadedExecutor`` (its
    callback groups then run side by side: the collectors' e-stop never waits behind a policy load).
    """
    import sys

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor

    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = factory()
        threads = int(getattr(factory, "executor_threads", 1))
        executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not getattr(node, "finished", False):
            executor.spin_once(timeout_sec=0.1)
        code = int(getattr(node, "exit_code", 0))
    except (KeyboardInterrupt, ExternalShutdownException):
        code = 0
    except ValueError as exc:
        print(f"[{getattr(factory, 'node_name', 'node')}] error: {exc}", file=sys.stderr, flush=True)
        code = 2
    finally:
        if node is not None:
            shutdown = getattr(node, "shutdown", None)
            if callable(shutdown):
                shutdown()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    sys.exit(code)
