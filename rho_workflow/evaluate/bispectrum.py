"""Reduced bispectrum of periodic fields for a few triangle configurations (FFT shell estimator).

In the Fourier convention of :mod:`rho_workflow.evaluate.spectra` (``delta_k = fftn / N**d``,
``P = V <|delta_k|**2>``), the bispectrum is ``B(k1, k2, k3) = V**2 <delta_k1 delta_k2 delta_k3>``
over closed triangles ``k1 + k2 + k3 = 0`` with ``|k_i|`` in shells of width ``k_f = 2 pi / L``
around ``n_i k_f``. With ``D_i(x)`` the field filtered to shell ``i`` and ``I_i(x)`` the same
filter applied to ones in Fourier space (Scoccimarro 2015, eq. 31)::

    B = V**2 sum_x D1 D2 D3 / sum_x I1 I2 I3,
    Q = B / (P1 P2 + P2 P3 + P3 P1),

``Q`` dimensionless; a Gaussian field has ``B = 0`` in expectation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from rho_workflow.data.synthetic import wavenumber_grid

__all__ = ["DEFAULT_TRIANGLES", "reduced_bispectrum"]

#: Triangles as side lengths in units of the fundamental k_f: equilateral at three scales,
#: an isosceles and a right triangle (all fit a grid of 16 cells per side).
DEFAULT_TRIANGLES: tuple[tuple[int, int, int], ...] = ((2, 2, 2), (4, 4, 4), (6, 6, 6),
                                                       (2, 4, 4), (3, 4, 5))


def reduced_bispectrum(fields: np.ndarray, box_size: float, ndim: int,
                       triangles: Sequence[tuple[int, int, int]] = DEFAULT_TRIANGLES
                       ) -> dict[str, np.ndarray]:
    """B and Q of each triangle, averaged over the fields.

    Parameters
    ----------
    fields : ndarray, shape (N, *grid)
        Periodic fields on a cubic grid of ``ndim`` axes (1D fields have no closed triangles
        off the line and are refused).
    box_size : float
        Side of the box (length units).
    triangles : sequence of (n1, n2, n3)
        Side lengths in units of ``k_f``; each must satisfy the triangle inequality and fit
        below the Nyquist wavenumber.

    Returns
    -------
    dict
        ``bispectrum`` (T,) in length**(2 ndim) (field units cubed) and ``reduced_bispectrum``
        (T,): ``B`` and the shell power averaged over the fields before the ratio ``Q`` is
        taken (a per-field ratio would be dominated by fields of low power); ``k`` (T, 3) in
        radians per length.
    """
    x = np.asarray(fields, dtype=np.float64)
    if ndim < 2 or x.ndim != ndim + 1:
        raise ValueError(f"the bispectrum needs (N, *grid) fields of 2 or 3 grid axes; got "
                         f"shape {x.shape} with ndim={ndim}")
    n = x.shape[-1]
    k_f = 2.0 * np.pi / box_size
    kmag = wavenumber_grid(n, box_size, ndim) / k_f
    axes = tuple(range(1, ndim + 1))
    fk = np.fft.fftn(x - x.mean(axis=axes, keepdims=True), axes=axes) / n ** ndim
    volume = box_size ** ndim
    b_mean, q_mean = [], []
    for tri in triangles:
        a, b, c = sorted(tri)
        if a + b < c or c > n // 2:
            raise ValueError(f"triangle {tri} (in units of k_f): sides must satisfy the triangle "
                             f"inequality and be at most N/2 = {n // 2}")
        masks = [np.abs(kmag - s) < 0.5 for s in tri]
        filtered = [np.fft.ifftn(fk * m, axes=axes).real * n ** ndim for m in masks]
        ones = [np.fft.ifftn(m.astype(np.float64)).real * n ** ndim for m in masks]
        n_tri = np.sum(ones[0] * ones[1] * ones[2]) / n ** ndim
        per_field_b = volume ** 2 * np.sum(filtered[0] * filtered[1] * filtered[2],
                                           axis=axes) / n ** ndim / n_tri
        shell_p = [volume * np.mean(np.sum(np.abs(fk) ** 2 * m, axis=axes)) / m.sum() for m in masks]
        denom = shell_p[0] * shell_p[1] + shell_p[1] * shell_p[2] + shell_p[2] * shell_p[0]
        b_mean.append(per_field_b.mean())
        q_mean.append(per_field_b.mean() / denom)
    return {"bispectrum": np.asarray(b_mean), "reduced_bispectrum": np.asarray(q_mean),
            "k": k_f * np.asarray(triangles, dtype=np.float64)}
