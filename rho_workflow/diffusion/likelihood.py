"""Probabilities of data under a Gaussian diffusion: the bound K and its diagnostics.

Functions over a denoiser ``D(x, sigma, cond) -> x0_hat`` (:mod:`.precond`) and a
:class:`~rho_workflow.diffusion.schedules.NoiseSchedule`, on plain tensors; no files, units
or Dask. The discrete-time chain is the VP chain of the schedule's ``betas``
(``q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)``), written in the VE view
``x_t = x0 + sigma_t n`` (``alpha_bar = 1/(1 + sigma^2)``); KL divergences are invariant
under that common rescaling, so the terms are those of the VP chain.

* :func:`variational_bound` -- K of Sohl-Dickstein et al. 2015 eq. 14, in the grouping of
  Ho et al. 2020 eq. 5: ``K = -L_T - sum_{t=2}^T L_{t-1} - L_0``, each term per sample.
* :func:`~rho_workflow.diffusion.flow_likelihood.ode_log_prob` -- the exact log-density of the
  probability-flow ODE (Song et al. 2021, app. D).
* :func:`log_prob` -- the one entry point, ``method="bound" | "ode"``.
* :func:`gaussian_entropy_diagnostics` -- ``H_q(X^t|X^0)`` and the eq. 24 bounds per step.

Discrete data (dequantization convention): data on a lattice of spacing ``Delta`` per
dimension (``Delta = 1`` for integer counts) has a probability mass, not a density. Add
``u ~ U(-Delta/2, Delta/2)^d`` (:func:`dequantize`) and use
``log P(bin of x) >= E_u[log p(x + u)] + d log Delta`` (Theis et al. 2016, eq. 9), i.e. report
``log_prob(x + u) + dequantization_offset(Delta, d)``. Binary data are better modelled by the
binomial diffusion of :mod:`.binomial`, whose K is a bound on the mass itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch

from rho_workflow.diffusion.schedules import NoiseSchedule

__all__ = ["LogProb", "BoundResult", "EntropyDiagnostics", "variational_bound", "log_prob",
           "null_log_prob", "to_unit", "gaussian_entropy_diagnostics", "dequantize",
           "dequantization_offset", "UNITS", "VARIANCES"]

UNITS = ("nats", "bits", "bits_per_dim")
VARIANCES = ("beta_tilde", "beta")
Denoise = Callable[..., torch.Tensor]


@dataclass(frozen=True, eq=False)
class LogProb:
    """Per-sample log-probabilities with their method, cost and error estimate.

    Attributes
    ----------
    method : str
        ``"bound"``, ``"bound-mc-t"`` (Monte-Carlo over steps), ``"ode-exact"`` or
        ``"ode-hutchinson"`` (the divergence estimator).
    values : ndarray (B,)
        Log-probability in nats per sample (the bound K for the bound methods).
    stderr : ndarray (B,) or None
        Standard error of each value from its Monte-Carlo parts (noise draws, steps or
        Hutchinson probes); None where the value has none or it cannot be estimated.
    nfe : int
        Network (denoiser) evaluations each sample went through.
    wall_s : float
        Wall time of the whole batch, seconds.
    dim : int
        Number of (valid) dimensions of one sample, for per-dimension values.
    info : dict
        Method settings (tolerances, probes, noise levels, integrator status).
    """

    method: str
    values: np.ndarray
    stderr: np.ndarray | None
    nfe: int
    wall_s: float
    dim: int
    info: Mapping[str, Any] = field(default_factory=dict)

    def to(self, unit: str) -> np.ndarray:
        """The values in ``unit`` (``nats``, ``bits`` or ``bits_per_dim``)."""
        return to_unit(self.values, unit, self.dim)


@dataclass(frozen=True, eq=False)
class BoundResult(LogProb):
    """The bound K and its terms, each in nats per sample (Ho et al. 2020, eq. 5).

    Attributes
    ----------
    prior : ndarray (B,)
        ``L_T = KL(q(x_T | x0) || N(0, I))`` (VP prior).
    decoder : ndarray (B,)
        ``L_0 = -log p(x0 | x_1)``, a Gaussian decoder of mean ``D(x_1)`` and variance
        ``beta_1`` (the reverse variance of Ho et al. at ``t = 1`` for both choices).
    steps : ndarray (S,) int
        The 1-based steps ``t`` of the KL terms (``2..T``, or the sampled ones).
    kl : ndarray (B, S)
        ``L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))`` at each of ``steps``.
    """

    prior: np.ndarray = None
    decoder: np.ndarray = None
    steps: np.ndarray = None
    kl: np.ndarray = None


def to_unit(nats: np.ndarray, unit: str, dim: int) -> np.ndarray:
    """Nats to ``bits`` (``/ ln 2``) or ``bits_per_dim`` (``/ (dim ln 2)``)."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; valid units are {list(UNITS)}")
    values = np.asarray(nats, dtype=np.float64)
    if unit == "nats":
        return values
    return values / math.log(2.0) / (dim if unit == "bits_per_dim" else 1)


