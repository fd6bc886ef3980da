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
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.applications import Starlette
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from digits_cli.admission import (
    BodyBudget,
    DecodeBudget,
    Expired,
    Gate,
    ServerBusy,
    check_deadline,
)
from digits_cli.config import Settings, load_settings
from digits_cli.errors import DigitsError
from digits_cli.images import ImageTooLarge

if TYPE_CHECKING:
    import numpy as np

    from digits_cli.finder import Reading
    from digits_cli.inference import LoadedModel

log = logging.getLogger("uvicorn.error")  # configured by uvicorn: lines appear beside its own

STATIC_DIR = Path(__file__).parent / "static"
SETTINGS_ENV = "DIGITS_SERVE_WORKER_SETTINGS"  # resolved settings (JSON) handed to workers
LOAD_ERROR_ENV = "DIGITS_SERVE_LOAD_ERROR_FILE"  # where a worker leaves why its model failed
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
RETRY_AFTER_SECONDS = "1"
BUSY_PAUSE_SECONDS = 0.05
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before its answer
# The page may only talk to this server: no CDN, no external request can slip in.
PAGE_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

ModelLoader = Callable[[], "LoadedModel"]
PictureJob = Callable[[bytes, str, float], Response]  # (data, name, deadline) -> the answer
LoadErrorHook = Callable[[str], None]


# --- metrics -------------------------------------------------------------------------------


