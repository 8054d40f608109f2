"""Where the Dask workers come from: one small class per kind of cluster, one factory.

=================  =====================================================================
kind               what :meth:`ClusterKind.connect` does
=================  =====================================================================
``local``          starts a :class:`distributed.LocalCluster` bound to 127.0.0.1 (default)
``address``        connects to a running scheduler (``dask scheduler``, dask-mpi)
``scheduler_file`` connects through a scheduler file written by ``dask scheduler`` / dask-mpi
``slurm``          submits worker jobs with :class:`dask_jobqueue.SLURMCluster`
``pbs``            submits worker jobs with :class:`dask_jobqueue.PBSCluster`
=================  =====================================================================

As in dask-jobqueue, a new batch system is a subclass that sets a few class attributes. For
the jobqueue kinds only the options written in the pipeline are passed on, so that
dask-jobqueue's own configuration (``jobqueue.slurm.*`` in ``~/.config/dask``) supplies the
rest: keyword > dask config file > default.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Any, ClassVar, Iterator, Mapping

from pydantic import Field

from rho_workflow.errors import ConfigError, RhoWorkflowError
from rho_workflow.sections import Section, validate_section

__all__ = ["SchedulerLost", "ClusterKind", "LocalKind", "AddressKind", "SchedulerFileKind", "JobqueueKind",
           "SLURMKind", "PBSKind", "CLUSTER_KINDS", "cluster_from_config", "parse_cluster_override"]

logger = logging.getLogger("rho_workflow")

#: glibc allocator settings for worker processes. Dask's nanny sets MALLOC_TRIM_THRESHOLD_ to
#: 64 KiB, which also turns off glibc's dynamic mmap threshold: every large tensor is then
#: mmapped and unmapped again, and CPU sampling runs about 40 % slower (measured on the demo
#: U-Net). These values keep freed memory in the heap instead (about 1.2x faster than glibc's
#: defaults there). Clusters started by this module use them when ``tune_malloc`` is on.
WORKER_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": 268435456, "MALLOC_MMAP_THRESHOLD_": 33554432}


def _worker_environ() -> dict[str, Any]:
    import dask
    import distributed  # noqa: F401  (loads distributed's config defaults)

    return {**dict(dask.config.get("distributed.nanny.pre-spawn-environ", {})), **WORKER_MALLOC_ENV}


#: Modules every worker imports before its first task (:class:`ImportFirst`). A worker
#: imports in two threads at once -- a task (opening a zarr store) and its event loop
#: (unpickling a message that names a zarr class) -- and zarr's package imports are circular:
#: the second import then fails with "cannot import name ... from partially initialized
#: module 'zarr.core.array'" and kills the task (seen in data-parallel training of the demo).
WORKER_IMPORTS = ("numpy", "xarray", "zarr", "netCDF4")


class ImportFirst:
    """A Dask worker plugin: import :data:`WORKER_IMPORTS` in the worker as it starts (and
    as it restarts), before any task or message can import them concurrently. Modules that
    are not installed are skipped."""

    name = "rho-workflow-import-first"

    def __init__(self, modules: tuple[str, ...] = WORKER_IMPORTS):
        self.modules = tuple(modules)

    def setup(self, worker: Any = None) -> None:
        for module in self.modules:
            try:
                importlib.import_module(module)
            except ImportError:
                pass


def _worker_plugin() -> Any:
    """:class:`ImportFirst` as a :class:`distributed.WorkerPlugin` (distributed imported late)."""
    from distributed import WorkerPlugin

    class _ImportFirst(ImportFirst, WorkerPlugin):
        pass

    return _ImportFirst()


class SchedulerLost(RhoWorkflowError, RuntimeError):
    """The client lost its Dask scheduler mid-run (the scheduler process died, its node or
    job ended, the network failed)."""


def _lost_scheduler(client: Any, exc: BaseException) -> bool:
    from distributed.client import FutureCancelledError

    if isinstance(exc, FutureCancelledError) and "connection-lost" in str(exc):
        return True
    return getattr(client, "status", "running") not in ("running", "newly-created")


class ClusterKind(Section):
    """Base class: a validated cluster section that can start (or reach) Dask workers."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def worker_count(self) -> int | None:
        """Workers this section will start, or None where it cannot be known in advance."""
        return None

    def provides(self, resource: str) -> bool | None:
        """Whether the workers it starts declare ``resource``; None when unknown."""
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.name, **self.model_dump()}

    def describe(self) -> str:
        """One line for ``--dry-run``: what will be started or reached."""
        opts = ", ".join(f"{k}={v!r}" for k, v in self.model_dump().items()
                         if v not in (None, {}, []))
        return f"{self.name} ({self.summary}): {opts}"

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        """Start or reach the cluster; yield a :class:`distributed.Client`; close on exit."""
        with contextlib.ExitStack() as stack:
            client = self._start(stack)
            client.register_plugin(_worker_plugin(), name=ImportFirst.name)
            logger.info("Dask dashboard: %s", client.dashboard_link)
            address = client.scheduler.address
            try:
                yield client
            except Exception as exc:
                if not _lost_scheduler(client, exc):
                    raise
                raise SchedulerLost(
                    what=f"the connection to the Dask scheduler at {address} was lost "
                         f"({type(exc).__name__})", where=f"cluster ({self.name})",
                    rule="a run needs its scheduler until it ends",
                    fix="finished chunks and checkpoints are kept: start the scheduler (or a new "
                        "one, and point the cluster section at it) and rerun with --resume") from None

    def _start(self, stack: contextlib.ExitStack) -> Any:
        raise NotImplementedError


