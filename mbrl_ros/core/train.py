"""In-process training runner: one game, its files and its progress bar (no ROS).

Writes to the output directory: ``config.json`` (the resolved hyper-parameters),
``metrics.jsonl`` (one JSON line per iteration), ``policy.onnx`` (the deployed policy, with its
contract), ``checkpoint/`` (resume point), ``curve.png`` (learning curve) and
``summary.json`` (the last line printed by ``mbrl-ros train``).

SIGINT (Ctrl-C) or SIGTERM during a run ends it after the current iteration, with every file
written as for a finished run (``"stopped_by"`` in the summary; ``--resume`` continues it); a
second signal aborts at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from mbrl_ros.core.config import GameConfig, apply_overrides
from mbrl_ros.core.report import (  # noqa: F401 - re-exported: the benches read them from here
    HELD_EVALUATIONS,
    SUCCESS_THRESHOLD,
    evaluated,
    plot_curve,
    samples_to_threshold,
    success_milestones,
)
from mbrl_ros.core.stackelberg import StackelbergGame

POINTMASS_IDS = ("pointmass", "pointmass-fixed")


def make_world(task_id: str, randomize_dynamics: bool = False, dynamics: str = "") -> Any:
    """The simulated world of ``task_id`` (the ROBEL tasks, or the test-only point mass).

    ``randomize_dynamics``: ROBEL's RandomDynamics draw at every reset; ``dynamics``: fixed
    physics (:func:`mbrl_ros.tasks.sim.parse_dynamics`), applied after any draw."""
    if task_id in POINTMASS_IDS:
        if randomize_dynamics or dynamics:
            raise ValueError(f"{task_id} has no dynamics to randomise or perturb")
        from mbrl_ros.tasks.pointmass import PointMassEnv

        return PointMassEnv(fixed_goal=task_id == "pointmass-fixed")
    try:
        from mbrl_ros.tasks import make_env
    except ImportError as exc:  # the task layer is missing: a clear message
        raise ValueError(f"cannot load the task layer (mbrl_ros.tasks.make_env): {exc}") from None
    if not randomize_dynamics and not dynamics:
        return make_env(task_id)
    env = make_env(task_id, randomize_dynamics=bool(randomize_dynamics))
    if not hasattr(env, "set_physics"):
        raise ValueError(f"{task_id}: its world has no physics parameters to randomise or perturb")
    from mbrl_ros.tasks.sim import apply_dynamics

    apply_dynamics(env, dynamics)
    return env


INIT_PARTS = ("policy", "model", "buffer")


def parse_init_parts(text: Union[str, Sequence[str], None]) -> tuple[str, ...]:
    """``"policy,model"`` -> ``("policy", "model")``; the policy is always among them."""
    items = text.split(",") if isinstance(text, str) else list(text or ())
    parts = tuple(dict.fromkeys(p.strip() for p in items if p.strip())) or ("policy",)
    bad = [p for p in parts if p not in INIT_PARTS]
    if bad:
        raise ValueError(f"--init-from-parts: unknown part(s) {', '.join(bad)}; choose from {', '.join(INIT_PARTS)}")
    if "policy" not in parts:
        raise ValueError("--init-from-parts must include policy (a game starts from a policy)")
    return parts


def init_checkpoint_dir(run_dir: Union[str, Path]) -> Path:
    """The checkpoint of a finished run (``RUN_DIR`` or ``RUN_DIR/checkpoint``), checked."""
    d = Path(run_dir).expanduser()
    d = d / "checkpoint" if (d / "checkpoint").is_dir() else d
    if not (d / "state.json").is_file() or not (d / "weights.safetensors").is_file():
        raise ValueError(
            f"--init-from {run_dir}: no checkpoint there (expected {d / 'state.json'} and "
            "weights.safetensors, as mbrl-ros train writes)"
        )
    return d


def _load_into(run_dir: Union[str, Path], tensors: dict, modules: Sequence[tuple[str, Any]]) -> None:
    """Load the checkpoint's ``prefix.*`` tensors into each module; a shape mismatch is one clear line."""
    from mbrl_ros.core.checkpoint import load_module

    for prefix, module in modules:
        try:
            load_module(prefix, module, tensors)
        except RuntimeError as exc:  # shapes: another policy_hidden / model_hidden / ensemble_size
            first = str(exc).strip().splitlines()[-1].strip()
            raise ValueError(
                f"--init-from {run_dir}: its {prefix} network does not fit this game's "
                f"configuration ({first}); use the source run's widths"
            ) from None


