"""Discrete noise schedules, viewed in variance-exploding (VE) form, and sampling noise levels.

Every schedule is a sequence of ``T`` forward-kernel variances ``betas`` (Ho et al. 2020,
Sohl-Dickstein et al. 2015). Its cumulative product ``alpha_bar = cumprod(1 - betas)`` is the
signal fraction of the variance-preserving (VP) state ``x_vp = sqrt(alpha_bar) x0 +
sqrt(1 - alpha_bar) n``. Dividing by ``sqrt(alpha_bar)`` gives the VE state
``x_sigma = x0 + sigma n`` with ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``, so
``alpha_bar = 1 / (1 + sigma**2)`` and ``log SNR = -2 log sigma``. The whole modelling core
(denoiser, losses, samplers) works with ``sigma``; schedules only decide which ``sigma`` exist.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

__all__ = ["NoiseSchedule", "make_schedule", "sampling_sigmas", "SCHEDULES", "SPACINGS"]

Number = float | torch.Tensor


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete schedule of ``T`` steps: ``betas``, ``alpha_bar = cumprod(1 - betas)``, ``sigmas``.

    Build one with :func:`make_schedule` or :meth:`from_betas`. Step ``i`` (0-based) is the
    discrete time ``t = (i + 1) / T``; :meth:`log_snr_at` interpolates the log-SNR linearly
    between these times (and extrapolates the first segment down to ``t = 0``), which makes
    :meth:`sigma_at` strictly increasing and :meth:`t_at` its exact inverse on ``[0, 1]``.

    Attributes
    ----------
    name : str
        The schedule's name (as given to :func:`make_schedule`).
    betas, alpha_bar, sigmas : Tensor (T,) float64
        Forward variances, their cumulative signal fraction, and the VE noise levels
        (strictly increasing).
    """

    name: str
    betas: torch.Tensor
    alpha_bar: torch.Tensor
    sigmas: torch.Tensor

    @classmethod
    def from_betas(cls, name: str, betas: torch.Tensor) -> "NoiseSchedule":
        """``alpha_bar_t = prod_{s<=t} (1 - beta_s)`` (Ho et al. 2020, eq. 4), ``sigma = sqrt(1/alpha_bar - 1)``."""
        betas = torch.as_tensor(betas, dtype=torch.float64).clone()
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"schedule {name!r}: betas must be a 1-D sequence of at least 2 values, "
                             f"got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            bad = betas[~((betas > 0) & (betas < 1))][0].item()
            raise ValueError(f"schedule {name!r}: every beta must lie in (0, 1), found {bad}; clip the "
                             "betas (e.g. at max_beta=0.999) so that alpha_bar stays positive")
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        sigmas = torch.sqrt((1.0 - alpha_bar) / alpha_bar)
        return cls(name=name, betas=betas, alpha_bar=alpha_bar, sigmas=sigmas)

    @property
    def T(self) -> int:
        """Number of discrete steps."""
        return int(self.betas.numel())

    @property
    def sigma_min(self) -> float:
        """Noise level of the first step (t = 1/T)."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """Noise level of the last step (t = 1)."""
        return float(self.sigmas[-1])

    @property
    def log_snr(self) -> torch.Tensor:
        """``log(alpha_bar / (1 - alpha_bar)) = -2 log sigma`` at each step, float64 (T,)."""
        return -2.0 * torch.log(self.sigmas)

    def log_snr_at(self, t: Number) -> torch.Tensor:
        """Log-SNR at continuous time ``t`` in [0, 1], piecewise linear through ``((i+1)/T, log_snr_i)``."""
        t = _as_float64(t)
        if bool(((t < 0) | (t > 1)).any()):
            raise ValueError(f"schedule {self.name!r}: time t must lie in [0, 1], got values in "
                             f"[{t.min().item()}, {t.max().item()}]")
        log_snr = self.log_snr
        u = t * self.T - 1.0  # continuous step index; u < 0 extrapolates the first segment
        i = torch.clamp(torch.floor(u), 0, self.T - 2).long()
        frac = u - i.to(torch.float64)
        return log_snr[i] + frac * (log_snr[i + 1] - log_snr[i])

    def sigma_at(self, t: Number) -> torch.Tensor:
        """VE noise level ``sigma(t) = exp(-log_snr(t) / 2)`` for ``t`` in [0, 1]."""
        return torch.exp(-0.5 * self.log_snr_at(t))

    def t_at(self, sigma: Number) -> torch.Tensor:
        """Inverse of :meth:`sigma_at`: the time ``t`` in [0, 1] whose noise level is ``sigma``."""
        log_sigma = torch.log(_as_float64(sigma))
        grid = torch.log(self.sigmas)
        lo = 2.0 * grid[0] - grid[1]  # log sigma at t = 0 (first segment extrapolated)
        tol = 1e-9
        if bool(((log_sigma < lo - tol) | (log_sigma > grid[-1] + tol)).any()):
            raise ValueError(
                f"schedule {self.name!r}: sigma must lie in [sigma_at(0), sigma_max] = "
                f"[{math.exp(lo.item()):.6g}, {self.sigma_max:.6g}] to have a time t in [0, 1]")
        i = torch.clamp(torch.searchsorted(grid, log_sigma.contiguous(), right=True) - 1, 0, self.T - 2)
        frac = (log_sigma - grid[i]) / (grid[i + 1] - grid[i])
        return torch.clamp((i.to(torch.float64) + 1.0 + frac) / self.T, 0.0, 1.0)


def _as_float64(v: Number) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64).cpu()


# -- named schedules ------------------------------------------------------------------------------

def _linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. 2020, Sec. 4: betas linear from 1e-4 to 0.02 at T=1000, scaled by 1000/T (Nichol & Dhariwal 2021)."""
    scale = 1000.0 / T
    if scale * beta_end >= 1:
        raise ValueError(f"linear schedule: beta_end={beta_end} scaled by 1000/T gives {scale * beta_end:.4g} "
                         f">= 1 at T={T}; use T > {int(1000 * beta_end)} or a smaller beta_end")
    return torch.linspace(scale * beta_start, scale * beta_end, T, dtype=torch.float64)


