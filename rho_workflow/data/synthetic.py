"""Synthetic physics sweeps: deterministic generators of 1D, 2D and 3D fields with units.

Four kinds of field, each a function of a few physical parameters (the conditioning of
rho-Diffusion, Cai & Lee 2023, arXiv:2312.08153):

``spherical-harmonics``
    3D density ``|Y_lm(theta, phi)| r`` of the real spherical harmonic of integer degree ``l``
    and order ``m`` on a cube of cell centres (the paper's 3D example).
``gaussian-field``
    2D Gaussian random field with power-law spectrum ``P(k) = A (k / k_pivot)**n`` on a
    periodic box of side ``box_size`` Mpc.
``lognormal-field``
    ``exp(g - sigma_g**2 / 2)`` of such a Gaussian field ``g``: a positive density in units of
    its mean, the usual toy model of the cosmological matter density.
``spectral-lines``
    1D Voigt profile of a molecular line as a function of temperature and pressure.

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

The uniform entry point for dataset writers is :func:`generate` with :class:`FieldSpec`,
:func:`field_spec` and :func:`default_points`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import scipy.constants as const
import scipy.special as special

from rho_workflow.params import Parameter, ParamSpace

__all__ = [
    "KINDS", "FieldSpec", "generate", "field_spec", "default_points",
    "real_spherical_harmonic", "spherical_harmonic_density", "cell_centres",
    "wavenumber_grid", "power_law_spectrum", "gaussian_random_field",
    "gaussian_field_variance", "lognormal_field", "gaussian_field_log_density",
    "doppler_hwhm", "lorentz_hwhm", "voigt_profile", "voigt_fwhm_olivero", "line_wavenumbers",
]

KINDS = ("spherical-harmonics", "gaussian-field", "lognormal-field", "spectral-lines")

#: Default box of the cosmology-like random fields: side in Mpc and pivot wavenumber in
#: rad/Mpc. With N = 32 the modes span 0.063 .. 1.0 rad/Mpc around the pivot, and the
#: Gaussian field's variance stays between about 0.04 and 0.9 over the default sweep.
BOX_SIZE_MPC = 100.0
K_PIVOT = 0.5
#: UDUNITS spelling of the megaparsec ("Mpc" is not a UDUNITS symbol; pint reads both).
MPC = "Mparsec"

#: Representative line of the O2 A band: centre (cm-1), molecular mass (amu), pressure
#: broadening at 296 K (cm-1 atm-1) and its temperature exponent; half window of the grid
#: (about 4.5 Lorentz HWHM of the broadest line of the sweep; the narrowest, Doppler-limited
#: line, FWHM 0.020 cm-1 at 150 K, spans 1.6 cells at size 32 and 3.2 cells at size 64).
LINE_CENTER_CM1 = 13100.0
LINE_MASS_AMU = 32.0
LINE_GAMMA_REF = 0.05
LINE_N_EXP = 0.7
LINE_HALF_WINDOW_CM1 = 0.2

P_REF_HPA = 1013.25  # 1 atm in hPa


# --------------------------------------------------------------------------------------
# 3D: real spherical harmonics
# --------------------------------------------------------------------------------------

def _check_lm(l: int, m: int) -> None:
    if int(l) != l or int(m) != m:
        raise ValueError(f"spherical harmonic degree l={l!r} and order m={m!r} must be integers")
    if l < 0 or abs(m) > l:
        raise ValueError(
            f"spherical harmonic (l={l}, m={m}) breaks the rule l >= 0 and -l <= m <= l; "
            "choose m between -l and l"
        )


def _complex_ylm(l: int, m: int, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Complex Y_l^m (Condon-Shortley phase), theta polar in [0, pi], phi azimuth."""
    phi = np.mod(phi, 2.0 * np.pi)
    if hasattr(special, "sph_harm_y"):  # scipy >= 1.15: (degree, order, polar, azimuth)
        return special.sph_harm_y(l, m, theta, phi)
    return special.sph_harm(m, l, phi, theta)  # older scipy: (order, degree, azimuth, polar)


