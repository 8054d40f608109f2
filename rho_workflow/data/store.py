"""The training store: a sweep preprocessed by one Dask graph, and its reader.

:func:`preprocess` plans the sweep (metadata checks), builds one graph that reads every file
once and, from the same chunks, writes the fields in canonical units to a temporary store,
computes the normalization statistics (pairwise-combined moments over the training split)
and the value checks (NaN/inf outside the mask, changing masks, duplicate runs). Only when
every check passes are the transform, mask and provenance added and the store moved into
place (``os.replace``); otherwise the temporary store is deleted and one
:class:`~rho_workflow.data.validate.DataValidationError` lists every problem.

Store layout (zarr directory, or netCDF file when the path ends in ``.nc``): one variable per
field (``sample, *spatial``, float32, canonical ``units``, NaN at masked points), spatial
coordinates with units, parameters as ``sample`` coordinates with units, a CF flag
coordinate ``split`` (0 train, 1 validation, 2 held_out), ``source_file``/``source_index``,
an optional ``valid_mask`` (``channel, *spatial``), and JSON attributes ``rho_*`` (transform,
parameter space, statistics, resolved config, provenance). Fields are stored in physical
units; :class:`TrainingStore` applies the recorded transform when reading.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import dask
import dask.array as da
import numpy as np
import xarray as xr

from rho_workflow.atomic import atomic_dir
from rho_workflow.data.config import DataConfig
from rho_workflow.data.ingest import SAMPLE_DIM, IngestPlan, build_fields, plan_ingest
from rho_workflow.data.netcdf import CONVENTIONS
from rho_workflow.data.training_store import SPLITS, TrainingStore, open_store
from rho_workflow.data.transforms import (Affine, Bounded, Chain, Log, MinMax, PerChannel,
                                          Transform)
from rho_workflow.data.validate import (DataValidationError, Problem, block_summary,
                                        combine_stats, judge_summaries)
from rho_workflow.params import Parameter, ParamSpace
from rho_workflow.provenance import history_line, provenance_record

logger = logging.getLogger("rho_workflow")

__all__ = ["StoreInfo", "TrainingStore", "preprocess", "preprocess_graph", "PreprocessGraph", "open_store", "assign_split",
           "build_transform", "build_param_space", "SPLITS", "STORE_VERSION"]

STORE_VERSION = 1


@dataclass
class StoreInfo:
    """Summary of a finished :func:`preprocess`: where the store is and what it holds."""

    path: Path
    format: str
    n_samples: int
    variables: tuple[str, ...]
    spatial_dims: tuple[str, ...]
    shape: tuple[int, ...]
    param_space: ParamSpace
    transform: Transform
    split_counts: dict[str, int]
    bytes_read: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def throughput_mb_s(self) -> float:
        """Megabytes (1e6 B) of field data read per second of the whole preprocessing."""
        return self.bytes_read / 1e6 / self.seconds if self.seconds > 0 else float("nan")

    def open(self) -> "TrainingStore":
        return open_store(self.path)


# --------------------------------------------------------------------------------------
# Plan-level pieces: split, parameter space, transform
# --------------------------------------------------------------------------------------

def assign_split(points: Sequence[dict[str, Any]], files: Sequence[str], validation: float,
                 held_out: float, seed: int, by: str | Sequence[str] = "file") -> np.ndarray:
    """Split code per sample (0 train, 1 validation, 2 held_out), by run.

    Samples of one run stay together; a run is a file (``by="file"``), a parameter point
    (``by="params"``) or the values of the listed parameters. Runs are sorted, shuffled with
    ``seed``; the first ``round(held_out * G)`` are held out and the next
    ``round(validation * G)`` kept for validation; at least one run remains for training.
    """
    if by == "file":
        keys = list(files)
    else:
        names = None if by == "params" else list(by)
        keys = [json.dumps(p if names is None else {n: p[n] for n in names}, sort_keys=True,
                           default=str) for p in points]
    groups = sorted(set(keys))
    n = len(groups)
    n_held, n_val = int(round(held_out * n)), int(round(validation * n))
    while n_held + n_val >= n and n_held + n_val > 0:
        if n_held >= n_val:
            n_held -= 1
        else:
            n_val -= 1
    order = np.random.default_rng(seed).permutation(n)
    code = {}
    for rank, g in enumerate(order):
        code[groups[g]] = 2 if rank < n_held else 1 if rank < n_held + n_val else 0
    return np.array([code[k] for k in keys], dtype=np.int8)


def build_param_space(plan: IngestPlan) -> ParamSpace:
    """Parameters with canonical units; ranges declared in the config or spanning the data."""
    params = []
    points = plan.points
    for key, src in plan.config.params.items():
        values = [p[key] for p in points]
        if plan.param_kinds[key] == "categorical":
            uniq = list(dict.fromkeys(values))
            try:
                uniq = sorted(uniq)
            except TypeError:
                pass
            params.append(Parameter(key, src.units, "categorical", values=tuple(uniq)))
        else:
            arr = np.asarray(values, dtype=np.float64)
            low = src.low if src.low is not None else float(arr.min())
            high = src.high if src.high is not None else float(arr.max())
            params.append(Parameter(key, src.units, "continuous", low=low, high=high,
                                    calendar=plan.param_calendars.get(key)))
    return ParamSpace(params)


def bounds_transforms(config: DataConfig) -> dict[int, Bounded]:
    """``channel -> Bounded`` for the variables with declared physical ``bounds``."""
    out = {}
    for var, (low, high) in config.physical_bounds.items():
        scale = (high - low) if low is not None and high is not None else \
            max(1.0, abs(low if low is not None else high))
        out[config.variables.index(var)] = Bounded(low, high, margin=1e-6 * scale)
    return out


def build_transform(stats: Sequence[dict[str, float]], log_channels: Sequence[int],
                    floor: float, normalize: str,
                    bounded: dict[int, Transform] | None = None) -> Transform:
    """Per channel: optional ``Log(floor)`` or ``Bounded`` (declared physical bounds), then
    ``Affine`` (standard) or ``MinMax``."""
    chains = []
    for c, s in enumerate(stats):
        steps: list[Transform] = [Log(floor)] if c in log_channels else []
        if bounded and c in bounded:
            steps = [bounded[c]]
        if normalize == "standard":
            scale = s["std"] if s["std"] > 0 and np.isfinite(s["std"]) else 1.0
            steps.append(Affine(shift=[s["mean"]], scale=[scale], axis=1))
        elif normalize == "minmax":
            lo, hi = s["min"], s["max"]
            if not hi > lo:
                lo, hi = lo - 0.5, lo + 0.5
            steps.append(MinMax(lo, hi))
        chains.append(Chain(steps))
    return chains[0] if len(chains) == 1 else PerChannel(chains, axis=1)


# --------------------------------------------------------------------------------------
# preprocess
# --------------------------------------------------------------------------------------

def _store_format(config: DataConfig, path: Path) -> str:
    if config.store_format:
        return config.store_format
    return "netcdf" if path.suffix in (".nc", ".nc4") else "zarr"


def _output_dataset(plan: IngestPlan, fields: da.Array, split: np.ndarray) -> xr.Dataset:
    config, grid = plan.config, plan.grid
    dims = (SAMPLE_DIM,) + grid.dims
    data_vars = {}
    for c, var in enumerate(config.variables):
        attrs = {k: v for k, v in plan.field_attrs.get(var, {}).items() if k != "units"}
        attrs["units"] = config.units[var]
        data_vars[var] = xr.Variable(dims, fields[:, c], attrs=attrs)
    coords: dict[str, Any] = {}
    for dim, (values, units) in grid.coords.items():
        attrs = {"long_name": f"{dim} coordinate", **grid.coord_attrs.get(dim, {}),
                 "units": units}
        coords[dim] = xr.Variable((dim,), values, attrs=attrs)
    for name, (cdims, values, attrs) in grid.aux.items():
        coords[name] = xr.Variable(cdims, values, attrs=dict(attrs))
    for name, (value, attrs) in grid.scalars.items():
        coords[name] = xr.Variable((), value, attrs=dict(attrs))
    for name, attrs in grid.grid_mapping.items():
        data_vars[name] = xr.Variable((), np.int32(0), attrs=dict(attrs))
    points = plan.points
    for key, src in config.params.items():
        values = [p[key] for p in points]
        kind = plan.param_kinds[key]
        arr = np.asarray([str(v) for v in values]) if kind == "categorical" and not all(
            isinstance(v, (int, float)) for v in values) else np.asarray(values)
        attrs = {"units": src.units, "long_name": f"parameter {key}", "rho_role": "parameter",
                 "rho_kind": kind}
        if key in plan.param_calendars:  # a time parameter: decodable as CF time
            attrs.update(calendar=plan.param_calendars[key], standard_name="time")
        coords[key] = xr.Variable((SAMPLE_DIM,), arr, attrs=attrs)
    coords["split"] = xr.Variable((SAMPLE_DIM,), split, attrs={
        "long_name": "training split", "flag_values": np.array([0, 1, 2], dtype=np.int8),
        "flag_meanings": " ".join(SPLITS)})
    coords["source_file"] = xr.Variable((SAMPLE_DIM,), np.asarray(plan.sample_files, dtype=str),
                                        attrs={"long_name": "file the sample was read from"})
    index = np.concatenate([np.arange(f.n_samples) for f in plan.files]).astype(np.int32)
    coords["source_index"] = xr.Variable((SAMPLE_DIM,), index,
                                         attrs={"long_name": "sample index within its file"})
    return xr.Dataset(data_vars, coords=coords, attrs={"Conventions": CONVENTIONS})


def _no_fill(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """CF: coordinates carry no ``_FillValue`` (xarray would add NaN to float ones)."""
    return {name: {"_FillValue": None} for name in ds.coords}


def _compute(client: Any, progress: bool, *collections: Any) -> tuple:
    if client is not None:
        futures = client.compute(list(collections))
        if progress:
            from distributed import progress as show_progress

            show_progress(futures, notebook=False)
            print(file=sys.stderr)
        return tuple(client.gather(futures))
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(out=sys.stderr):
            return dask.compute(*collections)
    return dask.compute(*collections)


def preprocess(config: DataConfig, store_path: str | os.PathLike, client: Any = None,
               progress: bool = True) -> StoreInfo:
    """Validate a sweep and write its training store with one Dask graph.

    Parameters
    ----------
    config : DataConfig
        The ``data:`` section.
    store_path : path-like
        Target store: a zarr directory, or a netCDF file (``.nc``); replaced atomically.
    client : distributed.Client, optional
        Cluster to run the graph on; Dask's default scheduler when None.
    progress : bool
        Show a progress bar on stderr.

    Raises
    ------
    DataValidationError
        Any metadata or value problem; nothing is written to ``store_path``.
    """
    start = time.perf_counter()
    store_path = Path(store_path)
    fmt = _store_format(config, store_path)
    plan = plan_ingest(config)
    timings = {"plan": time.perf_counter() - start}
    graph = preprocess_graph(plan)
    split, fields, out, log_channels = graph.split, graph.fields, graph.dataset, graph.log_channels
    summaries, ref_delayed = graph.summaries, graph.reference
    with atomic_dir(store_path) as tmp:
        if fmt == "zarr":
            write = out.to_zarr(tmp, mode="w", compute=False, consolidated=False,
                                zarr_format=2, encoding=_no_fill(out))
        else:
            write = out.to_netcdf(tmp, engine="netcdf4", compute=False, encoding=_no_fill(out))
        timings["graph"] = time.perf_counter() - start - timings["plan"]
        _, summaries_done, reference_done = _compute(client, progress, write, summaries,
                                                     ref_delayed)
        timings["compute"] = time.perf_counter() - start - timings["plan"] - timings["graph"]
        stats, clamped = _judge(plan, summaries_done)
        transform = build_transform(stats, log_channels, config.transform.floor,
                                    config.transform.normalize, bounds_transforms(config))
        param_space = build_param_space(plan)
        _finish(tmp, fmt, plan, transform, param_space, stats, reference_done, split, clamped)
    counts = {name: int((split == i).sum()) for i, name in enumerate(SPLITS)}
    seconds = time.perf_counter() - start
    nbytes = fields.nbytes
    if progress:
        print(f"preprocess: {plan.n_samples} samples from {len(plan.files)} files -> "
              f"{store_path} ({fmt}) in {seconds:.1f} s, "
              f"{nbytes / 1e6 / max(seconds, 1e-9):.1f} MB/s; split {counts}", file=sys.stderr)
    return StoreInfo(store_path, fmt, plan.n_samples, config.variables, plan.grid.dims,
                     plan.grid.shape, param_space, transform, counts, nbytes, seconds,
                     timings)


@dataclass(frozen=True)
class PreprocessGraph:
    """The lazy graph of :func:`preprocess`, built without computing anything: the fields in
    canonical units, the store's dataset, the split of each sample, and the per-block checks
    and statistics (and the reference missing-value mask) computed from the same chunks."""

    split: np.ndarray
    fields: da.Array
    dataset: xr.Dataset
    log_channels: list[int]
    summaries: list
    reference: Any


def preprocess_graph(plan: IngestPlan) -> PreprocessGraph:
    """Build the lazy preprocessing graph of an ingest ``plan`` (reads metadata only)."""
    config = plan.config
    split = assign_split(plan.points, plan.sample_files, config.split.validation,
                         config.split.held_out, config.split.seed, config.split.by)
    fields = build_fields(plan)
    log_channels = [config.variables.index(v) for v in config.transform.log]
    summaries, reference = _check_graph(plan, fields, split, log_channels)
    return PreprocessGraph(split, fields, _output_dataset(plan, fields, split), log_channels,
                           summaries, reference)


def _check_graph(plan: IngestPlan, fields: da.Array, split: np.ndarray,
                 log_channels: Sequence[int]) -> tuple[list, Any]:
    """Lazy per-block statistics and checks, from the same chunks the store is written from."""
    config = plan.config
    reference = da.isnan(fields[0]) if config.missing == "fixed-mask" else None
    ref_delayed = reference.to_delayed().ravel()[0] if reference is not None else None
    train = split == 0
    offsets = np.cumsum((0,) + fields.chunks[0])
    summaries = [
        dask.delayed(block_summary, pure=True)(block, train[offsets[i]:offsets[i + 1]],
                                               ref_delayed, log_channels, config.transform.floor,
                                               bounds_transforms(config))
        for i, block in enumerate(fields.to_delayed().ravel())
    ]
    return summaries, ref_delayed


def _judge(plan: IngestPlan,
           summaries: Sequence[dict[str, Any]]) -> tuple[list[dict[str, float]], int]:
    """Every value problem of the computed summaries (raised together), else the combined
    statistics of each channel over the training split and the count of clamped values."""
    config = plan.config
    t = config.transform
    stats = [combine_stats([s["stats"][c] for s in summaries])
             for c in range(len(config.variables))]
    # every training value at or below the floor: the field would be one constant, most
    # likely canonical units of the wrong scale (kg m-3 for cosmic densities); said once
    clipped = [v for v, s in zip(config.variables, stats)
               if v in t.log and s["count"] and s["max"] <= np.log(t.floor)]
    problems = judge_summaries(summaries, plan.sample_files, plan.sample_labels,
                               config.variables, config.missing, config.allow_duplicates,
                               log_variables=[v for v in t.log if v not in clipped],
                               floor=t.floor, clamp=t.clamp)
    problems += [Problem(
        str(config.files), v, f"max <= {t.floor:g} {config.units[v]}", "a log-transformed "
        "field must exceed transform.floor somewhere (every training value is at or "
        "below it, so the field would be one constant)",
        f"lower data.transform.floor below the field's values, or choose canonical "
        f"units in which they are of order one (data.units.{v})") for v in clipped]
    if problems:
        raise DataValidationError(problems)
    clamped = int(sum(int(np.sum(s["below_floor"])) for s in summaries))
    if clamped:
        logger.warning("preprocess: %d value(s) of %s below transform.floor %g raised to the "
                       "floor (transform.clamp: true)", clamped, list(t.log), t.floor)
    empty = [v for v, s in zip(config.variables, stats) if s["count"] == 0]
    if empty:
        raise DataValidationError([Problem(str(config.files), v, 0, "the training split "
                                           "must hold valid values", "check the mask and "
                                           "the split fractions") for v in empty])
    return stats, clamped


def _finish(tmp: Path, fmt: str, plan: IngestPlan, transform: Transform, param_space: ParamSpace,
            stats: list[dict[str, float]], reference: np.ndarray | None,
            split: np.ndarray, clamped: int = 0) -> None:
    """Add mask, transform, statistics and provenance to the written temporary store."""
    config = plan.config
    attrs = {
        "Conventions": CONVENTIONS,
        "title": "rho_workflow training store",
        "history": history_line(f"preprocess of {len(plan.files)} file(s)"),
        "rho_store_version": STORE_VERSION,
        "rho_variables": json.dumps(list(config.variables)),
        "rho_spatial_dims": json.dumps(list(plan.grid.dims)),
        "rho_field_attrs": json.dumps({v: {**plan.field_attrs.get(v, {}),
                                           "units": config.units[v]} for v in config.variables}),
        "rho_transform": json.dumps(transform.to_dict()),
        "rho_param_space": json.dumps(param_space.to_dict()),
        "rho_stats": json.dumps(stats),
        "rho_missing": config.missing,
        "rho_clamped_values": clamped,
        "rho_config": json.dumps(config.to_dict()),
        "rho_provenance": json.dumps(provenance_record(
            xarray=xr.__version__, dask=dask.__version__, n_files=len(plan.files),
            n_samples=plan.n_samples,
            split_counts={n: int((split == i).sum()) for i, n in enumerate(SPLITS)})),
    }
    extra = xr.Dataset(attrs=attrs)
    if reference is not None:
        valid = ~np.asarray(reference, dtype=bool)
        extra["valid_mask"] = xr.Variable(("channel",) + plan.grid.dims, valid.astype(np.int8),
                                          attrs={"long_name": "1 where the field is defined, "
                                                 "0 at fixed missing points (e.g. land)",
                                                 "flag_values": np.array([0, 1], dtype=np.int8),
                                                 "flag_meanings": "missing valid"})
        extra = extra.assign_coords(channel=("channel", list(config.variables)))
    if fmt == "zarr":
        import zarr

        extra.to_zarr(tmp, mode="a", consolidated=False, zarr_format=2)
        group = zarr.open_group(str(tmp), mode="r+", zarr_format=2)
        group.attrs.update(attrs)
        zarr.consolidate_metadata(str(tmp), zarr_format=2)
    else:
        extra.to_netcdf(tmp, mode="a", engine="netcdf4")