def init_policy_player_from(player: Any, task_id: str, run_dir: Union[str, Path]) -> dict:
    """Load a finished run's policy and value into a policy player (the graph's policy_improver
    with ``init_from:=``); returns the source's state.json."""
    from mbrl_ros.core.checkpoint import read_checkpoint

    d = init_checkpoint_dir(run_dir)
    tensors, state = read_checkpoint(d)
    if state.get("config", {}).get("task_id") != task_id:
        raise ValueError(
            f"--init-from {run_dir}: the run learnt {state.get('config', {}).get('task_id')!r}, this "
            f"game plays {task_id!r}"
        )
    _load_into(run_dir, tensors, [("policy", player.policy), ("value", player.value)])
    return state


def init_game_from(game: StackelbergGame, run_dir: Union[str, Path], parts: Sequence[str] = ("policy",)) -> dict:
    """Start ``game`` from a finished run: its policy (and value), optionally its model and its
    buffer. The game's counters, random streams and sample count stay fresh: only what was
    learnt is carried over. Returns ``{source, parts, source_samples, source_final_success}``."""
    from mbrl_ros.core.buffers import EpisodeBuffer
    from mbrl_ros.core.checkpoint import read_checkpoint

    d = init_checkpoint_dir(run_dir)
    parts = parse_init_parts(list(parts))
    state = init_policy_player_from(game.policy_player, game.cfg.task_id, d)
    if "model" in parts:
        tensors, _ = read_checkpoint(d)
        _load_into(run_dir, tensors, [("ensemble", game.model_player.ensemble)])
        game.model_player.n_fits = int(state.get("model_fits", 0))  # warm start: a fitted model
    if "buffer" in parts:
        # the source's episodes in this game's kind of buffer (a MAL game aggregates a PAL run's FIFO)
        game.buffer = EpisodeBuffer.load_as(d, game.buffer.kind, game.buffer.capacity)
        # this game's episode ids must differ from the source's: the buffer ignores an id it holds
        taken = {e.episode_id for e in game.buffer.episodes}
        k = 1
        while any(i.startswith(f"ft{k}-") for i in taken):
            k += 1
        game.episode_prefix = f"ft{k}-"
    game.deployed = None  # the first collection exports the loaded policy and gates it, as always
    return init_source_record(d, parts)


def init_source_record(checkpoint_dir: Path, parts: Sequence[str]) -> dict:
    """What a game started from (``init_from.json`` and the summary's entry, in ``train`` and the
    graph): ``{source, parts, source_samples, source_final_success}``."""
    state = json.loads((checkpoint_dir / "state.json").read_text())
    summary_path = checkpoint_dir.parent / "summary.json"
    src_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return {
        "source": str(checkpoint_dir.parent),
        "parts": list(parts),
        "source_samples": int(state.get("samples", 0)),
        "source_final_success": src_summary.get("final_success"),
    }


def default_threads() -> int:
    """A sensible torch thread count for small machines: min(4, cpu count)."""
    return max(1, min(4, os.cpu_count() or 1))


class _StopAfterIteration:
    """The first SIGINT/SIGTERM asks the game to end after the current iteration (a model fit or
    NPG step cut in half would leave no consistent checkpoint); the second aborts at once."""

    def __init__(self) -> None:
        self.signal: Optional[str] = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal}: stopping after this iteration (again to abort now)", flush=True, file=sys.stderr)

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread may
            yield
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


def _read_metrics(path: Path, up_to_iteration: int) -> list[dict]:
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["iteration"] <= up_to_iteration]


