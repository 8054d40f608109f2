"""The functions that run inside Dask tasks (or in-process): train a model, sample a chunk.

They take plain data (paths, dicts, small arrays) and return plain dicts, so a task is cheap
to ship to a worker and to retry. A worker process loads a checkpoint once and reuses the
model for every chunk it samples (:func:`cached_model`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from rho_workflow.atomic import atomic_save_npy, file_sha256
from rho_workflow.data.labels import field_labels
from rho_workflow.errors import RunInterrupted

__all__ = ["cached_model", "sample_chunk", "log_likelihood_task", "TrainingSpec", "train_model", "set_torch_threads", "log_progress",
           "load_training_data", "build_model", "chunk_work", "chunk_samples", "store_labels"]

_MODELS: dict[tuple[str, str, str], Any] = {}


def set_torch_threads(threads: int | None) -> int:
    """Intra-op threads of torch in this process: ``threads``, or the Dask worker's thread
    count when None (1 outside a worker); returns the number set."""
    import torch

    if threads is None:
        worker = _current_worker()
        threads = worker.state.nthreads if worker is not None else 1
    threads = max(1, int(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


def _current_worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def log_progress(topic: str | None, message: Mapping[str, Any]) -> None:
    """Send a progress event to the client (``client.subscribe_topic``); no-op outside a
    worker or without a topic."""
    worker = _current_worker()
    if topic and worker is not None:
        worker.log_event(topic, dict(message))


def cached_model(checkpoint: str, sha256: str, device: str = "cpu") -> Any:
    """The model of ``checkpoint`` (identified by its SHA-256), loaded once per process."""
    from rho_workflow.training.model import TrainedModel

    key = (str(Path(checkpoint).resolve()), sha256, device)
    if key not in _MODELS:
        _MODELS.clear()  # one sweep at a time per worker: drop models of older checkpoints
        _MODELS[key] = TrainedModel.load(checkpoint, device=device)
    return _MODELS[key]


def chunk_work(plan: Any, chunk: Any) -> dict[str, Any]:
    """The plain data one chunk task needs: its parameter points (each once), the run seed,
    the members per point and its micro-batches.

    The per-sample points and seeds are expanded on the worker (:func:`chunk_samples`), so
    that what the driver does per task stays small (one point per ``members`` samples, no
    hashing) however large the chunk.
    """
    first, last = chunk.start // plan.members, (chunk.stop - 1) // plan.members
    return {"index": chunk.index, "start": chunk.start, "stop": chunk.stop,
            "first_point": first, "points": plan.points[first:last + 1],
            "members": plan.members, "seed": plan.seed,
            "batches": plan.micro_batches(chunk.start, chunk.stop)}


def chunk_samples(work: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[int]]:
    """The point and the seed of every sample of a chunk (:func:`chunk_work`): sample ``i`` is
    member ``i % members`` of point ``i // members``, seeded by ``derive_seed(seed, point,
    member)`` -- the values of :meth:`SweepPlan.points_of` and :meth:`SweepPlan.seeds_of`."""
    from rho_workflow.diffusion.random import derive_seed

    members, first = int(work["members"]), int(work["first_point"])
    points, seeds = [], []
    for i in range(int(work["start"]), int(work["stop"])):
        point = work["points"][i // members - first]
        points.append(point)
        seeds.append(derive_seed(int(work["seed"]), point, i % members))
    return points, seeds


def sample_chunk(work: Mapping[str, Any], *, checkpoint: str, checkpoint_sha256: str,
                 options: Mapping[str, Any], part_path: str | None = None, dtype: str = "float32",
                 threads: int | None = 1, device: str = "cpu",
                 progress_topic: str | None = None, region: Any = None,
                 verify: str | None = None) -> dict[str, Any]:
    """Sample one chunk in its fixed micro-batches; write its part atomically, or its region
    of the sweep's zarr store.

    Parameters
    ----------
    work : dict
        From :func:`chunk_work`.
    options : dict
        ``sampler``, ``steps``, ``guidance``, ``allow_extrapolation`` of ``sample_seeded``.
    device : str
        ``cpu``, ``cuda`` or ``auto`` (CUDA when this worker has it).
    part_path : str
        Where the part (``.npy`` of shape ``(n, C, *spatial)``, physical units) goes.
    region : RegionStore, optional
        Instead of a part, write the samples into this store
        (:mod:`rho_workflow.workflow.regions`).
    verify : str, optional
        With ``region``: the SHA-256 recorded for this region by an earlier run. When the
        stored values still hash to it nothing is sampled (``verified: True``); otherwise the
        region is sampled and written again.

    Returns
    -------
    dict
        ``index``, ``start``, ``stop``, ``path`` (file name; ``region: True`` instead for a
        region), ``bytes``, ``sha256``, ``seconds``, ``write_seconds``, ``worker``, and
        ``verified`` for a region found intact.
    """
    t0 = time.perf_counter()
    start, stop = int(work["start"]), int(work["stop"])
    worker = _current_worker()
    where = {"index": int(work["index"]), "start": start, "stop": stop,
             "worker": worker.address if worker is not None else f"pid:{os.getpid()}"}
    if region is not None and verify is not None and region.sha256(start, stop) == verify:
        log_progress(progress_topic, {"kind": "chunk", "index": where["index"], "n": stop - start})
        return {**where, "region": True, "verified": True, "sha256": verify,
                "seconds": time.perf_counter() - t0, "write_seconds": 0.0}
    set_torch_threads(threads)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = cached_model(checkpoint, checkpoint_sha256, device)
    out = np.empty((stop - start, *model.field_shape), dtype=dtype)
    points, seeds = chunk_samples(work)
    for a, b in work["batches"]:
        i, j = a - start, b - start
        out[i:j] = model.sample_seeded(points[i:j], seeds[i:j], batch_size=j - i, **dict(options))
    t1 = time.perf_counter()
    if region is not None:
        info = {"region": True, **region.write(start, stop, out)}
    elif part_path is not None:
        info = {"path": Path(part_path).name, **atomic_save_npy(part_path, out)}
    else:
        raise ValueError("sample_chunk needs part_path or region: where the samples go")
    result = {**where, **info, "seconds": time.perf_counter() - t0,
              "write_seconds": time.perf_counter() - t1}
    log_progress(progress_topic, {"kind": "chunk", "index": result["index"], "n": stop - start})
    return result


def log_likelihood_task(fields: np.ndarray, points: list[dict[str, Any]], *, checkpoint: str,
                        checkpoint_sha256: str, method: str = "ode", unit: str = "bits_per_dim",
                        threads: int | None = 1, device: str = "cpu") -> dict[str, Any]:
    """``log p(x | point)`` of physical ``fields`` (one point per field) under the model of
    ``checkpoint``, in ``unit``, with standard errors, network calls and wall time."""
    set_torch_threads(threads)
    model = cached_model(checkpoint, checkpoint_sha256, device)
    result = model.log_prob(np.asarray(fields), list(points), method=method, unit=unit, details=True)
    kl = result.kl_per_step
    return {"kl_steps": None if kl is None else np.asarray(result.parts[0].steps).tolist(),
            "kl_per_dim": None if kl is None else (kl / result.dim).tolist(),
            "schedule": model.schedule.name, "T": int(model.schedule.T),
            "values": np.asarray(result.values).tolist(),
            "stderr": None if result.stderr is None else np.asarray(result.stderr).tolist(),
            "method": result.method, "unit": result.unit, "dim": int(result.dim),
            "nfe_per_sample": int(result.nfe_per_sample), "wall_s": float(result.wall_s)}


def load_training_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """Normalized training fields and their labels.

    ``data`` is ``{"kind": "store", "path", "split", "validation"}`` (a training store written
    by the preprocess stage; ``validation`` true also reads its validation split) or
    ``{"kind": "arrays", "fields", "points", "param_space", "transform", "metadata", "mask",
    "validation"}`` (already normalized arrays, e.g. from the accessor).
    Returns ``fields`` ``(N, C, *spatial)`` float32, ``points``, ``param_space`` (dict form),
    ``transform`` (dict), ``mask`` (or None), ``metadata`` (output labels) and ``validation``
    (``(fields, points)`` or None).
    """
    if data["kind"] == "arrays":
        return {k: data.get(k) for k in ("fields", "points", "param_space", "transform", "mask",
                                         "metadata", "validation")}
    if data["kind"] != "store":
        raise ValueError(f"training data kind {data['kind']!r} is not one of ['store', 'arrays']")
    from rho_workflow.data.store import open_store

    with open_store(data["path"]) as store:
        fields, points = store.to_numpy(data.get("split", "train"))
        validation = store.to_numpy("validation") if data.get("validation") else None
        return {"fields": fields, "points": points, "param_space": store.param_space.to_dict(),
                "transform": store.transform.to_dict(), "mask": store.mask,
                "metadata": store_labels(store.metadata()), "validation": validation}


def store_labels(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Output labels (``fields``, ``spatial``) from a training store's ``metadata()``."""
    labels = field_labels(meta["variables"], meta["spatial_dims"], meta["coords"], meta)
    return {**labels, "store": {"path": meta.get("store"), "provenance": meta.get("provenance")}}


