"""mbrl_ros: game-theoretic model-based RL (PAL / MAL) for ROBEL robots on ROS 2."""

__version__ = "0.1.0"
