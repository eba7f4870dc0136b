"""Game configuration: paper defaults, per-task horizon rules, overrides and clear errors."""

from __future__ import annotations

import pytest

from mbrl_ros.cli import main
from mbrl_ros.core.config import GameConfig, load_config
from mbrl_ros.core.schedule import GAMES


@pytest.mark.parametrize("algo", sorted(GAMES))
def test_every_algorithm_has_a_valid_config(algo: str) -> None:
    cfg = load_config(algo, "dkitty-orient-random")
    assert cfg.algo == algo and cfg.task_id == "dkitty-orient-random"
    assert cfg.ensemble_size == 4 and cfg.model_hidden == [256, 256] and cfg.policy_hidden == [64, 64]
    assert (cfg.npg_trajectories, cfg.cg_iters, cfg.entropy_coef) == (50, 25, 0.01)  # one setting for every game
    assert cfg.gamma == 0.995 and cfg.gae_lambda == 0.97 and cfg.npg_step_size == 0.05


def test_paper_horizon_rules() -> None:
    pal, mal = load_config("pal", "dkitty-orient-random"), load_config("mal", "dkitty-orient-random")
    assert pal.n_per_iter(40) == 200 and pal.n_per_iter(80) == 400  # min(5 H, 1000)
    assert mal.n_per_iter(40) == 800 and mal.n_per_iter(80) == 1600  # min(20 H, 3000)
    assert pal.n_per_iter(1000) == 1000 and mal.n_per_iter(1000) == 3000  # the caps
    assert (pal.n_init, pal.buffer_size, pal.npg_steps_conservative, pal.model_epochs_aggressive) == (2500, 2500, 4, 100)
    assert (mal.n_init, mal.buffer_size, mal.npg_steps_aggressive, mal.model_epochs_conservative) == (5000, 0, 25, 10)
    assert pal.synthetic_horizon(40) == 40 and pal.synthetic_horizon(1000) == 500


def test_per_task_values_and_overrides() -> None:
    assert load_config("pal", "dclaw-turn-random").samples == 60000  # per-task section of pal.yaml
    tuned = load_config("pal", "dclaw-turn-fixed")
    assert (tuned.npg_step_size, tuned.npg_steps_conservative, tuned.model_max_steps, tuned.n_init) == (0.1, 6, 100, 1000)
    mal = load_config("mal", "dclaw-turn-fixed")  # MAL plays turn fixed with PAL's task settings and N_init
    assert mal.start_state_mix == tuned.start_state_mix == 0.5  # the same mix
    task_keys = ("n_init", "model_hidden", "explore_noise_color", "explore_min_std", "policy_symmetry",
                 "explore_mean_fraction", "model_goal_share")
    assert [getattr(mal, k) for k in task_keys] == [getattr(tuned, k) for k in task_keys]
    assert (mal.model_max_steps, mal.npg_steps_aggressive, mal.buffer_size) == (500, 25, 0)  # the game stays MAL's
    assert mal.n_per_iter(40) == tuned.n_per_iter(40) == 200  # turn fixed: PAL's round size (paper: MAL 20 H)
    pal_r, mal_r = load_config("pal", "dclaw-turn-random"), load_config("mal", "dclaw-turn-random")
    random_keys = (*task_keys, "start_state_mix", "policy_mirror", "policy_max_log_std")  # turn random: the same
    assert [getattr(mal_r, k) for k in random_keys] == [getattr(pal_r, k) for k in random_keys]
    assert (mal_r.samples, mal_r.buffer_size, mal_r.npg_steps_aggressive) == (100000, 0, 25)
    assert mal_r.n_per_iter(40) == 800  # turn random keeps the paper's 20 H
    assert load_config("pal", "dclaw-turn-fixed", ["npg_step_size=0.05"]).npg_step_size == 0.05  # --set wins
    cfg = load_config("pal", "dclaw-turn-fixed", ["samples_per_iter=400", "model_hidden=[64, 64]", "alpha=0.5"])
    assert cfg.n_per_iter(40) == 400 and cfg.model_hidden == [64, 64] and cfg.alpha == 0.5
    cfg = load_config("mal", "dclaw-turn-fixed", {"learned_reward": True, "seed": 3})
    assert cfg.learned_reward is True and cfg.seed == 3
    assert GameConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("fix, own", [("mal-noise", {"alpha": 0.75, "noise_policy": "mlp"}),
                                       ("mal-agent-reward", {"alpha": 0.75, "agent_reward_scale": "fitted"})])
