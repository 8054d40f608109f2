"""Sweep throughput: sampling at 1 and 2 workers, and the output path of both formats.

    .venv/bin/python bench/sweep_scaling.py                  # everything (~10 minutes on 2 cores)
    .venv/bin/python bench/sweep_scaling.py --large 0        # without the 100k-field sweeps
    .venv/bin/python bench/sweep_scaling.py --smoke          # seconds: tiny sizes, same code paths

**Sampling** (``runs``, ``ratios``): the same sweep (a grid of parameter points x members,
fixed seeds and micro-batches) is sampled three ways with the sweep runner of the pipeline
(chunk tasks, parts, manifest, consolidation to netCDF): ``in-process`` (no Dask),
``1 worker`` and ``2 workers`` (one thread each, a LocalCluster on 127.0.0.1). Samples/s
counts the sampling phase (the chunk tasks); consolidation is reported apart, and so is the
warm-up of each process (importing torch and loading the model into the per-process cache,
done once before the timed sweep). The script re-runs itself with the glibc allocator
settings that the workers get, so that all three use the same allocator. The three outputs
are compared bit for bit. Goals: 1 worker within 10 % of in-process; 2 workers >= 1.7x one
worker.

**Output formats** (``output_formats``): one sweep of a tiny network (2 steps) at 1 and 2
workers, written as netCDF (parts, then the driver's consolidation) and as zarr (each task
writes its region; the driver writes metadata before and after). Reported: consolidation
seconds per GB (the driver's serial work after the tasks), output GB/s (uncompressed
bytes over the whole sweep's wall time), the workers' write GB/s (bytes over the seconds the
tasks spent writing), and whether both formats hold the same bits.

**Output path alone** (``output_path``): the same writers (``RegionStore.write``; the
``.npy`` parts and ``write_sweep_output``) fed synthetic fields instead of sampled ones, in
Dask tasks at 1 and 2 workers, so that the file system and not the network is the limit:
the output GB/s the write path reaches on this machine.

**Large sweeps** (``large_sweep``, ``large_sweep_zarr``, ``--large N``): N 2D fields (tiny
network, 2 steps) on 2 workers with a memory limit per worker, in netCDF and in zarr: peak
resident memory of the workers and of this process, the output size and the time, and the
driver's serial seconds against those of the small sweep (``serial_growth``: netCDF
consolidation grows with the sweep, the zarr driver's work does not).

**Driver costs and the paper model** (``driver_costs``, ``model``): the per-part costs
measured here -- the client and scheduler's time per task (no-op tasks), the manifest's
record of a finished chunk (journal line and fsync, at 500 and at 20000 chunks, against a
rewrite of the whole manifest, the former way, ``ratios``), the disk's sequential write
bandwidth -- and from them the worker count at which the driver, the scheduler or the file
system saturates: ``N = task seconds / driver seconds per task`` (zarr), ``N = driver
consolidation GB/s / output GB/s of one worker`` (netCDF), ``N = file system GB/s / output
GB/s of one worker``. Goal: no serial step growing with the sweep for zarr, and no driver
bottleneck below 1000 workers for a task of the default chunk size (64 fields).

Results: tables on stdout and ``bench/results/sweep_scaling.json`` (machine description,
runs, ratios against the baselines measured in the same process). ``--smoke`` runs every
part at tiny sizes (16x16 fields, 2 steps, one repeat) and writes to ``bench/work/smoke/``
or ``--out``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from common import add_output_options, result_path, write_result  # noqa: E402
from common import machine as common_machine  # noqa: E402

SAMPLER = "dpmpp_2m"  # the sampler timed (the committed figures are for it)


def make_checkpoint(path: Path, size: int, base_channels: int, mults: list[int]) -> Path:
    """An (untrained) model of the demo's kind: sampling cost does not depend on training."""
    import torch

    from rho_workflow.api import RhoModel
    from rho_workflow.params import Parameter, ParamSpace
    from rho_workflow.workflow.output import default_metadata

    torch.manual_seed(0)
    space = ParamSpace([Parameter("index", "1", low=-3, high=-1),
                        Parameter("amplitude", "Mparsec2", low=0.5, high=2.0)])
    network = {"kind": "unet", "dims": 2, "base_channels": base_channels, "channel_mults": mults,
               "num_res_blocks": 1, "attention_levels": []}
    model = RhoModel.create((size, size), space, network=network, device="cpu",
                            metadata=default_metadata((1, size, size), ["density"]))
    model.save(path)
    return path


def sweep(points_per_axis: tuple[int, int], members: int, steps: int, batch: int, chunk: int):
    from rho_workflow.params import Parameter, ParamSpace
    from rho_workflow.workflow.sweep import SweepRequest, plan_sweep

    space = ParamSpace([Parameter("index", "1", low=-3, high=-1),
                        Parameter("amplitude", "Mparsec2", low=0.5, high=2.0)])
    section = SweepRequest(
        grid={"index": {"start": -3, "stop": -1, "num": points_per_axis[0]},
              "amplitude": {"start": 0.5, "stop": 2.0, "num": points_per_axis[1]}},
        table=None, table_units={}, members=members, seed=1, sampler=SAMPLER, steps=steps,
        guidance=0.0, allow_extrapolation=False, batch_size=batch, chunk_size=chunk)
    return plan_sweep(section, space)


