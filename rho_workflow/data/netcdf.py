"""Writing CF-1.8 netCDF files atomically (:func:`rho_workflow.atomic.atomic_path`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import xarray as xr

from rho_workflow.atomic import atomic_path
from rho_workflow.provenance import history_line

__all__ = ["CONVENTIONS", "write_netcdf"]

CONVENTIONS = "CF-1.8"


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike, *,
                 encoding: Mapping[str, Mapping[str, Any]] | None = None,
                 history: str | None = None) -> Path:
    """Write ``ds`` as a CF-1.8 netCDF4 file at ``path`` atomically.

    Parameters
    ----------
    ds : xarray.Dataset
        Dataset with CF attributes on its variables; ``Conventions`` is set if absent.
    path : path-like
        Target file; its folder must exist.
    encoding : mapping, optional
        Per-variable netCDF encoding (``dtype``, ``scale_factor``, ``_FillValue``, ...).
    history : str, optional
        Action appended to the global ``history`` attribute.
    """
    path = Path(path)
    ds = ds.copy()
    ds.attrs.setdefault("Conventions", CONVENTIONS)
    if history:
        previous = ds.attrs.get("history", "")
        ds.attrs["history"] = (previous + "\n" if previous else "") + history_line(history)
    with atomic_path(path, suffix=".nc") as tmp:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=dict(encoding or {}))
    return path
