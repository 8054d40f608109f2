"""The run record of an output folder (``run.json``) and the artefacts it vouches for.

Each finished stage is recorded with the fingerprint of the config it ran with and the
SHA-256 (:func:`~rho_workflow.atomic.tree_sha256`) of the artefact it wrote: simulations,
store, checkpoint, sweep. A zarr sweep written by region is vouched for by its metadata
documents, which carry the hash of every region's values as its tasks wrote them
(:func:`~rho_workflow.workflow.regions.region_store_digest`): hashing the store itself would
read the whole sweep back in this one process. A resumed run skips a stage only when both still match; an
artefact changed since (truncated, edited, half-copied) is moved to ``previous/`` and the
stage runs again. ``previous/`` also keeps the one earlier generation of an artefact that a
run replaced on purpose (``--overwrite``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

from rho_workflow.atomic import atomic_write_json, file_sha256, tree_sha256
from rho_workflow.errors import RhoWorkflowError

__all__ = ["RunRecord", "RunRecordError", "ReplaceRefused", "artefact_sha256"]

logger = logging.getLogger("rho_workflow")


class RunRecordError(RhoWorkflowError, RuntimeError):
    """``run.json`` cannot be read."""


class ReplaceRefused(RhoWorkflowError, RuntimeError):
    """A stage would replace an earlier artefact and was not asked to (``--overwrite``)."""


def artefact_sha256(path: Path) -> str:
    """The hash a run record keeps of an artefact (see the module docstring)."""
    from rho_workflow.workflow.regions import region_store_digest

    return (region_store_digest(path) if path.is_dir() else None) or tree_sha256(path)


class RunRecord:
    """``run.json`` of ``root`` and its ``previous/`` folder."""

    def __init__(self, root: Path, pipeline: str):
        self.path = Path(root) / "run.json"
        self.previous_dir = Path(root) / "previous"
        self.pipeline = pipeline

    def state(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"stages": {}}
        try:
            state = json.loads(self.path.read_text())
        except ValueError as exc:
            raise RunRecordError(what=f"the run record is not valid JSON ({exc})", where=str(self.path),
                                 fix="delete it (every stage then runs again) or restore it") from None
        if not isinstance(state, dict) or not isinstance(state.get("stages"), dict):
            raise RunRecordError(what="the run record has no 'stages' mapping", where=str(self.path),
                                 fix="delete it or restore it")
        return state

    def record(self, stage: str, fingerprint: str, result: Mapping[str, Any],
               artefact: Path | None = None) -> None:
        """Record ``stage`` as finished, with the hash of ``artefact`` as it is now."""
        state = self.state()
        state["pipeline"] = self.pipeline
        entry = {"fingerprint": fingerprint, "finished": time.time(), "result": dict(result)}
        if artefact is not None and artefact.exists():
            entry.update(artefact=str(artefact), sha256=artefact_sha256(artefact))
        state["stages"][stage] = entry
        atomic_write_json(self.path, state)

    def done(self, stage: str, fingerprint: str, artefact: Path | None = None) -> dict[str, Any] | None:
        """The recorded result of ``stage`` if it ran with ``fingerprint`` and its artefact
        is still the one it wrote; a damaged artefact is moved to ``previous/``."""
        entry = self.state()["stages"].get(stage)
        if not entry or entry.get("fingerprint") != fingerprint:
            return None
        if artefact is None:
            return entry["result"]
        if not artefact.exists():
            return None
        if entry.get("sha256") != artefact_sha256(artefact):
            kept = self.keep_previous(artefact)
            logger.warning("resume: %s changed after the %s stage wrote it (its SHA-256 differs "
                           "from the run record): the stage runs again; the damaged copy is "
                           "kept as %s", artefact, stage, kept)
            return None
        return entry["result"]

    def keep_previous(self, artefact: Path) -> Path:
        """Move ``artefact`` to ``previous/`` (replacing an older one there); return where."""
        self.previous_dir.mkdir(parents=True, exist_ok=True)
        kept = self.previous_dir / artefact.name
        if kept.is_dir():
            shutil.rmtree(kept)
        os.replace(artefact, kept)
        return kept

    def replace(self, artefact: Path, stage: str, *, resume: bool, overwrite: bool) -> Path | None:
        """Without ``resume``, an existing ``artefact`` is replaced only with ``overwrite``;
        the earlier one is kept as ``previous/<name>`` (returned) and the log says so."""
        if resume or not artefact.exists():
            return None
        if not overwrite:
            raise ReplaceRefused(
                what=f"the {stage} stage would replace the existing {artefact.name}",
                where=str(artefact),
                rule="a finished checkpoint or sweep is replaced only when asked",
                fix="rerun with --resume to continue or reuse it, with --overwrite to replace "
                    "it (the earlier one is kept as previous/), or choose another output.dir")
        sha = file_sha256(artefact) if artefact.is_file() else None
        kept = self.keep_previous(artefact)
        logger.warning("%s stage: replacing %s%s; the earlier one is kept as %s", stage, artefact,
                       f" (sha256 {sha[:12]}...)" if sha else "", kept)
        return kept
