"""The uniform entry point of the synthetic sweeps: kinds, their labels, fields and designs.

:func:`generate` makes the field of one kind at one parameter point, :func:`field_spec` its
labels (:class:`FieldSpec`) and :func:`default_points` the default sweep design of a kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from rho_workflow.data.synthetic.grid import cell_centres
from rho_workflow.data.synthetic.harmonics import spherical_harmonic_density
from rho_workflow.data.synthetic.lines import (
    LINE_CENTER_CM1, LINE_GAMMA_REF, LINE_MASS_AMU, LINE_N_EXP, line_wavenumbers, voigt_profile,
)
from rho_workflow.data.synthetic.random_fields import (
    BOX_SIZE_MPC, K_PIVOT, MPC, gaussian_random_field, lognormal_field,
)
from rho_workflow.params import Parameter, ParamSpace

__all__ = ["KINDS", "FieldSpec", "generate", "field_spec", "default_points"]

KINDS = ("spherical-harmonics", "gaussian-field", "lognormal-field", "spectral-lines")


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
