"""Parameters of each sample of a sweep file, read from where the ``data.params`` section says.

Sources: global or variable attributes, scalar or sample-dimension coordinates, file names,
and time coordinates (``cftime.date2num`` with the declared ``units``/``calendar``); values
are converted to the parameter's canonical units by the one unit registry.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from rho_workflow.data.config import DataConfig, ParamSource
from rho_workflow.data.units import UnitsError, linear_conversion, parse_units
from rho_workflow.data.validate import Problem, short_values as _short

__all__ = ["read_params", "time_calendar", "param_kinds"]

_VALUE_WITH_UNITS = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s+(\S.*)$")


def read_params(ds: xr.Dataset, arr: xr.DataArray, path: Path, config: DataConfig,
                sample_dims: tuple[str, ...], shape: tuple[int, ...],
                problems: list[Problem]) -> list[dict[str, Any]] | None:
    """One dict of canonical parameter values per sample of ``arr`` (C order of ``shape``)."""
    n = int(np.prod(shape, dtype=np.int64))
    columns: dict[str, np.ndarray] = {}
    before = len(problems)
    for key, src in config.params.items():
        try:
            raw, units = _raw_param(ds, arr, path, src, sample_dims)
            values = _to_canonical(raw, units, src, str(path))
            columns[key] = np.broadcast_to(values, shape) if shape else np.asarray(values)
        except _ParamError as exc:
            problems.append(Problem(str(path), exc.variable, exc.value, exc.rule, exc.fix))
        except ValueError as exc:  # broadcasting a coordinate that does not fit the samples
            problems.append(Problem(str(path), src.name, None, f"parameter {key!r} must be "
                                    f"scalar or lie along the sample dims ({exc})",
                                    "take the parameter from a scalar or 1D coordinate"))
    if len(problems) > before:
        return None
    points = []
    for i in range(n):
        idx = np.unravel_index(i, shape) if shape else ()
        points.append({key: _plain(col[idx]) for key, col in columns.items()})
    return points


class _ParamError(Exception):
    def __init__(self, variable: str | None, value: Any, rule: str, fix: str):
        super().__init__(rule)
        self.variable, self.value, self.rule, self.fix = variable, value, rule, fix


def _plain(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    return value.decode() if isinstance(value, bytes) else value


def _raw_param(ds: xr.Dataset, arr: xr.DataArray, path: Path, src: ParamSource,
               sample_dims: tuple[str, ...]) -> tuple[Any, str | None]:
    """The value(s) of one parameter as stored, and their units in the file (or None)."""
    key = f"data.params.{src.key}"
    if src.source == "filename":
        match = re.search(src.pattern, path.name)
        if match is None:
            raise _ParamError(None, path.name, f"{key}.pattern {src.pattern!r} must match the "
                              "file name", "rename the file or correct the pattern")
        text = match.group("value") if "value" in match.re.groupindex else match.group(1)
        return _number_or_text(text), src.file_units or src.units
    if src.source in ("coordinate", "time"):
        if src.name not in ds.variables:
            raise _ParamError(src.name, None, f"{key}: coordinate {src.name!r} must exist in "
                              f"the file (it has {sorted(map(str, ds.coords))})",
                              f"correct {key}.name or the file")
        coord = ds[src.name]
        if src.source == "coordinate" and src.name in arr.coords:
            coord = arr.coords[src.name]  # follows data.select/crop along the sample dims
        bad = [d for d in coord.dims if d not in sample_dims]
        if bad:
            raise _ParamError(src.name, list(coord.dims), f"{key}: the coordinate must be "
                              f"scalar or lie along the sample dims {list(sample_dims)}",
                              "take the parameter from a scalar or 1D sample coordinate")
        if src.source == "time":
            return _time_numbers(coord, src, key), None
        values = coord.transpose(*[d for d in sample_dims if d in coord.dims])
        expanded = values.expand_dims([d for d in sample_dims if d not in coord.dims])
        expanded = expanded.transpose(*sample_dims).values
        return expanded, coord.attrs.get("units", src.file_units)
    if src.source == "variable_attribute" and (src.variable or arr.name) not in ds.variables:
        raise _ParamError(src.variable, None, f"{key}.variable {src.variable!r} must be a "
                          f"variable of the file (it has {sorted(map(str, ds.variables))})",
                          f"correct {key}.variable")
    holder = ds.attrs if src.source == "global_attribute" else ds[src.variable or arr.name].attrs
    place = "global attributes" if src.source == "global_attribute" else \
        f"attributes of variable {src.variable or arr.name!r}"
    if src.name not in holder:
        raise _ParamError(src.variable if src.source == "variable_attribute" else None, None,
                          f"{key}: parameter attribute {src.name!r} must be among the {place} "
                          f"(found {sorted(holder)})", "add it to the file or correct the "
                          "name in the configuration")
    value = holder[src.name]
    units_attr = src.units_attribute or f"{src.name}_units"
    if src.units_attribute and units_attr not in holder:
        raise _ParamError(None, None, f"{key}.units_attribute {units_attr!r} must be among "
                          f"the {place}", "correct units_attribute")
    units = holder.get(units_attr)
    if isinstance(value, str):
        match = _VALUE_WITH_UNITS.match(value)
        if match and units is None:
            return float(match.group(1)), match.group(2)
        value = _number_or_text(value)
    elif isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    return value, units if units is not None else src.file_units


def _number_or_text(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text.strip()


def time_calendar(ds: xr.Dataset, src: ParamSource) -> str:
    """The calendar of a time parameter: declared, else the file coordinate's, else standard."""
    coord = ds[src.name] if src.name in ds.variables else None
    found = coord.encoding.get("calendar") or coord.attrs.get("calendar") if coord is not None \
        else None
    return src.calendar or found or "standard"


