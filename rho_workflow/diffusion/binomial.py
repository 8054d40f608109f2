"""Binomial diffusion of binary data (Sohl-Dickstein et al. 2015, Table App.1), on plain tensors.

Forward kernel ``q(x^t | x^{t-1}) = B(x^t; x^{t-1} (1 - beta_t) + 0.5 beta_t)`` with
``beta_t = 1/(T - t + 1)``, ``t = 1..T``, towards ``pi(x^T) = B(x^T; 0.5)``. Each bit keeps its
value with the cumulative factor ``a_t = prod_{s<=t} (1 - beta_s) = (T - t)/T`` and is
replaced by a fair coin otherwise, so ``q(x^t = 1 | x^0) = a_t x^0 + (1 - a_t)/2`` and
``q(x^T | x^0) = pi`` exactly (the prior term of K is 0).

The reverse kernel ``p(x^{t-1} | x^t) = B(x^{t-1}; f(x^t, t))`` is a learned flip rate. The
network :class:`FlipRateNet` predicts ``p_hat(x^0_i = 1 | x^t)`` and the rate is the forward
posterior averaged over it, ``f_i = sum_b q(x^{t-1}_i = 1 | x^t_i, x^0_i = b) p_hat_i(b)``
(the x0-parametrization of Austin et al. 2021, eq. 4): with the exact marginal posteriors it
is the exact per-bit marginal of the reverse step. ``reverse(x_t, t) -> f`` is the contract
every function here takes (``t = 1`` gives the decoder ``p(x^0 | x^1)``).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

from rho_workflow.diffusion.likelihood import BoundResult, EntropyDiagnostics

__all__ = ["binomial_betas", "keep_factor", "forward_marginal", "forward_posterior", "FlipRateNet",
           "x0_reverse", "ExactProductReverse", "binomial_bound", "binomial_loss", "sample_binomial",
           "binomial_entropy_diagnostics", "diffuse"]

Reverse = Callable[[torch.Tensor, int], torch.Tensor]
_EPS = 1e-12


def binomial_betas(T: int) -> torch.Tensor:
    """Table App.1: ``beta_t = 1/(T - t + 1)``, ``t = 1..T`` (so ``beta_T = 1``), float64 ``(T,)``."""
    if int(T) != T or T < 2:
        raise ValueError(f"binomial diffusion: T must be an integer >= 2, got {T}")
    t = torch.arange(1, int(T) + 1, dtype=torch.float64)
    return 1.0 / (T - t + 1.0)


def keep_factor(t: int, T: int) -> float:
    """``a_t = prod_{s<=t} (1 - beta_s) = (T - t)/T`` (``a_0 = 1``, ``a_T = 0``)."""
    if not 0 <= t <= T:
        raise ValueError(f"binomial diffusion: step t must lie in [0, T={T}], got {t}")
    return (T - t) / T


def forward_marginal(x0: torch.Tensor, t: int, T: int) -> torch.Tensor:
    """``q(x^t = 1 | x^0) = a_t x^0 + (1 - a_t)/2``, the closed-form marginal of the binomial kernel."""
    a = keep_factor(t, T)
    return a * x0.to(torch.float64) + 0.5 * (1.0 - a)


def forward_posterior(x_t: torch.Tensor, x0: torch.Tensor, t: int, T: int) -> torch.Tensor:
    """``q(x^{t-1} = 1 | x^t, x^0)`` by Bayes' rule on the kernel and the marginal at ``t - 1``."""
    beta = 1.0 / (T - t + 1.0)
    prior1 = forward_marginal(x0, t - 1, T)  # q(x^{t-1} = 1 | x0)
    x_t = x_t.to(torch.float64)
    like1 = x_t * (1.0 - 0.5 * beta) + (1.0 - x_t) * 0.5 * beta  # q(x^t | x^{t-1} = 1)
    like0 = x_t * 0.5 * beta + (1.0 - x_t) * (1.0 - 0.5 * beta)  # q(x^t | x^{t-1} = 0)
    num = like1 * prior1
    return num / (num + like0 * (1.0 - prior1))


def x0_reverse(p_x0: torch.Tensor, x_t: torch.Tensor, t: int, T: int) -> torch.Tensor:
    """Reverse flip rate ``f = q(1 | x^t, x0 = 1) p_hat + q(1 | x^t, x0 = 0) (1 - p_hat)`` (Austin et al. 2021, eq. 4)."""
    ones, zeros = torch.ones_like(x_t), torch.zeros_like(x_t)
    return (forward_posterior(x_t, ones, t, T) * p_x0
            + forward_posterior(x_t, zeros, t, T) * (1.0 - p_x0))