def _cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal 2021, eq. 17: ``f(t) = cos^2(((t/T + s)/(1 + s)) pi/2)``, ``beta_t = min(1 - f(t)/f(t-1), max_beta)``.

    Where no beta is clipped, ``alpha_bar_t = f(t)/f(0)`` exactly; the clipped steps (the last
    ones, where ``f`` reaches 0) are defined through ``alpha_bar = cumprod(1 - betas)``.
    """
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return torch.clamp(1.0 - f[1:] / f[:-1], max=max_beta)


def _sohl_dickstein_betas(T: int, max_beta: float = 0.999) -> torch.Tensor:
    """Sohl-Dickstein et al. 2015, App. D: ``beta_t = 1/(T - t + 1)``, t = 1..T, so ``alpha_bar_t = (T - t)/T``.

    The final ``beta_T = 1`` would destroy all signal (``alpha_bar_T = 0``, an infinite VE noise
    level); it is clipped at ``max_beta``, giving ``alpha_bar_T = (1 - max_beta)/T``. All
    earlier steps keep ``alpha_bar_t = (T - t)/T`` exactly.
    """
    t = torch.arange(1, T + 1, dtype=torch.float64)
    return torch.clamp(1.0 / (T - t + 1.0), max=max_beta)


SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "linear": _linear_betas,
    "cosine": _cosine_betas,
    "sohl-dickstein": _sohl_dickstein_betas,
}


def make_schedule(name: str, T: int = 1000, **kw: float) -> NoiseSchedule:
    """Build a named schedule: ``linear`` (Ho et al. 2020), ``cosine`` (Nichol & Dhariwal 2021), ``sohl-dickstein`` (2015).

    Parameters
    ----------
    name : {"linear", "cosine", "sohl-dickstein"}
    T : int
        Number of discrete steps (at least 2).
    **kw
        Options of the schedule: ``beta_start``, ``beta_end`` (linear, values at T=1000);
        ``s``, ``max_beta`` (cosine); ``max_beta`` (sohl-dickstein).
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {name!r}; valid names are {sorted(SCHEDULES)}")
    if int(T) != T or T < 2:
        raise ValueError(f"schedule {name!r}: T (number of steps) must be an integer >= 2, got {T}")
    try:
        betas = SCHEDULES[name](int(T), **kw)
    except TypeError as err:
        raise ValueError(f"schedule {name!r}: unsupported option in {sorted(kw)} ({err})") from None
    return NoiseSchedule.from_betas(name, betas)


# -- noise levels for sampling --------------------------------------------------------------------

SPACINGS = ("karras", "discrete", "log-snr", "fitted")


