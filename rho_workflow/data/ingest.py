"""Plan and build the lazy view of a netCDF sweep: files -> samples in canonical units.

:func:`plan_ingest` opens every file lazily with xarray (metadata only), applies the
configured select/crop/coarsen, reads the parameters of every sample, checks units, dims
and grids, and returns a :class:`IngestPlan` -- plain data, no values read -- or raises one
:class:`~rho_workflow.data.validate.DataValidationError` listing every problem found.
:func:`build_fields` turns a plan into one Dask array ``(sample, channel, *spatial)`` in
canonical units: the first stage of the preprocessing graph.
"""

from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from rho_workflow.data.config import DataConfig
from rho_workflow.data.units import UnitsError, linear_conversion
from rho_workflow.data.file_params import param_kinds, read_params, time_calendar
from rho_workflow.data.formats import FORMAT_NAMES, file_format, open_fits, open_hdf5
from rho_workflow.data.labels import FIELD_ATTRS, cf_axes, plain_attrs
from rho_workflow.data.validate import Problem, raise_if_problems
from rho_workflow.data.validate import short_values as _short

__all__ = ["Grid", "FilePlan", "IngestPlan", "resolve_files", "open_sweep_file",
           "plan_ingest", "build_fields", "chunk_samples"]

SAMPLE_DIM = "sample"
#: below this mean chunk size, task overhead beats the cost of merging chunks across files
MIN_CHUNK_BYTES = 2 ** 20


