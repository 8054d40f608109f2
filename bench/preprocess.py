"""Benchmark: preprocess a >= 2 GB netCDF sweep on a 2-worker local Dask cluster.

Writes a lognormal-field sweep (``make-data``) under ``bench/work/preprocess/``, then, in one
process:

1. baseline -- ``xr.open_mfdataset(...).load()`` plus numpy normalization (log, mean, std,
   standardize) in this process: the whole sweep in memory;
2. ``rho_workflow.data.store.preprocess`` on ``LocalCluster(n_workers=2, threads_per_worker=1,
   memory_limit="1GiB")``: validation, unit conversion, statistics and the zarr store written
   by one Dask graph, memory bounded by the chunk size.

It reports throughput (MB of field data per second), the peak resident memory of each worker
(sampled every 0.2 s from the bench process) and of the baseline, and the ratios; prints a
table and writes ``bench/results/preprocess.json`` with the machine description.

Usage: ``python bench/preprocess.py [--gb 2.0] [--size 1024] [--chunk-mb 64]``

``--smoke`` runs the same two paths on a 1 MB sweep (16 files of 64x64 fields, 0.25 MB
chunks) in a temporary folder, and writes to ``bench/work/smoke/`` or ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import add_output_options, machine, result_path, write_result  # noqa: E402

from rho_workflow.data.config import DataConfig  # noqa: E402
from rho_workflow.data.make_data import write_sweep  # noqa: E402
from rho_workflow.data.store import open_store, preprocess  # noqa: E402

WORK = ROOT / "bench" / "work" / "preprocess"
FLOOR = 1e-8


def make_sweep(work: Path, gb: float, size: int, realizations: int) -> list[Path]:
    """The lognormal-field sweep of about ``gb`` GB under ``work`` (kept for later runs)."""
    per_file = size * size * 4 * realizations
    runs = int(np.ceil(gb * 1e9 / per_file))
    folder = work / f"sweep_{size}_{realizations}_{runs}"
    marker = folder / "complete.json"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        t0 = time.perf_counter()
        write_sweep("lognormal-field", folder, runs=runs, seed=0, size=size,
                    realizations=realizations)
        marker.write_text(json.dumps({"runs": runs, "seconds": time.perf_counter() - t0}))
    return sorted(folder.glob("*.nc"))


class PeakRSS:
    """Sample the resident memory of some processes every ``interval`` seconds."""

    def __init__(self, pids: list[int], interval: float = 0.2):
        self.procs = [psutil.Process(p) for p in pids]
        self.peaks = [0] * len(pids)
        self.interval, self._stop = interval, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for i, proc in enumerate(self.procs):
                try:
                    self.peaks[i] = max(self.peaks[i], proc.memory_info().rss)
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def baseline(files: list[Path]) -> dict:
    import xarray as xr

    rss0 = psutil.Process().memory_info().rss
    with PeakRSS([os.getpid()]) as peak:
        t0 = time.perf_counter()
        ds = xr.open_mfdataset(files, combine="nested", concat_dim="realization",
                               engine="netcdf4").load()
        x = ds["density"].values
        y = np.log(np.maximum(x, FLOOR))
        mean, std = float(y.mean(dtype=np.float64)), float(y.std(dtype=np.float64))
        y -= mean
        y /= std
        seconds = time.perf_counter() - t0
    nbytes = x.nbytes
    del ds, x, y
    return {"seconds": seconds, "bytes": nbytes, "mb_per_s": nbytes / 1e6 / seconds,
            "peak_rss_mib": peak.peaks[0] / 2 ** 20,
            "peak_rss_above_start_mib": (peak.peaks[0] - rss0) / 2 ** 20,
            "log_mean": mean, "log_std": std}


def ours(work: Path, files: list[Path], chunk_mb: float, workers: int, memory_limit: str) -> dict:
    from distributed import Client, LocalCluster

    config = DataConfig.from_dict({
        "files": [str(f) for f in files], "variables": ["density"],
        "spatial_dims": ["x", "y"], "sample_dims": ["realization"], "units": "1",
        "params": {"index": {"source": "variable_attribute"},
                   "amplitude": {"source": "variable_attribute", "units": "Mparsec2"}},
        "transform": {"log": True, "floor": FLOOR},
        "split": {"validation": 0.0, "held_out": 0.0}, "chunk_mb": chunk_mb})
    store = work / "store.zarr"
    with LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory_limit,
                      processes=True, host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())
        limit = psutil.virtual_memory().total
        for w in cluster.scheduler_info["workers"].values():
            limit = w.get("memory_limit", limit)
        with PeakRSS(pids) as peak:
            t0 = time.perf_counter()
            info = preprocess(config, store, client=client, progress=False)
            seconds = time.perf_counter() - t0
    stats = open_store(info.path).stats[0]
    store_bytes = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    return {"seconds": seconds, "bytes": info.bytes_read, "mb_per_s": info.bytes_read / 1e6 / seconds,
            "timings_s": info.timings, "workers": workers, "memory_limit_bytes": int(limit), "chunk_mb": chunk_mb,
            "peak_rss_per_worker_mib": [p / 2 ** 20 for p in peak.peaks],
            "peak_fraction_of_limit": max(peak.peaks) / limit,
            "store_bytes": store_bytes, "log_mean": stats["mean"], "log_std": stats["std"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=2.0, help="size of the sweep (1e9 bytes)")
    parser.add_argument("--size", type=int, default=1024, help="cells per side of a field")
    parser.add_argument("--realizations", type=int, default=4)
    parser.add_argument("--chunk-mb", type=float, default=64.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="1GiB")
    parser.add_argument("--note", default="", help="free text recorded in the JSON")
    add_output_options(parser, "preprocess")
    args = parser.parse_args(argv)
    if args.smoke:  # 16 files of 4 fields of 64x64 in 4 chunks
        args.gb, args.size, args.chunk_mb = 0.001, 64, 0.25

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rho-bench-preprocess-") as tmp:
        work = Path(tmp) if args.smoke else WORK
        files = make_sweep(work, args.gb, args.size, args.realizations)
        sweep_bytes = sum(f.stat().st_size for f in files)
        base = baseline(files)
        mine = ours(work, files, args.chunk_mb, args.workers, args.memory_limit)
    load_after = os.getloadavg()
    ratio = mine["mb_per_s"] / base["mb_per_s"]
    result = {
        "benchmark": "preprocess", "machine": machine(), "smoke": args.smoke,
        "load_average_before": load_before, "load_average_after": load_after,
        "shared_cpu_note": args.note or ("other processes shared the CPU cores during this run"
                                         if load_before[0] > 0.5 else ""),
        "sweep": {"kind": "lognormal-field", "files": len(files), "bytes": sweep_bytes,
                  "field_shape": [args.size, args.size], "realizations_per_file": args.realizations},
        "baseline": base, "preprocess": mine,
        "throughput_ratio_vs_baseline": ratio,
        "goal": {"throughput_ratio_min": 0.5, "worker_peak_fraction_max": 0.8},
        "goal_met": bool(ratio >= 0.5 and mine["peak_fraction_of_limit"] < 0.8),
        "stats_agree": bool(abs(mine["log_mean"] - base["log_mean"]) < 1e-6 * max(1, abs(base["log_mean"]))
                            and abs(mine["log_std"] / base["log_std"] - 1) < 1e-5),
    }
    path = write_result(result_path("preprocess", args), result)
    rows = [("sweep", f"{len(files)} files, {sweep_bytes / 1e9:.2f} GB"),
            ("baseline open_mfdataset().load() + numpy",
             f"{base['seconds']:.1f} s, {base['mb_per_s']:.0f} MB/s, peak RSS "
             f"{base['peak_rss_mib']:.0f} MiB"),
            (f"preprocess, {args.workers} workers x {args.memory_limit}",
             f"{mine['seconds']:.1f} s, {mine['mb_per_s']:.0f} MB/s, peak per worker "
             + ", ".join(f"{p:.0f}" for p in mine["peak_rss_per_worker_mib"]) + " MiB "
             f"({100 * mine['peak_fraction_of_limit']:.0f}% of limit)"),
            ("throughput ratio vs baseline", f"{ratio:.2f} (goal >= 0.5)"),
            ("load average before / after", f"{load_before[0]:.2f} / {load_after[0]:.2f}")]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
