"""The policy player's networks: a Gaussian MLP policy and a value MLP (paper table 1).

Both networks read the task's observation through :class:`ObsFeatures`: wrapped angles (D'Claw's
target error, D'Kitty's torso Euler angles) become (cos, sin) pairs, so that nothing the
network computes jumps when an angle crosses +-pi, and the features are normalised with fixed
statistics taken from the replay buffer at each iteration. Changing those statistics would
silently change the network, so ``set_obs_normalization`` rewrites the first layer so that the
function computed is unchanged (a conservative leader must not jump because of bookkeeping,
and the value baseline must not jump between two NPG steps either).
"""

from __future__ import annotations

from typing import Optional, Sequence, cast

import numpy as np
import torch
from torch import nn

OBS_CLIP = 10.0  # normalised observations are clipped to +-OBS_CLIP (robust to outliers on hardware)
STD_FLOOR = 1e-2  # smallest normalisation scale (constant observation slots)


class ObsFeatures(nn.Module):
    """obs [..., obs_dim] -> features [..., obs_dim + len(angle_slots)]: the observation without its
    wrapped-angle slots, then the cosines and the sines of those slots.

    ``harmonics``: ``(cos_slot, sin_slot, k)`` triples of slots that hold (cos theta, sin theta) of
    an angle with a k-fold symmetry (D'Claw's three-spoke valve: k = 3): the network reads
    (cos k theta, sin k theta) there instead, so what it learns at theta holds at theta + 2 pi / k.
    Computed as the k-th power of cos + i sin (exact, and plain multiplications in ONNX). A
    persistent ``harmonic_k`` buffer makes weights saved with and without harmonics refuse to
    load into each other (the two read the same slots differently).
    """

    _angles: torch.Tensor  # buffers (typed for the checker: nn.Module's __getattr__ is untyped)
    _others: torch.Tensor

    def __init__(
        self, obs_dim: int, angle_slots: Sequence[int] = (), harmonics: Sequence[tuple[int, int, int]] = ()
    ) -> None:
        super().__init__()
        slots = sorted({int(i) for i in angle_slots})
        if any(i < 0 or i >= obs_dim for i in slots):
            raise ValueError(f"angle slots {slots} outside an observation of {obs_dim} values")
        pairs = [(int(c), int(s_), int(k)) for c, s_, k in harmonics]
        for c, s_, k in pairs:
            if not (0 <= c < obs_dim and 0 <= s_ < obs_dim) or c == s_ or k < 1 or {c, s_} & set(slots):
                raise ValueError(f"harmonic ({c}, {s_}, {k}) does not fit an observation of {obs_dim} values")
        self.obs_dim = int(obs_dim)
        self.angle_slots = tuple(slots)
        self.harmonics = tuple((c, s_, k) for c, s_, k in pairs if k > 1)
        self.other_slots = tuple(i for i in range(self.obs_dim) if i not in slots)
        self.dim = self.obs_dim + len(slots)
        self.register_buffer("_angles", torch.tensor(slots, dtype=torch.long), persistent=False)
        self.register_buffer("_others", torch.tensor(self.other_slots, dtype=torch.long), persistent=False)
        if self.harmonics:
            self.register_buffer("harmonic_k", torch.tensor([k for _, _, k in self.harmonics], dtype=torch.long))

    def _with_harmonics(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.harmonics:
            return obs
        cols = list(obs.unbind(-1))
        for c, s_, k in self.harmonics:
            re, im = cols[c], cols[s_]
            for _ in range(k - 1):  # (re + i im) * (cos + i sin)
                re, im = re * cols[c] - im * cols[s_], re * cols[s_] + im * cols[c]
            cols[c], cols[s_] = re, im
        return torch.stack(cols, dim=-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        obs = self._with_harmonics(obs)
        if not self.angle_slots:
            return obs
        angles = obs.index_select(-1, self._angles)
        return torch.cat([obs.index_select(-1, self._others), torch.cos(angles), torch.sin(angles)], dim=-1)

    def numpy(self, obs: np.ndarray) -> np.ndarray:
        """The same features for a numpy batch (normalisation statistics are taken on them)."""
        obs = np.asarray(obs, dtype=np.float64)
        if self.harmonics:
            obs = obs.copy()
            for c, s_, k in self.harmonics:
                z = (obs[..., c] + 1j * obs[..., s_]) ** k
                obs[..., c], obs[..., s_] = z.real, z.imag
        if not self.angle_slots:
            return obs
        angles = obs[..., list(self.angle_slots)]
        return np.concatenate([obs[..., list(self.other_slots)], np.cos(angles), np.sin(angles)], axis=-1)


def _rescale_first_layer(
    layer: nn.Linear, old_mean: torch.Tensor, old_std: torch.Tensor, new_mean: torch.Tensor, new_std: torch.Tensor
) -> None:
    """Rewrite ``layer`` so that ``layer((x - new_mean)/new_std) == layer((x - old_mean)/old_std)``.

    W x_old + b = (W diag(s_new/s_old)) x_new + b + W (m_new - m_old)/s_old
    (exact as long as neither normalised value hits the clip).
    """
    w = layer.weight.clone()
    layer.bias.add_(w @ ((new_mean - old_mean) / old_std))
    layer.weight.copy_(w * (new_std / old_std)[None, :])


def _checked_stats(mean: np.ndarray, std: np.ndarray, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean_t = torch.as_tensor(np.asarray(mean), dtype=like.dtype, device=like.device)
    std_t = torch.as_tensor(np.asarray(std), dtype=like.dtype, device=like.device)
    if mean_t.shape != like.shape or std_t.shape != like.shape:
        raise ValueError(f"normalisation stats must have shape {tuple(like.shape)}")
    if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all()):
        raise ValueError("normalisation stats must be finite")
    return mean_t, torch.clamp(std_t, min=STD_FLOOR)


def adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam with the fused kernel (one pass over all parameters; ~10% faster model fits on a CPU)
    where this torch build has it for the parameters' device, else the default implementation."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device or dtype
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [nn.Linear(last, int(width)), activation()]
        last = int(width)
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


Mirror = tuple[Sequence[int], Sequence[float], Sequence[int], Sequence[float]]


class GaussianMLPPolicy(nn.Module):
    """pi(a|s) = N(mu(s), diag(exp(log_std))^2): tanh MLP mean, state-independent learned log std.

    ``mu`` reads :class:`ObsFeatures` of the observation (``angle_slots``: wrapped angles as
    cos/sin; ``harmonics``: symmetric angles mod their period), normalised with ``obs_mean``/``obs_std`` (feature statistics). Actions are not
    squashed: the world clips them to [-1, 1] (as ROBEL does), and the deterministic action
    exported to ONNX is ``clip(mu(s), -1, 1)``.

    ``mirror``: a reflection of the robot that maps the task onto itself (D'Claw: the plane through
    the thumb swaps the other two fingers and turns the valve the other way), given as
    ``(obs_index, obs_sign, act_index, act_sign)`` with ``(M s)[i] = obs_sign[i] * s[obs_index[i]]``
    and likewise ``A`` for actions (both involutions). The mean is then
    ``mu(s) = (g(s) + A g(M s)) / 2`` for the MLP ``g``, so ``mu(M s) = A mu(s)`` exactly: whatever
    the policy learns for one turning direction it does for the other. The std is not mirrored.
    """

    obs_mean: torch.Tensor  # buffers
    obs_std: torch.Tensor
    mean_net: nn.Sequential
    mirror_obs_index: torch.Tensor
    mirror_obs_sign: torch.Tensor
    mirror_act_index: torch.Tensor
    mirror_act_sign: torch.Tensor

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (64, 64),
        init_log_std: float = -1.0,
        min_log_std: float = -2.5,
        max_log_std: float = 2.0,
        angle_slots: Sequence[int] = (),
        harmonics: Sequence[tuple[int, int, int]] = (),
        mirror: Optional[Mirror] = None,
    ) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.hidden = [int(h) for h in hidden]
        self.min_log_std = float(min_log_std)
        self.max_log_std = float(max_log_std)
        self.features = ObsFeatures(self.obs_dim, angle_slots, harmonics)
        self.mean_net = mlp(self.features.dim, self.hidden, self.act_dim, nn.Tanh)
        # A small last layer starts the policy near the zero action (as the reference code does).
        with torch.no_grad():
            last = cast(nn.Linear, self.mean_net[-1])
            last.weight.mul_(0.01)
            last.bias.mul_(0.01)
        self.log_std = nn.Parameter(torch.full((self.act_dim,), float(init_log_std)))
        self.register_buffer("obs_mean", torch.zeros(self.features.dim))
        self.register_buffer("obs_std", torch.ones(self.features.dim))
        self.mirrored = mirror is not None
        if mirror is not None:
            # Persistent: weights trained with and without the mirror compute different
            # functions, so loading one into the other must fail (as with harmonic_k).
            for name, t in zip(("obs", "act"), _checked_mirror(mirror, self.obs_dim, self.act_dim)):
                self.register_buffer(f"mirror_{name}_index", t[0])
                self.register_buffer(f"mirror_{name}_sign", t[1])

    @torch.no_grad()
    def set_intent(self, offset: torch.Tensor) -> None:
        """Make ``offset`` the mean action the fresh policy starts near (the last layer's bias;
        with a mirror the mean starts near ``(offset + A offset) / 2``): a follower's restart
        (:meth:`PolicyPlayer.best_response`) starts from a random intent."""
        last = cast(nn.Linear, self.mean_net[-1])
        last.bias.copy_(torch.as_tensor(offset, dtype=last.bias.dtype, device=last.bias.device).reshape(self.act_dim))

    # -- mirror -------------------------------------------------------------------------
    def mirror_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """M s (the observation of the reflected robot); only with a mirror."""
        return obs.index_select(-1, self.mirror_obs_index) * self.mirror_obs_sign

    def mirror_act(self, act: torch.Tensor) -> torch.Tensor:
        """A a (the action of the reflected robot); only with a mirror."""
        return act.index_select(-1, self.mirror_act_index) * self.mirror_act_sign

    def net_input(self, obs: torch.Tensor) -> torch.Tensor:
        """What ``mean_net`` reads: the normalised features of s, or of s and M s stacked on a new
        first dimension when mirrored (one forward pass for both)."""
        if self.mirrored:
            obs = torch.stack([obs, self.mirror_obs(obs)], dim=0)
        return self.normalize(obs)

    def combine(self, out: torch.Tensor) -> torch.Tensor:
        """``mean_net``'s output on :meth:`net_input` -> mu(s). Linear in ``out`` (the Fisher
        product applies it to J v as well)."""
        if not self.mirrored:
            return out
        return 0.5 * (out[0] + self.mirror_act(out[1]))

    # -- normalisation ------------------------------------------------------------------
    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.clamp((self.features(obs) - self.obs_mean) / self.obs_std, -OBS_CLIP, OBS_CLIP)

    def feature_stats(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the features of a batch of observations (for set_obs_normalization);
        with a mirror, of the batch and its reflection (the network reads both)."""
        obs = np.asarray(obs, dtype=np.float64)
        if self.mirrored:
            index, sign = self.mirror_obs_index.cpu().numpy(), self.mirror_obs_sign.cpu().numpy()
            obs = np.concatenate([obs, obs[..., index] * sign], axis=0)
        f = self.features.numpy(obs)
        return f.mean(0), f.std(0)

    @torch.no_grad()
    def set_obs_normalization(self, mean: np.ndarray, std: np.ndarray, preserve_function: bool = True) -> None:
        """Set new feature statistics; rewrite the first layer so mu(s) does not change."""
        mean_t, std_t = _checked_stats(mean, std, self.obs_mean)
        if preserve_function:
            _rescale_first_layer(cast(nn.Linear, self.mean_net[0]), self.obs_mean, self.obs_std, mean_t, std_t)
        self.obs_mean.copy_(mean_t)
        self.obs_std.copy_(std_t)

    # -- distribution -------------------------------------------------------------------
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action mu(s) (unclipped)."""
        return self.combine(self.mean_net(self.net_input(obs)))

    def clamp_log_std(self) -> None:
        with torch.no_grad():
            self.log_std.clamp_(min=self.min_log_std, max=self.max_log_std)

    def entropy(self) -> torch.Tensor:
        """Differential entropy of the action distribution (the same in every state)."""
        return self.log_std.sum() + 0.5 * self.act_dim * (1.0 + np.log(2 * np.pi))

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        mean = self(obs)
        z = (act - mean) / torch.exp(self.log_std)
        return -0.5 * (z**2).sum(-1) - self.log_std.sum() - 0.5 * self.act_dim * np.log(2 * np.pi)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        mean = self(obs)
        return mean + torch.exp(self.log_std) * torch.randn_like(mean)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """One action (or a batch) for numpy observations; deterministic = clip(mean, -1, 1)."""
        o = np.asarray(obs, dtype=np.float32)
        single = o.ndim == 1
        if o.shape[-1] != self.obs_dim:
            raise ValueError(f"observation must have {self.obs_dim} values, got shape {o.shape}")
        t = torch.as_tensor(o[None] if single else o, device=self.obs_mean.device)
        a = self(t) if deterministic else self.sample(t)
        if deterministic:
            a = torch.clamp(a, -1.0, 1.0)
        out = a.cpu().numpy().astype(np.float64)
        return out[0] if single else out


def _checked_mirror(mirror: Mirror, obs_dim: int, act_dim: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The mirror's (index, sign) tensors; each must be a signed permutation that is its own inverse."""
    if len(mirror) != 4:
        raise ValueError("mirror must be (obs_index, obs_sign, act_index, act_sign)")
    out = []
    for what, index, sign, dim in (("obs", mirror[0], mirror[1], obs_dim), ("act", mirror[2], mirror[3], act_dim)):
        idx, sgn = np.asarray(index, dtype=np.int64), np.asarray(sign, dtype=np.float64)
        if idx.shape != (dim,) or sgn.shape != (dim,) or sorted(idx.tolist()) != list(range(dim)):
            raise ValueError(f"mirror: the {what} index must be a permutation of {dim} slots")
        if not np.all(np.abs(sgn) == 1.0):
            raise ValueError(f"mirror: the {what} signs must be +-1")
        if not (np.array_equal(idx[idx], np.arange(dim)) and np.all(sgn * sgn[idx] == 1.0)):
            raise ValueError(f"mirror: the {what} map must be its own inverse (a reflection)")
        out.append((torch.as_tensor(idx), torch.as_tensor(sgn, dtype=torch.float32)))
    return out


def gaussian_kl(
    mean_old: torch.Tensor, log_std_old: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor
) -> torch.Tensor:
    """Per-sample KL(N_old || N_new) of diagonal Gaussians."""
    var_old, var = torch.exp(2 * log_std_old), torch.exp(2 * log_std)
    return (log_std - log_std_old + (var_old + (mean_old - mean) ** 2) / (2 * var) - 0.5).sum(-1)


class ValueMLP(nn.Module):
    """V(s, t): MLP on the normalised observation features plus time features (t/H)^1..4, as
    the reference baseline does for finite-horizon tasks. Targets are standardised internally.

    Both normalisations (observation features and returns) preserve the function when they
    change: the value baseline of the first NPG step of an iteration is the one fitted at the
    last step of the previous iteration, not a network fed inputs on a new scale.
    """

    N_TIME_FEATURES = 4

    obs_mean: torch.Tensor  # buffers
    obs_std: torch.Tensor
    ret_mean: torch.Tensor
    ret_std: torch.Tensor
    net: nn.Sequential

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int] = (128, 128),
        angle_slots: Sequence[int] = (),
        harmonics: Sequence[tuple[int, int, int]] = (),
    ) -> None:
        super().__init__()
        self.obs_dim = int(obs_dim)
        self.obs_features = ObsFeatures(self.obs_dim, angle_slots, harmonics)
        self.net = mlp(self.obs_features.dim + self.N_TIME_FEATURES, hidden, 1, nn.Tanh)
        self.register_buffer("obs_mean", torch.zeros(self.obs_features.dim))
        self.register_buffer("obs_std", torch.ones(self.obs_features.dim))
        self.register_buffer("ret_mean", torch.zeros(()))
        self.register_buffer("ret_std", torch.ones(()))

    def features(self, obs: torch.Tensor, t_frac: torch.Tensor) -> torch.Tensor:
        x = torch.clamp((self.obs_features(obs) - self.obs_mean) / self.obs_std, -OBS_CLIP, OBS_CLIP)
        t = t_frac.unsqueeze(-1)
        return torch.cat([x, t, t**2, t**3, t**4], dim=-1)

    def forward_normalized(self, obs: torch.Tensor, t_frac: torch.Tensor) -> torch.Tensor:
        return self.net(self.features(obs, t_frac)).squeeze(-1)

    def forward(self, obs: torch.Tensor, t_frac: torch.Tensor) -> torch.Tensor:
        """Value in return units."""
        return self.forward_normalized(obs, t_frac) * self.ret_std + self.ret_mean

    @torch.no_grad()
    def set_return_normalization(self, mean: float, std: float) -> None:
        """New target statistics; the last layer is rescaled so V(s, t) does not change."""
        std = max(float(std), 1e-6)
        last = cast(nn.Linear, self.net[-1])
        ratio = self.ret_std / std
        last.bias.copy_((last.bias * self.ret_std + self.ret_mean - mean) / std)
        last.weight.mul_(ratio)
        self.ret_mean.fill_(float(mean))
        self.ret_std.fill_(std)

    @torch.no_grad()
    def set_obs_normalization(self, mean: np.ndarray, std: np.ndarray, preserve_function: bool = True) -> None:
        """New feature statistics; the observation columns of the first layer are rewritten so
        V(s, t) does not change (the time columns are not normalised)."""
        mean_t, std_t = _checked_stats(mean, std, self.obs_mean)
        if preserve_function:
            first = cast(nn.Linear, self.net[0])
            n = self.obs_features.dim
            obs_part = nn.Linear(n, first.out_features).to(first.weight.device)
            obs_part.weight.copy_(first.weight[:, :n])
            obs_part.bias.copy_(first.bias)
            _rescale_first_layer(obs_part, self.obs_mean, self.obs_std, mean_t, std_t)
            first.weight[:, :n] = obs_part.weight
            first.bias.copy_(obs_part.bias)
        self.obs_mean.copy_(mean_t)
        self.obs_std.copy_(std_t)
