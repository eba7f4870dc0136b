"""Natural policy gradient on synthetic data (paper Subroutine 1, steps 4-6).

- advantages: GAE(gamma, lambda) with the value network, then whitened;
- vanilla gradient g = E[grad log pi(a|s) A];
- Fisher-vector products F v from the Hessian of the mean KL(pi_old || pi) (double backprop);
- F x = g solved by conjugate gradient;
- normalised step theta += sqrt(delta / g^T F^-1 g) F^-1 g. In the quadratic approximation
  the KL of this step is 0.5 * alpha^2 x^T F x = delta / 2 (the reference code's convention);
  the measured KL is reported;
- the value network is refitted on the synthetic discounted returns.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from mbrl_ros.core.networks import GaussianMLPPolicy, ValueMLP, gaussian_kl


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    terminal: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and discounted returns for [M, H] rewards and [M, H+1] values.

    ``values[:, H]`` is the bootstrap value after the last step (0 if the episode ends there);
    a terminal step gets no bootstrap. Returns ``(advantages, returns)``, both [M, H].
    """
    M, H = rewards.shape
    adv = torch.zeros_like(rewards)
    ret = torch.zeros_like(rewards)
    last_adv = torch.zeros(M, device=rewards.device)
    last_ret = values[:, H]
    for t in reversed(range(H)):
        cont = 1.0 - terminal[:, t]
        delta = rewards[:, t] + gamma * values[:, t + 1] * cont - values[:, t]
        last_adv = delta + gamma * lam * cont * last_adv
        last_ret = rewards[:, t] + gamma * cont * last_ret
        adv[:, t] = last_adv
        ret[:, t] = last_ret
    return adv, ret


def conjugate_gradient(
    fvp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float = 1e-10
) -> torch.Tensor:
    """Solve F x = b for symmetric positive-definite F given only products F v."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = torch.dot(r, r)
    for _ in range(iters):
        Fp = fvp(p)
        step = rr / (torch.dot(p, Fp) + 1e-20)
        x += step * p
        r -= step * Fp
        rr_new = torch.dot(r, r)
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def gaussian_fisher_product(
    policy: GaussianMLPPolicy, obs: torch.Tensor, damping: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """v -> (F + damping I) v for the Gaussian policy at its current parameters.

    The Hessian of the mean KL at pi_old = pi is block diagonal: for the mean network
    F = E[J^T diag(sigma^-2) J] (J = d mu / d theta), for the log std 2 I. J v is a
    forward-mode product (torch.func.jvp), J^T u a backward pass through one retained graph,
    about half the work of differentiating the KL twice.
    """
    from torch.func import functional_call, jvp

    net = policy.mean_net
    names = [k for k, _ in net.named_parameters()]
    values = tuple(p.detach() for _, p in net.named_parameters())
    params = list(net.parameters())
    x = policy.net_input(obs).detach()  # with a mirror: s and M s stacked (mu = combine(net(x)))
    inv_var = torch.exp(-2.0 * policy.log_std.detach())
    # The forward pass is kept for every J^T u of the CG loop; for a plain tanh MLP the inputs of
    # each linear layer and the tanh outputs are kept too, so J v is computed by hand (two small
    # matmuls per layer, about 2x faster than torch.func.jvp's dual tensors).
    plain = all(isinstance(m, (nn.Linear, nn.Tanh)) for m in net)
    inputs, tanh_out, h = [], [], x
    for m in net:
        if isinstance(m, nn.Linear):
            inputs.append(h.detach())
        h = m(h)
        if isinstance(m, nn.Tanh):
            tanh_out.append(h.detach())
    mean = policy.combine(h)
    scale = 1.0 / obs.shape[0]
    # layout of the flat vector: policy.parameters() order (log_std and the mean net's weights)
    layout = [(name, p.numel(), p.shape) for name, p in policy.named_parameters() if p.requires_grad]
    linears = [(i, m) for i, m in enumerate(net) if isinstance(m, nn.Linear)]

    def manual_jvp(parts: dict) -> torch.Tensor:
        dh: Optional[torch.Tensor] = None
        li = ti = 0
        for i, m in enumerate(net):
            if isinstance(m, nn.Linear):
                dw, db = parts[f"mean_net.{i}.weight"], parts[f"mean_net.{i}.bias"]
                out = inputs[li] @ dw.T + db
                if dh is not None:
                    out = out + dh @ m.weight.detach().T
                dh, li = out, li + 1
            else:
                assert dh is not None  # a tanh always follows a linear layer
                dh = dh * (1.0 - tanh_out[ti] ** 2)
                ti += 1
        assert dh is not None
        return dh

    def fvp(v: torch.Tensor) -> torch.Tensor:
        parts, offset = {}, 0
        for name, k, shape in layout:
            parts[name] = v[offset : offset + k].view(shape)
            offset += k
        if plain and linears:
            jv = manual_jvp(parts)
        else:
            tangents = tuple(parts[f"mean_net.{n}"] for n in names)
            _, jv = jvp(lambda *p: functional_call(net, dict(zip(names, p)), (x,)), values, tangents)[:2]
        jv = policy.combine(jv)  # combine is linear: J_mu v = combine(J_net v)
        jtu = torch.autograd.grad(mean, params, grad_outputs=jv * inv_var * scale, retain_graph=True)
        out = dict(zip((f"mean_net.{n}" for n in names), jtu))
        out["log_std"] = 2.0 * parts["log_std"]
        return flat([out[name] for name, _, _ in layout]) + damping * v

    return fvp


def _log_prob(mean: torch.Tensor, log_std: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log N(actions; mean, diag(exp(log_std))^2), summed over action dimensions."""
    z = (actions - mean) / torch.exp(log_std)
    return -0.5 * (z**2).sum(-1) - log_std.sum() - 0.5 * mean.shape[-1] * np.log(2 * np.pi)


