"""Writing CF-1.8 netCDF files atomically (temporary file + ``os.replace``).

A reader never sees a half-written file: :func:`write_netcdf` writes next to the target
under a hidden temporary name and renames it into place only when the write succeeded.
"""

from __future__ import annotations

import datetime as _dt
import os
import uuid
from pathlib import Path
from typing import Any, Mapping

import xarray as xr

from rho_workflow import __version__ as _version

__all__ = ["CONVENTIONS", "write_netcdf", "history_line", "temporary_path", "replace_path"]

CONVENTIONS = "CF-1.8"


def history_line(action: str) -> str:
    """One CF ``history`` entry: ISO timestamp, program and action."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{stamp} rho_workflow {_version}: {action}"


def temporary_path(target: str | os.PathLike) -> Path:
    """A hidden sibling of ``target`` to write into before :func:`replace_path`."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace_path(tmp: str | os.PathLike, target: str | os.PathLike) -> None:
    """Move ``tmp`` onto ``target`` atomically (directories: the old one is moved aside first)."""
    tmp, target = Path(tmp), Path(target)
    if tmp.is_dir() and target.exists():
        old = temporary_path(target)
        os.replace(target, old)
        os.replace(tmp, target)
        _remove(old)
    else:
        os.replace(tmp, target)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


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
    tmp = temporary_path(path)
    try:
        ds.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=dict(encoding or {}))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
