"""Shared pytest set-up: small thread counts (CI has 2 cores) and a headless matplotlib."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

# Processes the tests start are stopped with SIGINT (launcher, nodes, emulator). A test run
# started as a script's background job inherits SIGINT ignored, and so would every child; a
# handled SIGINT here gives them the default back (mbrl_ros.cli does the same for its commands).
from mbrl_ros.cli import stop_on_sigint  # noqa: E402

stop_on_sigint()
