"""The model player's model: an ensemble of MLP dynamics models trained as ONE batched network.

Each member predicts the change of the wrap-free model state (``task.to_model``):
``z' = z + sigma_d * MLP((z - mu_z)/sigma_z, (a - mu_a)/sigma_a) + mu_d`` (paper appendix B). The
statistics are recomputed from the buffer at every fit with scale = mean absolute deviation,
as the reference code does; output dimensions whose spread is ~0 are masked (they keep their
mean change). The members differ only by their random initialisation and minibatch order.

Angles in the model state (``angle_dims``: state index -> symmetry order k) are predicted as
wrapped changes and read by the members as ``(cos k theta, sin k theta)``: with k = 3 the members
see D'Claw's three-spoke valve the same at theta and theta + 2 pi / 3, as the physics does, so
what the data show of one stroke holds for the next (order 0: the angle is carried, not read).

All members live in stacked weight tensors ``[E, in, out]`` and run with ``torch.baddbmm``:
one forward/backward pass trains every member (no Python loop over members).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "silu": nn.functional.silu,
    "tanh": torch.tanh,
}
MASK_EPS = 1e-6  # output dims with a smaller mean absolute deviation are not learned
ABS_CLAMP = 100.0  # rollout states/actions never leave +-ABS_CLAMP (the reference code's guard)


def wrap_angle(x: torch.Tensor) -> torch.Tensor:
    """Angles into [-pi, pi) (differentiable almost everywhere)."""
    return torch.remainder(x + math.pi, 2.0 * math.pi) - math.pi


class DynamicsEnsemble(nn.Module):
    """E MLP dynamics models over (model state z, action a) -> (z' - z [, reward])."""

    in_shift: torch.Tensor  # buffers (typed for the checker: nn.Module's __getattr__ is untyped)
    in_scale: torch.Tensor
    out_shift: torch.Tensor
    out_scale: torch.Tensor
    out_mask: torch.Tensor
    loss_weight: torch.Tensor
    state_lo: torch.Tensor
    state_hi: torch.Tensor
    angle_mask: torch.Tensor
    linear_idx: torch.Tensor
    angle_idx: torch.Tensor
    angle_order: torch.Tensor

    def __init__(
        self,
        state_dim: int,
        act_dim: int,
        ensemble_size: int = 4,
        hidden: Sequence[int] = (512, 512),
        activation: str = "relu",
        learn_reward: bool = False,
        clamp_margin: float = 1.0,
        angle_dims: Optional[Mapping[int, int]] = None,
        goal_dims: Sequence[int] = (),
        goal_share: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(_ACTIVATIONS)}")
        if state_dim <= 0 or act_dim <= 0 or ensemble_size <= 0:
            raise ValueError("state_dim, act_dim and ensemble_size must be positive")
        self.state_dim, self.act_dim, self.ensemble_size = int(state_dim), int(act_dim), int(ensemble_size)
        self.hidden = [int(h) for h in hidden]
        self.activation = activation
        self.learn_reward = bool(learn_reward)
        self.clamp_margin = float(clamp_margin)
        self.angle_dims = {int(i): int(k) for i, k in sorted((angle_dims or {}).items())}
        for i, k in self.angle_dims.items():
            if not 0 <= i < self.state_dim or k < 0:
                raise ValueError(f"angle_dims: state index {i} (of {self.state_dim}) with symmetry order {k}")
        read = [i for i, k in self.angle_dims.items() if k > 0]
        linear = [i for i in range(self.state_dim) if i not in self.angle_dims]
        self.feature_dim = len(linear) + 2 * len(read)
        self.in_dim = self.feature_dim + self.act_dim
        self.out_dim = self.state_dim + (1 if self.learn_reward else 0)
        sizes = [self.in_dim, *self.hidden, self.out_dim]
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(self.ensemble_size, i, o)) for i, o in zip(sizes[:-1], sizes[1:])]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(self.ensemble_size, 1, o)) for o in sizes[1:]])
        self.reset_parameters()
        self.register_buffer("in_shift", torch.zeros(self.in_dim))
        self.register_buffer("in_scale", torch.ones(self.in_dim))
        self.register_buffer("out_shift", torch.zeros(self.out_dim))
        self.register_buffer("out_scale", torch.ones(self.out_dim))
        self.register_buffer("out_mask", torch.ones(self.out_dim))
        self.goal_dims = tuple(int(i) for i in goal_dims)
        self.goal_share = float(goal_share)
        if not 0.0 <= self.goal_share < 1.0:
            raise ValueError(f"goal_share must be in [0, 1), got {goal_share}")
        if any(not 0 <= i < self.state_dim for i in self.goal_dims):
            raise ValueError(f"goal_dims {self.goal_dims} outside the state (0..{self.state_dim - 1})")
        # per-output weight of the loss (set_normalization fills it from the mask and goal_share)
        self.register_buffer("loss_weight", torch.ones(self.out_dim), persistent=False)
        self.register_load_state_dict_post_hook(lambda module, _keys: module._set_loss_weight())
        self.register_buffer("state_lo", torch.full((self.state_dim,), -ABS_CLAMP))
        self.register_buffer("state_hi", torch.full((self.state_dim,), ABS_CLAMP))
        # the input features and the wrap are fixed by the constructor (not saved with the weights)
        mask = torch.zeros(self.state_dim, dtype=torch.bool)
        mask[list(self.angle_dims)] = True
        self.register_buffer("angle_mask", mask, persistent=False)
        self.register_buffer("linear_idx", torch.tensor(linear, dtype=torch.long), persistent=False)
        self.register_buffer("angle_idx", torch.tensor(read, dtype=torch.long), persistent=False)
        self.register_buffer(
            "angle_order", torch.tensor([self.angle_dims[i] for i in read], dtype=torch.float32), persistent=False
        )

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """nn.Linear's default init, drawn independently for every member."""
        for w, b in zip(self.weights, self.biases):
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(b, -bound, bound)

    # -- angles -------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs [..., state + act] -> what the members read [..., in_dim]: angles as
        (cos k theta, sin k theta), order-0 angles left out, everything else as is."""
        if not self.angle_dims:
            return x
        z, a = x[..., : self.state_dim], x[..., self.state_dim :]
        theta = z[..., self.angle_idx] * self.angle_order
        return torch.cat([z[..., self.linear_idx], torch.cos(theta), torch.sin(theta), a], dim=-1)

    def state_delta(self, z: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
        """z' - z, with the change of an angle wrapped into [-pi, pi) (the members' target)."""
        d = z_next - z
        return torch.where(self.angle_mask.to(d.device), wrap_angle(d), d) if self.angle_dims else d

    # -- normalisation ------------------------------------------------------------------
    @torch.no_grad()
    def set_normalization(self, inputs: torch.Tensor, targets: torch.Tensor, states: torch.Tensor) -> None:
        """Statistics from the fit data (``inputs`` raw [N, state + act]): mean and mean absolute
        deviation of the features; mask ~constant outputs; the rollout box (angles wrap instead)."""
        inputs = self.features(inputs)
        self.in_shift.copy_(inputs.mean(0))
        in_scale = (inputs - self.in_shift).abs().mean(0)
        self.in_scale.copy_(torch.where(in_scale < MASK_EPS, torch.ones_like(in_scale), in_scale))
        self.out_shift.copy_(targets.mean(0))
        out_scale = (targets - self.out_shift).abs().mean(0)
        self.out_mask.copy_((out_scale >= MASK_EPS).to(self.out_mask.dtype))
        self._set_loss_weight()
        self.out_scale.copy_(torch.where(out_scale < MASK_EPS, torch.ones_like(out_scale), out_scale))
        lo, hi = states.min(0).values, states.max(0).values
        width = (hi - lo) * self.clamp_margin
        lo = torch.where(self.angle_mask, torch.full_like(lo, -math.inf), lo - width)
        hi = torch.where(self.angle_mask, torch.full_like(hi, math.inf), hi + width)
        self.state_lo.copy_(torch.clamp(lo, min=-ABS_CLAMP))
        self.state_hi.copy_(torch.clamp(hi, max=ABS_CLAMP))

    @torch.no_grad()
    def _set_loss_weight(self) -> None:
        """Weights of the outputs in the loss, summing to the number of unmasked outputs (so that
        ``goal_share`` 0 is the plain mean): the goal dims together carry ``goal_share`` of it.

        Why: the goal is one or two of some 20 outputs (D'Claw: the valve's change of 28), so a
        plain mean spends ~4% of the fit on the quantity the reward and the success read. At a
        share of 0.5 the predicted valve change on the policy's next data was about 9% more
        accurate, the other outputs no worse (bench/bench_goal_share.py)."""
        w = self.out_mask.clone()
        goal = torch.zeros_like(w, dtype=torch.bool)
        goal[list(self.goal_dims)] = True
        goal &= w > 0
        n, n_goal = float(w.sum()), float(goal.sum())
        if self.goal_share > 0 and 0 < n_goal < n:
            w = torch.where(goal, n * self.goal_share / n_goal, n * (1.0 - self.goal_share) / (n - n_goal)) * w
        self.loss_weight.copy_(w)

    # -- forward ------------------------------------------------------------------------
    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs [E, B, state + act] -> normalised outputs [E, B, out] (what the loss sees)."""
        h = (self.features(x) - self.in_shift) / self.in_scale
        act = _ACTIVATIONS[self.activation]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = act(h)
        return h

    def predict(self, z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Next model state [E, B, state_dim] (and reward [E, B] if learned) for z, a of shape [E, B, .]."""
        a = torch.clamp(a, -ABS_CLAMP, ABS_CLAMP)
        out = self.forward_normalized(torch.cat([z, a], dim=-1))
        # masked outputs keep their (constant) mean change
        out = (out * self.out_mask) * self.out_scale + self.out_shift
        z_next = z + out[..., : self.state_dim]
        if self.angle_dims:
            z_next = torch.where(self.angle_mask, wrap_angle(z_next), z_next)
        z_next = torch.maximum(torch.minimum(z_next, self.state_hi), self.state_lo)
        reward = out[..., self.state_dim] if self.learn_reward else None
        return z_next, reward

    @torch.no_grad()
    def disagreement(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Std over the members of the predicted change at the same inputs, per state dim, in
        normalised target units: every member predicts at every row of ``z``, ``a`` [..., dim]
        (any leading shape), the result has that leading shape and ``state_dim`` columns."""
        lead = z.shape[:-1]
        x = torch.cat([z, torch.clamp(a, -ABS_CLAMP, ABS_CLAMP)], dim=-1).reshape(1, -1, z.shape[-1] + a.shape[-1])
        out = self.forward_normalized(x.expand(self.ensemble_size, -1, -1))[..., : self.state_dim]
        return (out * self.out_mask[: self.state_dim]).std(dim=0).reshape(*lead, self.state_dim)

    def normalized_targets(self, targets: torch.Tensor) -> torch.Tensor:
        return (targets - self.out_shift) / self.out_scale

    def loss(self, x: torch.Tensor, y_norm: torch.Tensor) -> torch.Tensor:
        """Per-member mean squared error in normalised target units over unmasked dims (weighted
        by ``loss_weight``: the goal dims' share): [E]."""
        err = (self.forward_normalized(x) - y_norm) ** 2 * self.loss_weight
        return err.sum(-1).mean(-1) / self.out_mask.sum().clamp(min=1.0)


def fit_ensemble(
    ensemble: DynamicsEnsemble,
    optimizer: torch.optim.Optimizer,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    n_steps: int,
    batch_size: int = 200,
    holdout_mask: Optional[torch.Tensor] = None,
    eval_every: int = 25,
    patience: int = 4,
    min_steps: int = 100,
    extra_loss: Optional[Callable[[], torch.Tensor]] = None,
    alpha: float = 1.0,
    bf16: bool = False,
    recent_window: int = 0,
    recent_share: float = 0.0,
) -> dict:
    """Minibatch Adam on the normalised delta loss, every member in one batched step.

    ``inputs`` [N, in] = (z, a), ``targets`` [N, out] = (z' - z [, r]), already on the model's
    device; normalisation must have been set. With ``holdout_mask`` (bool [N], True = held
    out; the caller keeps it fixed per episode so that a warm-started model never saw it) the fit stops once the held-out loss has not improved for ``patience`` evaluations
    (after ``min_steps``), restoring the best weights. ``extra_loss`` (MAL + agent reward)
    (a mean over the members) is mixed in per member as ``alpha * loss_e + (1 - alpha) * extra_e``. ``bf16``: CPU autocast of the
    gradient steps to bfloat16 matmuls (about 1.7x faster on CPUs with AVX512-BF16; weights,
    optimiser state and losses stay float32). ``recent_share`` of each minibatch comes from the
    last ``recent_window`` training transitions (the rows are in collection order, newest last),
    the rest from all of them.
    """
    n = inputs.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 transitions to fit the model, got {n}")
    E = ensemble.ensemble_size
    y_all = ensemble.normalized_targets(targets)
    if holdout_mask is not None and bool(holdout_mask.any()) and not bool(holdout_mask.all()):
        hold_idx = torch.nonzero(holdout_mask).squeeze(1)
        train_idx = torch.nonzero(~holdout_mask).squeeze(1)
    else:
        hold_idx, train_idx = None, torch.arange(n, device=inputs.device)
    x_train, y_train = inputs[train_idx], y_all[train_idx]
    n_train = x_train.shape[0]
    bs = min(batch_size, n_train)
    # minibatch rows drawn from the newest transitions only (none when the window holds all data)
    n_recent = round(bs * recent_share) if 0 < recent_window < n_train else 0

    def holdout_loss() -> float:
        with torch.no_grad():
            x = inputs[hold_idx].expand(E, -1, -1)
            return float(ensemble.loss(x, y_all[hold_idx].expand(E, -1, -1)).mean())

    best, best_state, bad_evals, steps = math.inf, None, 0, 0
    curve: list[tuple[int, float]] = []  # (step, held-out loss) at every evaluation
    t0 = time.perf_counter()
    train_loss = torch.zeros(E)
    for steps in range(1, n_steps + 1):
        idx = torch.randint(0, n_train, (E, bs), device=inputs.device)
        if n_recent:
            idx[:, :n_recent] = torch.randint(n_train - recent_window, n_train, (E, n_recent), device=inputs.device)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16):
            per_member = ensemble.loss(x_train[idx], y_train[idx]).float()
            loss = per_member.sum()  # sum: each member gets its own mean-loss gradient
            if extra_loss is not None:
                # extra_loss() is a mean over the members; times E, each member's gradient is
                # alpha * grad l_e + (1 - alpha) * grad extra_e, whatever the ensemble size
                loss = alpha * loss + (1.0 - alpha) * E * extra_loss().float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        train_loss = per_member.detach()
        if hold_idx is not None and steps % eval_every == 0:
            h = holdout_loss()
            curve.append((steps, h))
            if h < best - 1e-6:
                best, bad_evals = h, 0
                best_state = copy.deepcopy(ensemble.state_dict())
            else:
                bad_evals += 1
                if steps >= min_steps and bad_evals >= patience:
                    break
    if best_state is not None:
        current = holdout_loss()
        if current > best:
            ensemble.load_state_dict(best_state)
    result: dict[str, Any] = {
        "steps": steps,
        "train_loss": float(train_loss.mean()),
        "fit_s": time.perf_counter() - t0,
    }
    if hold_idx is not None:
        result["holdout_loss"] = holdout_loss()
        result["holdout_curve"] = curve
        result["best_step"] = min(curve, key=lambda c: c[1])[0] if curve else steps
    return result