@dataclass
class Grid:
    """Spatial grid of the training shape: dims, 1D coordinates (and their CF attributes,
    ``axis`` from cf-xarray), auxiliary coordinates on the grid (2D ``nav_lat``), scalar
    coordinates (``height``) and grid-mapping variables, as :mod:`.labels` describes."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    coords: dict[str, tuple[np.ndarray, str]]
    aux: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]] = field(default_factory=dict)
    coord_attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    scalars: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)
    grid_mapping: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class FilePlan:
    """One file of the sweep: its samples, their parameters and the unit conversions."""

    path: Path
    sample_dims: tuple[str, ...]
    sample_shape: tuple[int, ...]
    points: list[dict[str, Any]]
    labels: list[str]
    conversions: dict[str, tuple[float, float]]
    dataset: xr.Dataset | None = field(default=None, repr=False, compare=False)
    calendars: dict[str, str] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(np.prod(self.sample_shape, dtype=np.int64))


@dataclass
class IngestPlan:
    """Everything known about a sweep before its values are read."""

    config: DataConfig
    files: list[FilePlan]
    grid: Grid
    field_attrs: dict[str, dict[str, str]]
    param_kinds: dict[str, str]
    param_calendars: dict[str, str] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return sum(f.n_samples for f in self.files)

    @property
    def points(self) -> list[dict[str, Any]]:
        return [p for f in self.files for p in f.points]

    @property
    def sample_files(self) -> list[str]:
        return [str(f.path) for f in self.files for _ in range(f.n_samples)]

    @property
    def sample_labels(self) -> list[str]:
        return [label for f in self.files for label in f.labels]


def resolve_files(patterns: tuple[str, ...] | list[str]) -> tuple[list[Path], list[Problem]]:
    """Expand globs in order; missing files, empty globs and repeated files are problems."""
    paths: list[Path] = []
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for pattern in patterns:
        pattern = os.path.expanduser(pattern)
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern))
            if not matches:
                problems.append(Problem(pattern, None, pattern, "a glob must match at least "
                                        "one file", "check the folder and the pattern in data.files"))
        else:
            matches = [pattern]
            if not os.path.isfile(pattern):
                problems.append(Problem(pattern, None, pattern, "every listed file must exist",
                                        "correct the path in data.files"))
                continue
        for match in matches:
            real = os.path.realpath(match)
            if real in seen:
                problems.append(Problem(match, None, match, f"each file may appear once, but it "
                                        f"is also matched as {seen[real]}",
                                        "remove the repeated entry from data.files"))
                continue
            seen[real] = match
            paths.append(Path(match))
    return paths, problems


def open_sweep_file(path: Path, config: DataConfig | None = None) -> xr.Dataset:
    """Open one netCDF file lazily (CF decoding, cftime for every calendar); values are read
    only when indexed, or chunk by chunk once :func:`_select` has made them Dask arrays.
    HDF5 and FITS files (by suffix) are read by :mod:`.formats`, with dims from ``config``."""
    kind = file_format(Path(path))
    if kind != "netcdf":
        if config is None:
            raise ValueError(f"{path}: reading a {kind} file needs the data section (its dims)")
        opener = open_hdf5 if kind == "hdf5" else open_fits
        return opener(Path(path), config.variables, config.spatial_dims, config.sample_dims or ())
    coder = xr.coders.CFDatetimeCoder(use_cftime=True)
    return xr.open_dataset(path, engine="netcdf4", chunks=None, decode_times=coder,
                           decode_timedelta=False, mask_and_scale=True)


def _select(arr: xr.DataArray, config: DataConfig, where: str, problems: list[Problem],
            chunks: dict[str, int] | None = None) -> xr.DataArray | None:
    """Apply data.select (labels) and data.crop (indices) to the lazy file variable, make it a
    Dask array with ``chunks`` (default: one chunk), then data.coarsen (block means)."""
    var = arr.name
    for dim, spec in config.select.items():
        if dim not in arr.dims and dim not in arr.coords:
            problems.append(Problem(where, var, dim, f"data.select needs dim {dim!r}, which the "
                                    f"variable lacks (dims {list(arr.dims)})",
                                    "remove it from data.select or fix the file"))
            return None
        if isinstance(spec, dict):
            spec = slice(spec.get("start"), spec.get("stop"))
        try:
            arr = arr.sel({dim: spec})
        except (KeyError, ValueError, TypeError) as exc:
            problems.append(Problem(where, var, spec, f"data.select.{dim} must name labels of "
                                    f"the coordinate ({exc})", "use values present in the file"))
            return None
    for dim, (start, stop) in config.crop.items():
        if dim not in arr.dims or arr.sizes[dim] < stop:
            size = arr.sizes.get(dim)
            problems.append(Problem(where, var, [start, stop], f"data.crop.{dim} must lie within "
                                    f"the dim (size {size})", "crop inside the grid"))
            return None
        arr = arr.isel({dim: slice(start, stop)})
    arr = arr.chunk({d: (chunks or {}).get(d, -1) for d in arr.dims})
    if config.coarsen:
        missing = [d for d in config.coarsen if d not in arr.dims]
        if missing:
            problems.append(Problem(where, var, missing, "data.coarsen dims must exist",
                                    "coarsen only dims of the variable"))
            return None
        # block means that keep missing points missing (a NaN in a block -> NaN); longitudes
        # are averaged on the circle, so that a block across the dateline stays on it
        import cf_xarray  # noqa: F401  (registers the .cf accessor)

        longitudes = arr.cf.coordinates.get("longitude", [])
        arr = arr.coarsen(config.coarsen, boundary="trim",
                          coord_func={name: circular_mean_degrees for name in longitudes}
                          ).reduce(np.mean, keep_attrs=True)
    return arr


def circular_mean_degrees(x: Any, axis: Any = None, **kwargs: Any) -> Any:
    """Mean direction of angles in degrees, ``atan2(<sin>, <cos>)``, in the range of the
    input's convention ([0, 360) when every input is >= 0, else (-180, 180])."""
    rad = np.deg2rad(x)
    mean = np.rad2deg(np.arctan2(np.sin(rad).mean(axis=axis), np.cos(rad).mean(axis=axis)))
    return np.where(np.min(x) >= 0, np.mod(mean, 360.0), mean)


def _field_conversion(arr: xr.DataArray, target: str, where: str,
                      problems: list[Problem]) -> tuple[float, float] | None:
    var = arr.name
    units = arr.attrs.get("units")
    if units is None:
        problems.append(Problem(where, var, None, "a field variable must have a 'units' "
                                "attribute (CF)", f"add units to {var!r} in the file, e.g. with "
                                f"ncatted -a units,{var},c,c,'{target}'"))
        return None
    try:
        return linear_conversion(units, target, where=f"file {where}, variable {var!r}")
    except UnitsError as exc:
        problems.append(Problem(where, var, units, f"field units must parse and convert to "
                                f"the canonical {target!r}: {exc.reason}",
                                "correct the file's units or the declared canonical units"))
        return None