def run_once(plan, ckpt: Path, work: Path, name: str, workers: int | None,
             memory_limit: str = "auto", complevel: int = 1, fmt: str = "netcdf",
             client=None) -> dict:
    """One sweep: in this process (``workers`` None), on a new LocalCluster of ``workers``,
    or on ``client``'s cluster (of ``workers`` workers)."""
    from rho_workflow.workflow.cluster import LocalKind

    if workers is None:
        warm = warm_up(str(ckpt))
        return _timed_sweep(plan, ckpt, work, name, None, warm, complevel, fmt)
    if client is not None:
        return _timed_sweep(plan, ckpt, work, name, client, None, complevel, fmt, workers)
    cluster = LocalKind(n_workers=workers, threads_per_worker=1, dashboard=False,
                        memory_limit=memory_limit)
    with cluster.connect() as client:
        return _timed_sweep(plan, ckpt, work, name, client, None, complevel, fmt, workers)


def _timed_sweep(plan, ckpt: Path, work: Path, name: str, client, warm: float | None,
                 complevel: int, fmt: str, workers: int | None = None) -> dict:
    from rho_workflow.workflow.sampling import run_sweep

    out = work / f"{name}.{'nc' if fmt == 'netcdf' else 'zarr'}"
    parts = work / f"{name}-parts"
    worker_rss = None
    if client is not None:
        warm = max(client.run(warm_up, str(ckpt)).values())
    t0 = time.perf_counter()
    summary = run_sweep(plan, ckpt, out, parts, client=client, progress=False,
                        complevel=complevel, fmt=fmt)
    wall = time.perf_counter() - t0
    if client is not None:
        rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        worker_rss = max(rss.values()) / 1024  # MiB (ru_maxrss is KiB on Linux)
    return {"name": name, "format": fmt, "workers": workers, "samples": plan.n_samples,
            "warm_up_seconds": warm, "chunks": len(plan.chunks), "seconds": summary["seconds"],
            "samples_per_second": summary["samples_per_second"],
            "prepare_seconds": summary["prepare_seconds"],
            "consolidate_seconds": summary["consolidate_seconds"],
            "record_seconds": summary["record_seconds"], "task_seconds": summary["task_seconds"],
            "write_seconds": summary["write_seconds"], "wall_seconds": wall,
            "peak_worker_rss_mib": worker_rss, "output": str(out),
            "output_mib": disk_bytes(out) / 2**20}


def disk_bytes(path: Path) -> int:
    """Bytes of a file, or of every file in a folder (a zarr store)."""
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def best_of(repeats: int, plan, ckpt: Path, work: Path, configs: list) -> list[dict]:
    """The fastest of ``repeats`` runs of each ``(name, workers)`` configuration, the
    configurations interleaved so that load from other processes spreads over all of them
    (every run's samples/s is kept under ``all_samples_per_second``)."""
    runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
    for _ in range(max(1, repeats)):
        for name, workers in configs:
            runs[name].append(run_once(plan, ckpt, work, name, workers))
    out = []
    for name, _ in configs:
        best = max(runs[name], key=lambda r: r["samples_per_second"])
        best["all_samples_per_second"] = [r["samples_per_second"] for r in runs[name]]
        out.append(best)
    return out


def warm_up(checkpoint: str) -> float:
    """Import torch and load the model into this process's cache (once per worker), outside
    the timed sweep; returns the seconds it took."""
    t0 = time.perf_counter()
    from rho_workflow.training.checkpoint import file_sha256
    from rho_workflow.workflow.tasks import cached_model, set_torch_threads

    set_torch_threads(1)
    cached_model(str(Path(checkpoint).resolve()), file_sha256(checkpoint), "cpu")
    warm_io()
    return time.perf_counter() - t0


def warm_io() -> float:
    """Import the writers (zarr, netCDF4) and start zarr's I/O thread in this process."""
    t0 = time.perf_counter()
    import netCDF4  # noqa: F401
    import zarr

    zarr.create_array(zarr.storage.MemoryStore(), shape=(4,), dtype="f4")[:] = 1.0
    return time.perf_counter() - t0


def machine() -> dict:
    """bench/common.machine() plus this benchmark's thread and allocator settings."""
    return {**common_machine(), "torch_threads_per_task": 1,
            "malloc_env": {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_",
                                                          "MALLOC_MMAP_THRESHOLD_")}}


def same_allocator_as_workers() -> None:
    """Re-run this script with the workers' glibc allocator settings (see
    ``rho_workflow.workflow.cluster.WORKER_MALLOC_ENV``), so that the in-process baseline and
    the Dask workers allocate memory the same way."""
    from rho_workflow.workflow.cluster import WORKER_MALLOC_ENV

    wanted = {k: str(v) for k, v in WORKER_MALLOC_ENV.items()}
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        os.environ.update(wanted)
        os.execv(sys.executable, [sys.executable, *sys.argv])


