"""What `digits serve` lets in: request bodies within a byte budget, picture work through a gate.

Both refuse at once (ServerBusy, answered 503 with Retry-After) instead of queueing without bound,
so memory and latency stay bounded whatever the clients do.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio


class ServerBusy(Exception):
    """The work queue or the body budget is full."""


class Expired(Exception):
    """The request's deadline passed during its work."""


def check_deadline(deadline: float) -> None:
    """Stop a request's work at the next step once its deadline (time.monotonic) has passed."""
    if time.monotonic() > deadline:
        raise Expired


class DecodeBudget:
    """Bytes of pictures a worker decodes and reads at once, shared by its picture threads.

    A picture holds its estimated peak (images.reading_bytes) while it is decoded and read; one
    that would not fit waits for others to finish, up to its deadline. With several threads per
    worker this bounds the worker's memory by the budget, not by the threads times the largest
    picture allowed.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.changed = threading.Condition()

    @contextmanager
    def hold(self, size: int, deadline: float) -> Iterator[None]:
        """Hold ``size`` bytes (at most the whole budget) for the block; Expired if they do not
        come free before ``deadline``."""
        size = min(size, self.limit)
        with self.changed:
            while self.used + size > self.limit:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Expired
                self.changed.wait(remaining)
            self.used += size
        try:
            yield
        finally:
            with self.changed:
                self.used -= size
                self.changed.notify_all()


class BodyBudget:
    """Bytes of request bodies this worker holds at once, reserved before a body is read.

    A request reserves its declared Content-Length (a multipart form twice: the body and the file
    parsed out of it), or the whole body limit when it declares none, and gives it back when it
    is answered. Many slow uploads then cost what they declared, not a worker's memory.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @contextmanager
    def reserve(self, size: int) -> Iterator[None]:
        if self.used + size > self.limit:
            raise ServerBusy
        self.used += size
        try:
            yield
        finally:
            self.used -= size


# Picture threads run this much nicer than the event loop (Linux schedules threads apart), so
# with the cores saturated /health, /ready and a full queue's 503s still answer at once: a
# liveness probe that times out under load gets a busy pod restarted.
PICTURE_NICENESS = 2
_nicer_threads: set[int] = set()


def nicer(job: Callable[[], Any]) -> Callable[[], Any]:
    """``job``, on a thread made PICTURE_NICENESS nicer first (once per thread)."""

    def run() -> Any:
        thread = threading.get_native_id()
        if thread not in _nicer_threads:
            _nicer_threads.add(thread)
            with contextlib.suppress(AttributeError, OSError):  # no per-thread priorities here
                os.setpriority(os.PRIO_PROCESS, thread, PICTURE_NICENESS)
        return job()

    return run


class Gate:
    """At most ``slots`` jobs run in threads and ``queue`` more wait; beyond that, ServerBusy.

    A job counts until its thread returns, even when its request has timed out, so abandoned work
    can never pile up beyond the bound.
    """

    def __init__(self, slots: int, queue: int) -> None:
        self.limiter = anyio.CapacityLimiter(slots)
        self.capacity = slots + queue
        self.admitted = 0

    @property
    def full(self) -> bool:
        return self.admitted >= self.capacity

    async def run(self, job: Callable[[], Any]) -> Any:
        if self.full:
            raise ServerBusy
        self.admitted += 1
        try:
            # Not abandoned on cancellation: a timed-out request waits for its thread, keeping
            # the number of busy threads within the limiter.
            return await anyio.to_thread.run_sync(nicer(job), limiter=self.limiter)
        finally:
            self.admitted -= 1
