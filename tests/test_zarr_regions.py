"""Zarr sweeps written by region: each chunk task writes its part of the final store.

On real files and a real local Dask cluster: the region-written store holds the values of the
netCDF consolidation bit for bit, with the same labels and CF attributes, whatever the
workers and chunk size; the driver's finishing step reads no field data; a sweep killed
mid-way resumes by rewriting only the regions it had not recorded (and any found damaged);
the netCDF copy is the netCDF output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from test_sweep import SPACE, checkpoint, sampling  # noqa: F401  (checkpoint: a fixture)
from rho_workflow.workflow.sweep import plan_sweep

pytest.importorskip("zarr")

UNITS = {"density": "percent"}  # output units differ from the training units ("1"): a x100
ATTRS = {"Conventions": "CF-1.8", "title": "region test", "history": "fixed for the comparison"}


def region_plan(chunk_size: int = 4, members: int = 4, steps: int = 3):
    return plan_sweep(sampling(grid={"index": [-2.5, -2.0, -1.5], "amplitude": [0.75, 1.5]},
                               members=members, batch_size=2, chunk_size=chunk_size,
                               steps=steps), SPACE)


def sweep(checkpoint, out: Path, plan, fmt: str, client=None, **kw) -> dict:
    from rho_workflow.workflow.sampling import run_sweep

    return run_sweep(plan, checkpoint, out, out.with_name(out.name + "-parts"), client=client,
                     fmt=fmt, progress=False, attrs=ATTRS, units=UNITS, **kw)


@pytest.fixture(scope="module")
def netcdf_output(checkpoint, tmp_path_factory):  # noqa: F811
    """The reference: the sweep consolidated into netCDF by the driver, in this process."""
    out = tmp_path_factory.mktemp("reference") / "samples.nc"
    sweep(checkpoint, out, region_plan(), "netcdf")
    return out


def test_region_written_store_is_the_netcdf_output_value_for_value(checkpoint, netcdf_output,  # noqa: F811
                                                                   tmp_path):
    out = tmp_path / "samples.zarr"
    summary = sweep(checkpoint, out, region_plan(), "zarr")
    assert summary["chunks_run"] == 6 and summary["format"] == "zarr"
    assert not (tmp_path / "samples.zarr-parts").exists()  # nothing left beside the store
    with xr.open_dataset(netcdf_output) as nc, xr.open_zarr(out, consolidated=True) as zr:
        a, b = nc["density"].values, zr["density"].values
        assert a.dtype == b.dtype == np.float32 and np.isfinite(a).all()
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))  # the same bits
        assert zr["density"].attrs["units"] == nc["density"].attrs["units"] == "percent"
        for name in nc.variables:
            assert zr[name].dims == nc[name].dims and zr[name].attrs == nc[name].attrs, name
            np.testing.assert_array_equal(zr[name].values, nc[name].values)
        extra = set(zr.attrs) - set(nc.attrs)
        assert extra == {"rho_sweep_fingerprint", "rho_regions_sha256"}
        assert {k: zr.attrs[k] for k in nc.attrs} == nc.attrs
        # chunk-aligned regions: a zarr chunk holds whole fields of members of one point
        assert zr["density"].encoding["chunks"] == (1, 1, 4, 8, 8)


def test_output_complevel_sets_the_stores_compression(checkpoint, netcdf_output, tmp_path):  # noqa: F811
    """output.complevel reaches the zarr store (Blosc zstd + shuffle at that level; 0: none)
    and changes the bytes on disk, not the values."""
    import zarr

    sizes = {}
    for level in (0, 9):
        out = tmp_path / f"samples-{level}.zarr"
        sweep(checkpoint, out, region_plan(), "zarr", complevel=level)
        array = zarr.open_group(out, mode="r")["density"]
        codecs = [type(c).__name__ for c in array.compressors]
        assert codecs == ([] if level == 0 else ["BloscCodec"]), codecs
        if level:
            assert array.compressors[0].clevel == 9 and array.compressors[0].cname.value == "zstd"
        sizes[level] = sum(f.stat().st_size for f in (out / "density").rglob("*") if f.is_file())
        with xr.open_dataset(netcdf_output) as nc, xr.open_zarr(out) as zr:
            np.testing.assert_array_equal(zr["density"].values, nc["density"].values)
    assert sizes[9] < sizes[0], sizes


def test_identical_across_workers_and_chunk_sizes(checkpoint, netcdf_output, tmp_path):  # noqa: F811
    from rho_workflow.workflow.cluster import LocalKind

    with xr.open_dataset(netcdf_output) as nc:
        reference = nc["density"].values
    outputs = {}
    with LocalKind(n_workers=1, dashboard=False).connect() as client:
        outputs["1 worker, chunk 2"] = sweep(checkpoint, tmp_path / "one.zarr", region_plan(2),
                                             "zarr", client)
    with LocalKind(n_workers=2, dashboard=False).connect() as client:
        outputs["2 workers, chunk 6"] = sweep(checkpoint, tmp_path / "two.zarr", region_plan(6),
                                              "zarr", client)
    assert len(outputs["2 workers, chunk 6"]["workers"]) == 2
    for name, summary in outputs.items():
        with xr.open_zarr(summary["output"]) as zr:
            assert np.array_equal(zr["density"].values, reference), name
    with xr.open_zarr(tmp_path / "two.zarr") as zr:  # chunk 6, 4 members: 2 members per chunk
        assert zr["density"].encoding["chunks"] == (1, 1, 2, 8, 8)


@pytest.mark.parametrize("field_bytes", [256, 4096, 1 << 20])
def test_store_chunks_never_straddle_a_task_boundary(field_bytes):
    """A chunk of ``p`` points x ``m`` members holds ``b = p * m`` consecutive samples; with
    ``m`` dividing the members (and ``p > 1`` only with all members, ``p`` dividing the axis)
    chunk boundaries fall at the multiples of ``b``, so ``b`` must divide ``chunk_size``."""
    from rho_workflow.workflow.regions import TARGET_CHUNK_BYTES, chunk_shape

    for last in (1, 2, 3, 6):
        for members in (1, 2, 3, 4, 8, 10, 16, 32):
            for chunk_size in (1, 2, 4, 6, 16, 24, 64, 4096):
                plan = plan_sweep(sampling(grid={"index": [-2.0], "amplitude": list(
                    np.linspace(0.5, 2.0, last))}, members=members, batch_size=1,
                    chunk_size=chunk_size), SPACE)
                p, m = chunk_shape(plan, field_bytes)
                b = p * m
                assert chunk_size % b == 0 and members % m == 0 and last % p == 0
                assert p == 1 or m == members
                assert b == 1 or b * field_bytes <= TARGET_CHUNK_BYTES
    plan = plan_sweep(sampling(grid={"index": [-2.0], "amplitude": list(np.linspace(0.5, 2, 80))},
                               members=16, batch_size=16, chunk_size=4096), SPACE)
    assert chunk_shape(plan, 1024) == (16, 16)  # 256 fields of 1 kB: 16 points of 16 members
    assert chunk_shape(plan, 1 << 20) == (1, 1)  # 1 MB fields: one each


def test_sealing_reads_no_field_data(checkpoint, tmp_path):  # noqa: F811
    """The driver's step after the tasks touches metadata only: it succeeds on a store whose
    field chunks are all gone, and so does the run record's digest."""
    import shutil

    from rho_workflow.workflow.regions import (create_region_store, region_store_digest,
                                               seal_region_store)
    from rho_workflow.workflow.sampling import checkpoint_labels

    plan = region_plan()
    metadata, _ = checkpoint_labels(checkpoint)
    store = create_region_store(tmp_path / "s.zarr", plan, metadata, attrs=ATTRS, units=UNITS)
    hashes = {c.index: store.write(c.start, c.stop,
                                   np.ones((c.size, 1, 8, 8), np.float32))["sha256"]
              for c in plan.chunks}
    assert store.sha256(0, 4) == hashes[0]
    shutil.rmtree(tmp_path / "s.zarr" / "density" / "c")
    assert store.sha256(0, 4) != hashes[0]  # unwritten chunks read as NaN: the hash differs
    seal_region_store(store, ATTRS, hashes)
    digest = region_store_digest(tmp_path / "s.zarr")
    assert digest is not None and len(digest) == 64
    with xr.open_zarr(tmp_path / "s.zarr") as zr:
        assert np.isnan(zr["density"].values).all() and zr.attrs["title"] == "region test"