class Metrics:
    """The service's Prometheus metrics; their names are a contract with the Grafana dashboard."""

    def __init__(self, registry: CollectorRegistry) -> None:
        http = ("route", "method", "status")
        self.requests = Counter(
            "digits_http_requests", "HTTP requests answered.", http, registry=registry
        )
        self.duration = Histogram(
            "digits_http_request_duration_seconds",
            "Time from request start to the last byte of the answer.",
            http,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.in_flight = Gauge(
            "digits_http_requests_in_flight",
            "HTTP requests being handled.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        size_buckets = (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000)
        self.request_size = Histogram(
            "digits_http_request_size_bytes",
            "Request body bytes read.",
            ("route",),
            buckets=size_buckets,
            registry=registry,
        )
        self.response_size = Histogram(
            "digits_http_response_size_bytes",
            "Response body bytes sent.",
            ("route",),
            buckets=size_buckets,
            registry=registry,
        )
        self.inference = Histogram(
            "digits_model_inference_seconds",
            "Time of one classification call (all digits of a picture).",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=registry,
        )
        self.digits_per_picture = Histogram(
            "digits_digits_per_picture",
            "Digits found in one picture.",
            buckets=(0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89),
            registry=registry,
        )
        self.confidence = Histogram(
            "digits_prediction_confidence",
            "Probability of the predicted label of each digit.",
            buckets=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.999, 1.0),
            registry=registry,
        )
        self.labels = Counter(
            "digits_predicted_label", "Digits predicted, by label.", ("label",), registry=registry
        )
        self.model_info = Gauge(
            "digits_model_info",
            "The served model (value 1).",
            ("name", "version"),
            registry=registry,
            multiprocess_mode="max",
        )

    def observe_reading(self, reading: Reading) -> None:
        self.digits_per_picture.observe(len(reading.digits))
        for digit in reading.digits:
            self.confidence.observe(digit.confidence)
            self.labels.labels(label=str(digit.label)).inc()


def route_template(routes: Sequence[BaseRoute], scope: Scope) -> str:
    """The template of the route a request matches (405s too), else one fixed label."""
    for route in routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            return str(getattr(route, "path", UNMATCHED_ROUTE))
    return UNMATCHED_ROUTE


class MetricsMiddleware:
    """Counts, times and sizes every HTTP request (pure ASGI: no buffering of the bodies)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = route_template(self.routes, scope)
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
        status = 500  # what the client gets if the app raises before answering
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            self.metrics.in_flight.dec()
            labels = {"route": route, "method": method, "status": str(status)}
            self.metrics.requests.labels(**labels).inc()
            self.metrics.duration.labels(**labels).observe(time.perf_counter() - start)
            self.metrics.request_size.labels(route=route).observe(received)
            self.metrics.response_size.labels(route=route).observe(sent)


# --- admission of CPU work -------------------------------------------------------------------


# --- the pipeline ----------------------------------------------------------------------------


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
        from digits_cli.images import decode_scaled, reading_bytes
        from digits_cli.inference import DigitReader, at_size

        model = self.model
        assert model is not None, "the endpoints refuse pictures until the model is loaded"
        classify = model.classify

        def timed_classify(crops: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            probabilities = classify(crops)
            self.metrics.inference.observe(time.perf_counter() - start)
            check_deadline(deadline)
            return probabilities

        segment = self.settings.segment
        reader = DigitReader(dataclasses.replace(model, classify=timed_classify), segment)
        need = reading_bytes(data, name, segment.max_pixels, segment.max_side)
        if need > self.decoding.limit:
            raise ImageTooLarge(
                f"{name}: picture too large to read here (about {need / 1e6:,.0f} MB to decode, "
                f"serve.decode_budget_bytes allows {self.decoding.limit / 1e6:,.1f} MB)"
            )
        with self.decoding.hold(need, deadline):
            picture, size = decode_scaled(data, name, segment.max_pixels, segment.max_side)
            check_deadline(deadline)  # between the steps too: a picture with no digits never
            reading = at_size(reader.read(picture), *size)  # reaches classify
        check_deadline(deadline)
        self.metrics.observe_reading(reading)
        return model, picture, reading


def reading_payload(model: LoadedModel, reading: Reading, key: str) -> dict[str, Any]:
    """The JSON answer: model, picture size, text, digits, and the ``"x,y"``-keyed ``key`` map.

    ``key`` is ``predictions`` (label per digit) or ``probabilities`` (10 floats per digit); x,y is
    the top-left corner of the digit's box, the reference project's contract.
    """
    payload: dict[str, Any] = {"model": model.public(), **reading.to_dict()}
    field = "label" if key == "predictions" else "probabilities"
    payload[key] = {f"{d['box'][0]},{d['box'][1]}": d[field] for d in payload["digits"]}
    return payload


def annotated_picture(picture: np.ndarray, reading: Reading, fmt: str) -> bytes:
    """The picture as decoded (at most twice the finder's working size) with a box and label
    drawn for every digit, encoded as ``fmt``."""
    from digits_cli.drawing import annotate_image
    from digits_cli.images import encode_image
    from digits_cli.inference import at_size

    on_picture = at_size(reading, picture.shape[1], picture.shape[0])
    return encode_image(annotate_image(picture, on_picture), fmt)


def preferred_picture_type(accept: str) -> str:
    """``image/jpeg`` when the Accept header prefers it to PNG, else ``image/png``."""
    quality = {"image/png": 0.0, "image/jpeg": 0.0}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        media = "image/jpeg" if media.lower() == "image/jpg" else media.lower()
        if media in quality:
            q = 1.0
            for param in params:
                name, _, value = param.partition("=")
                if name.strip() == "q":
                    with contextlib.suppress(ValueError):
                        q = float(value)
            quality[media] = q
    return "image/jpeg" if quality["image/jpeg"] > quality["image/png"] else "image/png"


# --- request bodies --------------------------------------------------------------------------


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"request body too large (limit {limit:,} bytes)")


async def read_capped_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) from its Content-Length or as soon as it passes ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HTTPException(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def body_reservation(headers: Headers, limit: int) -> int:
    """Bytes to reserve for a body before reading it: its declared length (at most ``limit``), or
    ``limit`` when it declares none; a multipart form twice (the body, then the file in it)."""
    declared = headers.get("content-length", "")
    size = min(int(declared), limit) if declared.isdigit() else limit
    multipart = headers.get("content-type", "").lower().startswith("multipart/")
    return 2 * size if multipart else size


def client_of(request: Request) -> str:
    return f"{request.client.host}:{request.client.port}" if request.client else "unknown"


def is_picture_type(media_type: str) -> bool:
    # Browsers and curl label files they cannot identify as octet-stream (or nothing).
    return media_type in ("", "application/octet-stream") or media_type.startswith("image/")


async def uploaded_picture(request: Request, limit: int) -> tuple[bytes, str]:
    """The picture bytes and a name for messages: multipart field ``file`` or a raw image body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type.startswith("image/"):
        return await read_capped_body(request, limit), "upload"
    if media_type != "multipart/form-data":
        raise HTTPException(
            415,
            f"unsupported Content-Type {media_type or '(none)'!r}: send multipart/form-data with "
            "a `file` field, or the picture's bytes with an image/* Content-Type",
        )
    body = await read_capped_body(request, limit)

    async def replay() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=10).parse()
    except MultiPartException as exc:
        raise HTTPException(400, f"malformed multipart form: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(400, "the multipart form has no `file` field holding a picture")
        part_type = (upload.content_type or "").split(";")[0].strip().lower()
        if not is_picture_type(part_type):
            raise HTTPException(415, f"the uploaded file is {part_type!r}, not a picture")
        return await upload.read(), upload.filename or "upload"
    finally:
        await form.close()


# --- the app ---------------------------------------------------------------------------------


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


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
        """A job answering the reading as JSON with the ``key`` map (see reading_payload)."""

        def job(data: bytes, name: str, deadline: float) -> Response:
            model, _, reading = state.read_picture(data, name, deadline)
            return JSONResponse(reading_payload(model, reading, key))

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
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        """Readiness: 200 once the model is loaded, 503 before and while shutting down."""
        if (refusal := unavailable()) is not None:
            return refusal
        assert state.model is not None
        return JSONResponse({"status": "ready", "model": state.model.public()})

    async def metrics(request: Request) -> Response:
        """Prometheus text exposition of the service's metrics."""
        if os.environ.get(MULTIPROC_ENV):
            # One registry per scrape, as prometheus_client's multiprocess mode requires.
            scrape = CollectorRegistry()
            MultiProcessCollector(scrape)
            return Response(generate_latest(scrape), media_type=CONTENT_TYPE_LATEST)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def index(request: Request) -> Response:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": PAGE_SECURITY_POLICY},
        )

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


# --- OpenAPI ---------------------------------------------------------------------------------


def openapi_document() -> dict[str, Any]:
    """A hand-written OpenAPI 3.1 description of the endpoints."""
    error = {"$ref": "#/components/responses/Error"}
    upload = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    picture_errors = {
        "400": error,
        "413": error,
        "415": error,
        "503": {"$ref": "#/components/responses/Unavailable"},
        "504": error,
    }

    def reading_operation(summary: str, schema: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "requestBody": upload,
                "responses": {
                    "200": {
                        "description": "The reading.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{schema}"}
                            }
                        },
                    },
                    **picture_errors,
                },
            }
        }

    def simple_get(summary: str, content_type: str, codes: tuple[str, ...] = ("200",)) -> dict:
        responses: dict[str, Any] = {
            "200": {"description": "OK", "content": {content_type: {"schema": {}}}}
        }
        for code in codes[1:]:
            responses[code] = {"$ref": "#/components/responses/Unavailable"}
        return {"get": {"summary": summary, "responses": responses}}

    digit = {
        "type": "object",
        "properties": {
            "label": {"type": "integer", "minimum": 0, "maximum": 9},
            "confidence": {"type": "number"},
            "box": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 4,
                "maxItems": 4,
                "description": "x, y, width, height in pixels",
            },
            "probabilities": {
                "type": "array",
                "items": {"type": "number"},
                "minItems": 10,
                "maxItems": 10,
            },
        },
    }
    reading = {
        "type": "object",
        "required": ["model", "width", "height", "text", "digits"],
        "properties": {
            "model": {
                "type": "object",
                "properties": {k: {"type": "string"} for k in ("name", "version", "uri")},
            },
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "text": {"type": "string", "description": "the digits read, in reading order"},
            "digits": {"type": "array", "items": {"$ref": "#/components/schemas/Digit"}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "digits",
            "version": "1",
            "description": "Reads every handwritten digit in a picture.",
        },
        "paths": {
            "/predictions": reading_operation(
                "Read every digit: label per box corner", "Predictions"
            ),
            "/probabilities": reading_operation(
                "Read every digit: 10 probabilities per box corner", "Probabilities"
            ),
            "/annotations": {
                "post": {
                    "summary": "The picture with every digit boxed and labelled",
                    "requestBody": upload,
                    "responses": {
                        "200": {
                            "description": "PNG, or JPEG when the Accept header prefers it.",
                            "content": {
                                "image/png": {"schema": {"type": "string", "format": "binary"}},
                                "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                            },
                        },
                        **picture_errors,
                    },
                }
            },
            "/health": simple_get("Liveness", "application/json"),
            "/ready": simple_get(
                "Readiness: 200 once the model is loaded", "application/json", ("200", "503")
            ),
            "/metrics": simple_get("Prometheus metrics", "text/plain"),
            "/": simple_get("The web page", "text/html"),
        },
        "components": {
            "schemas": {
                "Digit": digit,
                "Predictions": {
                    "allOf": [
                        reading,
                        {
                            "properties": {
                                "predictions": {
                                    "type": "object",
                                    "description": '"x,y" of a box -> its label',
                                    "additionalProperties": {"type": "integer"},
                                }
                            }
                        },
                    ]
                },
                "Probabilities": {
                    "allOf": [
                        reading,
                        {
                            "properties": {
                                "probabilities": {
                                    "type": "object",
                                    "description": '"x,y" of a box -> its 10 probabilities',
                                    "additionalProperties": {
                                        "type": "array",
                                        "items": {"type": "number"},
                                    },
                                }
                            }
                        },
                    ]
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
            },
            "responses": {
                "Error": {
                    "description": "The request cannot be served (see the message).",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
                "Unavailable": {
                    "description": "Model not loaded yet, or the work queue is full: retry after "
                    "the Retry-After header's seconds.",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            },
        },
    }


# --- running it ------------------------------------------------------------------------------


# glibc mallopt parameters (malloc.h) and the values serving uses; see keep_freed_memory.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
TRIM_THRESHOLD_BYTES, MMAP_THRESHOLD_BYTES = 64 << 20, 16 << 20


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for the next picture instead of returning it to the kernel.

    A picture allocates a few MB of arrays and frees them. In the server glibc gave those pages
    back after each request (trim) or served them from fresh mmaps, so every request paid page
    faults for zeroed pages again: 21.4 instead of 16.3 ms of CPU per 640x480 picture. Higher
    fixed thresholds keep up to 64 MB of freed heap. Without glibc (musl, macOS) nothing changes;
    the answer says whether the thresholds were set.
    """
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):
        return False
    trim = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    mmap = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return bool(trim and mmap)


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
            "digits_cli.server:app_from_env", factory=True, workers=serve.workers, **options
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
