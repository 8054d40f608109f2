"""The pipeline's ``data:`` section as typed, validated pydantic models.

``DataConfig.from_dict(d, path="data")`` checks every key: unknown keys, wrong types and
impossible values are reported together, each with its key path (``data.params.T.source``),
the value, the rule and the fix. A minimal section::

    data:
      files: "sweep/*.nc"                 # glob, or a list of files/globs
      variables: [density]                # field variable(s): the channels
      spatial_dims: [x, y]
      units: {density: "kg m-3"}          # canonical units (a string: same for all)
      params:
        temperature: {source: global_attribute, units: K}
        scenario: {source: variable_attribute, attribute: experiment_id, kind: categorical}
        run_T: {source: filename, pattern: "T(?P<value>[0-9.]+)K", units: K}
        day: {source: time, name: time, units: "days since 2000-01-01", calendar: 360_day}
      bounds: {density: [0, null]}        # physical bounds, enforced by the transform

Parameter sources: ``global_attribute``, ``variable_attribute`` (``variable`` defaults to
the first field variable), ``coordinate`` (scalar, or 1D along a sample dimension),
``filename`` (regular expression with one group or a group named ``value``) and ``time``
(a time coordinate converted to a number by ``cftime.date2num`` with ``units``/``calendar``;
``units`` are seconds to days since a date, checked on load, and ``calendar`` defaults to the
file's; :mod:`rho_workflow.data.calendars`). ``bounds`` declares a variable's physical range
(``[low, high]``, ``[low, high, units]`` or ``{low, high, units}``, null for an open side):
the transform maps it onto the real line, so generated fields respect it by construction.
``name`` is the attribute/coordinate name in the file (default: the parameter's key; ``time``
for source ``time``). A
numeric parameter's units in the file come from ``units_attribute`` (default ``<name>_units``
when present), the coordinate's ``units``, a value written as text with units (``"300 K"``)
or ``file_units``, in that order; ``filename`` values default to the canonical ``units``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Mapping

from pydantic import ConfigDict, Field, ValidationInfo, WithJsonSchema, field_validator, model_validator

from rho_workflow.data.calendars import time_units_problem
from rho_workflow.data.units import UnitsError, parse_units
from rho_workflow.errors import ConfigError
from rho_workflow.sections import Section, validate_section

__all__ = ["ConfigError", "ParamSource", "SplitConfig", "TransformConfig", "DataConfig",
           "PARAM_SOURCES", "MISSING_POLICIES", "NORMALIZATIONS"]

PARAM_SOURCES = ("global_attribute", "variable_attribute", "coordinate", "filename", "time")
MISSING_POLICIES = ("error", "fixed-mask", "fill")
NORMALIZATIONS = ("standard", "minmax", "none")
STORE_FORMATS = ("zarr", "netcdf")

#: a tuple of names, written as a YAML list (``OneOrNames``: or as one string)
Names = Annotated[tuple[str, ...], Field(strict=False)]
_STR, _LIST = {"type": "string"}, {"type": "array", "items": {"type": "string"}}
OneOrNames = Annotated[Names, WithJsonSchema({"anyOf": [_STR, _LIST]})]


class _Frozen(Section):
    model_config = ConfigDict(frozen=True)


def _raise(problems: list[str]) -> None:  # every problem of one validator, one per line
    if problems:
        raise ValueError("\n".join(problems))


def _check_units(text: Any, where: str) -> Any:
    if isinstance(text, str):
        parse_units(text, where=where)  # UnitsError is a ValueError: reported at its key
    return text


class ParamSource(_Frozen):
    """Where one parameter comes from and its canonical units (see the module docstring)."""

    key: str
    source: Literal[PARAM_SOURCES]  # type: ignore[valid-type]
    name: str
    units: str = "1"
    kind: Literal["continuous", "categorical"] | None = None
    variable: str | None = None
    pattern: str | None = None
    file_units: str | None = None
    units_attribute: str | None = None
    calendar: str | None = None
    low: float | None = None
    high: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, d: Any) -> Any:
        if isinstance(d, Mapping):
            d = dict(d)
            time = d.get("source") == "time"
            d.setdefault("name", "time" if time else d.get("key"))
            d.setdefault("units", "days since 1970-01-01" if time else "1")
        return d

    @field_validator("file_units")
    @classmethod
    def _file_units(cls, value: str | None) -> str | None:
        return _check_units(value, "{path}.file_units")

    @model_validator(mode="after")
    def _rules(self) -> "ParamSource":
        problems: list[str] = []
        if self.source == "filename":
            if self.pattern is None:
                problems.append("{path}.pattern: required for source 'filename' (a regular "
                                "expression with one group or a group named 'value')")
            else:
                problems.extend(_pattern_problems(self.pattern, "{path}.pattern"))
        elif self.pattern is not None:
            problems.append(f"{{path}}.pattern: only used with source 'filename', not {self.source!r}")
        if self.source == "time":
            problem = time_units_problem(self.units, self.calendar)
            if problem:
                problems.append(f"{{path}}: {problem} for source 'time'")
        elif self.calendar is not None:
            problems.append(f"{{path}}.calendar: only used with source 'time', not {self.source!r}")
        else:
            try:
                _check_units(self.units, "{path}.units")
            except UnitsError as exc:
                problems.append(str(exc))
        if (self.low is None) != (self.high is None):
            problems.append("{path}: declare both low and high, or neither")
        elif self.low is not None and self.low > self.high:
            problems.append(f"{{path}}: low={self.low} must be <= high={self.high}")
        _raise(problems)
        return self


def _pattern_problems(pattern: str, where: str) -> list[str]:
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return [f"{where}: value {pattern!r} is not a regular expression ({exc})"]
    if "value" not in compiled.groupindex and compiled.groups != 1:
        return [f"{where}: value {pattern!r} must have exactly one group or a group "
                "named 'value', e.g. 'T(?P<value>[0-9.]+)K'"]
    return []


class SplitConfig(_Frozen):
    """Fractions of runs kept out of training, drawn with ``seed``.

    ``by`` says what a run is: ``file`` (every sample of a file together: realizations,
    time steps), ``params`` (samples sharing a parameter point together, across files), or a
    list of parameter names (e.g. ``[scenario]``: hold out whole scenarios).
    """

    validation: float = Field(0.1, ge=0.0, lt=1.0)
    held_out: float = Field(0.1, ge=0.0, lt=1.0)
    seed: int = 0
    by: str | Names = "file"

    @field_validator("by", mode="before")
    @classmethod
    def _by(cls, by: Any, info: ValidationInfo) -> Any:
        params = list((info.context or {}).get("params", ()))
        if isinstance(by, list):
            if not by or [b for b in by if b not in params]:
                raise ValueError(f"value {by!r} must list parameters among {params}")
            return tuple(by)
        if by not in ("file", "params"):
            raise ValueError(f"value {by!r} must be 'file', 'params' or a list of parameter names")
        return by

    @model_validator(mode="after")
    def _leaves_training(self) -> "SplitConfig":
        total = self.validation + self.held_out
        if total >= 1.0:
            raise ValueError(f"validation + held_out = {total} must be < 1 so that runs remain "
                             "for training")
        return self


class TransformConfig(_Frozen):
    """Field transform: optional log (with a floor) then a normalization per channel.

    A value below ``floor`` in a log channel is an error unless ``clamp`` declares that such
    values are raised to the floor; preprocess then counts them (log and store attribute).
    """

    log: Annotated[Names, WithJsonSchema({"anyOf": [{"type": "boolean"}, _STR, _LIST]})] = ()
    floor: float = Field(1e-12, gt=0)
    clamp: bool = False
    normalize: Literal[NORMALIZATIONS] = "standard"  # type: ignore[valid-type]

    @field_validator("log", mode="before")
    @classmethod
    def _log(cls, log: Any, info: ValidationInfo) -> Any:
        variables = list((info.context or {}).get("variables", ()))
        if log is True:
            return tuple(variables)
        if log is False or log is None:
            return ()
        if not isinstance(log, (str, list)):
            raise ValueError(f"value {log!r} must be true, false, a string or a list")
        names = (log,) if isinstance(log, str) else tuple(log)
        unknown = [n for n in names if n not in variables]
        if unknown:
            raise ValueError(f"variables {unknown} are not among the field variables "
                             f"{variables}; use true, false or a list of them")
        return names


class DataConfig(_Frozen):
    """The resolved ``data:`` section; build it with :meth:`from_dict`."""

    files: OneOrNames
    variables: OneOrNames
    spatial_dims: OneOrNames
    units: Annotated[dict[str, str], WithJsonSchema(
        {"anyOf": [_STR, {"type": "object", "additionalProperties": _STR}]})]
    params: dict[str, ParamSource] = Field(default_factory=dict)
    sample_dims: Names | None = None
    select: dict[str, Any] = Field(default_factory=dict)
    crop: Annotated[dict[str, tuple[int, int]], Field(strict=False)] = Field(default_factory=dict)
    coarsen: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    missing: Literal[MISSING_POLICIES] = "error"  # type: ignore[valid-type]
    fill_value: float | None = None
    transform: TransformConfig = TransformConfig()
    split: SplitConfig = SplitConfig()
    bounds: dict[str, Any] = Field(default_factory=dict)
    chunk_mb: float = Field(64.0, gt=0)
    store_format: Literal[STORE_FORMATS] | None = None  # type: ignore[valid-type]
    allow_duplicates: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "data") -> "DataConfig":
        """Validate a ``data:`` mapping; raise :class:`ConfigError` listing every problem."""
        raw = d if isinstance(d, Mapping) else {}
        variables = raw.get("variables")
        variables = [variables] if isinstance(variables, str) else (
            list(variables) if isinstance(variables, list) else [])
        params = raw.get("params")
        context = {"variables": variables,
                   "params": tuple(str(k) for k in params) if isinstance(params, Mapping) else ()}
        return validate_section(cls, d, path, context)

    @field_validator("files", "variables", "spatial_dims", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return _str_list(value, required=True)

    @field_validator("sample_dims", mode="before")
    @classmethod
    def _sample_dims(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, list):
            raise ValueError(f"value {value!r} must be a list")
        return None if value is None else _str_list(value)

    @field_validator("spatial_dims")
    @classmethod
    def _spatial(cls, spatial: tuple[str, ...]) -> tuple[str, ...]:
        problems = []
        if len(set(spatial)) != len(spatial):
            problems.append(f"value {list(spatial)} has duplicate dims")
        if not 1 <= len(spatial) <= 3:
            problems.append(f"value {list(spatial)} must name 1, 2 or 3 dims")
        _raise(problems)
        return spatial

    @field_validator("units", mode="before")
    @classmethod
    def _units(cls, value: Any, info: ValidationInfo) -> Any:
        return _units_section(value, list((info.context or {}).get("variables", ())))

    @field_validator("params", mode="before")
    @classmethod
    def _param_keys(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {str(k): {**v, "key": str(k)} if isinstance(v, Mapping) else v
                for k, v in value.items()}

    @field_validator("crop", mode="before")
    @classmethod
    def _crop(cls, value: Any) -> Any:
        return _int_pairs(value) if isinstance(value, Mapping) else value

    @field_validator("select", mode="before")
    @classmethod
    def _select(cls, value: Any) -> Any:
        return _select_section(value) if isinstance(value, Mapping) else value

    @model_validator(mode="after")
    def _rules(self) -> "DataConfig":
        problems = []
        if self.sample_dims is not None:
            overlap = set(self.sample_dims) & set(self.spatial_dims)
            if overlap:
                problems.append(f"{{path}}.sample_dims: {sorted(overlap)} are also spatial dims")
        for var, spec in self.bounds.items():
            try:
                _physical_bounds(var, spec, self)
            except ValueError as exc:
                problems.append(f"{{path}}.bounds.{var}: {exc}")
        if self.missing == "fill" and self.fill_value is None:
            problems.append("{path}.fill_value: required with missing: fill (the value, in "
                            "canonical units, that replaces missing points)")
        _raise(problems)
        return self

    @property
    def physical_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """``variable -> (low, high)`` in canonical units (None: open side) of ``bounds``.

        ``bounds: {tos: [-1.9, 40]}`` (canonical units), ``{tos: [-1.9, 40, degC]}`` or
        ``{tos: {low: -1.9, high: 40, units: degC}}``; ``{pr: [0, null]}`` for positivity.
        The transform enforces them by construction
        (:class:`~rho_workflow.data.transforms.Bounded`); evaluation reports the fraction
        of values outside them.
        """
        return {var: _physical_bounds(var, spec, self) for var, spec in self.bounds.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, accepted back by :meth:`from_dict` (recorded in the store)."""
        params = {}
        for key, p in self.params.items():
            entry = {"source": p.source, "name": p.name, "units": p.units}
            for opt in ("kind", "variable", "pattern", "file_units", "units_attribute",
                        "calendar", "low", "high"):
                if getattr(p, opt) is not None:
                    entry[opt] = getattr(p, opt)
            params[key] = entry
        out: dict[str, Any] = {
            "files": list(self.files), "variables": list(self.variables),
            "spatial_dims": list(self.spatial_dims), "units": dict(self.units),
            "params": params, "select": dict(self.select),
            "crop": {k: list(v) for k, v in self.crop.items()}, "coarsen": dict(self.coarsen),
            "missing": self.missing,
            "transform": {"log": list(self.transform.log), "floor": self.transform.floor,
                          "clamp": self.transform.clamp,
                          "normalize": self.transform.normalize},
            "split": {"validation": self.split.validation, "held_out": self.split.held_out,
                      "seed": self.split.seed,
                      "by": self.split.by if isinstance(self.split.by, str)
                      else list(self.split.by)},
            "chunk_mb": self.chunk_mb, "allow_duplicates": self.allow_duplicates,
        }
        if self.bounds:
            out["bounds"] = {v: list(b) for v, b in self.physical_bounds.items()}
        if self.sample_dims is not None:
            out["sample_dims"] = list(self.sample_dims)
        if self.fill_value is not None:
            out["fill_value"] = self.fill_value
        if self.store_format is not None:
            out["store_format"] = self.store_format
        return out


