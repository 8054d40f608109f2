"""Gaussian and lognormal random fields with power-law spectra, and their exact log-density.

``gaussian-field``
    2D Gaussian random field with power-law spectrum ``P(k) = A (k / k_pivot)**n`` on a
    periodic box of side ``box_size`` Mpc.
``lognormal-field``
    ``exp(g - sigma_g**2 / 2)`` of such a Gaussian field ``g``: a positive density in units of
    its mean, the usual toy model of the cosmological matter density.

Fourier convention of the random fields (used by :mod:`rho_workflow.evaluate.spectra` too):
on a periodic box of side ``L`` with ``N`` cells per side in ``d`` dimensions (volume
``V = L**d``, cell volume ``dV = V / N**d``)::

    delta(x) = sum_k delta_k exp(i k.x),   delta_k = fftn(delta)[k] / N**d,
    < |delta_k|**2 > = P(|k|) / V  for k != 0,    delta_0 = 0,

with ``k = 2 pi * fftfreq(N, L / N)`` in radians per length unit. A mode that is its own
Hermitian partner (``k = -k`` modulo the grid, i.e. Nyquist planes of even ``N``) is real with
variance ``P / V``; every other pair has independent real and imaginary parts of variance
``P / (2 V)``. The covariance of the grid values is the circulant matrix with eigenvalues
``lambda_k = P(|k|) / dV`` (``lambda_0 = 0``).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BOX_SIZE_MPC", "K_PIVOT", "MPC", "wavenumber_grid", "power_law_spectrum",
    "gaussian_random_field", "gaussian_field_variance", "lognormal_field",
    "gaussian_field_log_density", "mean_mode_eigenvalue", "circulant_eigenvalues",
    "gaussian_field_with_mean", "gaussian_field_full_log_density",
]

#: Default box of the cosmology-like random fields: side in Mpc and pivot wavenumber in
#: rad/Mpc. With N = 32 the modes span 0.063 .. 1.0 rad/Mpc around the pivot, and the
#: Gaussian field's variance stays between about 0.04 and 0.9 over the default sweep.
BOX_SIZE_MPC = 100.0
K_PIVOT = 0.5
#: UDUNITS spelling of the megaparsec ("Mpc" is not a UDUNITS symbol; pint reads both).
MPC = "Mparsec"


def wavenumber_grid(n: int, box_size: float, ndim: int) -> np.ndarray:
    """|k| on the full FFT grid, k_j = 2 pi fftfreq(n, box_size / n) (radians per length)."""
    if n < 2 or ndim < 1:
        raise ValueError(f"grid n={n}, ndim={ndim}: need n >= 2 cells per side and ndim >= 1")
    if not box_size > 0:
        raise ValueError(f"box_size={box_size} must be a positive length")
    k1 = 2.0 * np.pi * np.fft.fftfreq(n, d=box_size / n)
    k2 = sum(np.meshgrid(*([k1 ** 2] * ndim), indexing="ij"))
    return np.sqrt(k2)


def power_law_spectrum(k: np.ndarray, index: float, amplitude: float,
                       k_pivot: float = K_PIVOT) -> np.ndarray:
    """P(k) = A (k / k_pivot)^n for k > 0 and P(0) = 0 (the field has zero mean).

    ``A`` has the units of P (length**ndim, e.g. Mpc2 in 2D) and ``k_pivot`` those of ``k``.
    """
    if not amplitude > 0:
        raise ValueError(f"spectral amplitude A={amplitude} must be positive")
    if not k_pivot > 0:
        raise ValueError(f"pivot wavenumber k_pivot={k_pivot} must be positive")
    k = np.asarray(k, dtype=np.float64)
    out = np.zeros_like(k)
    pos = k > 0
    out[pos] = amplitude * (k[pos] / k_pivot) ** index
    return out


def _eigenvalues(index: float, amplitude: float, n: int, box_size: float, ndim: int,
                 k_pivot: float) -> np.ndarray:
    """lambda_k = P(|k|) / dV: eigenvalues of the grid covariance (lambda_0 = 0)."""
    cell_volume = (box_size / n) ** ndim
    return power_law_spectrum(wavenumber_grid(n, box_size, ndim), index, amplitude,
                              k_pivot) / cell_volume


def gaussian_field_variance(index: float, amplitude: float, n: int = 32,
                            box_size: float = BOX_SIZE_MPC, ndim: int = 2,
                            k_pivot: float = K_PIVOT) -> float:
    """sigma^2 = sum_{k != 0} P(|k|) / V: exact variance of one grid value of the field."""
    p = power_law_spectrum(wavenumber_grid(n, box_size, ndim), index, amplitude, k_pivot)
    return float(p.sum() / box_size ** ndim)


def gaussian_random_field(index: float, amplitude: float, n: int = 32,
                          box_size: float = BOX_SIZE_MPC, ndim: int = 2, *,
                          rng: np.random.Generator, k_pivot: float = K_PIVOT) -> np.ndarray:
    """delta = IFFT[ sqrt(P(|k|) / dV) FFT[w] ], w white N(0, 1): <|delta_k|^2> = P(|k|)/V.

    Filtering real white noise with a real, even transfer function gives an exactly real
    field with the Hermitian symmetry (and real Nyquist modes) of the module's convention;
    the k = 0 mode is removed, so the field has zero mean.

    Parameters
    ----------
    index, amplitude : float
        Spectral index ``n`` and amplitude ``A`` of ``P(k) = A (k / k_pivot)**n``.
    n : int
        Cells per side.
    box_size : float
        Side of the periodic box (Mpc by default; ``A`` in that unit to the ``ndim``).
    ndim : int
        Number of dimensions.
    rng : numpy.random.Generator
        Source of the white noise.
    k_pivot : float
        Pivot wavenumber in radians per length unit.

    Returns
    -------
    ndarray, shape (n,) * ndim, float64
    """
    shape = (n,) * ndim
    lam = _eigenvalues(index, amplitude, n, box_size, ndim, k_pivot)
    half = lam[..., : n // 2 + 1]  # rfftn keeps the non-negative frequencies of the last axis
    white = rng.standard_normal(shape)
    axes = tuple(range(ndim))
    return np.fft.irfftn(np.fft.rfftn(white) * np.sqrt(half), s=shape, axes=axes)


def lognormal_field(index: float, amplitude: float, n: int = 32,
                    box_size: float = BOX_SIZE_MPC, ndim: int = 2, *,
                    rng: np.random.Generator, k_pivot: float = K_PIVOT) -> np.ndarray:
    """rho / rho_mean = exp(g - sigma_g^2 / 2), g a Gaussian random field (Coles & Jones 1991).

    ``sigma_g**2`` is the exact grid variance of ``g`` (:func:`gaussian_field_variance`), so
    the field is positive with expectation exactly 1 at every point. Parameters as in
    :func:`gaussian_random_field`; they describe the spectrum of ``g``.
    """
    g = gaussian_random_field(index, amplitude, n, box_size, ndim, rng=rng, k_pivot=k_pivot)
    var = gaussian_field_variance(index, amplitude, n, box_size, ndim, k_pivot)
    return np.exp(g - 0.5 * var)


def gaussian_field_log_density(field: np.ndarray, index: float, amplitude: float,
                               box_size: float = BOX_SIZE_MPC, *, ndim: int | None = None,
                               k_pivot: float = K_PIVOT, zero_mean: str = "require",
                               mean_tol: float = 1e-8) -> np.ndarray | float:
    """log p(x) = -1/2 sum_{k != 0} [ |F_k|^2 / (N^d lambda_k) + log(2 pi lambda_k) ], F = FFT x.

    The Gaussian field of :func:`gaussian_random_field` lives on the ``N**d - 1`` dimensional
    subspace of zero-mean grids. This is its density in nats with respect to the Lebesgue
    measure of that subspace (the one induced by the Euclidean metric of the grid values):
    with ``C`` the circulant covariance (eigenvalues ``lambda_k = P(|k|) / dV``),
    ``log p = -1/2 [x^T C^+ x + log pdet(2 pi C)]``. Summing over the full FFT grid counts
    both members of each Hermitian pair and each self-conjugate (Nyquist) mode once, exactly as
    the eigen-decomposition of ``C`` does.

    Parameters
    ----------
    field : ndarray, shape (..., N, ..., N)
        One field or a batch (leading dimensions); the last ``ndim`` axes are the grid.
    index, amplitude, box_size, k_pivot
        The spectrum and box, as in :func:`gaussian_random_field`.
    ndim : int, optional
        Number of grid axes; default ``field.ndim`` (a single field).
    zero_mean : {"require", "project"}
        "require": a field whose mean exceeds ``mean_tol`` times its rms is off the support
        and raises; "project": ignore the k = 0 mode (density of the zero-mean projection).
    mean_tol : float
        Tolerance of the zero-mean check, relative to the rms of the field.

    Returns
    -------
    float or ndarray of the leading shape
    """
    x = np.asarray(field, dtype=np.float64)
    ndim = x.ndim if ndim is None else ndim
    n = _cube_side(x, ndim)
    if zero_mean not in ("require", "project"):
        raise ValueError(f"zero_mean={zero_mean!r} is not one of ('require', 'project')")
    axes = tuple(range(-ndim, 0))
    if zero_mean == "require":
        _require_zero_mean(x, axes, mean_tol)
    lam = _eigenvalues(index, amplitude, n, box_size, ndim, k_pivot)
    nonzero = lam > 0
    n_cells = n ** ndim
    power = np.abs(np.fft.fftn(x, axes=axes)) ** 2
    quad = (power[..., nonzero] / (n_cells * lam[nonzero])).sum(axis=-1)
    log_pdet = np.log(2.0 * np.pi * lam[nonzero]).sum()
    out = -0.5 * (quad + log_pdet)
    return float(out) if np.ndim(out) == 0 else out


def _cube_side(x: np.ndarray, ndim: int) -> int:
    """Cells per side N of the last ``ndim`` axes of ``x``, which must form a cube."""
    if ndim < 1 or ndim > x.ndim:
        raise ValueError(f"ndim={ndim} grid axes do not fit a field of shape {x.shape}")
    grid = x.shape[-ndim:]
    n = grid[0]
    if any(s != n for s in grid):
        raise ValueError(f"field grid {grid} must be a cube with equal sides")
    return n


def _require_zero_mean(x: np.ndarray, axes: tuple[int, ...], mean_tol: float) -> None:
    """Raise unless every field's |mean| <= mean_tol * rms: off the zero-mean support p = 0."""
    mean = x.mean(axis=axes)
    rms = np.sqrt((x * x).mean(axis=axes))
    bad = np.abs(mean) > mean_tol * np.maximum(rms, np.finfo(float).tiny)
    if np.any(bad):
        raise ValueError(
            f"field mean {np.max(np.abs(mean)):.3g} is not zero: the Gaussian field has "
            "zero mean, so its density is 0 there; subtract the mean or pass "
            "zero_mean='project'"
        )


