"""An episode ended by a world fault (the robot's safety layer, an unstable simulation step):
its steps before the fault are real data and reach the learners; the faulted step does not; the
next episode gets new draws, so a policy that trips a limit on every episode cannot freeze the
game (found on the emulated D'Claw: every episode of one policy tripped the thumb's position
limit, was dropped and played again with the same draws, and the game waited forever)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mbrl_ros.core.world import run_episode


class FaultingWorld:
    """A world that faults at step ``fault_at`` of every episode, as HardwareEnv reports a safety
    abort: the last good observation again, reward 0, truncated, ``info["aborted"]``."""

    def __init__(self, env: Any, fault_at: int) -> None:
        self.env, self.fault_at = env, fault_at
        self.t = 0
        self.resets: list[int] = []
        self.last_obs: np.ndarray = np.zeros(0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def reset(self, seed: int = 0, **kw: Any):
        self.t = 0
        self.resets.append(int(seed))
        obs, info = self.env.reset(seed=seed, **kw)
        self.last_obs = obs
        return obs, info

    def step(self, action: np.ndarray):
        if self.t == self.fault_at:
            info = {"success": False, "reward_terms": {}, "aborted": True,
                    "abort_reason": "position: joints ['THJ30(ID 30)'] outside their range by more than 0.1 rad"}
            if self.task.aux_dim:
                info["aux"] = np.zeros(self.task.aux_dim)  # HardwareEnv repeats its last reading
            return self.last_obs.copy(), 0.0, False, True, info
        self.t += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.last_obs = obs
        return obs, reward, terminated, truncated, info


def _world(fault_at: int) -> FaultingWorld:
    pytest.importorskip("mujoco")
    from mbrl_ros.tasks import make_env

    return FaultingWorld(make_env("dclaw-turn-fixed"), fault_at)


def test_a_faulted_episode_keeps_its_real_steps_and_leaves_the_faulted_one_out() -> None:
    world = _world(fault_at=5)
    rng = np.random.default_rng(0)
    ep = run_episode(world, lambda _o: rng.uniform(-1, 1, 9), 3, "e", 1)
    assert ep.aborted and not ep.terminated and len(ep) == 5 and ep.success is False
    assert ep.obs.shape == (6, 21) and ep.actions.shape == (5, 9) and ep.rewards.shape == (5,)
    assert np.all(ep.rewards != 0.0)  # no zero-reward stand-in step for the fault
    assert not np.allclose(ep.obs[-1], ep.obs[-2])  # the last observation is a real one
    ep.validate(world.task)  # the buffer takes it
    first = run_episode(_world(fault_at=0), lambda _o: np.zeros(9), 3, "e", 1)
    assert first.aborted and len(first) == 0 and first.obs.shape == (1, 21) and first.actions.shape == (0, 9)
    whole = run_episode(_world(fault_at=99), lambda _o: np.zeros(9), 3, "e", 1)
    assert not whole.aborted and len(whole) == 40


def test_the_in_process_game_keeps_faulted_episodes_and_skips_empty_ones() -> None:
    """``mbrl-ros train`` (StackelbergGame._play): the samples of faulted episodes count; an episode
    that faulted on its first step has none and is skipped with its draws (as a graph collector)."""
    from mbrl_ros.core.config import load_config
    from mbrl_ros.core.stackelberg import StackelbergGame

    cfg = load_config("pal", "dclaw-turn-fixed", ["n_init=40", "samples=80", "ensemble_size=2",
                                                  "model_hidden=[16,16]", "policy_hidden=[8,8]",
                                                  "value_hidden=[8,8]"])
    world = _world(fault_at=7)
    game = StackelbergGame(cfg, world, None, "cpu")
    eps = game._play(20, lambda rng: (lambda _o: rng.uniform(-1, 1, 9)), 0, "x")
    assert [len(e) for e in eps] == [7, 7, 7] and all(e.aborted for e in eps)
    assert len(set(world.resets)) == 3  # new draws for every episode
    world.fault_at = 0
    played = game.episodes_played
    world.resets.clear()
    with pytest.raises(RuntimeError, match="enough"):  # every episode empty: stop it after three
        def stop_after_3(rng):
            if game.episodes_played - played >= 3:
                raise RuntimeError("enough")
            return lambda _o: np.zeros(9)

        game._play(10, stop_after_3, 0, "y")
    assert len(set(world.resets)) == 3  # skipped, each with its own draws (never the same reset again)


@pytest.mark.ros
def test_the_collector_publishes_a_faulted_episode_and_moves_on_to_new_draws() -> None:
    """A collector node whose world faults at step 4 of every episode publishes 4-step episodes
    flagged aborted with the reason, one sequence number each, each with its own reset seed; a
    fault on the first step is skipped (not published) and its draws are not played again."""
    pytest.importorskip("rclpy")
    import rclpy
    from rclpy.parameter import Parameter
    from ros_harness import free_domain_id

    from mbrl_ros import security, wire
    from mbrl_ros.nodes.collector import Collector, EpisodeAborted

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=free_domain_id())
    try:
        node = Collector(context=context, parameter_overrides=[
            Parameter("coordinator_key", value=security.Signer.generate().public_text)])
        try:
            node.env = world = FaultingWorld(node.env, fault_at=4)
            node._may_run = lambda *_a, **_k: True  # as if the game state asked for random-policy data
            seeds = []
            for k in range(3):
                rec = node._run_episode(None)  # a random policy's episode
                assert rec.aborted and rec.length == 4 and rec.sequence == k
                assert "THJ30" in rec.extra["fault"]
                wire.unpack_episode(wire.pack_episode(rec), world.task)  # valid on the wire
                node._publish(rec)
                seeds.append(rec.extra["seed"])
            assert len(set(seeds)) == 3 and node.sequence == 3
            assert node.diag.count("episodes_faulted") == 3
            world.fault_at = 0
            for _ in range(2):
                with pytest.raises(EpisodeAborted, match="first step"):
                    node._run_episode(None)
            assert node.sequence == 3 and len(set(world.resets)) == len(world.resets) == 5
            world.fault_at = 99
            rec = node._run_episode(None)
            assert not rec.aborted and rec.length == 40 and rec.sequence == 3
            assert rec.extra["seed"] not in seeds and "fault" not in rec.extra
        finally:
            node.shutdown()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
