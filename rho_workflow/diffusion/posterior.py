"""Posterior sampling: fields conditioned on observations, through one wrapped denoiser.

Sohl-Dickstein et al. 2015 (sec. 2.5, app. C) multiply the model ``p(x0)`` by a second
distribution ``r(x0)`` and sample the product. Every sampler of :mod:`.samplers` integrates
the score of the noisy marginals, and the score of the *conditioned* marginals
``p(x_t | y)`` is ``(E[x0 | x_t, y] - x_t) / sigma^2`` (Tweedie's formula holds for the
conditioned process as well, because the noise ``x_t - x0`` is independent of ``y``). So a
conditioned sampler is any sampler run with the conditioned denoiser
``D_y(x_t) = E[x0 | x_t, y]``; :class:`ObservedDenoiser` computes it and every sampler takes
it unchanged.

Linear Gaussian observations ``y = A x0 + e``, ``e ~ N(0, R)`` (``R`` diagonal), cover
inpainting (``A`` selects the known cells, ``R = 0``), denoising (``A = I``, ``R = s^2 I``)
and point observations (``A`` interpolates the grid at the stations). With ``p(x0 | x_t)``
approximated by the Gaussian of its first two moments -- ``D(x_t)`` and, by the second-order
Tweedie formula, ``Cov[x0 | x_t] = sigma^2 dD/dx_t`` -- the conditioned denoiser is the
Gaussian update

    D_y = D + sigma^2 J A^T (sigma^2 A J A^T + R)^{-1} (y - A D),      J = dD/dx_t,

(the "Tweedie moment projection" of Boys et al. 2023, and PiGDM of Song et al. 2023 with the
full covariance). **Approximation:** ``p(x0 | x_t)`` is taken as Gaussian; for Gaussian data
(where it is Gaussian) and an exact denoiser the update is exact, and the conditioned samples
follow the exact conditional Gaussian up to the sampler's discretization (tested). The linear
system is solved matrix-free by conjugate gradients; each iteration is one vector-Jacobian
product (``J^T u``; ``J`` is symmetric for an exact denoiser, being ``sigma^2`` times the
Hessian of ``log p(x_t)`` plus the identity).

A general differentiable ``log r(x0)`` is taken in the perturbation form of Sohl-Dickstein
et al. 2015 (app. C, eq. 22): when ``r`` is smooth on the scale of the kernel's spread, the
product of a Gaussian ``N(mu, Sigma)`` with ``r`` is the Gaussian of mean
``mu + Sigma grad log r(mu)``. Applied to ``p(x0 | x_t) ~ N(D, r_t^2 I)`` with the isotropic
spread ``r_t^2 = sigma^2 sigma_data^2 / (sigma^2 + sigma_data^2)`` (that of Gaussian data of
variance ``sigma_data^2``, as in PiGDM), ``D_r = D + r_t^2 grad log r(D)``, damped by the
curvature ``h`` of ``log r`` along its gradient to ``r_t^2 g / (1 - r_t^2 h)`` so that a sharp
``r`` does not overshoot (one Hessian-vector product of ``log r``; no backward pass through
the network). **Approximation:** ``p(x0 | x_t)`` isotropic with the spread of Gaussian data,
and ``log r`` locally quadratic along its gradient; exact as ``sigma -> 0`` for any smooth
``r``. For a Gaussian ``r`` of a linear map use a linear observation, which uses the model's
own covariance and is exact for Gaussian data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from rho_workflow.diffusion.precond import batch_sigma

__all__ = ["LinearObservation", "ObservedDenoiser", "observed"]

Denoise = Callable[..., torch.Tensor]
LogR = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True, eq=False)
class LinearObservation:
    """``y = A x + e`` with ``e ~ N(0, diag(std^2))`` on the flattened normalized sample.

    Row ``j`` of ``A`` has the non-zero entries ``weight[j, k]`` at the flat indices
    ``index[j, k]`` of one sample ``x.flatten()`` (so inpainting and denoising rows have one
    entry of weight 1, point rows the ``2^d`` multilinear interpolation weights).

    Attributes
    ----------
    index : LongTensor (m, K)
    weight : Tensor (m, K), float64
    values : Tensor (m,), float64
        The observed values ``y``, shared by every sample of the batch.
    std : Tensor (m,), float64
        Standard deviation of each row's error; 0 holds the value fixed (a known region).
    """

    index: torch.Tensor
    weight: torch.Tensor
    values: torch.Tensor
    std: torch.Tensor
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        m = self.values.shape[0]
        if self.index.ndim != 2 or self.index.shape != self.weight.shape or self.index.shape[0] != m:
            raise ValueError(f"observation: index {tuple(self.index.shape)} and weight "
                             f"{tuple(self.weight.shape)} must both be (m, K) with m = {m} values")
        if self.std.shape != (m,):
            raise ValueError(f"observation: std has shape {tuple(self.std.shape)}; expected ({m},)")
        if not bool(torch.isfinite(self.values).all() and torch.isfinite(self.std).all()):
            raise ValueError("observation: values and errors must be finite")
        if bool((self.std < 0).any()):
            raise ValueError("observation: error standard deviations must be >= 0")

    @classmethod
    def build(cls, index: Any, weight: Any, values: Any, std: Any, **info: Any) -> "LinearObservation":
        """From array-likes; ``index`` and ``weight`` of shape ``(m,)`` mean one entry per row."""
        idx = torch.as_tensor(index, dtype=torch.long)
        w = torch.as_tensor(weight, dtype=torch.float64)
        if idx.ndim == 1:
            idx, w = idx[:, None], w.reshape(-1, 1)
        vals = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
        s = torch.as_tensor(std, dtype=torch.float64)
        s = s.expand(vals.shape[0]).clone() if s.ndim == 0 else s.reshape(-1)
        return cls(idx, w, vals, s, dict(info))

    @classmethod
    def concat(cls, parts: Sequence["LinearObservation"]) -> "LinearObservation":
        """All rows of ``parts`` in one observation (rows padded to the widest ``K`` with weight 0)."""
        k = max(p.index.shape[1] for p in parts)
        pad = lambda t, v: torch.nn.functional.pad(t, (0, k - t.shape[1]), value=v)  # noqa: E731
        return cls(torch.cat([pad(p.index, 0) for p in parts]), torch.cat([pad(p.weight, 0.0) for p in parts]),
                   torch.cat([p.values for p in parts]), torch.cat([p.std for p in parts]),
                   {"parts": [p.info for p in parts]})

    @property
    def m(self) -> int:
        return int(self.values.shape[0])

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for a batch ``x`` of shape ``(B, ...)``: shape ``(B, m)``."""
        flat = x.reshape(x.shape[0], -1)
        idx, w = self.index.to(x.device), self.weight.to(x.device, x.dtype)
        return (flat[:, idx] * w).sum(-1)

    def adjoint(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``A^T v`` for ``v`` of shape ``(B, m)``, shaped like ``like``."""
        idx, w = self.index.to(v.device), self.weight.to(v.device, v.dtype)
        out = torch.zeros(v.shape[0], like[0].numel(), dtype=v.dtype, device=v.device)
        out.index_add_(1, idx.reshape(-1), (v[:, :, None] * w).reshape(v.shape[0], -1))
        return out.reshape(like.shape)

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``log N(y; A x, R)`` per sample (rows with ``std = 0`` are left out), nats."""
        keep = self.std > 0
        r = (self.values.to(x) - self.apply(x))[:, keep]
        s = self.std.to(x)[keep]
        return -0.5 * ((r / s) ** 2 + torch.log(2 * torch.pi * s ** 2)).sum(-1)


class ObservedDenoiser:
    """``D_y(x_t) = E[x0 | x_t, y]`` of a denoiser ``D`` and observations (see the module docstring).

    Parameters
    ----------
    denoiser : callable
        ``D(x, sigma, cond) -> x0_hat``, differentiable in ``x``.
    observation : LinearObservation, optional
        Linear Gaussian observations (inpainting, denoising, points), in normalized units.
    log_r : callable, optional
        ``log r(x0) -> (B,)``, differentiable; added in the perturbation form (eq. 22).
    cg_iters : int
        Most conjugate-gradient iterations per call (one vector-Jacobian product each).
    cg_tol : float
        Stop when the residual norm falls below ``cg_tol`` times that of ``y - A D``.

    After each call ``last_cg`` holds ``(iterations, relative residual)`` of the solve.
    """

    def __init__(self, denoiser: Denoise, observation: LinearObservation | None = None,
                 log_r: LogR | None = None, *, cg_iters: int = 20, cg_tol: float = 1e-5):
        if observation is None and log_r is None:
            raise ValueError("ObservedDenoiser needs an observation, a log_r, or both")
        if int(cg_iters) < 1 or not float(cg_tol) > 0:
            raise ValueError(f"cg_iters must be >= 1 and cg_tol > 0, got {cg_iters} and {cg_tol}")
        self.denoiser, self.observation, self.log_r = denoiser, observation, log_r
        self.cg_iters, self.cg_tol = int(cg_iters), float(cg_tol)
        self.last_cg: tuple[int, float] = (0, 0.0)
        self.vjp_calls = 0

    def __getattr__(self, name: str) -> Any:  # prediction, sigma_data, ... of the wrapped denoiser
        if name == "denoiser":
            raise AttributeError(name)
        return getattr(self.denoiser, name)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float,
                 cond: torch.Tensor | None = None) -> torch.Tensor:
        s2 = _bcast(batch_sigma(sigma, x).to(torch.float64) ** 2, x)
        with torch.enable_grad():
            xg = x.detach().to(torch.float64).requires_grad_(True)
            d = self.denoiser(xg, sigma, cond).to(torch.float64)
            out = d.detach()
            if self.observation is not None:
                out = out + s2 * self._gaussian_update(xg, d, s2)
            if self.log_r is not None:
                sd2 = float(getattr(self.denoiser, "sigma_data", 1.0)) ** 2
                out = out + _perturbation_step(self.log_r, d.detach(), s2 * sd2 / (s2 + sd2))
        return out.to(x.dtype)

    def _vjp(self, xg: torch.Tensor, d: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``J^T u`` with ``J = dD/dx`` (one backward pass through the network)."""
        self.vjp_calls += 1
        (g,) = torch.autograd.grad(d, xg, grad_outputs=u, retain_graph=True)
        return g

    def _gaussian_update(self, xg: torch.Tensor, d: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
        """``J A^T v`` with ``(sigma^2 A J A^T + R) v = y - A D``, solved by conjugate gradients."""
        obs = self.observation
        noise_var = (obs.std.to(d) ** 2)[None, :]
        s2_rows = s2.reshape(-1, 1)
        jitter = 1e-12 * s2_rows  # keeps a hard constraint (R = 0) on repeated rows positive definite

        def matvec(v: torch.Tensor) -> torch.Tensor:
            return s2_rows * obs.apply(self._vjp(xg, d, obs.adjoint(v, d))) + (noise_var + jitter) * v

        b = obs.values.to(d)[None, :] - obs.apply(d.detach())
        v, iters, rel = _conjugate_gradients(matvec, b, self.cg_iters, self.cg_tol)
        self.last_cg = (iters, rel)
        return self._vjp(xg, d, obs.adjoint(v, d)).detach()


def _perturbation_step(log_r: LogR, d: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """``r_t^2 g / (1 - r_t^2 h)``: eq. 22's shift ``r_t^2 grad log r``, damped by the curvature
    ``h = u^T H u`` of ``log r`` along ``u = g/|g|`` (exact product mean for a quadratic ``log r``
    whose gradient is an eigenvector of its Hessian; ``h > 0`` is not used to amplify)."""
    d0 = d.requires_grad_(True)
    (g,) = torch.autograd.grad(log_r(d0).sum(), d0, create_graph=True)
    flat = g.detach().flatten(1)
    u = (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-300)).reshape(g.shape)
    (hu,) = torch.autograd.grad((g * u).sum(), d0, allow_unused=True)
    h = torch.zeros(g.shape[0], dtype=g.dtype) if hu is None else (hu * u).flatten(1).sum(1)
    r2_rows = r2.reshape(-1)
    scale = r2_rows / (1.0 - r2_rows * h.detach().clamp(max=0.0))
    return _bcast(scale, g) * g.detach()


def _conjugate_gradients(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                         tol: float) -> tuple[torch.Tensor, int, float]:
    """Batched CG for ``M v = b`` (one system per row of ``b``), returning each row's best iterate.

    A row stops at ``p^T M p <= 0`` (truncated CG) or at the tolerance. ``M`` comes from a
    learned network's Jacobian, which is only approximately symmetric positive definite (least
    so at the highest noise levels), so the residual need not fall monotonically: each row
    keeps the iterate of smallest residual seen, starting from ``v = 0`` (residual ``b``), so
    the correction never makes the fit to the observations worse than none.
    """
    v = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = (r * r).sum(1)
    b_norm = rr.sqrt().clamp_min(torch.finfo(b.dtype).tiny)
    best_v, best_rr = v.clone(), rr.clone()
    active = torch.ones_like(rr, dtype=torch.bool)
    done = 0
    for done in range(1, iters + 1):
        mp = matvec(p)
        curv = (p * mp).sum(1)
        active = active & (curv > 0)  # truncated CG: a non-positive curvature ends that row's solve
        alpha = torch.where(active, rr / curv.where(active, torch.ones_like(curv)), torch.zeros_like(rr))
        v = v + alpha[:, None] * p
        r = r - alpha[:, None] * mp
        rr_new = (r * r).sum(1)
        better = active & (rr_new < best_rr)
        best_v = torch.where(better[:, None], v, best_v)
        best_rr = torch.where(better, rr_new, best_rr)
        active = active & (rr_new.sqrt() > tol * b_norm)
        if not bool(active.any()):
            break
        p = r + (rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny))[:, None] * p
        rr = rr_new
    rel = float((best_rr.sqrt() / b_norm).max())
    return best_v, done, rel


def observed(denoiser: Denoise, observation: LinearObservation | None = None, log_r: LogR | None = None,
             **options: Any) -> Denoise:
    """``denoiser`` conditioned on ``observation`` and/or ``log_r``; unchanged when both are None."""
    if observation is None and log_r is None:
        return denoiser
    return ObservedDenoiser(denoiser, observation, log_r, **options)


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))
