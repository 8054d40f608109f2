"""3D densities of real spherical harmonics, the ``spherical-harmonics`` kind (Cai & Lee 2023).

The density ``|Y_lm(theta, phi)| r`` of the real spherical harmonic of integer degree ``l``
and order ``m`` on a cube of cell centres (the paper's 3D example).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special as special

from rho_workflow.data.synthetic.grid import cell_centres

__all__ = ["real_spherical_harmonic", "spherical_harmonic_density"]


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