def _grid_of(arr: xr.DataArray, spatial: tuple[str, ...], ds: xr.Dataset | None = None,
             skip: tuple[str, ...] = ()) -> Grid:
    """The grid of ``arr``: every coordinate and attribute that describes the field (the
    coordinates named in ``skip`` are parameters, not grid)."""
    coords, coord_attrs = {}, {}
    axes = cf_axes(arr)
    for dim in spatial:
        if dim in arr.coords and arr[dim].dims == (dim,):
            coords[dim] = (np.asarray(arr[dim].values), str(arr[dim].attrs.get("units", "1")))
            coord_attrs[dim] = plain_attrs(arr[dim].attrs)
            if dim in axes and axes[dim] in "XYZ":
                coord_attrs[dim].setdefault("axis", axes[dim])
        else:
            coords[dim] = (np.arange(arr.sizes[dim], dtype=np.float64), "1")
            coord_attrs[dim] = {"long_name": f"index along {dim}"}
    aux, scalars = {}, {}
    for name, coord in arr.coords.items():
        if name in spatial or name in skip:
            continue
        if coord.ndim == 0:
            if coord.dtype.kind in "iuf":
                scalars[str(name)] = (float(coord.values), plain_attrs(coord.attrs, ()))
            continue
        if not set(coord.dims) <= set(spatial):
            continue
        attrs = plain_attrs(coord.attrs)
        attrs["units"] = str(coord.attrs.get("units", "1"))
        aux[str(name)] = (tuple(coord.dims), np.asarray(coord.values), attrs)
    grid_mapping = {}
    mapping = arr.attrs.get("grid_mapping")
    if isinstance(mapping, str) and ds is not None and mapping in ds.variables:
        grid_mapping[mapping] = plain_attrs(ds[mapping].attrs, ("_FillValue",))
    return Grid(spatial, tuple(arr.sizes[d] for d in spatial), coords, aux, coord_attrs,
                scalars, grid_mapping)


def _cell_methods(text: str, rename: dict[str, str], known: set[str]) -> str:
    """CF ``cell_methods`` with names renamed (a time coordinate read as a parameter becomes
    the parameter) and the entries over names the output lacks left out.

    The grammar is ``name: [name: ...] method [where ...] [over ...] [(comment)]``,
    repeated; words inside parentheses (``(interval: 1 month)``) belong to their entry.
    """
    entries: list[tuple[list[str], list[str]]] = []
    depth = 0
    for token in text.split():
        is_name = depth == 0 and token.endswith(":") and not token.startswith("(")
        depth += token.count("(") - token.count(")")
        if is_name and (not entries or entries[-1][1]):
            entries.append(([token[:-1]], []))  # a new entry
        elif is_name:
            entries[-1][0].append(token[:-1])  # "lat: lon: mean"
        elif entries:
            entries[-1][1].append(token)
    kept = []
    for names, words in entries:
        names = [rename.get(n, n) for n in names]
        if all(n in known or n == "area" for n in names):
            kept.append(" ".join(f"{n}:" for n in names) + (" " + " ".join(words) if words else ""))
    return " ".join(kept)


def _compare_grid(ref: Grid, grid: Grid, where: str, var: str, ref_file: str,
                  problems: list[Problem]) -> None:
    if grid.shape != ref.shape:
        problems.append(Problem(where, var, dict(zip(grid.dims, grid.shape)), "all files must "
                                f"share one grid, but {ref_file} has "
                                f"{dict(zip(ref.dims, ref.shape))}",
                                "regrid the runs, or crop/coarsen them to one shape"))
        return
    for dim in ref.dims:
        ref_values, ref_units = ref.coords[dim]
        values, units = grid.coords[dim]
        try:
            values = np.asarray(values, dtype=np.float64)
            if units != ref_units:
                a, b = linear_conversion(units, ref_units)
                values = a * values + b
            same = np.allclose(values, np.asarray(ref_values, dtype=np.float64), rtol=1e-6,
                               atol=0.0)
        except (UnitsError, TypeError, ValueError):
            same = False
        if not same:
            problems.append(Problem(where, dim, f"{_short(values)} {units}", "all files must "
                                    f"share one grid, but {ref_file} has "
                                    f"{_short(ref_values)} {ref_units} along {dim!r}",
                                    "regrid the runs to a common grid"))
    for name, (dims, ref_values, _) in ref.aux.items():
        if name in grid.aux and grid.aux[name][0] == dims:
            other = grid.aux[name][1]
            if other.shape != ref_values.shape or not np.allclose(other, ref_values, rtol=1e-6,
                                                                  equal_nan=True):
                problems.append(Problem(where, name, _short(other.ravel()), "auxiliary "
                                        f"coordinates must match those of {ref_file}",
                                        "regrid the runs to a common grid"))


