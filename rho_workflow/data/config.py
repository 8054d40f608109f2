"""The pipeline's ``data:`` section as typed, validated dataclasses.

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
        day: {source: time, name: time, units: "days since 2000-01-01"}

Parameter sources: ``global_attribute``, ``variable_attribute`` (``variable`` defaults to
the first field variable), ``coordinate`` (scalar, or 1D along a sample dimension),
``filename`` (regular expression with one group or a group named ``value``) and ``time``
(a time coordinate converted to a number by ``cftime.date2num`` with ``units``/``calendar``).
``name`` is the attribute/coordinate name in the file (default: the parameter's key; ``time``
for source ``time``). A
numeric parameter's units in the file come from ``units_attribute`` (default ``<name>_units``
when present), the coordinate's ``units``, a value written as text with units (``"300 K"``)
or ``file_units``, in that order; ``filename`` values default to the canonical ``units``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from rho_workflow.data.config_reader import Reader as _Reader
from rho_workflow.data.units import UnitsError, parse_units
from rho_workflow.errors import ConfigError

__all__ = ["ConfigError", "ParamSource", "SplitConfig", "TransformConfig", "DataConfig",
           "PARAM_SOURCES", "MISSING_POLICIES", "NORMALIZATIONS"]

PARAM_SOURCES = ("global_attribute", "variable_attribute", "coordinate", "filename", "time")
MISSING_POLICIES = ("error", "fixed-mask", "fill")
NORMALIZATIONS = ("standard", "minmax", "none")
STORE_FORMATS = ("zarr", "netcdf")


@dataclass(frozen=True)
class ParamSource:
    """Where one parameter comes from and its canonical units (see the module docstring)."""

    key: str
    source: str
    name: str
    units: str = "1"
    kind: str | None = None
    variable: str | None = None
    pattern: str | None = None
    file_units: str | None = None
    units_attribute: str | None = None
    calendar: str | None = None
    low: float | None = None
    high: float | None = None

    @classmethod
    def from_dict(cls, key: str, d: Any, path: str, problems: list[str]) -> "ParamSource":
        r = _Reader(d, path, problems, ("source", "name", "units", "kind", "variable", "pattern",
                                        "file_units", "units_attribute", "calendar", "low",
                                        "high"))
        source = r.get("source", str, "global_attribute", required=True, choices=PARAM_SOURCES)
        pattern = r.get("pattern", str)
        if source == "filename":
            if pattern is None:
                problems.append(f"{path}.pattern: required for source 'filename' (a regular "
                                "expression with one group or a group named 'value')")
            else:
                _check_pattern(pattern, f"{path}.pattern", problems)
        elif pattern is not None:
            problems.append(f"{path}.pattern: only used with source 'filename', not {source!r}")
        if source == "time":
            units = r.get("units", str, "days since 1970-01-01")
            if "since" not in units.split():
                problems.append(f"{path}.units: value {units!r} must be a time reference such "
                                "as 'days since 2000-01-01' for source 'time'")
        else:
            units = r.units("units", "1") or "1"
        low, high = r.get("low", (int, float)), r.get("high", (int, float))
        if (low is None) != (high is None):
            problems.append(f"{path}: declare both low and high, or neither")
        elif low is not None and not low <= high:
            problems.append(f"{path}: low={low} must be <= high={high}")
        return cls(
            key=key, source=source or "global_attribute",
            name=r.get("name", str, "time" if source == "time" else key),
            units=units, kind=r.get("kind", str, None, choices=("continuous", "categorical")),
            variable=r.get("variable", str), pattern=pattern,
            file_units=r.units("file_units"), units_attribute=r.get("units_attribute", str),
            calendar=r.get("calendar", str), low=None if low is None else float(low),
            high=None if high is None else float(high),
        )


def _check_pattern(pattern: str, where: str, problems: list[str]) -> None:
    import re

    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        problems.append(f"{where}: value {pattern!r} is not a regular expression ({exc})")
        return
    if "value" not in compiled.groupindex and compiled.groups != 1:
        problems.append(f"{where}: value {pattern!r} must have exactly one group or a group "
                        "named 'value', e.g. 'T(?P<value>[0-9.]+)K'")


@dataclass(frozen=True)
class SplitConfig:
    """Fractions of runs kept out of training, drawn with ``seed``.

    ``by`` says what a run is: ``file`` (every sample of a file together: realizations,
    time steps), ``params`` (samples sharing a parameter point together, across files), or a
    list of parameter names (e.g. ``[scenario]``: hold out whole scenarios).
    """

    validation: float = 0.1
    held_out: float = 0.1
    seed: int = 0
    by: str | tuple[str, ...] = "file"

    @classmethod
    def from_dict(cls, d: Any, path: str, problems: list[str],
                  params: tuple[str, ...] = ()) -> "SplitConfig":
        r = _Reader(d, path, problems, ("validation", "held_out", "seed", "by"))
        validation = float(r.get("validation", (int, float), 0.1))
        held_out = float(r.get("held_out", (int, float), 0.1))
        for key, value in (("validation", validation), ("held_out", held_out)):
            if not 0.0 <= value < 1.0:
                problems.append(f"{path}.{key}: value {value} must be in [0, 1)")
        if validation + held_out >= 1.0:
            problems.append(f"{path}: validation + held_out = {validation + held_out} must be "
                            "< 1 so that runs remain for training")
        by = r.get("by", (str, list), "file")
        if isinstance(by, list):
            unknown = [b for b in by if b not in params]
            if unknown or not by:
                problems.append(f"{path}.by: value {by!r} must list parameters among "
                                f"{list(params)}")
            by = tuple(by)
        elif by not in ("file", "params"):
            problems.append(f"{path}.by: value {by!r} must be 'file', 'params' or a list of "
                            "parameter names")
            by = "file"
        return cls(validation, held_out, int(r.get("seed", int, 0)), by)


@dataclass(frozen=True)
class TransformConfig:
    """Field transform: optional log (with a floor) then a normalization per channel."""

    log: tuple[str, ...] = ()
    floor: float = 1e-12
    normalize: str = "standard"

    @classmethod
    def from_dict(cls, d: Any, path: str, problems: list[str],
                  variables: list[str]) -> "TransformConfig":
        r = _Reader(d, path, problems, ("log", "floor", "normalize"))
        log = r.get("log", (bool, str, list), False)
        if log is True:
            names = tuple(variables)
        elif log is False or log is None:
            names = ()
        else:
            names = (log,) if isinstance(log, str) else tuple(log)
            unknown = [n for n in names if n not in variables]
            if unknown:
                problems.append(f"{path}.log: variables {unknown} are not among the field "
                                f"variables {variables}; use true, false or a list of them")
        floor = float(r.get("floor", (int, float), 1e-12))
        if not floor > 0:
            problems.append(f"{path}.floor: value {floor} must be > 0")
        normalize = r.get("normalize", str, "standard", choices=NORMALIZATIONS) or "standard"
        return cls(names, floor, normalize)


@dataclass(frozen=True)
class DataConfig:
    """The resolved ``data:`` section; build it with :meth:`from_dict`."""

    files: tuple[str, ...]
    variables: tuple[str, ...]
    spatial_dims: tuple[str, ...]
    units: dict[str, str]
    params: dict[str, ParamSource] = field(default_factory=dict)
    sample_dims: tuple[str, ...] | None = None
    select: dict[str, Any] = field(default_factory=dict)
    crop: dict[str, tuple[int, int]] = field(default_factory=dict)
    coarsen: dict[str, int] = field(default_factory=dict)
    missing: str = "error"
    fill_value: float | None = None
    transform: TransformConfig = TransformConfig()
    split: SplitConfig = SplitConfig()
    chunk_mb: float = 64.0
    store_format: str | None = None
    allow_duplicates: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "data") -> "DataConfig":
        """Validate a ``data:`` mapping; raise :class:`ConfigError` listing every problem."""
        problems: list[str] = []
        r = _Reader(d, path, problems, (
            "files", "variables", "spatial_dims", "units", "params", "sample_dims", "select",
            "crop", "coarsen", "missing", "fill_value", "transform", "split", "chunk_mb",
            "store_format", "allow_duplicates"))
        files = r.str_list("files", required=True)
        variables = r.str_list("variables", required=True)
        spatial = r.str_list("spatial_dims", required=True)
        if len(set(spatial)) != len(spatial):
            problems.append(f"{path}.spatial_dims: value {spatial} has duplicate dims")
        if spatial and not 1 <= len(spatial) <= 3:
            problems.append(f"{path}.spatial_dims: value {spatial} must name 1, 2 or 3 dims")
        units = _units_section(r.get("units", (str, dict), None, required=True), variables,
                               f"{path}.units", problems)
        params_raw = r.get("params", dict, {})
        params = {str(k): ParamSource.from_dict(str(k), v, f"{path}.params.{k}", problems)
                  for k, v in params_raw.items()}
        sample_dims = r.get("sample_dims", list, None)
        if sample_dims is not None:
            sample_dims = tuple(r.str_list("sample_dims"))
            overlap = set(sample_dims) & set(spatial)
            if overlap:
                problems.append(f"{path}.sample_dims: {sorted(overlap)} are also spatial dims")
        crop = _int_pairs(r.get("crop", dict, {}), f"{path}.crop", problems)
        coarsen = {}
        for dim, factor in r.get("coarsen", dict, {}).items():
            if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
                problems.append(f"{path}.coarsen.{dim}: value {factor!r} must be an integer >= 1")
            else:
                coarsen[str(dim)] = factor
        missing = r.get("missing", str, "error", choices=MISSING_POLICIES) or "error"
        fill_value = r.get("fill_value", (int, float), None)
        if missing == "fill" and fill_value is None:
            problems.append(f"{path}.fill_value: required with missing: fill (the value, in "
                            "canonical units, that replaces missing points)")
        chunk_mb = float(r.get("chunk_mb", (int, float), 64.0))
        if not chunk_mb > 0:
            problems.append(f"{path}.chunk_mb: value {chunk_mb} must be > 0")
        config = cls(
            files=tuple(files), variables=tuple(variables), spatial_dims=tuple(spatial),
            units=units, params=params, sample_dims=sample_dims,
            select=_select_section(r.get("select", dict, {}), f"{path}.select", problems),
            crop=crop, coarsen=coarsen,
            missing=missing, fill_value=None if fill_value is None else float(fill_value),
            transform=TransformConfig.from_dict(r.get("transform", dict, {}),
                                                f"{path}.transform", problems, variables),
            split=SplitConfig.from_dict(r.get("split", dict, {}), f"{path}.split", problems,
                                        tuple(params)),
            chunk_mb=chunk_mb,
            store_format=r.get("store_format", str, None, choices=STORE_FORMATS),
            allow_duplicates=bool(r.get("allow_duplicates", bool, False)),
        )
        if problems:
            raise ConfigError(problems)
        return config

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
                          "normalize": self.transform.normalize},
            "split": {"validation": self.split.validation, "held_out": self.split.held_out,
                      "seed": self.split.seed,
                      "by": self.split.by if isinstance(self.split.by, str)
                      else list(self.split.by)},
            "chunk_mb": self.chunk_mb, "allow_duplicates": self.allow_duplicates,
        }
        if self.sample_dims is not None:
            out["sample_dims"] = list(self.sample_dims)
        if self.fill_value is not None:
            out["fill_value"] = self.fill_value
        if self.store_format is not None:
            out["store_format"] = self.store_format
        return out


def _units_section(value: Any, variables: list[str], path: str,
                   problems: list[str]) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = {v: value for v in variables}
    out = {}
    for var in variables:
        if var not in value:
            problems.append(f"{path}.{var}: canonical units of field variable {var!r} are "
                            "missing; fix: add them, e.g. units: {" + var + ": K}")
    for var, text in value.items():
        if var not in variables:
            problems.append(f"{path}.{var}: {var!r} is not a field variable {variables}")
            continue
        if not isinstance(text, str):
            problems.append(f"{path}.{var}: value {text!r} must be a unit string")
            continue
        try:
            parse_units(text, where=f"{path}.{var}")
        except UnitsError as exc:
            problems.append(str(exc))
            continue
        out[var] = text
    return out


def _int_pairs(value: Mapping[str, Any], path: str,
               problems: list[str]) -> dict[str, tuple[int, int]]:
    out = {}
    for dim, pair in value.items():
        ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
              and all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
              and 0 <= pair[0] < pair[1])
        if not ok:
            problems.append(f"{path}.{dim}: value {pair!r} must be [start, stop] indices with "
                            "0 <= start < stop")
        else:
            out[str(dim)] = (int(pair[0]), int(pair[1]))
    return out


def _select_section(value: Mapping[str, Any], path: str, problems: list[str]) -> dict[str, Any]:
    """Label selections: a value, a list of values, or ``{start: a, stop: b}`` (inclusive)."""
    out = {}
    for dim, spec in value.items():
        if isinstance(spec, Mapping):
            extra = set(spec) - {"start", "stop"}
            if extra:
                problems.append(f"{path}.{dim}: unknown keys {sorted(extra)} (rule: a range is "
                                "{start: a, stop: b})")
                continue
        elif not isinstance(spec, (str, int, float, list)) or isinstance(spec, bool):
            problems.append(f"{path}.{dim}: value {spec!r} must be a label, a list of labels or "
                            "{start: a, stop: b}")
            continue
        out[str(dim)] = spec
    return out
