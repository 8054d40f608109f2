"""HDF5 and FITS files as lazy xarray Datasets, read through the same ``data:`` section.

Cosmology codes write gridded fields to HDF5 (Gadget/Arepo snapshots after gridding, CAMELS
maps) and FITS images rather than netCDF. :func:`open_hdf5` and :func:`open_fits` present
such a file as the Dataset the netCDF path sees, so that variables, dims, units and
parameters are configured exactly alike:

* **dims**: the last ``len(data.spatial_dims)`` axes of an array are the spatial dims (in
  numpy order: a FITS image's ``(NAXIS2, NAXIS1)`` is ``[y, x]``), the leading axes the
  ``data.sample_dims`` in order (else ``<variable>_dim<i>``). HDF5 dimension scales are not
  needed.
* **variables**: an HDF5 dataset by its name anywhere in the file (``density`` finds
  ``maps/density`` when no other dataset has that name); a FITS image HDU by ``EXTNAME``.
* **units**: an HDF5 dataset's ``units`` (or ``unit``/``Units``) attribute; a FITS image's
  ``BUNIT``. Astropy spellings (``Msun``, ``solMass``, ``Mpc``, ``km / s``) are read by the
  project's unit registry.
* **parameters** (``source: global_attribute``): HDF5 attributes of the root group by name,
  and of every other group as ``group/name`` (``Header/Omega0`` of a Gadget snapshot); FITS
  header keywords of the primary and the image HDU, the units of a keyword from its comment
  written ``[units]`` (``BOXSIZE = 25.0 / [Mpc] side of the box``) as ``<KEY>_units``.
* **coordinates**: an HDF5 1D dataset named like a spatial dim (``x``) with that length,
  with its ``units``; a FITS linear WCS axis (``CRVALi``, ``CDELTi``, ``CRPIXi``, ``CUNITi``).

Values are read lazily, slice by slice, by small picklable readers (the file is opened per
read), so planning reads metadata only and Dask workers read their own chunks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import dask.array as da
import numpy as np
import xarray as xr

__all__ = ["FORMAT_NAMES", "HDF5_SUFFIXES", "FITS_SUFFIXES", "file_format", "open_hdf5", "open_fits"]

FORMAT_NAMES = {"netcdf": "netCDF", "hdf5": "HDF5", "fits": "FITS"}
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")
#: FITS keywords that describe the file's structure, not the run
_STRUCTURAL = re.compile(r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|XTENSION|PCOUNT|GCOUNT|BSCALE|BZERO|"
                         r"BLANK|CHECKSUM|DATASUM|COMMENT|HISTORY|EXTNAME|BUNIT|CTYPE\d+|"
                         r"CRVAL\d+|CDELT\d+|CRPIX\d+|CUNIT\d+|)$")
_BRACKET_UNITS = re.compile(r"^\s*\[([^\]]*)\]")


def file_format(path: Path) -> str:
    """``hdf5``, ``fits`` or ``netcdf`` from the file name."""
    name = path.name.lower()
    if name.endswith(HDF5_SUFFIXES):
        return "hdf5"
    if name.endswith(FITS_SUFFIXES):
        return "fits"
    return "netcdf"


def _dims(name: str, ndim: int, spatial: Sequence[str], sample: Sequence[str]) -> tuple[str, ...]:
    n_sample = ndim - len(spatial)
    if n_sample < 0:
        return tuple(f"{name}_dim{i}" for i in range(ndim))  # too few axes: reported by ingest
    leading = [sample[i] if i < len(sample) else f"{name}_dim{i}" for i in range(n_sample)]
    return (*leading, *spatial)


class _HDF5Reader:
    """``reader[index]`` reads a slice of one HDF5 dataset (the file opened per read)."""

    def __init__(self, path: str, name: str, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.name, self.shape, self.dtype = path, name, shape, dtype
        self.ndim = len(shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return np.asarray(f[self.name][index])


class _FITSReader:
    """``reader[index]`` reads a slice of one FITS image HDU (scaled by BSCALE/BZERO)."""

    def __init__(self, path: str, hdu: int, shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.hdu, self.shape, self.dtype = path, hdu, shape, dtype
        self.ndim = len(shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        from astropy.io import fits

        with fits.open(self.path, memmap=True) as hdus:
            return np.array(hdus[self.hdu].data[index], dtype=self.dtype)


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value
    return value.item() if isinstance(value, np.generic) else value


def open_hdf5(path: Path, variables: Sequence[str], spatial: Sequence[str],
              sample: Sequence[str]) -> xr.Dataset:
    """The field ``variables`` (dataset names, in any group) of an HDF5 file, lazily."""
    import h5py

    data_vars, coords, attrs = {}, {}, {}
    with h5py.File(path, "r") as f:
        attrs.update({str(k): _plain(v) for k, v in f.attrs.items()})

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Group):
                attrs.update({f"{name}/{k}": _plain(v) for k, v in obj.attrs.items()})

        f.visititems(visit)
        datasets: list[str] = []
        f.visititems(lambda name, obj: datasets.append(name)
                     if isinstance(obj, h5py.Dataset) else None)
        for var in variables:
            found = [d for d in datasets if d == var or d.endswith("/" + var)]
            if len(found) != 1:
                continue  # missing (or ambiguous): reported by ingest as a missing variable
            dset = f[found[0]]
            dims = _dims(var, dset.ndim, spatial, sample)
            var_attrs = {str(k): _plain(v) for k, v in dset.attrs.items()}
            for alias in ("unit", "Units", "UNITS"):
                if "units" not in var_attrs and alias in var_attrs:
                    var_attrs["units"] = var_attrs[alias]
            reader = _HDF5Reader(str(path), found[0], tuple(dset.shape), dset.dtype)
            data_vars[var] = (dims, da.from_array(reader, chunks="auto", asarray=False), var_attrs)
            group = found[0].rsplit("/", 1)[0] + "/" if "/" in found[0] else ""
            for dim, size in zip(dims, dset.shape):
                cname = group + dim
                if dim in spatial and cname in f and isinstance(f[cname], h5py.Dataset) \
                        and f[cname].shape == (size,):
                    coords[dim] = (dim, np.asarray(f[cname][()]),
                                   {str(k): _plain(v) for k, v in f[cname].attrs.items()})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _fits_attrs(header: Any) -> dict[str, Any]:
    out = {}
    for card in header.cards:
        key = str(card.keyword)
        if not key or _STRUCTURAL.match(key):
            continue
        out[key] = _plain(card.value)
        match = _BRACKET_UNITS.match(str(card.comment or ""))
        if match:
            out[f"{key}_units"] = match.group(1).strip() or "1"
    return out


def open_fits(path: Path, variables: Sequence[str], spatial: Sequence[str],
              sample: Sequence[str]) -> xr.Dataset:
    """The image HDUs named ``variables`` (``EXTNAME``, or ``PRIMARY``) of a FITS file."""
    from astropy.io import fits

    data_vars, coords = {}, {}
    with fits.open(path, memmap=True) as hdus:
        attrs = _fits_attrs(hdus[0].header)
        names = {str(h.name).upper(): i for i, h in enumerate(hdus)}
        for var in variables:
            index = names.get(var.upper())
            if index is None or hdus[index].header.get("NAXIS", 0) == 0:
                continue
            header = hdus[index].header
            ndim = int(header["NAXIS"])
            shape = tuple(int(header[f"NAXIS{ndim - i}"]) for i in range(ndim))
            scaled = "BSCALE" in header or "BZERO" in header or header["BITPIX"] < 0
            dtype = np.dtype(np.float64 if header["BITPIX"] == -64 else
                             np.float32 if scaled else hdus[index].data.dtype)
            dims = _dims(var, ndim, spatial, sample)
            var_attrs = {"units": str(header["BUNIT"])} if "BUNIT" in header else {}
            if index:
                attrs.update(_fits_attrs(header))
            reader = _FITSReader(str(path), index, shape, dtype)
            data_vars[var] = (dims, da.from_array(reader, chunks="auto", asarray=False), var_attrs)
            for axis, dim in enumerate(reversed(dims), start=1):  # FITS axis 1 is the last
                ctype = str(header.get(f"CTYPE{axis}", ""))
                if dim in spatial and f"CDELT{axis}" in header and "-" not in ctype:
                    n = shape[ndim - axis]
                    values = header.get(f"CRVAL{axis}", 0.0) + (
                        np.arange(n) + 1 - header.get(f"CRPIX{axis}", 1.0)) * header[f"CDELT{axis}"]
                    coords[dim] = (dim, values, {"units": str(header.get(f"CUNIT{axis}", "1")),
                                                 "long_name": ctype or dim})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
