"""Labeled sweep outputs: CF netCDF (or zarr) with parameters and grid as coordinates.

Dims are ``(*parameters, member, *spatial)`` for a grid sweep and ``(case, member, *spatial)``
for a table of points, one variable per field channel in physical units. A sweep's samples
are numbered point-major with the member fastest, which is exactly C order over the sample
dims; a chunk (a contiguous range of sample numbers) therefore maps to a few rectangular
boxes of the output (:func:`flat_range_boxes`), written one part at a time, so consolidation
holds one part in memory whatever the size of the sweep.

The field labels come from the model's ``metadata`` (written by the train stage)::

    {"fields": [{"name", "units", "long_name", "standard_name"}, ...],   # one per channel
     "spatial": {"dims": [...], "coords": {dim: {"values", "units", "attrs"}}}}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import xarray as xr

import rho_workflow
from rho_workflow.atomic import atomic_path
from rho_workflow.data.labels import default_labels as default_metadata
from rho_workflow.diffusion.samplers import default_spacing
from rho_workflow.errors import RhoWorkflowError
from rho_workflow.provenance import utc_now
from rho_workflow.workflow.sweep import SweepPlan

__all__ = ["flat_range_boxes", "sweep_template", "sweep_dataset", "write_sweep_output",
           "provenance_attrs", "default_metadata", "output_conversions"]

MEMBER_ATTRS = {"long_name": "ensemble member of the generated sweep", "standard_name": "realization",
                "units": "1"}
CASE_ATTRS = {"long_name": "sweep case (row of the table of parameter points)", "units": "1"}


def flat_range_boxes(start: int, stop: int, shape: Sequence[int]
                     ) -> Iterator[tuple[tuple[slice, ...], int, int]]:
    """Cover the C-order flat range ``start .. stop - 1`` of ``shape`` by rectangular boxes.

    Yields ``(box, a, b)``: the box as slices of ``shape`` and the flat positions ``a .. b - 1``
    it holds (consecutive, so ``data[a - start:b - start]`` reshaped to the box fills it).
    At most ``2 * len(shape) - 1`` boxes.
    """
    shape = tuple(int(s) for s in shape)
    if start >= stop:
        return
    if not shape:
        yield (), start, stop
        return
    inner = math.prod(shape[1:])
    i0, r0 = divmod(start, inner)
    i1, r1 = divmod(stop, inner)
    full = tuple(slice(0, s) for s in shape[1:])
    if i0 == i1:
        for box, a, b in flat_range_boxes(r0, r1, shape[1:]):
            yield (slice(i0, i0 + 1), *box), i0 * inner + a, i0 * inner + b
        return
    if r0:
        for box, a, b in flat_range_boxes(r0, inner, shape[1:]):
            yield (slice(i0, i0 + 1), *box), i0 * inner + a, i0 * inner + b
        i0 += 1
    if i1 > i0:
        yield (slice(i0, i1), *full), i0 * inner, i1 * inner
    if r1:
        for box, a, b in flat_range_boxes(0, r1, shape[1:]):
            yield (slice(i1, i1 + 1), *box), i1 * inner + a, i1 * inner + b


def udunits(units: str) -> str:
    """A spelling of ``units`` that UDUNITS-2 reads (CF requires it): kept as given when
    UDUNITS reads it, else pint's long names (``Mpc2`` -> ``megaparsec2``). Without the
    ``cf_units`` package (UDUNITS bindings) the spelling is kept as given."""
    try:
        import cf_units
    except ImportError:
        return units
    try:
        cf_units.Unit(units)
        return units
    except ValueError:
        pass
    from rho_workflow.data.units import parse_units

    parsed = parse_units(units)
    terms = [name if exp == 1 else f"{name}{exp:g}" for name, exp in parsed.unit._units.items()]
    text = " ".join(terms) or "1"
    if parsed.scale != 1.0:
        text = f"{parsed.scale:g} {text}"
    try:
        cf_units.Unit(text)
    except ValueError:
        return units
    return text


def _sample_coords(plan: SweepPlan, param_attrs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    coords: dict[str, Any] = {}
    if plan.layout == "grid":
        for n in plan.names:
            values = plan.axes[n]
            is_text = any(isinstance(v, str) for v in values)
            data = np.asarray(values, dtype=object if is_text else np.float64)
            coords[n] = xr.Variable((n,), data, attrs=_param_attrs(n, plan, param_attrs, is_text))
    else:
        coords["case"] = xr.Variable(("case",), np.arange(plan.n_points, dtype=np.int32), CASE_ATTRS)
        for n in plan.names:
            values = [p[n] for p in plan.points]
            is_text = any(isinstance(v, str) for v in values)
            data = np.asarray(values, dtype=object if is_text else np.float64)
            coords[n] = xr.Variable(("case",), data, attrs=_param_attrs(n, plan, param_attrs, is_text))
    coords["member"] = xr.Variable(("member",), np.arange(plan.members, dtype=np.int32), MEMBER_ATTRS)
    return coords


def _param_attrs(name: str, plan: SweepPlan, extra: Mapping[str, Mapping[str, Any]],
                 is_text: bool) -> dict[str, Any]:
    attrs = {"long_name": f"model parameter {name}"}
    if not is_text:
        attrs["units"] = udunits(plan.units.get(name, "1"))
    if name in plan.calendars:  # a time parameter: CF time, decoded with its calendar
        attrs.update(standard_name="time", calendar=plan.calendars[name])
    attrs.update({k: v for k, v in dict(extra.get(name, {})).items() if v is not None})
    return attrs


def _spatial_coords(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The grid of the training store: dim coordinates with their CF attributes (``axis`` as
    cf-xarray read it from the coordinates' own metadata, never by position), auxiliary
    coordinates (2D latitude/longitude) and scalar coordinates (``height``)."""
    spatial = metadata["spatial"]
    coords = {}
    for d in spatial["dims"]:
        c = spatial["coords"][d]
        attrs = {"long_name": f"{d} coordinate", **dict(c.get("attrs", {})),
                 "units": udunits(c.get("units", "1"))}
        coords[d] = xr.Variable((d,), np.asarray(c["values"], dtype=np.float64), attrs)
    for name, a in spatial.get("aux", {}).items():
        attrs = dict(a.get("attrs", {}))
        attrs["units"] = udunits(a.get("units", attrs.get("units", "1")))
        coords[name] = xr.Variable(tuple(a["dims"]), np.asarray(a["values"], dtype=np.float64),
                                   attrs)
    for name, a in spatial.get("scalars", {}).items():
        attrs = dict(a.get("attrs", {}))
        if "units" in attrs:
            attrs["units"] = udunits(attrs["units"])
        coords[name] = xr.Variable((), np.float64(a["value"]), attrs)
    return coords


