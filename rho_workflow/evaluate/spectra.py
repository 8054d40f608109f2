"""Isotropic power spectra of periodic fields, in the convention of the synthetic generators.

On a periodic box of side ``L`` with ``N`` cells per side in ``d`` dimensions
(``V = L**d``), the Fourier coefficients are ``delta_k = fftn(field)[k] / N**d`` and the
power spectrum is estimated as ``P(k) = V <|delta_k|**2>``, averaged over the modes of a shell
of ``|k|`` and over all leading (sample) axes; ``k = 2 pi fftfreq(N, L / N)`` is in radians per
length unit. This matches :mod:`rho_workflow.data.synthetic`, where a Gaussian field with
spectrum ``P`` has ``<|delta_k|**2> = P(|k|) / V``.

Default shells have the width of the fundamental ``k_f = 2 pi / L`` and are centred on its
multiples ``k_f, 2 k_f, ..., (N // 2) k_f``; modes beyond ``(N // 2 + 1/2) k_f`` (the corners of
the cube) and the ``k = 0`` mode are left out.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from rho_workflow.data.synthetic import wavenumber_grid

__all__ = ["shell_bins", "power_spectrum", "model_power_spectrum", "spectrum_error",
           "infer_grid_ndim"]


def infer_grid_ndim(shape: tuple[int, ...]) -> int:
    """Number of trailing axes of equal length (at most 3): the grid axes of a cubic field.

    A shape ``(n, n)`` is read as one 2D field. A shape ``(n, n, n)`` is ambiguous (one 3D field
    or ``n`` fields of ``n x n``) and raises: pass ``ndim`` explicitly there.
    """
    if len(shape) == 0:
        raise ValueError("a field needs at least one grid axis; got a 0-d array")
    count = 0
    for s in reversed(shape):
        if s != shape[-1] or count == 3:
            break
        count += 1
    if len(shape) == 3 and count == 3:
        raise ValueError(
            f"fields of shape {shape} are ambiguous: one 3D field or {shape[0]} 2D fields; "
            "pass ndim=3 or ndim=2"
        )
    return count


def shell_bins(n: int, box_size: float, ndim: int, n_bins: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shells k_f (i - 1/2) <= |k| < k_f (i + 1/2), i = 1 .. N // 2, or n_bins equal shells.

    Parameters
    ----------
    n, box_size, ndim
        Grid cells per side, box side and number of dimensions.
    n_bins : int, optional
        Number of equal-width shells between ``k_f / 2`` and ``(N // 2 + 1/2) k_f``;
        default ``N // 2`` (shells of width ``k_f``).

    Returns
    -------
    bin_index : ndarray of int, shape (n,) * ndim
        Shell of each FFT mode, -1 for modes left out.
    k_centers : ndarray, shape (n_bins,)
        Mean ``|k|`` of the modes in each shell (NaN for an empty shell).
    counts : ndarray of int, shape (n_bins,)
        Number of FFT modes in each shell (both members of each Hermitian pair).
    """
    k = wavenumber_grid(n, box_size, ndim)
    k_f = 2.0 * np.pi / box_size
    n_bins = n // 2 if n_bins is None else int(n_bins)
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins} must be a positive number of shells")
    edges = np.linspace(0.5 * k_f, (n // 2 + 0.5) * k_f, n_bins + 1)
    idx = np.searchsorted(edges, k, side="right") - 1
    idx[(k < edges[0]) | (k >= edges[-1])] = -1
    valid = idx >= 0
    counts = np.bincount(idx[valid], minlength=n_bins)
    k_sum = np.bincount(idx[valid], weights=k[valid], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        k_centers = np.where(counts > 0, k_sum / np.maximum(counts, 1), np.nan)
    return idx, k_centers, counts


def power_spectrum(fields: np.ndarray, box_size: float, n_bins: int | None = None, *,
                   ndim: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(k) = V <|fftn(delta)_k / N^d|^2>_shell, averaged over shells and leading axes.

    Parameters
    ----------
    fields : ndarray, shape (..., N, ..., N)
        One periodic field or a batch; the last ``ndim`` axes are the grid.
    box_size : float
        Side of the periodic box in length units; ``k`` comes out in radians per that unit
        and ``P`` in that unit to the ``ndim``.
    n_bins : int, optional
        Number of shells (see :func:`shell_bins`).
    ndim : int, optional
        Number of grid axes; default :func:`infer_grid_ndim` of the shape.

    Returns
    -------
    k_centers, p_k, counts : ndarray, shape (n_bins,)
        Mean ``|k|`` per shell, power, and number of modes per shell (per field). Empty shells
        have ``p_k = NaN`` and ``counts = 0``.
    """
    x = np.asarray(fields, dtype=np.float64)
    ndim = infer_grid_ndim(x.shape) if ndim is None else int(ndim)
    if ndim < 1 or ndim > x.ndim:
        raise ValueError(f"ndim={ndim} grid axes do not fit fields of shape {x.shape}")
    grid = x.shape[-ndim:]
    if any(s != grid[0] for s in grid):
        raise ValueError(f"power_spectrum needs a cubic grid; got grid axes {grid}")
    if not np.all(np.isfinite(x)):
        raise ValueError("power_spectrum: fields contain NaN or infinite values")
    n = grid[0]
    idx, k_centers, counts = shell_bins(n, box_size, ndim, n_bins)
    axes = tuple(range(-ndim, 0))
    power = np.abs(np.fft.fftn(x, axes=axes)) ** 2 / float(n ** ndim) ** 2
    power = power.reshape((-1,) + grid).mean(axis=0)
    valid = idx >= 0
    p_sum = np.bincount(idx[valid], weights=power[valid], minlength=len(counts))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_k = np.where(counts > 0, box_size ** ndim * p_sum / np.maximum(counts, 1), np.nan)
    return k_centers, p_k, counts


def model_power_spectrum(spectrum: Callable[[np.ndarray], np.ndarray], n: int, box_size: float,
                         ndim: int, n_bins: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """<P(|k|)>_shell: a model spectrum averaged over the same modes as :func:`power_spectrum`.

    This is the expectation of the estimator for a field with spectrum ``P``, free of the bias
    that evaluating ``P`` at the shell centre would carry for a curved spectrum.
    """
    idx, k_centers, counts = shell_bins(n, box_size, ndim, n_bins)
    p = np.asarray(spectrum(wavenumber_grid(n, box_size, ndim)), dtype=np.float64)
    valid = idx >= 0
    p_sum = np.bincount(idx[valid], weights=p[valid], minlength=len(counts))
    with np.errstate(invalid="ignore", divide="ignore"):
        p_k = np.where(counts > 0, p_sum / np.maximum(counts, 1), np.nan)
    return k_centers, p_k, counts


def spectrum_error(p_gen: np.ndarray, p_true: np.ndarray) -> float:
    """median_k |P_gen(k) / P_true(k) - 1| over shells where both are finite and P_true > 0."""
    a = np.asarray(p_gen, dtype=np.float64)
    b = np.asarray(p_true, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(
            f"spectrum_error: p_gen shape {a.shape} differs from p_true shape {b.shape}; "
            "estimate both with the same grid and n_bins"
        )
    ok = np.isfinite(a) & np.isfinite(b) & (b > 0)
    if not np.any(ok):
        raise ValueError("spectrum_error: no shell has finite spectra with P_true > 0")
    return float(np.median(np.abs(a[ok] / b[ok] - 1.0)))