def _field_arrays(ds: xr.Dataset, config: DataConfig, where: str, problems: list[Problem]
                  ) -> tuple[dict[str, xr.DataArray], dict[str, tuple[float, float]], dict[str, dict]]:
    """Each field variable of a file (selected), its unit conversion and CF attributes;
    problems of the missing, misshapen or unconvertible ones appended."""
    arrays, conversions, attrs = {}, {}, {}
    for var in config.variables:
        if var not in ds.data_vars and var not in ds.coords:
            problems.append(Problem(where, var, var, f"the field variable must exist (the file "
                                    f"has {sorted(map(str, ds.data_vars))})",
                                    "correct data.variables or the file"))
            continue
        arr = _select(ds[var], config, where, problems)
        if arr is None:
            continue
        missing_dims = [d for d in config.spatial_dims if d not in arr.dims]
        extra = [d for d in arr.dims if d not in config.spatial_dims
                 and d not in (config.sample_dims or ())]
        if missing_dims or extra:
            problems.append(Problem(
                where, var, list(arr.dims),
                f"the variable must have the {len(config.spatial_dims)} spatial dims "
                f"{list(config.spatial_dims)} plus sample dims {list(config.sample_dims or ())}"
                + (f"; missing {missing_dims}" if missing_dims else "")
                + (f"; undeclared {extra}" if extra else ""),
                "declare the dims in data.spatial_dims / data.sample_dims, or select/crop "
                "away the extra ones with data.select"))
            continue
        conv = _field_conversion(arr, config.units[var], where, problems)
        if conv is None:
            continue
        arrays[var], conversions[var] = arr, conv
        attrs[var] = {k: str(arr.attrs[k]) for k in FIELD_ATTRS if k in arr.attrs}
        if "grid_mapping" in attrs[var] and attrs[var]["grid_mapping"] not in ds.variables:
            del attrs[var]["grid_mapping"]  # names a variable the file lacks: not carried
    return arrays, conversions, attrs


def _plan_file(path: Path, config: DataConfig, problems: list[Problem]
               ) -> tuple[FilePlan | None, Grid, dict[str, dict[str, str]]] | None:
    """Plan of one file, its grid and field attributes; None parts where problems were
    found (the grid is still returned when only the parameters failed)."""
    where = str(path)
    try:
        ds = open_sweep_file(path, config)
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError ...
        problems.append(Problem(where, None, type(exc).__name__, "every file must be a "
                                f"readable {FORMAT_NAMES[file_format(path)]} file ({exc})", "regenerate or re-copy the "
                                "file; it may be truncated or not netCDF"))
        return None
    n_problems = len(problems)
    arrays, conversions, attrs = _field_arrays(ds, config, where, problems)
    if len(problems) > n_problems or not arrays:
        return None
    first = arrays[config.variables[0]]
    sample_dims = tuple(d for d in first.dims if d not in config.spatial_dims)
    for var, arr in arrays.items():
        if tuple(d for d in arr.dims if d not in config.spatial_dims) != sample_dims:
            problems.append(Problem(where, var, list(arr.dims), "all field variables must "
                                    f"have the same sample dims as {config.variables[0]!r}",
                                    "select the variables to a common shape"))
            return None
    if config.sample_dims:
        order = [d for d in config.sample_dims if d in sample_dims]
        sample_dims = tuple(order)
    shape = tuple(first.sizes[d] for d in sample_dims)
    read_as_params = tuple(p.name for p in config.params.values()
                           if p.source in ("coordinate", "time"))
    grid = _grid_of(first, config.spatial_dims, ds, read_as_params)
    rename = {p.name: key for key, p in config.params.items() if p.source == "time"}
    known = set(config.spatial_dims) | set(grid.scalars) | set(config.params)
    coarsened = " ".join(f"{d}:" for d in config.coarsen) + " mean" if config.coarsen else ""
    for var_attrs in attrs.values():
        methods = _cell_methods(var_attrs.get("cell_methods", ""), rename, known)
        methods = " ".join(m for m in (methods, coarsened) if m)  # block means: CF 7.3
        var_attrs.pop("cell_methods", None)
        if methods:
            var_attrs["cell_methods"] = methods
    points = read_params(ds, first, path, config, sample_dims, shape, problems)
    if points is None:
        return None, grid, attrs
    labels = [", ".join(f"{d}={i}" for d, i in zip(sample_dims, idx)) or "the sample"
              for idx in np.ndindex(*shape)] if shape else ["the sample"]
    calendars = {key: time_calendar(ds, src) for key, src in config.params.items()
                 if src.source == "time"}
    return FilePlan(path, sample_dims, shape, points, labels, conversions, ds,
                    calendars), grid, attrs


