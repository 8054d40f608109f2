"""The one provenance record: who made a file, when, with which versions.

Checkpoints, training stores and generated sweeps all carry it; netCDF files add a CF
``history`` line (:func:`history_line`).
"""

from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any

__all__ = ["versions", "history_line", "provenance_record", "utc_now", "git_commit"]


def utc_now() -> str:
    """The current UTC time as ``YYYY-mm-ddTHH:MM:SSZ``."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def versions() -> dict[str, str]:
    """Versions of the packages that shape the numbers of a result."""
    import numpy

    from rho_workflow import __version__

    out = {"rho_workflow": __version__, "numpy": numpy.__version__,
           "python": platform.python_version()}
    try:
        import torch
    except ImportError:  # the data layer runs without torch
        return out
    return {**out, "torch": torch.__version__}


def history_line(action: str) -> str:
    """One CF ``history`` entry: ISO timestamp, program and action."""
    from rho_workflow import __version__

    return f"{utc_now()} rho_workflow {__version__}: {action}"


def provenance_record(**extra: Any) -> dict[str, Any]:
    """``created``, ``host`` and :func:`versions`, plus the caller's own fields."""
    return {"created": utc_now(), "host": platform.node(), **versions(), **extra}


def git_commit(where: str | Path) -> str | None:
    """The short commit hash of the git checkout holding ``where``, or None outside one."""
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(where)).stdout.strip()
    except Exception:  # no git, or not a checkout (an installed package)
        return None
