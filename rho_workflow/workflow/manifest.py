"""The manifest of a sweep: which chunks are finished, for which config and checkpoint.

One JSON file next to the parts, rewritten atomically by the client (the only writer) each
time a chunk task reports. Its ``fingerprint`` hashes the sweep plan, the output options and
the checkpoint's SHA-256; a resumed run accepts a finished chunk only when the fingerprint
matches and the part on disk is complete (size and SHA-256 as recorded), so a truncated or
stale part is regenerated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rho_workflow.errors import RhoWorkflowError
from rho_workflow.atomic import atomic_write_json, file_sha256

__all__ = ["Manifest", "ManifestMismatch"]

MANIFEST_VERSION = 1


class ManifestMismatch(RhoWorkflowError, RuntimeError):
    """``--resume`` found a manifest written for another config or checkpoint."""


@dataclass
class Manifest:
    """Finished chunks of one sweep (``chunks[index] = {"path", "bytes", "sha256", ...}``)."""

    path: Path
    fingerprint: str
    n_chunks: int
    chunks: dict[int, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | os.PathLike, fingerprint: str, n_chunks: int, *, resume: bool,
             info: dict[str, Any] | None = None) -> "Manifest":
        """A fresh manifest, or (``resume=True``) the one on disk with its finished chunks.

        Raises
        ------
        ManifestMismatch
            ``resume`` is set but the manifest on disk has another fingerprint.
        """
        path = Path(path)
        manifest = cls(path, fingerprint, n_chunks, info=dict(info or {}))
        if resume and path.is_file():
            try:
                on_disk = json.loads(path.read_text())
            except ValueError:
                on_disk = None
            if not isinstance(on_disk, dict):
                raise ManifestMismatch(
                    f"{path}: the manifest of the finished chunks is not valid JSON; delete it "
                    "(its parts are then sampled again) or rerun with --overwrite to start the sweep over")
            if on_disk.get("fingerprint") != fingerprint:
                raise ManifestMismatch(
                    f"{path}: the finished chunks were written for another config or checkpoint "
                    f"(fingerprint {str(on_disk.get('fingerprint'))[:12]}..., now "
                    f"{fingerprint[:12]}...); rerun with --overwrite (not --resume) to start the sweep over, or "
                    "restore the config and checkpoint of the interrupted run")
            manifest.chunks = {int(k): v for k, v in on_disk.get("chunks", {}).items()}
        manifest.save()
        return manifest

    def save(self) -> None:
        atomic_write_json(self.path, {
            "version": MANIFEST_VERSION, "fingerprint": self.fingerprint,
            "n_chunks": self.n_chunks, "info": self.info,
            "chunks": {str(k): v for k, v in sorted(self.chunks.items())},
        })

    def record(self, index: int, entry: dict[str, Any]) -> None:
        """Mark chunk ``index`` finished (entry from the task: path relative to the manifest's
        folder, bytes, sha256, seconds) and rewrite the file."""
        self.chunks[int(index)] = dict(entry)
        self.save()

    def part_path(self, index: int) -> Path:
        return self.path.parent / self.chunks[index]["path"]

    def is_complete(self, index: int) -> bool:
        """Chunk ``index`` is recorded and its part on disk has the recorded size and hash."""
        entry = self.chunks.get(int(index))
        if entry is None:
            return False
        part = self.path.parent / entry["path"]
        return (part.is_file() and part.stat().st_size == entry["bytes"]
                and file_sha256(part) == entry["sha256"])

    def pending(self, indices: range | list[int]) -> tuple[list[int], list[int]]:
        """Split chunk indices into (to run, already complete); incomplete records are dropped."""
        todo, done = [], []
        for i in indices:
            if self.is_complete(i):
                done.append(i)
            else:
                self.chunks.pop(int(i), None)
                todo.append(i)
        self.save()
        return todo, done

    @property
    def finished(self) -> bool:
        return len(self.chunks) == self.n_chunks