def _physical_bounds(var: str, spec: Any, config: "DataConfig"
                     ) -> tuple[float | None, float | None]:
    """``(low, high)`` of one ``bounds`` entry in the variable's canonical units."""
    from rho_workflow.data.units import linear_conversion

    if var not in config.variables:
        raise ValueError(f"{var!r} is not a field variable {list(config.variables)}")
    if var in config.transform.log:
        raise ValueError(f"{var!r} is also in transform.log (rule: bounds replace the log "
                         "step); fix: bounds {" + var + ": [0, null]} for a positive field, "
                         "without transform.log")
    if isinstance(spec, Mapping):
        extra = set(spec) - {"low", "high", "units"}
        if extra:
            raise ValueError(f"unknown keys {sorted(extra)}; valid keys are low, high, units")
        low, high, units = spec.get("low"), spec.get("high"), spec.get("units")
    elif isinstance(spec, list) and len(spec) in (2, 3):
        low, high = spec[0], spec[1]
        units = spec[2] if len(spec) == 3 else None
    else:
        raise ValueError(f"value {spec!r} must be [low, high], [low, high, units] or "
                         "{low, high, units} (null for an open side)")
    for v in (low, high):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"bound {v!r} must be a number or null")
    if low is None and high is None:
        raise ValueError("give a low bound, a high bound or both")
    if units is not None:
        if not isinstance(units, str):
            raise ValueError(f"units {units!r} must be a unit string")
        a, b = linear_conversion(units, config.units[var],
                                 where=f"bounds of {var!r}")  # UnitsError is a ValueError
        low, high = (None if v is None else a * v + b for v in (low, high))
    if low is not None and high is not None and not low < high:
        raise ValueError(f"low={low} must be < high={high}")
    return (None if low is None else float(low), None if high is None else float(high))