def _coordinates_attr(metadata: Mapping[str, Any]) -> str | None:
    """CF ``coordinates`` of a field: its auxiliary and scalar coordinates."""
    spatial = metadata["spatial"]
    names = [*spatial.get("aux", {}), *spatial.get("scalars", {})]
    return " ".join(names) or None


def provenance_attrs(plan: SweepPlan, *, checkpoint_sha256: str | None, config: Any = None,
                     title: str | None = None, institution: str | None = None,
                     command: str = "rho-workflow sample") -> dict[str, Any]:
    """Global CF attributes and provenance of a generated sweep."""
    now = utc_now()
    attrs = {
        "Conventions": "CF-1.8",
        "title": title or "rho-Diffusion generated parameter sweep",
        "institution": institution or "unknown",
        "source": f"rho_workflow {rho_workflow.__version__} conditional diffusion model (rho-Diffusion)",
        "history": f"{now} {command}: {plan.n_samples} samples, sampler {plan.sampler}, "
                   f"{plan.steps} steps, seed {plan.seed}",
        "references": "Cai & Lee (2023), rho-Diffusion, arXiv:2312.08153",
        "comment": "fields generated by a diffusion model; sample m of point p is seeded by "
                   "derive_seed(seed, p, m) (rho_workflow.diffusion.random)",
        "rho_workflow_version": rho_workflow.__version__,
        "rho_checkpoint_sha256": checkpoint_sha256 or "unknown",
        "rho_sampler": plan.sampler,
        "rho_steps": int(plan.steps),
        "rho_spacing": plan.spacing or f"default ({default_spacing(plan.sampler, plan.steps)})",
        "rho_seed": int(plan.seed),
        "rho_guidance": float(plan.guidance),
        "rho_members": int(plan.members),
        "rho_layout": plan.layout,
        "rho_micro_batch": int(plan.batch_size),
    }
    if config is not None:
        attrs["rho_pipeline_config"] = json.dumps(config, sort_keys=True, default=str)
    return attrs


