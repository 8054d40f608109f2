"""``rho-workflow make-data KIND OUT_DIR --runs N --seed S``: write a synthetic simulation sweep.

Every kind is written as CF-1.8 netCDF, one file per simulation run (``spectral-lines``: a
few runs per file along a ``run`` dimension), with parameters stored the way real codes store
them -- a different way per kind, so that the ingest configuration is exercised on each:

==================== ======== ================================ ================================
kind                 field    samples per file                 parameters stored as
==================== ======== ================================ ================================
spherical-harmonics  3D       1                                global attributes
gaussian-field       2D       1, or ``--realizations`` (realiz.) scalar coordinates (+ file name)
lognormal-field      2D       ``--realizations`` (realization) attributes of the field variable
spectral-lines       1D       ``--runs-per-file`` (run)        1D coordinates along ``run``
swiss-roll           points   ``--points`` (point)             global attributes
heartbeat            binary   ``--points`` (sequence)          global attributes
climate-air          2D       ``--realizations`` months (time) global attributes, time coordinate
climate-ocean        2D       ``--realizations`` months        global attributes, time coordinate
==================== ======== ================================ ================================

The climate kinds (:mod:`rho_workflow.data.synthetic.climate`) reproduce the traits of real
model output: 360-day and noleap calendars, K and degree_C, a curvilinear grid with 2D
``nav_lat``/``nav_lon`` crossing the dateline, a land mask, ``cell_methods``, a grid-mapping
variable and a scalar ``height`` coordinate.

A numeric parameter ``p`` stored as an attribute has its units in the attribute ``p_units``.
The output is deterministic per ``(seed, run)``: the field of realization ``r`` of run ``i``
comes from ``numpy.random.default_rng([seed, i, r])`` and the sweep design from
``default_rng([seed, DESIGN_STREAM])`` (so a run's parameters depend on ``--runs`` as well,
the Latin hypercube being a design of ``--runs`` points).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from rho_workflow.data import pointdata, synthetic
from rho_workflow.data.netcdf import write_netcdf
from rho_workflow.data.synthetic import FieldSpec
from rho_workflow.data.synthetic.climate import CLIMATE_KINDS, write_climate_sweep

__all__ = ["ALL_KINDS", "LAYOUTS", "add_arguments", "run", "main", "write_sweep",
           "default_realizations"]

ALL_KINDS = synthetic.KINDS + pointdata.POINT_KINDS + CLIMATE_KINDS
DESIGN_STREAM = 0x5EED

#: kind -> (how parameters are stored, name of the in-file sample dimension or None)
LAYOUTS = {
    "spherical-harmonics": ("global_attribute", None),
    "gaussian-field": ("scalar_coordinate", None),  # "realization" when realizations > 1
    "lognormal-field": ("variable_attribute", "realization"),
    "spectral-lines": ("coordinate", "run"),
    "swiss-roll": ("global_attribute", "point"),
    "heartbeat": ("global_attribute", "sequence"),
    "climate-air": ("global_attribute", "time"),
    "climate-ocean": ("global_attribute", "time_counter"),
}

#: long names of coordinates (Cartesian box axes carry no CF ``axis``: they are not lat/lon)
COORD_NAMES = {"x": "x position in the box", "y": "y position in the box",
               "z": "z position in the box", "wavenumber": "wavenumber",
               "component": "component of the position (0: x, 1: y)",
               "step": "time since the start of the sequence"}

#: alternative, compatible spellings written to every other file by ``--vary-units``
_ALT_UNITS = {
    "spectral-lines": {"field": ("m", 0.01), "pressure": ("Pa", 100.0),
                       "wavenumber": ("m-1", 100.0)},
    "gaussian-field": {"amplitude": ("kparsec2", 1e6), "x": ("kparsec", 1e3),
                       "y": ("kparsec", 1e3)},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``make-data`` (shared by ``python -m`` and the ``rho-workflow`` CLI)."""
    parser.add_argument("kind", choices=ALL_KINDS, help="kind of simulation to write")
    parser.add_argument("out_dir", type=Path, help="folder for the netCDF files (created)")
    parser.add_argument("--runs", type=int, default=8, help="number of simulation runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sweep")
    parser.add_argument("--size", type=int, default=32,
                        help="cells per side of field kinds (heartbeat: sequence length)")
    parser.add_argument("--realizations", type=int, default=None,
                        help="lognormal-field (default 2), gaussian-field (default 1): "
                             "realizations per run (file); climate-*: months per run (default 2)")
    parser.add_argument("--runs-per-file", type=int, default=4,
                        help="spectral-lines: runs stored along the 'run' dimension of a file")
    parser.add_argument("--points", type=int, default=256,
                        help="swiss-roll, heartbeat: samples per run")
    parser.add_argument("--packed", action="store_true",
                        help="store fields packed as int16 with scale_factor/add_offset")
    parser.add_argument("--vary-units", action="store_true",
                        help="gaussian-field, spectral-lines: every other file uses other, "
                             "compatible units (kpc, Pa, m-1 ...)")


