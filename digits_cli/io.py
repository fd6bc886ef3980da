"""Atomic file output: readers never see a half-written artifact."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from digits_cli.errors import DigitsError

# mkstemp makes files only their owner can read; artifacts get the usual umask-based mode instead.
# The umask can only be read by setting it, so it is read once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto it only if the block succeeds.

    A place that cannot be written (a folder, no permission, read-only) raises DigitsError.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent
        )
    except OSError as exc:
        raise cannot_write(path, exc) from exc
    try:
        try:
            os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
        yield Path(tmp)
        try:
            # The bytes reach the disk before the name points at them: after a crash the old
            # file or the whole new one is there, never an empty or partial one.
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
            os.replace(tmp, path)
            fsync_folder(path.parent)
        except OSError as exc:
            raise cannot_write(path, exc) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def cannot_write(path: Path, exc: OSError) -> DigitsError:
    """The one-line error for an output the system refused, with its reason."""
    return DigitsError(f"cannot write {path}: {exc.strerror or exc}")


@contextmanager
def atomic_open(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` when closed without error."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_open(path) as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
