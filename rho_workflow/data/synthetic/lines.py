"""1D Voigt profiles of a molecular line, the ``spectral-lines`` kind.

The line shape as a function of temperature and pressure: a Doppler Gaussian convolved with
a pressure Lorentzian, normalized to unit area over wavenumber.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.constants as const
import scipy.special as special

from rho_workflow.data.synthetic.grid import cell_centres

__all__ = ["doppler_hwhm", "lorentz_hwhm", "voigt_profile", "voigt_fwhm_olivero", "line_wavenumbers"]

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


def line_wavenumbers(size: int = 32) -> np.ndarray:
    """Cell centres of [nu0 - w, nu0 + w] cm-1, the grid of the ``spectral-lines`` kind."""
    return cell_centres(size, LINE_CENTER_CM1 - LINE_HALF_WINDOW_CM1,
                        LINE_CENTER_CM1 + LINE_HALF_WINDOW_CM1)