KILLED_SWEEP = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_zarr_regions import region_plan, sweep
    sweep({checkpoint!r}, __import__("pathlib").Path({out!r}), region_plan(2, steps=12), "zarr")
""")


def region_files(store: Path) -> dict[int, dict[str, int]]:
    """``chunk -> {zarr chunk file: inode}`` of the field chunks written so far (a chunk's
    file is renamed into place whole, so a rewrite changes its inode)."""
    plan = region_plan(2, steps=12)
    files: dict[int, dict[str, int]] = {}
    for f in (store / "density" / "c").rglob("*"):
        if f.is_file():
            i, j, k = (int(p) for p in f.relative_to(store / "density" / "c").parts[:3])
            first_sample = (i * 2 + j) * plan.members + k * 2  # 2 members per zarr chunk
            files.setdefault(first_sample // plan.chunk_size, {})[str(f)] = f.stat().st_ino
    return files


def test_a_killed_sweep_resumes_rewriting_only_unrecorded_regions(checkpoint, tmp_path):  # noqa: F811
    from rho_workflow.workflow.manifest import recorded_chunks

    out = tmp_path / "samples.zarr"
    parts = tmp_path / "samples.zarr-parts"
    script = KILLED_SWEEP.format(tests=str(Path(__file__).parent), checkpoint=str(checkpoint),
                                 out=str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True,
                            stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while len(recorded_chunks(parts / "manifest.json")) < 4:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() - t0 < 180, "no region recorded in time"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, mid-sweep, maybe mid-write
    proc.wait(30)
    recorded = recorded_chunks(parts / "manifest.json")
    assert 4 <= len(recorded) < 12 and not out.exists()
    staging = parts / "samples.zarr"
    before = region_files(staging)
    assert set(recorded) <= set(before)
    # damage one recorded region on disk: its task notices and writes it again
    damaged = max(recorded)
    victim = sorted(before[damaged])[0]
    Path(victim).write_bytes(Path(victim).read_bytes()[:5])
    summary = sweep(checkpoint, out, region_plan(2, steps=12), "zarr", resume=True)
    assert summary["chunks_skipped"] == len(recorded) - 1
    assert summary["chunks_run"] == 12 - len(recorded) + 1
    after = region_files(out)
    assert set(after) == set(range(12))
    for index in recorded:  # intact recorded regions are not rewritten: the same files
        same = {f.replace(str(staging), str(out)): ino for f, ino in before[index].items()}
        if index == damaged:
            assert all(after[index][f] != ino for f, ino in same.items())
        else:
            assert after[index] == same, index
    reference = tmp_path / "reference.nc"
    sweep(checkpoint, reference, region_plan(4, steps=12), "netcdf")
    with xr.open_dataset(reference) as nc, xr.open_zarr(out) as zr:
        assert np.array_equal(nc["density"].values, zr["density"].values)


def test_netcdf_copy_is_the_netcdf_output(checkpoint, netcdf_output, tmp_path):  # noqa: F811
    copy = tmp_path / "copy.nc"
    summary = sweep(checkpoint, tmp_path / "samples.zarr", region_plan(), "zarr", netcdf_copy=copy)
    assert summary["netcdf_copy"] == str(copy) and summary["netcdf_copy_seconds"] > 0
    with xr.open_dataset(netcdf_output) as nc, xr.open_dataset(copy) as cp:
        xr.testing.assert_identical(nc.load(), cp.load())
        assert cp["density"].encoding["zlib"] and cp["density"].encoding["chunksizes"] == \
            nc["density"].encoding["chunksizes"]
    from cf_check import cf_report

    report = cf_report(copy)
    assert [m for i in report["high_priorities"] for m in i["msgs"]] == []


def test_manifest_journal_costs_the_same_whatever_the_sweep(tmp_path):
    """Recording a chunk appends one line: the manifest file is not rewritten per chunk, and
    a torn last line (a kill mid-append) only drops that record."""
    from rho_workflow.workflow.manifest import Manifest, recorded_chunks

    m = Manifest.open(tmp_path / "manifest.json", "fp", 1000, resume=False)
    size0 = (tmp_path / "manifest.json").stat().st_size
    for i in range(500):
        m.record(i, {"region": True, "sha256": f"{i:064x}"})
    assert (tmp_path / "manifest.json").stat().st_size == size0
    lines = (tmp_path / "manifest.json.journal").read_text().splitlines()
    sizes = [len(x) for x in lines]
    assert len(lines) == 500 and max(sizes) - min(sizes) == 2  # the digits of the index only
    with open(tmp_path / "manifest.json.journal", "a") as f:
        f.write('{"fingerprint": "fp", "index": 500, "entr')
    assert sorted(recorded_chunks(tmp_path / "manifest.json")) == list(range(500))
    again = Manifest.open(tmp_path / "manifest.json", "fp", 1000, resume=True)
    assert sorted(again.chunks) == list(range(500))
    assert not (tmp_path / "manifest.json.journal").exists()  # folded into manifest.json
    assert len(json.loads((tmp_path / "manifest.json").read_text())["chunks"]) == 500
