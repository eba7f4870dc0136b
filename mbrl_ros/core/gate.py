"""The policy gate: every check a candidate policy passes before it reaches a world.

The same gate runs in ``mbrl-ros train`` (on the exported ONNX candidate, as deployed) and in
the ROS coordinator. Checks, in order:

1. contract: the policy's observation and action sizes are the task's;
2. exploration noise: the log std is finite and at most ``gate_max_log_std``;
3. outputs: finite and inside [-1, 1] on a probe set of real observations (plus a noisy copy,
   for inputs just off the data);
4. model-predicted joint limits: rolled out ``gate_model_horizon`` steps in every member of
   the newest model from probe states, the fraction of predicted states with a joint beyond its
   limits (+ ``gate_joint_margin``) may exceed the deployed policy's fraction in the same model
   by at most ``gate_max_violation_fraction``. A predicted state counts only where the members
   agree: their mean joint position lies beyond the limit by more than ``gate_model_confidence``
   standard deviations of the members. Multi-step predictions near the limits are where the
   members disagree most (model error, not danger: with every member's state counted, a sim
   graph refused every new policy, candidates at 11-25% against 3-7% for the deployed one, and
   learning froze); a policy that drives the joints into their stops is predicted there by
   every member. The deployed policy has run in the world, so what the model predicts for it is
   model error too: a candidate is refused only when predicted markedly worse. Severity
   ``abort`` refuses, ``warn`` deploys and reports; ``auto`` is warn in simulation and abort on
   a robot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

ActFn = Callable[[np.ndarray], np.ndarray]
SEVERITIES = ("auto", "abort", "warn", "off")


@dataclass(frozen=True)
class GateResult:
    """``ok``: deploy; ``reason``: why not (or ``ok``); ``warning``: a failed check that only warns."""

    ok: bool
    reason: str = "ok"
    warning: Optional[str] = None
    predicted_violation: Optional[float] = None


@dataclass(frozen=True)
class GateSettings:
    probe_size: int = 256
    model_horizon: int = 10
    joint_margin: float = 0.1
    max_violation_fraction: float = 0.05
    max_log_std: float = 1.0
    model_severity: str = "auto"
    model_confidence: float = 1.0  # member standard deviations a predicted violation must clear

    @classmethod
    def from_config(cls, cfg: Any) -> "GateSettings":
        return cls(
            int(cfg.gate_probe_size),
            int(cfg.gate_model_horizon),
            float(cfg.gate_joint_margin),
            float(cfg.gate_max_violation_fraction),
            float(cfg.gate_max_log_std),
            str(cfg.gate_model_severity),
            float(cfg.gate_model_confidence),
        )

    def severity(self, on_robot: bool) -> str:
        """``model_severity`` with ``auto`` resolved."""
        if self.model_severity != "auto":
            return self.model_severity
        # In simulation a refused candidate only freezes learning: the model, fitted on the old
        # policy's data, keeps over-predicting for any new one (measured: PAL on D'Claw stalled
        # at v4 for 11,000 samples). On a robot the refusal is the safe side.
        return "abort" if on_robot else "warn"


def joint_slots(task: Any) -> Optional[list[int]]:
    """Observation slots of the actuated joint positions (names ``*_qpos[i]``), if the task names them."""
    names = task.info.obs_names or ()
    idx = [i for i, n in enumerate(names) if "_qpos[" in n]
    return idx if len(idx) == task.info.act_dim else None


def probe_rows(task: Any, observations: Optional[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """Probe rows: real observations (with the task's model-only measurements appended) and a
    noisy copy of them; standard-normal rows before any data exists."""
    width = task.info.obs_dim + task.aux_dim
    if observations is None or len(observations) == 0:
        return rng.standard_normal((size, width))
    real = observations[rng.integers(0, len(observations), size // 2)]
    noisy = real + 0.1 * (observations.std(0) + 1e-3) * rng.standard_normal(real.shape)
    return np.concatenate([real, noisy])


def predicted_violations(
    ensemble: Any, task: Any, act: ActFn, probes: np.ndarray, horizon: int, margin: float, confidence: float = 1.0
) -> float:
    """Fraction of (start, step) model-predicted states with a joint beyond its limits +
    ``margin`` on which the members agree, when ``act`` drives every member from the probe
    states for ``horizon`` steps: the members' mean is beyond by more than ``confidence`` times
    their standard deviation (``confidence`` 0: the mean alone decides)."""
    import torch

    from mbrl_ros.core.model_rollout import model_step

    idx = joint_slots(task)
    if idx is None or horizon <= 0:
        return 0.0
    lim = task.limits
    lo = torch.as_tensor(lim.qpos_low - margin, dtype=torch.float32)
    hi = torch.as_tensor(lim.qpos_high + margin, dtype=torch.float32)
    starts = torch.as_tensor(probes[: min(64, len(probes) // 2 or len(probes))], dtype=torch.float32)
    device = next(ensemble.parameters()).device
    E, od = ensemble.ensemble_size, task.info.obs_dim
    rows = starts.unsqueeze(0).expand(E, -1, -1).contiguous().to(device)
    obs, aux = rows[..., :od], (rows[..., od:] if task.aux_dim else None)
    bad = total = 0
    with torch.no_grad():
        for _ in range(int(horizon)):
            a = torch.as_tensor(act(obs.reshape(-1, od).cpu().numpy()), dtype=torch.float32, device=device)
            obs, aux, _r = model_step(ensemble, task, obs, a.reshape(E, -1, a.shape[-1]), aux)
            q = obs[..., idx].cpu()  # [E, n, joints]
            mean, spread = q.mean(0), confidence * q.std(0, unbiased=False)
            bad += int(((mean + spread < lo) | (mean - spread > hi)).any(-1).sum())
            total += q.shape[1]
    return bad / max(total, 1)


class PolicyGate:
    """The gate of one task and world kind (``on_robot`` resolves the ``auto`` severity)."""

    def __init__(self, task: Any, settings: GateSettings, on_robot: bool = False) -> None:
        if settings.model_severity not in SEVERITIES:
            raise ValueError(
                f"gate_model_severity must be one of {', '.join(SEVERITIES)}, got {settings.model_severity!r}"
            )
        self.task, self.settings, self.on_robot = task, settings, bool(on_robot)

    @property
    def severity(self) -> str:
        return self.settings.severity(self.on_robot)

    @property
    def checks_model(self) -> bool:
        return self.settings.model_horizon > 0 and self.severity != "off" and joint_slots(self.task) is not None

    def violations(self, ensemble: Any, act: ActFn, probes: np.ndarray) -> float:
        s = self.settings
        return predicted_violations(
            ensemble, self.task, act, probes, s.model_horizon, s.joint_margin, s.model_confidence
        )

    def check(
        self,
        act: ActFn,
        obs_dim: int,
        act_dim: int,
        log_std: Optional[Any],
        probes: np.ndarray,
        ensemble: Any = None,
        deployed_act: Optional[ActFn] = None,
        deployed_violation: Optional[float] = None,
    ) -> GateResult:
        """Run every check on a candidate (``act``: its deterministic action). ``ensemble``: the
        newest model (None skips the model check); ``deployed_act`` / ``deployed_violation``:
        the deployed policy, or its fraction already measured on the same probes and model."""
        info, s = self.task.info, self.settings
        if int(obs_dim) != info.obs_dim or int(act_dim) != info.act_dim:
            return GateResult(False, f"contract sizes {obs_dim}/{act_dim} do not match {info.obs_dim}/{info.act_dim}")
        if log_std is not None:
            ls = np.asarray(log_std, dtype=np.float64)
            if ls.shape != (info.act_dim,) or not np.all(np.isfinite(ls)) or np.any(ls > s.max_log_std):
                return GateResult(
                    False, f"exploration log std {np.round(ls, 3).tolist()} is not finite or above {s.max_log_std}"
                )
        actions = np.asarray(act(probes[:, : info.obs_dim]))
        if actions.shape != (len(probes), info.act_dim) or not np.all(np.isfinite(actions)):
            return GateResult(False, "non-finite actions on the probe set")
        if np.any(np.abs(actions) > 1.0 + 1e-6):
            return GateResult(False, f"actions outside [-1, 1] (max |a| = {np.abs(actions).max():.3g})")
        if ensemble is None or not self.checks_model:
            return GateResult(True)
        frac = self.violations(ensemble, act, probes)
        allowed = s.max_violation_fraction
        if frac > allowed and (deployed_violation is not None or deployed_act is not None):
            if deployed_violation is None:
                deployed_violation = self.violations(ensemble, deployed_act, probes)  # type: ignore[arg-type]
            allowed += deployed_violation
        if frac <= allowed:
            return GateResult(True, predicted_violation=frac)
        why = (
            f"the model predicts {100 * frac:.1f}% of states beyond the joint limits (+{s.joint_margin} rad; "
            f"allowed {100 * allowed:.1f}%: {100 * s.max_violation_fraction:.1f}% more than the deployed policy)"
        )
        if self.severity == "abort":
            return GateResult(False, why, predicted_violation=frac)
        return GateResult(True, warning=why, predicted_violation=frac)
