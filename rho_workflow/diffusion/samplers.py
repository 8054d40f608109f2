"""Samplers: small free functions over a denoiser, integrating in float64 in the VE form.

All share one signature, ``sample_<name>(denoiser, x, sigmas, *, cond=None, generator=None,
callback=None, **opts) -> x0``: ``x`` is the prior sample at ``sigmas[0]``
(:func:`prior`), ``sigmas`` a decreasing sequence ending in 0
(:func:`~rho_workflow.diffusion.schedules.sampling_sigmas`), ``generator`` a
:class:`~rho_workflow.diffusion.random.BatchGenerator` that draws every noise of the stochastic
samplers (one ``torch.Generator`` per sample, so results do not depend on batching).
``callback(dict(i, x, sigma, denoised))`` sees each step. The state is integrated in float64
and returned in the dtype of the ``x`` given. Step ``i`` goes from ``t = sigmas[i]`` to
``s = sigmas[i + 1]``; VE state ``x = x0 + sigma n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from rho_workflow.diffusion.random import BatchGenerator

__all__ = ["sample_ddpm", "sample_ddim", "sample_dpmpp_2m", "sample_dpmpp_3m", "sample_heun", "sample_unipc",
           "sample_unipc_bh1", "SAMPLERS", "get_sampler",
           "prior", "nfe", "SamplerSpec", "sampler_spec", "default_spacing", "DEFAULT_SAMPLER",
           "DEFAULT_STEPS"]

Denoise = Callable[..., torch.Tensor]
Callback = Callable[[dict[str, Any]], None] | None


def _check(x: torch.Tensor, sigmas: torch.Tensor | Sequence[float]) -> list[float]:
    """Validate the noise levels: 1-D, strictly decreasing, positive, ending in exactly 0."""
    levels = [float(s) for s in torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1).cpu()]
    if torch.as_tensor(sigmas).ndim != 1 or len(levels) < 2:
        raise ValueError(f"sigmas must be a 1-D sequence of at least 2 noise levels, got shape "
                         f"{tuple(torch.as_tensor(sigmas).shape)}; build them with sampling_sigmas()")
    if levels[-1] != 0.0:
        raise ValueError(f"sigmas must end in 0 (the clean data), but the last level is {levels[-1]}; "
                         "append 0 or build them with sampling_sigmas()")
    for i, (t, s) in enumerate(zip(levels[:-1], levels[1:])):
        if not (math.isfinite(t) and s < t):
            raise ValueError(f"sigmas must be finite and strictly decreasing, but sigmas[{i}]={t} and "
                             f"sigmas[{i + 1}]={s}; sort them in decreasing order")
    if x.ndim < 1 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point batch of shape (B, ...), got dtype {x.dtype} and "
                         f"shape {tuple(x.shape)}")
    return levels


def _noise(generator: BatchGenerator | None, x: torch.Tensor, name: str) -> torch.Tensor:
    if generator is None:
        raise ValueError(f"sampler {name!r} draws noise at every step and needs a generator; pass "
                         "generator=BatchGenerator(seeds) with one seed per sample")
    return generator.randn_like(x)


def _denoise(denoiser: Denoise, x: torch.Tensor, sigma: float, cond: torch.Tensor | None) -> torch.Tensor:
    s_in = torch.full((x.shape[0],), sigma, dtype=torch.float64, device=x.device)
    return denoiser(x, s_in, cond).to(torch.float64)


def _report(callback: Callback, i: int, x: torch.Tensor, sigma: float, denoised: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "denoised": denoised})


@torch.no_grad()
def sample_ddpm(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, cond: torch.Tensor | None = None,
                generator: BatchGenerator | None = None, callback: Callback = None,
                variance: str = "beta") -> torch.Tensor:
    """Ancestral sampling, Ho et al. 2020 Algorithm 2, in VE form (no extra noise factor, no clamping).

    Step ``t -> s``: ``x_s = D + (s^2/t^2)(x_t - D) + sqrt(var) z``, the posterior mean
    ``mu_tilde`` of Ho et al. eq. 7 with ``x0 = D``. ``variance="beta"`` is Ho's choice
    ``sigma_t^2 = beta_t`` with ``beta = 1 - alpha_bar_t/alpha_bar_s``, divided by
    ``alpha_bar_s`` for the VE state: ``(t^2 - s^2)(1 + s^2)/(1 + t^2)``; ``"beta_tilde"`` the
    posterior variance ``s^2 (t^2 - s^2)/t^2``. The last step (to ``s = 0``) adds no noise.
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"ddpm: unknown variance {variance!r}; valid choices are ['beta', 'beta_tilde']")
    levels = _check(x, sigmas)
    out_dtype, x = x.dtype, x.to(torch.float64)
    for i, (t, s) in enumerate(zip(levels[:-1], levels[1:])):
        denoised = _denoise(denoiser, x, t, cond)  # Alg. 2 line 4: the model's x0 estimate
        _report(callback, i, x, t, denoised)
        x = denoised + (s ** 2 / t ** 2) * (x - denoised)  # posterior mean (eq. 7) in VE form
        if s > 0:  # Alg. 2 line 3: z = 0 at the last step
            var = (t ** 2 - s ** 2) * (1 + s ** 2) / (1 + t ** 2) if variance == "beta" \
                else s ** 2 * (t ** 2 - s ** 2) / t ** 2
            x = x + math.sqrt(var) * _noise(generator, x, "ddpm")
    return x.to(out_dtype)