def sweep_template(plan: SweepPlan, metadata: Mapping[str, Any], attrs: Mapping[str, Any],
                   param_attrs: Mapping[str, Mapping[str, Any]] | None = None) -> xr.Dataset:
    """The output's coordinates, grid-mapping variables and attributes, without the fields."""
    coords = {**_sample_coords(plan, param_attrs or {}), **_spatial_coords(metadata)}
    mappings = {name: xr.Variable((), np.int32(0), dict(a))
                for name, a in metadata["spatial"].get("grid_mapping", {}).items()}
    return xr.Dataset(mappings, coords=coords, attrs=dict(attrs))


def _dims(plan: SweepPlan, metadata: Mapping[str, Any]) -> tuple[str, ...]:
    sample_dims = (*plan.names, "member") if plan.layout == "grid" else ("case", "member")
    return (*sample_dims, *metadata["spatial"]["dims"])


def _field_attrs(f: Mapping[str, Any], units: str | None = None,
                 coordinates: str | None = None) -> dict[str, Any]:
    """CF attributes of one field variable (``units`` overrides the label's: output units)."""
    attrs = {"units": udunits(units or f.get("units", "1")),
             "long_name": f.get("long_name") or f["name"]}
    if f.get("standard_name"):
        attrs["standard_name"] = f["standard_name"]
    attrs.update({k: v for k, v in dict(f.get("attrs") or {}).items() if k not in attrs})
    if coordinates:
        attrs["coordinates"] = coordinates
    return attrs


def output_conversions(metadata: Mapping[str, Any], units: Mapping[str, str] | None
                       ) -> dict[str, tuple[float, float]]:
    """``field -> (a, b)`` with ``value_in_output_units = a * value + b`` for every field
    whose output units (``output.units``) differ from its training units."""
    from rho_workflow.data.units import linear_conversion

    out = {}
    for f in metadata["fields"]:
        target = (units or {}).get(f["name"])
        if target is not None:
            out[f["name"]] = linear_conversion(f.get("units", "1"), target,
                                               where=f"output.units.{f['name']}")
    return out


def sweep_dataset(plan: SweepPlan, samples: np.ndarray, metadata: Mapping[str, Any],
                  attrs: Mapping[str, Any] | None = None,
                  units: Mapping[str, str] | None = None) -> xr.Dataset:
    """An in-memory labeled Dataset of a whole sweep (``samples``: ``(n_samples, C, *spatial)``),
    fields converted to ``units`` (field -> units) where given."""
    ds = sweep_template(plan, metadata, attrs or {})
    dims = _dims(plan, metadata)
    spatial_shape = samples.shape[2:]
    conversions = output_conversions(metadata, units)
    for c, f in enumerate(metadata["fields"]):
        a, b = conversions.get(f["name"], (1.0, 0.0))
        data = samples[:, c].reshape(*plan.shape, *spatial_shape) * a + b
        ds[f["name"]] = xr.Variable(dims, data, _field_attrs(f, (units or {}).get(f["name"])))
    return ds