def plan_ingest(config: DataConfig) -> IngestPlan:
    """Read the metadata of every file and check it; raise one error listing every problem.

    Raises
    ------
    DataValidationError
        Missing files, empty globs, unreadable files, missing variables, missing or wrong
        units, dims, parameters, differing grids -- all problems found, each naming its file.
    """
    paths, problems = resolve_files(config.files)
    files: list[FilePlan] = []
    ref_grid: Grid | None = None
    ref_file = ""
    field_attrs: dict[str, dict[str, str]] = {}
    for path in paths:
        planned = _plan_file(path, config, problems)
        if planned is None:
            continue
        file_plan, grid, attrs = planned
        if ref_grid is None:
            ref_grid, ref_file, field_attrs = grid, str(path), attrs
        else:
            _compare_grid(ref_grid, grid, str(path), config.variables[0], ref_file, problems)
        if file_plan is not None:
            files.append(file_plan)
    raise_if_problems(problems)
    assert ref_grid is not None  # at least one file planned when there are no problems
    kinds = param_kinds(config, files, problems)
    calendars = _param_calendars(files, problems)
    raise_if_problems(problems)
    return IngestPlan(config, files, ref_grid, field_attrs, kinds, calendars)


def _param_calendars(files: list[FilePlan], problems: list[Problem]) -> dict[str, str]:
    """The calendar of each time parameter, one for the whole sweep."""
    calendars: dict[str, str] = {}
    first: dict[str, str] = {}
    for fp in files:
        for key, calendar in fp.calendars.items():
            calendars.setdefault(key, calendar)
            first.setdefault(key, str(fp.path))
            if calendar != calendars[key]:
                problems.append(Problem(str(fp.path), key, calendar, f"the time parameter "
                                        f"{key!r} must be on one calendar, but {first[key]} is "
                                        f"on {calendars[key]!r}", f"declare data.params.{key}."
                                        "calendar, or convert the files to one calendar"))
    return calendars


def chunk_samples(plan: IngestPlan, chunk_mb: float | None = None) -> int:
    """Samples per Dask chunk so that one float32 chunk of all channels is ~``chunk_mb``."""
    per_sample = 4 * len(plan.config.variables) * int(np.prod(plan.grid.shape, dtype=np.int64))
    target = (chunk_mb or plan.config.chunk_mb) * 2 ** 20
    return max(1, int(math.floor(target / per_sample)))


def build_fields(plan: IngestPlan, samples_per_chunk: int | None = None) -> da.Array:
    """Lazy ``(sample, channel, *spatial)`` float32 array of the sweep in canonical units.

    Each file's variable (opened lazily by :func:`plan_ingest`) becomes a Dask array chunked
    along its first sample dim, is selected, converted by ``a * x + b`` and reshaped; files
    are concatenated along ``sample``. Chunks stay aligned with files (no data moves between
    workers to merge them) unless they average under :data:`MIN_CHUNK_BYTES`: then the
    result is rechunked to ``samples_per_chunk`` samples.
    """
    config = plan.config
    k = samples_per_chunk or chunk_samples(plan)
    parts = []
    for fp in plan.files:
        inner = int(np.prod(fp.sample_shape[1:], dtype=np.int64)) if fp.sample_dims else 1
        chunks = {d: max(1, k // inner) if i == 0 else -1 for i, d in enumerate(fp.sample_dims)}
        ds = fp.dataset if fp.dataset is not None else open_sweep_file(fp.path, config)
        channels = []
        for var in config.variables:
            arr = _select(ds[var], config, str(fp.path), [], chunks)
            a, b = fp.conversions[var]
            data = arr.transpose(*fp.sample_dims, *config.spatial_dims).data
            if (a, b) != (1.0, 0.0):
                data = data.astype(np.float64) * a + b
            data = data.astype(np.float32).reshape((fp.n_samples,) + plan.grid.shape)
            channels.append(data)
        parts.append(da.stack(channels, axis=1))
    fields = da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    if config.missing == "fill":
        fields = da.where(da.isnan(fields), np.float32(config.fill_value), fields)
    if fields.nbytes / fields.numblocks[0] < MIN_CHUNK_BYTES:  # tiny files: merge them
        return fields.rechunk((k, len(config.variables)) + plan.grid.shape)
    return fields
