"""Figures of posteriors: the corner plot of inferred parameters, and a conditioned field.

Both read the xarray Datasets the package writes (the posterior of
:func:`rho_workflow.training.inference.infer_parameters`, a conditioned sweep) and draw on
matplotlib's Agg canvas, written atomically (:func:`rho_workflow.evaluate.plots.save_figure`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from matplotlib.figure import Figure

from rho_workflow.evaluate.plots import save_figure

__all__ = ["plot_corner", "plot_conditioned_field"]


def _label(name: str, units: str | None) -> str:
    return name if units in (None, "", "1") else f"{name} [{units}]"


def _hpd_levels(h: np.ndarray, masses: tuple[float, ...] = (0.95, 0.68)) -> list[float]:
    """Density levels enclosing ``masses`` of a 2D histogram (highest-density regions)."""
    flat = np.sort(h.reshape(-1))[::-1]
    cum = np.cumsum(flat) / max(flat.sum(), 1e-300)
    levels = [float(flat[min(np.searchsorted(cum, m), flat.size - 1)]) for m in masses]
    return sorted(set(levels))


def plot_corner(posterior: Any, path: str | os.PathLike, truth: Mapping[str, float] | None = None,
                bins: int = 30) -> Path:
    """Corner plot of the continuous parameters' draws: marginals, 68/95% regions, mean and intervals.

    ``truth`` (optional) marks known parameter values (a check on generated data).
    """
    summary = json.loads(posterior.attrs["summary"])
    names = [n for n, s in summary.items() if "mean" in s]
    k = len(names)
    if k == 0:
        raise ValueError("the posterior has no continuous parameter to plot")
    fig = Figure(figsize=(2.6 * k + 0.6, 2.6 * k + 0.4))
    draws = {n: np.asarray(posterior[f"{n}_draws"].values, dtype=np.float64) for n in names}
    ranges = {n: (float(np.min(draws[n])), float(np.max(draws[n]))) for n in names}
    for i, ni in enumerate(names):
        for j, nj in enumerate(names):
            if j > i:
                continue
            ax = fig.add_subplot(k, k, i * k + j + 1)
            if i == j:
                ax.hist(draws[ni], bins=bins, range=ranges[ni], density=True, color="0.55", histtype="stepfilled")
                s = summary[ni]
                for q in s["ci68"]:
                    ax.axvline(q, color="C0", ls="--", lw=1)
                ax.axvline(s["mean"], color="C0", lw=1.5)
                ax.set_title(f"{ni} = {s['mean']:.3g} ± {s['sd']:.2g}", fontsize=9)
                ax.set_yticks([])
                if truth and ni in truth:
                    ax.axvline(truth[ni], color="C3", lw=1.5)
            else:
                h, xe, ye = np.histogram2d(draws[nj], draws[ni], bins=bins, range=[ranges[nj], ranges[ni]])
                ax.imshow(h.T, origin="lower", aspect="auto", cmap="Greys",
                          extent=(xe[0], xe[-1], ye[0], ye[-1]))
                levels = _hpd_levels(h)
                if len(levels) >= 1 and h.max() > 0:
                    xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
                    ax.contour(xc, yc, h.T, levels=levels, colors=["C0"], linewidths=1)
                if truth and ni in truth and nj in truth:
                    ax.plot(truth[nj], truth[ni], "x", color="C3", ms=8, mew=2)
            if i == k - 1:
                ax.set_xlabel(_label(nj, summary[nj].get("units")))
            else:
                ax.set_xticklabels([])
            if j == 0 and i != 0:
                ax.set_ylabel(_label(ni, summary[ni].get("units")))
    info = json.loads(posterior.attrs.get("inference", "{}"))
    fig.suptitle(f"posterior ({info.get('method', '?')}, likelihood {posterior.attrs.get('likelihood', '?')}); "
                 "lines: mean and 68% interval" + ("; red: truth" if truth else ""), fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_conditioned_field(mean: np.ndarray, sd: np.ndarray, path: str | os.PathLike, *,
                           extent: tuple[float, float, float, float] | None = None,
                           stations: Mapping[str, np.ndarray] | None = None, units: str = "1",
                           dims: tuple[str, str] = ("x", "y"), dim_units: tuple[str, str] = ("1", "1"),
                           title: str = "") -> Path:
    """Posterior mean and standard deviation of a 2D conditioned field, stations marked."""
    fig = Figure(figsize=(9.5, 4.0))
    for c, (data, name, cmap) in enumerate(((mean, "posterior mean", "viridis"), (sd, "posterior sd", "magma"))):
        ax = fig.add_subplot(1, 2, c + 1)
        im = ax.imshow(np.asarray(data).T, origin="lower", extent=extent, cmap=cmap, aspect="auto")
        fig.colorbar(im, ax=ax, label=_label(name, units))
        if stations is not None:
            ax.plot(stations[dims[0]], stations[dims[1]], "o", mfc="none", mec="w", ms=5)
        ax.set_xlabel(_label(dims[0], dim_units[0]))
        ax.set_ylabel(_label(dims[1], dim_units[1]))
        ax.set_title(name)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
