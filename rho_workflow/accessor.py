"""The ``.rho`` xarray accessor: from a labeled Dataset to a trained model and a sampled,
labeled Dataset in a few lines (for notebook users of the climate and astro stacks).

>>> import rho_workflow.accessor  # registers .rho                       # doctest: +SKIP
>>> model = ds.rho.fit("density", params=["index", "amplitude"], sample_dim="run",
...                    steps=500, log=True)                              # doctest: +SKIP
>>> out = ds.rho.sample(model, members=8)          # at the points of ds # doctest: +SKIP
>>> sweep = rho_workflow.accessor.sample_sweep(
...     model, grid={"index": {"start": -3, "stop": -1, "num": 5},
...                  "amplitude": {"values": [0.5e6, 1e6], "units": "kpc2"}})  # doctest: +SKIP

Parameters are coordinates along the sample dimension (with ``units`` attributes); the other
dims of the variable are the grid. Samples come back in physical units with the grid's
coordinates, the parameters as coordinates with units and CF attributes, exactly as the
``sample`` stage of a pipeline writes them (same seeds, same micro-batches).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from rho_workflow.data.labels import default_labels
from rho_workflow.data.labels import labels_of_dataarray as labels_of
from rho_workflow.diffusion.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS
from rho_workflow.params import ParamSpace
from rho_workflow.workflow.output import provenance_attrs, sweep_dataset
from rho_workflow.workflow.sweep import SweepPlan, SweepRequest, plan_sweep

__all__ = ["RhoDataArrayAccessor", "RhoDatasetAccessor", "sample_sweep", "labels_of"]


def _points(da: xr.DataArray, params: Sequence[str], sample_dim: str) -> list[dict[str, Any]]:
    missing = [p for p in params if p not in da.coords or da[p].dims != (sample_dim,)]
    if missing:
        raise ValueError(f"parameters {missing} must be coordinates along the sample dimension "
                         f"{sample_dim!r}; found coordinates {list(da.coords)}")
    columns = {p: da[p].values for p in params}
    return [{p: (columns[p][i].item() if hasattr(columns[p][i], "item") else columns[p][i])
             for p in params} for i in range(da.sizes[sample_dim])]


@xr.register_dataarray_accessor("rho")
class RhoDataArrayAccessor:
    """``da.rho.fit(...)``: a conditional diffusion model of this field."""

    def __init__(self, da: xr.DataArray):
        self._da = da

    def fit(self, params: Sequence[str], sample_dim: str, *, log: bool = False,
            encoder: str = "features", network: Mapping[str, Any] | None = None,
            categorical: Sequence[str] = (), **train_options: Any) -> Any:
        """Train a :class:`~rho_workflow.api.RhoModel` on the samples along ``sample_dim``.

        ``params`` name the coordinates (along ``sample_dim``) the model is conditioned on;
        their ``units`` attributes become the parameter space's units. ``log`` fits a
        log-standardize transform (positive densities). Other keywords go to the trainer
        (``steps``, ``batch_size``, ``lr``, ``seed`` ...).
        """
        from rho_workflow.api import RhoModel

        da = self._da.transpose(sample_dim, ...)
        points = _points(da, params, sample_dim)
        units = {p: str(da[p].attrs.get("units", "1")) for p in params}
        space = ParamSpace.infer(points, units=units, categorical=categorical)
        labels = labels_of(da, sample_dim)
        shape = tuple(da.sizes[d] for d in labels["spatial"]["dims"])
        model = RhoModel.create(shape, space, encoder=encoder, network=network, metadata=labels)
        model.fit(np.asarray(da.values, dtype=np.float64), points,
                  transform="log-standardize" if log else "standardize", **train_options)
        return model

    def log_prob(self, model: Any, sample_dim: str, *, method: str = "ode",
                 unit: str = "bits_per_dim", **options: Any) -> xr.DataArray:
        """``log p(x | params)`` of each field along ``sample_dim`` under ``model``, a
        DataArray over ``sample_dim`` (the parameters read from its coordinates, the fields
        in the model's units); keywords as :meth:`RhoModel.log_prob`."""
        da = self._da.transpose(sample_dim, ...)
        points = _points(da, model.param_space.names, sample_dim)
        result = model.log_prob(np.asarray(da.values, dtype=np.float64), points, method=method,
                                unit=unit, details=True, **options)
        units = {"nats": "1", "bits": "bit", "bits_per_dim": "bit"}[unit]
        return xr.DataArray(result.values, dims=(sample_dim,),
                            coords={c: da[c] for c in da.coords if da[c].dims == (sample_dim,)},
                            name="log_likelihood",
                            attrs={"units": units, "rho_unit": unit, "rho_method": result.method,
                                   "long_name": f"log-likelihood ({unit}) of {da.name or 'field'}"})


@xr.register_dataset_accessor("rho")
class RhoDatasetAccessor:
    """``ds.rho.fit(variable, ...)`` and ``ds.rho.sample(model, ...)``."""

    def __init__(self, ds: xr.Dataset):
        self._ds = ds

    def fit(self, variable: str, params: Sequence[str], sample_dim: str, **options: Any) -> Any:
        """``ds[variable].rho.fit(params, sample_dim, **options)``."""
        return self._ds[variable].rho.fit(params, sample_dim, **options)

    def sample(self, model: Any, *, sample_dim: str | None = None, members: int = 4,
               **options: Any) -> xr.Dataset:
        """Generated fields at the parameter points of this Dataset (a table sweep over its
        distinct points); keywords as :func:`sample_sweep`."""
        names = model.param_space.names
        if sample_dim is None:
            dims = {self._ds[n].dims for n in names}
            if len(dims) != 1 or len(next(iter(dims))) != 1:
                raise ValueError(f"parameters {names} must be coordinates along one sample "
                                 "dimension; pass sample_dim")
            sample_dim = next(iter(dims))[0]
        points = _points(self._ds[names[0]], names, sample_dim)
        unique = list({tuple(p.values()): p for p in points}.values())
        return sample_sweep(model, table=unique, members=members, **options)


def sample_sweep(model: Any, *, grid: Mapping[str, Any] | None = None,
                 table: Sequence[Mapping[str, Any]] | None = None,
                 table_units: Mapping[str, str] | None = None, members: int = 4, seed: int = 0,
                 sampler: str = DEFAULT_SAMPLER, steps: int = DEFAULT_STEPS, guidance: float = 0.0,
                 batch_size: int = 16, allow_extrapolation: bool = False,
                 spacing: str | None = None) -> xr.Dataset:
    """Sample a grid or table sweep in this process; a labeled, CF-attributed Dataset.

    ``grid``/``table`` take the forms of a pipeline's ``sampling`` section (values or ranges,
    with units converted to the model's). Sample ``m`` of point ``p`` is seeded by
    ``derive_seed(seed, p, m)`` and the network runs in the same fixed micro-batches as the
    pipeline, so the values equal those of the ``sample`` stage with the same settings.
    """
    section = SweepRequest(grid=dict(grid) if grid is not None else None,
                           table=[dict(r) for r in table] if table is not None else None,
                           table_units=dict(table_units or {}), members=members, seed=seed,
                           sampler=sampler, steps=steps, guidance=guidance, spacing=spacing,
                           allow_extrapolation=allow_extrapolation, batch_size=batch_size,
                           chunk_size=batch_size)
    plan = plan_sweep(section, model.param_space, path="sample_sweep")
    samples = _sample_plan(model, plan)
    labels = model.metadata if "fields" in model.metadata else _default_labels(model)
    attrs = provenance_attrs(plan, checkpoint_sha256=None, command="rho_workflow.accessor.sample_sweep")
    return sweep_dataset(plan, samples, labels, attrs)


def _sample_plan(model: Any, plan: SweepPlan) -> np.ndarray:
    out = np.empty((plan.n_samples, *model.field_shape), dtype=np.float64)
    points, seeds = plan.points_of(0, plan.n_samples), plan.seeds_of(0, plan.n_samples)
    for a, b in plan.micro_batches(0, plan.n_samples):
        out[a:b] = model.sample_seeded(points[a:b], seeds[a:b], sampler=plan.sampler,
                                       steps=plan.steps, guidance=plan.guidance, spacing=plan.spacing,
                                       allow_extrapolation=plan.allow_extrapolation,
                                       batch_size=b - a)
    return out


def _default_labels(model: Any) -> dict[str, Any]:
    return default_labels(model.field_shape)