# -- the field with a mean mode: a density on all of R^(N^d) -----------------------------------
#
# The zero-mean field above has no density on the full grid space. Adding an independent mean
# mode whose variance is that of the fundamental mode, lambda_0 = lambda_1 = P(2 pi / L) / dV,
# gives a Gaussian with the circulant covariance of eigenvalues lambda_k (all > 0): the field a
# diffusion model is trained and scored on in the likelihood and inference benchmarks.

def mean_mode_eigenvalue(index: float, amplitude: float, n: int, box_size: float = BOX_SIZE_MPC,
                         ndim: int = 2, k_pivot: float = K_PIVOT) -> float:
    """``lambda_1 = P(2 pi / L) / dV``: the variance given to the k = 0 mode."""
    k1 = np.array([2.0 * np.pi / box_size])
    return float(power_law_spectrum(k1, index, amplitude, k_pivot)[0] / (box_size / n) ** ndim)


def circulant_eigenvalues(index: float, amplitude: float, n: int, box_size: float = BOX_SIZE_MPC,
                          ndim: int = 2, k_pivot: float = K_PIVOT) -> np.ndarray:
    """All ``N^d`` eigenvalues of the grid covariance with the mean mode (FFT order)."""
    lam = _eigenvalues(index, amplitude, n, box_size, ndim, k_pivot)
    lam.reshape(-1)[0] = mean_mode_eigenvalue(index, amplitude, n, box_size, ndim, k_pivot)
    return lam


