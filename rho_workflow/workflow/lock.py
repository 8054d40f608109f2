"""The lock of an output folder: one run at a time writes into ``output.dir``.

A run holds ``output.dir/rho-workflow.lock`` (JSON: pid, host, process start time, command,
when) from its first stage to its end. A second run into the same folder is refused with a
message naming the holder. A lock left by a process that died (SIGKILL, a node crash) is
stale: on the same host the holder's pid is gone or belongs to a newer process, and the lock
is taken over with a warning. A lock held on another host cannot be checked from here; the
message says how to remove it once that process is known to be gone.

The lock is created complete or not at all: its content is written to a private file that
is then hard-linked to the lock's name (``link`` fails if the name exists, on local and NFS
file systems alike).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from rho_workflow.errors import RhoWorkflowError

__all__ = ["OutputLocked", "output_lock", "LOCK_NAME", "read_lock"]

LOCK_NAME = "rho-workflow.lock"
logger = logging.getLogger("rho_workflow")


class OutputLocked(RhoWorkflowError, RuntimeError):
    """Another live run holds the lock of the output folder."""


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), None if there is none."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # alive, start time unknown


def read_lock(path: str | os.PathLike) -> dict[str, Any] | None:
    """The holder recorded in a lock file, None if it is missing; ``{}`` if unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _is_stale(holder: dict[str, Any]) -> bool:
    """The holder ran on this host and is gone (its pid is free or reused since)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    started = _start_time(holder["pid"])
    if started is None:
        return True
    recorded = holder.get("started")
    return started > 0 and isinstance(recorded, (int, float)) and abs(started - recorded) > 1.0


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "an unreadable lock"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return (f"pid {holder.get('pid')} on host {holder.get('host')} (since {when}: "
            f"{holder.get('command', '?')})")


def _try_create(path: Path, record: dict[str, Any]) -> bool:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike, command: str | None = None) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if needed) for the duration of the block.

    Raises
    ------
    OutputLocked
        A live process (or one on another host) holds it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid()),
          "since": time.time(), "command": command or " ".join(sys.argv), "token": uuid.uuid4().hex}
    for _ in range(3):
        if _try_create(path, me):
            break
        holder = read_lock(path)
        if holder is None:
            continue  # released meanwhile
        if not _is_stale(holder):
            raise OutputLocked(what=f"the output folder is in use by another run: {_describe(holder)}",
                               where=str(path),
                               rule="one run at a time writes into an output folder",
                               fix="wait for that run to finish, or give this run another "
                                   "output.dir; if that process is gone (it ran on another host "
                                   f"or the lock is unreadable), delete {path}")
        aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, aside)  # only one taker wins the rename of this file
            if (read_lock(aside) or {}).get("token") != holder.get("token"):
                with contextlib.suppress(FileExistsError):  # a new holder's lock: put it back
                    os.link(aside, path)
            else:
                logger.warning("%s: taking over the stale lock of %s (that process is gone)",
                               path, _describe(holder))
            aside.unlink()
    else:
        raise OutputLocked(what="could not take the lock of the output folder", where=str(path),
                           fix="retry; another run is starting in the same folder")
    try:
        yield path
    finally:
        if (read_lock(path) or {}).get("token") == me["token"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
