"""`digits serve`: the Starlette service that reads digits in uploaded pictures.

Design, in the order a request meets it:

- The model is loaded once, in the background, by the app's lifespan: ``/health`` (liveness)
  answers at once, ``/ready`` answers 503 until the model is loaded and again while shutting down.
  A model that fails to load ends the server (the CLI prints one error line).
- The body is read through a cap (``serve.max_body_bytes``): a too large Content-Length is refused
  before one byte is read, a chunked body as soon as it passes the cap (413). Multipart forms are
  parsed from that capped body, never from the socket.
- The CPU work (decode, find, classify, encode) runs in worker threads behind a gate:
  ``serve.max_concurrency`` jobs at once and ``serve.max_queue`` waiting; past that the answer is
  503 with Retry-After, so latency stays bounded instead of growing with the backlog. Each request
  has ``serve.timeout`` seconds in all (504).
- Every error is JSON ``{"error": "..."}`` with its status; no stack trace reaches a client.
- Metrics live in an app-owned registry (many apps can coexist in one process, as in tests); with
  ``--workers N`` prometheus_client's multiprocess mode sums them across worker processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from digits_cli.admission import (
    BodyBudget,
    DecodeBudget,
    Expired,
    Gate,
    ServerBusy,
    check_deadline,
)
from digits_cli.answers import annotated_picture, preferred_picture_type, reading_answer
from digits_cli.config import Settings
from digits_cli.errors import DigitsError
from digits_cli.images import ImageTooLarge
from digits_cli.metrics import Metrics, MetricsMiddleware
from digits_cli.openapi import openapi_json
from digits_cli.schema import Error, Health, Ready
from digits_cli.uploads import body_reservation, client_of, uploaded_picture

if TYPE_CHECKING:
    import numpy as np

    from digits_cli.finder import Reading
    from digits_cli.inference import LoadedModel

log = logging.getLogger("uvicorn.error")  # configured by uvicorn: lines appear beside its own

STATIC_DIR = Path(__file__).parent / "static"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RETRY_AFTER_SECONDS = "1"
BUSY_PAUSE_SECONDS = 0.05
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer
# The pages (/ and /docs) may only talk to this server: no CDN, no external request can slip in.
PAGE_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

ModelLoader = Callable[[], "LoadedModel"]
PictureJob = Callable[[bytes, str, float], Response]  # (data, name, deadline) -> the answer
LoadErrorHook = Callable[[str], None]


@dataclasses.dataclass
class ServiceState:
    """What the endpoints share: the model once loaded, the gate, the metrics."""

    settings: Settings
    metrics: Metrics
    registry: CollectorRegistry
    gate: Gate
    bodies: BodyBudget
    decoding: DecodeBudget
    model: LoadedModel | None = None
    load_error: str | None = None
    stopping: bool = False

    def read_picture(
        self, data: bytes, name: str, deadline: float
    ) -> tuple[LoadedModel, np.ndarray, Reading]:
        """Decode and read a picture (in a worker thread) timing each classification; the model
        used, the decoded picture and the reading."""
        from digits_cli.images import reading_bytes
        from digits_cli.inference import DigitReader

        model = self.model
        assert model is not None, "the endpoints refuse pictures until the model is loaded"
        classify = model.classify

        def timed_classify(crops: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            probabilities = classify(crops)
            self.metrics.inference.observe(time.perf_counter() - start)
            return probabilities

        def check() -> None:
            check_deadline(deadline)

        segment = self.settings.segment
        reader = DigitReader(dataclasses.replace(model, classify=timed_classify), segment)
        need = reading_bytes(data, name, segment.max_pixels, segment.max_side)
        if need > self.decoding.limit:
            raise ImageTooLarge(
                f"{name}: picture too large to read here (about {need / 1e6:,.0f} MB to decode, "
                f"serve.decode_budget_bytes allows {self.decoding.limit / 1e6:,.1f} MB)"
            )
        with self.decoding.hold(need, deadline):
            picture, reading = reader.read_bytes(data, name, check)
        check()
        self.metrics.observe_reading(reading)
        return model, picture, reading


# --- the app ---------------------------------------------------------------------------------


def page_response(name: str) -> Response:
    """A page of STATIC_DIR, allowed to talk to this server only."""
    return FileResponse(
        STATIC_DIR / name,
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": PAGE_SECURITY_POLICY},
    )


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(Error(error=message).model_dump(), status_code=status, headers=headers)


async def busy_response() -> Response:
    """503 with Retry-After, after a short pause.

    Clients that retry at once instead of waiting Retry-After would otherwise turn the refusals
    into a busy loop that takes the CPU and the GIL from the pictures being read (measured with
    wrk at concurrency 32: one worker fell from 43 to 2-5 pictures/s).
    """
    await anyio.sleep(BUSY_PAUSE_SECONDS)
    return error_response(
        503,
        "server busy: the work queue is full, retry shortly",
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


def create_app(
    settings: Settings,
    model: LoadedModel | None = None,
    model_loader: ModelLoader | None = None,
    on_load_error: LoadErrorHook | None = None,
) -> Starlette:
    """Build the service.

    ``model`` serves an already loaded model; otherwise the lifespan loads one with
    ``model_loader`` (default: ``serve.model``, or the registry's champion) in the background.
    ``on_load_error`` is told why loading failed (``digits serve`` stops the server then).
    """
    registry = CollectorRegistry(auto_describe=True)
    serve = settings.serve
    state = ServiceState(
        settings,
        Metrics(registry),
        registry,
        Gate(serve.max_concurrency, serve.max_queue),
        BodyBudget(serve.body_budget_bytes),
        DecodeBudget(serve.decode_budget_bytes),
        model,
    )
    if model is not None:
        state.metrics.model_info.labels(name=model.name, version=model.version).set(1)

    def default_loader() -> LoadedModel:
        from digits_cli.inference import load_model

        return load_model(serve.model, settings)

    async def load_model_in_background() -> None:
        try:
            loaded = await anyio.to_thread.run_sync(
                model_loader or default_loader, abandon_on_cancel=True
            )
        except DigitsError as exc:
            state.load_error = str(exc)
        except Exception as exc:  # a bug or a broken file: keep the details in the server log
            log.exception("loading the model failed")
            state.load_error = f"loading the model failed ({exc.__class__.__name__}: {exc})"
        else:
            state.model = loaded
            state.metrics.model_info.labels(name=loaded.name, version=loaded.version).set(1)
            log.info("model %s version %s loaded from %s", loaded.name, loaded.version, loaded.uri)
            return
        log.error("digits: error: %s", state.load_error)
        if on_load_error is not None:
            on_load_error(state.load_error)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.stopping = False
        async with anyio.create_task_group() as tasks:
            if state.model is None:
                tasks.start_soon(load_model_in_background)
            yield
            state.stopping = True  # /ready answers 503 so balancers drain this instance
            tasks.cancel_scope.cancel()

    def unavailable() -> Response | None:
        """503 while the model is not (yet) usable."""
        if state.model is None:
            # Why loading failed names files and exceptions of the server: logs keep it.
            reason = "the model could not be loaded" if state.load_error else "the model is loading"
            return error_response(503, reason, {"Retry-After": RETRY_AFTER_SECONDS})
        if state.stopping:
            return error_response(503, "the server is shutting down")
        return None

    async def handle_picture(request: Request, job: PictureJob) -> Response:
        """Read the upload and run ``job(data, name, deadline)`` in a thread through the gate.

        The body's bytes are reserved from the budget before it is read and it must arrive
        within ``serve.body_timeout``; the work then has ``serve.timeout`` seconds.
        """
        if (refusal := unavailable()) is not None:
            return refusal
        if state.gate.full:  # refuse before reading the body
            return await busy_response()
        try:
            with state.bodies.reserve(body_reservation(request.headers, serve.max_body_bytes)):
                try:
                    with anyio.fail_after(serve.body_timeout):
                        data, name = await uploaded_picture(request, serve.max_body_bytes)
                except TimeoutError:
                    return error_response(
                        408, f"the request body did not arrive within {serve.body_timeout:g} s"
                    )
                deadline = time.monotonic() + serve.timeout
                with anyio.fail_after(serve.timeout):
                    response: Response = await state.gate.run(lambda: job(data, name, deadline))
                    return response
        except ServerBusy:
            return await busy_response()
        except (TimeoutError, Expired):
            return error_response(504, f"the request took longer than {serve.timeout:g} s")
        except ClientDisconnect:
            # Nobody is left to answer; the status is for the access log and the metrics.
            log.info("client %s disconnected before its upload was complete", client_of(request))
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except MemoryError:
            log.exception("out of memory reading a picture")
            return error_response(
                503, "the server is out of memory, retry shortly", {"Retry-After": "5"}
            )
        except ImageTooLarge as exc:
            return error_response(413, str(exc))
        except DigitsError as exc:  # UnreadableImage: empty, corrupt or unsupported bytes
            return error_response(400, str(exc))

    def reading_job(key: str) -> PictureJob:
        """A job answering the reading as JSON with the ``key`` map (see reading_answer)."""

        def job(data: bytes, name: str, deadline: float) -> Response:
            model, _, reading = state.read_picture(data, name, deadline)
            # pydantic's JSON: a third of the time of json.dumps for 10 digits' 100 floats
            answer = reading_answer(model, reading, key).model_dump_json()
            return Response(answer, media_type="application/json")

        return job

    async def predictions(request: Request) -> Response:
        """Read every digit of a picture: labels keyed by the top-left corner of their box."""
        return await handle_picture(request, reading_job("predictions"))

    async def probabilities(request: Request) -> Response:
        """Read every digit of a picture: the 10 class probabilities of each."""
        return await handle_picture(request, reading_job("probabilities"))

    async def annotations(request: Request) -> Response:
        """The picture with a box and label drawn around every digit (PNG, or JPEG if asked)."""
        media_type = preferred_picture_type(request.headers.get("accept", ""))
        fmt = "jpeg" if media_type == "image/jpeg" else "png"

        def annotate_job(data: bytes, name: str, deadline: float) -> Response:
            _, picture, reading = state.read_picture(data, name, deadline)
            check_deadline(deadline)
            return Response(annotated_picture(picture, reading, fmt), media_type=media_type)

        return await handle_picture(request, annotate_job)

    async def health(request: Request) -> Response:
        """Liveness: the process answers."""
        return JSONResponse(Health(status="ok").model_dump())

    async def ready(request: Request) -> Response:
        """Readiness: 200 once the model is loaded, 503 before and while shutting down."""
        if (refusal := unavailable()) is not None:
            return refusal
        assert state.model is not None
        answer = Ready.model_validate({"status": "ready", "model": state.model.public()})
        return JSONResponse(answer.model_dump())

    async def metrics(request: Request) -> Response:
        """Prometheus text exposition of the service's metrics."""
        if os.environ.get(MULTIPROC_ENV):
            # One registry per scrape, as prometheus_client's multiprocess mode requires.
            scrape = CollectorRegistry()
            MultiProcessCollector(scrape)
            return Response(generate_latest(scrape), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return Response(openapi_json(), media_type="application/json")

    async def index(request: Request) -> Response:
        return page_response("index.html")

    async def docs(request: Request) -> Response:
        """The interactive API page: Swagger UI (shipped in static/swagger-ui) on /openapi.json."""
        return page_response("docs.html")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(500, "internal server error")

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"], include_in_schema=False),
        Route("/docs", docs, methods=["GET"], include_in_schema=False),
        Route("/predictions", predictions, methods=["POST"]),
        Route("/probabilities", probabilities, methods=["POST"]),
        Route("/annotations", annotations, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [Middleware(MetricsMiddleware, metrics=state.metrics, routes=routes)]
    if serve.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=serve.cors_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Content-Type", "Accept"],
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.service = state
    return app
