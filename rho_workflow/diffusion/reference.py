"""Exact denoisers of Gaussian data, the closed forms that posterior and likelihood code is checked against.

:class:`CirculantGaussianDenoiser` is ``E[x0 | x0 + sigma n]`` of a stationary Gaussian field
on a periodic grid, whose covariance is diagonal in Fourier space with eigenvalues
``lambda_k(cond)``: ``D = IFFT[lambda / (lambda + sigma^2) FFT x]``. It is differentiable
and conditional, so it stands in for a perfectly trained network in the likelihood,
observation-conditioned sampling and parameter-inference checks (tensors only).
"""

from __future__ import annotations

from typing import Callable

import torch

from rho_workflow.diffusion.precond import batch_sigma

__all__ = ["CirculantGaussianDenoiser"]


class CirculantGaussianDenoiser:
    """``D(x, sigma, cond)`` of a periodic stationary Gaussian field, ``x`` of shape ``(B, C, *grid)``.

    ``eigenvalues(cond)`` returns ``(B, *grid)`` covariance eigenvalues in FFT order (all > 0),
    the same for every channel.
    """

    prediction = "x0"
    sigma_data = 1.0

    def __init__(self, eigenvalues: Callable[[torch.Tensor | None], torch.Tensor], ndim: int):
        self.eigenvalues, self.ndim = eigenvalues, int(ndim)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        dims = tuple(range(-self.ndim, 0))
        lam = self.eigenvalues(cond).to(torch.float64)
        while lam.ndim < x.ndim:
            lam = lam.unsqueeze(1)  # broadcast over channels
        s2 = batch_sigma(sigma, x).to(torch.float64).reshape(-1, *([1] * (x.ndim - 1))) ** 2
        spec = torch.fft.fftn(x.to(torch.float64), dim=dims)
        return torch.fft.ifftn(spec * (lam / (lam + s2)), dim=dims).real.to(x.dtype)
