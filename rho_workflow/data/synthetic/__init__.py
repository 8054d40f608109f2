"""Synthetic physics sweeps: deterministic generators of 1D, 2D and 3D fields with units.

Four kinds of field, each a function of a few physical parameters (the conditioning of
rho-Diffusion, Cai & Lee 2023, arXiv:2312.08153), one module per physics:

``spherical-harmonics`` (:mod:`.harmonics`)
    3D density ``|Y_lm(theta, phi)| r`` of the real spherical harmonic of integer degree ``l``
    and order ``m`` on a cube of cell centres (the paper's 3D example).
``gaussian-field`` (:mod:`.random_fields`)
    2D Gaussian random field with power-law spectrum ``P(k) = A (k / k_pivot)**n`` on a
    periodic box of side ``box_size`` Mpc.
``lognormal-field`` (:mod:`.random_fields`)
    ``exp(g - sigma_g**2 / 2)`` of such a Gaussian field ``g``: a positive density in units of
    its mean, the usual toy model of the cosmological matter density.
``spectral-lines`` (:mod:`.lines`)
    1D Voigt profile of a molecular line as a function of temperature and pressure.

The Fourier convention of the random fields (used by :mod:`rho_workflow.evaluate.spectra`
too) is stated in :mod:`.random_fields`, with the exact log-density of the Gaussian field.

The uniform entry point for dataset writers is :func:`generate` with :class:`FieldSpec`,
:func:`field_spec` and :func:`default_points` (:mod:`.registry`).
"""

from __future__ import annotations

from rho_workflow.data.synthetic.grid import cell_centres
from rho_workflow.data.synthetic.harmonics import real_spherical_harmonic, spherical_harmonic_density
from rho_workflow.data.synthetic.lines import (
    LINE_CENTER_CM1,
    LINE_GAMMA_REF,
    LINE_HALF_WINDOW_CM1,
    LINE_MASS_AMU,
    LINE_N_EXP,
    P_REF_HPA,
    doppler_hwhm,
    line_wavenumbers,
    lorentz_hwhm,
    voigt_fwhm_olivero,
    voigt_profile,
)
from rho_workflow.data.synthetic.random_fields import (
    BOX_SIZE_MPC,
    K_PIVOT,
    MPC,
    _eigenvalues,  # noqa: F401  (the exact denoiser of bench/sampler_nfe.py reads it)
    gaussian_field_log_density,
    gaussian_field_variance,
    gaussian_random_field,
    lognormal_field,
    power_law_spectrum,
    wavenumber_grid,
)
from rho_workflow.data.synthetic.registry import KINDS, FieldSpec, default_points, field_spec, generate

__all__ = [
    "KINDS", "FieldSpec", "generate", "field_spec", "default_points",
    "real_spherical_harmonic", "spherical_harmonic_density", "cell_centres",
    "wavenumber_grid", "power_law_spectrum", "gaussian_random_field",
    "gaussian_field_variance", "lognormal_field", "gaussian_field_log_density",
    "doppler_hwhm", "lorentz_hwhm", "voigt_profile", "voigt_fwhm_olivero", "line_wavenumbers",
]