def build_model(model_section: Mapping[str, Any], loaded: Mapping[str, Any],
                metadata: Mapping[str, Any], device: str = "auto") -> Any:
    """A new :class:`TrainedModel` for the loaded data, with its normalization and labels."""
    from rho_workflow.training.model import TrainedModel
    from rho_workflow.params import ParamSpace

    fields = loaded["fields"]
    section = dict(model_section)
    model = TrainedModel.create(tuple(fields.shape[2:]), ParamSpace.from_dict(loaded["param_space"]),
                            channels=int(fields.shape[1]), encoder=section["encoder"],
                            prediction=section["prediction"], schedule=section["schedule"],
                            T=section["T"], network=section.get("network"),
                            p_uncond=section["p_uncond"], metadata=dict(metadata), device=device)
    model.set_normalization(loaded["transform"], loaded.get("mask"))
    return model


@dataclass(frozen=True)
class TrainingSpec:
    """What a training task needs, shipped across the Dask boundary (plain data only).

    ``data`` (see :func:`load_training_data`), ``model`` (the pipeline's model section),
    ``train`` (:class:`TrainConfig` options), ``metadata`` (stored in the checkpoint),
    ``checkpoint`` (path on shared storage), ``resume``, ``threads``, ``progress_topic``,
    ``stop_file`` (when that file appears, training checkpoints and stops: the client's
    answer to SIGTERM, seen by a worker on shared storage).
    """

    data: Mapping[str, Any]
    model: Mapping[str, Any]
    train: Mapping[str, Any]
    checkpoint: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    resume: bool = False
    threads: int | None = None
    progress_topic: str | None = None
    stop_file: str | None = None

    @classmethod
    def coerce(cls, spec: "TrainingSpec | Mapping[str, Any]") -> "TrainingSpec":
        return spec if isinstance(spec, cls) else cls(**dict(spec))

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def train_model(spec: TrainingSpec | Mapping[str, Any],
                on_step: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train (or resume) the model of ``spec`` (:class:`TrainingSpec`) and write its
    checkpoint (rank 0 under DDP). If torch.distributed is initialized the trainer runs
    data-parallel. A stop requested through ``spec.stop_file`` returns ``{"interrupted":
    True, "step"}`` once the checkpoint of that step is written.
    """
    import torch.distributed as dist

    spec = TrainingSpec.coerce(spec)
    t0 = time.perf_counter()
    set_torch_threads(spec.get("threads"))
    loaded = load_training_data(spec["data"])
    metadata = {**dict(loaded.get("metadata") or {}), **dict(spec.get("metadata") or {})}
    model = build_model(spec["model"], loaded, metadata, device=spec["train"].get("device", "auto"))
    rank = dist.get_rank() if dist.is_initialized() else 0
    topic = spec.get("progress_topic")
    steps_total = int(spec["train"]["steps"])

    def on_log(step: int, loss: float) -> None:
        log_progress(topic, {"kind": "train", "step": step + 1, "total": steps_total, "loss": loss})
        if on_step is not None:
            on_step(step, loss)

    checkpoint = spec["checkpoint"]
    stop_file = spec.stop_file
    should_stop = (lambda: os.path.exists(stop_file)) if stop_file else None
    try:
        result = model.fit_normalized(loaded["fields"], loaded["points"], checkpoint_path=checkpoint,
                                      resume=bool(spec.get("resume")), progress=False, on_log=on_log,
                                      should_stop=should_stop, validation=loaded.get("validation"),
                                      **dict(spec["train"]))
    except RunInterrupted as exc:  # a requested stop, not a failure: the checkpoint is written
        return {"rank": rank, "interrupted": True, "step": exc.step, "checkpoint": str(checkpoint)}
    out = {"rank": rank, "step": result.step, "losses": list(result.losses),
           "validation": None if result.validation is None else result.validation.to_dict(),
           "seconds": time.perf_counter() - t0, "train_seconds": result.seconds,
           "samples_per_second": result.samples_per_second, "checkpoint": str(checkpoint)}
    if rank == 0:
        out["checkpoint_sha256"] = file_sha256(checkpoint)
    return out

