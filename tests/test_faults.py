"""Faults on a real local cluster: the walltime's SIGTERM and SIGKILL in training and in a
sweep, a worker killed, the disk full during consolidation, the scheduler lost, damaged
artefacts under --resume, a second run into the same folder. Every time the run is refused
or stops with one clear message, what was finished is kept, and ``--resume`` completes with
the output of an undisturbed run (outputs lost: 0).

Each test drives the ``rho-workflow`` command in a subprocess (as a batch job would) on a
tiny model, and is marked ``fault`` for the README's reliability table."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from rho_workflow.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "rho_workflow.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def fault_pipeline(root: Path) -> dict:
    from test_pipeline_e2e import small_pipeline

    spec = small_pipeline(root)
    spec["training"].update(steps=300, checkpoint_every=20)
    spec["sampling"].update(members=8, chunk_size=2, batch_size=2, steps=20)
    spec["evaluation"]["enabled"] = False
    return spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """simulate + preprocess + train once, and an undisturbed sweep: the reference outputs."""
    from rho_workflow.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("faults")
    spec = fault_pipeline(root)
    results = run_pipeline(spec, progress=False)
    assert results["sample"]["chunks"] == 16
    return root, spec


def workdir(trained, tmp_path, keep=("store", "model.ckpt"), **changes) -> tuple[Path, dict]:
    """A fresh output folder holding copies of the reference store and checkpoint, and the
    pipeline file pointing at it."""
    root, spec = trained
    spec = copy.deepcopy(spec)
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    for name in keep:
        src = root / "out" / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, out / name)
    spec["output"]["dir"] = str(out)
    for section, values in changes.items():
        spec[section] = {**spec[section], **values}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, spec


def start(*args: str, log: Path) -> subprocess.Popen:
    """``rho-workflow ARGS`` in its own session (a batch job's process group)."""
    return subprocess.Popen([*CLI, "-q", *args], cwd=ROOT, env=ENV, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "-q", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120, what: str = "") -> None:
    t0 = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {what}")
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def chunks_done(out: Path) -> int:
    from rho_workflow.workflow.manifest import recorded_chunks

    return len(recorded_chunks(out / "parts" / "manifest.json"))


def checkpoint_step(path: Path) -> int:
    return int(load_checkpoint(path)["trainer_state"]["step"])


def same_sweep(a: Path, b: Path) -> bool:
    with xr.open_dataset(a) as x, xr.open_dataset(b) as y:
        return bool(np.array_equal(x["density"].values, y["density"].values))


def same_weights(a: Path, b: Path) -> bool:
    import torch

    sa, sb = load_checkpoint(a)["model_state"], load_checkpoint(b)["model_state"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def kept(record_property):
    """``kept(same)``: record whether the fault left the output of an undisturbed run
    (``outputs_lost`` 0) or lost it (1), for the README's table; returns ``same``."""
    def check(same: bool) -> bool:
        record_property("outputs_lost", 0 if same else 1)
        return same
    return check


def error_line(stderr: str) -> str:
    """The one message of a failed command (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("rho-workflow: ")]
    assert len(lines) == 1, stderr
    return lines[0]


# -- the walltime of a batch job: SIGTERM, then SIGKILL -------------------------------------

@pytest.mark.fault("SIGTERM mid-training: checkpoint written, resubmitted job continues")
def test_sigterm_mid_training_checkpoints_and_resume_continues(trained, tmp_path, kept):
    path, _ = workdir(trained, tmp_path, keep=("store",))
    out = tmp_path / "out"
    proc = start("train", str(path), log=tmp_path / "err")
    wait_for(lambda: (out / "model.ckpt").is_file(), proc, what="the first checkpoint")
    proc.send_signal(signal.SIGTERM)  # to the driver only, as `#SBATCH --signal=B:TERM`
    assert proc.wait(60) == 143
    message = error_line((tmp_path / "err").read_text())
    assert "stopped by SIGTERM at step" in message and "--resume" in message
    step = checkpoint_step(out / "model.ckpt")
    assert 20 <= step < 300
    assert not (out / "rho-workflow.lock").exists() and not (out / "stop-request").exists()
    again = cli("train", str(path), "--resume")
    assert again.returncode == 0, again.stderr
    assert checkpoint_step(out / "model.ckpt") == 300
    assert kept(same_weights(out / "model.ckpt", trained[0] / "out" / "model.ckpt"))


@pytest.mark.fault("SIGKILL mid-training (grace period over): resume from the last checkpoint")
def test_sigkill_mid_training_resumes_from_the_last_periodic_checkpoint(trained, tmp_path, kept):
    path, _ = workdir(trained, tmp_path, keep=("store",))
    out = tmp_path / "out"
    proc = start("train", str(path), log=tmp_path / "err")
    wait_for(lambda: (out / "model.ckpt").is_file(), proc, what="the first checkpoint")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local workers
    proc.wait(60)
    assert (out / "rho-workflow.lock").is_file()  # left behind by the killed driver
    again = cli("train", str(path), "--resume")
    assert again.returncode == 0, again.stderr
    assert "taking over the stale lock" in again.stderr
    assert checkpoint_step(out / "model.ckpt") == 300
    assert kept(same_weights(out / "model.ckpt", trained[0] / "out" / "model.ckpt"))


@pytest.mark.fault("SIGTERM mid-sweep: finished chunks kept, --resume completes")
def test_sigterm_mid_sweep_then_resume(trained, tmp_path, kept):
    path, _ = workdir(trained, tmp_path)
    out = tmp_path / "out"
    proc = start("sample", str(path), log=tmp_path / "err")
    wait_for(lambda: chunks_done(out) >= 2, proc, what="two finished chunks")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143
    assert "stopped by SIGTERM" in error_line((tmp_path / "err").read_text())
    finished = chunks_done(out)
    assert 2 <= finished < 16 and not (out / "samples.nc").exists()
    again = cli("sample", str(path), "--resume")
    assert again.returncode == 0, again.stderr
    assert f"({finished} resumed)" in again.stdout
    assert kept(same_sweep(out / "samples.nc", trained[0] / "out" / "samples.nc"))


@pytest.mark.fault("SIGKILL mid-sweep (driver and workers): stale lock taken over, resume completes")
def test_sigkill_mid_sweep_then_resume(trained, tmp_path, kept):
    path, _ = workdir(trained, tmp_path)
    out = tmp_path / "out"
    proc = start("sample", str(path), log=tmp_path / "err")
    wait_for(lambda: chunks_done(out) >= 2, proc, what="two finished chunks")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
    finished = chunks_done(out)
    again = cli("sample", str(path), "--resume")
    assert again.returncode == 0, again.stderr
    assert "taking over the stale lock" in again.stderr
    assert f"({finished} resumed)" in again.stdout
    assert kept(same_sweep(out / "samples.nc", trained[0] / "out" / "samples.nc"))


@pytest.mark.fault("SIGKILL mid zarr sweep (regions written by the tasks): resume rewrites only "
                   "unrecorded regions; the store and its netCDF copy equal the netCDF sweep")
def test_sigkill_mid_zarr_sweep_then_resume(trained, tmp_path, kept):
    path, _ = workdir(trained, tmp_path, output={"format": "zarr", "netcdf_copy": True})
    out = tmp_path / "out"
    proc = start("sample", str(path), log=tmp_path / "err")
    wait_for(lambda: chunks_done(out) >= 2, proc, what="two recorded regions")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
    finished = chunks_done(out)
    assert not (out / "samples.zarr").exists() and not (out / "samples.nc").exists()
    again = cli("sample", str(path), "--resume")
    assert again.returncode == 0, again.stderr
    assert f"({finished} resumed)" in again.stdout
    reference = trained[0] / "out" / "samples.nc"
    with xr.open_zarr(out / "samples.zarr") as z, xr.open_dataset(reference) as ref:
        same = bool(np.array_equal(z["density"].values, ref["density"].values))
    same = same and same_sweep(out / "samples.nc", reference)
    (out / "samples.nc").unlink()  # a finished sweep's copy lost: --resume makes it again
    third = cli("sample", str(path), "--resume")
    assert third.returncode == 0, third.stderr
    assert "(16 resumed)" in third.stdout
    assert kept(same and same_sweep(out / "samples.nc", reference))


@pytest.mark.fault("a worker process killed mid-sweep: its chunk reruns elsewhere")
def test_a_worker_killed_mid_sweep_is_survived(trained, tmp_path, kept):
    import psutil

    path, _ = workdir(trained, tmp_path)
    out = tmp_path / "out"
    proc = start("sample", str(path), log=tmp_path / "err")
    wait_for(lambda: chunks_done(out) >= 1, proc, what="a finished chunk")
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True)
               if "spawn_main" in " ".join(p.cmdline()) or "multiprocessing" in " ".join(p.cmdline())]
    assert workers, "no worker processes found"
    workers[-1].kill()
    stdout, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, (tmp_path / "err").read_text()
    assert kept(same_sweep(out / "samples.nc", trained[0] / "out" / "samples.nc"))


# -- the disk fills during consolidation -----------------------------------------------------

def _mount_tmpfs(folder: Path, size_kb: int) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)],
                          capture_output=True)
    return done.returncode == 0


@pytest.mark.fault("disk full (ENOSPC) during consolidation: clear error, no partial file, "
                   "parts intact, resume completes")
def test_disk_full_during_consolidation(trained, tmp_path, kept):
    root, spec = trained
    out = tmp_path / "out"
    if not _mount_tmpfs(out, 4096):
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    try:
        path, _ = workdir(trained, tmp_path, keep=("model.ckpt",), output={"complevel": 0})
        # leave room for the 16 parts (one 4 KiB page each), the manifest and the lock, and
        # for less than half of the consolidated sweep (~45 KiB uncompressed)
        room = 16 * 4096 + 6 * 4096 + 20 * 1024
        stat = os.statvfs(out)
        filler = out / "filler"
        filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - room))
        failed = cli("sample", str(path))
        assert failed.returncode == 2
        message = error_line(failed.stderr)
        assert "No space left on device" in message and "output.dir" in message
        assert "--resume" in message
        assert not (out / "samples.nc").exists()
        assert not [p for p in out.iterdir() if p.name.startswith(".samples.nc")]
        manifest = json.loads((out / "parts" / "manifest.json").read_text())
        assert len(manifest["chunks"]) == 16  # every part intact, as recorded
        from rho_workflow.atomic import file_sha256

        assert all(file_sha256(out / "parts" / c["path"]) == c["sha256"]
                   for c in manifest["chunks"].values())
        filler.unlink()  # space freed: the resubmitted job can finish
        again = cli("sample", str(path), "--resume")
        assert again.returncode == 0, again.stderr
        assert "(16 resumed)" in again.stdout
        assert kept(same_sweep(out / "samples.nc", root / "out" / "samples.nc"))
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


# -- the scheduler dies ----------------------------------------------------------------------

def _scheduler(tmp_path: Path, name: str) -> tuple[subprocess.Popen, subprocess.Popen, str]:
    sched_file = tmp_path / f"{name}.json"
    logs = open(tmp_path / f"{name}.log", "w")
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                              "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                              str(sched_file)], env=ENV, stdout=logs, stderr=logs,
                             start_new_session=True)
    t0 = time.monotonic()
    while not sched_file.is_file() and time.monotonic() - t0 < 60:
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                               "--nthreads", "1", "--nworkers", "2", "--no-dashboard",
                               "--host", "127.0.0.1"], env=ENV, stdout=logs, stderr=logs,
                              start_new_session=True)
    return sched, worker, address


def _stop(*procs: subprocess.Popen) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)


@pytest.mark.fault("the external scheduler dies mid-sweep: clear error; --resume on a new "
                   "scheduler completes without recomputing finished chunks")
def test_scheduler_lost_mid_sweep_then_resume_on_a_new_one(trained, tmp_path, kept):
    path, spec = workdir(trained, tmp_path)
    out = tmp_path / "out"
    sched, worker, address = _scheduler(tmp_path, "first")
    try:
        cluster = f"{{kind: address, address: '{address}', wait_for_workers: 2, timeout_s: 30}}"
        proc = start("sample", str(path), "--cluster", cluster, log=tmp_path / "err")
        wait_for(lambda: chunks_done(out) >= 2, proc, what="two finished chunks")
        os.killpg(sched.pid, signal.SIGKILL)
        proc.communicate(timeout=180)
    finally:
        _stop(sched, worker)
    assert proc.returncode == 2
    message = error_line((tmp_path / "err").read_text())
    assert "scheduler" in message and "--resume" in message
    finished = chunks_done(out)
    assert 2 <= finished < 16
    sched, worker, address = _scheduler(tmp_path, "second")
    try:
        cluster = f"{{kind: address, address: '{address}', wait_for_workers: 2, timeout_s: 30}}"
        again = cli("sample", str(path), "--resume", "--cluster", cluster)
    finally:
        _stop(sched, worker)
    assert again.returncode == 0, again.stderr
    assert f"({finished} resumed)" in again.stdout
    assert kept(same_sweep(out / "samples.nc", trained[0] / "out" / "samples.nc"))


# -- damaged artefacts under --resume; two runs into one folder ------------------------------

@pytest.mark.fault("the finished sweep truncated afterwards: --resume notices and resamples it")
def test_resume_resamples_a_damaged_sweep(trained, tmp_path, kept):
    path, _ = workdir(trained, tmp_path)
    out = tmp_path / "out"
    assert cli("sample", str(path)).returncode == 0
    samples = out / "samples.nc"
    samples.write_bytes(samples.read_bytes()[:3000])
    again = cli("sample", str(path), "--resume")
    assert again.returncode == 0, again.stderr
    assert "changed after the sample stage wrote it" in again.stderr
    assert "(0 resumed)" in again.stdout  # not reported as resumed: sampled again
    assert kept(same_sweep(samples, trained[0] / "out" / "samples.nc"))
    assert (out / "previous" / "samples.nc").stat().st_size == 3000  # the damaged copy, kept


@pytest.mark.fault("a chunk of the finished zarr sweep truncated afterwards: --resume notices")
def test_resume_resamples_a_zarr_sweep_with_a_damaged_chunk(trained, tmp_path, kept):
    path, _ = workdir(trained, tmp_path, output={"format": "zarr"})
    out = tmp_path / "out"
    assert cli("sample", str(path)).returncode == 0
    store = out / "samples.zarr"
    with xr.open_zarr(store) as ds:
        reference = ds["density"].values
    victim = max(f for f in (store / "density" / "c").rglob("*") if f.is_file())
    victim.write_bytes(victim.read_bytes()[:10])
    again = cli("sample", str(path), "--resume")
    assert again.returncode == 0, again.stderr
    assert "changed after the sample stage wrote it" in again.stderr
    with xr.open_zarr(store) as ds:
        assert kept(np.array_equal(ds["density"].values, reference))  # sampled again, the same


@pytest.mark.fault("the finished checkpoint damaged afterwards: --resume retrains it")
def test_resume_retrains_a_damaged_checkpoint(trained, tmp_path, kept):
    path, _ = workdir(trained, tmp_path, keep=("store",))
    out = tmp_path / "out"
    assert cli("train", str(path)).returncode == 0
    ckpt = out / "model.ckpt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\xff" * 64
    ckpt.write_bytes(bytes(data))
    again = cli("train", str(path), "--resume")
    assert again.returncode == 0, again.stderr
    assert "changed after the train stage wrote it" in again.stderr
    assert checkpoint_step(ckpt) == 300
    assert kept(same_weights(ckpt, trained[0] / "out" / "model.ckpt"))


@pytest.mark.fault("the training store damaged after preprocess: --resume rebuilds it")
def test_resume_rebuilds_a_damaged_store(trained, tmp_path, kept):
    root, spec = trained
    path, _ = workdir(trained, tmp_path, keep=())
    out = tmp_path / "out"
    assert cli("preprocess", str(path)).returncode == 0
    victim = max((p for p in (out / "store").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:10])
    again = cli("preprocess", str(path), "--resume")
    assert again.returncode == 0, again.stderr
    assert "changed after the preprocess stage wrote it" in again.stderr
    from rho_workflow.data.store import open_store

    with open_store(out / "store") as rebuilt, open_store(root / "out" / "store") as reference:
        assert kept(np.array_equal(rebuilt.to_numpy("train")[0], reference.to_numpy("train")[0]))


@pytest.mark.fault("a second run into the same output folder: refused, naming the holder; "
                   "the first completes")
def test_a_second_run_into_the_same_folder_is_refused(trained, tmp_path, kept):
    path, _ = workdir(trained, tmp_path)
    out = tmp_path / "out"
    first = start("sample", str(path), log=tmp_path / "err")
    wait_for(lambda: chunks_done(out) >= 1, first, what="the first run's first chunk")
    # paused (SIGSTOP to its process group), the first run is alive and mid-sweep for as long
    # as the second takes to start: on an idle machine its other chunks could otherwise finish
    # before the second run reaches the lock
    os.killpg(first.pid, signal.SIGSTOP)
    try:
        second = cli("sample", str(path), "--overwrite")
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    assert second.returncode == 2
    message = error_line(second.stderr)
    assert f"in use by another run: pid {first.pid} on host" in message
    first.communicate(timeout=180)
    assert first.returncode == 0, (tmp_path / "err").read_text()
    assert kept(same_sweep(out / "samples.nc", trained[0] / "out" / "samples.nc"))
    assert not (out / "rho-workflow.lock").exists()