def null_log_prob(x: torch.Tensor, mean: float = 0.0, std: float = 1.0,
                  mask: torch.Tensor | None = None) -> np.ndarray:
    """``log pi(x)`` of the isotropic Gaussian null ``N(mean, std^2 I)`` (L_null of Sohl-Dickstein Table 1)."""
    if not std > 0:
        raise ValueError(f"null model: std must be > 0, got {std}")
    w = _weights(mask, x)
    z2 = (((x.to(torch.float64) - mean) / std) ** 2 * w).flatten(1).sum(1)
    d = w.expand_as(x).flatten(1).sum(1)
    return (-0.5 * z2 - d * (0.5 * math.log(2 * math.pi) + math.log(std))).cpu().numpy()


def dequantize(x: torch.Tensor, bin_width: float, generator: torch.Generator) -> torch.Tensor:
    """``x + u``, ``u ~ U(-Delta/2, Delta/2)`` per element (uniform dequantization, Theis et al. 2016)."""
    if not bin_width > 0:
        raise ValueError(f"dequantize: bin_width must be > 0 (the lattice spacing), got {bin_width}")
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return x.to(torch.float64) + (u.to(x.device) - 0.5) * bin_width


def dequantization_offset(bin_width: float, dim: int) -> float:
    """``d log Delta``: add it to the log-density of dequantized data for a bound on the log-mass."""
    return float(dim) * math.log(bin_width)


# -- the bound K ------------------------------------------------------------------------------