def _str_list(value: Any, *, required: bool = False) -> Any:
    if not isinstance(value, (str, list)):
        raise ValueError(f"value {value!r} must be a string or a list")
    items = [value] if isinstance(value, str) else value
    if required and not items:
        raise ValueError("value [] must list at least one entry")
    bad = [v for v in items if not isinstance(v, str) or not v]
    if bad:
        raise ValueError(f"entries {bad!r} must be non-empty strings")
    return tuple(items)


def _units_section(value: Any, variables: list[str]) -> Any:
    if isinstance(value, str):
        value = {v: value for v in variables}
    if not isinstance(value, Mapping):
        raise ValueError(f"value {value!r} must be a string or a mapping")
    problems = []
    for var in variables:
        if var not in value:
            problems.append(f"{{path}}.{var}: canonical units of field variable {var!r} are "
                            "missing; fix: add them, e.g. units: {" + var + ": K}")
    out = {}
    for var, text in value.items():
        if var not in variables:
            problems.append(f"{{path}}.{var}: {var!r} is not a field variable {variables}")
        elif not isinstance(text, str):
            problems.append(f"{{path}}.{var}: value {text!r} must be a unit string")
        else:
            try:
                parse_units(text, where=f"{{path}}.{var}")
            except UnitsError as exc:
                problems.append(str(exc))
                continue
            out[var] = text
    _raise(problems)
    return out


def _int_pairs(value: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    out, problems = {}, []
    for dim, pair in value.items():
        ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
              and 0 <= pair[0] < pair[1])
        if not ok:
            problems.append(f"{{path}}.{dim}: value {pair!r} must be [start, stop] indices with "
                            "0 <= start < stop")
        else:
            out[str(dim)] = (int(pair[0]), int(pair[1]))
    _raise(problems)
    return out


def _select_section(value: Mapping[str, Any]) -> dict[str, Any]:
    """Label selections: a value, a list of values, or ``{start: a, stop: b}`` (inclusive)."""
    out, problems = {}, []
    for dim, spec in value.items():
        if isinstance(spec, Mapping):
            extra = set(spec) - {"start", "stop"}
            if extra:
                problems.append(f"{{path}}.{dim}: unknown keys {sorted(extra)} (rule: a range is "
                                "{start: a, stop: b})")
                continue
        elif not isinstance(spec, (str, int, float, list)) or isinstance(spec, bool):
            problems.append(f"{{path}}.{dim}: value {spec!r} must be a label, a list of labels or "
                            "{start: a, stop: b}")
            continue
        out[str(dim)] = spec
    _raise(problems)
    return out