def npg_update(
    policy: GaussianMLPPolicy,
    obs: torch.Tensor,
    actions: torch.Tensor,
    advantages: torch.Tensor,
    step_size: float = 0.05,
    cg_iters: int = 25,
    damping: float = 1e-3,
    fvp_fraction: float = 1.0,
    entropy_coef: float = 0.0,
) -> dict:
    """One normalised natural-gradient step on (obs, actions, whitened advantages) [N, .].

    ``entropy_coef``: the surrogate gains ``entropy_coef * H(pi)`` (entropy regularisation, in
    units of the whitened advantages), which keeps the policy from collapsing its exploration
    onto the first local optimum its model offers.
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    # one forward pass gives the old distribution and the graph of the surrogate's gradient
    mean = policy(obs)
    log_p = _log_prob(mean, policy.log_std, actions)
    old_mean, old_log_std, old_logp = mean.detach(), policy.log_std.detach().clone(), log_p.detach()

    # vanilla gradient of the importance-sampled surrogate at the current parameters
    surrogate = (torch.exp(log_p - old_logp) * advantages).mean()
    if entropy_coef:
        surrogate = surrogate + entropy_coef * policy.entropy()
    g = flat(torch.autograd.grad(surrogate, params)).detach()

    n = obs.shape[0]
    n_fvp = max(1, int(round(n * fvp_fraction)))
    sub = torch.randperm(n, device=obs.device)[:n_fvp] if n_fvp < n else slice(None)
    fvp = gaussian_fisher_product(policy, obs[sub], damping)

    x = conjugate_gradient(fvp, g, cg_iters)
    gFg = float(torch.dot(g, x))
    alpha = float(np.sqrt(step_size / (abs(gFg) + 1e-20)))
    with torch.no_grad():
        offset = 0
        for p in params:
            k = p.numel()
            p.add_(alpha * x[offset : offset + k].view_as(p))
            offset += k
        policy.clamp_log_std()
        new_mean = policy(obs)
        kl = float(gaussian_kl(old_mean, old_log_std, new_mean, policy.log_std).mean())
        new_surrogate = float((torch.exp(_log_prob(new_mean, policy.log_std, actions) - old_logp) * advantages).mean())
        if entropy_coef:
            new_surrogate += entropy_coef * float(policy.entropy())
    return {
        "kl": kl,
        "alpha": alpha,
        "grad_norm": float(g.norm()),
        "surrogate_gain": new_surrogate - float(surrogate.detach()),
        "entropy": float(policy.entropy().detach()),
    }


def fit_value(
    value: ValueMLP,
    optimizer: torch.optim.Optimizer,
    obs: torch.Tensor,
    t_frac: torch.Tensor,
    returns: torch.Tensor,
    epochs: int = 2,
    batch_size: int = 512,
) -> float:
    """Regress V(s, t) onto discounted returns (targets standardised); returns the last epoch's MSE."""
    value.set_return_normalization(float(returns.mean()), float(returns.std()) if returns.numel() > 1 else 1.0)
    target = (returns - value.ret_mean) / value.ret_std
    n = obs.shape[0]
    loss_sum, count = 0.0, 0
    for _ in range(epochs):
        perm = torch.randperm(n, device=obs.device)
        loss_sum, count = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = ((value.forward_normalized(obs[idx], t_frac[idx]) - target[idx]) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * idx.numel()
            count += idx.numel()
    return loss_sum / max(count, 1)