GB = 1e9


def field_bytes(plan, size: int) -> int:
    """Uncompressed bytes of a sweep of ``size x size`` float32 fields, one channel."""
    return plan.n_samples * size * size * 4


def format_run(run: dict, nbytes: int) -> dict:
    """The output figures of one run: consolidation s/GB, output GB/s, worker write GB/s."""
    serial = run["prepare_seconds"] + run["consolidate_seconds"]
    return {**run, "uncompressed_bytes": nbytes,
            "driver_serial_seconds": serial,
            "consolidation_seconds_per_gb": run["consolidate_seconds"] / (nbytes / GB),
            "output_gb_per_second": nbytes / GB / run["wall_seconds"],
            "worker_write_gb_per_second": (nbytes / GB / run["write_seconds"]
                                           if run["write_seconds"] > 0 else None),
            "record_seconds_per_chunk": run["record_seconds"] / max(run["chunks"], 1),
            "task_seconds_per_chunk": run["task_seconds"] / max(run["chunks"], 1)}


def same_values(a: str, b: str) -> bool:
    import xarray as xr

    def open_(path):
        return xr.open_zarr(path) if path.endswith(".zarr") else xr.open_dataset(path)

    with open_(a) as x, open_(b) as y:
        return bool(np.array_equal(x["density"].values, y["density"].values))


def output_formats(ckpt: Path, work: Path, plan, size: int) -> dict:
    """One tiny-network sweep at 1 and 2 workers in both formats (see the module docstring)."""
    from rho_workflow.workflow.cluster import LocalKind

    runs = []
    for workers in (1, 2):
        with LocalKind(n_workers=workers, threads_per_worker=1, dashboard=False).connect() as client:
            for fmt in ("netcdf", "zarr"):
                run = run_once(plan, ckpt, work, f"{fmt} {workers}w", workers, fmt=fmt,
                               client=client)
                runs.append(format_run(run, field_bytes(plan, size)))
    identical = all(same_values(runs[0]["output"], r["output"]) for r in runs[1:])
    for r in runs:
        r.pop("output")
    by = {(r["format"], r["workers"]): r for r in runs}
    return {"sweep": {"samples": plan.n_samples, "size": size, "chunk": plan.chunk_size,
                      "steps": plan.steps, "uncompressed_mb": field_bytes(plan, size) / 1e6},
            "runs": runs, "bit_identical_across_formats_and_workers": identical,
            "ratios": {f"zarr_vs_netcdf_output_gb_per_second_{w}w":
                       by["zarr", w]["output_gb_per_second"] / by["netcdf", w]["output_gb_per_second"]
                       for w in (1, 2)}}