def _weights(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Float64 weights (1 = valid element) broadcastable to ``x``; ones without a mask."""
    if mask is None:
        return torch.ones((1,) * x.ndim, dtype=torch.float64, device=x.device)
    mask = torch.as_tensor(mask, device=x.device)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (True = valid element), got dtype {mask.dtype}")
    try:
        return mask.to(torch.float64).expand(x.shape[1:]).unsqueeze(0)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to one sample of shape "
                         f"{tuple(x.shape[1:])}") from None


def _reverse_variance(t: float, s: float, variance: str) -> float:
    """VE variance of ``p(x_s | x_t)``: ``beta_tilde`` ``s^2 (t^2 - s^2)/t^2`` or ``beta`` ``(t^2 - s^2)(1 + s^2)/(1 + t^2)``."""
    if variance == "beta_tilde":
        return s * s * (t * t - s * s) / (t * t)
    return (t * t - s * s) * (1 + s * s) / (1 + t * t)


def _step_kl(err2: torch.Tensor, d: torch.Tensor, t: float, s: float, variance: str) -> torch.Tensor:
    """Ho et al. 2020 eq. 5 ``L_{t-1}``: KL of two Gaussians, means ``(1 - s^2/t^2)(x0 - D)`` apart.

    ``q(x_s | x_t, x0)`` has VE variance ``v_q = s^2 (t^2 - s^2)/t^2`` (eq. 7 divided by
    ``alpha_bar_s``); the model ``p`` shares its mean form with ``D`` for ``x0``.
    """
    v_q, v_p = s * s * (t * t - s * s) / (t * t), _reverse_variance(t, s, variance)
    r = v_q / v_p
    return 0.5 * d * (r - 1.0 - math.log(r)) + (1.0 - s * s / (t * t)) ** 2 * err2 / (2.0 * v_p)


def _prior_kl(x0: torch.Tensor, w: torch.Tensor, d: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """``L_T = KL(N(x0, sigma^2 I) || N(0, (1 + sigma^2) I))``, the VP ``KL(q(x_T|x0) || N(0, I))``."""
    r = sigma_max ** 2 / (1.0 + sigma_max ** 2)
    sq = (x0 ** 2 * w).flatten(1).sum(1)
    return 0.5 * d * (r - 1.0 - math.log(r)) + sq / (2.0 * (1.0 + sigma_max ** 2))


def _denoise_error(denoiser: Denoise, x0: torch.Tensor, cond: torch.Tensor | None, w: torch.Tensor,
                   sigma: float, noise: torch.Tensor) -> torch.Tensor:
    """``||x0 - D(x0 + sigma n, sigma, cond)||^2`` over valid elements, float64 ``(B,)``."""
    x = x0 + sigma * noise
    s_in = torch.full((x.shape[0],), sigma, dtype=torch.float64, device=x.device)
    with torch.no_grad():
        x0_hat = denoiser(x, s_in, cond).to(torch.float64)
    return ((x0 - x0_hat) ** 2 * w).flatten(1).sum(1)


def _draws(generator: Any, x0: torch.Tensor, n_noise: int, antithetic: bool = False) -> torch.Tensor:
    """``n_noise`` standard normal draws per sample, shape ``(n_noise, B, ...)``; antithetic: the
    second half is the first half negated."""
    if antithetic:
        half = torch.stack([generator.randn_like(x0) for _ in range(n_noise // 2)]).to(torch.float64)
        return torch.cat([half, -half])
    return torch.stack([generator.randn_like(x0) for _ in range(n_noise)]).to(torch.float64)


def variational_bound(denoiser: Denoise, schedule: NoiseSchedule, x0: torch.Tensor,
                      cond: torch.Tensor | None = None, *, generator: Any, variance: str = "beta",
                      n_noise: int = 1, t_samples: int | None = None,
                      step_generator: torch.Generator | None = None, stratified: bool = False,
                      antithetic: bool = False, mask: torch.Tensor | None = None) -> BoundResult:
    """Sohl-Dickstein et al. 2015 eq. 14, as Ho et al. 2020 eq. 5: ``K = -L_T - sum_t L_{t-1} - L_0``, nats.

    Parameters
    ----------
    denoiser : callable
        ``D(x, sigma, cond) -> x0_hat``; the reverse mean is the posterior mean of Ho et al.
        eq. 7 with ``x0 = D`` (the ``ddpm`` sampler's step).
    schedule : NoiseSchedule
        The ``T`` discrete steps; the prior is ``N(0, I)`` in VP units at ``t = T``.
    x0 : Tensor (B, ...)
        Normalized data.
    generator : BatchGenerator or any object with ``randn_like``
        Draws the noise of ``x_t ~ q(x_t | x0)``, independently at every step.
    variance : {"beta", "beta_tilde"}
        Reverse variance ``sigma_t^2`` (Ho et al. Sec. 3.2); the decoder uses ``beta_1``.
        ``beta`` is the exact reverse variance for unit-variance Gaussian data (normalized
        data) and the true one as ``sigma -> 0`` for any smooth density, so K approaches
        ``log p`` as ``O(1/T)``; ``beta_tilde`` is exact only for a point mass and, with
        schedules whose ``sigma`` grows like ``t`` near 0, leaves a gap that does not vanish.
    n_noise : int
        Noise draws per step; with ``n_noise >= 2`` the standard error of each K is returned.
    t_samples : int, optional
        Monte-Carlo over steps: ``t_samples`` steps drawn uniformly from ``2..T`` (with
        ``step_generator``) estimate the sum; its standard error is returned. Default: the
        exact sum over all ``T`` steps.
    stratified : bool
        With ``t_samples``: one step drawn in each of ``t_samples`` equal strata of ``2..T``
        (unbiased, lower variance; the standard error returned is the conservative one of
        independent draws). With the same ``step_generator`` seed and noise seeds, two
        conditions see the same steps and noise (common random numbers), so differences of
        K across parameters are far less noisy than K itself: what parameter inference needs.
    antithetic : bool
        Pair each noise draw ``n`` with ``-n`` (``n_noise`` even): the term of the error that is
        linear in the noise cancels within each pair (exactly so for a linear denoiser, i.e.
        Gaussian data). The standard error is then taken over the pair means.
    mask : Tensor of bool, optional
        Valid elements of one sample (True); the others do not count.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown reverse variance {variance!r}; valid choices are {list(VARIANCES)}")
    if int(n_noise) < 1:
        raise ValueError(f"n_noise must be an integer >= 1 (noise draws per step), got {n_noise}")
    if antithetic and int(n_noise) % 2:
        raise ValueError(f"antithetic draws come in pairs: n_noise must be even, got {n_noise}")
    start = time.perf_counter()
    x0 = x0.to(torch.float64)
    w = _weights(mask, x0)
    d = w.expand_as(x0).flatten(1).sum(1)
    sig = [float(v) for v in schedule.sigmas]
    steps = _chosen_steps(schedule.T, t_samples, step_generator, stratified)
    kl = _kl_terms(denoiser, x0, cond, w, d, sig, steps, generator, n_noise, variance, antithetic)
    dec, v_dec = _decoder_nll(denoiser, x0, cond, w, d, sig[0], _draws(generator, x0, n_noise, antithetic))
    prior = _prior_kl(x0, w, d, sig[-1])
    scale = (schedule.T - 1) / len(steps) if t_samples else 1.0
    total = -(prior + dec + scale * kl.sum(2))  # (n_noise, B)
    pairs = (lambda v: 0.5 * (v[: v.shape[0] // 2] + v[v.shape[0] // 2:])) if antithetic else (lambda v: v)  # noqa: E731
    stderr = _bound_stderr(pairs(total), pairs(kl), pairs(dec), scale, t_samples)
    return BoundResult(
        method="bound-mc-t" if t_samples else "bound", values=total.mean(0).cpu().numpy(),
        stderr=stderr, nfe=(len(steps) + 1) * n_noise, wall_s=time.perf_counter() - start,
        dim=int(d[0]), info={"variance": variance, "n_noise": n_noise, "antithetic": antithetic, "T": schedule.T,
                             "t_samples": t_samples, "decoder_variance": v_dec},
        prior=prior.cpu().numpy(), decoder=dec.mean(0).cpu().numpy(),
        steps=np.asarray(steps), kl=kl.mean(0).cpu().numpy())


def _kl_terms(denoiser: Denoise, x0: torch.Tensor, cond: torch.Tensor | None, w: torch.Tensor, d: torch.Tensor,
              sig: list[float], steps: list[int], generator: Any, n_noise: int, variance: str,
              antithetic: bool = False) -> torch.Tensor:
    """``L_{t-1}`` at each step ``t`` of ``steps`` for each noise draw, shape ``(n_noise, B, S)``."""
    kl = torch.zeros(n_noise, x0.shape[0], len(steps), dtype=torch.float64, device=x0.device)
    for j, t in enumerate(steps):
        noise = _draws(generator, x0, n_noise, antithetic)
        for k in range(n_noise):
            err2 = _denoise_error(denoiser, x0, cond, w, sig[t - 1], noise[k])
            kl[k, :, j] = _step_kl(err2, d, sig[t - 1], sig[t - 2], variance)
    return kl


def _decoder_nll(denoiser: Denoise, x0: torch.Tensor, cond: torch.Tensor | None, w: torch.Tensor,
                 d: torch.Tensor, sigma_1: float, noise: torch.Tensor) -> tuple[torch.Tensor, float]:
    """``L_0 = -log N(x0; D(x_1), beta_1 I)`` per draw ``(n_noise, B)``, and ``beta_1 = sigma_1^2/(1 + sigma_1^2)``."""
    v_dec = sigma_1 ** 2 / (1.0 + sigma_1 ** 2)
    dec = torch.stack([0.5 * _denoise_error(denoiser, x0, cond, w, sigma_1, n) / v_dec
                       + 0.5 * d * math.log(2 * math.pi * v_dec) for n in noise])
    return dec, v_dec


def _chosen_steps(T: int, t_samples: int | None, step_generator: torch.Generator | None,
                  stratified: bool = False) -> list[int]:
    if t_samples is None:
        return list(range(2, T + 1))
    if int(t_samples) < 2:
        raise ValueError(f"t_samples must be >= 2 to have a standard error, got {t_samples}")
    if step_generator is None:
        raise ValueError("t_samples draws the steps at random and needs step_generator=torch.Generator()")
    if stratified:  # one uniform step in each of t_samples equal strata of 2..T (still unbiased)
        if int(t_samples) > T - 1:
            raise ValueError(f"stratified t_samples={t_samples} exceeds the T - 1 = {T - 1} steps")
        u = torch.rand(int(t_samples), generator=step_generator, dtype=torch.float64)
        edges = (torch.arange(int(t_samples), dtype=torch.float64) + u) * (T - 1) / int(t_samples)
        return [int(v) + 2 for v in edges.floor().clamp(max=T - 2)]
    return [int(v) + 2 for v in torch.randint(T - 1, (int(t_samples),), generator=step_generator)]


def _bound_stderr(total: torch.Tensor, kl: torch.Tensor, dec: torch.Tensor, scale: float,
                  t_samples: int | None) -> np.ndarray | None:
    """Standard error over noise draws (n_noise >= 2), or over sampled steps (Monte-Carlo in t)."""
    if t_samples:
        per = kl.mean(0)  # (B, S): each step has its own noise draws
        var = scale ** 2 * per.var(1) * per.shape[1]
        if dec.shape[0] > 1:
            var = var + dec.var(0) / dec.shape[0]
        return var.sqrt().cpu().numpy()
    if total.shape[0] < 2:
        return None
    return (total.std(0) / math.sqrt(total.shape[0])).cpu().numpy()


# -- the one entry point ----------------------------------------------------------------------

def log_prob(denoiser: Denoise, schedule: NoiseSchedule, x: torch.Tensor, cond: torch.Tensor | None = None,
             method: str = "ode", **options: Any) -> LogProb:
    """Per-sample ``log p(x)`` in nats: ``method="ode"`` (Song et al. 2021, app. D) or ``"bound"`` (K, eq. 14).

    ``options`` go to :func:`~rho_workflow.diffusion.flow_likelihood.ode_log_prob` or
    :func:`variational_bound`.
    """
    if method == "bound":
        return variational_bound(denoiser, schedule, x, cond, **options)
    if method == "ode":
        from rho_workflow.diffusion.flow_likelihood import ode_log_prob
        return ode_log_prob(denoiser, schedule, x, cond, **options)
    raise ValueError(f"unknown likelihood method {method!r}; valid methods are ['ode', 'bound']")


# -- diagnostics of the nonequilibrium process ------------------------------------------------

@dataclass(frozen=True, eq=False)
class EntropyDiagnostics:
    """Per-step entropies in nats per dimension (Sohl-Dickstein et al. 2015, Sec. 2.4 and eq. 24).

    Attributes
    ----------
    t : ndarray (T,) int
        Steps ``1..T``.
    entropy_given_x0 : ndarray (T,)
        ``H_q(X^t | X^0)`` per dimension.
    reverse_lower, reverse_upper : ndarray (T,)
        Eq. 24: ``H_q(X^t|X^{t-1}) + H_q(X^{t-1}|X^0) - H_q(X^t|X^0) <= H_q(X^{t-1}|X^t) <=
        H_q(X^t|X^{t-1})``.
    """

    t: np.ndarray
    entropy_given_x0: np.ndarray
    reverse_lower: np.ndarray
    reverse_upper: np.ndarray


def gaussian_entropy_diagnostics(schedule: NoiseSchedule) -> EntropyDiagnostics:
    """Eq. 24 for Gaussian diffusion: ``1/2 log(2 pi e beta_tilde_t) <= H_q(X^{t-1}|X^t) <= 1/2 log(2 pi e beta_t)``.

    In VP units ``H_q(X^t | X^0) = 1/2 log(2 pi e (1 - alpha_bar_t))`` per dimension and
    ``beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)`` (``0`` at ``t = 1``,
    whose lower bound is ``-inf``). The upper bound assumes that the entropy grows along
    the forward chain (``H_q(X^t) >= H_q(X^{t-1})``), as it does for normalized data of
    covariance at most ``I``; data of larger variance lose entropy towards ``N(0, I)``.
    """
    betas = schedule.betas.numpy()
    ab = schedule.alpha_bar.numpy()
    ab_prev = np.concatenate([[1.0], ab[:-1]])
    c = 0.5 * math.log(2 * math.pi * math.e)
    with np.errstate(divide="ignore"):
        lower = c + 0.5 * np.log(betas * (1.0 - ab_prev) / (1.0 - ab))
    return EntropyDiagnostics(t=np.arange(1, schedule.T + 1), entropy_given_x0=c + 0.5 * np.log(1.0 - ab),
                              reverse_lower=lower, reverse_upper=c + 0.5 * np.log(betas))
