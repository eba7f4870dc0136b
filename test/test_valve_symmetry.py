"""D'Claw's three-spoke valve in the dynamics model: a fit on one stroke's data holds a stroke on."""

from __future__ import annotations

import math

import pytest
import torch

from bench.bench_valve_symmetry import noise_episodes, valve_errors
from mbrl_ros.core.config import load_config
from mbrl_ros.core.model_player import ModelPlayer
from mbrl_ros.tasks import get_task

torch.set_num_threads(1)


def test_a_model_fitted_at_one_valve_angle_predicts_the_next_spoke_only_with_the_symmetry():
    """Fitted on episodes from theta = 0, tested on held-out episodes from 2 pi / 3 (the next
    spoke under the same finger): with the symmetry the loss there is that at 0; without, the
    members extrapolate in (cos theta, sin theta) and the loss is far higher."""
    train = noise_episodes(0.0, range(16))
    tests = {a: noise_episodes(a, range(100, 104)) for a in (0.0, 2 * math.pi / 3)}
    on = valve_errors(True, train, tests, steps=300)
    off = valve_errors(False, train, tests, steps=300)
    shifted = 2 * math.pi / 3
    assert on[shifted]["loss"] < 1.3 * on[0.0]["loss"]  # the next spoke looks like the first
    assert on[shifted]["loss"] < 0.7 * off[shifted]["loss"]  # without the symmetry it does not
    assert abs(on[0.0]["loss"] - off[0.0]["loss"]) < 0.3 * off[0.0]["loss"]  # where data are, both fit


def test_the_symmetry_is_a_property_of_the_saved_model():
    """A model blob says which angles it reads and how: a player with the other setting refuses it."""
    task = get_task("dclaw-turn-fixed")
    small = {"model_hidden": [8], "ensemble_size": 2, "device": "cpu"}
    blob = ModelPlayer(task, load_config("pal", "dclaw-turn-fixed", small)).to_bytes()
    other = ModelPlayer(task, load_config("pal", "dclaw-turn-fixed", {**small, "model_symmetry": False}))
    with pytest.raises(ValueError, match="angle_dims"):
        other.load_bytes(blob)
    ModelPlayer(task, load_config("pal", "dclaw-turn-fixed", small)).load_bytes(blob)  # same setting: loads
