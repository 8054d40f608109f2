"""The diffusion as a nonequilibrium process: per-step quantities over t as a Dataset and a plot.

Sohl-Dickstein et al. 2015, Sec. 2.4: the bound K loses its nats along the trajectory in the
per-step KL terms ``L_{t-1}``; ``H_q(X^t|X^0)`` is analytic; and eq. 24 brackets the entropy of
every reverse step, for Gaussian diffusion between ``1/2 log(2 pi e beta_tilde_t)`` and
``1/2 log(2 pi e beta_t)`` per dimension. All in nats per dimension.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from rho_workflow.evaluate.plots import save_figure

__all__ = ["diagnostics_dataset", "plot_diagnostics"]


def diagnostics_dataset(entropy: Any, kl_steps: np.ndarray | None = None,
                        kl_per_dim: np.ndarray | None = None) -> xr.Dataset:
    """A Dataset over ``t`` (1..T) from the core's ``EntropyDiagnostics`` and, if given, the
    bound's per-step KL terms (``kl_per_dim`` ``(N, S)`` nats per dimension at ``kl_steps``)."""
    t = np.asarray(entropy.t)
    nat = {"units": "1", "comment": "nats per dimension"}
    ds = xr.Dataset(
        {"entropy_given_x0": ("t", entropy.entropy_given_x0, {**nat, "long_name": "H_q(X^t | X^0)"}),
         "reverse_entropy_lower": ("t", entropy.reverse_lower,
                                   {**nat, "long_name": "eq. 24 lower bound on H_q(X^(t-1) | X^t)"}),
         "reverse_entropy_upper": ("t", entropy.reverse_upper,
                                   {**nat, "long_name": "eq. 24 upper bound on H_q(X^(t-1) | X^t)"})},
        coords={"t": ("t", t, {"long_name": "diffusion step"})},
        attrs={"Conventions": "CF-1.8", "references": "Sohl-Dickstein et al. 2015, arXiv:1503.03585"})
    if kl_per_dim is not None:
        kl = np.full(len(t), np.nan)
        kl[np.asarray(kl_steps) - 1] = np.asarray(kl_per_dim).mean(axis=0)
        ds["kl_per_step"] = ("t", kl, {**nat, "long_name": "mean KL term L_(t-1) of the bound K"})
    return ds


def plot_diagnostics(ds: xr.Dataset, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Entropy bounds and ``H_q(X^t|X^0)`` against t; the per-step KL terms (log scale) below."""
    has_kl = "kl_per_step" in ds
    fig = Figure(figsize=(6.0, 6.0 if has_kl else 3.6))
    axes = fig.subplots(2 if has_kl else 1, 1, sharex=True, squeeze=False)[:, 0]
    t = ds["t"].values
    ax = axes[0]
    lower = ds["reverse_entropy_lower"].values
    lower = np.where(np.isfinite(lower), lower, np.nan)  # -inf at t = 1 (beta_tilde_1 = 0)
    upper = ds["reverse_entropy_upper"].values
    ax.fill_between(t, lower, upper, color="tab:orange", alpha=0.25)
    ax.plot(t, upper, color="tab:orange", lw=1.2, label="eq. 24 upper: ½ log(2πe β$_t$)")
    ax.plot(t, lower, color="tab:orange", lw=1.2, ls="--",
            label="eq. 24 lower: ½ log(2πe $\\tilde{β}_t$)")
    ax.plot(t, ds["entropy_given_x0"].values, color="tab:blue", label="H$_q$(X$^t$|X$^0$)")
    ax.set_ylabel("entropy [nats / dim]")
    ax.set_title("reverse-step entropy H(X$^{t-1}$|X$^t$) lies between the orange lines", fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    if has_kl:
        kl = ds["kl_per_step"].values
        ok = np.isfinite(kl) & (kl > 0)
        axes[1].semilogy(t[ok], kl[ok], lw=1)
        axes[1].set_ylabel("KL term L$_{t-1}$ [nats / dim]")
    axes[-1].set_xlabel("diffusion step t")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
