"""Zarr sweeps written by region: every chunk task writes its samples into the final store.

With ``output.format: zarr`` no data passes through the driver. The sweep runs in four steps:

1. **Create** (driver, before the tasks): :func:`create_region_store` writes the store's
   metadata, coordinates and attributes -- no field data -- into a folder beside the
   sweep's manifest, atomically (a store is either absent or fully described).
2. **Write** (tasks, in parallel): :meth:`RegionStore.write` writes the samples ``start ..
   stop - 1`` of one chunk and returns the SHA-256 of the values written, which the driver
   appends to the manifest's journal. Regions are chunk-aligned (:func:`chunk_shape`), so
   no two tasks ever write the same zarr chunk and no lock is needed; every zarr chunk is
   written whole, by an atomic rename (zarr's local store), so a worker killed mid-write
   leaves whole old or whole new chunks, in a region the manifest does not record as done.
3. **Resume**: a region recorded done is handed to its task with its hash, and the task
   (not the driver) reads it back and compares (:meth:`RegionStore.sha256`); a region whose
   values differ, and every region never recorded, is sampled and written again.
4. **Finish** (driver, after the tasks): :func:`seal_region_store` sets the final
   attributes and writes the consolidated metadata; the store is then moved into place (a
   rename).

The driver's work is therefore the metadata (a few files, whatever the sweep's size) plus one
journal line per chunk; it never reads the fields. The values are those a netCDF
consolidation writes, bit for bit (the same unit conversion in the same dtype), and so are
the labels and CF attributes (:func:`rho_workflow.workflow.output.sweep_template`).
``output.netcdf_copy`` adds a netCDF file consolidated from the finished store
(:func:`netcdf_copy`), a serial read of the whole sweep made only on request.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from rho_workflow.atomic import atomic_dir
from rho_workflow.errors import RhoWorkflowError
from rho_workflow.workflow.sweep import SweepPlan

__all__ = ["RegionStore", "chunk_shape", "create_region_store", "open_region_store",
           "open_finished_store", "seal_region_store", "RegionStoreError", "netcdf_copy", "region_store_digest", "regions_sha256",
           "REGIONS_ATTR", "FINGERPRINT_ATTR"]

logger = logging.getLogger("rho_workflow")

#: Bytes of field data a zarr chunk aims at (at most; at least one field): large enough that
#: a sweep of small fields is not millions of tiny files, small enough to read one chunk.
TARGET_CHUNK_BYTES = 1 << 20
#: Root attribute of a finished region-written store: SHA-256 of its regions' hashes.
REGIONS_ATTR = "rho_regions_sha256"
#: Root attribute: the fingerprint of the sweep (plan, checkpoint, dtype, output units) the
#: store was created for; a resumed sweep reuses only a store made for it.
FINGERPRINT_ATTR = "rho_sweep_fingerprint"


class RegionStoreError(RhoWorkflowError, RuntimeError):
    """A zarr sweep store is not what the sweep needs (missing, or not written by region)."""


def chunk_shape(plan: SweepPlan, field_bytes: int) -> tuple[int, int]:
    """``(points, members)`` of a zarr chunk along the last two sample dims (the last
    parameter, or the table's cases, and ``member``); 1 along the others, whole fields.

    A task writes samples ``j * chunk_size .. (j + 1) * chunk_size - 1`` (C order: sample
    ``i`` is member ``i % members`` of point ``i // members``). A chunk of ``m`` members of
    one point, or of ``p`` points along the last axis with all their members, holds
    ``b = m`` or ``b = p * members`` consecutive samples; every task boundary falls on a chunk
    boundary exactly when ``b`` divides ``chunk_size`` (and ``m`` the members, ``p`` the
    axis), so that no two tasks share a chunk. Of those, the largest with ``b * field_bytes
    <= TARGET_CHUNK_BYTES`` (one field at least).
    """
    members, size = int(plan.members), int(plan.chunk_size)
    last = int(plan.shape[-2])
    candidates = [(1, m) for m in range(1, members + 1) if members % m == 0 and size % m == 0]
    if size % members == 0:
        candidates += [(p, members) for p in range(2, last + 1)
                       if last % p == 0 and size % (p * members) == 0]
    fitting = [c for c in candidates if c[0] * c[1] * field_bytes <= TARGET_CHUNK_BYTES]
    return max(fitting or [(1, 1)], key=lambda c: c[0] * c[1])


@dataclass(frozen=True)
class RegionStore:
    """Where and how a chunk task writes its region (plain data, shipped to the workers).

    ``variables`` are the field variables in channel order, ``conversions`` their
    ``(a, b)`` with ``output = a * value + b`` (``output.units``), ``sample_shape`` the
    sweep's sample dims (``plan.shape``), ``dtype`` the stored dtype.
    """

    path: str
    variables: tuple[str, ...]
    sample_shape: tuple[int, ...]
    conversions: tuple[tuple[float, float], ...]
    dtype: str

    def _arrays(self, mode: str) -> list[Any]:
        import zarr

        group = zarr.open_group(self.path, mode=mode, use_consolidated=False)
        return [group[name] for name in self.variables]

    def _blocks(self, start: int, stop: int) -> Iterator[tuple[tuple[slice, ...], int, int]]:
        from rho_workflow.workflow.output import flat_range_boxes

        yield from flat_range_boxes(start, stop, self.sample_shape)

    def converted(self, c: int, values: np.ndarray) -> np.ndarray:
        """``values`` of channel ``c`` in the output units and dtype (the arithmetic of the
        netCDF consolidation, so that both give the same bits)."""
        a, b = self.conversions[c]
        out = values if (a, b) == (1.0, 0.0) else values * a + b
        return np.ascontiguousarray(out, dtype=self.dtype)

    def write(self, start: int, stop: int, samples: np.ndarray) -> dict[str, Any]:
        """Write samples ``start .. stop - 1`` (``(n, C, *spatial)``, training units) into
        their region; return ``{"bytes", "sha256"}`` of the values written."""
        samples = np.asarray(samples)
        arrays = self._arrays("r+")
        spatial = samples.shape[2:]
        h, nbytes = hashlib.sha256(), 0
        for box, a, b in self._blocks(start, stop):
            block_shape = tuple(s.stop - s.start for s in box) + spatial
            full_box = (*box, *(slice(None),) * len(spatial))
            for c, array in enumerate(arrays):
                block = self.converted(c, samples[a - start:b - start, c].reshape(block_shape))
                array[full_box] = block
                h.update(block.tobytes())
                nbytes += block.nbytes
        return {"bytes": nbytes, "sha256": h.hexdigest()}

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``start .. stop - 1`` as stored (output units), ``(n, C, *spatial)``."""
        arrays = self._arrays("r")
        spatial = tuple(arrays[0].shape[len(self.sample_shape):])
        out = np.empty((stop - start, len(arrays), *spatial), dtype=self.dtype)
        for box, a, b in self._blocks(start, stop):
            full_box = (*box, *(slice(None),) * len(spatial))
            for c, array in enumerate(arrays):
                out[a - start:b - start, c] = np.asarray(array[full_box]).reshape(b - a, *spatial)
        return out

    def sha256(self, start: int, stop: int) -> str | None:
        """SHA-256 of the stored values of samples ``start .. stop - 1``, in the order
        :meth:`write` hashes them; None when the store or a chunk cannot be read."""
        try:
            arrays = self._arrays("r")
            h = hashlib.sha256()
            for box, _, _ in self._blocks(start, stop):
                full_box = (*box, *(slice(None),) * (arrays[0].ndim - len(box)))
                for array in arrays:
                    h.update(np.ascontiguousarray(array[full_box], dtype=self.dtype).tobytes())
        except Exception:  # a missing, truncated or undecodable chunk: the region is rewritten
            return None
        return h.hexdigest()

    def read_parts(self, plan: SweepPlan) -> Iterator[tuple[int, int, np.ndarray]]:
        """The sweep's chunks, one at a time, as stored (for a consolidation of the store)."""
        for chunk in plan.chunks:
            yield chunk.start, chunk.stop, self.read(chunk.start, chunk.stop)


def _region_store(path: Path, plan: SweepPlan, metadata: Mapping[str, Any],
                  units: Mapping[str, str] | None, dtype: str) -> RegionStore:
    from rho_workflow.workflow.output import output_conversions

    conversions = output_conversions(metadata, units)
    names = tuple(f["name"] for f in metadata["fields"])
    return RegionStore(str(path), names, tuple(int(s) for s in plan.shape),
                       tuple(tuple(map(float, conversions.get(n, (1.0, 0.0)))) for n in names),
                       dtype)


def _compressors(complevel: int) -> tuple[Any, ...] | None:
    """The zarr compressors of ``output.complevel``: Blosc zstd at that level with byte
    shuffle (floats compress as with netCDF's zlib + shuffle), none at 0."""
    from zarr.codecs import BloscCodec, BloscShuffle

    if int(complevel) == 0:  # output.complevel is validated 0-9 by the config
        return None
    return (BloscCodec(cname="zstd", clevel=int(complevel), shuffle=BloscShuffle.shuffle),)


def create_region_store(path: str | os.PathLike, plan: SweepPlan, metadata: Mapping[str, Any], *,
                        attrs: Mapping[str, Any], dtype: str = "float32",
                        param_attrs: Mapping[str, Mapping[str, Any]] | None = None,
                        units: Mapping[str, str] | None = None,
                        fingerprint: str | None = None, complevel: int = 4) -> RegionStore:
    """Write the metadata, coordinates and attributes of a sweep's zarr store (no field
    data: unwritten chunks read as NaN), atomically; return the :class:`RegionStore`.

    Field arrays are chunked ``(1, ..., 1, points, members, *spatial)`` (:func:`chunk_shape`). ``fingerprint`` is
    kept in the store's attributes (:data:`FINGERPRINT_ATTR`), so that a resumed sweep
    reuses only a store made for it. ``complevel`` (``output.complevel``, 0-9) is the zstd
    level of a Blosc compressor with byte shuffle (as netCDF's zlib with shuffle); 0: none.
    """
    import dask.array as da
    import xarray as xr

    from rho_workflow.workflow.output import _dims, _field_attrs, sweep_template

    path = Path(path)
    template = sweep_template(plan, metadata, attrs, param_attrs)
    dims = _dims(plan, metadata)
    spatial_shape = tuple(len(template[d]) for d in metadata["spatial"]["dims"])
    full_shape = (*plan.shape, *spatial_shape)
    field_bytes = math.prod(spatial_shape) * np.dtype(dtype).itemsize
    points, members = chunk_shape(plan, field_bytes)
    chunks = (*([1] * (len(plan.shape) - 2)), points, members, *spatial_shape)
    n_chunks = plan.n_samples // (points * members)
    if n_chunks > 10_000 and points * members * field_bytes < (64 << 10):  # many tiny files
        logger.warning("zarr sweep: a chunk of the store holds %d field(s) (%d kB): task "
                       "boundaries must fall on chunk boundaries, and sampling.chunk_size (%d) "
                       "and members (%d) allow no more; a chunk_size that is a multiple of "
                       "members gives larger chunks", points * members,
                       points * members * field_bytes // 1000, plan.chunk_size, plan.members)
    ds = template.copy()
    if fingerprint is not None:
        ds.attrs[FINGERPRINT_ATTR] = fingerprint
    encoding = {}
    for f in metadata["fields"]:
        # one lazy block, never computed: the graph does not grow with the store's chunks
        data = da.full(full_shape, np.nan, dtype=dtype, chunks=full_shape)
        ds[f["name"]] = xr.Variable(dims, data, _field_attrs(f, (units or {}).get(f["name"])))
        encoding[f["name"]] = {"chunks": chunks, "compressors": _compressors(complevel)}
    with atomic_dir(path) as tmp:
        ds.to_zarr(tmp, mode="w", compute=False, consolidated=False, encoding=encoding)
    return _region_store(path, plan, metadata, units, dtype)


def open_region_store(path: str | os.PathLike, plan: SweepPlan, metadata: Mapping[str, Any], *,
                      fingerprint: str, dtype: str = "float32",
                      units: Mapping[str, str] | None = None) -> RegionStore | None:
    """The store at ``path`` if it was created for ``fingerprint`` (an interrupted sweep's),
    else None."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r", use_consolidated=False)
        made_for = group.attrs.get(FINGERPRINT_ATTR)
    except Exception:  # absent or damaged: made again
        return None
    if made_for != fingerprint:
        return None
    return _region_store(Path(path), plan, metadata, units, dtype)


def open_finished_store(path: str | os.PathLike, plan: SweepPlan, metadata: Mapping[str, Any], *,
                        dtype: str = "float32",
                        units: Mapping[str, str] | None = None) -> RegionStore:
    """The finished (sealed) region store at ``path``, to read back.

    Raises
    ------
    RegionStoreError
        ``path`` is no finished sweep store (absent, or written otherwise).
    """
    if region_store_digest(path) is None:
        raise RegionStoreError(what="no finished zarr sweep written by region", where=str(path),
                               fix="run the sample stage (output.format: zarr) first")
    return _region_store(Path(path), plan, metadata, units, dtype)


def regions_sha256(hashes: Mapping[int, str]) -> str:
    """SHA-256 of the regions' hashes in chunk order (the store's record of its values)."""
    text = "\n".join(f"{int(i)} {hashes[i]}" for i in sorted(hashes))
    return hashlib.sha256(text.encode()).hexdigest()


def seal_region_store(store: RegionStore, attrs: Mapping[str, Any],
                      hashes: Mapping[int, str]) -> None:
    """Set the final global ``attrs`` (with :data:`REGIONS_ATTR` from the regions' ``hashes``
    and the sweep's fingerprint) and write the consolidated metadata. Touches metadata files
    only: the cost does not grow with the sweep. Then move the store into place
    (:func:`rho_workflow.atomic.move_dir_into_place`, a rename)."""
    import zarr

    group = zarr.open_group(store.path, mode="r+", use_consolidated=False)
    kept = {k: group.attrs[k] for k in (FINGERPRINT_ATTR,) if k in group.attrs}
    group.attrs.put({**dict(attrs), **kept, REGIONS_ATTR: regions_sha256(hashes)})
    with warnings.catch_warnings():  # zarr 3: consolidated metadata is not in the v3 spec yet
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store.path)


def region_store_digest(path: str | os.PathLike) -> str | None:
    """SHA-256 of a finished region-written store's metadata documents (``zarr.json`` of the
    root, with the consolidated metadata and :data:`REGIONS_ATTR`, and of every array) and of
    the name and size of every chunk file, or None when ``path`` is no such store.

    Reads no field data (one ``stat`` per chunk file): the run record vouches for the values
    through the regions' hashes the tasks recorded, and a chunk file since deleted, truncated
    or half-copied changes the digest. A copy of the store (new times) keeps it."""
    path = Path(path)
    root = path / "zarr.json"
    try:
        text = root.read_bytes()
        if REGIONS_ATTR not in json.loads(text).get("attributes", {}):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    h = hashlib.sha256(b"zarr.json\0" + hashlib.sha256(text).hexdigest().encode() + b"\n")
    for meta in sorted(path.glob("*/zarr.json")):
        rel = meta.relative_to(path).as_posix()
        h.update(f"{rel}\0{hashlib.sha256(meta.read_bytes()).hexdigest()}\n".encode())
        chunks = meta.parent / "c"
        if chunks.is_dir():
            for name, size in sorted((f.relative_to(path).as_posix(), f.stat().st_size)
                                     for f in chunks.rglob("*") if f.is_file()):
                h.update(f"{name}\0{size}\n".encode())
    return h.hexdigest()


def netcdf_copy(store: RegionStore, path: str | os.PathLike, plan: SweepPlan,
                metadata: Mapping[str, Any], *, attrs: Mapping[str, Any], complevel: int = 4,
                param_attrs: Mapping[str, Mapping[str, Any]] | None = None,
                units: Mapping[str, str] | None = None) -> Path:
    """Consolidate a finished region store into one CF netCDF file at ``path`` -- the file
    ``output.format: netcdf`` writes, value for value -- reading one chunk at a time."""
    from rho_workflow.workflow.output import write_sweep_output

    return write_sweep_output(path, plan, metadata, store.read_parts(plan), attrs=attrs,
                              fmt="netcdf", complevel=complevel, dtype=store.dtype,
                              param_attrs=param_attrs, units=units, converted=True)
