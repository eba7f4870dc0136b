"""mbrl_ros: game-theoretic model-based RL (PAL / MAL) for ROBEL robots on ROS 2."""

import os as _os

# OpenMP threads that wait for work sleep instead of spinning (read when torch loads libgomp,
# so it is set before any torch import): with a spinning policy, one other CPU-bound process on
# the machine made a 2-thread learner 2-30x slower (mbrl_ros/core/threads.py, BENCHMARKS.md).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