@torch.no_grad()
def sample_ddim(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, cond: torch.Tensor | None = None,
                generator: BatchGenerator | None = None, callback: Callback = None,
                eta: float = 0.0) -> torch.Tensor:
    """DDIM, Song et al. 2021 eq. 12 in VE form: ``x_s = D + sqrt(s^2 - up^2)(x_t - D)/t + up z``.

    ``up = eta sqrt(s^2 (t^2 - s^2)/t^2)``; ``eta = 0`` is deterministic (Euler on the
    probability-flow ODE in sigma, Karras et al. 2022 Sec. 3), ``eta = 1`` is DDPM with the
    ``beta_tilde`` variance.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"ddim: eta must lie in [0, 1] (0: deterministic, 1: ancestral), got {eta}")
    levels = _check(x, sigmas)
    out_dtype, x = x.dtype, x.to(torch.float64)
    for i, (t, s) in enumerate(zip(levels[:-1], levels[1:])):
        denoised = _denoise(denoiser, x, t, cond)  # eq. 12, "predicted x0"
        _report(callback, i, x, t, denoised)
        up = eta * math.sqrt(s ** 2 * (t ** 2 - s ** 2) / t ** 2)  # eq. 16, sigma_t(eta) in VE units
        x = denoised + math.sqrt(s ** 2 - up ** 2) * (x - denoised) / t  # "direction pointing to x_t"
        if up > 0:
            x = x + up * _noise(generator, x, "ddim")  # "random noise"
    return x.to(out_dtype)


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, cond: torch.Tensor | None = None,
                    generator: BatchGenerator | None = None, callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. 2022 Algorithm 2, in time ``lambda = -log sigma`` (as k-diffusion).

    Step ``t -> s`` with ``h = log(t/s)``: ``x_s = (s/t) x_t - expm1(-h) D'``, where ``D'`` is
    ``D`` at the first step and at the last (to ``s = 0``, where ``x_s = D``), and otherwise the
    multistep correction ``(1 + 1/(2r)) D_i - (1/(2r)) D_{i-1}`` with ``r = h_{i-1}/h_i``.
    Deterministic; ``generator`` is unused.
    """
    levels = _check(x, sigmas)
    out_dtype, x = x.dtype, x.to(torch.float64)
    old_denoised, h_last = None, None
    for i, (t, s) in enumerate(zip(levels[:-1], levels[1:])):
        denoised = _denoise(denoiser, x, t, cond)
        _report(callback, i, x, t, denoised)
        if s == 0:  # final step: lambda -> infinity, x_s = D (first order)
            x = denoised
            break
        h = math.log(t / s)  # lambda_s - lambda_t
        if old_denoised is None:  # Alg. 2 first step: DPM-Solver++(1), i.e. DDIM
            d_prime = denoised
        else:  # Alg. 2 line 5: r = h_{i-1}/h_i, D = (1 + 1/2r) D_i - 1/2r D_{i-1}
            r = h_last / h
            d_prime = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (s / t) * x - math.expm1(-h) * d_prime  # Alg. 2 line 6 in VE form
        old_denoised, h_last = denoised, h
    return x.to(out_dtype)


