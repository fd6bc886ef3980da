"""Reading many picture files, on every core, answers in the order the files were given; a share
(shard) of a large input for one of N processes, e.g. the pods of a Kubernetes Indexed Job."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from digits_cli.config import SegmentSettings
from digits_cli.errors import DigitsError
from digits_cli.inference import DigitReader, LoadedModel

if TYPE_CHECKING:
    import multiprocessing.context

    from digits_cli.finder import Reading

# Files each worker takes at a time: enough to keep the pipe quiet, few enough that the last
# files do not wait behind one busy worker.
FILES_PER_TASK = 4


@dataclass(frozen=True)
class FileReading:
    """One file's answer: the reading, or the one-line error."""

    path: Path
    reading: Reading | None
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
    """The cores this process may use: its CPU affinity, narrowed by a cgroup CPU quota (a
    container's CPU limit, which leaves the affinity at every core of the node)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota))) if quota is not None else cores


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: Path | None = None) -> float | None:
    """CPUs allowed by the cgroup quota (``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us`` of v1),
    or None when unlimited or unknown."""
    root = root or CGROUP_ROOT
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
        period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        return None if int(quota) <= 0 else int(quota) / int(period)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Shard:
    """Share ``index`` of ``count``: every count-th file of the sorted listing, from ``index``."""

    index: int
    count: int

    def take(self, files: list[Path]) -> list[Path]:
        """This share of ``files``. The listing is sorted first, so every process holding the
        same files takes the same disjoint share whatever order it listed them in; round robin
        rather than blocks, so a run of large pictures is spread over the shares."""
        return sorted(files, key=str)[self.index :: self.count]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


SHARD_INDEX_ENV = "JOB_COMPLETION_INDEX"  # set in each pod of a Kubernetes Indexed Job


def parse_shard(text: str, environ: Mapping[str, str] = os.environ) -> Shard:
    """``INDEX/COUNT``, or ``COUNT`` alone with the index from $JOB_COMPLETION_INDEX.

    A bad value raises ValueError with the message to show.
    """
    index_text, slash, count_text = text.rpartition("/")
    if not slash:
        index_text = environ.get(SHARD_INDEX_ENV, "")
        if not index_text:
            raise ValueError(
                f"{text!r} gives no index: use INDEX/COUNT, or COUNT with ${SHARD_INDEX_ENV} set"
            )
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        if not slash and count_text.isdigit():
            raise ValueError(f"${SHARD_INDEX_ENV}={index_text!r} is not a whole number") from None
        raise ValueError(f"{text!r} is not INDEX/COUNT (or COUNT) in whole numbers") from None
    if count < 1:
        raise ValueError(f"{text!r}: the count must be at least 1")
    if not 0 <= index < count:
        raise ValueError(f"index {index} is outside 0..{count - 1} (shard {index}/{count})")
    return Shard(index, count)


def shard_output_path(template: Path, shard: Shard | None) -> Path:
    """``template`` with ``{index}`` and ``{count}`` filled in (the index zero-padded to the
    count's width, so the files sort in shard order)."""
    text = str(template)
    if shard is None:
        if "{index}" in text or "{count}" in text:
            raise ValueError(f"{text!r} names {{index}} or {{count}} but no --shard is given")
        return template
    width = len(str(shard.count - 1))
    return Path(
        text.replace("{index}", f"{shard.index:0{width}d}").replace("{count}", str(shard.count))
    )


def listed_files(listing: Path) -> list[Path]:
    """The paths in a file of paths, one a line (``-``: standard input); blank lines skipped."""
    try:
        text = sys.stdin.read() if str(listing) == "-" else listing.read_text()
    except OSError as exc:
        raise DigitsError(f"{listing}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise DigitsError(f"{listing}: not a text file of paths") from exc
    return [Path(line) for line in text.splitlines() if line.strip()]


def read_one(reader: DigitReader, path: Path) -> FileReading:
    try:
        _, reading = reader.read_file(path)
    except DigitsError as exc:
        return FileReading(path, None, str(exc))
    return FileReading(path, reading)


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
    import multiprocessing  # here: one picture never needs it (8 ms of a cold start)

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def read_files(
    files: list[Path], model: LoadedModel, segment: SegmentSettings, jobs: int
) -> Iterator[FileReading]:
    """Read ``files`` with ``jobs`` worker processes (0: every core), answers in order.

    One file, or one job, reads in this process. Workers receive the loaded model (its ONNX
    bytes) when they start, so a registry model is downloaded once.
    """
    import cv2

    # One OpenCV thread per reading process: its pool gains nothing on a picture's small images
    # (bench/read_speed.py --threads 2 is no faster), and the parallelism is across files. Set
    # before any fork: a forked child calling cv2.setNumThreads hangs when its parent had used
    # OpenCV's pool.
    cv2.setNumThreads(1)
    if len(files) > 1:
        # Keep freed memory for the next picture: returning it to the kernel after each one
        # made every picture pay its page faults again (sys time 1.2-1.9 s instead of 0.3 s
        # over 40 scanned forms); the thresholds are memory.py's for batches of pages.
        from digits_cli.memory import (
            BATCH_MMAP_THRESHOLD_BYTES,
            BATCH_TRIM_THRESHOLD_BYTES,
            keep_freed_memory,
        )

        keep_freed_memory(BATCH_TRIM_THRESHOLD_BYTES, BATCH_MMAP_THRESHOLD_BYTES)
    jobs = min(jobs or available_cores(), len(files))
    if jobs <= 1:
        reader = DigitReader(model, segment)
        for path in files:
            yield read_one(reader, path)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(
        jobs,
        mp_context=worker_context(),
        initializer=_start_worker,
        initargs=(model, segment),
    ) as pool:
        yield from pool.map(_read_in_worker, files, chunksize=FILES_PER_TASK)
