"""Observations of a field, in physical units, and the rows of the linear operator that makes them.

Three kinds, all of them ``y = A x + e`` with ``e ~ N(0, diag(std^2))`` on the model's grid:

* :class:`KnownRegion` -- values known exactly in part of the grid (inpainting, ``std = 0``);
* :class:`NoisyField` -- the whole field (or its finite cells) seen through Gaussian noise
  (denoising);
* :class:`Stations` -- a few point observations at physical coordinates, each with its error,
  interpolated onto the grid by multilinear weights of the ``2^d`` surrounding cell centres
  (the same operator is used by the conditioning and by any check against kriging).

:func:`observation_rows` turns them into :class:`ObservationRows` (flat indices into one
``(C, *spatial)`` sample, weights, values, errors); :func:`read_observations` reads them from
a netCDF file and converts coordinates and values with the package's unit registry. No torch
here; the learning layer maps the rows to the network's normalized units.

File convention (:func:`read_observations`): the variable named like the model's field holds
the values. On the grid's dims it is gridded -- finite cells are observed, exactly unless an
error variable ``<field>_error`` (scalar or on the grid) is present; on any other dim (e.g.
``station``) it is a station table, whose coordinate variables named like the grid dims give
the positions (with ``units``), and ``<field>_error`` the error of each station (required).
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from rho_workflow.data.units import UnitsError, convert, linear_conversion
from rho_workflow.errors import RhoWorkflowError

__all__ = ["read_fields", "KnownRegion", "NoisyField", "Stations", "ObservationRows", "ObservationError", "observation_rows",
           "read_observations", "interpolation_weights"]


class ObservationError(RhoWorkflowError, ValueError):
    """Observations break a rule (outside the grid, wrong units or shape, NaN, bad errors)."""


def _error(what: str, where: str, rule: str, fix: str) -> ObservationError:
    return ObservationError(what=what, where=where, rule=rule, fix=fix)


@dataclass(frozen=True)
class KnownRegion:
    """Values known exactly where ``mask`` is True (shape ``spatial`` or ``(C, *spatial)``)."""

    values: Any
    mask: Any = None  # default: the finite cells of ``values``
    channel: int = 0


@dataclass(frozen=True)
class NoisyField:
    """``y = x + N(0, std^2)`` at every finite cell of ``values``; ``std`` a scalar or grid, > 0."""

    values: Any
    std: Any
    channel: int = 0


@dataclass(frozen=True)
class Stations:
    """Point observations: ``coords[dim]`` positions (grid units), ``values`` and ``std`` per station (> 0)."""

    coords: Mapping[str, Any]
    values: Any
    std: Any
    channel: int = 0


@dataclass(frozen=True)
class ObservationRows:
    """Rows of ``A`` on one flattened ``(C, *spatial)`` sample, in physical units.

    ``index``/``weight`` are ``(m, K)``; ``values``, ``std`` and ``channel`` ``(m,)``.
    """

    index: np.ndarray
    weight: np.ndarray
    values: np.ndarray
    std: np.ndarray
    channel: np.ndarray
    kinds: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)

    @property
    def m(self) -> int:
        return int(self.values.shape[0])


def _grid_of(labels: Mapping[str, Any]) -> tuple[list[str], dict[str, np.ndarray], dict[str, str]]:
    spatial = labels["spatial"]
    dims = list(spatial["dims"])
    coords = {d: np.asarray(spatial["coords"][d]["values"], dtype=np.float64) for d in dims}
    units = {d: str(spatial["coords"][d].get("units", "1")) for d in dims}
    return dims, coords, units


def interpolation_weights(positions: Mapping[str, np.ndarray], dims: Sequence[str],
                          coords: Mapping[str, np.ndarray], where: str = "stations") -> tuple[np.ndarray, np.ndarray]:
    """Multilinear interpolation rows: spatial flat indices ``(m, 2^d)`` and weights summing to 1.

    A position must lie within the cell centres of every axis (first to last, either order).
    """
    per_axis = []
    for d in dims:
        c = coords[d]
        p = np.asarray(positions[d], dtype=np.float64).reshape(-1)
        asc = c if c[-1] >= c[0] else c[::-1]
        lo, hi = float(asc[0]), float(asc[-1])
        bad = ~np.isfinite(p) | (p < lo) | (p > hi)
        if bad.any():
            j = int(np.argmax(bad))
            raise _error(f"station {j} has {d} = {p[j]:g}", where,
                         f"positions must lie within the grid's cell centres, {d} in [{lo:g}, {hi:g}]",
                         "drop the stations outside the grid or give their positions in the grid's units")
        if len(asc) == 1:
            i0, frac = np.zeros(p.shape, int), np.zeros(p.shape)
        else:
            i0 = np.clip(np.searchsorted(asc, p, side="right") - 1, 0, len(asc) - 2)
            frac = (p - asc[i0]) / (asc[i0 + 1] - asc[i0])
        if c[-1] < c[0]:  # back to the axis's own (descending) order
            i0, frac = len(c) - 2 - i0, 1.0 - frac
        per_axis.append((i0, frac, len(c)))
    m = len(np.asarray(positions[dims[0]]).reshape(-1))
    corners = list(itertools.product((0, 1), repeat=len(dims)))
    index = np.zeros((m, len(corners)), dtype=np.int64)
    weight = np.ones((m, len(corners)))
    for k, corner in enumerate(corners):
        flat = np.zeros(m, dtype=np.int64)
        for (i0, frac, n), bit in zip(per_axis, corner):
            i = np.minimum(i0 + bit, n - 1)
            flat = flat * n + i
            weight[:, k] *= frac if bit else (1.0 - frac)
        index[:, k] = flat
    return index, weight


def _grid_array(values: Any, spatial: tuple[int, ...], channels: int, channel: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape == (channels, *spatial):
        return arr[channel]
    if arr.shape != spatial:
        raise _error(f"{what} of shape {arr.shape}", "observe",
                     f"gridded observations have the model's grid shape {spatial} (or {(channels, *spatial)})",
                     "pass an array on the model's grid, with NaN where nothing is observed")
    return arr


def _check_channel(channel: Any, channels: int) -> int:
    if not isinstance(channel, (int, np.integer)) or not 0 <= int(channel) < channels:
        raise _error(f"channel {channel!r}", "observe", f"a channel index in [0, {channels})",
                     "pass the index of the observed field")
    return int(channel)


class _Part(NamedTuple):
    """The rows of one observation: flat indices and weights ``(m, K)``, values and errors ``(m,)``."""

    index: np.ndarray
    weight: np.ndarray
    values: np.ndarray
    std: np.ndarray
    channel: int
    kind: str


def observation_rows(observations: Sequence[Any], field_shape: Sequence[int], labels: Mapping[str, Any],
                     valid: np.ndarray | None = None) -> ObservationRows:
    """The rows of every observation in ``observations`` on a grid of ``field_shape = (C, *spatial)``.

    ``labels`` are the model's field labels (:mod:`rho_workflow.data.labels`; the grid
    coordinates place the stations). ``valid`` (spatial, True = modelled cell) drops masked
    cells from gridded observations and refuses stations next to masked cells.
    """
    channels, *spatial_l = (int(v) for v in field_shape)
    spatial = tuple(spatial_l)
    valid = np.ones(spatial, bool) if valid is None else np.asarray(valid, bool)
    parts: list[_Part] = []
    dropped = 0
    for obs in observations:
        if isinstance(obs, (KnownRegion, NoisyField)):
            part, n_dropped = _gridded_part(obs, spatial, channels, valid)
            dropped += n_dropped
        elif isinstance(obs, Stations):
            part = _station_part(obs, labels, spatial, channels, valid)
        else:
            raise _error(f"observation of type {type(obs).__name__}", "observe",
                         "observations are KnownRegion, NoisyField or Stations (or a callable log r)",
                         "wrap the data in one of those classes of rho_workflow.data.observations")
        parts.append(part)
    if not parts:
        raise _error("no observations", "observe", "at least one observation", "pass observe=[...]")
    k = max(p.index.shape[1] for p in parts)
    pad = lambda a, v: np.pad(a, ((0, 0), (0, k - a.shape[1])), constant_values=v)  # noqa: E731
    rows: dict[str, int] = {}
    for p in parts:
        rows[p.kind] = rows.get(p.kind, 0) + len(p.values)
    return ObservationRows(
        index=np.concatenate([pad(p.index, 0) for p in parts]),
        weight=np.concatenate([pad(p.weight, 0.0) for p in parts]),
        values=np.concatenate([p.values for p in parts]), std=np.concatenate([p.std for p in parts]),
        channel=np.concatenate([np.full(len(p.values), p.channel) for p in parts]),
        kinds=tuple(p.kind for p in parts), info={"rows": rows, "dropped_masked_cells": dropped})


def _gridded_part(obs: KnownRegion | NoisyField, spatial: tuple[int, ...], channels: int,
                  valid: np.ndarray) -> tuple[_Part, int]:
    """One row per observed, unmasked cell (weight 1), and the number of masked cells dropped."""
    ch = _check_channel(obs.channel, channels)
    vals = _grid_array(obs.values, spatial, channels, ch, "values")
    if isinstance(obs, KnownRegion):
        mask = np.isfinite(vals) if obs.mask is None else _grid_array(obs.mask, spatial, channels, ch,
                                                                       "mask").astype(bool)
        if (mask & ~np.isfinite(vals)).any():
            raise _error(f"{int((mask & ~np.isfinite(vals)).sum())} known cells hold NaN", "observe",
                         "every cell marked known has a finite value", "fix the values or the mask")
        std, kind = np.zeros(spatial), "known_region"
    else:
        mask = np.isfinite(vals)
        std = np.broadcast_to(np.asarray(obs.std, dtype=np.float64), spatial) if np.ndim(obs.std) == 0 \
            else _grid_array(obs.std, spatial, channels, ch, "std")
        if not (np.isfinite(std[mask]).all() and (std[mask] > 0).all()):
            raise _error(f"noise std {float(np.min(std[mask])) if mask.any() else 'n/a'}", "observe",
                         "a noisy observation's error standard deviation is finite and > 0",
                         "give the measurement error; use KnownRegion for exactly known values")
        kind = "noisy_field"
    dropped = int((mask & ~valid).sum())
    mask = mask & valid
    if not mask.any():
        raise _error(f"{kind} observes no cell", "observe",
                     "an observation covers at least one finite, unmasked cell", "check the values and mask")
    cells = np.flatnonzero(mask.reshape(-1))
    offset = ch * int(np.prod(spatial))
    return _Part(offset + cells[:, None], np.ones((len(cells), 1)), vals.reshape(-1)[cells],
                 std.reshape(-1)[cells], ch, kind), dropped


def _station_part(obs: Stations, labels: Mapping[str, Any], spatial: tuple[int, ...], channels: int,
                  valid: np.ndarray) -> _Part:
    """One row per station: the multilinear weights of the cell centres around it."""
    ch = _check_channel(obs.channel, channels)
    dims, coords, _ = _grid_of(labels)
    missing = [d for d in dims if d not in obs.coords]
    if missing:
        raise _error(f"stations without {missing} positions", "observe",
                     f"a station has a position on every grid axis {dims}",
                     "pass coords={dim: positions} for each grid dim")
    vals = np.asarray(obs.values, dtype=np.float64).reshape(-1)
    std = np.broadcast_to(np.asarray(obs.std, dtype=np.float64), vals.shape).copy()
    if not np.isfinite(vals).all():
        raise _error(f"station {int(np.argmax(~np.isfinite(vals)))} has value NaN/inf", "observe",
                     "station values are finite", "drop the station or fill its value")
    if not (np.isfinite(std).all() and (std > 0).all()):
        j = int(np.argmax(~(np.isfinite(std) & (std > 0))))
        raise _error(f"station {j} has error {std[j]:g}", "observe",
                     "a station's error standard deviation is finite and > 0",
                     "give each station its measurement error (in the field's units)")
    idx, w = interpolation_weights({d: obs.coords[d] for d in dims}, dims, coords)
    if len(idx) != len(vals):
        raise _error(f"{len(idx)} station positions but {len(vals)} values", "observe",
                     "one position per value", "give positions and values of the same stations")
    touches = (~valid.reshape(-1)[idx] & (w > 0)).any(1)
    if touches.any():
        j = int(np.argmax(touches))
        raise _error(f"station {j} lies next to a masked cell", "observe",
                     "stations are interpolated from modelled (unmasked) cells", "drop that station")
    return _Part(ch * int(np.prod(spatial)) + idx, w, vals, std, ch, "stations")


@contextlib.contextmanager
def _field_source(source: Any, labels: Mapping[str, Any], variable: str | None, where: str | None,
                  what: str) -> Iterator[tuple[Any, str, int, str]]:
    """The dataset of ``source`` (a netCDF path, opened and closed here, or a Dataset), the
    field variable's name and channel, and the ``where`` of its messages; checks the file exists,
    opens, names a modelled field and holds it."""
    import xarray as xr

    is_ds = isinstance(source, xr.Dataset)
    where = where or (what if is_ds else str(source))
    if not is_ds and not Path(source).is_file():
        raise _error(f"{what} file {source} does not exist", where, "the file must exist",
                     "write it to netCDF first, or fix the path")
    fields = [f["name"] for f in labels["fields"]]
    name = variable or fields[0]
    if name not in fields:
        raise _error(f"variable {name!r}", where, f"one of the model's fields {fields}", "name a modelled field")
    if is_ds:
        ds = source
    else:
        try:
            ds = xr.open_dataset(source, decode_times=False)
        except Exception as exc:  # netCDF4/HDF5 raise several kinds
            raise _error(f"cannot read {source}: {exc}", where, "a readable netCDF file", "check the file") from None
    with (contextlib.nullcontext(ds) if is_ds else ds):
        if name not in ds:
            raise _error(f"no variable {name!r} (it holds {sorted(ds.data_vars)})", where,
                         f"the {what} are in a variable named like the model's field", f"rename it to {name!r}")
        yield ds, name, fields.index(name), where


def read_observations(source: Any, labels: Mapping[str, Any], *, variable: str | None = None,
                      where: str | None = None) -> list[Any]:
    """Observations from a netCDF file or an xarray Dataset (the module docstring's convention).

    Values and positions are converted to the model's units; ``labels`` are the model's field
    labels (names, units, grid); ``variable`` picks the field (default: the model's first);
    ``where`` names the config key that named the file.
    """
    with _field_source(source, labels, variable, where, "observations") as (ds, name, channel, where):
        field_units = labels["fields"][channel].get("units", "1")
        values = _in_units(ds[name], field_units, f"{where}: variable {name!r}")
        dims, coords, units = _grid_of(labels)
        gridded = set(ds[name].dims) == set(dims)
        err_name = f"{name}_error"
        err = _errors(ds, err_name, field_units, dims if gridded else None, where) if err_name in ds else None
        if gridded:
            grid = np.asarray(values.transpose(*dims).values, dtype=np.float64)
            return [KnownRegion(grid, channel=channel) if err is None else NoisyField(grid, err, channel=channel)]
        if ds[name].ndim != 1:
            raise _error(f"variable {name!r} has dims {ds[name].dims}", where,
                         f"gridded observations have the grid's dims {dims}; a station table has one dim",
                         "write the stations along one dim (e.g. 'station')")
        if err is None:
            raise _error(f"station table without {err_name!r}", where,
                         "each station has an error standard deviation", f"add a variable {err_name!r}")
        positions = {}
        for d in dims:
            if d not in ds:
                raise _error(f"station table without a {d!r} coordinate", where,
                             f"stations have a position on every grid axis {dims}", f"add a variable {d!r}")
            positions[d] = np.asarray(_in_units(ds[d], units[d], f"{where}: coordinate {d!r}").values)
        return [Stations(positions, np.asarray(values.values, dtype=np.float64), err, channel=channel)]


def _errors(ds: Any, name: str, field_units: str, dims: list[str] | None, where: str) -> np.ndarray:
    """The error variable in the field's units (only the slope of the conversion: an error is a
    difference of values), on the grid's ``dims`` order when gridded."""
    da = ds[name] if dims is None or ds[name].ndim == 0 else ds[name].transpose(*dims)
    try:
        a, _ = linear_conversion(str(da.attrs.get("units", field_units)), field_units,
                                 where=f"{where}: variable {name!r}")
    except UnitsError as exc:
        raise ObservationError(str(exc)) from None
    return np.asarray(da.values, dtype=np.float64) * abs(a)


def _in_units(da: Any, units: str, where: str) -> Any:
    source = str(da.attrs.get("units", units))
    try:
        return da.copy(data=convert(np.asarray(da.values, dtype=np.float64), source, units, where=where))
    except UnitsError as exc:
        raise ObservationError(str(exc)) from None


def read_fields(source: Any, labels: Mapping[str, Any], *, variable: str | None = None,
                where: str | None = None) -> np.ndarray:
    """Observed fields from a netCDF file or Dataset: ``(N, C, *spatial)`` in the model's units.

    The variable named like the model's field (or ``variable``) holds one field on the grid's
    dims, or several along one more dim; NaN cells are allowed only where the model masks.
    """
    if len(labels["fields"]) > 1:
        raise _error(f"a model of {len(labels['fields'])} fields", where or str(source),
                     "inference from a file takes one-field models",
                     "use model.infer with an array of shape (C, *spatial)")
    with _field_source(source, labels, variable, where, "observed fields") as (ds, name, _, where):
        da = ds[name]
        dims = list(labels["spatial"]["dims"])
        extra = [d for d in da.dims if d not in dims]
        if not set(dims) <= set(da.dims) or len(extra) > 1:
            raise _error(f"variable {name!r} has dims {da.dims}", where,
                         f"a field on the grid's dims {dims}, with at most one more dim of several fields",
                         "write the field on the model's grid")
        units = labels["fields"][0].get("units", "1")
        values = np.asarray(_in_units(da.transpose(*extra, *dims), units, f"{where}: variable {name!r}").values,
                            dtype=np.float64)
    spatial = tuple(len(labels["spatial"]["coords"][d]["values"]) for d in dims)
    if values.shape[-len(dims):] != spatial:
        raise _error(f"field of grid shape {values.shape[-len(dims):]}", where,
                     f"the model's grid is {dict(zip(dims, spatial))}", "regrid the field to the model's grid")
    return values.reshape(-1, 1, *spatial)