def synthetic_chunk(start: int, stop: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Stand-in fields of samples ``start .. stop - 1``: lognormal noise (``(n, 1, *shape)``)."""
    rng = np.random.default_rng([seed, start])
    return rng.lognormal(size=(stop - start, 1, *shape)).astype(np.float32)


def write_region_task(store, start: int, stop: int, shape: tuple[int, ...]) -> dict:
    t0 = time.perf_counter()
    data = synthetic_chunk(start, stop, shape, 0)
    t1 = time.perf_counter()
    info = store.write(start, stop, data)
    return {**info, "write_seconds": time.perf_counter() - t1, "make_seconds": t1 - t0}


def write_part_task(path: str, start: int, stop: int, shape: tuple[int, ...]) -> dict:
    from rho_workflow.atomic import atomic_save_npy

    t0 = time.perf_counter()
    data = synthetic_chunk(start, stop, shape, 0)
    t1 = time.perf_counter()
    info = atomic_save_npy(path, data)
    return {**info, "write_seconds": time.perf_counter() - t1, "make_seconds": t1 - t0}


def output_path(work: Path, plan, size: int, complevel: int = 1) -> dict:
    """The writers alone, fed synthetic fields in Dask tasks, at 1 and 2 workers."""
    from distributed import as_completed

    from rho_workflow.atomic import load_npy_checked
    from rho_workflow.data.labels import default_labels
    from rho_workflow.workflow.cluster import LocalKind
    from rho_workflow.workflow.output import write_sweep_output
    from rho_workflow.workflow.regions import create_region_store, seal_region_store

    metadata = default_labels((1, size, size), ["density"])
    attrs = {"Conventions": "CF-1.8", "title": "output path benchmark"}
    nbytes = field_bytes(plan, size)
    shape = (size, size)
    runs = []
    for workers in (1, 2):
        with LocalKind(n_workers=workers, threads_per_worker=1, dashboard=False).connect() as client:
            client.run(warm_io)
            # a first round on scratch files: each worker imports the task functions once
            scratch = create_region_store(work / f"scratch-{workers}.zarr", plan, metadata, attrs=attrs)
            warm = [client.submit(write_region_task, scratch, c.start, c.stop, shape, pure=False)
                    for c in plan.chunks[:2 * workers]]
            warm += [client.submit(write_part_task, str(work / f"scratch-{c.index}.npy"), c.start,
                                   c.stop, shape, pure=False) for c in plan.chunks[:2 * workers]]
            client.gather(warm)
            for fmt in ("netcdf", "zarr"):
                out = work / f"path-{fmt}-{workers}w"
                t0 = time.perf_counter()
                store = None
                if fmt == "zarr":
                    store = create_region_store(out.with_suffix(".zarr"), plan, metadata, attrs=attrs)
                    futures = [client.submit(write_region_task, store, c.start, c.stop, shape,
                                             pure=False) for c in plan.chunks]
                else:
                    out.mkdir(parents=True, exist_ok=True)
                    futures = [client.submit(write_part_task, str(out / f"{c.index}.npy"), c.start,
                                             c.stop, shape, pure=False) for c in plan.chunks]
                t1 = time.perf_counter()
                done = {id(f): f.result() for f in as_completed(futures)}
                results = [done[id(f)] for f in futures]  # in chunk order
                t2 = time.perf_counter()
                if fmt == "zarr":
                    seal_region_store(store, attrs, {i: r["sha256"] for i, r in enumerate(results)})
                else:
                    parts = ((c.start, c.stop, load_npy_checked(out / f"{c.index}.npy",
                                                                (c.size, 1, *shape), r["sha256"]))
                             for c, r in zip(plan.chunks, results))
                    write_sweep_output(out.with_suffix(".nc"), plan, metadata, parts, attrs=attrs,
                                       complevel=complevel)
                t3 = time.perf_counter()
                write_s = sum(r["write_seconds"] for r in results)
                runs.append({"format": fmt, "workers": workers, "uncompressed_bytes": nbytes,
                             "chunks": len(plan.chunks), "prepare_seconds": t1 - t0,
                             "tasks_seconds": t2 - t1, "consolidate_seconds": t3 - t2,
                             "wall_seconds": t3 - t0, "write_seconds": write_s,
                             "consolidation_seconds_per_gb": (t3 - t2) / (nbytes / GB),
                             "output_gb_per_second": nbytes / GB / (t3 - t0),
                             "worker_write_gb_per_second": nbytes / GB / write_s,
                             "output_mib": disk_bytes(out.with_suffix(".nc" if fmt == "netcdf"
                                                                      else ".zarr")) / 2**20})
                for done in (out, out.with_suffix(".nc"), out.with_suffix(".zarr")):  # free the disk
                    if done.is_dir():
                        shutil.rmtree(done)
                    else:
                        done.unlink(missing_ok=True)
    by = {(r["format"], r["workers"]): r for r in runs}
    return {"sweep": {"fields": plan.n_samples, "size": size, "chunk": plan.chunk_size,
                      "uncompressed_mb": nbytes / 1e6, "netcdf_complevel": complevel,
                      "zarr_codec": "zarr default (zstd)", "data": "lognormal noise"},
            "runs": runs,
            "ratios": {f"zarr_vs_netcdf_output_gb_per_second_{w}w":
                       by["zarr", w]["output_gb_per_second"] / by["netcdf", w]["output_gb_per_second"]
                       for w in (1, 2)}}


def _noop(i: int) -> dict:
    return {"index": i, "worker": "x", "seconds": 0.0}


def driver_costs(work: Path, smoke: bool) -> dict:
    """Per-part costs of the driver (see the module docstring), measured here."""
    from distributed import as_completed

    from rho_workflow.atomic import atomic_write_json
    from rho_workflow.workflow.cluster import LocalKind
    from rho_workflow.workflow.manifest import Manifest
    from rho_workflow.workflow.tasks import chunk_work

    n_tasks = 200 if smoke else 2000
    with LocalKind(n_workers=2, threads_per_worker=1, dashboard=False).connect() as client:
        client.submit(_noop, -1, pure=False).result()
        t0, cpu0 = time.perf_counter(), time.process_time()
        futures = [client.submit(_noop, i, pure=False) for i in range(n_tasks)]
        for batch in as_completed(futures).batches():  # the pattern of run_sweep
            [f.result() for f in batch]
            for f in batch:
                f.release()
        wall_per_task = (time.perf_counter() - t0) / n_tasks
        cpu_per_task = (time.process_time() - cpu0) / n_tasks  # client + scheduler (this process)

    entry = lambda i: {"region": True, "index": i, "start": 64 * i, "stop": 64 * (i + 1),  # noqa: E731
                       "bytes": 262144, "sha256": f"{i:064x}", "seconds": 1.234,
                       "write_seconds": 0.012, "worker": "tcp://127.0.0.1:40000"}
    big = 2000 if smoke else 20000
    reps = 50 if smoke else 300
    journal, batched = {}, {}
    for n in (500, big):  # one fsynced line per result, at n chunks recorded before
        m = Manifest.open(work / f"manifest-{n}.json", "fp", big + 2 * reps, resume=False)
        m.record_many({i: entry(i) for i in range(n)})
        t0 = time.perf_counter()
        for i in range(n, n + reps):
            m.record(i, entry(i))
        journal[n] = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()  # results that arrived together: one fsync for the batch
        m.record_many({i: entry(i) for i in range(n + reps, n + 2 * reps)})
        batched[n] = (time.perf_counter() - t0) / reps
    rewrite = {}
    for n in (500, big):  # the former way: the whole manifest rewritten atomically per chunk
        chunks = {str(i): entry(i) for i in range(n)}
        k = max(3, reps // (1 if n == 500 else 30))
        t0 = time.perf_counter()
        for i in range(k):
            chunks[str(n + i)] = entry(n + i)
            atomic_write_json(work / f"rewrite-{n}.json", {"fingerprint": "fp", "chunks": chunks})
        rewrite[n] = (time.perf_counter() - t0) / k

    plan = sweep((40, 40), 64, 10, batch=16, chunk=64)  # the default chunk size
    t0 = time.perf_counter()
    for c in plan.chunks[:200]:
        chunk_work(plan, c)
    work_per_chunk = (time.perf_counter() - t0) / min(200, len(plan.chunks))

    size = (8 if smoke else 256) * 2**20
    block = np.random.default_rng(0).integers(0, 255, 4 * 2**20, dtype=np.uint8).tobytes()
    t0 = time.perf_counter()
    with open(work / "disk-probe", "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    disk = size / GB / (time.perf_counter() - t0)
    (work / "disk-probe").unlink()
    return {"scheduler_wall_seconds_per_task": wall_per_task,
            "scheduler_cpu_seconds_per_task": cpu_per_task, "no_op_tasks": n_tasks,
            "chunk_work_seconds_per_64_fields": work_per_chunk,
            "record_seconds_per_chunk": {"journal_at_500": journal[500],
                                         f"journal_at_{big}": journal[big],
                                         "journal_batched_at_500": batched[500],
                                         f"journal_batched_at_{big}": batched[big],
                                         "rewrite_at_500": rewrite[500],
                                         f"rewrite_at_{big}": rewrite[big]},
            "record_chunks_large": big,
            "disk_write_gb_per_second": disk}


def paper_model(task_seconds: float, chunk_bytes: float, driver_per_task: float,
                driver_per_task_unbatched: float, scheduler_per_task: float,
                consolidation_gb_per_second: float, fs_gb_per_second: float) -> dict:
    """Worker counts at which each serial resource saturates, for one kind of task.

    ``N`` workers finish ``N / task_seconds`` tasks a second and produce ``N * chunk_bytes /
    task_seconds`` bytes a second. The sweep's driver code (zarr) keeps up while
    ``N * driver_per_task <= task_seconds`` (its journal fsyncs once per batch of results
    that arrived together, so under load the fsync is shared; ``..._unbatched``: one fsync
    per task, the bound when results trickle in), Dask's client and scheduler while
    ``N * scheduler_per_task <= task_seconds``, the netCDF consolidation while its GB/s
    exceeds the workers' output, the file system while its bandwidth does.
    """
    worker_gb_s = chunk_bytes / GB / task_seconds
    n = {"zarr_driver": task_seconds / driver_per_task,
         "zarr_driver_one_fsync_per_task": task_seconds / driver_per_task_unbatched,
         "scheduler": task_seconds / scheduler_per_task,
         "netcdf_driver": consolidation_gb_per_second / worker_gb_s,
         "file_system": fs_gb_per_second / worker_gb_s}
    return {"task_seconds": task_seconds, "chunk_bytes": chunk_bytes,
            "worker_output_gb_per_second": worker_gb_s, "saturating_workers": n,
            "zarr_limit": min(("zarr_driver", "scheduler", "file_system"), key=n.get),
            "netcdf_limit": min(("netcdf_driver", "scheduler", "file_system"), key=n.get)}


def main(argv: list[str] | None = None) -> int:
    same_allocator_as_workers()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32, help="cells per side of the fields")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="sampler steps")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each configuration; the best is kept (others share the CPUs)")
    parser.add_argument("--large", type=int, default=100_000,
                        help="fields of the larger-than-memory sweeps (0: skip)")
    parser.add_argument("--large-memory", default="1GiB", help="memory limit per worker")
    parser.add_argument("--io-fields", type=int, default=4096,
                        help="fields (32x32) of the output-format sweep")
    parser.add_argument("--path-mb", type=int, default=256,
                        help="uncompressed MB written by the output-path measurement")
    parser.add_argument("--work", default=None,
                        help="folder of the temporary outputs (default: the system's temporary "
                             "folder); the disk probe measures its file system")
    add_output_options(parser, "sweep_scaling")
    args = parser.parse_args(argv)
    grid, batch, chunk = (8, 6), 16, 32
    io_chunk, path_size, path_chunk = 512, 64, 256
    if args.smoke:  # 6 points x 1 member in 3 chunks; a 250-field large sweep
        args.size, args.members, args.steps, args.repeats, args.large = 16, 1, 2, 1, 200
        grid, batch, chunk = (2, 3), 2, 2
        args.io_fields, io_chunk, args.path_mb, path_size, path_chunk = 64, 16, 2, 16, 64

    import xarray as xr

    results: dict = {"machine": machine(), "runs": [], "ratios": {}, "goals": {
        "one_worker_vs_in_process": ">= 0.90", "two_workers_vs_one_worker": ">= 1.7",
        "zarr_serial_growth": "driver seconds after the tasks do not grow with the sweep",
        "zarr_driver_workers_at_default_chunk": ">= 1000"}}
    sections: dict = {}
    t_section = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rho-bench-", dir=args.work) as tmp:
        work = Path(tmp)
        ckpt = make_checkpoint(work / "model.ckpt", args.size, 16, [1, 2, 2])
        plan = sweep(grid, args.members, args.steps, batch=batch, chunk=chunk)
        runs = best_of(args.repeats, plan, ckpt, work,
                       [("in-process", None), ("1 worker", 1), ("2 workers", 2)])
        with xr.open_dataset(runs[0]["output"]) as a, xr.open_dataset(runs[1]["output"]) as b, \
                xr.open_dataset(runs[2]["output"]) as c:
            identical = bool(np.array_equal(a["density"].values, b["density"].values)
                             and np.array_equal(a["density"].values, c["density"].values))
        for r in runs:
            r.pop("output")
        base = runs[0]["samples_per_second"]
        for r in runs:
            r["vs_in_process"] = r["samples_per_second"] / base
            r["repeats"] = args.repeats
        results["runs"] = runs
        results["sweep"] = {"points": plan.n_points, "members": plan.members,
                            "samples": plan.n_samples, "sampler": SAMPLER, "steps": plan.steps,
                            "size": args.size,
                            "micro_batch": plan.batch_size, "chunk": plan.chunk_size,
                            "bit_identical_across_runs": identical}
        results["ratios"] = {
            "one_worker_vs_in_process": runs[1]["samples_per_second"] / base,
            "two_workers_vs_one_worker": runs[2]["samples_per_second"] / runs[1]["samples_per_second"]}
        sections["sampling"] = time.perf_counter() - t_section
        t_section = time.perf_counter()

        ckpt_small = make_checkpoint(work / "tiny.ckpt", 16, 4, [1, 2])
        ckpt_io = make_checkpoint(work / "io.ckpt", 32, 4, [1, 2])
        per_axis = int(np.ceil(np.sqrt(args.io_fields / 16)))
        io_plan = sweep((per_axis, per_axis), 16, 2, batch=256 if not args.smoke else 16,
                        chunk=io_chunk)
        results["output_formats"] = output_formats(ckpt_io, work, io_plan, 32)
        sections["output_formats"] = time.perf_counter() - t_section
        t_section = time.perf_counter()
        n_path = max(1, int(args.path_mb * 1e6 // (path_size * path_size * 4)))
        per_axis = int(np.ceil(np.sqrt(n_path / 16)))
        path_plan = sweep((per_axis, per_axis), 16, 2, batch=16, chunk=path_chunk)
        results["output_path"] = output_path(work, path_plan, path_size)
        sections["output_path"] = time.perf_counter() - t_section
        t_section = time.perf_counter()
        if args.large:  # 16 members: chunks of 4096 fields hold whole points (larger zarr chunks)
            from rho_workflow.workflow.cluster import LocalKind

            per_axis = int(np.ceil(np.sqrt(args.large / 16)))
            big = sweep((per_axis, per_axis), 16, 2, batch=512, chunk=4096)
            cluster = LocalKind(n_workers=2, threads_per_worker=1, dashboard=False,
                                memory_limit=args.large_memory)
            with cluster.connect() as client:
                for fmt, key in (("netcdf", "large_sweep"), ("zarr", "large_sweep_zarr")):
                    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    large = run_once(big, ckpt_small, work, f"large sweep {fmt}", 2, complevel=1,
                                     fmt=fmt, client=client)
                    large["field_shape"] = [16, 16]
                    large["worker_memory_limit"] = args.large_memory
                    large["driver_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                    large["driver_rss_before_mib"] = rss0
                    large["uncompressed_mib"] = big.n_samples * 16 * 16 * 4 / 2**20
                    output = Path(large.pop("output"))
                    if output.is_dir():
                        shutil.rmtree(output)
                    else:
                        output.unlink()
                    results[key] = format_run(large, big.n_samples * 16 * 16 * 4)
            sections["large_sweeps"] = time.perf_counter() - t_section
            t_section = time.perf_counter()
            small = {(r["format"], r["workers"]): r for r in results["output_formats"]["runs"]}
            results["serial_growth"] = {
                fmt: {"small_sweep_bytes": small[fmt, 2]["uncompressed_bytes"],
                      "large_sweep_bytes": results[key]["uncompressed_bytes"],
                      "small_driver_serial_seconds": small[fmt, 2]["driver_serial_seconds"],
                      "large_driver_serial_seconds": results[key]["driver_serial_seconds"],
                      "bytes_ratio": results[key]["uncompressed_bytes"] / small[fmt, 2]["uncompressed_bytes"],
                      "serial_seconds_ratio": results[key]["driver_serial_seconds"]
                      / max(small[fmt, 2]["driver_serial_seconds"], 1e-9)}
                for fmt, key in (("netcdf", "large_sweep"), ("zarr", "large_sweep_zarr"))}
        results["driver_costs"] = driver_costs(work, args.smoke)
        sections["driver_costs"] = time.perf_counter() - t_section
    results["model"] = model(results)
    results["ratios"].update(results["output_formats"]["ratios"])
    results["ratios"].update({f"path_{k}": v for k, v in results["output_path"]["ratios"].items()})
    rec = results["driver_costs"]["record_seconds_per_chunk"]
    big_n = results["driver_costs"]["record_chunks_large"]
    results["ratios"]["record_rewrite_vs_journal_at_large"] = rec[f"rewrite_at_{big_n}"] / rec[f"journal_at_{big_n}"]
    for fmt, g in results.get("serial_growth", {}).items():  # driver seconds, large / small sweep
        results["ratios"][f"serial_seconds_growth_{fmt}"] = g["serial_seconds_ratio"]
        results["ratios"][f"sweep_bytes_growth_{fmt}"] = g["bytes_ratio"]
    results["machine"]["load_average_after"] = list(os.getloadavg())
    results["section_seconds"] = sections
    results["smoke"] = args.smoke
    path = write_result(result_path("sweep_scaling", args), results)
    print(table(results))
    print(f"\nwritten {path}")
    return 0


def model(results: dict) -> dict:
    """The paper model (:func:`paper_model`) for two kinds of task, from the measured costs:
    the sampling benchmark's network at the default chunk size (64 fields, the time per field
    of the 1-worker run), and the output-format sweep's tiny network (I/O heavy)."""
    costs = results["driver_costs"]
    rec = costs["record_seconds_per_chunk"]
    scheduler = costs["scheduler_cpu_seconds_per_task"]
    fs = costs["disk_write_gb_per_second"]
    fmt = {(r["format"], r["workers"]): r for r in results["output_formats"]["runs"]}
    path = {(r["format"], r["workers"]): r for r in results["output_path"]["runs"]}
    work = costs["chunk_work_seconds_per_64_fields"]
    driver = work + max(v for k, v in rec.items() if k.startswith("journal_batched"))
    unbatched = work + max(v for k, v in rec.items() if k.startswith("journal_at"))
    consolidation = 1.0 / path["netcdf", 2]["consolidation_seconds_per_gb"]  # GB/s of the driver
    s = results["sweep"]
    one = results["runs"][1]
    per_field = one["seconds"] / one["samples"]  # seconds of one worker per field
    costs_args = (driver, unbatched, scheduler, consolidation, fs)
    demo = paper_model(64 * per_field, 64 * s["size"] ** 2 * 4, *costs_args)
    io = fmt["zarr", 1]
    io_chunk = results["output_formats"]["sweep"]["chunk"]
    io_model = paper_model(io["task_seconds_per_chunk"], io_chunk * 32 * 32 * 4, *costs_args)
    n = demo["saturating_workers"]
    return {"inputs": {"zarr_driver_seconds_per_task": driver,
                       "zarr_driver_seconds_per_task_one_fsync": unbatched,
                       "scheduler_cpu_seconds_per_task": scheduler,
                       "netcdf_consolidation_gb_per_second": consolidation,
                       "file_system_gb_per_second": fs,
                       "per_field_seconds_one_worker": per_field},
            "default_chunk_task": {**demo, "chunk_fields": 64, "field": f"{s['size']}x{s['size']}",
                                   "network": "sampling benchmark's (16 channels, 10 steps)"},
            "io_heavy_task": {**io_model, "chunk_fields": io_chunk, "field": "32x32",
                              "network": "tiny (4 channels, 2 steps)"},
            "zarr_driver_workers_at_default_chunk": n["zarr_driver"],
            "goal_met_zarr_driver_at_default_chunk": n["zarr_driver"] >= 1000,
            "chunk_fields_for_1000_workers": {
                "zarr_driver": int(np.ceil(1000 * driver / per_field)),
                "zarr_driver_one_fsync_per_task": int(np.ceil(1000 * unbatched / per_field)),
                "scheduler": int(np.ceil(1000 * scheduler / per_field))}}


