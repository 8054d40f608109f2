"""Denoising score-matching losses, all written as ``lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2``.

Karras et al. 2022 (EDM), eq. 2 and 8. Every prediction target (``eps``, ``v``, ``x0``) is the
same regression in ``x0`` space with a different weight ``lambda(sigma)``: training ``F`` with
a plain MSE on its own target equals ``lambda = 1/c_out^2`` on the denoiser error
(:func:`loss_weight` with ``weighting="plain"``). Min-SNR-gamma weighting (Hang et al. 2023)
changes ``lambda`` to ``min(SNR, gamma)`` whatever the target.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from rho_workflow.diffusion.precond import PREDICTIONS, Denoiser, batch_sigma
from rho_workflow.diffusion.schedules import NoiseSchedule

__all__ = ["loss_weight", "sample_training_sigmas", "SHIFT_PROFILES", "denoising_loss", "resolution_noise_shift",
           "WEIGHTINGS", "SIGMA_SAMPLING", "NOISE_SHIFT_REFERENCE_POINTS"]

WEIGHTINGS = ("plain", "min-snr")
SIGMA_SAMPLING = ("schedule", "lognormal", "mixture")
SHIFT_PROFILES = ("constant", "interpolated")

#: Values per field (16 x 16) at which :func:`resolution_noise_shift` would be 1.
NOISE_SHIFT_REFERENCE_POINTS = 256


def resolution_noise_shift(spatial_shape: Sequence[int], reference: int = NOISE_SHIFT_REFERENCE_POINTS) -> float:
    """Factor on the training noise levels for fields of spatial shape ``spatial_shape``:
    ``max(1, sqrt(N / reference))`` for 3D fields of ``N`` values, 1 for 1D and 2D fields
    (the shifted schedule of Hoogeboom et al. 2023, Sec. 3.1; Chen 2023).

    A field of ``N`` values seen at noise level ``sigma`` still tells two parameter points
    apart when ``||x_a - x_b||^2 / (2 sigma^2)``, which grows like ``N / sigma^2``, is large. The
    condition only matters to the denoiser above that noise level, so on a large grid it is
    learned only from the few noise draws high enough: a 32^3 field (32768 values) identifies
    its (l, m) from the noisy input alone up to ``sigma ~ 40`` and beyond, where the cosine
    schedule draws 3% of its levels. Multiplying the drawn levels by ``sqrt(N / reference)``
    (equivalently, shifting log-SNR by ``-log(N / reference)``) keeps the same share of training
    at the levels that decide the condition as on the reference grid: 4 at 16^3, 11.3 at 32^3.

    Measured (bench/time_to_quality, tests/test_noise_shift.py): a 16^3 model follows its
    (l, m) after 200 steps with the factor 4 and not with 1 or 2, while the 2D demo's
    lognormal fields on 32 x 32 train worse with a factor 2 than with their schedule's own
    levels; so 1D and 2D grids keep the schedule's levels.
    """
    shape = tuple(int(n) for n in spatial_shape)
    if not shape or min(shape) < 1 or reference < 1:
        raise ValueError(f"resolution_noise_shift: spatial_shape={shape} and reference={reference} "
                         "must be positive sizes")
    if len(shape) != 3:
        return 1.0
    return max(1.0, math.sqrt(math.prod(shape) / reference))


def loss_weight(sigma: torch.Tensor, prediction: str, sigma_data: float = 1.0, weighting: str = "plain",
                gamma: float = 5.0) -> torch.Tensor:
    """EDM eq. 2 weight ``lambda(sigma)`` of ``||D - x0||^2``; Min-SNR-gamma: Hang et al. 2023, eq. 8.

    Parameters
    ----------
    sigma : Tensor
        Noise levels (any shape); the weight has the same shape, float64.
    prediction : {"v", "eps", "x0"}
        The network's target (see :class:`~rho_workflow.diffusion.precond.Denoiser`).
    sigma_data : float
        Data standard deviation of the preconditioning (used by ``plain`` with ``v``).
    weighting : {"plain", "min-snr"}
        ``plain``: the natural MSE of the prediction target, ``lambda = 1/c_out^2``: ``eps``
        ``1/sigma^2``; ``x0`` ``1``; ``v`` ``(sigma^2 + sd^2)/(sigma sd)^2``.
        ``min-snr``: ``lambda = min(SNR, gamma)`` with ``SNR = alpha_bar/(1 - alpha_bar) =
        1/sigma^2``. Hang et al. give it as ``min(SNR, gamma)/SNR`` on the eps loss and
        ``min(SNR, gamma)/(SNR + 1)`` on the v loss (their Sec. 3.4); both are this same
        ``min(SNR, gamma)`` on the x0 error, which is what is implemented, for every target.
    gamma : float
        The SNR clip of ``min-snr``.
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"unknown prediction {prediction!r}; valid predictions are {list(PREDICTIONS)}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; valid weightings are {list(WEIGHTINGS)}")
    s = torch.as_tensor(sigma).to(torch.float64)
    if weighting == "min-snr":
        if not gamma > 0:
            raise ValueError(f"min-snr weighting: gamma must be > 0, got {gamma}")
        return torch.clamp(1.0 / s ** 2, max=float(gamma))
    if prediction == "eps":
        return 1.0 / s ** 2
    if prediction == "x0":
        return torch.ones_like(s)
    sd2 = float(sigma_data) ** 2
    return (s ** 2 + sd2) / (s ** 2 * sd2)


