"""What a finished (or running) game reports: the protocol's milestones and the learning curve.

Both ``mbrl-ros train`` and the ROS coordinator write their summaries and plots with these, from
the rows of ``metrics.jsonl`` (:class:`mbrl_ros.core.rules.IterationMetrics`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

SUCCESS_THRESHOLD = 0.9  # "samples to 90% success"
HELD_EVALUATIONS = 3  # "held": this many consecutive evaluations at or above the threshold


def evaluated(history: list[dict]) -> list[dict]:
    """The iterations that ended with an evaluation (``eval_every`` may skip some)."""
    return [m for m in history if m.get("eval_success") is not None]


def success_milestones(
    history: list[dict], threshold: float = SUCCESS_THRESHOLD, held: int = HELD_EVALUATIONS
) -> dict[str, Optional[int]]:
    """The protocol's figures of one run (evaluation episodes are not counted as samples).

    ``held``: real samples at the first of ``held`` consecutive evaluations with success >=
    threshold (None if never); ``first_touch``: samples at the first such evaluation;
    ``relapses``: evaluations below the threshold after the first touch.
    """
    rows = evaluated(history)
    ok = [m["eval_success"] >= threshold for m in rows]
    first = next((i for i, x in enumerate(ok) if x), None)
    held_at = next((i for i in range(len(ok) - held + 1) if all(ok[i : i + held])), None)
    return {
        "held": int(rows[held_at]["samples"]) if held_at is not None else None,
        "first_touch": int(rows[first]["samples"]) if first is not None else None,
        "relapses": sum(1 for x in ok[first:] if not x) if first is not None else 0,
    }


def samples_to_threshold(history: list[dict], threshold: float = SUCCESS_THRESHOLD) -> Optional[int]:
    """Real samples at the first evaluation with success >= threshold (None if never)."""
    return success_milestones(history, threshold)["first_touch"]


def plot_curve(history: list[dict], path: Union[str, Path], title: str) -> None:
    """Learning curve: success and return vs real samples, and the leader's objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        return
    x = [m["samples"] for m in history]
    ev = evaluated(history)
    xe = [m["samples"] for m in ev]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(xe, [m["eval_success"] for m in ev], marker=".")
    axes[0].set(xlabel="real samples", ylabel="success (final step)", ylim=(-0.05, 1.05))
    axes[0].axhline(SUCCESS_THRESHOLD, color="grey", lw=0.8, ls="--")
    axes[1].plot(xe, [m["eval_return"] for m in ev], marker=".", label="world")
    jm = [(s, m["J_model"]) for s, m in zip(x, history) if m.get("J_model") is not None]
    if jm:
        axes[1].plot(*zip(*jm), marker=".", alpha=0.7, label="J(pi, M)")
    axes[1].set(xlabel="real samples", ylabel="return")
    axes[1].legend()
    ml = [(s, m["model_loss"]) for s, m in zip(x, history) if m.get("model_loss") is not None]
    if ml:
        axes[2].semilogy(*zip(*ml), marker=".")
    axes[2].set(xlabel="real samples", ylabel="model loss l(M, D)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)
