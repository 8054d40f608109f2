"""One pint unit registry for the whole project, reading CF/UDUNITS spellings.

The registry is cf-xarray's (which already parses ``m s-1``, ``kg m-3``, ``degC``, ``psu``,
``degrees_north`` ...) plus the aliases it lacks that simulation codes write: ``degree_C``,
``Msun``/``solar_mass``, ``Jy``, ``h`` free cosmology spellings are deliberately *not* added
(``h`` stays the hour). Unit strings with a numeric factor (``1e-3`` for salinity, ``10 m``)
are accepted, as UDUNITS accepts them.

Conversions are returned as an affine map ``y = a * x + b`` so that they can be applied
lazily to Dask arrays (an exact description of every pint conversion between the
multiplicative and offset units used here).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pint
from cf_xarray.units import units as _cf_units

from rho_workflow.errors import RhoWorkflowError

__all__ = [
    "UNITS",
    "UnitsError",
    "ParsedUnits",
    "parse_units",
    "linear_conversion",
    "convert",
    "format_units",
    "is_dimensionless",
    "compatible",
]

UNITS: pint.UnitRegistry = _cf_units
"""The project's single pint registry (cf-xarray's, extended by :func:`_extend`)."""

_ALIASES = (
    "@alias degree_Celsius = degree_C = degrees_C",
    "@alias degree_Fahrenheit = degree_F",
    "solar_mass = 1.98847e30 * kilogram = Msun = M_sun = Msol = solMass",
    "solar_luminosity = 3.828e26 * watt = Lsun = L_sun = solLum",
    "solar_radius = 6.957e8 * meter = Rsun = R_sun = solRad",
    "jansky = 1e-26 * watt / meter ** 2 / hertz = Jy",
    "sverdrup = 1e6 * meter ** 3 / second = Sv_ocean",
    "practical_salinity_scale = practical_salinity_unit = pss",
)


class UnitsError(RhoWorkflowError, ValueError):
    """A unit string cannot be parsed, or two units cannot be converted into each other.

    ``reason`` is the short cause without context (for callers that add file and variable).
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def _extend(registry: pint.UnitRegistry) -> None:
    for definition in _ALIASES:
        name = definition.split("=")[1 if definition.startswith("@alias") else 0].strip()
        try:
            registry.Unit(name)
            continue
        except (pint.UndefinedUnitError, AttributeError, ValueError, TypeError):
            pass
        try:
            registry.define(definition)
        except pint.errors.RedefinitionError:  # defined meanwhile under another alias
            pass


_extend(UNITS)

_NUMERIC_FACTOR = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*)$")


@dataclass(frozen=True)
class ParsedUnits:
    """A unit string read as ``scale * unit`` (``scale`` from a leading number, e.g. ``1e-3``)."""

    text: str
    scale: float
    unit: pint.Unit

    @property
    def dimensionality(self) -> Any:
        return self.unit.dimensionality


def parse_units(text: Any, *, where: str = "") -> ParsedUnits:
    """Parse a CF/UDUNITS unit string (``"K"``, ``"m s-1"``, ``"1e-3"``, ``"percent"``).

    Parameters
    ----------
    text : str
        The string as found in a ``units`` attribute or a configuration.
    where : str
        Context for the error message (``"file a.nc, variable tas"``).

    Raises
    ------
    UnitsError
        The string is not a unit the registry knows; the message names ``where`` and the
        string, and says how to fix it.
    """
    prefix = f"{where}: " if where else ""
    if not isinstance(text, str):
        raise UnitsError(
            f"{prefix}units {text!r} must be a string (rule: CF 'units' attributes are text); "
            "fix: write the units as a UDUNITS string such as 'K' or 'm s-1'"
        )
    stripped = text.strip()
    if "since" in stripped.split():
        raise UnitsError(
            f"{prefix}units {text!r} are a time reference, not a physical unit (rule: fields "
            "and parameters need UDUNITS units); fix: take such a value from a time "
            "coordinate with source 'time'"
        )
    scale = 1.0
    match = _NUMERIC_FACTOR.match(stripped)
    if match:
        scale = float(match.group(1))
        stripped = match.group(2).strip() or "1"
    try:
        unit = UNITS.Unit(stripped if stripped else "1")
    except Exception as exc:  # pint raises several unrelated types for bad strings
        raise UnitsError(
            f"{prefix}unknown units {text!r} (rule: units must be a UDUNITS/CF spelling the "
            f"project's pint registry understands; pint says: {exc}); fix: correct the "
            "'units' attribute, e.g. 'K', 'degC', 'kg m-3', 'm s-1', 'hPa', 'Mparsec', '1'",
            reason=f"unknown units {text!r} ({exc})",
        ) from None
    if not (math.isfinite(scale) and scale != 0):
        raise UnitsError(f"{prefix}units {text!r} have a zero or non-finite numeric factor")
    return ParsedUnits(text=text, scale=scale, unit=unit)


