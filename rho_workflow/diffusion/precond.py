"""The preconditioned denoiser ``D(x, sigma, cond) = c_skip x + c_out F(c_in x, c_noise, cond)``.

Karras et al. 2022 (EDM), Table 1 and eq. 7. Whatever the network ``F`` predicts (``v``,
``eps`` or ``x0``), the rest of the package sees one function: the estimate of the clean field
``x0`` from ``x = x0 + sigma n``. Coefficients are computed in float64; the network is called
in its own dtype (that of its first parameter, else the working dtype of ``x``); the skip
connection is formed in ``promote(x.dtype, float32)`` and the result is returned in ``x.dtype``,
so a sampler that integrates in float64 gets a float64 denoiser.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import torch
from torch import nn

__all__ = ["Denoiser", "Preconditioning", "PREDICTIONS", "guided", "GuidedDenoiser"]

PREDICTIONS = ("v", "eps", "x0")


class Preconditioning(NamedTuple):
    """EDM coefficients of one batch, each float64 of shape ``(B,)``."""

    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


class Denoiser(nn.Module):
    """EDM-preconditioned denoiser (Karras et al. 2022, Table 1) around a network ``F``.

    Parameters
    ----------
    net : callable
        ``net(x_in, c_noise, cond) -> tensor shaped like x_in``; ``c_noise = log(sigma)/4`` of
        shape ``(B,)``; ``cond`` a ``(B, P)`` tensor or None (the null condition).
    prediction : {"v", "eps", "x0"}
        ``v`` (EDM): ``c_skip = sd^2/(s^2+sd^2)``, ``c_out = s sd/sqrt(s^2+sd^2)``; with
        ``sigma_data = 1`` the target is exactly the v of Salimans & Ho 2022.
        ``eps``: ``c_skip = 1``, ``c_out = -sigma`` (Ho et al. 2020). ``x0``: ``c_skip = 0``,
        ``c_out = 1``. Always ``c_in = 1/sqrt(s^2+sd^2)`` (with ``sd = 1``, the VP state).
    sigma_data : float
        Standard deviation of the (normalized) data.
    """

    def __init__(self, net: Callable[..., torch.Tensor], prediction: str = "v", sigma_data: float = 1.0):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; valid predictions are {list(PREDICTIONS)}")
        if not float(sigma_data) > 0:
            raise ValueError(f"sigma_data must be > 0 (the data's standard deviation), got {sigma_data}")
        self.net = net
        self.prediction = prediction
        self.sigma_data = float(sigma_data)

    def coefficients(self, sigma: torch.Tensor) -> Preconditioning:
        """``c_skip, c_out, c_in, c_noise`` of EDM Table 1 for noise levels ``sigma`` (float64)."""
        s = sigma.to(torch.float64)
        sd = self.sigma_data
        norm = torch.sqrt(s ** 2 + sd ** 2)
        if self.prediction == "v":
            c_skip, c_out = sd ** 2 / norm ** 2, s * sd / norm
        elif self.prediction == "eps":
            c_skip, c_out = torch.ones_like(s), -s
        else:
            c_skip, c_out = torch.zeros_like(s), torch.ones_like(s)
        return Preconditioning(c_skip, c_out, 1.0 / norm, torch.log(s) / 4)

    def net_output(self, x: torch.Tensor, sigma: torch.Tensor | float,
                   cond: torch.Tensor | None = None) -> tuple[torch.Tensor, Preconditioning]:
        """The raw network output ``F(c_in x, c_noise, cond)`` and the coefficients used."""
        sigma = batch_sigma(sigma, x)
        coef = self.coefficients(sigma)
        work = torch.promote_types(x.dtype, torch.float32)
        x_in = _bcast(coef.c_in, x).to(work) * x.to(work)
        dtype = self._net_dtype(work)
        return self.net(x_in.to(dtype), coef.c_noise.to(dtype), cond), coef

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        """EDM eq. 7: ``D(x, sigma) = c_skip x + c_out F(c_in x, c_noise, cond)``, in ``x.dtype``."""
        F, coef = self.net_output(x, sigma, cond)
        work = torch.promote_types(x.dtype, torch.float32)
        D = _bcast(coef.c_skip, x).to(work) * x.to(work) + _bcast(coef.c_out, x).to(work) * F.to(work)
        return D.to(x.dtype)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """EDM eq. 8: the regression target of ``F``, ``(x0 - c_skip (x0 + sigma n)) / c_out``.

        ``v`` with ``sigma_data = 1``: ``(sigma x0 - n)/sqrt(1 + sigma^2)``, which is ``-v`` of
        Salimans & Ho 2022 (``v = alpha n - sigma_vp x0``); ``eps``: ``n``; ``x0``: ``x0``.
        """
        sigma = batch_sigma(sigma, x0)
        coef = self.coefficients(sigma)
        s = _bcast(sigma, x0)
        x0d, nd = x0.to(torch.float64), noise.to(torch.float64)
        if self.prediction == "eps":
            tgt = nd
        elif self.prediction == "x0":
            tgt = x0d
        else:
            tgt = (x0d - _bcast(coef.c_skip, x0) * (x0d + s * nd)) / _bcast(coef.c_out, x0)
        return tgt.to(x0.dtype)

    def _net_dtype(self, default: torch.dtype) -> torch.dtype:
        if isinstance(self.net, nn.Module):
            for p in self.net.parameters():
                return p.dtype
        return default

    def extra_repr(self) -> str:
        return f"prediction={self.prediction!r}, sigma_data={self.sigma_data}"


class GuidedDenoiser:
    """Classifier-free guidance (Ho & Salimans 2022, eq. 6 in x0 form): ``D_c + w (D_c - D_null)``."""

    def __init__(self, denoiser: Callable[..., torch.Tensor], scale: float):
        self.denoiser = denoiser
        self.scale = float(scale)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float,
                 cond: torch.Tensor | None = None) -> torch.Tensor:
        d_cond = self.denoiser(x, sigma, cond)
        if cond is None:  # the null condition guides nothing
            return d_cond
        d_null = self.denoiser(x, sigma, None)
        return d_cond + self.scale * (d_cond - d_null)

    def __getattr__(self, name: str) -> Any:  # prediction, sigma_data, ... of the wrapped denoiser
        if name == "denoiser":
            raise AttributeError(name)
        return getattr(self.denoiser, name)


def guided(denoiser: Callable[..., torch.Tensor], scale: float = 0.0) -> Callable[..., torch.Tensor]:
    """Classifier-free guidance ``D_c + scale (D_c - D_null)`` (Ho & Salimans 2022); ``scale = 0`` returns ``denoiser``.

    ``D_null`` is ``denoiser(x, sigma, None)``, the null condition the network was trained on
    (condition dropout). ``scale`` must be >= 0.
    """
    if not float(scale) >= 0:
        raise ValueError(f"guidance scale must be >= 0 (0 disables guidance), got {scale}")
    if float(scale) == 0.0:
        return denoiser
    return GuidedDenoiser(denoiser, scale)


def batch_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Noise levels as a float64 ``(B,)`` tensor on ``x.device``, from a scalar or ``(B,)``."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64, device=x.device)
    if sigma.ndim == 0:
        return sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or of shape (B,) = ({x.shape[0]},) to match x of "
                         f"shape {tuple(x.shape)}, got shape {tuple(sigma.shape)}")
    return sigma


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))
