"""Evaluation figures: power spectra, value histograms and galleries of fields.

Figures are drawn on matplotlib's Agg canvas (no display, no pyplot global state) and written
atomically (:func:`rho_workflow.atomic.atomic_path`), so an interrupted run never leaves a
truncated PNG.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from rho_workflow.atomic import atomic_path

__all__ = ["plot_spectra", "plot_value_histograms", "plot_field_gallery", "save_figure"]


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically."""
    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def _units_label(units: str | None) -> str:
    return "" if units in (None, "") else f" [{units}]"


def plot_spectra(k: np.ndarray, spectra: Mapping[str, np.ndarray], k_units: str, p_units: str,
                 path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Log-log plot of P(k) for each label, axes in physical units.

    Parameters
    ----------
    k : ndarray, shape (K,)
        Shell wavenumbers (radians per length unit).
    spectra : dict
        ``label -> P`` with ``P`` of shape (K,); non-positive or NaN entries are not drawn.
    k_units, p_units : str
        UDUNITS strings of ``k`` and ``P`` (e.g. ``"Mparsec-1"``, ``"Mparsec2"``).
    path : path-like
        PNG to write.
    """
    k = np.asarray(k, dtype=np.float64)
    if k.ndim != 1 or k.size == 0:
        raise ValueError(f"plot_spectra: k must be a non-empty 1D array; got shape {k.shape}")
    if not spectra:
        raise ValueError("plot_spectra: spectra is empty; pass {label: P(k)}")
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.add_subplot()
    for label, p in spectra.items():
        p = np.asarray(p, dtype=np.float64)
        if p.shape != k.shape:
            raise ValueError(
                f"plot_spectra: spectrum {label!r} has shape {p.shape} but k has shape "
                f"{k.shape}; estimate every spectrum on the same shells"
            )
        ok = np.isfinite(p) & (p > 0) & np.isfinite(k) & (k > 0)
        ax.loglog(k[ok], p[ok], marker="o", ms=3, label=str(label))
    ax.set_xlabel(f"wavenumber k{_units_label(k_units)}")
    ax.set_ylabel(f"power spectrum P(k){_units_label(p_units)}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def plot_value_histograms(values: Mapping[str, np.ndarray], units: str | None,
                          path: str | os.PathLike, *, bins: int = 50,
                          title: str | None = None) -> Path:
    """Density-normalized histograms of the pooled field values of each label, shared bins."""
    if not values:
        raise ValueError("plot_value_histograms: values is empty; pass {label: array}")
    pooled = {}
    for label, v in values.items():
        v = np.asarray(v, dtype=np.float64).ravel()
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise ValueError(f"plot_value_histograms: {label!r} has no finite values")
        pooled[label] = v
    low = min(v.min() for v in pooled.values())
    high = max(v.max() for v in pooled.values())
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, bins + 1)
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.add_subplot()
    for label, v in pooled.items():
        ax.hist(v, bins=edges, density=True, histtype="step", lw=1.5, label=str(label))
    ax.set_xlabel(f"field value{_units_label(units)}")
    ax.set_ylabel("probability density" + ("" if units in (None, "", "1") else f" [{units}-1]"))
    ax.legend()
    if title:
        ax.set_title(title)
    return save_figure(fig, path)


def _panel_data(field: np.ndarray, i: int) -> np.ndarray:
    f = np.asarray(field, dtype=np.float64)
    if f.ndim == 3:
        return f[:, :, f.shape[2] // 2]
    if f.ndim in (1, 2):
        return f
    raise ValueError(
        f"plot_field_gallery: field {i} has shape {f.shape}; fields must be 1D, 2D or 3D "
        "(a 3D field shows its central slice along the last axis)"
    )


def _gallery_panels(fields: Sequence[np.ndarray] | np.ndarray, titles: Sequence[str],
                    extent: tuple[float, ...] | None) -> list[np.ndarray]:
    """The panels of :func:`plot_field_gallery`, after checking fields, titles and extent agree."""
    fields = list(fields)
    if len(fields) == 0:
        raise ValueError("plot_field_gallery: no fields to plot")
    if len(titles) != len(fields):
        raise ValueError(
            f"plot_field_gallery: {len(fields)} fields but {len(titles)} titles; pass one "
            "title per field"
        )
    shapes = {np.shape(f) for f in fields}
    if len(shapes) != 1:
        raise ValueError(f"plot_field_gallery: fields have different shapes {sorted(shapes)}")
    panels = [_panel_data(f, i) for i, f in enumerate(fields)]
    want = 2 if panels[0].ndim == 1 else 4
    if extent is not None and len(extent) != want:
        raise ValueError(
            f"plot_field_gallery: extent {tuple(extent)} has {len(extent)} values; "
            f"{panels[0].ndim}D panels need {want}: (x0, x1) for lines, "
            "(x0, x1, y0, y1) for images"
        )
    return panels


def _draw_panel(ax: Axes, panel: np.ndarray, extent: tuple[float, ...] | None, vmin: float,
                vmax: float, units: str | None) -> AxesImage | None:
    """A line (1D panel) or an image (2D panel, first axis horizontal); returns the image or None."""
    if panel.ndim == 1:
        x = (np.arange(panel.size) if extent is None
             else np.linspace(extent[0], extent[1], panel.size))
        ax.plot(x, panel)
        ax.set_ylim(vmin, vmax + 0.05 * (vmax - vmin) + 1e-300)
        ax.set_ylabel(f"value{_units_label(units)}")
        return None
    return ax.imshow(panel.T, origin="lower", extent=extent, vmin=vmin, vmax=vmax,
                     cmap="viridis", aspect="equal")


def plot_field_gallery(fields: Sequence[np.ndarray] | np.ndarray, titles: Sequence[str],
                       path: str | os.PathLike, extent: tuple[float, ...] | None = None,
                       units: str | None = None, *, axis_labels: Sequence[str] | None = None,
                       ncols: int = 4) -> Path:
    """Panels of fields: images of 2D fields, central slices of 3D ones, lines of 1D ones.

    Images show ``field[:, :, n // 2]`` of a 3D field and ``field.T`` (first axis horizontal)
    with ``origin="lower"``, on one colour scale shared by all panels.

    Parameters
    ----------
    fields : sequence of ndarray, all of one shape
        A list of fields or an array with the fields along its first axis.
    titles : sequence of str
        One title per field.
    path : path-like
        PNG to write.
    extent : tuple, optional
        ``(x0, x1, y0, y1)`` of 2D/3D panels, or ``(x0, x1)`` of 1D ones (coordinate values).
    units : str, optional
        Units of the field values (colour bar or y axis label).
    axis_labels : sequence of str, optional
        Labels of the panels' x (and y) axes, with their units, e.g. ``("x [Mparsec]", "y [Mparsec]")``.
    ncols : int
        Panels per row.
    """
    panels = _gallery_panels(fields, titles, extent)
    ncols = max(1, min(ncols, len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.0 * ncols + 0.8, 2.8 * nrows), layout="constrained")
    vmin = min(float(p.min()) for p in panels)
    vmax = max(float(p.max()) for p in panels)
    axes, image = [], None
    for i, (panel, title) in enumerate(zip(panels, titles)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        axes.append(ax)
        image = _draw_panel(ax, panel, extent, vmin, vmax, units)  # all panels share ndim
        ax.set_title(str(title), fontsize=9)
        if axis_labels:
            ax.set_xlabel(axis_labels[0], fontsize=8)
            if panel.ndim > 1 and len(axis_labels) > 1:
                ax.set_ylabel(axis_labels[1], fontsize=8)
    if image is not None:  # one colour bar: all panels share vmin and vmax
        fig.colorbar(image, ax=axes, shrink=0.9, label=f"value{_units_label(units)}")
    return save_figure(fig, path)
