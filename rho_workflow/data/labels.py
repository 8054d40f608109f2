"""The labels of a field, built in one place: names, units, dims and grid coordinates.

A trained model records them in its checkpoint (``metadata["fields"]`` and
``metadata["spatial"]``); the sweep output, the accessor and the tasks read them back.
:func:`field_labels` builds them from a training store's metadata, :func:`labels_of_dataarray`
from an xarray DataArray, :func:`default_labels` for a model without recorded ones. The form
is plain JSON::

    {"fields": [{"name", "units", "long_name", "standard_name", "attrs"}, ...],
     "spatial": {"dims": [...], "coords": {dim: {"values": [...], "units": ..., "attrs": {...}}},
                 "aux": {name: {"dims": [...], "values": [[...]], "attrs": {...}}},
                 "scalars": {name: {"value": ..., "attrs": {...}}},
                 "grid_mapping": {name: {...attributes...}}}}

``attrs`` of a field are its further CF attributes (``cell_methods``, ``grid_mapping``);
``aux`` are the auxiliary coordinates on the grid (2D ``nav_lat``/``nav_lon`` of a curvilinear
grid), ``scalars`` the scalar coordinates (``height``) and ``grid_mapping`` the grid-mapping
variables: everything of the training grid that describes the field, carried to the output.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["field_label", "field_labels", "labels_of_dataarray", "default_labels",
           "plain_attrs", "cf_axes", "FIELD_ATTRS", "GRID_EXTRAS"]

#: CF attributes of a field variable carried from the files to the store and the output
FIELD_ATTRS = ("long_name", "standard_name", "units", "cell_methods", "grid_mapping", "comment")
#: the parts of ``spatial`` besides dims and coords
GRID_EXTRAS = ("aux", "scalars", "grid_mapping")
#: attributes of a coordinate that are not carried: they name variables that do not travel
#: (bounds), are encodings, or are kept separately (units)
_DROPPED_COORD_ATTRS = ("units", "bounds", "_FillValue", "missing_value", "coordinates",
                        "_Netcdf4Dimid", "_Netcdf4Coordinates", "DIMENSION_LIST", "CLASS",
                        "NAME", "REFERENCE_LIST")


def plain_attrs(attrs: Mapping[str, Any], drop: Sequence[str] = _DROPPED_COORD_ATTRS
                ) -> dict[str, Any]:
    """JSON-able copy of netCDF attributes (text, numbers, lists of numbers), ``drop`` left out."""
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        if key in drop:
            continue
        if isinstance(value, np.ndarray):
            value = value.tolist() if value.ndim else value.item()
        elif isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out[str(key)] = value
        elif isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
            out[str(key)] = value
    return out


def cf_axes(obj: Any) -> dict[str, str]:
    """``coordinate name -> CF axis letter`` read by cf-xarray from the coordinates' own
    metadata (``axis``, ``standard_name``, ``units`` such as ``degrees_north``, ``positive``),
    never from their position or name."""
    import cf_xarray  # noqa: F401  (registers the .cf accessor)

    return {str(name): axis for axis, names in obj.cf.axes.items() for name in names}


def field_label(name: str, units: str | None = "1", long_name: str | None = None,
                standard_name: str | None = None, attrs: Mapping[str, Any] | None = None
                ) -> dict[str, Any]:
    """One field's label; ``long_name`` defaults to the name; ``attrs`` further CF attributes."""
    extra = {k: v for k, v in dict(attrs or {}).items()
             if k not in ("units", "long_name", "standard_name", "name")}
    return {"name": str(name), "units": str(units or "1"), "long_name": long_name or str(name),
            "standard_name": standard_name, "attrs": extra}


def field_labels(fields: Sequence[Mapping[str, Any]], dims: Sequence[str],
                 coords: Mapping[str, Mapping[str, Any]],
                 grid: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The labels of fields ``fields`` (mappings with ``name`` and optional ``units``,
    ``long_name``, ``standard_name`` and further CF attributes) on the grid ``dims`` with
    ``coords`` and the ``grid`` extras (``aux``, ``scalars``, ``grid_mapping``)."""
    spatial: dict[str, Any] = {"dims": list(dims), "coords": {d: dict(coords[d]) for d in dims}}
    for key in GRID_EXTRAS:
        if grid and grid.get(key):
            spatial[key] = dict(grid[key])
    return {"fields": [field_label(f["name"], f.get("units", "1"), f.get("long_name"),
                                   f.get("standard_name"),
                                   {k: v for k, v in f.items() if k in FIELD_ATTRS})
                       for f in fields],
            "spatial": spatial}


def labels_of_dataarray(da: Any, sample_dim: str) -> dict[str, Any]:
    """The labels of a DataArray's field and grid (every dim but ``sample_dim``)."""
    dims = [d for d in da.dims if d != sample_dim]
    coords = {}
    axes = cf_axes(da)
    for d in dims:
        values = da[d].values if d in da.coords else np.arange(da.sizes[d])
        coords[d] = {"values": np.asarray(values, dtype=np.float64).tolist(),
                     "units": str(da[d].attrs.get("units", "1")) if d in da.coords else "1",
                     "attrs": plain_attrs(da[d].attrs) if d in da.coords else {}}
        if axes.get(d, "T") in "XYZ":
            coords[d]["attrs"].setdefault("axis", axes[d])
    name = str(da.name or "field")
    return field_labels([{"name": name, "units": str(da.attrs.get("units", "1")),
                          "long_name": da.attrs.get("long_name", name),
                          "standard_name": da.attrs.get("standard_name"),
                          **{k: str(v) for k, v in da.attrs.items()
                             if k in ("cell_methods", "comment")}}], dims, coords)


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
