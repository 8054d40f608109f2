"""Run a sweep plan: one task per chunk (Dask, or in-process), manifest, consolidation.

:func:`run_sweep` is the execute half of plan-then-execute: it fingerprints the plan with the
checkpoint, skips the chunks the manifest records as complete (``resume``), submits the others
(``resources={"GPU": 1}`` when asked, retries), records each finished part as it arrives, and
consolidates the parts into one labeled file. Without a client the chunks run one after the
other in this process (the baseline of the scaling benchmark).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from rho_workflow.atomic import file_sha256, fingerprint, load_npy_checked
from rho_workflow.training.checkpoint import load_checkpoint
from rho_workflow.workflow.manifest import Manifest
from rho_workflow.workflow.output import write_sweep_output
from rho_workflow.workflow.sweep import SweepPlan
from rho_workflow.workflow.tasks import chunk_work, sample_chunk

__all__ = ["run_sweep", "sweep_fingerprint", "checkpoint_labels"]

logger = logging.getLogger("rho_workflow")


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
              units: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Sample every chunk of ``plan`` and consolidate into ``output`` (fields in ``units``
    where given, else the training units); return a summary.

    Returns
    -------
    dict
        ``output``, ``n_samples``, ``chunks_run``, ``chunks_skipped``, ``seconds`` (sampling),
        ``samples_per_second``, ``consolidate_seconds``, ``workers`` (addresses used).
    """
    checkpoint = str(Path(checkpoint).resolve())
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(checkpoint)
    metadata, field_shape = checkpoint_labels(checkpoint)
    fingerprint = sweep_fingerprint(plan, sha, dtype)
    manifest = Manifest.open(parts_dir / "manifest.json", fingerprint, len(plan.chunks),
                             resume=resume, info={"checkpoint": checkpoint, "checkpoint_sha256": sha,
                                                  "n_samples": plan.n_samples})
    todo, done = manifest.pending([c.index for c in plan.chunks])
    if done:
        logger.info("resume: %d of %d chunks already finished, %d to run", len(done),
                    len(plan.chunks), len(todo))
    options = {"sampler": plan.sampler, "steps": plan.steps, "guidance": plan.guidance,
               "allow_extrapolation": plan.allow_extrapolation}
    if plan.conditioning is not None:  # every sample conditioned on the observations (read on the worker)
        c = plan.conditioning
        options.update(observe={"path": c["observations"], "variable": c["variable"], "sha256": c["sha256"]},
                       cg_iters=c["cg_iters"])
    device = "auto" if gpu else "cpu"
    kwargs = dict(checkpoint=checkpoint, checkpoint_sha256=sha, options=options, dtype=dtype,
                  threads=threads, device=device)
    bar = _bar(len(plan.chunks), len(done), progress)
    t0 = time.perf_counter()
    workers: set[str] = set()
    chunks = {c.index: c for c in plan.chunks}
    for result in _run_chunks(plan, todo, parts_dir, client, kwargs, key=fingerprint[:10],
                              retries=retries, gpu=gpu):
        manifest.record(result["index"], result)
        workers.add(result["worker"])
        bar.update(1)
    seconds = time.perf_counter() - t0
    bar.close()
    n_run = sum(chunks[i].size for i in todo)
    t1 = time.perf_counter()
    sample_shape = tuple(field_shape)
    write_sweep_output(output, plan, metadata, _read_parts(plan, manifest, sample_shape, dtype),
                       attrs=dict(attrs or {}), fmt=fmt, complevel=complevel, dtype=dtype,
                       param_attrs=param_attrs, units=units)
    consolidate_seconds = time.perf_counter() - t1
    if not keep_parts:
        shutil.rmtree(parts_dir, ignore_errors=True)
    return {"output": str(output), "n_samples": plan.n_samples, "chunks": len(plan.chunks),
            "chunks_run": len(todo), "chunks_skipped": len(done), "seconds": seconds,
            "samples_per_second": n_run / seconds if seconds > 0 and n_run else 0.0,
            "consolidate_seconds": consolidate_seconds, "workers": sorted(workers),
            "checkpoint_sha256": sha, "fingerprint": fingerprint}


def _run_chunks(plan: SweepPlan, todo: list[int], parts_dir: Path, client: Any,
                kwargs: Mapping[str, Any], *, key: str, retries: int,
                gpu: bool) -> Iterator[dict[str, Any]]:
    """The result of each chunk in ``todo`` as it finishes: one Dask task per chunk on
    ``client`` (retried ``retries`` times), or one after the other in this process."""
    chunks = {c.index: c for c in plan.chunks}
    if client is None:
        for i in todo:
            part = parts_dir / f"chunk-{i:06d}.npy"
            yield sample_chunk(chunk_work(plan, chunks[i]), part_path=str(part), **kwargs)
        return
    from distributed import as_completed

    futures = [client.submit(sample_chunk, chunk_work(plan, chunks[i]),
                             part_path=str(parts_dir / f"chunk-{i:06d}.npy"), **kwargs,
                             key=f"sample-chunk-{key}-{i:06d}", pure=False,
                             retries=retries, resources={"GPU": 1} if gpu else None)
               for i in todo]
    for future in as_completed(futures):
        yield future.result()
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
