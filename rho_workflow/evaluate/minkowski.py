"""Minkowski functionals and peak counts of 2D periodic fields, with the Gaussian expectations.

For the excursion set ``{x : f(x) > u}`` of a field on a periodic box of area ``A``, per unit
area (Schmalzing & Buchert 1997; Adler 1981):

``area_fraction``
    ``V0(u)``: fraction of cells above ``u``;
``perimeter_density``
    boundary length per unit area (length**-1), estimated by Crofton's formula from the level
    crossings along the grid rows and columns, ``L / A = (pi / 2) n_cross`` with ``n_cross``
    the crossings per unit length (exact in expectation for isotropic fields);
``euler_density``
    Euler characteristic per unit area (length**-2): ``V - E + F`` of the union of closed
    cells above ``u`` (cells joined through corners), divided by ``A``.

For a Gaussian random field of variance ``sigma0**2`` and per-direction derivative variance
``lambda sigma0**2 = <(d f / d x)**2>``, with ``nu = (u - mean) / sigma0``:

    V0 = erfc(nu / sqrt 2) / 2,
    L / A = sqrt(lambda) / 2 * exp(-nu**2 / 2),
    chi / A = lambda / (2 pi)**(3/2) * nu * exp(-nu**2 / 2).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfc

__all__ = ["minkowski_functionals", "gaussian_minkowski", "peak_counts", "derivative_variance"]


def _check_2d(fields: np.ndarray) -> np.ndarray:
    x = np.asarray(fields, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"Minkowski functionals need 2D fields (N, nx, ny); got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("Minkowski functionals: fields contain NaN or infinite values")
    return x


def _euler_characteristic(mask: np.ndarray) -> np.ndarray:
    """V - E + F of the closed cells of ``mask`` (..., nx, ny) on a periodic grid (a torus)."""
    up = np.roll(mask, 1, axis=-2)
    left = np.roll(mask, 1, axis=-1)
    corner = np.roll(up, 1, axis=-1)
    faces = mask.sum(axis=(-2, -1))
    edges = (mask | up).sum(axis=(-2, -1)) + (mask | left).sum(axis=(-2, -1))
    vertices = (mask | up | left | corner).sum(axis=(-2, -1))
    return vertices - edges + faces


def _crossings_per_length(x: np.ndarray, u: float, dx: float) -> np.ndarray:
    """Level crossings of ``u`` between neighbouring cells along both axes, per unit length."""
    above = x > u
    n_cross = (above != np.roll(above, 1, axis=-2)).sum(axis=(-2, -1)) + \
        (above != np.roll(above, 1, axis=-1)).sum(axis=(-2, -1))
    n_cells = x.shape[-1] * x.shape[-2]
    return n_cross / (2.0 * n_cells * dx)


def minkowski_functionals(fields: np.ndarray, thresholds: np.ndarray, box_size: float
                          ) -> dict[str, np.ndarray]:
    """Area fraction, perimeter density and Euler density against threshold, per field.

    Parameters
    ----------
    fields : ndarray, shape (N, n, n) or (n, n)
        Periodic 2D fields on a square box with square cells.
    thresholds : ndarray, shape (T,)
        Levels ``u`` in the units of the field.
    box_size : float
        Side of the box (length units; densities come out per that unit and its square).

    Returns
    -------
    dict of ndarray, each of shape (N, T)
        ``area_fraction`` (1), ``perimeter_density`` (length**-1), ``euler_density``
        (length**-2).
    """
    x = _check_2d(fields)
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"Minkowski functionals need square grids; got {x.shape[1:]}")
    dx = box_size / x.shape[1]
    area = box_size ** 2
    u = np.asarray(thresholds, dtype=np.float64).ravel()
    out = {k: np.empty((x.shape[0], u.size)) for k in
           ("area_fraction", "perimeter_density", "euler_density")}
    for j, level in enumerate(u):
        mask = x > level
        out["area_fraction"][:, j] = mask.mean(axis=(1, 2))
        out["perimeter_density"][:, j] = 0.5 * np.pi * _crossings_per_length(x, level, dx)
        out["euler_density"][:, j] = _euler_characteristic(mask) / area
    return out


def derivative_variance(fields: np.ndarray, box_size: float) -> float:
    """``<(d f / d x)**2>`` per direction from the spectral gradient of periodic 2D fields."""
    x = _check_2d(fields)
    n = x.shape[1]
    k1 = 2.0 * np.pi * np.fft.fftfreq(n, d=box_size / n)
    fk = np.fft.fft2(x - x.mean(axis=(1, 2), keepdims=True))
    gx = np.fft.ifft2(1j * k1[:, None] * fk).real
    gy = np.fft.ifft2(1j * k1[None, :] * fk).real
    return float(0.5 * (np.mean(gx ** 2) + np.mean(gy ** 2)))


def gaussian_minkowski(thresholds: np.ndarray, mean: float, sigma0: float,
                       derivative_var: float) -> dict[str, np.ndarray]:
    """The Gaussian expectations of the module docstring at levels ``thresholds``."""
    nu = (np.asarray(thresholds, dtype=np.float64) - mean) / sigma0
    lam = derivative_var / sigma0 ** 2
    g = np.exp(-0.5 * nu ** 2)
    return {"area_fraction": 0.5 * erfc(nu / np.sqrt(2.0)),
            "perimeter_density": 0.5 * np.sqrt(lam) * g,
            "euler_density": lam / (2.0 * np.pi) ** 1.5 * nu * g}


def peak_counts(fields: np.ndarray, edges: np.ndarray, box_size: float) -> np.ndarray:
    """Local maxima (above all 8 periodic neighbours) per unit area in bins of peak height.

    Returns an array of shape (N, len(edges) - 1) in length**-2.
    """
    x = _check_2d(fields)
    is_peak = np.ones(x.shape, dtype=bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                is_peak &= x > np.roll(x, (di, dj), axis=(1, 2))
    out = np.empty((x.shape[0], len(edges) - 1))
    for i in range(x.shape[0]):
        out[i] = np.histogram(x[i][is_peak[i]], bins=edges)[0]
    return out / box_size ** 2