class FlipRateNet(nn.Module):
    """MLP ``(x^t, t) -> logit p_hat(x^0 = 1 | x^t)``; :meth:`reverse` gives the flip rate ``f(x^t, t)``.

    Parameters
    ----------
    dim : int
        Number of bits.
    T : int
        Number of diffusion steps.
    hidden, depth : int
        Width and number of hidden layers (Sohl-Dickstein et al. used 3 x 50 for the heartbeat).
    n_freq : int
        Sinusoidal features of ``t/T`` appended to the input.
    """

    def __init__(self, dim: int, T: int, hidden: int = 50, depth: int = 3, n_freq: int = 8):
        super().__init__()
        self.dim, self.T, self.n_freq = int(dim), int(T), int(n_freq)
        layers, width = [], self.dim + 2 * self.n_freq + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, self.dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_t: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        u = torch.as_tensor(t, dtype=torch.float32, device=x_t.device).reshape(-1, 1) / self.T
        u = u.expand(x_t.shape[0], 1)
        k = torch.arange(1, self.n_freq + 1, dtype=torch.float32, device=x_t.device) * math.pi
        feats = [2.0 * x_t.float() - 1.0, u, torch.sin(k * u), torch.cos(k * u)]
        return self.mlp(torch.cat(feats, dim=1))

    def reverse(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """``f(x^t, t) = p(x^{t-1} = 1 | x^t)``, float64."""
        p_x0 = torch.sigmoid(self(x_t, t).to(torch.float64))
        return x0_reverse(p_x0, x_t, t, self.T)


class ExactProductReverse:
    """The exact reverse ``q(x^{t-1} = 1 | x^t)`` of data ``x^0 ~ prod_i B(p_i)``, for tests and references."""

    def __init__(self, p: torch.Tensor, T: int):
        self.p, self.T = torch.as_tensor(p, dtype=torch.float64), int(T)

    def __call__(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        x_t = x_t.to(torch.float64)
        l1 = torch.where(x_t > 0.5, forward_marginal(torch.ones(()), t, self.T),
                         1 - forward_marginal(torch.ones(()), t, self.T))
        l0 = torch.where(x_t > 0.5, forward_marginal(torch.zeros(()), t, self.T),
                         1 - forward_marginal(torch.zeros(()), t, self.T))
        post1 = self.p * l1 / (self.p * l1 + (1 - self.p) * l0)  # q(x0 = 1 | x^t), bit by bit
        return x0_reverse(post1, x_t, t, self.T)

    def entropy(self) -> float:
        """``H(X^0) = -sum_i [p_i log p_i + (1 - p_i) log(1 - p_i)]`` in nats."""
        return float(_bernoulli_entropy(self.p).sum())


def _bernoulli_entropy(p: torch.Tensor) -> torch.Tensor:
    p = torch.as_tensor(p, dtype=torch.float64)
    return -(torch.xlogy(p, p) + torch.xlogy(1 - p, 1 - p))


def _bernoulli_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``KL(B(a) || B(b))`` per element, ``0 log 0 = 0``, ``b`` clamped to ``[eps, 1 - eps]``."""
    b = b.clamp(_EPS, 1 - _EPS)
    return torch.xlogy(a, a) - a * torch.log(b) + torch.xlogy(1 - a, 1 - a) - (1 - a) * torch.log1p(-b)


def diffuse(x0: torch.Tensor, t: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """A draw of ``x^t ~ q(x^t | x^0)`` (float64 0/1), from ``generator``."""
    u = torch.rand(x0.shape, generator=generator, dtype=torch.float64, device=generator.device).to(x0.device)
    return (u < forward_marginal(x0, t, T)).to(torch.float64)


def _log_bernoulli(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(_EPS, 1 - _EPS)
    return (x * torch.log(p) + (1 - x) * torch.log1p(-p)).flatten(1).sum(1)


@torch.no_grad()
def binomial_bound(reverse: Reverse, x0: torch.Tensor, T: int, *, generator: torch.Generator,
                   n_noise: int = 1) -> BoundResult:
    """Sohl-Dickstein eq. 14 for the binomial kernel: ``K = -sum_{t=2}^T KL_t + log p(x^0|x^1) - KL(q(x^T|x^0)||pi)``.

    Every step is summed exactly; ``x^t ~ q(x^t | x^0)`` is drawn ``n_noise`` times per step
    (the standard error over draws is returned for ``n_noise >= 2``). Values in nats; the
    result is a bound on the log-*mass* of the binary vector (no dequantization needed).
    """
    start = time.perf_counter()
    x0 = x0.to(torch.float64)
    B, d = x0.shape[0], int(x0[0].numel())
    kl = torch.zeros(n_noise, B, T - 1, dtype=torch.float64)
    dec = torch.zeros(n_noise, B, dtype=torch.float64)
    for k in range(n_noise):
        for t in range(2, T + 1):
            x_t = diffuse(x0, t, T, generator)
            q = forward_posterior(x_t, x0, t, T)
            kl[k, :, t - 2] = _bernoulli_kl(q, reverse(x_t, t).to(torch.float64)).flatten(1).sum(1).cpu()
        x_1 = diffuse(x0, 1, T, generator)
        dec[k] = -_log_bernoulli(x0, reverse(x_1, 1).to(torch.float64)).cpu()
    prior = _bernoulli_kl(forward_marginal(x0, T, T), torch.full_like(x0, 0.5)).flatten(1).sum(1).cpu()
    total = -(prior + dec + kl.sum(2))
    stderr = (total.std(0) / math.sqrt(n_noise)).numpy() if n_noise >= 2 else None
    return BoundResult(method="binomial-bound", values=total.mean(0).numpy(), stderr=stderr,
                       nfe=T * n_noise, wall_s=time.perf_counter() - start, dim=d,
                       info={"T": T, "n_noise": n_noise}, prior=prior.numpy(), decoder=dec.mean(0).numpy(),
                       steps=np.arange(2, T + 1), kl=kl.mean(0).numpy())


def binomial_loss(net: FlipRateNet, x0: torch.Tensor, *, generator: torch.Generator,
                  ce_weight: float = 1.0) -> torch.Tensor:
    """``-K`` estimated with one uniform step per sample (``T`` times its term), plus ``ce_weight`` times
    the cross-entropy of ``p_hat(x^0 | x^t)`` (the auxiliary loss of Austin et al. 2021, eq. 5), mean per sample."""
    T = net.T
    t = int(torch.randint(1, T + 1, (1,), generator=generator, device=generator.device))
    x_t = diffuse(x0, t, T, generator)
    logits = net(x_t, t)
    p_x0 = torch.sigmoid(logits.to(torch.float64))
    if t == 1:
        term = -_log_bernoulli(x0.to(torch.float64), p_x0)
    else:
        q = forward_posterior(x_t, x0, t, T)
        term = _bernoulli_kl(q, x0_reverse(p_x0, x_t, t, T)).flatten(1).sum(1)
    ce = nn.functional.binary_cross_entropy_with_logits(logits, x0.float(), reduction="none").sum(1)
    return (T * term).mean() + ce_weight * ce.mean()


@torch.no_grad()
def sample_binomial(reverse: Reverse, n: int, dim: int, T: int, generator: torch.Generator) -> torch.Tensor:
    """Ancestral sampling: ``x^T ~ B(0.5)``, then ``x^{t-1} ~ B(f(x^t, t))`` down to ``t = 1``; float64 0/1 ``(n, dim)``."""
    device = generator.device
    x = (torch.rand((n, dim), generator=generator, dtype=torch.float64, device=device) < 0.5).to(torch.float64)
    for t in range(T, 0, -1):
        f = reverse(x, t).to(torch.float64)
        x = (torch.rand(x.shape, generator=generator, dtype=torch.float64, device=device) < f).to(torch.float64)
    return x


def binomial_entropy_diagnostics(T: int) -> EntropyDiagnostics:
    """Eq. 24 per bit: ``H_q(X^t|X^0) = h((1 - a_t)/2)``, bounds from ``h(beta_t/2)``, ``h`` the binary entropy."""
    betas = binomial_betas(T)
    a = torch.tensor([keep_factor(t, T) for t in range(0, T + 1)], dtype=torch.float64)
    h_t0 = _bernoulli_entropy(0.5 * (1 - a[1:]))
    h_prev0 = _bernoulli_entropy(0.5 * (1 - a[:-1]))
    upper = _bernoulli_entropy(0.5 * betas)
    return EntropyDiagnostics(t=np.arange(1, T + 1), entropy_given_x0=h_t0.numpy(),
                              reverse_lower=(upper + h_prev0 - h_t0).numpy(), reverse_upper=upper.numpy())