def sampling_sigmas(schedule: NoiseSchedule, steps: int, spacing: str = "karras", rho: float = 7.0,
                    sigma_min: float | None = None, sigma_max: float | None = None,
                    sampler: str | None = None) -> torch.Tensor:
    """Decreasing noise levels ``sigma_0 > ... > sigma_{steps-1} > sigma_steps = 0`` (Karras et al. 2022, eq. 5).

    Parameters
    ----------
    schedule : NoiseSchedule
    steps : int
        Number of sampling steps (>= 1); the result has ``steps + 1`` levels.
    spacing : {"karras", "discrete", "log-snr", "fitted"}
        ``karras``: EDM eq. 5, ``(smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho``,
        between ``schedule.sigma_min`` and ``min(schedule.sigma_max, 80)`` by default.
        ``discrete``: the schedule's own sigmas at ``steps`` evenly spaced timesteps, trailing
        (always includes ``t = T``; ``steps = T`` is the full DDPM chain).
        ``log-snr``: uniform in log-SNR (i.e. in ``log sigma``) between the same bounds as karras.
        ``fitted``: the levels fitted for ``sampler`` and ``steps`` on the exact Gaussian
        denoiser (:mod:`rho_workflow.diffusion.fitted_levels`), from 80 down to no lower than 0.0101.
    rho : float
        Karras exponent.
    sigma_min, sigma_max : float, optional
        Override the bounds of ``karras`` and ``log-snr`` (not allowed with ``discrete`` or ``fitted``).
    sampler : str, optional
        The sampler the levels are for; needed by ``fitted`` only.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"unknown sigma spacing {spacing!r}; valid spacings are {list(SPACINGS)}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"sampling steps must be an integer >= 1, got {steps}")
    steps = int(steps)
    if spacing == "fitted":
        return _fitted(schedule, steps, sampler, sigma_min, sigma_max)
    if spacing == "discrete":
        if sigma_min is not None or sigma_max is not None:
            raise ValueError("spacing 'discrete' uses the schedule's own noise levels; sigma_min/sigma_max "
                             "cannot be set with it (use spacing 'karras' or 'log-snr')")
        if steps > schedule.T:
            raise ValueError(f"spacing 'discrete': steps={steps} exceeds the schedule's T={schedule.T}; "
                             f"use at most {schedule.T} steps")
        k = torch.arange(steps)
        index = (schedule.T * (steps - k) + steps // 2) // steps - 1  # round(T (1 - k/steps)) - 1
        levels = schedule.sigmas[index]
    else:
        lo = schedule.sigma_min if sigma_min is None else float(sigma_min)
        hi = min(schedule.sigma_max, 80.0) if sigma_max is None else float(sigma_max)
        if not 0 < lo < hi:
            raise ValueError(f"spacing {spacing!r} needs 0 < sigma_min < sigma_max, got "
                             f"sigma_min={lo}, sigma_max={hi}")
        ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
        if spacing == "karras":
            if not rho > 0:
                raise ValueError(f"karras spacing: rho must be > 0, got {rho}")
            levels = (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        else:
            levels = torch.exp(math.log(hi) + ramp * (math.log(lo) - math.log(hi)))
        levels[0] = hi  # exact endpoints despite the rounding of the power
        if steps > 1:
            levels[-1] = lo
    return torch.cat([levels.to(torch.float64), torch.zeros(1, dtype=torch.float64)])


def levels_within(schedule: NoiseSchedule, levels: Sequence[float] | torch.Tensor) -> bool:
    """Whether decreasing sampling levels ``sigma_0 > ... > sigma_{N-1} > 0`` lie within the
    noise levels the schedule was trained on."""
    return float(levels[-2]) >= schedule.sigma_min * (1 - 1e-9) and float(levels[0]) <= schedule.sigma_max


def _fitted(schedule: NoiseSchedule, steps: int, sampler: str | None, sigma_min: float | None,
            sigma_max: float | None) -> torch.Tensor:
    """The stored fitted levels, checked to lie within the schedule's noise levels."""
    from rho_workflow.diffusion.fitted_levels import fitted_sigmas

    if sigma_min is not None or sigma_max is not None:
        raise ValueError("spacing 'fitted' uses stored noise levels; sigma_min/sigma_max cannot be set with "
                         "it (use spacing 'karras' or 'log-snr')")
    levels = fitted_sigmas(sampler, steps)
    lo, hi = float(levels[-2]), float(levels[0])
    if not levels_within(schedule, levels):
        raise ValueError(f"spacing 'fitted': the levels of {sampler} with {steps} steps span [{lo:.4g}, {hi:.4g}], "
                         f"outside the noise levels [{schedule.sigma_min:.4g}, {schedule.sigma_max:.4g}] of the "
                         f"{schedule.name!r} schedule (T={schedule.T}) the model was trained on; use spacing "
                         "'log-snr'")
    return levels
