"""The C allocator's settings for reading many pictures in one process (`digits serve`, `digits
predict` over many files)."""

from __future__ import annotations

# glibc mallopt parameters (malloc.h) and the values used; see keep_freed_memory.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
TRIM_THRESHOLD_BYTES, MMAP_THRESHOLD_BYTES = 64 << 20, 16 << 20
# A batch reading scanned pages (a 1654x2339 form peaks at ~130 MB, with float64 copies of
# 31 MB): keep a whole page's worth, and take copies up to glibc's largest mmap threshold from
# the heap. With the serving values a process reading 10 forms took 70,000-117,000 page faults,
# ~34,000 with these (most of them the first form's).
BATCH_TRIM_THRESHOLD_BYTES, BATCH_MMAP_THRESHOLD_BYTES = 256 << 20, 32 << 20


def keep_freed_memory(
    trim_bytes: int = TRIM_THRESHOLD_BYTES, mmap_bytes: int = MMAP_THRESHOLD_BYTES
) -> bool:
    """Let glibc keep freed memory for the next picture instead of returning it to the kernel.

    A picture allocates a few MB of arrays and frees them. In the server glibc gave those pages
    back after each request (trim) or served them from fresh mmaps, so every request paid page
    faults for zeroed pages again: 21.4 instead of 16.3 ms of CPU per 640x480 picture. Higher
    fixed thresholds keep up to ``trim_bytes`` of freed heap (64 MB by default). Without glibc
    (musl, macOS) nothing changes; the answer says whether the thresholds were set.
    """
    import ctypes

    try:
        # The process's own symbols: glibc's mallopt if it is there (find_library would run
        # ldconfig in a subprocess to find the same library).
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    trim = mallopt(M_TRIM_THRESHOLD, trim_bytes)
    mmap = mallopt(M_MMAP_THRESHOLD, mmap_bytes)
    # One heap for every thread: else each picture thread keeps its own up to the trim
    # threshold, and a worker's memory is the sum of what its threads once needed.
    arenas = mallopt(M_ARENA_MAX, 1)
    return bool(trim and mmap and arenas)
