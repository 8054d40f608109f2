"""Data-parallel training over Dask workers with torch.distributed.

:func:`train_data_parallel` submits one task per rank, each pinned to a distinct worker. The
rank-0 task binds a free port on its worker's host (never a fixed port) and publishes
``tcp://host:port`` through a :class:`distributed.Variable` of the scheduler; every rank reads
it and joins the process group (gloo on CPU, NCCL on GPU) with a timeout. The trainer then
wraps the network in DDP, each rank takes its slice of every global batch, and rank 0 writes
the checkpoint. If any rank fails (exception, lost worker, collective timeout) the whole group
fails, and the group is resubmitted, resuming from
the last checkpoint, until ``max_attempts`` is reached (a stop asked for through the stop
file is no failure: every rank stops at the same step, rank 0 checkpoints it, and
:class:`~rho_workflow.errors.RunInterrupted` is raised); the surviving ranks of a failed
attempt are stopped by restarting their worker processes (they are blocked in collectives).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import socket
import uuid
from typing import Any, Mapping

from rho_workflow.errors import RhoWorkflowError, RunInterrupted
from rho_workflow.workflow.retry import AttemptFailed, with_retries

__all__ = ["train_data_parallel", "ddp_rank_task", "free_port", "pick_workers", "RankFailure"]

logger = logging.getLogger("rho_workflow")


class RankFailure(RhoWorkflowError, RuntimeError):
    """A data-parallel group failed on every attempt."""


def free_port(host: str) -> int:
    """A TCP port that is free on ``host`` now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def ddp_rank_task(rank: int, world_size: int, rendezvous: str, spec: Mapping[str, Any], *,
                  backend: str, timeout_s: float,
                  fail_at: Mapping[str, int] | None = None) -> dict[str, Any]:
    """One rank: rendezvous through the scheduler, init the process group, train, tear down.

    ``fail_at`` (``{"rank", "step"}``) makes that rank raise after that step: fault injection
    for tests of the resubmission path.
    """
    import torch.distributed as dist
    from distributed import Variable, get_worker

    from rho_workflow.workflow.tasks import train_model

    variable = Variable(rendezvous)
    if rank == 0:
        host = get_worker().address.split("://")[-1].rsplit(":", 1)[0]
        variable.set(f"tcp://{host}:{free_port(host)}")
    address = variable.get(timeout=timeout_s)
    dist.init_process_group(backend, init_method=address, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        return train_model(spec, on_step=_failure_at(rank, fail_at))
    finally:
        dist.destroy_process_group()


def _failure_at(rank: int, fail_at: Mapping[str, int] | None) -> Any:
    """The fault-injection callback of ``rank`` (None when it is not the failing rank)."""
    if fail_at is None or int(fail_at["rank"]) != rank:
        return None

    def on_step(step: int, loss: float) -> None:
        if step + 1 >= int(fail_at["step"]):
            raise RuntimeError(f"injected failure of rank {rank} after step {step + 1}")

    return on_step


def pick_workers(client: Any, n: int, gpu: bool = False) -> list[str]:
    """``n`` distinct worker addresses (with a ``GPU`` resource when ``gpu``)."""
    workers = client.scheduler_info(n_workers=-1)["workers"]
    eligible = sorted(a for a, w in workers.items()
                      if not gpu or float(w.get("resources", {}).get("GPU", 0)) >= 1)
    if len(eligible) < n:
        need = " with resources GPU=1" if gpu else ""
        raise RankFailure(f"data-parallel training on {n} ranks needs {n} distinct workers{need}; "
                          f"the cluster has {len(eligible)} (of {len(workers)} workers)")
    return eligible[:n]


def train_data_parallel(client: Any, spec: Mapping[str, Any], world_size: int, *,
                        gpu: bool = False, backend: str = "auto", timeout_s: float = 300.0,
                        max_attempts: int = 2, fail_at: Mapping[str, int] | None = None
                        ) -> dict[str, Any]:
    """Train on ``world_size`` workers; return rank 0's result with the global losses.

    ``losses`` is the global-batch loss of each step (the mean of the ranks' shard losses,
    equal shards). Raises :class:`RankFailure` after ``max_attempts`` failed attempts.
    """
    from rho_workflow.workflow.tasks import TrainingSpec

    if backend == "auto":
        backend = "nccl" if gpu else "gloo"
    spec = TrainingSpec.coerce(spec)

    def attempt(k: int) -> dict[str, Any]:
        resumed = dataclasses.replace(spec, resume=spec.resume or k > 0)
        return _run_group(client, resumed, world_size, backend=backend, gpu=gpu,
                          timeout_s=timeout_s, fail_at=fail_at if k == 0 else None, attempt=k)

    return with_retries(attempt, max_attempts, "data-parallel training", RankFailure)


def _run_group(client: Any, spec: Any, world_size: int, *, backend: str, gpu: bool,
               timeout_s: float, fail_at: Mapping[str, int] | None, attempt: int) -> dict[str, Any]:
    """One attempt: a task per rank on distinct workers; rank 0's result with global losses."""
    from distributed import as_completed

    addresses = pick_workers(client, world_size, gpu)
    rendezvous = f"rho-ddp-{uuid.uuid4().hex}"
    futures = [client.submit(ddp_rank_task, rank, world_size, rendezvous, spec,
                             backend=backend, timeout_s=timeout_s, fail_at=fail_at,
                             workers=[address], allow_other_workers=False,
                             resources={"GPU": 1} if gpu else None, pure=False, retries=0,
                             key=f"train-rank{rank}-{rendezvous}")
               for rank, address in enumerate(addresses)]
    for done in as_completed(futures):
        if done.status == "error":
            _stop_group(client, futures, addresses)
            break
    failed = [(r, f.exception() if f.status == "error" else f.status)
              for r, f in enumerate(futures) if f.status != "finished"]
    if failed:
        raise AttemptFailed("; ".join(f"rank {r}: {type(e).__name__}: {e}" for r, e in failed))
    results = [f.result() for f in futures]
    if any(r.get("interrupted") for r in results):  # asked to stop (SIGTERM): not a failure to retry
        step = max(int(r.get("step") or 0) for r in results)
        raise RunInterrupted(f"data-parallel training stopped on request at step {step}; its "
                             f"checkpoint {results[0]['checkpoint']} holds that step; rerun with "
                             "--resume to continue", step=step)
    out = dict(results[0])
    out["losses"] = [sum(v) / len(v) for v in zip(*(r["losses"] for r in results))]
    out.update(ranks=world_size, attempts=attempt + 1, workers=addresses)
    return out


def _stop_group(client: Any, futures: list, addresses: list[str]) -> None:
    """End an attempt in which a rank failed: the surviving ranks are blocked in collectives,
    so their tasks are cancelled and their worker processes restarted (they come back empty)."""
    running = [a for f, a in zip(futures, addresses) if f.status not in ("error", "finished")]
    client.cancel([f for f in futures if f.status not in ("error", "finished")])
    if running:
        logger.warning("restarting the workers of the surviving ranks: %s", running)
        client.restart_workers(running, raise_for_error=False)
