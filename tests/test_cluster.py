"""Cluster kinds: one factory, small classes; a real LocalCluster; jobqueue scripts."""

from __future__ import annotations

import pytest

from rho_workflow.workflow.cluster import (CLUSTER_KINDS, ConfigError, LocalKind, SLURMKind,
                                           cluster_from_config, parse_cluster_override)


def test_factory_lists_valid_kinds():
    with pytest.raises(ConfigError) as info:
        cluster_from_config({"kind": "yarn"})
    message = str(info.value)
    for name in CLUSTER_KINDS:
        assert name in message


@pytest.mark.parametrize("kind", sorted(CLUSTER_KINDS))
def test_every_kind_validates_and_round_trips(kind):
    required = {"address": {"address": "tcp://127.0.0.1:8786"},
                "scheduler_file": {"scheduler_file": "/tmp/scheduler.json"}}.get(kind, {})
    cluster = cluster_from_config({"kind": kind, **required})
    assert cluster.name == kind
    assert cluster_from_config(cluster.to_dict()).to_dict() == cluster.to_dict()
    assert kind in cluster.describe()


def test_missing_required_and_unknown_options():
    with pytest.raises(ConfigError, match=r"cluster.address: is required"):
        cluster_from_config({"kind": "address"})
    with pytest.raises(ConfigError, match=r"cluster: unknown keys \['gpus'\]"):
        cluster_from_config({"kind": "local", "gpus": 1})


def test_default_is_local_and_override_forms(tmp_path):
    assert isinstance(cluster_from_config(None), LocalKind)
    assert parse_cluster_override("slurm") == {"kind": "slurm"}
    assert parse_cluster_override("{kind: local, n_workers: 3}") == {"kind": "local", "n_workers": 3}
    f = tmp_path / "c.yaml"
    f.write_text("cluster:\n  kind: pbs\n  cores: 4\n")
    assert parse_cluster_override(str(f)) == {"kind": "pbs", "cores": 4}


def test_jobqueue_options_pass_through_to_the_job_script():
    cluster = cluster_from_config({
        "kind": "slurm", "cores": 2, "memory": "3GiB", "processes": 1, "walltime": "00:20:00",
        "account": "proj42", "queue": "gpu", "job_extra_directives": ["--gres=gpu:1"],
        "resources": {"GPU": 1}, "interface": "lo", "options": {"job_cpu": 2}})
    assert isinstance(cluster, SLURMKind)
    kwargs = cluster.cluster_kwargs()
    assert kwargs["worker_extra_args"] == ["--resources", "GPU=1"]
    assert "jobs" not in kwargs and kwargs["job_cpu"] == 2
    script = cluster.job_script()
    for text in ("#SBATCH -A proj42", "#SBATCH -p gpu", "#SBATCH -t 00:20:00", "#SBATCH --gres=gpu:1",
                 "--resources GPU=1", "--nthreads 2"):
        assert text in script, script


def test_local_cluster_starts_on_loopback():
    cluster = LocalKind(n_workers=1, threads_per_worker=1, resources={"GPU": 1}, dashboard=False)
    with cluster.connect() as client:
        info = client.scheduler_info()
        assert info["address"].startswith("tcp://127.0.0.1:")
        (worker,) = info["workers"].values()
        assert worker["resources"] == {"GPU": 1}
        assert client.submit(sum, [1, 2], resources={"GPU": 1}).result() == 3


def _imported(name: str) -> bool:
    import sys

    return name in sys.modules


def test_workers_import_zarr_before_their_first_task_and_after_a_restart():
    """zarr imported by a task and by the worker's event loop at once fails (its package
    imports are circular); every worker of a connected cluster has imported it first."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as bare, \
            Client(bare) as client:
        assert set(client.run(_imported, "zarr").values()) == {False}  # a plain worker has not
    with LocalKind(n_workers=2, threads_per_worker=1, dashboard=False).connect() as client:
        assert set(client.run(_imported, "zarr").values()) == {True}
        assert set(client.run(_imported, "zarr.core.array").values()) == {True}
        client.restart()
        assert set(client.run(_imported, "zarr").values()) == {True}


def test_existing_scheduler_by_address_and_by_scheduler_file(tmp_path):
    from distributed import LocalCluster

    scheduler_file = tmp_path / "scheduler.json"
    with LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      scheduler_kwargs={"scheduler_file": str(scheduler_file)}) as running:
        for section in ({"kind": "address", "address": running.scheduler_address},
                        {"kind": "scheduler_file", "scheduler_file": str(scheduler_file)}):
            with cluster_from_config(section).connect() as client:
                assert client.submit(pow, 2, 5).result() == 32
        assert running.scheduler.workers  # connecting did not stop the running cluster


def test_pbs_job_script():
    cluster = cluster_from_config({"kind": "pbs", "cores": 4, "memory": "8GiB", "walltime": "01:00:00",
                                   "account": "proj42", "queue": "workq", "resources": {"GPU": 1}})
    script = cluster.job_script()
    for text in ("#PBS -A proj42", "#PBS -q workq", "#PBS -l walltime=01:00:00", "--resources GPU=1",
                 "MALLOC_TRIM_THRESHOLD_"):
        assert text in script, script


def _listening() -> set[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket of this process and its children."""
    import psutil

    me = psutil.Process()
    found = set()
    for proc in [me, *me.children(recursive=True)]:
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {(proc.pid, c.laddr.ip, c.laddr.port) for c in conns
                  if c.status == psutil.CONN_LISTEN}
    return found


def test_every_port_of_the_local_cluster_listens_on_loopback_only():
    """Scheduler, dashboard, nannies and workers of a real LocalCluster: no socket on 0.0.0.0."""
    from urllib.parse import urlparse

    from rho_workflow.workflow.cluster import LocalKind

    before = _listening()
    with LocalKind(n_workers=2).connect() as client:
        opened = _listening() - before
        dashboard = urlparse(client.dashboard_link).port
        workers = client.scheduler_info()["workers"]
    assert len(workers) == 2
    assert dashboard in {port for _, _, port in opened}
    # scheduler + dashboard, and per worker at least its nanny and its worker port
    assert len(opened) >= 2 + 2 * 2, opened
    assert {ip for _, ip, _ in opened} == {"127.0.0.1"}, sorted(opened)


def test_the_cluster_section_can_open_the_ports_on_purpose():
    from rho_workflow.workflow.cluster import cluster_from_config

    assert cluster_from_config({"kind": "local"}).host == "127.0.0.1"
    assert cluster_from_config({"kind": "local", "host": "0.0.0.0"}).host == "0.0.0.0"
