"""The manifest of a sweep: which chunks are finished, for which config and checkpoint.

One JSON file next to the parts (``manifest.json``), written atomically by the client (the
only writer) when a sweep starts or resumes and when its tasks are done, and between the two
a journal (``manifest.json.journal``): one JSON line appended (and fsynced) each time a chunk
task reports, so that recording a chunk costs the same whatever the size of the sweep (a
rewrite of the whole file per chunk would make the driver's cost per chunk grow with the
sweep). Reading the manifest folds the journal in; a line torn by a kill mid-append is
ignored (its chunk counts as not finished and runs again).

Its ``fingerprint`` hashes the sweep plan, the output options and the checkpoint's SHA-256;
a resumed run accepts a finished chunk only when the fingerprint matches and the part on
disk is complete (size and SHA-256 as recorded), so a truncated or stale part is
regenerated. A zarr sweep's chunks are regions of the store rather than files: their
records carry the SHA-256 of the values written, checked by the tasks themselves on resume
(:mod:`rho_workflow.workflow.regions`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rho_workflow.errors import RhoWorkflowError
from rho_workflow.atomic import atomic_write_json, file_sha256

__all__ = ["Manifest", "ManifestMismatch", "recorded_chunks"]

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

    @property
    def journal_path(self) -> Path:
        return self.path.with_name(self.path.name + ".journal")

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
        if not resume:
            manifest.journal_path.unlink(missing_ok=True)
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
            manifest.chunks.update(_journal_entries(manifest.journal_path, fingerprint))
        manifest.save()
        return manifest

    def save(self) -> None:
        """Write every record into ``manifest.json`` (atomically), then drop the journal."""
        atomic_write_json(self.path, {
            "version": MANIFEST_VERSION, "fingerprint": self.fingerprint,
            "n_chunks": self.n_chunks, "info": self.info,
            "chunks": {str(k): v for k, v in sorted(self.chunks.items())},
        })
        self.journal_path.unlink(missing_ok=True)

    def record(self, index: int, entry: dict[str, Any]) -> None:
        """Mark chunk ``index`` finished (entry from the task: path relative to the manifest's
        folder, or the region, bytes, sha256, seconds)."""
        self.record_many({index: entry})

    def record_many(self, entries: Mapping[int, dict[str, Any]]) -> None:
        """Mark the chunks of ``entries`` (index -> entry) finished: one line each appended to
        the journal, fsynced once -- a cost that does not grow with the sweep, and shared by
        the results that arrive together."""
        if not entries:
            return
        lines = []
        for index, entry in entries.items():
            self.chunks[int(index)] = dict(entry)
            lines.append(json.dumps({"fingerprint": self.fingerprint, "index": int(index),
                                     "entry": entry}, sort_keys=True, default=str))
        with open(self.journal_path, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def part_path(self, index: int) -> Path:
        return self.path.parent / self.chunks[index]["path"]

    def is_complete(self, index: int) -> bool:
        """Chunk ``index`` is recorded and its part on disk has the recorded size and hash."""
        entry = self.chunks.get(int(index))
        if entry is None or "path" not in entry:  # a zarr region is checked by its task
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


def recorded_chunks(path: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """The chunks recorded as finished by the manifest at ``path`` and its journal, as a
    reader (a monitor, a test) sees them while the sweep runs; empty when there is none."""
    path = Path(path)
    try:
        on_disk = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    chunks = {int(k): v for k, v in on_disk.get("chunks", {}).items()}
    chunks.update(_journal_entries(path.with_name(path.name + ".journal"),
                                   on_disk.get("fingerprint")))
    return chunks


def _journal_entries(path: Path, fingerprint: str | None) -> dict[int, dict[str, Any]]:
    """Records appended to the journal at ``path`` for ``fingerprint``; a torn or foreign line
    is skipped."""
    entries: dict[int, dict[str, Any]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return entries
    for line in text.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("fingerprint") == fingerprint and "index" in item:
            entries[int(item["index"])] = dict(item.get("entry") or {})
    return entries