def real_spherical_harmonic(l: int, m: int, theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Real spherical harmonic S_lm = sqrt(2) (-1)^m {Re, Im} Y_l^|m| for m {>, <} 0; Y_l^0 at m=0.

    Orthonormal on the unit sphere: ``int S_lm S_l'm' dOmega = delta_ll' delta_mm'``. With this
    convention ``S_10 = sqrt(3/4pi) z/r``, ``S_11 = sqrt(3/4pi) x/r`` and
    ``S_1,-1 = sqrt(3/4pi) y/r``; ``S_l,-m(theta, phi) = S_lm(theta, phi - pi/(2m))`` for m > 0.

    Parameters
    ----------
    l, m : int
        Degree ``l >= 0`` and order ``-l <= m <= l``.
    theta : ndarray
        Polar angle from +z in radians, in [0, pi].
    phi : ndarray
        Azimuth from +x towards +y in radians (any range).
    """
    _check_lm(l, m)
    theta = np.asarray(theta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    if m == 0:
        return _complex_ylm(l, 0, theta, phi).real
    y = _complex_ylm(l, abs(m), theta, phi)
    part = y.real if m > 0 else y.imag
    return math.sqrt(2.0) * (-1.0) ** m * part


def cell_centres(n: int, low: float, high: float) -> np.ndarray:
    """Cell centres x_i = low + (i + 1/2) (high - low) / n, i = 0 .. n-1."""
    if n < 1:
        raise ValueError(f"grid size n={n} must be a positive number of cells")
    return low + (np.arange(n) + 0.5) * (high - low) / n


def spherical_harmonic_density(l: int, m: int, n: int = 32, extent: float = 1.0,
                               form: str = "ylm_r") -> np.ndarray:
    """Density rho = |S_lm(theta, phi)| r ("ylm_r", Cai & Lee 2023) or |S_lm|^2 ("ylm2").

    Evaluated on the ``n**3`` cell centres of ``[-extent, extent]**3``, indexed ``[ix, iy, iz]``,
    with ``theta = arctan2(sqrt(x^2 + y^2), z)`` and ``phi = arctan2(y, x)``. At ``r = 0`` (odd
    ``n``) the direction is undefined: "ylm_r" is 0 there and "ylm2" takes its spherical mean
    ``1 / (4 pi)``.

    Parameters
    ----------
    l, m : int
        Degree and order, ``-l <= m <= l``.
    n : int
        Cells per side.
    extent : float
        Half side of the cube (same length unit as the coordinates).
    form : {"ylm_r", "ylm2"}
        Radial-linear magnitude (the paper's form) or the squared angular density.

    Returns
    -------
    ndarray, shape (n, n, n), float64
    """
    _check_lm(l, m)
    if form not in ("ylm_r", "ylm2"):
        raise ValueError(f"spherical harmonic form {form!r} is not one of ('ylm_r', 'ylm2')")
    if not extent > 0:
        raise ValueError(f"extent={extent} must be a positive half side of the cube")
    c = cell_centres(n, -extent, extent)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    rho_xy = np.hypot(x, y)
    r = np.hypot(rho_xy, z)
    s = real_spherical_harmonic(l, m, np.arctan2(rho_xy, z), np.arctan2(y, x))
    if form == "ylm_r":
        return np.abs(s) * r
    out = s * s
    out[r == 0] = 1.0 / (4.0 * np.pi)
    return out


# --------------------------------------------------------------------------------------
# 2D / nD: Gaussian and lognormal random fields with power-law spectra
# --------------------------------------------------------------------------------------

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
    if ndim < 1 or ndim > x.ndim:
        raise ValueError(f"ndim={ndim} grid axes do not fit a field of shape {x.shape}")
    grid = x.shape[-ndim:]
    n = grid[0]
    if any(s != n for s in grid):
        raise ValueError(f"field grid {grid} must be a cube with equal sides")
    if zero_mean not in ("require", "project"):
        raise ValueError(f"zero_mean={zero_mean!r} is not one of ('require', 'project')")
    axes = tuple(range(-ndim, 0))
    if zero_mean == "require":
        mean = x.mean(axis=axes)
        rms = np.sqrt((x * x).mean(axis=axes))
        bad = np.abs(mean) > mean_tol * np.maximum(rms, np.finfo(float).tiny)
        if np.any(bad):
            raise ValueError(
                f"field mean {np.max(np.abs(mean)):.3g} is not zero: the Gaussian field has "
                "zero mean, so its density is 0 there; subtract the mean or pass "
                "zero_mean='project'"
            )
    lam = _eigenvalues(index, amplitude, n, box_size, ndim, k_pivot)
    nonzero = lam > 0
    n_cells = n ** ndim
    power = np.abs(np.fft.fftn(x, axes=axes)) ** 2
    quad = (power[..., nonzero] / (n_cells * lam[nonzero])).sum(axis=-1)
    log_pdet = np.log(2.0 * np.pi * lam[nonzero]).sum()
    out = -0.5 * (quad + log_pdet)
    return float(out) if np.ndim(out) == 0 else out


# --------------------------------------------------------------------------------------
# 1D: Voigt line profiles
# --------------------------------------------------------------------------------------

def doppler_hwhm(center_cm1: float, temperature_K: float, mass_amu: float) -> float:
    """alpha_D = (nu0 / c) sqrt(2 ln2 k_B T / m): Doppler half width at half maximum (cm-1)."""
    if not temperature_K > 0:
        raise ValueError(f"temperature {temperature_K} K must be positive")
    if not mass_amu > 0:
        raise ValueError(f"molecular mass {mass_amu} amu must be positive")
    m = mass_amu * const.atomic_mass
    return center_cm1 / const.c * math.sqrt(2.0 * math.log(2.0) * const.k * temperature_K / m)


def lorentz_hwhm(pressure_hPa: float, temperature_K: float, gamma_ref_cm1_per_atm: float = 0.07,
                 t_ref: float = 296.0, n_exp: float = 0.75) -> float:
    """gamma_L = gamma_ref (p / p_ref) (T_ref / T)^n: pressure half width (cm-1), p_ref = 1 atm."""
    if pressure_hPa < 0:
        raise ValueError(f"pressure {pressure_hPa} hPa must be non-negative")
    if not temperature_K > 0:
        raise ValueError(f"temperature {temperature_K} K must be positive")
    return gamma_ref_cm1_per_atm * (pressure_hPa / P_REF_HPA) * (t_ref / temperature_K) ** n_exp


def voigt_profile(wavenumber_cm1: np.ndarray, center_cm1: float, temperature_K: float,
                  pressure_hPa: float, mass_amu: float = 28.0,
                  gamma_ref_cm1_per_atm: float = 0.07, t_ref: float = 296.0,
                  n_exp: float = 0.75) -> np.ndarray:
    """V(nu) = Re w(z) / (sigma sqrt(2 pi)), z = (nu - nu0 + i gamma_L) / (sigma sqrt 2).

    Convolution of the Doppler Gaussian (std ``sigma = alpha_D / sqrt(2 ln 2)``,
    :func:`doppler_hwhm`) with the pressure Lorentzian (HWHM ``gamma_L``,
    :func:`lorentz_hwhm`), via the Faddeeva function (``scipy.special.voigt_profile``).
    Normalized to unit area over wavenumber, so its unit is cm.
    """
    nu = np.asarray(wavenumber_cm1, dtype=np.float64)
    sigma = doppler_hwhm(center_cm1, temperature_K, mass_amu) / math.sqrt(2.0 * math.log(2.0))
    gamma = lorentz_hwhm(pressure_hPa, temperature_K, gamma_ref_cm1_per_atm, t_ref, n_exp)
    return special.voigt_profile(nu - center_cm1, sigma, gamma)


def voigt_fwhm_olivero(fwhm_gauss: float, fwhm_lorentz: float) -> float:
    """f_V = 0.5346 f_L + sqrt(0.2166 f_L^2 + f_G^2) (Olivero & Longbothum 1977, ~0.02%)."""
    return 0.5346 * fwhm_lorentz + math.sqrt(0.2166 * fwhm_lorentz ** 2 + fwhm_gauss ** 2)


# --------------------------------------------------------------------------------------
# Uniform entry point for dataset writers
# --------------------------------------------------------------------------------------

@dataclass
class FieldSpec:
    """Labels of a generated field: name, CF units, dims, coordinates and its parameters.

    Attributes
    ----------
    name, long_name, units : str
        Variable name, CF ``long_name`` and UDUNITS ``units`` of the field values.
    dims : tuple of str
        Names of the field's axes, in array order.
    coords : dict
        ``dim -> (values, units)`` for every dim.
    param_units, param_kinds : dict
        Units (UDUNITS) and kind (``continuous`` or ``categorical``) of each parameter.
    standard_name : str or None
        CF standard name where one exists.
    param_ranges : dict
        ``name -> (low, high)`` of each continuous parameter over the default sweep.
    param_values : dict
        ``name -> allowed values`` of each categorical parameter.
    attrs : dict
        Further attributes to write (constants of the generator).
    """

    name: str
    long_name: str
    units: str
    dims: tuple[str, ...]
    coords: dict[str, tuple[np.ndarray, str]]
    param_units: dict[str, str]
    param_kinds: dict[str, str]
    standard_name: str | None = None
    param_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    param_values: dict[str, tuple] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one field, from its coordinates."""
        return tuple(len(self.coords[d][0]) for d in self.dims)

    def param_space(self) -> ParamSpace:
        """The :class:`~rho_workflow.params.ParamSpace` of the default sweep of this kind."""
        params = []
        for name, units in self.param_units.items():
            if self.param_kinds[name] == "categorical":
                params.append(Parameter(name, units, "categorical",
                                        values=tuple(self.param_values[name])))
            else:
                low, high = self.param_ranges[name]
                params.append(Parameter(name, units, "continuous", low=low, high=high))
        return ParamSpace(params)


_SH_LM = tuple((l, m) for l in range(4) for m in range(-l, l + 1))
_RANDOM_RANGES = {"index": (-3.0, -1.0), "amplitude": (0.5, 2.0)}
_LINE_RANGES = {"temperature": (150.0, 350.0), "pressure": (10.0, 1000.0)}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"synthetic field kind {kind!r} is not one of {KINDS}")


def line_wavenumbers(size: int = 32) -> np.ndarray:
    """Cell centres of [nu0 - w, nu0 + w] cm-1, the grid of the ``spectral-lines`` kind."""
    return cell_centres(size, LINE_CENTER_CM1 - LINE_HALF_WINDOW_CM1,
                        LINE_CENTER_CM1 + LINE_HALF_WINDOW_CM1)


def field_spec(kind: str, size: int = 32) -> FieldSpec:
    """Labels (units, dims, coordinates, parameter units and kinds) of one ``kind`` of field."""
    _check_kind(kind)
    if kind == "spherical-harmonics":
        c = cell_centres(size, -1.0, 1.0)
        return FieldSpec(
            name="density", long_name="real spherical harmonic density |Y_lm| r",
            units="1", dims=("x", "y", "z"),
            coords={d: (c.copy(), "m") for d in ("x", "y", "z")},
            param_units={"l": "1", "m": "1"},
            param_kinds={"l": "categorical", "m": "categorical"},
            param_values={"l": tuple(range(4)), "m": tuple(range(-3, 4))},
            attrs={"form": "ylm_r", "extent_m": 1.0},
        )
    if kind in ("gaussian-field", "lognormal-field"):
        c = cell_centres(size, 0.0, BOX_SIZE_MPC)
        gaussian = kind == "gaussian-field"
        return FieldSpec(
            name="density_contrast" if gaussian else "density",
            long_name=("Gaussian random density contrast" if gaussian
                       else "lognormal density in units of the mean density"),
            units="1", dims=("x", "y"),
            coords={d: (c.copy(), MPC) for d in ("x", "y")},
            param_units={"index": "1", "amplitude": f"{MPC}2"},
            param_kinds={"index": "continuous", "amplitude": "continuous"},
            param_ranges=dict(_RANDOM_RANGES),
            attrs={"box_size_Mpc": BOX_SIZE_MPC, "k_pivot_per_Mpc": K_PIVOT,
                   "spectrum": "P(k) = amplitude * (k / k_pivot)**index"},
        )
    return FieldSpec(
        name="line_profile", long_name="Voigt line shape function (unit area)",
        units="cm", dims=("wavenumber",),
        coords={"wavenumber": (line_wavenumbers(size), "cm-1")},
        param_units={"temperature": "K", "pressure": "hPa"},
        param_kinds={"temperature": "continuous", "pressure": "continuous"},
        param_ranges=dict(_LINE_RANGES),
        attrs={"line_center_cm-1": LINE_CENTER_CM1, "mass_amu": LINE_MASS_AMU,
               "gamma_ref_cm-1_atm-1": LINE_GAMMA_REF, "n_exp": LINE_N_EXP},
    )


def _check_params(kind: str, params: Mapping[str, Any], expected: tuple[str, ...]) -> None:
    missing = [p for p in expected if p not in params]
    extra = [p for p in params if p not in expected]
    if missing or extra:
        raise ValueError(
            f"parameters of a {kind!r} field must be exactly {expected}; "
            f"missing {missing}, unexpected {extra}"
        )


def generate(kind: str, params: Mapping[str, Any], *, size: int = 32,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, FieldSpec]:
    """Field of one ``kind`` at one parameter point, with its labels (see module docstring).

    Parameters
    ----------
    kind : str
        One of :data:`KINDS`.
    params : dict
        ``{"l", "m"}`` (spherical-harmonics), ``{"index", "amplitude"}`` (gaussian-field,
        lognormal-field; amplitude in Mpc2) or ``{"temperature", "pressure"}`` in K and hPa
        (spectral-lines).
    size : int
        Cells per side of the grid.
    rng : numpy.random.Generator
        Required by the random kinds; ignored by the deterministic ones.

    Returns
    -------
    field : ndarray, float64, shape ``spec.shape``
    spec : FieldSpec
    """
    _check_kind(kind)
    spec = field_spec(kind, size)
    _check_params(kind, params, tuple(spec.param_units))
    if kind == "spherical-harmonics":
        values = spherical_harmonic_density(int(params["l"]), int(params["m"]), size, 1.0)
    elif kind == "spectral-lines":
        values = voigt_profile(spec.coords["wavenumber"][0], LINE_CENTER_CM1,
                               float(params["temperature"]), float(params["pressure"]),
                               LINE_MASS_AMU, LINE_GAMMA_REF, 296.0, LINE_N_EXP)
    else:
        if rng is None:
            raise ValueError(f"a {kind!r} field is random: pass rng=np.random.default_rng(seed)")
        make = gaussian_random_field if kind == "gaussian-field" else lognormal_field
        values = make(float(params["index"]), float(params["amplitude"]), size, BOX_SIZE_MPC,
                      2, rng=rng)
    return values, spec


def _latin_hypercube(n: int, ranges: list[tuple[float, float]], rng: np.random.Generator,
                     log: list[bool]) -> np.ndarray:
    """Latin hypercube: one point in each of n equal strata per axis, strata shuffled."""
    cols = []
    for (low, high), is_log in zip(ranges, log):
        u = (rng.permutation(n) + rng.uniform(size=n)) / n
        if is_log:
            cols.append(np.exp(np.log(low) + u * (np.log(high) - np.log(low))))
        else:
            cols.append(low + u * (high - low))
    return np.stack(cols, axis=1)


def default_points(kind: str, n_runs: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Sweep design of ``n_runs`` parameter points for one ``kind`` of field.

    spherical-harmonics cycles through the 16 ``(l, m)`` with ``l <= 3`` (``rng`` unused); the
    random fields take a Latin hypercube of index in [-3, -1] and amplitude in [0.5, 2] Mpc2;
    spectral lines a Latin hypercube of temperature in [150, 350] K and pressure log-uniform in
    [10, 1000] hPa.
    """
    _check_kind(kind)
    if n_runs < 1:
        raise ValueError(f"n_runs={n_runs} must be a positive number of runs")
    if kind == "spherical-harmonics":
        return [{"l": l, "m": m} for l, m in (_SH_LM[i % len(_SH_LM)] for i in range(n_runs))]
    if kind == "spectral-lines":
        pts = _latin_hypercube(n_runs, list(_LINE_RANGES.values()), rng, [False, True])
        return [{"temperature": float(t), "pressure": float(p)} for t, p in pts]
    pts = _latin_hypercube(n_runs, list(_RANDOM_RANGES.values()), rng, [False, False])
    return [{"index": float(i), "amplitude": float(a)} for i, a in pts]
