"""Atomic writes, the one implementation: write next to the target, flush to disk, rename.

A reader (or a resumed run) sees either the previous complete file or the new complete one,
never a truncated one. The temporary lives in the target's folder, so :func:`os.replace` is
a rename within one file system (atomic on POSIX); the file and its folder are fsynced.
:func:`atomic_path` is for files (netCDF, checkpoints, PNG, JSON, parts), :func:`atomic_dir`
for folders (zarr stores), whose old version is moved aside and removed after the swap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["atomic_path", "atomic_dir", "move_dir_into_place", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json", "atomic_save_npy", "file_sha256", "tree_sha256", "fingerprint",
           "load_npy_checked", "temporary_path"]


def temporary_path(target: str | os.PathLike) -> Path:
    """A hidden, unique sibling of ``target`` to write into before it is moved into place."""
    target = Path(target)
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (the fingerprint of checkpoints, parts and outputs)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def tree_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, or of a folder (zarr store, sweep folder): every file's relative
    path and SHA-256, in sorted order; hidden temporaries are left out."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if any(part.startswith(".") and ".tmp" in part for part in rel.split("/")):
            continue
        h.update(f"{rel}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def fingerprint(obj: Any) -> str:
    """Hex SHA-256 of ``obj`` serialized as canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder path (not yet created) to write; on success it replaces
    ``path`` (an old folder or file there is moved aside, then removed).

    On an exception whatever was written is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(target)
    try:
        yield tmp
        _swap_in(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def move_dir_into_place(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Move the finished folder ``source`` to ``path`` (an old folder or file there is moved
    aside, then removed): a rename when both are on one file system, else a copy to a
    temporary beside ``path`` that is then renamed (``source`` is removed after)."""
    source, target = Path(source), Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _swap_in(source, target)
    except OSError as exc:
        import errno

        if exc.errno != errno.EXDEV:
            raise
        with atomic_dir(target) as tmp:
            shutil.copytree(source, tmp)
        _remove(source)
    return target


def _swap_in(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target``, replacing what is there; fsync the folder."""
    if target.exists() or target.is_symlink():
        old = temporary_path(target)
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        _remove(old)
    else:
        os.replace(tmp, target)
    _fsync_dir(target.parent)


def _umask() -> int:
    """The process's umask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (sorted keys) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> dict[str, Any]:
    """Save ``array`` as ``.npy`` atomically; return ``{"bytes", "sha256"}`` of the file."""
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def load_npy_checked(path: str | os.PathLike, shape: tuple[int, ...] | None = None,
                     sha256: str | None = None) -> np.ndarray | None:
    """Load a part written by :func:`atomic_save_npy`; None if it is missing, truncated,
    of another shape or (when ``sha256`` is given) of other content."""
    path = Path(path)
    if not path.is_file():
        return None
    if sha256 is not None and file_sha256(path) != sha256:
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None
    if shape is not None and tuple(array.shape) != tuple(shape):
        return None
    return array


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write an object of type {type(obj).__name__} as JSON")