def train(
    cfg: GameConfig,
    out_dir: Union[str, Path],
    resume: Optional[Union[str, Path]] = None,
    resume_overrides: Optional[dict] = None,
    progress: bool = True,
    device: Optional[str] = None,
    on_iteration: Optional[Callable[[dict], None]] = None,
    cores: Optional[Any] = None,
    init_from: Optional[Union[str, Path]] = None,
    init_parts: Sequence[str] = ("policy",),
) -> dict:
    """Play the game ``cfg`` in its simulated world; returns the summary dict.

    ``resume``: a run directory (or its ``checkpoint/``); the game continues from the last
    checkpoint with the checkpoint's configuration plus ``resume_overrides`` (e.g. a larger
    ``samples`` budget), and ``cfg`` is ignored except for those overrides. ``cores``: a
    :class:`~mbrl_ros.core.threads.CoreBudget` that re-chooses torch's threads before every
    phase (None: leave torch's setting alone). ``init_from``: a finished run whose policy
    (``init_parts``: and its model, buffer) the new game starts from (:func:`init_game_from`).
    """
    if resume is not None and init_from is not None:
        raise ValueError("--resume continues a run, --init-from starts a new one from it: give one of them")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    ckpt_dir: Optional[Path] = None
    state: Optional[dict] = None
    if resume is not None:
        ckpt_dir = Path(resume)
        if (ckpt_dir / "checkpoint").is_dir():
            ckpt_dir = ckpt_dir / "checkpoint"
        if not (ckpt_dir / "state.json").is_file():
            raise ValueError(f"--resume {resume}: no checkpoint found (expected {ckpt_dir / 'state.json'})")
        state = json.loads((ckpt_dir / "state.json").read_text())
        cfg = GameConfig.from_dict(state["config"])
        apply_overrides(cfg, resume_overrides or {})
        cfg.validate()
        history = _read_metrics(ckpt_dir.parent / "metrics.jsonl", state["completed_iteration"])
    # randomisation is for the training world only: evaluation measures the world itself
    world = make_world(cfg.task_id, cfg.randomize_dynamics, cfg.dynamics)
    eval_world = make_world(cfg.task_id, False, cfg.dynamics)
    game = StackelbergGame(cfg, world, eval_world, device)
    game.core_budget = cores
    init: Optional[dict] = None
    if ckpt_dir is not None:
        game.load(ckpt_dir)
    elif init_from is not None:
        init = init_game_from(game, init_from, init_parts)
        (out / "init_from.json").write_text(json.dumps(init, indent=1))
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("".join(json.dumps(m) + "\n" for m in history))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=cfg.samples,
            initial=min(game.samples, cfg.samples),
            unit="samples",
            desc=f"{cfg.algo} {cfg.task_id}",
            dynamic_ncols=True,
        )

    def record(m: dict) -> None:
        history.append(m)
        with metrics_path.open("a") as f:
            f.write(json.dumps(m) + "\n")
        (out / "policy.onnx").write_bytes(
            game.policy_player.to_onnx_bytes(m["iteration"], game.referee.deployed_policy_version)
        )
        if cfg.checkpoint_every and m["iteration"] % cfg.checkpoint_every == 0:
            game.save(out / "checkpoint")
        if bar is not None:
            bar.update(min(m["samples"], cfg.samples) - bar.n)
            if m.get("eval_success") is not None:
                bar.set_postfix(it=m["iteration"], success=f"{m['eval_success']:.2f}", ret=f"{m['eval_return']:.0f}")
        if on_iteration is not None:
            on_iteration(m)

    t0 = time.perf_counter()
    stop = _StopAfterIteration()
    try:
        with stop.on_signals():
            game.run(record, history=list(history), stop_requested=lambda: stop.signal is not None)
    finally:
        if bar is not None:
            bar.close()
    game.save(out / "checkpoint")
    plot_curve(history, out / "curve.png", f"{cfg.algo} on {cfg.task_id} (seed {cfg.seed})")
    last_it = history[-1] if history else {}
    ev = evaluated(history)
    last = ev[-1] if ev else {}
    milestones = success_milestones(history)
    summary = {
        "algo": cfg.algo,
        "task": cfg.task_id,
        "seed": cfg.seed,
        "iterations": last_it.get("iteration", 0),
        "samples": game.samples,
        "final_success": last.get("eval_success"),
        "final_return": last.get("eval_return"),
        "final_error": last.get("eval_final_error"),
        "best_success": max((m["eval_success"] for m in ev), default=None),
        "samples_to_90": milestones["held"],
        "first_touch_90": milestones["first_touch"],
        "relapses": milestones["relapses"],
        "wall_s": round(game.wall_s, 1),
        "session_wall_s": round(time.perf_counter() - t0, 1),
        "policy": str(out / "policy.onnx"),
        "out": str(out),
    }
    if init is not None:
        summary["init_from"] = init
    if stop.signal is not None:
        summary["stopped_by"] = stop.signal
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