def table(results: dict) -> str:
    s = results["sweep"]
    lines = [f"best of {results['runs'][0]['repeats']} runs each; sweep: {s['samples']} fields {s['size']}x{s['size']} ({s['points']} points x "
             f"{s['members']} members), {s.get('sampler', 'dpmpp_2m')} {s['steps']} steps, micro-batch "
             f"{s['micro_batch']}, chunk {s['chunk']}; bit-identical: {s['bit_identical_across_runs']}",
             f"{'run':<12} {'samples/s':>10} {'vs in-proc':>11} {'sampling s':>11} {'consolidate s':>14}"]
    for r in results["runs"]:
        lines.append(f"{r['name']:<12} {r['samples_per_second']:>10.2f} {r['vs_in_process']:>11.2f} "
                     f"{r['seconds']:>11.2f} {r['consolidate_seconds']:>14.2f}")
    ratios = results["ratios"]
    lines.append(f"1 worker / in-process = {ratios['one_worker_vs_in_process']:.2f} (goal >= 0.90); "
                 f"2 workers / 1 worker = {ratios['two_workers_vs_one_worker']:.2f} (goal >= 1.7)")
    for key in ("large_sweep", "large_sweep_zarr"):
        if key not in results:
            continue
        g = results[key]
        lines.append(f"large sweep ({g['format']}): {g['samples']} fields 16x16 in {g['chunks']} chunks "
                     f"on 2 workers (memory limit {g['worker_memory_limit']}): "
                     f"{g['samples_per_second']:.0f} samples/s, sampling {g['seconds']:.1f} s + "
                     f"driver after the tasks {g['consolidate_seconds']:.2f} s; peak worker RSS "
                     f"{g['peak_worker_rss_mib']:.0f} MiB, driver peak RSS "
                     f"{g['driver_peak_rss_mib']:.0f} MiB; output {g['output_mib']:.0f} MiB "
                     f"({g['uncompressed_mib']:.0f} MiB uncompressed)")
    lines += ["", output_table(results)]
    m = results["machine"]
    lines.append(f"machine: {m['cores']} cores ({m['cpu']}), load average before "
                 f"{m['load_average_at_start'][0]:.2f}, after {m['load_average_after'][0]:.2f}")
    return "\n".join(lines)


