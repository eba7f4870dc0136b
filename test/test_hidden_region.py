"""hidden-region (issue 17): the region is reachable, a model can hide it, the task keeps the task
contract, its budgets are valid, and the two MAL fixes behave as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mbrl_ros.core.config import load_config
from mbrl_ros.core.schedule import GAMES
from mbrl_ros.tasks import GYM_IDS, HORIZONS, TASK_IDS, TASKS_BY_ROBOT, get_task, make_env
from mbrl_ros.tasks import hidden_region as hr

torch.set_num_threads(1)
TASK = "hidden-region"
ROOT = Path(__file__).resolve().parent.parent  # (experiments/ is a package: pytest has pythonpath = .)


def _episode(env, act, seed):
    obs, _ = env.reset(seed=seed)
    ret, info, path = 0.0, {}, [obs]
    for _ in range(env.task.info.horizon):
        obs, r, term, trunc, info = env.step(act(obs))
        ret += r
        path.append(obs)
        if term or trunc:
            break
    return ret, bool(info["success"]), np.array(path)


def _hold_at(point):
    return lambda o: np.clip(4.0 * (np.asarray(point) - o[..., :2]) - 1.5 * o[..., 2:], -1, 1)


# -- the world --------------------------------------------------------------------------------
def test_scripted_route_reaches_the_region_and_beats_the_decoy():
    env = make_env(TASK)
    route = [_episode(env, hr.scripted_action, s) for s in range(5)]
    decoy = [_episode(env, lambda o: hr.scripted_action(o, through_entrance=False), s) for s in range(5)]
    at_entrance = [_episode(env, _hold_at((-0.01, hr.ENTRANCE[1])), s) for s in range(5)]
    straight = [_episode(env, lambda o: np.array([1.0, 0.0]), s) for s in range(5)]
    assert all(s for _, s, _ in route) and not any(s for _, s, _ in decoy + at_entrance + straight)
    r = lambda eps: np.mean([x for x, _, _ in eps])
    # the order that lets a model hide the region: route >> decoy >> waiting at a closed entrance
    assert r(route) > 1.3 * r(decoy) and r(decoy) > 1.5 * r(at_entrance) and r(at_entrance) > r(straight)
    # the straight push is stopped by the wall on its own side; the route crossed above GAP_LOW
    assert all(p[:, 0].max() < 0 for _, _, p in straight)
    crossing = [p[np.flatnonzero((p[:-1, 0] < 0) & (p[1:, 0] >= 0))[0] + 1] for _, _, p in route]
    assert all(c[1] >= hr.GAP_LOW for c in crossing)


def test_wall_blocks_below_the_entrance_only():
    pos = np.array([[-0.05, 0.0], [-0.05, 0.6], [0.05, -0.5]])
    vel = np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]])
    p, v = hr.HiddenRegionTask.step_state(pos, vel, np.array([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]]))
    assert p[0, 0] < 0 and v[0, 0] == 0.0  # blocked below the entrance
    assert p[1, 0] > 0 and v[1, 0] > 0  # through the entrance
    assert p[2, 0] > 0 and v[2, 0] == 0.0  # blocked from the right too


class _Model(torch.nn.Module):
    """A hand-written 'ensemble': the true dynamics, optionally with the entrance predicted as wall."""

    ensemble_size = 2

    def __init__(self, entrance_is_wall: bool) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.wall = entrance_is_wall

    def predict(self, z, a):
        p, v = hr.HiddenRegionTask.step_state(z[..., :2].numpy(), z[..., 2:].numpy(), a.numpy())
        if self.wall:  # the model's mistake: the wall runs the whole height
            x0 = z[..., 0].numpy()
            crosses = (x0 < 0) != (p[..., 0] < 0)
            p[..., 0] = np.where(crosses, np.where(x0 < 0, -hr.WALL_EPS, hr.WALL_EPS), p[..., 0])
            v[..., 0] = np.where(crosses, 0.0, v[..., 0])
        return torch.as_tensor(np.concatenate([p, v], -1), dtype=z.dtype), None


def _model_return(model, act, starts):
    from mbrl_ros.core.model_rollout import model_step

    task = get_task(TASK)
    obs = torch.as_tensor(starts, dtype=torch.float32).unsqueeze(0).expand(model.ensemble_size, -1, -1)
    total = torch.zeros(obs.shape[:2])
    for _ in range(task.info.horizon):
        a = torch.as_tensor(act(obs.numpy().astype(np.float64)), dtype=torch.float32)
        obs, _, r = model_step(model, task, obs, a)
        total += r
    return float(total.mean())


def test_a_model_that_predicts_the_entrance_as_wall_hides_the_region():
    """Best response among the candidates: in the hiding model the decoy, in the true one the region."""
    import experiments.hidden_region as exp

    env = make_env(TASK)
    starts = np.array([env.reset(seed=s)[0] for s in range(6)])
    candidates = {"route": hr.scripted_action, "decoy": lambda o: hr.scripted_action(o, through_entrance=False),
                  "entrance": _hold_at((-0.01, hr.ENTRANCE[1]))}
    best = {}
    for name, model in (("hiding", _Model(True)), ("true", _Model(False))):
        returns = {k: _model_return(model, act, starts) for k, act in candidates.items()}
        best[name] = max(returns, key=returns.get)
    assert best == {"hiding": "decoy", "true": "route"}
    # the experiment's belief probes read the two models correctly
    task = get_task(TASK)
    assert exp.model_beliefs(_Model(True), task) == {"belief_route": 0.0, "belief_entrance": 0.0}
    assert exp.model_beliefs(_Model(False), task) == {"belief_route": 1.0, "belief_entrance": 1.0}


# -- the task contract (the generic checks of test_tasks_*.py, on this task) ------------------
def test_registered_from_its_task_info():
    info = get_task(TASK).info
    assert TASK in TASK_IDS and GYM_IDS[TASK] == "mbrl_ros/HiddenRegion-v0" == info.gym_id
    assert HORIZONS[TASK] == info.horizon == 40 and TASKS_BY_ROBOT["pointmass"] == (TASK,)
    assert get_task("mbrl_ros/HiddenRegion-v0").info.task_id == TASK == get_task("HiddenRegion-v0").info.task_id
    with pytest.raises(ValueError, match="D'Claw option"):
        get_task(TASK, success_threshold=0.1)


def test_gym_make_and_env_checker():
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make("mbrl_ros/HiddenRegion-v0")
    assert env.spec.max_episode_steps == 40 and env.unwrapped.task.info.task_id == TASK
    check_env(env.unwrapped, skip_render_check=True)
    with pytest.raises(ValueError, match="2 finite values"):
        make_env(TASK).step(np.array([np.nan, 0.0]))


def test_batched_reward_done_success_match_the_env_numpy_and_torch():
    env = make_env(TASK)
    task = get_task(TASK)
    rng = np.random.default_rng(0)
    o_l, a_l, n_l, r_l, s_l = [], [], [], [], []
    for ep in range(4):
        obs, _ = env.reset(seed=ep)
        for t in range(40):  # half random, half the route: both halves of the world are covered
            a = rng.uniform(-1.2, 1.2, 2) if ep % 2 else hr.scripted_action(obs)
            nxt, r, term, trunc, info = env.step(a)
            assert r == pytest.approx(sum(info["reward_terms"].values()), abs=1e-9)
            o_l.append(obs), a_l.append(a), n_l.append(nxt), r_l.append(r), s_l.append(info["success"])
            obs = nxt
        assert trunc and not term
    o, a, n = np.array(o_l), np.array(a_l), np.array(n_l)
    np.testing.assert_allclose(task.reward(o, np.clip(a, -1, 1), n), r_l, atol=1e-9)
    np.testing.assert_array_equal(task.success(n), s_l)
    assert np.any(s_l) and not task.done(n).any()
    to = [torch.as_tensor(x) for x in (o, a, n)]
    np.testing.assert_allclose(task.reward(*to).numpy(), task.reward(o, a, n), atol=1e-9)
    np.testing.assert_array_equal(task.success(to[2]).numpy(), task.success(n))
    assert task.reward(*(x.float() for x in to)).dtype == torch.float32
    assert task.reward(o.astype(np.float32), a.astype(np.float32), n.astype(np.float32)).dtype == np.float32
    r3 = task.reward(o[:80].reshape(2, 40, 4), a[:80].reshape(2, 40, 2), n[:80].reshape(2, 40, 4))
    np.testing.assert_allclose(r3.reshape(-1), task.reward(o[:80], a[:80], n[:80]), atol=1e-12)
    np.testing.assert_array_equal(task.from_model(task.to_model(n)), n)


# -- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", sorted(GAMES))
def test_budgets_are_valid_and_small(algo):
    cfg = load_config(algo, TASK)  # validates
    n = cfg.n_per_iter(40)
    iterations = (cfg.samples - cfg.n_init) // n
    assert cfg.model_hidden == [64, 64] and cfg.policy_hidden == [32, 32]
    assert 0 < cfg.n_init < cfg.samples <= 10000 and iterations >= 5
    assert load_config(algo, TASK, ["samples=1234"]).samples == 1234  # --set still wins
    assert load_config(algo, "dclaw-turn-fixed").model_hidden != [64, 64]  # the task file stays its own


# -- the fixes ----------------------------------------------------------------------------------
def test_random_policies_reach_the_region_where_uniform_actions_do_not():
    from mbrl_ros.core.exploration import collect_random_episodes, new_random_policy

    env = make_env(TASK)
    right = {}
    for kind in ("mlp", "ou", "uniform"):
        eps = collect_random_episodes(env, kind, 40 * 60, np.random.default_rng(0), kind)
        assert len(eps) == 60 and all(e.policy_version == -1 for e in eps)
        assert len({e.episode_id for e in eps}) == 60
        right[kind] = np.mean([e.obs[:, 0].max() > 0 for e in eps])  # went through the entrance
    assert right["uniform"] == 0.0 and right["mlp"] >= 0.05 and right["ou"] >= 0.05
    with pytest.raises(ValueError, match="noise_policy"):
        new_random_policy("gaussian", 4, 2, np.random.default_rng(0))
    with pytest.raises(ValueError, match="noise_policy"):
        load_config("mal-noise", TASK, ["noise_policy=gaussian"])


def test_agent_reward_term_is_scaled_by_the_per_dimension_loss():
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.exploration import collect_random_episodes
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.core.policy_player import PolicyPlayer

    env = make_env(TASK)
    cfg = load_config("mal-agent-reward", TASK, ["device=cpu", "ensemble_size=2", "agent_reward_batch=16",
                                                  "model_min_steps=5", "model_max_steps=10"])
    buf = EpisodeBuffer("aggregate", None)
    for e in collect_random_episodes(env, "ou", 400, np.random.default_rng(1), "d"):
        buf.add_episode(e)
    mp, pp = ModelPlayer(env.task, cfg, "cpu"), PolicyPlayer(env.task, cfg, "cpu")
    torch.manual_seed(0)  # the same start states and noise for both scales
    with torch.no_grad():
        unit = float(mp._agent_reward_term(buf, pp.policy, 1.0)())
        torch.manual_seed(0)
        scaled = float(mp._agent_reward_term(buf, pp.policy, 0.03)())
    assert scaled == pytest.approx(0.03 * unit, rel=1e-4)
    r = mp.fit(buf, aggressive=False, policy=pp.policy)
    # reported: the objective the model player minimised, alpha l - (1 - alpha) l_ref J/R
    assert r["objective"] == pytest.approx(cfg.alpha * r["loss"] + (1 - cfg.alpha) * r["return_term"])
    assert np.isfinite(r["return_term"]) and r["return_term"] != 0.0


def test_agent_reward_first_fit_keeps_the_loss_a_plain_fit_reaches():
    """agent_reward_scale fitted: l_ref is the loss after a plain half of the fit, so a fresh
    model's first fit (the initial policy's data, as in a game) stays near plain MAL's loss; read
    before the fit (``loss``: a fresh model's error, about 1.5 here) the return term outweighed
    the data and the first model was mostly optimism."""
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.core.policy_player import PolicyPlayer
    from mbrl_ros.core.world import collect_episodes

    env = make_env(TASK)
    common = ["device=cpu", "ensemble_size=2", "agent_reward_batch=16", "model_min_steps=200", "model_max_steps=200"]
    torch.manual_seed(0)
    initial = PolicyPlayer(env.task, load_config("mal", TASK, common), "cpu").policy
    buf = EpisodeBuffer("aggregate", None)
    for e in collect_episodes(env, lambda o: initial.act(o, False), 400, np.random.default_rng(0), 0, "t"):
        buf.add_episode(e)
    results = {}
    for algo, scale in (("mal", "fitted"), ("mal-agent-reward", "fitted"), ("mal-agent-reward", "loss")):
        cfg = load_config(algo, TASK, common + [f"agent_reward_scale={scale}"])
        torch.manual_seed(0)
        mp, pp = ModelPlayer(env.task, cfg, "cpu"), PolicyPlayer(env.task, cfg, "cpu")
        results[scale if algo != "mal" else "plain"] = r = mp.fit(buf, aggressive=False, policy=pp.policy)
        assert r["steps"] == 200, r
    fitted, before, plain = results["fitted"], results["loss"], results["plain"]
    assert fitted["l_ref"] < 0.1 * before["l_ref"]  # read after the plain half, not on a fresh model
    assert fitted["loss"] < 1.5 * plain["loss"], results
    assert before["loss"] > 5.0 * fitted["loss"], results


def test_agent_reward_soft_follower_pays_for_returns_the_present_policy_never_earns():
    """agent_reward_follower soft: the model is paid for a soft best response over intent-shifted
    copies of the policy from the episodes' starts. A policy that stands still earns nothing in
    the model; copies that move up the potential do, so with 8 copies the term pays (is more
    negative) than with copy 0 alone, and the per-rollout returns average to the scalar one.
    (Bad values of the three keys: test_core_config.py::test_bad_values_are_clear_errors.)"""
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.exploration import collect_random_episodes
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.core.model_rollout import differentiable_return
    from mbrl_ros.core.policy_player import PolicyPlayer

    env = make_env(TASK)
    common = ["device=cpu", "ensemble_size=2", "agent_reward_batch=64", "model_min_steps=300",
              "model_max_steps=300", "agent_reward_follower=soft", "agent_reward_horizon=40"]
    buf = EpisodeBuffer("aggregate", None)
    for e in collect_random_episodes(env, "ou", 1200, np.random.default_rng(2), "d"):
        buf.add_episode(e)
    torch.manual_seed(0)
    cfg = load_config("mal", TASK, common)
    mp, pp = ModelPlayer(env.task, cfg, "cpu"), PolicyPlayer(env.task, cfg, "cpu")
    mp.fit(buf, aggressive=True)  # a plain model of the random data
    with torch.no_grad():  # the present policy: stand still (mean 0, a tiny std)
        pp.policy.set_intent(torch.zeros(2))
        for layer in pp.policy.mean_net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_()
        pp.policy.log_std.fill_(-5.0)
    terms = {}
    for k in (1, 8):
        mp.cfg = load_config("mal-agent-reward", TASK, common + [f"agent_reward_intents={k}"])
        torch.manual_seed(1)
        with torch.no_grad():
            terms[k] = float(np.mean([float(mp._agent_reward_term(buf, pp.policy, 1.0)()) for _ in range(4)]))
    assert terms[8] < terms[1] - 0.05, terms
    starts = torch.as_tensor(buf.initial_states()[0][:16], dtype=torch.float32)
    offsets = torch.rand(16, 2) * 2 - 1
    with torch.no_grad():
        torch.manual_seed(3)
        per = differentiable_return(mp.ensemble, env.task, pp.policy, starts, 10, 0.99, action_offset=offsets, reduce=False)
        torch.manual_seed(3)
        scalar = differentiable_return(mp.ensemble, env.task, pp.policy, starts, 10, 0.99, action_offset=offsets)
    assert per.shape == (2, 16) and float(per.mean()) == pytest.approx(float(scalar), rel=1e-5)


def test_agent_reward_gate_pays_only_where_the_members_disagree_more_than_on_the_data():
    """agent_reward_gate disagreement: each predicted change passes the return term's gradient in
    proportion clamp(d / d_data - 1, 0, 1) of the members' disagreement d there. A reference far
    above every disagreement closes the gate (no gradient reaches the model); one far below
    opens it fully (the ungated gradient); the term's value never changes. The disagreement is
    the members' std at the same inputs, and on the model's own data it is its reference."""
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.exploration import collect_random_episodes
    from mbrl_ros.core.model_player import ModelPlayer
    from mbrl_ros.core.model_rollout import differentiable_return
    from mbrl_ros.core.policy_player import PolicyPlayer

    env = make_env(TASK)
    common = ["device=cpu", "ensemble_size=3", "model_min_steps=100", "model_max_steps=100"]
    buf = EpisodeBuffer("aggregate", None)
    for e in collect_random_episodes(env, "ou", 800, np.random.default_rng(2), "d"):
        buf.add_episode(e)
    torch.manual_seed(0)
    cfg = load_config("mal-agent-reward", TASK, [*common, "agent_reward_gate=disagreement"])
    mp, pp = ModelPlayer(env.task, cfg, "cpu"), PolicyPlayer(env.task, cfg, "cpu")
    mp.fit(buf, aggressive=True)
    for p in pp.policy.parameters():
        p.requires_grad_(False)
    d = buf.arrays()
    ref = mp._data_disagreement(d)
    z = torch.as_tensor(env.task.to_model(d["obs"][:5], None), dtype=torch.float32)
    a = torch.as_tensor(np.clip(d["actions"][:5], -1, 1), dtype=torch.float32)
    with torch.no_grad():
        each = mp.ensemble.forward_normalized(torch.cat([z, a], -1).expand(3, -1, -1))
    manual = (each[..., : mp.ensemble.state_dim] * mp.ensemble.out_mask[: mp.ensemble.state_dim]).std(dim=0)
    assert torch.allclose(mp.ensemble.disagreement(z, a), manual, atol=1e-6)
    assert ref.shape == (mp.ensemble.state_dim,) and bool((ref > 0).all())
    starts = torch.as_tensor(d["obs"][:32], dtype=torch.float32)

    def grads(gate_ref):
        mp.ensemble.zero_grad()
        torch.manual_seed(5)
        j = differentiable_return(mp.ensemble, env.task, pp.policy, starts, 8, 0.99, gate_ref=gate_ref)
        j.backward()
        return float(j.detach()), torch.cat([p.grad.flatten() for p in mp.ensemble.parameters() if p.grad is not None])

    j_open, g_open = grads(None)
    j_shut, g_shut = grads(torch.full_like(ref, 1e6))
    j_wide, g_wide = grads(torch.full_like(ref, 1e-9))
    j_data, g_data = grads(ref)
    assert j_shut == pytest.approx(j_open) and j_wide == pytest.approx(j_open) and j_data == pytest.approx(j_open)
    assert float(g_open.abs().sum()) > 0 and float(g_shut.abs().sum()) == 0.0
    assert torch.allclose(g_wide, g_open, rtol=1e-4, atol=1e-7)
    # with the data's own reference the gate is partly open: less gradient than ungated
    assert 0.0 < float(g_data.norm()) < float(g_open.norm())
    mp.cfg = cfg  # the term built by the player uses the gate: its value is the ungated term's
    torch.manual_seed(7)
    with torch.no_grad():
        gated = float(mp._agent_reward_term(buf, pp.policy, 1.0)())
    mp.cfg = load_config("mal-agent-reward", TASK, common)
    torch.manual_seed(7)
    with torch.no_grad():
        plain = float(mp._agent_reward_term(buf, pp.policy, 1.0)())
    assert gated == pytest.approx(plain, rel=1e-5)


# -- the probe of a finished run (experiments/hidden_region_probe.py) --------------------------
def test_probe_values_the_scripted_policies_in_the_world_and_in_the_runs_model(tmp_path):
    from experiments import hidden_region_probe as probe
    from mbrl_ros.core.train import train

    cfg = load_config("mal", TASK, ["samples=1200", "n_init=400", "samples_per_iter=400", "model_min_steps=5",
                                    "model_max_steps=10", "npg_steps_aggressive=2", "npg_trajectories=8",
                                    "eval_episodes=2", "device=cpu"])
    train(cfg, tmp_path / "run", progress=False)
    r = probe.probe(tmp_path / "run", steps=1, restarts=1)
    assert r["algo"] == "mal" and r["samples"] == 1200
    # the world's values are the task's facts: the route ends in the region, the decoy never does
    route_ret, route_succ = r["route"]["world"]
    decoy_ret, decoy_succ = r["decoy"]["world"]
    assert route_succ == 1.0 and decoy_succ == 0.0 and route_ret > decoy_ret
    for key in ("route", "decoy", "deployed"):
        ret, frac = r[key]["model"]
        assert np.isfinite(ret) and 0.0 <= frac <= 1.0
    assert len(r["fresh"]) == len(r["fresh_broad"]) == 1 and np.isfinite(r["fresh"][0]["J_model"])
    assert "| MAL | 1200 |" in probe.report([r], 1)
    with pytest.raises(ValueError, match="not a finished run"):
        probe.probe(tmp_path, steps=1, restarts=1)


def test_a_mal_game_with_follower_restarts_reports_the_kept_candidate(tmp_path):
    """follower_restarts reaches the game: every MAL policy move records which candidate it kept."""
    import json

    from mbrl_ros.core.train import train

    cfg = load_config("mal", TASK, ["samples=1200", "n_init=400", "samples_per_iter=400", "model_min_steps=5",
                                    "model_max_steps=10", "npg_steps_aggressive=2", "npg_trajectories=8",
                                    "eval_episodes=2", "device=cpu", "follower_restarts=2"])
    train(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    kept = [r["follower_restart"] for r in rows if r["iteration"] > 0]
    assert kept and all(k in (-1, 0, 1) for k in kept)


def test_the_experiment_names_a_changed_configuration():
    """--set changes every game: without --variant it would overwrite the default's BENCHMARKS section."""
    from experiments import hidden_region as exp

    with pytest.raises(SystemExit):
        exp.main(["--set", "follower_restarts=2", "--report-only", "--out", "runs/none"])
    with pytest.raises(SystemExit):
        exp.main(["--set", "follower_restarts=2", "--variant", "Bad-Name", "--report-only", "--out", "runs/none"])


def test_the_report_shows_each_seeds_first_touch_and_relapses():
    """A run that touches 0.9 and falls back ends at 0 like one that never moved: the table tells them apart."""
    from experiments import common
    from experiments import hidden_region as exp

    def run(seed, final, touch, relapses):
        hist = [{"samples": 800 * (k + 1), "eval_success": v, "belief_route": 1.0, "belief_entrance": 1.0}
                for k, v in enumerate([0.0, 1.0, final])]
        return {"history": hist, "summary": {"seed": seed, "final_success": final, "final_return": 1.0,
                                             "samples": 2400, "wall_s": 1.0, "first_touch_90": touch,
                                             "relapses": relapses}}

    jobs = [common.Job(f"mal-noise-s{s}", "game", {"algo": "mal-noise", "seed": s}, total=2400) for s in (0, 1)]
    results = {"mal-noise-s0": run(0, 0.0, 1600, 1), "mal-noise-s1": run(1, 0.0, None, 0)}
    summary = exp.summarize(jobs, results)
    assert summary["mal-noise"]["first_touch_90"] == [1600, None]
    row = next(line for line in exp.report(summary, "test", "fig.png").splitlines() if line.startswith("| MAL + noise"))
    assert "| 1600 (1), - |" in row
