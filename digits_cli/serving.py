"""Running `digits serve`: process settings, the listening sockets, one worker or several."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from digits_cli.config import Settings, load_settings
from digits_cli.errors import DigitsError
from digits_cli.memory import keep_freed_memory
from digits_cli.server import MULTIPROC_ENV, create_app

if TYPE_CHECKING:
    pass


SETTINGS_ENV = "DIGITS_SERVE_WORKER_SETTINGS"  # resolved settings (JSON) handed to workers
LOAD_ERROR_ENV = "DIGITS_SERVE_LOAD_ERROR_FILE"  # where a worker leaves why its model failed


# --- running it ------------------------------------------------------------------------------


def configure_process() -> None:
    """Process-wide settings for serving: one CPU thread per request, allocator thresholds that
    keep freed memory (keep_freed_memory), no ``_created`` series.

    Each picture is a small batch (a few 28x28 crops): splitting its operators across threads
    gains little, and with ``serve.max_concurrency`` requests already running in parallel more
    threads would only oversubscribe the cores. Concurrency comes from requests, not operators.
    """
    import cv2
    from prometheus_client import disable_created_metrics

    cv2.setNumThreads(1)  # ONNX Runtime runs each picture's crops on one thread (runtime.py)
    # The picture thread releases and retakes the GIL at every OpenCV, numpy and ONNX call; with
    # the default 5 ms switch interval a busy event loop (say, clients retrying 503s at once)
    # makes it wait up to 5 ms each time, and pictures stall. 0.5 ms keeps them flowing.
    sys.setswitchinterval(0.0005)
    keep_freed_memory()
    disable_created_metrics()  # a timestamp series per labelled child doubles every scrape


def app_from_env() -> Starlette:
    """Factory for uvicorn workers: the settings `digits serve` resolved, from the environment."""
    configure_process()
    raw = os.environ.get(SETTINGS_ENV)
    # Exactly the parent's resolved settings: validated as they are, not resolved again, which
    # would drop its unset (None) values and read this folder's params file and environment.
    settings = Settings.model_validate(json.loads(raw)) if raw else load_settings()

    def stop_worker(message: str) -> None:
        # Exit status STARTUP_FAILURE makes uvicorn's supervisor stop instead of respawning.
        error_file = os.environ.get(LOAD_ERROR_ENV)
        if error_file:
            Path(error_file).write_text(message)
        logging.shutdown()
        os._exit(STARTUP_FAILURE)

    return create_app(settings, on_load_error=stop_worker)


def tcp_listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn to listen on, created with protocol IPPROTO_TCP.

    uvicorn's own (``Config.bind_socket``) leaves the protocol 0; accepted sockets inherit it and
    asyncio then skips TCP_NODELAY, so every keep-alive response waits ~40 ms on the client's
    delayed ACK (uvicorn issue 3149: 56 ms instead of 14 ms a request here). ``reuse_port`` lets
    each worker bind its own socket to the same port (see WorkerSockets).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise DigitsError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


class WorkerSockets(Multiprocess):
    """uvicorn's worker supervisor, giving every worker process its own listening socket.

    With one shared socket the worker that wakes first accepts every waiting connection (libuv
    accepts until the backlog is empty): a burst of 8 keep-alive clients could all land on one of
    two workers, which then did all the work (43 instead of 107 pictures/s, bench/serve_bench.py).
    With a SO_REUSEPORT socket per worker, Linux spreads new connections over the workers.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        self.handed: list[socket.socket] = []
        super().__init__(config, sockets=[])

    @property
    def sockets(self) -> list[socket.socket]:
        # uvicorn passes self.sockets to each worker it starts: a fresh socket every time.
        sock = tcp_listener(self.config.host, self.config.port, reuse_port=True)
        self.handed.append(sock)
        return [sock]

    @sockets.setter
    def sockets(self, shared: list[socket.socket]) -> None:
        """uvicorn's __init__ stores its shared sockets here; there are none to store."""

    def keep_subprocess_alive(self) -> None:
        # Workers started since the last tick hold their sockets now. The parent lets go of its
        # copies, so a socket dies with its worker instead of holding connections nobody accepts.
        for sock in self.handed:
            sock.close()
        self.handed.clear()
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()  # replaces the workers that died
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None and os.environ.get(MULTIPROC_ENV):
                # Its live gauges (requests in flight) died with it; its counters stay summed.
                mark_process_dead(pid)


def run_server(settings: Settings) -> None:
    """Run uvicorn until interrupted; a model that fails to load raises DigitsError."""
    serve = settings.serve
    options: dict[str, Any] = {
        "host": serve.host,
        "port": serve.port,
        "server_header": False,
        "timeout_graceful_shutdown": math.ceil(serve.timeout) + 1,
        # Beyond this many open connections (or requests in progress) uvicorn answers 503.
        "limit_concurrency": serve.max_connections,
    }
    if serve.workers == 1:
        configure_process()
        failures: list[str] = []

        def stop(message: str) -> None:
            failures.append(message)
            server.should_exit = True

        listener = tcp_listener(serve.host, serve.port)  # a busy port is one clear line
        server = uvicorn.Server(uvicorn.Config(create_app(settings, on_load_error=stop), **options))
        # uvicorn re-raises the Ctrl-C it shut down gracefully on: stopping is not an error here.
        with contextlib.suppress(KeyboardInterrupt):
            server.run(sockets=[listener])
        if failures:
            raise DigitsError(failures[0])
        return
    run_dir = Path(tempfile.mkdtemp(prefix="digits-serve-"))
    metrics_dir = run_dir / "metrics"
    metrics_dir.mkdir()
    error_file = run_dir / "load-error.txt"
    handed = {
        MULTIPROC_ENV: str(metrics_dir),
        LOAD_ERROR_ENV: str(error_file),
        SETTINGS_ENV: json.dumps(settings.model_dump(mode="json")),
    }
    before = {name: os.environ.get(name) for name in handed}
    os.environ.update(handed)  # what the workers inherit
    try:
        config = uvicorn.Config(
            "digits_cli.serving:app_from_env", factory=True, workers=serve.workers, **options
        )
        # Workers share the port through SO_REUSEPORT, which would also let them join another
        # server's reuse-port group: bind once without it first, so a busy port is one error.
        tcp_listener(serve.host, serve.port).close()
        with contextlib.suppress(KeyboardInterrupt):
            WorkerSockets(config).run()
        if error_file.exists():
            raise DigitsError(error_file.read_text())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
        # Put the environment back: a metrics folder left named after it is deleted would make
        # any later app in this process answer 500 on /metrics.
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
