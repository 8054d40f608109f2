"""Figures of the metrics Dataset (:mod:`rho_workflow.evaluate.point_metrics`), physical units on
every axis: spectrum ratio with its noise-floor band, one-point PDFs, Minkowski functionals, and
a score against the parameters with training and evaluated points marked."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from rho_workflow.evaluate.plots import save_figure

__all__ = ["plot_spectrum_ratios", "plot_pdfs", "plot_minkowski", "plot_metric_map",
           "plot_projections", "plot_comparison", "case_label"]


def _u(units: str | None) -> str:
    return "" if units in (None, "", "1") else f" [{units}]"


def case_label(ds: xr.Dataset, case: int) -> str:
    """``index=-2.1, amplitude=1.3 Mparsec2 (held out)`` for one case."""
    c = ds.isel(case=case)
    parts = []
    for name in _param_names(ds):
        v = c[name].item()
        units = ds[name].attrs.get("units", "1")
        text = f"{v:.3g}" if isinstance(v, float) else str(v)
        parts.append(f"{name}={text}" + ("" if units in ("", "1") else f" {units}"))
    seen = "training point" if bool(c["seen_in_training"].item()) else "held out"
    return ", ".join(parts) + f" ({seen})"


def _param_names(ds: xr.Dataset) -> list[str]:
    return [c for c in ds.coords if ds[c].dims == ("case",) and c not in ("case", "seen_in_training")]


def _grid(n: int, width: float = 3.4, height: float = 2.8) -> tuple[Figure, list]:
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def plot_spectrum_ratios(ds: xr.Dataset, path: str | os.PathLike, *, title: str) -> Path:
    """P_gen / P_ref against k per case, with the 1- and 2-sigma noise-floor band around 1."""
    cases = range(ds.sizes["case"])
    fig, axes = _grid(len(cases))
    k = ds["k"].values
    for ax, case in zip(axes, cases):
        c = ds.isel(case=case)
        floor = c["spectrum_ratio_floor"].values
        # a power ratio is positive: the Gaussian band is cut at 0
        ax.fill_between(k, np.maximum(1 - 2 * floor, 0), 1 + 2 * floor, color="0.85", label="noise floor, 2σ")
        ax.fill_between(k, np.maximum(1 - floor, 0), 1 + floor, color="0.65", label="noise floor, 1σ")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.plot(k, c["spectrum_ratio"].values, "o-", ms=3, color="tab:red", label="generated / simulated")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels of a short decade overlap
        ax.set_xlabel(f"wavenumber k{_u(ds['k'].attrs.get('units'))}", fontsize=8)
        ax.set_ylabel("P$_{gen}$(k) / P$_{sim}$(k)", fontsize=8)
        ax.set_title(case_label(ds, case) + f"\nN$_{{gen}}$={int(c['n_generated'])}, "
                     f"N$_{{sim}}$={int(c['n_reference'])}", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6, loc="best")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_pdfs(ds: xr.Dataset, path: str | os.PathLike, *, title: str) -> Path:
    """One-point PDFs of generated and simulated values per case, with W1 and its floor."""
    cases = range(ds.sizes["case"])
    fig, axes = _grid(len(cases))
    units = ds["value"].attrs.get("units", "1")
    for ax, case in zip(axes, cases):
        c = ds.isel(case=case)
        x = c["value"].values
        ax.step(x, c["pdf_reference"].values, where="mid", color="k", label="simulated")
        ax.step(x, c["pdf_generated"].values, where="mid", color="tab:red", label="generated")
        ax.set_xlabel(f"field value{_u(units)}", fontsize=8)
        ax.set_ylabel("probability density" + _u(ds["pdf_reference"].attrs.get("units")), fontsize=8)
        ax.set_title(f"{case_label(ds, case)}\nW1 = {float(c['wasserstein_1']):.3g}, floor "
                     f"{float(c['wasserstein_1_floor']):.3g}{_u(units)}", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


_MF = (("area_fraction", "area fraction V$_0$"), ("perimeter_density", "perimeter per area"),
       ("euler_density", "Euler characteristic per area"))


def plot_minkowski(ds: xr.Dataset, path: str | os.PathLike, *, case: int, title: str) -> Path:
    """The three Minkowski functionals against threshold at one case; bands: the standard error
    of the simulated mean (std over fields / sqrt(N_sim))."""
    c = ds.isel(case=case)
    fig = Figure(figsize=(11.0, 3.2), layout="constrained")
    axes = fig.subplots(1, 3)
    t = c["threshold"].values
    n_ref = int(c["n_reference"])
    for ax, (name, label) in zip(axes, _MF):
        ref, se = c[f"{name}_reference"].values, c[f"{name}_reference_std"].values / math.sqrt(n_ref)
        ax.fill_between(t, ref - 2 * se, ref + 2 * se, color="0.8", label="simulated ± 2 s.e.")
        ax.plot(t, ref, color="k", label="simulated")
        ax.plot(t, c[f"{name}_generated"].values, "o-", ms=3, color="tab:red", label="generated")
        ax.set_xlabel(f"threshold{_u(ds['threshold'].attrs.get('units'))}", fontsize=8)
        ax.set_ylabel(label + _u(ds[f"{name}_reference"].attrs.get("units")), fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{title}: {case_label(ds, case)}", fontsize=9)
    return save_figure(fig, path)


def _positions(values: Sequence[Any]) -> tuple[np.ndarray, list[str] | None]:
    """Numeric values as floats; other values (categories, dates) as their index among the
    sorted distinct values, with those as tick labels."""
    try:
        return np.asarray(values, dtype=float), None
    except (TypeError, ValueError):
        labels = sorted({str(v) for v in values})
        return np.asarray([labels.index(str(v)) for v in values], dtype=float), labels


def plot_metric_map(ds: xr.Dataset, metric: str, path: str | os.PathLike, *,
                    training_points: Sequence[Mapping[str, Any]], title: str) -> Path:
    """``metric_excess`` (score / noise floor) of each case over the first two parameters,
    training design points as grey crosses; evaluated training points as squares, held-out
    points as circles."""
    names = _param_names(ds)
    value = ds[f"{metric}_excess"].values if f"{metric}_excess" in ds else ds[metric].values
    label = f"{metric} / noise floor" if f"{metric}_excess" in ds else metric
    fig = Figure(figsize=(5.6, 4.2), layout="constrained")
    ax = fig.add_subplot()
    x_name = names[0]
    y_name = names[1] if len(names) > 1 else None
    x_all, x_ticks = _positions([p[x_name] for p in training_points] + list(ds[x_name].values))
    if y_name:
        y_all, y_ticks = _positions([p[y_name] for p in training_points] + list(ds[y_name].values))
    else:
        y_all, y_ticks = np.zeros_like(x_all), None
    n_train = len(training_points)
    ax.scatter(x_all[:n_train], y_all[:n_train], marker="x", s=14, color="0.6", zorder=1)
    seen = ds["seen_in_training"].values.astype(bool)
    xs, ys = x_all[n_train:], y_all[n_train:]
    finite = value[np.isfinite(value)]
    vmax = max(2.0, float(finite.max()) if finite.size else 2.0)
    for mask, marker, what in ((~seen, "o", "evaluated, held out"), (seen, "s", "evaluated, training point")):
        if mask.any():
            sc = ax.scatter(xs[mask], ys[mask], c=value[mask], marker=marker, s=90, cmap="magma_r",
                            vmin=0.0, vmax=vmax, edgecolors="k", zorder=2)
    fig.colorbar(sc, ax=ax, label=label + " (≤ 1: within sampling noise)")
    ax.set_xlabel(f"{x_name}{_u(ds[x_name].attrs.get('units'))}")
    ax.set_ylabel(f"{y_name}{_u(ds[y_name].attrs.get('units'))}" if y_name else "")
    for ticks, axis in ((x_ticks, ax.xaxis), (y_ticks, ax.yaxis)):
        if ticks is not None:  # categorical values: one tick per category
            axis.set_ticks(range(len(ticks)), labels=ticks)
    if not y_name:
        ax.set_yticks([])
    proxies = [Line2D([], [], ls="", marker="x", color="0.6", label="training runs")]
    proxies += [Line2D([], [], ls="", marker=m, ms=9, mfc="white", mec="k", label=what)
                for m, what in (("o", "evaluated, held out"), ("s", "evaluated, training point"))]
    ax.legend(handles=proxies, fontsize=7, loc="best")  # shapes only: the colour is the score
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_projections(pairs: Sequence[tuple[np.ndarray, np.ndarray]], labels: Sequence[str],
                     path: str | os.PathLike, *, extent: tuple[float, float, float, float],
                     axis_labels: tuple[str, str], units: str | None, title: str) -> Path:
    """3D fields: for each case (row), the central slice and the projection (mean along the
    third axis) of one generated and one simulated field; generated and simulated panels of a
    kind share one colour scale."""
    rows = list(zip(pairs, labels))[:4]
    fig = Figure(figsize=(12.0, 2.9 * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False)
    views = []
    for (gen, ref), _ in rows:
        g, r = np.asarray(gen[0], dtype=float), np.asarray(ref[0], dtype=float)
        n = g.shape[2] // 2
        views.append([g[:, :, n], r[:, :, n], g.mean(axis=2), r.mean(axis=2)])
    names = ["generated: central slice", "simulated: central slice",
             "generated: projection", "simulated: projection"]
    for pair in ((0, 1), (2, 3)):  # generated and simulated share a colour scale
        panels = [v[j] for v in views for j in pair]
        lo = min(float(p.min()) for p in panels)
        hi = max(float(p.max()) for p in panels)
        for j in pair:
            for i, v in enumerate(views):
                ax = axes[i, j]
                image = ax.imshow(v[j].T, origin="lower", extent=extent, vmin=lo, vmax=hi, cmap="viridis")
                ax.set_title(f"{names[j]}\n{rows[i][1]}", fontsize=7)
                ax.set_xlabel(axis_labels[0], fontsize=7)
                ax.set_ylabel(axis_labels[1], fontsize=7)
                ax.tick_params(labelsize=6)
        kind = "central slice" if pair[0] == 0 else "mean along the third axis"
        fig.colorbar(image, ax=list(axes[:, pair[0]]) + list(axes[:, pair[1]]), shrink=0.6,
                     location="bottom", label=f"{kind}{_u(units)}")
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def plot_comparison(ds: xr.Dataset, path: str | os.PathLike, *, title: str) -> Path:
    """Each compared score divided by its noise floor, per evaluated point and variant (the
    model and e.g. 1000-step DDPM or the hash encoder at the same points); the dotted lines
    at 1 and 2 mark sampling noise. Training points are on the right of the dashed line."""
    names = [n for n in ("spectrum_error", "wasserstein_1", "mean_field_rmse")
             if f"compare_{n}" in ds and np.isfinite(ds[f"{n}_floor"].values).any()]
    if not names:
        names = [n for n in ("spectrum_error", "wasserstein_1") if f"compare_{n}" in ds][:1]
    seen = ds["seen_in_training"].values.astype(bool)
    order = np.concatenate([np.flatnonzero(~seen), np.flatnonzero(seen)])
    fig, axes = _grid(len(names), width=5.2, height=3.8)
    markers = "os^Dv<>"
    for ax, name in zip(axes, names):
        floor = ds[f"{name}_floor"].values[order]
        scaled = np.all(np.isfinite(floor) & (floor > 0))
        for j, variant in enumerate(ds["variant"].values):
            y = ds[f"compare_{name}"].values[j][order]
            ax.plot(np.arange(len(order)) + 0.12 * (j - 1), y / floor if scaled else y,
                    ls="", marker=markers[j % len(markers)], ms=6, label=str(variant))
        if scaled:
            for level in (1.0, 2.0):
                ax.axhline(level, color="0.5", ls=":", lw=1)
            ax.set_ylabel(f"{name} / noise floor")
        else:
            ax.set_ylabel(f"{name}{_u(ds[name].attrs.get('units'))}")
        if seen.any() and (~seen).any():
            ax.axvline((~seen).sum() - 0.5, color="0.3", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xticks(range(len(order)), labels=[_short_label(ds, int(i)) for i in order], fontsize=6)
        ax.set_xlabel("point: " + " / ".join(f"{n}{_u(ds[n].attrs.get('units'))}"
                                            for n in _param_names(ds)), fontsize=8)
        ax.set_title(name.replace("_", " "), fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _short_label(ds: xr.Dataset, case: int) -> str:
    """A case's parameter values one per line, then ``held out`` or ``train`` (the parameter
    names and units are on the axis label)."""
    c = ds.isel(case=case)
    values = [c[n].item() for n in _param_names(ds)]
    text = "\n".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in values)
    return text + ("\ntrain" if bool(c["seen_in_training"].item()) else "\nheld out")
