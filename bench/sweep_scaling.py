"""Sweep sampling throughput: in one process without Dask, on 1 and 2 local Dask workers.

    .venv/bin/python bench/sweep_scaling.py                  # scaling table + 100k-field sweep
    .venv/bin/python bench/sweep_scaling.py --large 0        # scaling only
    .venv/bin/python bench/sweep_scaling.py --smoke          # seconds: tiny sweep, same code path

The same sweep (a grid of parameter points x members, fixed seeds and micro-batches) is
sampled three ways with the sweep runner of the pipeline (chunk tasks, parts, manifest,
consolidation to netCDF): ``in-process`` (no Dask), ``1 worker`` and ``2 workers`` (one thread
each, a LocalCluster on 127.0.0.1). Samples/s counts the sampling phase (the chunk tasks);
consolidation is reported apart, and so is the warm-up of each process (importing torch and
loading the model into the per-process cache, done once before the timed sweep). The script
re-runs itself with the glibc allocator settings that the workers get, so that all three use
the same allocator. The three outputs are compared bit for bit. Goals: 1 worker within 10 %
of in-process; 2 workers >= 1.7x one worker.

``--large N`` then writes a sweep of N 2D fields (tiny network, 2 steps) on 2 workers with a
memory limit per worker, and reports the peak resident memory of the workers and of this
process (the consolidation streams one part at a time), the output size and the time.
Results: a table on stdout and ``bench/results/sweep_scaling.json`` (machine description,
runs, ratios against the in-process baseline). ``--smoke`` runs the same three configurations
and the large sweep at tiny sizes (16x16 fields, 2 steps, one repeat) and writes to
``bench/work/smoke/`` or ``--out``.
"""

from __future__ import annotations

import argparse
import os
import resource
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
             memory_limit: str = "auto", complevel: int = 1) -> dict:
    from rho_workflow.workflow.cluster import LocalKind
    from rho_workflow.workflow.sampling import run_sweep

    out = work / f"{name}.nc"
    parts = work / f"{name}-parts"
    if workers is None:
        warm = warm_up(str(ckpt))
        summary = run_sweep(plan, ckpt, out, parts, progress=False, complevel=complevel)
        worker_rss = None
    else:
        cluster = LocalKind(n_workers=workers, threads_per_worker=1, dashboard=False,
                            memory_limit=memory_limit)
        with cluster.connect() as client:
            warm = max(client.run(warm_up, str(ckpt)).values())
            summary = run_sweep(plan, ckpt, out, parts, client=client, progress=False,
                                complevel=complevel)
            rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            worker_rss = max(rss.values()) / 1024  # MiB (ru_maxrss is KiB on Linux)
    return {"name": name, "workers": workers, "samples": plan.n_samples, "warm_up_seconds": warm,
            "chunks": len(plan.chunks), "seconds": summary["seconds"],
            "samples_per_second": summary["samples_per_second"],
            "consolidate_seconds": summary["consolidate_seconds"],
            "peak_worker_rss_mib": worker_rss, "output": str(out),
            "output_mib": out.stat().st_size / 2**20}


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


def main(argv: list[str] | None = None) -> int:
    same_allocator_as_workers()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32, help="cells per side of the fields")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="sampler steps")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each configuration; the best is kept (others share the CPUs)")
    parser.add_argument("--large", type=int, default=100_000,
                        help="fields of the larger-than-memory sweep (0: skip)")
    parser.add_argument("--large-memory", default="1GiB", help="memory limit per worker")
    add_output_options(parser, "sweep_scaling")
    args = parser.parse_args(argv)
    grid, batch, chunk = (8, 6), 16, 32
    if args.smoke:  # 6 points x 1 member in 3 chunks; a 250-field large sweep
        args.size, args.members, args.steps, args.repeats, args.large = 16, 1, 2, 1, 200
        grid, batch, chunk = (2, 3), 2, 2

    import xarray as xr

    results: dict = {"machine": machine(), "runs": [], "ratios": {}, "goals": {
        "one_worker_vs_in_process": ">= 0.90", "two_workers_vs_one_worker": ">= 1.7"}}
    with tempfile.TemporaryDirectory(prefix="rho-bench-") as tmp:
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
        if args.large:
            ckpt_small = make_checkpoint(work / "tiny.ckpt", 16, 4, [1, 2])
            per_axis = int(np.ceil(np.sqrt(args.large / 10)))
            big = sweep((per_axis, per_axis), 10, 2, batch=512, chunk=4096)
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            t0 = time.perf_counter()
            large = run_once(big, ckpt_small, work, "large sweep", 2,
                             memory_limit=args.large_memory, complevel=1)
            large["wall_seconds"] = time.perf_counter() - t0
            large["field_shape"] = [16, 16]
            large["worker_memory_limit"] = args.large_memory
            large["driver_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            large["driver_rss_before_mib"] = rss0
            large["uncompressed_mib"] = big.n_samples * 16 * 16 * 4 / 2**20
            large.pop("output")
            results["large_sweep"] = large
    results["machine"]["load_average_after"] = list(os.getloadavg())
    results["smoke"] = args.smoke
    path = write_result(result_path("sweep_scaling", args), results)
    print(table(results))
    print(f"\nwritten {path}")
    return 0


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
    if "large_sweep" in results:
        g = results["large_sweep"]
        lines.append(f"large sweep: {g['samples']} fields 16x16 in {g['chunks']} chunks on 2 workers "
                     f"(memory limit {g['worker_memory_limit']}): {g['samples_per_second']:.0f} "
                     f"samples/s, sampling {g['seconds']:.1f} s + consolidation "
                     f"{g['consolidate_seconds']:.1f} s; peak worker RSS {g['peak_worker_rss_mib']:.0f} MiB, "
                     f"driver peak RSS {g['driver_peak_rss_mib']:.0f} MiB; output {g['output_mib']:.0f} MiB "
                     f"({g['uncompressed_mib']:.0f} MiB uncompressed)")
    m = results["machine"]
    lines.append(f"machine: {m['cores']} cores ({m['cpu']}), load average before "
                 f"{m['load_average_at_start'][0]:.2f}, after {m['load_average_after'][0]:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