def output_table(results: dict) -> str:
    """The output formats, the output path alone, the serial growth and the paper model."""
    lines = []
    for key, title in (("output_formats", "output formats, sampled sweep"),
                       ("output_path", "output path alone, synthetic fields")):
        part = results[key]
        sw = part["sweep"]
        n = sw.get("samples", sw.get("fields"))
        lines.append(f"{title}: {n} fields {sw['size']}x{sw['size']}, {sw['uncompressed_mb']:.0f} MB "
                     f"uncompressed, chunk {sw['chunk']}")
        lines.append(f"  {'format':<7} {'workers':>7} {'wall s':>8} {'driver s':>9} {'consol. s/GB':>13} "
                     f"{'output GB/s':>12} {'worker write GB/s':>18} {'on disk MiB':>12}")
        for r in part["runs"]:
            lines.append(f"  {r['format']:<7} {r['workers']:>7} {r['wall_seconds']:>8.2f} "
                         f"{r['prepare_seconds'] + r['consolidate_seconds']:>9.3f} "
                         f"{r['consolidation_seconds_per_gb']:>13.3f} {r['output_gb_per_second']:>12.4f} "
                         f"{r['worker_write_gb_per_second'] or float('nan'):>18.3f} {r['output_mib']:>12.1f}")
        if "bit_identical_across_formats_and_workers" in part:
            lines.append(f"  bit-identical across formats and workers: "
                         f"{part['bit_identical_across_formats_and_workers']}")
    for fmt, g in results.get("serial_growth", {}).items():
        lines.append(f"serial growth ({fmt}): sweep x{g['bytes_ratio']:.0f} bytes -> driver serial "
                     f"seconds {g['small_driver_serial_seconds']:.3f} -> "
                     f"{g['large_driver_serial_seconds']:.3f} (x{g['serial_seconds_ratio']:.2f})")
    c = results["driver_costs"]
    rec = c["record_seconds_per_chunk"]
    lines.append("driver costs: Dask client+scheduler %.2f ms CPU (%.2f ms wall) per task; chunk "
                 "plan data %.3f ms per 64 fields; disk %.2f GB/s" % (
                     1e3 * c["scheduler_cpu_seconds_per_task"],
                     1e3 * c["scheduler_wall_seconds_per_task"],
                     1e3 * c["chunk_work_seconds_per_64_fields"], c["disk_write_gb_per_second"]))
    lines.append("  record of a chunk: " + ", ".join(f"{k} {1e3 * v:.3f} ms" for k, v in rec.items()))
    m = results["model"]
    for key in ("default_chunk_task", "io_heavy_task"):
        t = m[key]
        n = t["saturating_workers"]
        lines.append(f"paper model, {key} ({t['chunk_fields']} fields {t['field']}, {t['network']}): "
                     f"task {t['task_seconds']:.3g} s, {1e3 * t['worker_output_gb_per_second']:.3g} MB/s "
                     f"per worker -> saturates at: zarr driver {n['zarr_driver']:.3g} "
                     f"({n['zarr_driver_one_fsync_per_task']:.3g} with one fsync per task), Dask "
                     f"scheduler {n['scheduler']:.3g}, netCDF driver {n['netcdf_driver']:.3g}, "
                     f"file system {n['file_system']:.3g} workers")
    lines.append("chunk size (fields) for 1000 workers: " + ", ".join(
        f"{k} {v}" for k, v in m["chunk_fields_for_1000_workers"].items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