def run(args: argparse.Namespace) -> int:
    """Write the sweep described by parsed ``args``; print a one-line summary; return 0."""
    paths = write_sweep(args.kind, args.out_dir, runs=args.runs, seed=args.seed,
                        size=args.size, realizations=args.realizations,
                        runs_per_file=args.runs_per_file, points=args.points,
                        packed=args.packed, vary_units=args.vary_units)
    print(f"make-data: wrote {len(paths)} {args.kind} file(s) to {args.out_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rho-workflow make-data", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ValueError as exc:
        print(f"make-data: error: {exc}", file=sys.stderr)
        return 2


def default_realizations(kind: str, fallback: int = 2) -> int:
    """Realizations per run when none are asked for: one field per file for ``gaussian-field``
    (its historical layout, no sample dimension), else ``fallback``."""
    return 1 if kind == "gaussian-field" else int(fallback)


def write_sweep(kind: str, out_dir: str | Path, *, runs: int, seed: int = 0, size: int = 32,
                realizations: int | None = None, runs_per_file: int = 4, points: int = 256,
                packed: bool = False, vary_units: bool = False) -> list[Path]:
    """Write ``runs`` simulation runs of ``kind`` under ``out_dir``; return the file paths.

    ``realizations``: independent fields per run of the stochastic field kinds (a
    ``realization`` dimension; ``gaussian-field`` has one only when asked for more than one),
    months per run of the climate kinds; default :func:`default_realizations`.

    Raises
    ------
    ValueError
        Unknown kind or non-positive counts (the message names the option and its value).
    """
    if kind not in ALL_KINDS:
        raise ValueError(f"kind {kind!r} is not one of {ALL_KINDS}")
    realizations = default_realizations(kind) if realizations is None else realizations
    for name, value in (("--runs", runs), ("--size", size), ("--realizations", realizations),
                        ("--runs-per-file", runs_per_file), ("--points", points)):
        if int(value) < 1:
            raise ValueError(f"option {name}={value} breaks the rule: must be a positive integer")
    out_dir = Path(out_dir)
    if kind in CLIMATE_KINDS:  # one scenario run per file, ``realizations`` months each
        return write_climate_sweep(kind, out_dir, runs=runs, seed=seed, size=size,
                                   months=realizations,
                                   history=f"make-data {kind} --runs {runs} --seed {seed}")
    out_dir.mkdir(parents=True, exist_ok=True)
    design_rng = np.random.default_rng([seed, DESIGN_STREAM])
    if kind in pointdata.POINT_KINDS:
        design = pointdata.default_point_params(kind, runs, design_rng)
    else:
        design = synthetic.default_points(kind, runs, design_rng)
    layout, sample_dim = LAYOUTS[kind]
    if kind == "gaussian-field" and realizations > 1:
        sample_dim = "realization"
    per_file = runs_per_file if kind == "spectral-lines" else 1
    paths = []
    for first in range(0, runs, per_file):
        run_ids = list(range(first, min(first + per_file, runs)))
        file_index = first // per_file
        alt = _ALT_UNITS.get(kind, {}) if vary_units and file_index % 2 == 1 else {}
        ds = _run_dataset(kind, [design[i] for i in run_ids], run_ids, seed=seed, size=size,
                          realizations=realizations, points=points, layout=layout,
                          sample_dim=sample_dim, alt=alt)
        name = _file_name(kind, run_ids, design[run_ids[0]])
        encoding = _encoding(ds, ds.attrs["rho_field_variable"], packed)
        paths.append(write_netcdf(ds, out_dir / name, encoding=encoding,
                                  history=f"make-data {kind} --runs {runs} --seed {seed}"))
    return paths


def _file_name(kind: str, run_ids: list[int], point: dict[str, Any]) -> str:
    if kind == "gaussian-field":  # a parameter in the file name, as some codes do
        return f"{kind}_run{run_ids[0]:04d}_index{point['index']:+.6f}.nc"
    if len(run_ids) > 1:
        return f"{kind}_runs{run_ids[0]:04d}-{run_ids[-1]:04d}.nc"
    return f"{kind}_run{run_ids[0]:04d}.nc"


def field_spec_of(kind: str, size: int) -> FieldSpec:
    """Labels of one sample of ``kind`` (heartbeat: ``size`` is the sequence length)."""
    if kind in pointdata.POINT_KINDS:
        return pointdata.point_spec(kind, size if kind == "heartbeat" else
                                    pointdata.HEARTBEAT_LENGTH)
    return synthetic.field_spec(kind, size)


def _samples(kind: str, point: dict[str, Any], run_id: int, *, seed: int, size: int,
             realizations: int, points: int) -> tuple[np.ndarray, FieldSpec]:
    """The array of one run: ``(*spatial)``, or ``(sample, *spatial)`` with an in-file
    sample dimension."""
    if kind in pointdata.POINT_KINDS:
        rng = np.random.default_rng([seed, run_id, 0])
        return pointdata.generate_points(kind, point, points, rng=rng, length=size
                                         if kind == "heartbeat" else pointdata.HEARTBEAT_LENGTH)
    if kind == "lognormal-field" or (kind == "gaussian-field" and realizations > 1):
        fields = []
        for r in range(realizations):
            values, spec = synthetic.generate(kind, point, size=size,
                                              rng=np.random.default_rng([seed, run_id, r]))
            fields.append(values)
        return np.stack(fields), spec
    return synthetic.generate(kind, point, size=size,
                              rng=np.random.default_rng([seed, run_id, 0]))


def _run_dataset(kind: str, design: list[dict[str, Any]], run_ids: list[int], *, seed: int,
                 size: int, realizations: int, points: int, layout: str,
                 sample_dim: str | None, alt: dict[str, tuple[str, float]]) -> xr.Dataset:
    arrays = []
    spec = field_spec_of(kind, size)
    for point, run_id in zip(design, run_ids):
        values, _ = _samples(kind, point, run_id, seed=seed, size=size,
                             realizations=realizations, points=points)
        arrays.append(values)
    field_units, field_scale = alt.get("field", (spec.units, 1.0))
    data = np.stack(arrays) if sample_dim == "run" else arrays[0]
    dims = ((sample_dim,) if sample_dim else ()) + tuple(spec.dims)
    attrs = {"units": field_units, "long_name": spec.long_name}
    if spec.standard_name:
        attrs["standard_name"] = spec.standard_name
    dtype = np.int8 if data.dtype == np.int8 else np.float32
    field = xr.DataArray((data * field_scale).astype(dtype) if dtype != np.int8 else data,
                         dims=dims, attrs=attrs)
    coords: dict[str, Any] = {}
    for dim in spec.dims:
        values, units = spec.coords[dim]
        units, scale = alt.get(dim, (units, 1.0))
        cattrs = {"units": units, "long_name": COORD_NAMES.get(dim, f"{dim} coordinate")}
        coords[dim] = xr.DataArray(np.asarray(values, dtype=np.float64) * scale, dims=(dim,),
                                   attrs=cattrs)
    if sample_dim:
        n = data.shape[0]
        ids = np.asarray(run_ids if sample_dim == "run" else np.arange(n), dtype=np.int32)
        coords[sample_dim] = xr.DataArray(ids, dims=(sample_dim,),
                                          attrs={"long_name": f"{sample_dim} number", "units": "1"})
    ds = xr.Dataset({spec.name: field}, coords=coords)
    ds.attrs.update({
        "title": f"rho_workflow synthetic {kind} sweep",
        "source": f"rho_workflow.data.make_data ({kind})",
        "institution": "rho_workflow synthetic data",
        "comment": "synthetic simulation run for tests and demos",
        "rho_kind": kind, "rho_seed": int(seed), "rho_field_variable": spec.name,
    })
    ds.attrs.update({f"rho_{k}".replace("-", "_"): v for k, v in spec.attrs.items()
                     if isinstance(v, (int, float, str))})
    if sample_dim != "run":
        ds.attrs["rho_run"] = int(run_ids[0])
    _store_params(ds, spec, design, layout, sample_dim, alt)
    return ds


def _store_params(ds: xr.Dataset, spec: FieldSpec, design: list[dict[str, Any]], layout: str,
                  sample_dim: str | None, alt: dict[str, tuple[str, float]]) -> None:
    for name, canonical in spec.param_units.items():
        units, scale = alt.get(name, (canonical, 1.0))
        values = [p[name] * scale if spec.param_kinds[name] == "continuous" else p[name]
                  for p in design]
        if layout == "coordinate":
            ds.coords[name] = xr.DataArray(np.asarray(values, dtype=np.float64),
                                           dims=(sample_dim,),
                                           attrs={"units": units, "long_name": name})
        elif layout == "scalar_coordinate":
            ds.coords[name] = xr.DataArray(np.float64(values[0]),
                                           attrs={"units": units, "long_name": name})
        else:
            target = ds.attrs if layout == "global_attribute" else ds[spec.name].attrs
            value = values[0]
            target[name] = int(value) if isinstance(value, (int, np.integer)) else float(value)
            target[f"{name}_units"] = units


def _encoding(ds: xr.Dataset, name: str, packed: bool) -> dict[str, dict[str, Any]]:
    """netCDF encodings: float fields get a fill value; ``packed`` ones are int16 with
    ``scale_factor``/``add_offset`` spanning the data (the usual packing of model output)."""
    out: dict[str, dict[str, Any]] = {v: {"_FillValue": None} for v in ds.variables
                                      if v != name}  # CF: no fill value on coordinates
    field = ds[name]
    if field.dtype == np.int8:
        out[name] = {"dtype": "int8"}
    elif not packed:
        out[name] = {"_FillValue": np.float32(1e20), "zlib": False}
    else:
        lo, hi = float(field.min()), float(field.max())
        scale = (hi - lo) / 65000.0 if hi > lo else 1.0
        out[name] = {"dtype": "int16", "scale_factor": scale, "add_offset": (hi + lo) / 2.0,
                     "_FillValue": np.int16(-32767)}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