@pytest.mark.parametrize("task", ["dclaw-turn-fixed", "dclaw-turn-random", "dkitty-orient-random"])
def test_mal_fixes_are_mal_plus_their_own_keys(fix: str, own: dict, task: str) -> None:
    """The poster's fixes extend config/mal.yaml: every other key, per task included, is MAL's."""
    mal, fixed = load_config("mal", task).to_dict(), load_config(fix, task).to_dict()
    differ = {k for k in mal if mal[k] != fixed[k]} - {"algo"}
    assert differ <= set(own) and all(fixed[k] == v for k, v in own.items())


def _write(directory, name: str, text: str) -> None:
    (directory / f"{name}.yaml").write_text(text)


def test_extends_merges_top_level_and_per_task_keys(tmp_path) -> None:
    _write(tmp_path, "pal", "samples: 111\nn_init: 222\ntasks:\n  dclaw-turn-fixed: {samples: 333, n_init: 444}\n")
    _write(tmp_path, "mal", "extends: pal\nn_init: 555\ntasks:\n  dclaw-turn-fixed: {samples: 666}\n")
    fixed = load_config("mal", "dclaw-turn-fixed", directory=tmp_path)
    assert (fixed.samples, fixed.n_init) == (666, 444)  # the task's key overrides the base's task key only
    other = load_config("mal", "dkitty-orient-random", directory=tmp_path)
    assert (other.samples, other.n_init) == (111, 555)


@pytest.mark.parametrize(
    "mal_text, message",
    [
        ("extends: mal\n", "cycle: mal -> mal"),
        ("extends: br\n", "no config file for algorithm 'br'"),
        ("extends: [pal]\n", "'extends' must name"),
        ("extends: pal\ntasks: [1]\n", "'tasks' must map"),
    ],
)
def test_bad_extends_is_a_clear_error(tmp_path, mal_text: str, message: str) -> None:
    _write(tmp_path, "pal", "samples: 111\n")
    _write(tmp_path, "mal", mal_text)
    with pytest.raises(ValueError, match=message):
        load_config("mal", "dclaw-turn-fixed", directory=tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["samples=-5"], "samples must be > 0"),
        (["no_such_key=1"], "unknown config key 'no_such_key'"),
        (["gamma=1.5"], r"gamma must be in \[0, 1\]"),
        (["ensemble_size=two"], "ensemble_size: expected int"),
        (["model_hidden=[64, -1]"], "model_hidden"),
        (["samples"], "key=value"),
        (["device=tpu"], "device"),
        (["algo=mal"], "--algo"),
        (["agent_reward_follower=greedy"], "agent_reward_follower must be one of policy, soft"),
        (["agent_reward_intents=0"], r"agent_reward_intents must be in \[1, 64\]"),
        (["agent_reward_temperature=0"], "agent_reward_temperature must be > 0"),
        (["agent_reward_gate=uncertain"], "agent_reward_gate must be one of none, disagreement"),
        (["model_recent_share=1.5"], r"model_recent_share must be in \[0, 1\]"),
        (["model_recent_share=-0.1"], r"model_recent_share must be in \[0, 1\]"),
        (["model_recent_window=0"], "model_recent_window must be > 0"),
    ],
)
def test_bad_values_are_clear_errors(overrides, message) -> None:
    with pytest.raises(ValueError, match=message):
        load_config("pal", "dclaw-turn-fixed", overrides)


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="unknown algorithm 'ppo'"):
        load_config("ppo", "dclaw-turn-fixed")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algo", "ppo", "--task", "pointmass"], "unknown algorithm 'ppo'"),
        (["--task", "pointmass", "--samples", "-3"], "--samples must be a positive"),
        (["--task", "no-such-task"], "unknown task 'no-such-task'"),
        (["--task", "pointmass", "--set", "bogus=1"], "unknown config key 'bogus'"),
    ],
)
def test_train_command_rejects_bad_input(tmp_path, capsys, argv, message) -> None:
    rc = main(["train", *argv, "--out", str(tmp_path / "run"), "--no-progress", "--threads", "1"])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_gym_ids_are_accepted_and_unknown_tasks_refused() -> None:
    assert load_config("pal", "mbrl_ros/DClawTurnRandom-v0").task_id == "dclaw-turn-random"
    with pytest.raises(ValueError, match="unknown task 'dclaw-spin'"):
        load_config("pal", "dclaw-spin")
