"""The ROS graph tests' harness: node processes on a private domain and a probe node.

It lives in ``bench/_graph_harness.py`` (the graph benchmark drives the graph the same way);
the tests keep importing it from here.
"""

from bench._graph_harness import TINY_GAME, Graph, Probe, diagnostics_of, free_domain_id, game_params

__all__ = ["TINY_GAME", "Graph", "Probe", "diagnostics_of", "free_domain_id", "game_params"]