def sample_training_sigmas(schedule: NoiseSchedule, batch: int, generator: torch.Generator | None = None,
                           how: str = "schedule", p_mean: float = -1.2, p_std: float = 1.2,
                           shift: float = 1.0, profile: str = "constant") -> torch.Tensor:
    """Training noise levels: ``schedule`` (Ho et al. 2020, Alg. 1: t ~ U{1..T}), ``lognormal`` (EDM Table 1)
    or ``mixture`` (each draw from one of the two with probability 1/2: the schedule's high levels,
    where a conditional model recalls its field, and lognormal's low ones, where it learns to remove
    the noise), times a factor from ``shift`` (:func:`resolution_noise_shift`).

    ``schedule`` draws a discrete step uniformly and returns its sigma; ``lognormal`` returns
    ``exp(p_mean + p_std n)``. ``profile`` ``constant`` multiplies every level by ``shift``;
    ``interpolated`` by ``shift ** t``, where ``t`` in [0, 1] is the draw's place in the
    distribution (the step ``i / (T - 1)``, or ``Phi(n)``): log-SNR moves linearly in ``t`` from
    the unshifted levels at the lowest noise to the shifted ones at the highest (the
    interpolated schedule of Hoogeboom et al. 2023, Sec. 3.1), so the levels below the shifted
    minimum -- where the sampler ends -- are trained too. The result is float64 of shape
    ``(batch,)`` on the generator's device (CPU without one).
    """
    if how not in SIGMA_SAMPLING:
        raise ValueError(f"unknown training sigma sampling {how!r}; valid choices are {list(SIGMA_SAMPLING)}")
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"training noise shift must be a finite factor > 0, got {shift}")
    if profile not in SHIFT_PROFILES:
        raise ValueError(f"unknown noise shift profile {profile!r}; valid choices are {list(SHIFT_PROFILES)}")
    device = generator.device if generator is not None else torch.device("cpu")
    if how == "mixture":  # each draw from one of the two, with probability 1/2
        from_schedule = sample_training_sigmas(schedule, batch, generator, "schedule", shift=shift, profile=profile)
        from_lognormal = sample_training_sigmas(schedule, batch, generator, "lognormal", p_mean, p_std, shift, profile)
        pick = torch.rand((batch,), generator=generator, device=device) < 0.5
        return torch.where(pick, from_lognormal, from_schedule)
    if how == "schedule":
        index = torch.randint(schedule.T, (batch,), generator=generator, device=device)
        sigma, t = schedule.sigmas.to(device)[index], index.double() / max(schedule.T - 1, 1)
    else:
        if not p_std > 0:
            raise ValueError(f"lognormal sigma sampling: p_std must be > 0, got {p_std}")
        n = torch.randn((batch,), generator=generator, device=device, dtype=torch.float64)
        sigma, t = torch.exp(p_mean + p_std * n), torch.special.ndtr(n)
    return sigma * (shift ** t if profile == "interpolated" else shift)


