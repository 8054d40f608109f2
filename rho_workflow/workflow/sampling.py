"""Run a sweep plan: one task per chunk (Dask, or in-process), manifest, output.

:func:`run_sweep` is the execute half of plan-then-execute: it fingerprints the plan with the
checkpoint, skips the chunks the manifest records as complete (``resume``), submits the others
(``resources={"GPU": 1}`` when asked, retries), records each finished chunk as it arrives
(one journal line per batch of results, :mod:`rho_workflow.workflow.manifest`), and writes the
output. Without a client the chunks run one after the other in this process (the baseline
of the scaling benchmark).

* ``fmt="netcdf"``: each task writes a part (``.npy``); the driver then consolidates the
  parts into one labeled file, one part in memory at a time -- a serial step that reads and
  writes the whole sweep once more.
* ``fmt="zarr"``: each task writes its region of the final store itself
  (:mod:`rho_workflow.workflow.regions`); the driver writes the store's metadata before and
  its consolidated metadata after, and never reads the fields. ``netcdf_copy`` adds a netCDF
  file consolidated from the finished store.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from rho_workflow.atomic import file_sha256, fingerprint, load_npy_checked, move_dir_into_place
from rho_workflow.training.checkpoint import load_checkpoint
from rho_workflow.workflow.manifest import Manifest
from rho_workflow.workflow.output import write_sweep_output
from rho_workflow.workflow.sweep import SweepPlan
from rho_workflow.workflow.tasks import chunk_work, sample_chunk

__all__ = ["run_sweep", "sweep_fingerprint", "checkpoint_labels", "FORMATS"]

logger = logging.getLogger("rho_workflow")

#: Output formats of a sweep (``output.format``).
FORMATS = ("netcdf", "zarr")


def sweep_fingerprint(plan: SweepPlan, checkpoint_sha256: str, dtype: str) -> str:
    """What a finished part depends on: the plan, the checkpoint and the stored dtype."""
    return fingerprint({"plan": plan.to_dict(), "checkpoint": checkpoint_sha256, "dtype": dtype})


def checkpoint_labels(checkpoint: str | Path) -> tuple[dict[str, Any], list[int]]:
    """The output labels (``metadata``) and ``field_shape`` recorded in a checkpoint."""
    from rho_workflow.data.labels import default_labels

    config = load_checkpoint(checkpoint)["config"]
    metadata = dict(config.get("metadata") or {})
    if "fields" not in metadata or "spatial" not in metadata:
        metadata = {**default_labels(config["field_shape"]), **metadata}
    return metadata, list(config["field_shape"])


def run_sweep(plan: SweepPlan, checkpoint: str | Path, output: str | Path, parts_dir: str | Path,
              *, client: Any = None, resume: bool = False, fmt: str = "netcdf",
              complevel: int = 4, dtype: str = "float32", gpu: bool = False,
              threads: int = 1, retries: int = 2, attrs: Mapping[str, Any] | None = None,
              param_attrs: Mapping[str, Mapping[str, Any]] | None = None,
              keep_parts: bool = False, progress: bool = True,
              units: Mapping[str, str] | None = None,
              netcdf_copy: str | Path | None = None) -> dict[str, Any]:
    """Sample every chunk of ``plan`` into ``output`` (fields in ``units`` where given, else
    the training units); return a summary.

    ``fmt`` is ``netcdf`` (parts consolidated by this process) or ``zarr`` (regions written
    by the tasks; ``netcdf_copy``: also consolidate the store into this netCDF file). An
    interrupted zarr sweep's store lives in ``parts_dir`` until it is complete.

    Returns
    -------
    dict
        ``output``, ``n_samples``, ``chunks_run``, ``chunks_skipped``, ``seconds`` (sampling),
        ``samples_per_second``, ``prepare_seconds`` (zarr: the store's metadata, before the
        tasks), ``consolidate_seconds`` (this process's work on the output after the tasks),
        ``record_seconds`` (this process's time recording finished chunks),
        ``task_seconds`` and ``write_seconds`` (summed over the tasks run: all, and writing
        their part or region), ``workers`` (addresses used), ``netcdf_copy`` and
        ``netcdf_copy_seconds`` when asked.
    """
    if fmt not in FORMATS:
        raise ValueError(f"output.format {fmt!r} is not one of {list(FORMATS)}")
    checkpoint = str(Path(checkpoint).resolve())
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(checkpoint)
    metadata, field_shape = checkpoint_labels(checkpoint)
    fp = sweep_fingerprint(plan, sha, dtype)
    if fmt == "zarr":  # a region holds output units: other units are another sweep
        fp = fingerprint({"parts": fp, "format": "zarr", "units": dict(units or {})})
    manifest = Manifest.open(parts_dir / "manifest.json", fp, len(plan.chunks), resume=resume,
                             info={"checkpoint": checkpoint, "checkpoint_sha256": sha,
                                   "n_samples": plan.n_samples, "format": fmt})
    options = {"sampler": plan.sampler, "steps": plan.steps, "guidance": plan.guidance,
               "allow_extrapolation": plan.allow_extrapolation, "spacing": plan.spacing}
    if plan.conditioning is not None:  # every sample conditioned on the observations (read on the worker)
        c = plan.conditioning
        options.update(observe={"path": c["observations"], "variable": c["variable"], "sha256": c["sha256"]},
                       cg_iters=c["cg_iters"])
    device = "auto" if gpu else "cpu"
    kwargs = dict(checkpoint=checkpoint, checkpoint_sha256=sha, options=options, dtype=dtype,
                  threads=threads, device=device)
    t0 = time.perf_counter()
    store = None
    if fmt == "zarr":
        store = _region_store(plan, metadata, parts_dir / Path(output).name, manifest, attrs,
                              param_attrs, units, dtype, resume, complevel)
        recorded = {i: e["sha256"] for i, e in manifest.chunks.items() if e.get("region")}
        todo, done = [c.index for c in plan.chunks], []
        target = lambda i: {"region": store, "verify": recorded.get(i)}  # noqa: E731
        if recorded:
            logger.info("resume: %d of %d regions recorded; their tasks check them, the others "
                        "are sampled", len(recorded), len(plan.chunks))
    else:
        todo, done = manifest.pending([c.index for c in plan.chunks])
        target = lambda i: {"part_path": str(parts_dir / f"chunk-{i:06d}.npy")}  # noqa: E731
        if done:
            logger.info("resume: %d of %d chunks already finished, %d to run", len(done),
                        len(plan.chunks), len(todo))
    prepare_seconds = time.perf_counter() - t0
    bar = _bar(len(plan.chunks), len(done), progress)
    t0 = time.perf_counter()
    workers: set[str] = set()
    ran: list[int] = []
    record_seconds = task_seconds = write_seconds = 0.0
    for results in _run_chunks(plan, todo, client, kwargs, target, key=fp[:10],
                               retries=retries, gpu=gpu):
        t_record = time.perf_counter()
        finished = {r["index"]: r for r in results if not r.get("verified")}
        manifest.record_many(finished)
        ran.extend(finished)
        task_seconds += sum(r["seconds"] for r in finished.values())
        write_seconds += sum(r.get("write_seconds", 0.0) for r in finished.values())
        done.extend(r["index"] for r in results if r.get("verified"))
        workers.update(r["worker"] for r in results)
        bar.update(len(results))
        record_seconds += time.perf_counter() - t_record
    seconds = time.perf_counter() - t0
    bar.close()
    chunks = {c.index: c for c in plan.chunks}
    n_run = sum(chunks[i].size for i in ran)
    t1 = time.perf_counter()
    summary: dict[str, Any] = {}
    if store is not None:
        summary.update(_finish_regions(store, plan, metadata, manifest, output, attrs, param_attrs,
                                       units, complevel, netcdf_copy))
    else:
        manifest.save()  # every record in manifest.json, the journal folded in
        sample_shape = tuple(field_shape)
        write_sweep_output(output, plan, metadata, _read_parts(plan, manifest, sample_shape, dtype),
                           attrs=dict(attrs or {}), fmt=fmt, complevel=complevel, dtype=dtype,
                           param_attrs=param_attrs, units=units)
    consolidate_seconds = time.perf_counter() - t1 - summary.get("netcdf_copy_seconds", 0.0)
    if not keep_parts:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return {"output": str(output), "format": fmt, "n_samples": plan.n_samples,
            "chunks": len(plan.chunks), "chunks_run": len(ran), "chunks_skipped": len(done),
            "seconds": seconds, "samples_per_second": n_run / seconds if seconds > 0 and n_run else 0.0,
            "prepare_seconds": prepare_seconds, "consolidate_seconds": consolidate_seconds,
            "record_seconds": record_seconds, "task_seconds": task_seconds,
            "write_seconds": write_seconds, "workers": sorted(workers),
            "checkpoint_sha256": sha, "fingerprint": fp, **summary}


def _region_store(plan: SweepPlan, metadata: Mapping[str, Any], path: Path, manifest: Manifest,
                  attrs: Mapping[str, Any] | None, param_attrs: Any, units: Any, dtype: str,
                  resume: bool, complevel: int = 4) -> Any:
    """The interrupted sweep's store at ``path`` when resuming and it was made for this
    sweep; else a new one (and the manifest's records dropped: their regions are gone)."""
    from rho_workflow.workflow.regions import create_region_store, open_region_store

    store = None
    if resume and manifest.chunks:
        store = open_region_store(path, plan, metadata, fingerprint=manifest.fingerprint,
                                  dtype=dtype, units=units)
        if store is None:
            logger.warning("resume: the interrupted sweep's store %s is missing or was made for "
                           "another sweep; every region is sampled again", path)
    if store is None:
        if manifest.chunks:
            manifest.chunks.clear()
            manifest.save()
        store = create_region_store(path, plan, metadata, attrs=dict(attrs or {}), dtype=dtype,
                                    param_attrs=param_attrs, units=units,
                                    fingerprint=manifest.fingerprint, complevel=complevel)
    return store


def _finish_regions(store: Any, plan: SweepPlan, metadata: Mapping[str, Any], manifest: Manifest,
                    output: str | Path, attrs: Mapping[str, Any] | None, param_attrs: Any,
                    units: Any, complevel: int, copy: str | Path | None) -> dict[str, Any]:
    """Seal the finished store (attributes, consolidated metadata), write the netCDF copy if
    asked (from the sealed store, before it moves: an interruption keeps it resumable), and
    move the store to ``output``."""
    from rho_workflow.workflow.regions import netcdf_copy, seal_region_store

    missing = [c.index for c in plan.chunks if c.index not in manifest.chunks]
    if missing:  # every task reported, so this is a bug, not a user error
        raise RuntimeError(f"regions {missing[:5]} of the zarr sweep were never recorded")
    hashes = {i: manifest.chunks[i]["sha256"] for i in sorted(manifest.chunks)}
    seal_region_store(store, dict(attrs or {}), hashes)
    out: dict[str, Any] = {}
    if copy is not None:
        t0 = time.perf_counter()
        netcdf_copy(store, copy, plan, metadata, attrs=dict(attrs or {}), complevel=complevel,
                    param_attrs=param_attrs, units=units)
        out.update(netcdf_copy=str(copy), netcdf_copy_seconds=time.perf_counter() - t0)
    move_dir_into_place(store.path, output)
    return out


def _run_chunks(plan: SweepPlan, todo: list[int], client: Any, kwargs: Mapping[str, Any],
                target: Callable[[int], Mapping[str, Any]], *, key: str, retries: int,
                gpu: bool) -> Iterator[list[dict[str, Any]]]:
    """The results of the chunks in ``todo`` in batches as they finish (each batch: the
    results that arrived together): one Dask task per chunk on ``client`` (retried
    ``retries`` times), or one after the other in this process. ``target(i)``: where chunk
    ``i`` writes (its part, or its region)."""
    chunks = {c.index: c for c in plan.chunks}
    if client is None:
        for i in todo:
            yield [sample_chunk(chunk_work(plan, chunks[i]), **target(i), **kwargs)]
        return
    from distributed import as_completed

    futures = [client.submit(sample_chunk, chunk_work(plan, chunks[i]), **target(i), **kwargs,
                             key=f"sample-chunk-{key}-{i:06d}", pure=False,
                             retries=retries, resources={"GPU": 1} if gpu else None)
               for i in todo]
    for batch in as_completed(futures).batches():
        yield [future.result() for future in batch]
        for future in batch:
            future.release()


def _read_parts(plan: SweepPlan, manifest: Manifest, sample_shape: tuple[int, ...],
                dtype: str) -> Iterator[tuple[int, int, np.ndarray]]:
    """Parts in order, one at a time, each checked against the manifest (size, hash, shape)."""
    for chunk in plan.chunks:
        entry = manifest.chunks[chunk.index]
        array = load_npy_checked(manifest.part_path(chunk.index), (chunk.size, *sample_shape),
                                 sha256=entry["sha256"])
        if array is None:
            raise RuntimeError(f"part of chunk {chunk.index} ({manifest.part_path(chunk.index)}) "
                               "is missing or damaged; rerun with --resume to regenerate it")
        yield chunk.start, chunk.stop, array.astype(dtype, copy=False)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="sample", unit="chunk", mininterval=1.0)
