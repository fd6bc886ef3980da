"""The service's Prometheus metrics and the middleware that records every request."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from digits_cli.finder import Reading


UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
