"""Checkpoints that load without unpickling arbitrary objects.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings and plain
containers: the network weights, the EMA weights, the optimizer state, the trainer state
(step, random-generator states) and a JSON string with everything needed to rebuild the
model (resolved config, parameter space, normalization transform, metadata, versions). It is
read back with ``torch.load(weights_only=True)``, so a checkpoint from an untrusted source
cannot execute code. Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "file_sha256", "versions", "CheckpointError"]

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, or not a rho_workflow checkpoint."""


def versions() -> dict[str, str]:
    """Versions of the packages that shape a checkpoint's numbers."""
    import numpy

    from rho_workflow import __version__

    return {
        "rho_workflow": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | os.PathLike, *, model_state: dict[str, torch.Tensor],
                    config: dict[str, Any], ema_state: dict[str, torch.Tensor] | None = None,
                    optimizer_state: dict | None = None, trainer_state: dict | None = None) -> Path:
    """Write a checkpoint atomically; ``config`` must be JSON-serializable."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "rho_workflow-checkpoint",
        "format_version": FORMAT_VERSION,
        "config_json": json.dumps({**config, "versions": versions()}, sort_keys=True),
        "model_state": {k: v.detach().cpu() for k, v in model_state.items()},
        "ema_state": None if ema_state is None else {k: v.detach().cpu() for k, v in ema_state.items()},
        "optimizer_state": optimizer_state,
        "trainer_state": trainer_state,
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; ``config`` comes back parsed from JSON."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle with objects, ...
        raise CheckpointError(
            f"checkpoint {path}: cannot be read safely ({type(exc).__name__}: {exc}); "
            "it is truncated, or not a rho_workflow checkpoint"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != "rho_workflow-checkpoint":
        raise CheckpointError(f"checkpoint {path}: not a rho_workflow checkpoint")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {payload['format_version']} is newer than this "
            f"rho_workflow understands ({FORMAT_VERSION}); upgrade rho_workflow"
        )
    payload["config"] = json.loads(payload.pop("config_json"))
    return payload


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (the checkpoint fingerprint recorded in outputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
