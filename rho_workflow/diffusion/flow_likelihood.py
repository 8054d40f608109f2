"""Exact log-density by the probability-flow ODE (Song et al. 2021, app. D), in float64 with scipy.

In the VE view the probability-flow ODE is ``dx/dsigma = (x - D(x, sigma))/sigma``
(Karras et al. 2022, eq. 4 with ``sigma(t) = t``). In ``lambda = log sigma`` it reads
``dx/dlambda = f(x, sigma) = x - D(x, sigma)``, smooth down to ``sigma -> 0``, and the
instantaneous change of variables (Chen et al. 2018, Thm. 1) gives::

    log p_{sigma_min}(x) = log N(x(sigma_max); 0, (1 + sigma_max^2) I)
                           + int_{log sigma_min}^{log sigma_max} div_x f(x(lambda), e^lambda) dlambda,

with ``x(sigma_min) = x``. The prior is the VP ``N(0, I)`` of the samplers
(:func:`~rho_workflow.diffusion.samplers.prior`). The result is the density of the data
smoothed by ``N(0, sigma_min^2 I)``, which equals the data density up to
``O(sigma_min^2 / lambda_min)`` per dimension (``lambda_min`` the smallest data variance);
the default ``sigma_min = 1e-4`` keeps that below ``1e-7`` for unit-variance data.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch
from scipy.integrate import solve_ivp

from rho_workflow.diffusion.likelihood import LogProb, _weights
from rho_workflow.diffusion.schedules import NoiseSchedule
from rho_workflow.errors import RhoWorkflowError

__all__ = ["ode_log_prob", "ODEIntegrationError", "EXACT_DIVERGENCE_MAX_DIM"]

EXACT_DIVERGENCE_MAX_DIM = 32
Denoise = Callable[..., torch.Tensor]


class ODEIntegrationError(RhoWorkflowError, RuntimeError):
    """The probability-flow ODE did not reach its tolerance; no value is returned."""


class _Budget(Exception):
    pass


def _divergence(v: torch.Tensor, x: torch.Tensor, probes: torch.Tensor | None) -> torch.Tensor:
    """``div_x v`` by autograd: exact (one backward pass per dimension) or Hutchinson per probe.

    Exact returns ``(B, 1)``; Hutchinson (Hutchinson 1989; Grathwohl et al. 2019)
    ``e^T (dv/dx) e`` for each Rademacher probe ``e``, shape ``(B, P)``.
    """
    if probes is None:
        flat_v = v.flatten(1)
        cols = []
        for i in range(flat_v.shape[1]):
            (g,) = torch.autograd.grad(flat_v[:, i].sum(), x, retain_graph=True)
            cols.append(g.flatten(1)[:, i])
        return torch.stack(cols, 1).sum(1, keepdim=True)
    out = []
    for p in range(probes.shape[1]):
        e = probes[:, p]
        (g,) = torch.autograd.grad((v * e).sum(), x, retain_graph=p < probes.shape[1] - 1)
        out.append((g * e).flatten(1).sum(1))
    return torch.stack(out, 1)


def _rhs_factory(denoiser: Denoise, shape: tuple[int, ...], cond: torch.Tensor | None, w: torch.Tensor,
                 probes: torch.Tensor | None, device: torch.device, max_nfe: int, counter: list[int],
                 reached: list[float]) -> Callable[[float, np.ndarray], np.ndarray]:
    """``d[x, logdet]/dlambda = [f, div f]`` with ``f = (x - D(x, e^lambda)) * mask`` on flat float64 state."""
    n_x = int(np.prod(shape))

    def rhs(lam: float, y: np.ndarray) -> np.ndarray:
        if counter[0] >= max_nfe:
            raise _Budget()
        counter[0] += 1
        reached[0] = max(reached[0], lam)
        x = torch.from_numpy(y[:n_x].reshape(shape)).to(device).requires_grad_(True)
        sigma = torch.full((shape[0],), math.exp(lam), dtype=torch.float64, device=device)
        with torch.enable_grad():
            v = (x - denoiser(x, sigma, cond).to(torch.float64)) * w
            div = _divergence(v, x, probes)
        out = np.concatenate([v.detach().cpu().numpy().ravel(), div.detach().cpu().numpy().ravel()])
        if not np.isfinite(out).all():
            raise ODEIntegrationError(what=f"the ODE's vector field is not finite at sigma={math.exp(lam):.4g}",
                                      where="ode_log_prob", rule="the denoiser must return finite values",
                                      fix="check the model and its inputs (NaN in the fields or the weights)")
        return out

    return rhs


def _probes(x: torch.Tensor, w: torch.Tensor, n_probes: int, generator: Any) -> torch.Tensor:
    """Rademacher probes ``(B, P, ...)`` from the per-sample generator, zero at masked elements."""
    if generator is None:
        raise ValueError("Hutchinson's estimator draws random probes and needs a generator; pass "
                         "generator=BatchGenerator(seeds) with one seed per sample")
    if int(n_probes) < 1:
        raise ValueError(f"n_probes must be an integer >= 1, got {n_probes}")
    z = generator.randn((int(n_probes), *x.shape[1:]), dtype=torch.float64).to(x.device)
    return torch.sign(z) * w.unsqueeze(1)


def _solve(rhs: Callable, y0: np.ndarray, lam_span: tuple[float, float], rtol: float, atol: float,
           solver: str, counter: list[int], reached: list[float], max_nfe: int):
    """``solve_ivp`` with the failures turned into :class:`ODEIntegrationError` (never a silent value)."""
    try:
        sol = solve_ivp(rhs, lam_span, y0, method=solver, rtol=rtol, atol=atol)
    except _Budget:
        raise ODEIntegrationError(
            what=f"the ODE used its budget of {max_nfe} evaluations and reached only "
                 f"sigma={math.exp(reached[0]):.4g} of sigma_max={math.exp(lam_span[1]):.4g}",
            where="ode_log_prob", rule=f"rtol={rtol}, atol={atol} must be met within max_nfe",
            fix="raise max_nfe, or loosen rtol/atol (the error then grows with them)") from None
    if sol.status != 0:
        raise ODEIntegrationError(
            what=f"the ODE integrator stopped at sigma={math.exp(sol.t[-1]):.4g} "
                 f"(of {math.exp(lam_span[1]):.4g}): {sol.message}",
            where="ode_log_prob", rule=f"reach rtol={rtol}, atol={atol} over the whole interval",
            fix="loosen rtol/atol, or use solver='LSODA' or 'Radau' for a stiff model")
    return sol


def _values(y1: np.ndarray, shape: torch.Size, w: torch.Tensor, d: int, n_acc: int,
            sigma_max: float) -> tuple[np.ndarray, np.ndarray | None]:
    """``log N(x(sigma_max); 0, (1 + sigma_max^2) I) + int div f`` per sample, and the standard error over probes."""
    n_x = int(np.prod(shape))
    x_end = torch.from_numpy(y1[:n_x].reshape(shape))
    var = 1.0 + sigma_max ** 2
    log_prior = (-0.5 * (x_end ** 2 * w).flatten(1).sum(1) / var - 0.5 * d * math.log(2 * math.pi * var)).numpy()
    acc = y1[n_x:].reshape(shape[0], n_acc)
    stderr = acc.std(1, ddof=1) / math.sqrt(n_acc) if n_acc >= 2 else None
    return log_prior + acc.mean(1), stderr


def ode_log_prob(denoiser: Denoise, schedule: NoiseSchedule, x: torch.Tensor, cond: torch.Tensor | None = None, *,
                 sigma_min: float = 1e-4, sigma_max: float | None = None, rtol: float = 1e-5,
                 atol: float = 1e-5, solver: str = "RK45", divergence: str = "auto", n_probes: int = 1,
                 generator: Any = None, mask: torch.Tensor | None = None, max_nfe: int = 20000,
                 device: torch.device | str | None = None) -> LogProb:
    """Song et al. 2021, app. D: ``log p(x) = log p_T(x(T)) + int div f``, float64, ``scipy.integrate.solve_ivp``.

    Parameters
    ----------
    denoiser, schedule, x, cond
        The denoiser ``D(x, sigma, cond)``, the schedule (its ``sigma_max`` by default ends
        the integration), data ``(B, ...)`` and condition.
    sigma_min, sigma_max : float
        The integration runs in ``log sigma`` from ``sigma_min`` (the data end) to
        ``sigma_max`` (default ``schedule.sigma_max``).
    rtol, atol : float
        Tolerances of the solver on the state ``[x, log-det]`` of the whole batch; scipy's
        error norm is the RMS over the batch, so integrate small batches for per-sample control.
    solver : str
        A ``solve_ivp`` method (``RK45``, ``DOP853``, ``LSODA``, ...).
    divergence : {"auto", "exact", "hutchinson"}
        ``auto``: exact (autograd, one backward pass per dimension) for ``d <= 32``, else
        Hutchinson's estimator with ``n_probes`` fixed Rademacher probes per sample (drawn
        by ``generator``); the standard error over probes is returned.
    mask : Tensor of bool, optional
        Valid elements (True); masked elements stay fixed and do not count.
    max_nfe : int
        Budget of ODE evaluations; exceeding it raises :class:`ODEIntegrationError`.

    Returns
    -------
    LogProb
        ``values`` in nats, ``nfe`` ODE evaluations (each one batched denoiser call plus one
        backward pass per dimension or probe), ``wall_s`` and the settings in ``info``.
    """
    start = time.perf_counter()
    device = torch.device(device) if device is not None else x.device
    x = x.to(device, torch.float64)
    w = _weights(mask, x)
    d = int(w.expand_as(x[:1]).sum())
    sigma_max = float(schedule.sigma_max if sigma_max is None else sigma_max)
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"ode_log_prob needs 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}")
    if divergence not in ("auto", "exact", "hutchinson"):
        raise ValueError(f"unknown divergence {divergence!r}; valid choices are ['auto', 'exact', 'hutchinson']")
    exact = divergence == "exact" or (divergence == "auto" and d <= EXACT_DIVERGENCE_MAX_DIM)
    probes = None if exact else _probes(x, w, n_probes, generator)
    n_acc = 1 if exact else probes.shape[1]
    counter, reached = [0], [math.log(sigma_min)]
    rhs = _rhs_factory(denoiser, tuple(x.shape), cond, w, probes, device, max_nfe, counter, reached)
    y0 = np.concatenate([(x * w).cpu().numpy().ravel(), np.zeros(x.shape[0] * n_acc)])
    sol = _solve(rhs, y0, (math.log(sigma_min), math.log(sigma_max)), rtol, atol, solver, counter, reached, max_nfe)
    values, stderr = _values(sol.y[:, -1], x.shape, w.cpu(), d, n_acc, sigma_max)
    return LogProb(method="ode-exact" if exact else "ode-hutchinson", values=values, stderr=stderr,
                   nfe=counter[0], wall_s=time.perf_counter() - start, dim=d,
                   info={"rtol": rtol, "atol": atol, "solver": solver, "sigma_min": sigma_min,
                         "sigma_max": sigma_max, "n_probes": None if exact else n_acc,
                         "backward_passes_per_eval": d if exact else n_acc, "status": sol.message})
