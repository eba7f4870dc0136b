"""Episodes and the replay buffer: FIFO for PAL, aggregate for MAL, validation, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from mbrl_ros.core.buffers import Episode, EpisodeBuffer
from mbrl_ros.tasks.pointmass import PointMassTask


def episode(i: int, T: int = 10, obs_dim: int = 6, act_dim: int = 2) -> Episode:
    rng = np.random.default_rng(i)
    return Episode(
        obs=rng.normal(size=(T + 1, obs_dim)), actions=rng.uniform(-1, 1, (T, act_dim)), rewards=rng.normal(size=T),
        terminated=False, episode_id=f"ep{i}", policy_version=i // 2,
    )


def test_fifo_keeps_the_newest_transitions() -> None:
    buf = EpisodeBuffer("fifo", capacity=25)
    for i in range(5):
        buf.add_episode(episode(i))
    assert len(buf) == 20 and buf.episode_ids() == ["ep3", "ep4"]
    assert buf.total_added == 50
    d = buf.arrays()
    assert d["obs"].shape == (20, 6) and d["next_obs"].shape == (20, 6) and d["actions"].shape == (20, 2)
    np.testing.assert_array_equal(d["obs"][10], episode(4).obs[0])  # order: oldest first
    np.testing.assert_array_equal(buf.initial_observations(), np.stack([episode(3).obs[0], episode(4).obs[0]]))


def test_aggregate_keeps_everything_and_ignores_duplicates() -> None:
    buf = EpisodeBuffer("aggregate")
    for i in range(5):
        assert buf.add_episode(episode(i))
    assert not buf.add_episode(episode(2))  # same episode id: a duplicate delivery
    assert len(buf) == 50 and len(buf.episode_ids()) == 5


def test_terminal_flags_mark_the_last_transition() -> None:
    ep = episode(0)
    ep.terminated = True
    buf = EpisodeBuffer("aggregate")
    buf.add_episode(ep)
    buf.add_episode(episode(1))
    t = buf.arrays()["terminals"]
    assert t[9] and t.sum() == 1


def test_validate_rejects_bad_episodes() -> None:
    task = PointMassTask()
    episode(0).validate(task)
    bad = episode(0)
    bad.obs[3, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        bad.validate(task)
    with pytest.raises(ValueError, match=r"actions must be \[T, 2\]"):
        episode(0, act_dim=3).validate(task)
    with pytest.raises(ValueError, match="obs must be"):
        episode(0, obs_dim=5).validate(task)
    with pytest.raises(ValueError, match="exceed the task horizon"):
        episode(0, T=21).validate(task)


def test_bad_buffer_arguments() -> None:
    with pytest.raises(ValueError, match="fifo or|'fifo' or 'aggregate'"):
        EpisodeBuffer("lifo", 10)
    with pytest.raises(ValueError, match="positive capacity"):
        EpisodeBuffer("fifo", None)
    with pytest.raises(ValueError, match="empty"):
        EpisodeBuffer("aggregate").arrays()


def test_save_and_load_round_trip(tmp_path) -> None:
    buf = EpisodeBuffer("fifo", capacity=30)
    for i in range(4):
        buf.add_episode(episode(i))
    buf.save(tmp_path)
    assert not list(tmp_path.glob("*.pkl")) and (tmp_path / "buffer.safetensors").exists()
    back = EpisodeBuffer.load(tmp_path)
    assert back.episode_ids() == buf.episode_ids() and back.total_added == buf.total_added
    for key, value in buf.arrays().items():
        np.testing.assert_array_equal(back.arrays()[key], value)


def test_fifo_keeps_every_initial_state_and_the_model_only_state(tmp_path) -> None:
    """Rollout start states come from every episode ever seen (the paper's code keeps them all),
    not only from the episodes still in PAL's FIFO; aux (model-only state) travels with them."""
    buf = EpisodeBuffer("fifo", capacity=25)
    eps = []
    for i in range(5):
        e = episode(i)
        e.aux = np.full((11, 3), float(i))
        eps.append(e)
        buf.add_episode(e)
    assert buf.episode_ids() == ["ep3", "ep4"]
    obs0, aux0 = buf.initial_states()
    np.testing.assert_array_equal(obs0, np.stack([e.obs[0] for e in eps]))  # evicted ones included
    np.testing.assert_array_equal(aux0[:, 0], [0, 1, 2, 3, 4])
    d = buf.arrays()
    assert d["aux"].shape == (20, 3) and d["next_aux"].shape == (20, 3)
    buf.save(tmp_path)
    back = EpisodeBuffer.load(tmp_path)
    np.testing.assert_array_equal(back.initial_states()[0], obs0)
    np.testing.assert_array_equal(back.initial_states()[1], aux0)
    with pytest.raises(ValueError, match="aux"):
        buf.add_episode(episode(9))  # every episode of a buffer carries aux, or none does


def test_an_episode_added_before_another_takes_its_place_and_its_start_state() -> None:
    """``add_episode(ep, before=id)``: in front of that episode, with its start state in front of
    that one's (evicted episodes' start states stay where they were); an unknown id appends."""
    buf = EpisodeBuffer("fifo", capacity=30)
    for i in (0, 1, 3, 4):
        buf.add_episode(episode(i))  # 40 transitions: ep0 is evicted, its start state stays
    assert buf.episode_ids() == ["ep1", "ep3", "ep4"]
    buf.add_episode(episode(2), before="ep3")  # FIFO: ep1 goes to make room
    assert buf.episode_ids() == ["ep2", "ep3", "ep4"]
    starts, _ = buf.initial_states()
    expected = np.stack([episode(i).obs[0] for i in (0, 1, 2, 3, 4)])
    np.testing.assert_array_equal(starts, expected)
    buf.add_episode(episode(5), before="ep0")  # no longer in the buffer: appended
    assert buf.episode_ids()[-1] == "ep5"


def test_the_intake_keeps_each_streams_episodes_in_the_order_they_were_played() -> None:
    """A graph learner that missed episodes live gets them later from the record: they go where
    the collector played them, so its buffer (and its fits) match the in-process game's. Without
    this, a startup race that delayed the first two episodes made `test_ros_equivalence` differ."""
    from mbrl_ros import wire
    from mbrl_ros.nodes.episode_intake import EpisodeIntake
    from mbrl_ros.tasks import get_task

    task = get_task("dclaw-turn-fixed")
    rng = np.random.default_rng(0)

    def packed(stream: str, seq: int) -> bytes:
        obs = np.zeros((5, task.info.obs_dim))
        obs[:, 0] = seq  # tells the start states apart
        return wire.pack_episode(wire.EpisodeRecord(
            robot_id="sim0", episode_id=f"sim0-{stream}-{seq:06d}", sequence=seq, policy_version=0,
            task_id=task.info.task_id, obs=obs, actions=rng.uniform(-1, 1, (4, task.info.act_dim)),
            rewards=np.zeros(4), terminated=False, stream=stream, extra={"purpose": "train"},
            aux=np.zeros((5, task.aux_dim)),
        ))

    intake = EpisodeIntake(task, EpisodeBuffer("aggregate"))
    for stream, seq in [("a", 2), ("a", 3), ("b", 0), ("a", 4), ("a", 0), ("b", 1), ("a", 1)]:
        assert intake.ingest(packed(stream, seq)).accepted
    assert intake.buffer.episode_ids() == [
        "sim0-a-000000", "sim0-a-000001", "sim0-a-000002", "sim0-a-000003", "sim0-b-000000", "sim0-a-000004",
        "sim0-b-000001",
    ]
    starts, _ = intake.buffer.initial_states()
    assert list(starts[:, 0]) == [0, 1, 2, 3, 0, 4, 1]
    assert intake.ids[:2] == ["sim0-a-000002", "sim0-a-000003"]  # the ledger keeps the arrival order
