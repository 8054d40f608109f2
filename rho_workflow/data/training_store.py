"""Reading a training store written by :func:`rho_workflow.data.store.preprocess`.

Fields are stored in physical units; :class:`TrainingStore` applies the recorded transform
when reading (``to_numpy``, ``normalize``, ``denormalize``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from rho_workflow.data.ingest import SAMPLE_DIM
from rho_workflow.data.labels import plain_attrs
from rho_workflow.data.transforms import Transform, transform_from_dict
from rho_workflow.params import ParamSpace

__all__ = ["TrainingStore", "open_store", "SPLITS"]

SPLITS = ("train", "validation", "held_out")

def open_store(path: str | os.PathLike) -> "TrainingStore":
    """Open a store written by :func:`preprocess` (lazily; values are read on demand)."""
    return TrainingStore(path)


class TrainingStore:
    """Read access to a training store: fields, parameters, transform, grid, mask, splits."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"training store {self.path} does not exist; run the "
                                    "preprocess stage first")
        # parameters stay numbers (a time parameter has units "days since ...")
        decode = {"decode_times": False, "decode_timedelta": False}
        if self.path.is_dir():
            self.dataset = xr.open_zarr(self.path, consolidated=True, **decode)
        else:
            self.dataset = xr.open_dataset(self.path, engine="netcdf4", chunks={}, **decode)
        attrs = self.dataset.attrs
        if "rho_store_version" not in attrs:
            raise ValueError(f"{self.path} is not a rho_workflow training store (attribute "
                             "rho_store_version missing); write it with preprocess")
        self.variables: list[str] = json.loads(attrs["rho_variables"])
        self.spatial_dims: list[str] = json.loads(attrs["rho_spatial_dims"])
        self.field_attrs: dict[str, dict[str, str]] = json.loads(attrs["rho_field_attrs"])
        self.transform: Transform = transform_from_dict(json.loads(attrs["rho_transform"]))
        self.param_space = ParamSpace.from_dict(json.loads(attrs["rho_param_space"]))
        self.stats: list[dict[str, float]] = json.loads(attrs["rho_stats"])
        self.config: dict[str, Any] = json.loads(attrs["rho_config"])
        self.provenance: dict[str, Any] = json.loads(attrs["rho_provenance"])
        # everything but the fields is small: read it now, on this process's threads. Inside a
        # Dask task, dask's default would be the cluster itself, whose workers may all be busy
        # with this task's peers (the ranks of data-parallel training): a deadlock
        with dask.config.set(scheduler="threads"):
            for name, variable in self.dataset.variables.items():
                if name not in self.variables:
                    variable.load()
        self._split = np.asarray(self.dataset["split"].values)
        #: ``(C, *spatial)`` True where each channel is defined (None: no fixed mask)
        self.channel_mask: np.ndarray | None = None
        #: ``spatial`` True where every channel is defined -- the mask of the loss
        self.mask: np.ndarray | None = None
        if "valid_mask" in self.dataset:
            self.channel_mask = np.asarray(self.dataset["valid_mask"].values).astype(bool)
            self.mask = self.channel_mask.all(axis=0)

    # -- shape and labels ------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return int(self.dataset.sizes[SAMPLE_DIM])

    @property
    def shape(self) -> tuple[int, ...]:
        """Spatial shape of one field."""
        return tuple(int(self.dataset.sizes[d]) for d in self.spatial_dims)

    @property
    def coords(self) -> dict[str, tuple[np.ndarray, str]]:
        """``dim -> (values, units)`` of every spatial dim."""
        return {d: (np.asarray(self.dataset[d].values), str(self.dataset[d].attrs.get("units", "1")))
                for d in self.spatial_dims}

    def split_indices(self, split: str | None = "train") -> np.ndarray:
        """Sample indices of one split (``train``, ``validation``, ``held_out``) or all."""
        if split is None or split == "all":
            return np.arange(self.n_samples)
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {SPLITS + ('all',)}")
        return np.flatnonzero(self._split == SPLITS.index(split))

    def points(self, split: str | None = "train",
               indices: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Parameter dicts (canonical units) of the samples of a split, or of ``indices``."""
        idx = self.split_indices(split) if indices is None else np.asarray(indices)
        columns = {p.name: np.asarray(self.dataset[p.name].values)[idx]
                   for p in self.param_space.params}
        out = []
        for i in range(len(idx)):
            point = {}
            for p in self.param_space.params:
                v = columns[p.name][i]
                v = v.item() if isinstance(v, np.generic) else v
                if p.kind == "categorical" and isinstance(v, str):
                    v = next((c for c in p.values if str(c) == v), v)
                point[p.name] = v
            out.append(point)
        return out

    # -- values ----------------------------------------------------------------------------
    def fields(self, split: str | None = None) -> da.Array:
        """Lazy ``(N, C, *spatial)`` float32 fields in physical (canonical) units."""
        arrays = [self.dataset[v].data for v in self.variables]
        stacked = da.stack(arrays, axis=1)
        if split is None or split == "all":
            return stacked
        return stacked[self.split_indices(split)]

    def normalize(self, physical: np.ndarray) -> np.ndarray:
        """Transform ``(N, C, *spatial)`` physical values; masked points become 0 (float32)."""
        y = self.transform.forward(np.asarray(physical, dtype=np.float64))
        if self.channel_mask is not None:
            y = np.where(self.channel_mask[None], y, 0.0)
        return np.nan_to_num(y, nan=0.0).astype(np.float32) if self.mask is not None \
            else y.astype(np.float32)

    def denormalize(self, normalized: np.ndarray) -> np.ndarray:
        """Inverse transform to physical units (float64); NaN restored at masked points."""
        x = self.transform.inverse(np.asarray(normalized, dtype=np.float64))
        if self.channel_mask is not None:
            x = np.where(self.channel_mask[None], x, np.nan)
        return x

    def to_numpy(self, split: str | None = "train", max_bytes: int = 2 ** 31
                 ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """All fields of a split, normalized, as float32 ``(N, C, *spatial)``, with points.

        For small stores; stream large ones with
        :class:`rho_workflow.training.dataset.StoreDataset`.
        """
        idx = self.split_indices(split)
        nbytes = 4 * len(idx) * len(self.variables) * int(np.prod(self.shape))
        if nbytes > max_bytes:
            raise MemoryError(f"split {split!r} of {self.path} holds {nbytes / 2**30:.2f} GiB, "
                              f"more than max_bytes={max_bytes / 2**30:.2f} GiB; stream it with "
                              "rho_workflow.training.dataset.StoreDataset instead")
        physical = self.fields()[idx].compute(scheduler="threads") if len(idx) else \
            np.zeros((0, len(self.variables)) + self.shape, np.float32)
        return self.normalize(physical), self.points(indices=idx)

    def bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """Declared physical bounds ``variable -> (low, high)`` in canonical units."""
        return {v: (b[0], b[1]) for v, b in self.config.get("bounds", {}).items()}

    def grid_extras(self) -> dict[str, Any]:
        """Auxiliary and scalar coordinates and grid-mapping variables of the grid, in the
        JSON form of :mod:`rho_workflow.data.labels`."""
        spatial = set(self.spatial_dims)
        aux, scalars, mappings = {}, {}, {}
        for name, coord in self.dataset.coords.items():
            if name in spatial:
                continue
            if coord.ndim == 0:
                scalars[str(name)] = {"value": float(coord.values),
                                      "attrs": plain_attrs(coord.attrs, ())}
            elif set(coord.dims) <= spatial:
                aux[str(name)] = {"dims": list(coord.dims),
                                  "values": np.asarray(coord.values).tolist(),
                                  "units": str(coord.attrs.get("units", "1")),
                                  "attrs": plain_attrs(coord.attrs, ("units", "bounds"))}
        for attrs in self.field_attrs.values():
            name = attrs.get("grid_mapping")
            if name and name in self.dataset.variables:
                mappings[name] = plain_attrs(self.dataset[name].attrs, ("_FillValue",))
        return {"aux": aux, "scalars": scalars, "grid_mapping": mappings}

    def metadata(self) -> dict[str, Any]:
        """JSON-able description for checkpoints and output datasets."""
        return {
            "variables": [{"name": v, **self.field_attrs.get(v, {})} for v in self.variables],
            "spatial_dims": list(self.spatial_dims),
            "coords": {d: {"values": vals.tolist(), "units": u,
                           "attrs": plain_attrs(self.dataset[d].attrs)}
                       for d, (vals, u) in self.coords.items()},
            **self.grid_extras(),
            "transform": self.transform.to_dict(),
            "param_space": self.param_space.to_dict(),
            "mask": None if self.mask is None else self.mask.astype(int).tolist(),
            "store": str(self.path),
            "provenance": self.provenance,
        }

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self) -> "TrainingStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
