"""Reading many picture files, on every core, answers in the order the files were given."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from digits_cli.config import SegmentSettings
from digits_cli.errors import DigitsError
from digits_cli.inference import DigitReader, LoadedModel

# Files each worker takes at a time: enough to keep the pipe quiet, few enough that the last
# files do not wait behind one busy worker.
FILES_PER_TASK = 4


@dataclass(frozen=True)
class FileReading:
    """One file's answer: the reading as JSON-ready data, or the one-line error."""

    path: Path
    reading: dict | None
    error: str | None = None


def picture_files(paths: list[Path]) -> list[Path]:
    """The given files, and the pictures inside given folders (sorted)."""
    from digits_cli.images import OUTPUT_FORMATS

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                p for p in sorted(path.iterdir()) if p.suffix.lower().lstrip(".") in OUTPUT_FORMATS
            )
        else:
            files.append(path)
    return files


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def read_one(reader: DigitReader, path: Path) -> FileReading:
    try:
        _, reading = reader.read_file(path)
    except DigitsError as exc:
        return FileReading(path, None, str(exc))
    return FileReading(path, reading.to_dict())


# The reader a worker process uses, set once when it starts (see read_files).
_worker_reader: DigitReader | None = None


def _start_worker(model: LoadedModel, segment: SegmentSettings) -> None:
    global _worker_reader
    _worker_reader = DigitReader(model, segment)


def _read_in_worker(path: Path) -> FileReading:
    assert _worker_reader is not None, "set by _start_worker"
    return read_one(_worker_reader, path)


def worker_context() -> multiprocessing.context.BaseContext:
    """Where workers come from: forks of this process, which start in milliseconds with the
    libraries imported (a fork server or spawn costs ~0.4 s of imports first); spawn where
    there is no fork."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def read_files(
    files: list[Path], model: LoadedModel, segment: SegmentSettings, jobs: int
) -> Iterator[FileReading]:
    """Read ``files`` with ``jobs`` worker processes (0: every core), answers in order.

    One file, or one job, reads in this process. Workers receive the loaded model (its ONNX
    bytes) when they start, so a registry model is downloaded once.
    """
    jobs = min(jobs or available_cores(), len(files))
    if jobs <= 1:
        reader = DigitReader(model, segment)
        for path in files:
            yield read_one(reader, path)
        return
    import cv2

    # The parallelism is across files: one OpenCV thread per worker. Set here, before the fork:
    # a forked child calling cv2.setNumThreads hangs when its parent had used OpenCV's pool.
    cv2.setNumThreads(1)
    with ProcessPoolExecutor(
        jobs,
        mp_context=worker_context(),
        initializer=_start_worker,
        initargs=(model, segment),
    ) as pool:
        yield from pool.map(_read_in_worker, files, chunksize=FILES_PER_TASK)
