"""Shared pytest set-up: small thread counts (CI has 2 cores), a headless matplotlib, the ROS graph
fixtures (``graph``, ``probe``) and the node logs of a failed graph test in its report."""

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

# Processes the tests start are stopped with SIGINT (launcher, nodes, emulator). A test run
# started as a script's background job inherits SIGINT ignored, and so would every child; a
# handled SIGINT here gives them the default back (mbrl_ros.cli does the same for its commands).
from mbrl_ros.cli import stop_on_sigint  # noqa: E402

stop_on_sigint()


@pytest.fixture
def graph(tmp_path):
    """Node processes on a private ROS domain (bench._graph_harness.Graph), killed at the end."""
    from bench._graph_harness import Graph

    g = Graph(tmp_path)
    yield g
    g.close()


@pytest.fixture
def probe(graph):
    """An rclpy node in the test process on the graph's domain (needs rclpy: ROS tests only)."""
    from bench._graph_harness import Probe

    p = Probe(graph.domain_id)
    yield p
    p.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that ran node processes reports the tails of their logs (the graph tests
    time out waiting for a game state; the nodes' own logs say which of them stalled and why)."""
    from bench._graph_harness import GRAPHS

    if call.when == "setup":
        GRAPHS.clear()
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call":
        for g in GRAPHS:
            try:
                report.sections.append((f"node logs ({g.tmp.name})", g.log_tails()))
            except OSError as e:
                report.sections.append(("node logs", f"unreadable: {e}"))