class LocalKind(ClusterKind):
    """A :class:`distributed.LocalCluster` on this machine (worker processes by default).

    Every port it opens -- scheduler, dashboard, nannies, workers -- listens on ``host``
    only (``processes: false`` workers talk in-process and open no port but the dashboard): the loopback address by default, so that other users of a shared login node
    cannot reach the cluster or its dashboard. Set ``host: 0.0.0.0`` (or one interface's
    address) to open them to the network on purpose.
    """

    name: ClassVar[str] = "local"
    summary: ClassVar[str] = "LocalCluster, ports on `host` (127.0.0.1 by default)"
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    processes: bool = True
    memory_limit: str | int = "auto"
    resources: dict[str, Any] = Field(default_factory=dict)
    dashboard: bool = True
    host: str = Field("127.0.0.1", min_length=1)
    tune_malloc: bool = True

    def worker_count(self) -> int:
        return self.n_workers

    def provides(self, resource: str) -> bool:
        return float(self.resources.get(resource, 0)) > 0

    def _start(self, stack: contextlib.ExitStack) -> Any:
        import dask
        from distributed import Client, LocalCluster

        if self.tune_malloc and self.processes:
            stack.enter_context(dask.config.set(
                {"distributed.nanny.pre-spawn-environ": _worker_environ()}))
        cluster = stack.enter_context(LocalCluster(
            n_workers=self.n_workers, threads_per_worker=self.threads_per_worker,
            processes=self.processes, memory_limit=self.memory_limit,
            resources=dict(self.resources) or None,
            # threads talk in-process (no port at all); processes over TCP on `host` only
            **({"host": self.host} if self.processes else {}),
            dashboard_address=f"{self.host}:0" if self.dashboard else None,
            silence_logs=logging.WARNING))
        client = stack.enter_context(Client(cluster))
        client.wait_for_workers(self.n_workers)
        return client


class AddressKind(ClusterKind):
    """A scheduler that is already running, reached by its address."""

    name: ClassVar[str] = "address"
    summary: ClassVar[str] = "existing scheduler by address"
    address: str
    wait_for_workers: int = Field(1, ge=0)
    timeout_s: float = Field(120.0, gt=0)

    def _start(self, stack: contextlib.ExitStack) -> Any:
        from distributed import Client

        client = stack.enter_context(Client(self.address, timeout=self.timeout_s))
        if self.wait_for_workers:
            client.wait_for_workers(self.wait_for_workers, timeout=self.timeout_s)
        return client


class SchedulerFileKind(ClusterKind):
    """A scheduler that is already running, reached through its scheduler file (dask-mpi)."""

    name: ClassVar[str] = "scheduler_file"
    summary: ClassVar[str] = "existing scheduler by scheduler file"
    scheduler_file: str
    wait_for_workers: int = Field(1, ge=0)
    timeout_s: float = Field(120.0, gt=0)

    def _start(self, stack: contextlib.ExitStack) -> Any:
        from distributed import Client

        client = stack.enter_context(Client(scheduler_file=self.scheduler_file,
                                            timeout=self.timeout_s))
        if self.wait_for_workers:
            client.wait_for_workers(self.wait_for_workers, timeout=self.timeout_s)
        return client


