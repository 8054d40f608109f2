"""A small pipeline through a real SLURM scheduler (dask-jobqueue SLURMCluster).

Start a one-node SLURM on loopback first (as root): ``.ci/slurm.sh start``; then
``.venv/bin/python -m pytest -m slurm``. Skipped where no SLURM controller answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

pytestmark = pytest.mark.slurm

DEFAULT_CONF = Path(os.environ.get("RHO_SLURM_DIR", "/tmp/rho-slurm")) / "slurm.conf"


def slurm_available() -> str | None:
    """None when sinfo answers with an available node; else the reason to skip."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM client commands (sinfo, sbatch) are not installed; see .ci/slurm.sh install"
    if "SLURM_CONF" not in os.environ and DEFAULT_CONF.is_file():
        os.environ["SLURM_CONF"] = str(DEFAULT_CONF)
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return "sinfo timed out: no SLURM controller answers"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*") in ("idle", "mix", "alloc") for s in states):
        return f"no SLURM node is up (sinfo: {out.stdout.strip() or out.stderr.strip()}); start one " \
               "with .ci/slurm.sh start"
    return None


@pytest.fixture(scope="module", autouse=True)
def need_slurm():
    reason = slurm_available()
    if reason:
        pytest.skip(reason)


def test_pipeline_runs_on_slurm_workers(tmp_path):
    from test_pipeline_e2e import small_pipeline

    from rho_workflow.pipeline import run_pipeline

    spec = small_pipeline(tmp_path)
    spec["cluster"] = {"kind": "slurm", "jobs": 2, "cores": 1, "processes": 1, "memory": "2GiB",
                       "walltime": "00:20:00", "interface": "lo", "python": sys.executable,
                       "log_directory": str(tmp_path / "slurm-logs"),
                       "local_directory": str(tmp_path / "dask-tmp"),
                       "job_extra_directives": ["--job-name=rho-test"],
                       "wait_timeout_s": 120}
    results = run_pipeline(spec, progress=False)
    out = tmp_path / "out"
    with xr.open_dataset(out / "samples.nc") as ds:
        assert ds["density"].shape == (2, 2, 2, 16, 16)
        assert json.loads(ds.attrs["rho_pipeline_config"])["cluster"]["kind"] == "slurm"
    # the sweep's chunks ran in the SLURM jobs' workers
    assert len(results["sample"]["workers"]) >= 1
    assert all(w.startswith("tcp://127.0.0.1:") for w in results["sample"]["workers"])
    assert (out / "evaluation" / "summary.json").is_file()
    logs = list((tmp_path / "slurm-logs").glob("*.err"))
    assert logs, "dask-jobqueue wrote no job logs: the workers did not run as SLURM jobs"