@torch.no_grad()
def sample_dpmpp_3m(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, cond: torch.Tensor | None = None,
                    generator: BatchGenerator | None = None, callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(3M), the third-order multistep data-prediction solver of Lu et al. 2022 (Sec. 4).

    The exact solution of the probability-flow ODE in ``lambda = -log sigma`` over a step
    ``t -> s`` (``h = log(t/s)``) is ``x_s = (s/t) x_t + int_0^h e^(u-h) D(lambda_t + u) du``.
    Expanding ``D`` to second order in ``u`` gives
    ``x_s = (s/t) x_t - expm1(-h) D + (h - 1 + e^-h) D' + (h^2/2 - h + 1 - e^-h) D''``, whose
    derivatives come from the denoised values of the last three levels (Newton divided
    differences in units of ``h``: ``d1 = h D'``, ``d2 = h^2 D''/2``). The first step is
    first order and the second uses ``d1`` only (DPM-Solver++(2M)); the step to ``s = 0`` is
    ``x = D``. Deterministic; ``generator`` is unused.
    """
    levels = _check(x, sigmas)
    out_dtype, x = x.dtype, x.to(torch.float64)
    history: list[tuple[torch.Tensor, float]] = []  # (denoised, lambda) of the previous levels, newest first
    for i, (t, s) in enumerate(zip(levels[:-1], levels[1:])):
        denoised = _denoise(denoiser, x, t, cond)
        _report(callback, i, x, t, denoised)
        if s == 0:
            x = denoised
            break
        h = math.log(t / s)
        phi_1 = -math.expm1(-h)                          # int_0^h e^(u-h) du
        phi_2 = (h - phi_1) / h                          # (h - 1 + e^-h) / h: multiplies d1 = h D'
        phi_3 = (h * h / 2 - h + phi_1) / (h * h)        # (h^2/2 - h + 1 - e^-h) / h^2: multiplies 2 d2 = h^2 D''
        x = (s / t) * x + phi_1 * denoised
        lam = -math.log(t)
        if history:
            (d_1, lam_1) = history[0]
            r0 = (lam - lam_1) / h                       # distance to the previous level in units of h
            d1_0 = (denoised - d_1) / r0                 # first divided difference, ~ h D' at -r0/2
            if len(history) == 1:
                x = x + phi_2 * d1_0
            else:
                (d_2, lam_2) = history[1]
                r1 = (lam_1 - lam_2) / h
                d1_1 = (d_1 - d_2) / r1
                d2 = (d1_0 - d1_1) / (r0 + r1)           # second divided difference, ~ h^2 D'' / 2
                d1 = d1_0 + r0 * d2                      # h D' at the current level
                x = x + phi_2 * d1 + 2 * phi_3 * d2
        history = [(denoised, lam)] + history[:1]
    return x.to(out_dtype)


@torch.no_grad()
def sample_heun(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, cond: torch.Tensor | None = None,
                generator: BatchGenerator | None = None, callback: Callback = None) -> torch.Tensor:
    """Deterministic Heun sampler, Karras et al. 2022 Algorithm 1 (2nd order; Euler at the step to 0).

    Deterministic; ``generator`` is unused. The trapezoidal correction needs moderate step
    ratios ``t/s``: use it with ``karras`` or ``log-snr`` levels capped at ``sigma_max = 80``.
    With the ``discrete`` levels of the cosine schedule (first step from sigma ~ 2e4) it
    diverges, as any explicit second-order rule would.
    """
    levels = _check(x, sigmas)
    out_dtype, x = x.dtype, x.to(torch.float64)
    for i, (t, s) in enumerate(zip(levels[:-1], levels[1:])):
        denoised = _denoise(denoiser, x, t, cond)
        _report(callback, i, x, t, denoised)
        d = (x - denoised) / t  # Alg. 1 line 4: d_i = (x_i - D(x_i; t_i)) / t_i
        x_next = x + (s - t) * d  # line 5: Euler step
        if s != 0:  # lines 6-8: second-order correction, skipped at the step to sigma = 0
            d_next = (x_next - _denoise(denoiser, x_next, s, cond)) / s
            x_next = x + (s - t) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return x.to(out_dtype)


def _unipc_weights(h: float, r: Sequence[float], variant: str) -> list[float]:
    """The weights ``rho`` of UniPC's differences: the order conditions of Zhao et al. 2023, Theorem 3.1.

    ``r`` are the distances ``(lambda_j - lambda_t) / h`` of the levels used, the last one the
    target level itself (``r = 1``) in a corrector. With ``z = -h`` (data prediction),
    ``psi_1 = expm1(z)`` and ``psi_(k+1) = psi_k / z - 1/k!`` (so ``psi_k = z phi_k(z)``), the
    weights solve ``sum_j rho_j r_j^(k-1) = psi_(k+1) k! / B(h)`` for ``k = 1 .. len(r)``:
    the order conditions that make ``B(h) sum_j rho_j D_j`` match the Taylor terms of the
    exact solution. ``B(h) = z`` (``bh1``) or ``expm1(z)`` (``bh2``).
    """
    z = -h
    b_h = z if variant == "bh1" else math.expm1(z)
    psi, factorial, rhs = math.expm1(z) / z - 1.0, 1, []
    for k in range(1, len(r) + 1):
        rhs.append(psi * factorial / b_h)
        factorial *= k + 1
        psi = psi / z - 1.0 / factorial
    vandermonde = torch.tensor([[rj ** (k - 1) for rj in r] for k in range(1, len(r) + 1)], dtype=torch.float64)
    return torch.linalg.solve(vandermonde, torch.tensor(rhs, dtype=torch.float64)).tolist()


@torch.no_grad()
def sample_unipc(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, cond: torch.Tensor | None = None,
                 generator: BatchGenerator | None = None, callback: Callback = None, order: int = 3,
                 variant: str = "bh2", corrector: bool = True) -> torch.Tensor:
    """UniPC, Zhao et al. 2023 (NeurIPS), Sec. 3: the UniP-p predictor with the UniC-p corrector.

    Data-prediction multistep solver in ``lambda = -log sigma`` (VE form, as DPM-Solver++).
    Step ``t -> s`` (``h = log(t/s)``) from the last ``order`` denoised values ``m_0`` (at
    ``t``) and ``m_j`` (at ``lambda_j``, ``r_j = (lambda_j - lambda_t)/h < 0``):

    * predictor UniP (Corollary 3.2): ``x~_s = (s/t) x_t - expm1(-h) m_0 - B(h) sum_j rho_j D_j`` with
      ``D_j = (m_j - m_0)/r_j`` (:func:`_unipc_weights`; for order 2 the paper's
      ``rho = 1/2``, which with ``bh2`` is DPM-Solver++(2M));
    * corrector UniC (Theorem 3.1): the denoiser's value ``m_s = D(x~_s, s)``, needed anyway by the next
      step, adds one more difference ``D_s = m_s - m_0`` (``r = 1``) and the same formula with
      weights of one order higher gives ``x_s``; ``m_s`` is kept as the value at ``s``. The
      corrector raises the order by one and costs no network call.

    The first steps use the orders the history allows. The step to ``sigma = 0`` is ``x = m``
    at the last level (first order, as in the other samplers; its corrector would change
    nothing). Network calls: one per nonzero level, ``len(sigmas) - 1``; ``callback`` sees the
    corrected state with the denoised value of its predictor. Deterministic; ``generator`` is
    unused. (The reference implementation's ``lower_order_final`` is left out: on the exact
    Gaussian denoiser it made 10-step results worse here, and the step to 0 is first order
    anyway.)

    Parameters
    ----------
    order : {1, 2, 3}
        Order of the predictor (the corrector adds one).
    variant : {"bh1", "bh2"}
        ``B(h) = h`` or ``expm1(h)`` (Zhao et al.'s two choices of ``B(h)``; they recommend
        ``bh1`` for unconditional sampling with very few steps and ``bh2`` otherwise).
    corrector : bool
        ``False`` is the predictor alone, UniP-p.
    """
    if order not in (1, 2, 3):
        raise ValueError(f"unipc: order must be 1, 2 or 3, got {order!r}")
    if variant not in ("bh1", "bh2"):
        raise ValueError(f"unipc: unknown variant {variant!r}; valid variants are ['bh1', 'bh2']")
    levels = _check(x, sigmas)
    out_dtype, x = x.dtype, x.to(torch.float64)
    history: list[tuple[torch.Tensor, float]] = []  # (denoised, lambda), newest first, at most `order`
    denoised = _denoise(denoiser, x, levels[0], cond)
    for i, (t, s) in enumerate(zip(levels[:-1], levels[1:])):
        _report(callback, i, x, t, denoised)
        history = [(denoised, -math.log(t))] + history[:order - 1]
        if s == 0:  # the data prediction at the last level
            x = denoised
            break
        h, lam_t, m_0 = math.log(t / s), -math.log(t), history[0][0]
        p = min(order, len(history))  # predictor order: the levels available
        b_h = -h if variant == "bh1" else math.expm1(-h)
        r = [(lam_j - lam_t) / h for _, lam_j in history[1:p]]
        diffs = [(m_j - m_0) / r_j for (m_j, _), r_j in zip(history[1:p], r)]
        x_base = (s / t) * x - math.expm1(-h) * m_0  # first order: DPM-Solver++(1), i.e. DDIM
        rho_p = [0.5] if p == 2 else _unipc_weights(h, r, variant) if p > 2 else []
        x_pred = x_base - b_h * sum((w * d for w, d in zip(rho_p, diffs)), torch.zeros_like(x))
        denoised = _denoise(denoiser, x_pred, s, cond)  # the value at s; the next step's m_0
        if corrector:
            rho_c = [0.5] if p == 1 else _unipc_weights(h, r + [1.0], variant)
            corr = sum((w * d for w, d in zip(rho_c[:-1], diffs)), rho_c[-1] * (denoised - m_0))
            x = x_base - b_h * corr
        else:
            x = x_pred
    return x.to(out_dtype)


@torch.no_grad()
def sample_unipc_bh1(denoiser: Denoise, x: torch.Tensor, sigmas: torch.Tensor, *, cond: torch.Tensor | None = None,
                     generator: BatchGenerator | None = None, callback: Callback = None, order: int = 3,
                     corrector: bool = True) -> torch.Tensor:
    """UniPC with ``B(h) = h`` (Zhao et al. 2023, variant ``bh1``): :func:`sample_unipc`."""
    return sample_unipc(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, order=order,
                        variant="bh1", corrector=corrector)


@dataclass(frozen=True)
class SamplerSpec:
    """The facts about one sampler, in one place (config validation, API and benchmarks).

    ``spacing`` is the noise-level spacing used when none is given, measured on the exact
    Gaussian denoiser (tests/gaussian.py, cosine schedule): DPM-Solver++(2M) and (3M) are more
    accurate uniform in log-SNR than on the Karras rho=7 ramp (2M covariance error 1.8% vs
    4.1% at 25 steps), Heun the reverse; DDPM and DDIM walk the schedule's own discrete levels,
    as in their papers. ``min_steps`` is the fewest steps at which the sampler is the better
    choice of its family (3M beats 2M from 12 steps on and loses below:
    bench/sampler_nfe.py exact-denoiser rows, 13.6% vs 9.4% at 10 steps).
    """

    name: str
    fn: Callable[..., torch.Tensor]
    spacing: str
    min_steps: int = 1
    calls_per_step: int = 1
    stochastic: bool = False
    below_min_steps: str = ""

    def nfe(self, steps: int) -> int:
        """Network calls of ``steps`` steps (a second-order step to sigma = 0 makes one call)."""
        return self.calls_per_step * int(steps) - (self.calls_per_step - 1)

    def warnings(self, steps: int, spacing: str, schedule: str) -> list[str]:
        """Why this sampler is a poor choice for these settings (empty when it is not)."""
        found = []
        if steps < self.min_steps and spacing != "fitted":  # min_steps was measured on the sampler's own spacing
            found.append(f"{self.name} with {steps} steps: below {self.min_steps} steps "
                         f"{self.below_min_steps}")
        if self.name == "heun" and spacing == "discrete" and schedule == "cosine":
            found.append("heun on the cosine schedule's discrete levels diverges (its first "
                         "step starts near sigma 2e4); use spacing='karras'")
        return found


_UNIPC_FEW_STEPS = ("its third-order steps on log-snr levels are less accurate than dpmpp_2m (exact-denoiser "
                    "rows of bench/sampler_nfe.py); use spacing='fitted' or sampler='dpmpp_2m' for so few steps")

SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    SamplerSpec("ddpm", sample_ddpm, "discrete", stochastic=True),
    SamplerSpec("ddim", sample_ddim, "discrete"),
    SamplerSpec("dpmpp_2m", sample_dpmpp_2m, "log-snr"),
    SamplerSpec("dpmpp_3m", sample_dpmpp_3m, "log-snr", min_steps=12,
                below_min_steps="its third-order extrapolation over long steps is less accurate "
                                "than dpmpp_2m; use sampler='dpmpp_2m' for so few steps"),
    SamplerSpec("heun", sample_heun, "karras", calls_per_step=2),
    SamplerSpec("unipc", sample_unipc, "log-snr", min_steps=10, below_min_steps=_UNIPC_FEW_STEPS),
    SamplerSpec("unipc_bh1", sample_unipc_bh1, "log-snr", min_steps=10, below_min_steps=_UNIPC_FEW_STEPS),
)}

#: The sampler and step count of :meth:`RhoModel.sample`, the config and the accessor when none
#: is named. On the trained model of bench/sampler_nfe, UniPC on its fitted levels at 12
#: network calls has a spectrum error of 2.6% / 3.6% (mean of 5 seeds) at the held-out /
#: training point, DPM-Solver++(3M) at 25 calls on log-snr levels (the default before) 2.4% /
#: 3.6%, and one seed of 1000-step ancestral DDPM 2.8% / 2.3%: the quality of the old default
#: for half the network calls.
DEFAULT_SAMPLER = "unipc"
DEFAULT_STEPS = 12


def default_spacing(sampler: str, steps: int, schedule: Any = None) -> str:
    """The spacing used when none is given: ``fitted`` where levels fitted on the exact Gaussian
    denoiser are stored for ``sampler`` and ``steps`` (:mod:`~rho_workflow.diffusion.fitted_levels`,
    5-16 steps of dpmpp_2m, dpmpp_3m, unipc and unipc_bh1) and lie within the noise levels of
    ``schedule`` (not checked when None), else the sampler's own (:attr:`SamplerSpec.spacing`)."""
    from rho_workflow.diffusion.fitted_levels import fitted_table
    from rho_workflow.diffusion.schedules import levels_within

    levels = fitted_table().get(sampler, {}).get(int(steps))
    if levels is not None and (schedule is None or levels_within(schedule, levels)):
        return "fitted"
    return sampler_spec(sampler).spacing


def sampler_spec(name: str) -> SamplerSpec:
    """The registry entry of ``name``; the error lists the valid names."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid samplers are {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler function of ``name`` (one of :data:`SAMPLERS`)."""
    return sampler_spec(name).fn


def nfe(name: str, steps: int) -> int:
    """Network evaluations of ``steps`` sampling steps (Heun: ``2 steps - 1``, others ``steps``)."""
    return sampler_spec(name).nfe(steps)


def prior(generator: BatchGenerator, shape: Sequence[int], sigma_max: float) -> torch.Tensor:
    """Prior sample ``n sqrt(sigma_max^2 + 1)`` of shape ``(len(generator), *shape)``, float64.

    This is the VP prior ``N(0, I)`` scaled to the VE state at ``sigma_max`` (exact for data of
    unit variance, the normalization of the training data).
    """
    return generator.randn(tuple(shape), dtype=torch.float64) * math.sqrt(float(sigma_max) ** 2 + 1)