class JobqueueKind(ClusterKind):
    """Workers started as batch jobs through dask-jobqueue.

    ``jobs`` jobs are submitted; each runs ``processes`` workers (dask-jobqueue's option)
    sharing ``cores`` and ``memory``. ``resources`` (e.g. ``{GPU: 1}``) become the workers'
    ``--resources`` argument. ``options`` passes any other keyword of the dask-jobqueue class
    through unchanged (``job_cpu``, ``shebang``, ``death_timeout`` ...).
    """

    cluster_class: ClassVar[str] = ""
    jobs: int = Field(1, ge=1)
    cores: int | None = Field(None, ge=1)
    memory: str | None = None
    processes: int | None = Field(None, ge=1)
    walltime: str | None = None
    queue: str | None = None
    account: str | None = None
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    python: str | None = None
    job_extra_directives: list[Any] = Field(default_factory=list)
    job_script_prologue: list[Any] = Field(default_factory=list)
    worker_extra_args: list[Any] = Field(default_factory=list)
    resources: dict[str, Any] = Field(default_factory=dict)
    scheduler_options: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    wait_timeout_s: float = Field(300.0, gt=0)
    tune_malloc: bool = True

    def worker_count(self) -> int | None:
        return None if self.processes is None else self.jobs * self.processes

    def provides(self, resource: str) -> bool | None:
        if float(self.resources.get(resource, 0)) > 0:
            return True
        return None if "--resources" in self.worker_extra_args else False

    def cluster_kwargs(self) -> dict[str, Any]:
        """The keywords given to the dask-jobqueue class: only those set in the pipeline."""
        skip = {"jobs", "resources", "options", "wait_timeout_s", "worker_extra_args", "tune_malloc",
                "job_script_prologue"}
        kwargs = {f: getattr(self, f) for f in type(self).model_fields
                  if f not in skip and getattr(self, f) not in (None, [], {})}
        extra_args = list(self.worker_extra_args)
        if self.resources:
            extra_args += ["--resources", ",".join(f"{k}={v}" for k, v in self.resources.items())]
        if extra_args:
            kwargs["worker_extra_args"] = extra_args
        prologue = list(self.job_script_prologue)
        if self.tune_malloc:
            prologue.append(f'export DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON="{WORKER_MALLOC_ENV!r}"')
        if prologue:
            kwargs["job_script_prologue"] = prologue
        return {**kwargs, **self.options}

    def job_script(self) -> str:
        """The batch script dask-jobqueue would submit (for ``--dry-run``)."""
        with self._make_cluster() as cluster:
            return cluster.job_script()

    def _make_cluster(self) -> Any:
        module_name, _, class_name = self.cluster_class.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except ImportError:
            raise ImportError(f"cluster kind {self.name!r} needs dask-jobqueue; install it with "
                              "`pip install rho_workflow[hpc]`") from None
        return cls(**self.cluster_kwargs())

    def _start(self, stack: contextlib.ExitStack) -> Any:
        from distributed import Client

        cluster = stack.enter_context(self._make_cluster())
        logger.info("submitting %d %s job(s):\n%s", self.jobs, self.name, cluster.job_script())
        cluster.scale(jobs=self.jobs)
        client = stack.enter_context(Client(cluster))
        client.wait_for_workers(self.worker_count() or self.jobs, timeout=self.wait_timeout_s)
        return client


class SLURMKind(JobqueueKind):
    name: ClassVar[str] = "slurm"
    summary: ClassVar[str] = "dask-jobqueue SLURMCluster"
    cluster_class: ClassVar[str] = "dask_jobqueue.SLURMCluster"


class PBSKind(JobqueueKind):
    name: ClassVar[str] = "pbs"
    summary: ClassVar[str] = "dask-jobqueue PBSCluster"
    cluster_class: ClassVar[str] = "dask_jobqueue.PBSCluster"


CLUSTER_KINDS: dict[str, type[ClusterKind]] = {
    cls.name: cls for cls in (LocalKind, AddressKind, SchedulerFileKind, SLURMKind, PBSKind)
}


def cluster_from_config(section: Mapping[str, Any] | str | None, path: str = "cluster") -> ClusterKind:
    """Resolve a cluster section (``{kind: ..., options...}`` or a bare kind name).

    A missing section means ``local`` with its defaults. Raises :class:`ConfigError` naming
    the key path; an unknown kind lists the valid ones.
    """
    if section is None:
        section = {"kind": "local"}
    if isinstance(section, str):
        section = {"kind": section}
    if not isinstance(section, Mapping):
        raise ConfigError([f"{path}: must be a mapping with a 'kind' key, got {section!r}"])
    options = dict(section)
    kind = options.pop("kind", "local")
    if kind not in CLUSTER_KINDS:
        raise ConfigError([f"{path}.kind: unknown cluster kind {kind!r}; valid kinds are "
                           f"{sorted(CLUSTER_KINDS)}"])
    return validate_section(CLUSTER_KINDS[kind], options, path)


def parse_cluster_override(text: str) -> dict[str, Any]:
    """``--cluster`` value: a kind name, a YAML file holding a cluster section, or inline YAML
    (``"{kind: local, n_workers: 4}"``)."""
    import os

    from rho_workflow.yamlio import load_yaml

    if os.path.isfile(text):
        with open(text) as f:
            value = load_yaml(f.read(), f"--cluster file {text}")
        if isinstance(value, Mapping) and "cluster" in value and "kind" not in value:
            value = value["cluster"]
    else:
        value = load_yaml(text, "--cluster")
    if isinstance(value, str):
        return {"kind": value}
    if not isinstance(value, Mapping):
        raise ConfigError([f"--cluster: expected a kind name ({sorted(CLUSTER_KINDS)}), a YAML "
                           f"file or an inline mapping, got {text!r}"])
    return dict(value)
