"""The labels of a field, built in one place: names, units, dims and grid coordinates.

A trained model records them in its checkpoint (``metadata["fields"]`` and
``metadata["spatial"]``); the sweep output, the accessor and the tasks read them back.
:func:`field_labels` builds them from a training store's metadata, :func:`labels_of_dataarray`
from an xarray DataArray, :func:`default_labels` for a model without recorded ones. The form
is plain JSON::

    {"fields": [{"name", "units", "long_name", "standard_name"}, ...],
     "spatial": {"dims": [...], "coords": {dim: {"values": [...], "units": ...}}}}
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["field_label", "field_labels", "labels_of_dataarray", "default_labels"]


def field_label(name: str, units: str | None = "1", long_name: str | None = None,
                standard_name: str | None = None) -> dict[str, Any]:
    """One field's label; ``long_name`` defaults to the name."""
    return {"name": str(name), "units": str(units or "1"), "long_name": long_name or str(name),
            "standard_name": standard_name}


def field_labels(fields: Sequence[Mapping[str, Any]], dims: Sequence[str],
                 coords: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The labels of fields ``fields`` (mappings with ``name`` and optional ``units``,
    ``long_name``, ``standard_name``) on the grid ``dims`` with ``coords``."""
    return {"fields": [field_label(f["name"], f.get("units", "1"), f.get("long_name"),
                                   f.get("standard_name")) for f in fields],
            "spatial": {"dims": list(dims), "coords": {d: dict(coords[d]) for d in dims}}}


def labels_of_dataarray(da: Any, sample_dim: str) -> dict[str, Any]:
    """The labels of a DataArray's field and grid (every dim but ``sample_dim``)."""
    dims = [d for d in da.dims if d != sample_dim]
    coords = {}
    for d in dims:
        values = da[d].values if d in da.coords else np.arange(da.sizes[d])
        coords[d] = {"values": np.asarray(values, dtype=np.float64).tolist(),
                     "units": str(da[d].attrs.get("units", "1")) if d in da.coords else "1"}
    name = str(da.name or "field")
    return field_labels([{"name": name, "units": str(da.attrs.get("units", "1")),
                          "long_name": da.attrs.get("long_name", name),
                          "standard_name": da.attrs.get("standard_name")}], dims, coords)


def default_labels(field_shape: Sequence[int], names: Sequence[str] | None = None,
                   units: Sequence[str] | None = None) -> dict[str, Any]:
    """Labels for a model without recorded ones: ``field``/``field_<c>``, units ``1``, grid
    dims ``x``/``y``/``z`` with cell-index coordinates."""
    channels, *spatial = field_shape
    names = list(names or (["field"] if channels == 1 else [f"field_{c}" for c in range(channels)]))
    units = list(units or ["1"] * channels)
    dims = ["x", "y", "z"][:len(spatial)] if len(spatial) > 1 else ["x"]
    return field_labels([{"name": n, "units": u, "long_name": n.replace("_", " ")}
                         for n, u in zip(names, units)], dims,
                        {d: {"values": list(range(s)), "units": "1"} for d, s in zip(dims, spatial)})