def denoising_loss(denoiser: Callable[..., torch.Tensor], x0: torch.Tensor, cond: torch.Tensor | None,
                   schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
                   weighting: str = "plain", gamma: float = 5.0, sigma_sampling: str = "schedule",
                   mask: torch.Tensor | None = None, prediction: str | None = None,
                   sigma_data: float | None = None, sigma: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """EDM eq. 2: mean over valid points of ``lambda(sigma) (D(x0 + sigma n, sigma, cond) - x0)^2``.

    For a :class:`Denoiser` the same quantity is computed from the network output,
    ``lambda c_out^2 (F - target)^2`` (EDM eq. 8), which avoids the cancellation in
    ``D - x0`` at small sigma; for any other denoiser from ``D`` directly.

    Parameters
    ----------
    denoiser : callable
        ``D(x, sigma, cond)``. Its ``prediction`` and ``sigma_data`` attributes set the
        ``plain`` weight; pass ``prediction``/``sigma_data`` for denoisers without them.
    x0 : Tensor (B, ...)
        Clean (normalized) fields.
    cond : Tensor (B, P) or None
    schedule : NoiseSchedule
        Source of ``sigma`` for ``sigma_sampling="schedule"``.
    generator : torch.Generator, optional
        Draws sigma and noise (on its device, then moved to ``x0.device``).
    mask : Tensor of bool, optional
        Broadcastable to ``x0``; True marks valid points. The loss averages over valid points
        only. Invalid points must still hold finite values (the network sees them).
    sigma, noise : Tensor, optional
        Noise levels ``(B,)`` and standard normal noise shaped like ``x0``, drawn by the caller
        (the trainer draws them for the global batch, so data-parallel ranks agree); when
        given, ``generator`` and ``sigma_sampling`` are not used.
    """
    prediction = prediction or getattr(denoiser, "prediction", None)
    if prediction is None:
        raise ValueError("denoising_loss: the denoiser has no 'prediction' attribute; pass "
                         "prediction='x0' (or 'eps', 'v') to choose the plain loss weight")
    sigma_data = float(sigma_data if sigma_data is not None else getattr(denoiser, "sigma_data", 1.0))
    sigma, noise = _training_noise(schedule, x0, generator, sigma_sampling, sigma, noise)
    weight = loss_weight(sigma, prediction, sigma_data, weighting, gamma)
    x = x0 + batch_sigma(sigma, x0).reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype) * noise
    bshape = (-1, *([1] * (x0.ndim - 1)))
    if isinstance(denoiser, Denoiser):
        F, coef = denoiser.net_output(x, sigma, cond)
        weight = weight * coef.c_out ** 2
        err = (F.float() - denoiser.target(x0, noise, sigma).float()) ** 2
    else:
        err = (denoiser(x, sigma, cond).to(torch.promote_types(x0.dtype, torch.float32)) - x0) ** 2
    err = weight.reshape(bshape).to(err.dtype) * err
    return err.mean() if mask is None else _masked_mean(err, mask, x0)


def _training_noise(schedule: NoiseSchedule, x0: torch.Tensor, generator: torch.Generator | None,
                    sigma_sampling: str, sigma: torch.Tensor | None,
                    noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise levels ``(B,)`` and standard normal noise like ``x0``, drawn unless given, on x0's device."""
    batch = x0.shape[0]
    if sigma is None:
        sigma = sample_training_sigmas(schedule, batch, generator, how=sigma_sampling)
    if noise is None:
        noise_device = generator.device if generator is not None else x0.device
        noise = torch.randn(x0.shape, generator=generator, device=noise_device, dtype=x0.dtype)
    if tuple(sigma.shape) != (batch,) or noise.shape != x0.shape:
        raise ValueError(f"denoising_loss: sigma must have shape ({batch},) and noise {tuple(x0.shape)}; "
                         f"got {tuple(sigma.shape)} and {tuple(noise.shape)}")
    return sigma.to(x0.device), noise.to(x0.device, x0.dtype)


def _masked_mean(err: torch.Tensor, mask: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """Mean of ``err`` over the points where ``mask`` is True (invalid points zeroed, so NaN-safe)."""
    mask = _valid_mask(mask, x0)
    count = mask.sum()
    if int(count) == 0:
        raise ValueError("denoising_loss: the mask marks no valid point (all False); True must mark "
                         "the points the loss uses")
    return torch.where(mask, err, torch.zeros((), dtype=err.dtype, device=err.device)).sum() / count


def _valid_mask(mask: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    mask = torch.as_tensor(mask, device=x0.device)
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a boolean tensor (True = valid point), got dtype {mask.dtype}")
    try:
        return mask.expand_as(x0)
    except RuntimeError:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to the fields of shape "
                         f"{tuple(x0.shape)}") from None