def write_sweep_output(path: str | os.PathLike, plan: SweepPlan, metadata: Mapping[str, Any],
                       parts: Iterator[tuple[int, int, np.ndarray]], *, attrs: Mapping[str, Any],
                       fmt: str = "netcdf", complevel: int = 4, dtype: str = "float32",
                       param_attrs: Mapping[str, Mapping[str, Any]] | None = None,
                       on_part: Callable[[int], None] | None = None,
                       units: Mapping[str, str] | None = None, converted: bool = False) -> Path:
    """Consolidate parts ``(start, stop, samples (stop - start, C, *spatial))`` into one file.

    Fields named in ``units`` (``output.units``) are converted from their training units by
    the project's unit registry (``converted``: the parts are in those units already, as
    read back from a region-written store). netCDF is written to a temporary file and
    renamed when complete; zarr is written part by part into a store whose metadata
    (coordinates, attributes) is written first (:mod:`rho_workflow.workflow.regions`, whose
    chunk tasks write their regions themselves), then renamed.
    """
    path = Path(path)
    template = sweep_template(plan, metadata, attrs, param_attrs)
    dims = _dims(plan, metadata)
    spatial_shape = tuple(len(template[d]) for d in metadata["spatial"]["dims"])
    full_shape = (*plan.shape, *spatial_shape)
    sample_ndim = len(plan.shape)
    chunks = (*([1] * (sample_ndim - 1)), min(plan.members, 16), *spatial_shape)
    conversions = {} if converted else output_conversions(metadata, units)
    field_units = {f["name"]: (units or {}).get(f["name"]) for f in metadata["fields"]}

    def convert(c: int, data: np.ndarray) -> np.ndarray:
        a, b = conversions.get(metadata["fields"][c]["name"], (1.0, 0.0))
        return data if (a, b) == (1.0, 0.0) else data * a + b

    if fmt == "netcdf":
        import netCDF4

        mappings = {n: template[n].attrs for n in template.data_vars}
        with atomic_path(path, suffix=".nc") as tmp:
            try:
                encoding = {n: {"_FillValue": None} for n in template.coords}
                template.drop_vars(list(mappings)).to_netcdf(tmp, engine="netcdf4", encoding=encoding)
                with netCDF4.Dataset(tmp, "a") as nc:
                    for name, mapping_attrs in mappings.items():  # no coordinates attribute
                        nc.createVariable(name, np.int32, ()).setncatts(dict(mapping_attrs))
                    variables = []
                    for f in metadata["fields"]:
                        v = nc.createVariable(f["name"], np.dtype(dtype), dims, zlib=complevel > 0,
                                              complevel=max(complevel, 1), shuffle=True,
                                              chunksizes=chunks, fill_value=np.nan)
                        v.setncatts(_field_attrs(f, field_units[f["name"]],
                                                 _coordinates_attr(metadata)))
                        variables.append(v)
                    _fill(parts, plan, full_shape, sample_ndim,
                          lambda c, box, data: variables[c].__setitem__(box, convert(c, data)),
                          on_part)
            except RhoWorkflowError:
                raise
            except (RuntimeError, OSError) as exc:  # HDF5 reports a full disk as "HDF error"
                raise _write_error(path, tmp, exc, len(metadata["fields"]) * int(
                    np.prod(full_shape, dtype=np.int64)) * np.dtype(dtype).itemsize) from exc
        return path
    if fmt == "zarr":
        from rho_workflow.atomic import temporary_path
        from rho_workflow.atomic import move_dir_into_place
        from rho_workflow.workflow.regions import create_region_store, seal_region_store

        tmp = temporary_path(path)  # a reader never sees a half-filled store
        try:
            store = create_region_store(tmp, plan, metadata, attrs=attrs, dtype=dtype,
                                        param_attrs=param_attrs, units=units)
            if converted:
                store = dataclasses.replace(store, conversions=((1.0, 0.0),) * len(store.variables))
            hashes = {}
            for i, (start, stop, samples) in enumerate(parts):
                hashes[i] = store.write(start, stop, samples)["sha256"]
                if on_part is not None:
                    on_part(stop - start)
            seal_region_store(store, attrs, hashes)
            move_dir_into_place(tmp, path)
        except BaseException:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path
    raise ValueError(f"output.format {fmt!r} is not one of ['netcdf', 'zarr']")


def _write_error(path: Path, tmp: Path, exc: BaseException, nbytes: int) -> OSError:
    """An OS error naming ``path`` for a failed write; a full disk is told apart from other
    failures by the free space left (netCDF/HDF5 report it only as an "HDF error")."""
    import errno
    import shutil

    if isinstance(exc, OSError) and exc.errno is not None:
        return OSError(exc.errno, exc.strerror or str(exc), str(path))
    free = shutil.disk_usage(tmp.parent).free
    written = tmp.stat().st_size if tmp.exists() else 0
    if free < max(nbytes - written, 0) + (1 << 16):
        return OSError(errno.ENOSPC, f"No space left on device (the sweep needs up to "
                       f"{nbytes / 1e6:.3g} MB uncompressed; {free / 1e6:.3g} MB were free)",
                       str(path))
    return OSError(errno.EIO, f"writing the netCDF file failed ({exc})", str(path))


def _fill(parts: Iterator[tuple[int, int, np.ndarray]], plan: SweepPlan, full_shape: tuple,
          sample_ndim: int, write: Callable[[int, tuple, np.ndarray], None],
          on_part: Callable[[int], None] | None) -> None:
    sample_shape = full_shape[:sample_ndim]
    spatial_shape = full_shape[sample_ndim:]
    for start, stop, samples in parts:
        for box, a, b in flat_range_boxes(start, stop, sample_shape):
            block_shape = tuple(s.stop - s.start for s in box) + spatial_shape
            full_box = (*box, *(slice(None),) * len(spatial_shape))
            for c in range(samples.shape[1]):
                write(c, full_box, samples[a - start:b - start, c].reshape(block_shape))
        if on_part is not None:
            on_part(stop - start)
