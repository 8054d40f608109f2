"""Checkpoints that load without unpickling arbitrary objects.

A checkpoint is one ``torch.save`` file holding only tensors, numbers, strings and plain
containers: the network weights, the EMA weights, the optimizer state, the trainer state
(step, random-generator states) and a JSON string with everything needed to rebuild the
model (resolved config, parameter space, normalization transform, metadata, versions). It is
read back with ``torch.load(weights_only=True)``, so a checkpoint from an untrusted source
cannot execute code. Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from rho_workflow.atomic import atomic_path, file_sha256
from rho_workflow.errors import RhoWorkflowError
from rho_workflow.provenance import versions

__all__ = ["save_checkpoint", "load_checkpoint", "file_sha256", "versions", "CheckpointError"]

FORMAT_VERSION = 1


class CheckpointError(RhoWorkflowError, RuntimeError):
    """A checkpoint file is missing, truncated, or not a rho_workflow checkpoint."""


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
    with atomic_path(path, suffix=".ckpt") as tmp:
        torch.save(payload, tmp)
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
            f"checkpoint {path}: cannot be read safely ({type(exc).__name__}: {_first_line(exc)}); "
            "it is truncated, or not a rho_workflow checkpoint; fix: write it again with "
            "RhoModel.save or the train stage (never load an untrusted file with pickle)"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != "rho_workflow-checkpoint":
        raise CheckpointError(f"checkpoint {path}: not a rho_workflow checkpoint")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format version {payload['format_version']} is newer than this "
            f"rho_workflow understands ({FORMAT_VERSION}); upgrade rho_workflow"
        )
    missing = [k for k in ("config_json", "model_state") if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path}: the entries {missing} are missing; it was not "
                              "written by RhoModel.save or the train stage; fix: write it again")
    try:
        payload["config"] = json.loads(payload.pop("config_json"))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path}: its config is not valid JSON ({exc}); fix: "
                              "write it again with RhoModel.save or the train stage") from None
    return payload


def _first_line(exc: Exception) -> str:
    """The cause without torch's advice to reload with ``weights_only=False`` (unsafe)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    safe = [line for line in lines if "weights_only" not in line and "WeightsUnpickler" not in line]
    return (safe or ["unsafe or unreadable content"])[0].strip()