def _time_numbers(coord: xr.DataArray, src: ParamSource, key: str) -> np.ndarray:
    import cftime

    values = np.asarray(coord.values)
    calendar = src.calendar or coord.encoding.get("calendar") or "standard"
    flat = values.ravel()
    if flat.size and isinstance(flat[0], np.datetime64):
        flat = np.array([cftime.DatetimeProlepticGregorian(*_ymdhms(v)) for v in flat])
    try:
        numbers = cftime.date2num(list(flat), src.units, calendar=calendar)
    except (ValueError, TypeError) as exc:
        raise _ParamError(src.name, _short(flat), f"{key}: time values must convert to "
                          f"{src.units!r} in calendar {calendar!r} ({exc})",
                          "declare a reference date and calendar that fit the file") from None
    return np.asarray(numbers, dtype=np.float64).reshape(values.shape)


def _ymdhms(value: np.datetime64) -> tuple[int, ...]:
    import datetime as _dt

    stamp = value.astype("datetime64[us]").astype(_dt.datetime)
    return (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)


def _to_canonical(raw: Any, units: str | None, src: ParamSource, where: str) -> Any:
    key = f"data.params.{src.key}"
    values = np.asarray(raw)
    numeric = values.dtype.kind in "iufb" and values.dtype.kind != "b"
    if src.kind == "categorical" or not numeric or src.source == "time":
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            raise _ParamError(src.name, _short(values), f"{key}: parameter values must be "
                              "finite", "fix the file")
        return values
    if not np.all(np.isfinite(values)):
        raise _ParamError(src.name, _short(values), f"{key}: parameter values must be finite",
                          "fix the file")
    if units is None:
        if parse_units(src.units).unit.dimensionless and parse_units(src.units).scale == 1.0:
            return values.astype(np.float64)
        raise _ParamError(src.name, _short(values), f"{key}: the units of the parameter must "
                          "be known (a units attribute, a '<name>_units' attribute, a value "
                          "like '300 K', or a declared file_units)",
                          f"add the units to the file or declare file_units (e.g. "
                          f"{src.units!r}) in {key}")
    try:
        a, b = linear_conversion(str(units), src.units)
    except UnitsError as exc:
        raise _ParamError(src.name, f"{_short(values)} {units}", f"{key}: parameter units must "
                          f"convert to the canonical {src.units!r}: {exc.reason}",
                          "correct the units in the file or the declared canonical units") from None
    return values.astype(np.float64) * a + b


def param_kinds(config: DataConfig, files: Sequence[Any],
                problems: list[Problem]) -> dict[str, str]:
    """The kind of each parameter, declared (``kind:``) or inferred once, from the first
    file; every file whose values disagree with it is a problem naming that file.

    ``files`` are the planned files in order (each with ``path`` and ``points``)."""
    kinds = {}
    for key, src in config.params.items():
        if not files:
            continue
        first = files[0]
        kind = src.kind or ("continuous" if _numeric(first.points, key) else "categorical")
        origin = (f"declared in data.params.{key}.kind" if src.kind
                  else f"inferred from the first file, {first.path.name}")
        for fp in files:
            values = [p[key] for p in fp.points]
            if kind == "continuous" and not _numeric(fp.points, key):
                bad = next(v for v in values if not _is_number(v))
                problems.append(Problem(str(fp.path), src.name, bad, f"parameter {key!r} is "
                                        f"continuous ({origin}), so its value must be a number "
                                        "in every file", f"fix the file, or declare "
                                        f"data.params.{key}.kind: categorical"))
            elif kind == "categorical" and not src.kind and _numeric(fp.points, key):
                problems.append(Problem(str(fp.path), src.name, values[0], f"parameter {key!r} "
                                        f"is categorical ({origin}, a text value) but this file "
                                        "gives a number", f"fix the files, or declare "
                                        f"data.params.{key}.kind: categorical to take numbers "
                                        "as category names"))
        kinds[key] = kind
    return kinds


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _numeric(points: list[dict[str, Any]], key: str) -> bool:
    return all(_is_number(p[key]) for p in points)