def _as_parsed(units: str | ParsedUnits, where: str) -> ParsedUnits:
    return units if isinstance(units, ParsedUnits) else parse_units(units, where=where)


def compatible(a: str | ParsedUnits, b: str | ParsedUnits) -> bool:
    """True when values in units ``a`` can be converted to units ``b``."""
    return _as_parsed(a, "").dimensionality == _as_parsed(b, "").dimensionality


def is_dimensionless(units: str | ParsedUnits) -> bool:
    return _as_parsed(units, "").unit.dimensionless


def linear_conversion(
    source: str | ParsedUnits, target: str | ParsedUnits, *, where: str = ""
) -> tuple[float, float]:
    """Coefficients ``(a, b)`` with ``value_in_target = a * value_in_source + b``.

    Raises
    ------
    UnitsError
        The units are of different dimensionality (e.g. ``K`` to ``m``).
    """
    src = _as_parsed(source, where)
    dst = _as_parsed(target, where)
    prefix = f"{where}: " if where else ""
    if src.dimensionality != dst.dimensionality:
        raise UnitsError(
            f"{prefix}units {src.text!r} cannot be converted to {dst.text!r} (rule: values "
            f"must have the dimensionality of the declared units; {src.dimensionality or '1'} "
            f"is not {dst.dimensionality or '1'}); fix: declare compatible canonical units or "
            "correct the file's 'units' attribute",
            reason=f"units {src.text!r} cannot be converted to {dst.text!r} "
                   f"({src.dimensionality or 'dimensionless'} is not "
                   f"{dst.dimensionality or 'dimensionless'})",
        )
    zero = UNITS.Quantity(0.0, src.unit).to(dst.unit).magnitude
    one = UNITS.Quantity(1.0, src.unit).to(dst.unit).magnitude
    slope = (one - zero) * src.scale / dst.scale
    return float(slope), float(zero / dst.scale)


def convert(values: Any, source: str | ParsedUnits, target: str | ParsedUnits, *,
            where: str = "") -> Any:
    """Convert numbers (numpy or Dask arrays, scalars) from ``source`` to ``target`` units.

    The identity conversion returns ``values`` untouched, so Dask graphs stay unchanged.
    """
    a, b = linear_conversion(source, target, where=where)
    if a == 1.0 and b == 0.0:
        return values
    if np.isscalar(values):
        return a * float(values) + b
    return values * a + b if b != 0.0 else values * a


def format_units(units: str | ParsedUnits) -> str:
    """A canonical UDUNITS spelling (``kg m-3``, ``m s-1``, ``1``) of a unit string."""
    parsed = _as_parsed(units, "")
    text = f"{parsed.unit:cf}"
    text = {"": "1", "dimensionless": "1", "%": "percent", "°C": "degC", "°F": "degF"}.get(text, text)
    if parsed.scale != 1.0:
        text = f"{parsed.scale:g}" if text == "1" else f"{parsed.scale:g} {text}"
    return text