def gaussian_field_with_mean(index: float, amplitude: float, n: int = 32, box_size: float = BOX_SIZE_MPC,
                             ndim: int = 2, *, rng: np.random.Generator, k_pivot: float = K_PIVOT) -> np.ndarray:
    """:func:`gaussian_random_field` plus an independent mean mode of variance ``lambda_1``."""
    field = gaussian_random_field(index, amplitude, n, box_size, ndim, rng=rng, k_pivot=k_pivot)
    lam0 = mean_mode_eigenvalue(index, amplitude, n, box_size, ndim, k_pivot)
    return field + np.sqrt(lam0) * rng.standard_normal() / np.sqrt(n ** ndim)


def gaussian_field_full_log_density(field: np.ndarray, index: float, amplitude: float,
                                    box_size: float = BOX_SIZE_MPC, *, ndim: int = 2,
                                    k_pivot: float = K_PIVOT) -> np.ndarray | float:
    """Exact ``log p(x)`` (nats, Lebesgue measure on R^(N^d)) of :func:`gaussian_field_with_mean`."""
    x = np.asarray(field, dtype=np.float64)
    n = _cube_side(x, ndim)
    lam = circulant_eigenvalues(index, amplitude, n, box_size, ndim, k_pivot)
    axes = tuple(range(-ndim, 0))
    power = np.abs(np.fft.fftn(x, axes=axes)) ** 2
    quad = (power / (n ** ndim * lam)).reshape(*x.shape[:-ndim], -1).sum(-1)
    out = -0.5 * (quad + np.log(2.0 * np.pi * lam).sum())
    return float(out) if np.ndim(out) == 0 else out
