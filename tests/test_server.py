"""`digits serve`: every endpoint and error path through the test client, one real uvicorn."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
import yaml
from conftest import cluttered_ruled_page, png_header_claiming
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.testclient import TestClient

from digits_cli.config import Settings
from digits_cli.errors import DigitsError
from digits_cli.inference import LoadedModel, load_model
from digits_cli.server import create_app
from digits_cli.serving import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "tests" / "data" / "real" / "seed-api-test.png"  # 7 hand-drawn digits
LIMIT = 50_000


def serve_settings(**serve: Any) -> Settings:
    # The one-epoch test model is unsure of many digits: keep them all, whatever the confidence.
    return Settings(segment={"min_confidence": 0.0}, serve={"max_body_bytes": LIMIT, **serve})


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def upload(data: bytes, name: str = "picture.png", content_type: str = "image/png") -> dict:
    return {"files": {"file": (name, data, content_type)}}


def error_of(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    return str(body["error"])


@pytest.fixture(scope="module")
def model(small_onnx: Path) -> LoadedModel:
    return load_model(str(small_onnx), Settings())


@pytest.fixture(scope="module")
def picture() -> bytes:
    return PICTURE.read_bytes()


@pytest.fixture(scope="module")
def client(model: LoadedModel) -> Iterator[TestClient]:
    with TestClient(create_app(serve_settings(), model=model)) as test_client:
        yield test_client


def blocking_model(model: LoadedModel) -> tuple[LoadedModel, threading.Event, threading.Event]:
    """The model, with a classify that signals ``entered`` and waits for ``release``."""
    entered, release = threading.Event(), threading.Event()

    def classify(crops: np.ndarray) -> np.ndarray:
        entered.set()
        release.wait(30)
        return model.classify(crops)

    return LoadedModel(classify, "blocking", "test", "memory"), entered, release


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# --- raw ASGI, to see how much of a body the app reads -------------------------------------


def call_asgi(app: Starlette, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, int]:
    """POST ``chunks`` to /predictions; the status and how many chunks the app read."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/predictions",
        "raw_path": b"/predictions",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    read = 0
    status = 0

    async def receive() -> dict:
        nonlocal read
        read += 1
        if read > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    anyio.run(app, scope, receive, send)
    return status, read


# --- reading pictures -----------------------------------------------------------------------


def test_predictions_answer_the_model_the_size_the_text_and_labels_keyed_by_box_corner(
    client: TestClient, model: LoadedModel, picture: bytes
) -> None:
    response = client.post("/predictions", **upload(picture))
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == model.public()
    assert (body["width"], body["height"]) == Image.open(PICTURE).size
    assert len(body["digits"]) == 7
    assert body["predictions"] == {
        f"{d['box'][0]},{d['box'][1]}": d["label"] for d in body["digits"]
    }
    assert body["text"].split() and set(body["text"]) <= set("0123456789 \n")
    for digit in body["digits"]:
        assert set(digit) == {"label", "confidence", "box", "probabilities"}
        assert len(digit["probabilities"]) == 10


def test_predictions_accept_the_raw_picture_with_an_image_content_type(
    client: TestClient, picture: bytes
) -> None:
    raw = client.post("/predictions", content=picture, headers={"content-type": "image/png"})
    form = client.post("/predictions", **upload(picture))
    assert raw.status_code == 200
    assert raw.json()["predictions"] == form.json()["predictions"]


def test_probabilities_answer_ten_probabilities_per_box_corner(
    client: TestClient, picture: bytes
) -> None:
    body = client.post("/probabilities", **upload(picture)).json()
    assert "predictions" not in body
    assert body["probabilities"] == {
        f"{d['box'][0]},{d['box'][1]}": d["probabilities"] for d in body["digits"]
    }
    for values in body["probabilities"].values():
        assert len(values) == 10 and sum(values) == pytest.approx(1, abs=1e-4)


def test_annotations_answer_the_annotated_picture_as_png(
    client: TestClient, picture: bytes
) -> None:
    response = client.post("/annotations", **upload(picture))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    annotated = Image.open(io.BytesIO(response.content))
    assert (annotated.format, annotated.size) == ("PNG", Image.open(PICTURE).size)
    original = np.asarray(Image.open(PICTURE).convert("RGB"))
    assert np.any(np.asarray(annotated.convert("RGB")) != original)


def test_annotations_answer_jpeg_when_the_accept_header_prefers_it(
    client: TestClient, picture: bytes
) -> None:
    response = client.post(
        "/annotations", headers={"accept": "image/png;q=0.5, image/jpeg"}, **upload(picture)
    )
    assert response.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(response.content)).format == "JPEG"


def test_a_picture_without_digits_answers_200_with_no_digits(client: TestClient) -> None:
    blank = png_bytes(np.full((120, 160, 3), 255, np.uint8))
    response = client.post("/predictions", **upload(blank))
    assert response.status_code == 200
    assert (response.json()["digits"], response.json()["predictions"]) == ([], {})
    assert client.post("/annotations", **upload(blank)).status_code == 200


# --- refusals -------------------------------------------------------------------------------


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(model: LoadedModel) -> None:
    app = create_app(serve_settings(), model=model)
    chunks = [b"x" * 1000] * 100
    headers = {"content-type": "image/png", "content-length": str(LIMIT + 1)}
    assert call_asgi(app, headers, chunks) == (413, 0)


def test_a_streamed_body_is_refused_as_soon_as_it_passes_the_limit(model: LoadedModel) -> None:
    app = create_app(serve_settings(), model=model)
    chunks = [b"x" * 10_000] * 100
    status, read = call_asgi(app, {"content-type": "image/png"}, chunks)
    assert status == 413
    assert read == LIMIT // 10_000 + 1


def test_a_multipart_upload_over_the_limit_is_refused(client: TestClient) -> None:
    response = client.post("/predictions", **upload(b"\0" * (LIMIT + 1)))
    assert response.status_code == 413
    assert "too large" in error_of(response)


def test_a_picture_over_the_pixel_limit_is_refused_from_its_header(client: TestClient) -> None:
    response = client.post("/predictions", **upload(png_header_claiming(100_000, 100_000)))
    assert response.status_code == 413
    assert "too large" in error_of(response)


def test_a_corrupt_picture_answers_400(client: TestClient, picture: bytes) -> None:
    response = client.post("/predictions", **upload(picture[: len(picture) // 2]))
    assert response.status_code == 400
    assert "picture.png" in error_of(response)


def test_bytes_that_are_no_picture_answer_400(client: TestClient) -> None:
    response = client.post("/annotations", **upload(b"hello, world"))
    assert response.status_code == 400
    assert "not a PNG" in error_of(response)


def test_a_body_that_is_not_a_picture_type_answers_415(client: TestClient, picture: bytes) -> None:
    response = client.post("/predictions", content=picture, headers={"content-type": "text/plain"})
    assert response.status_code == 415
    assert "text/plain" in error_of(response)


def test_an_uploaded_file_declared_as_text_answers_415(client: TestClient) -> None:
    response = client.post("/predictions", **upload(b"12345", "notes.txt", "text/plain"))
    assert response.status_code == 415


def test_a_form_without_the_file_field_answers_400(client: TestClient, picture: bytes) -> None:
    response = client.post("/predictions", files={"picture": ("p.png", picture, "image/png")})
    assert response.status_code == 400
    assert "`file`" in error_of(response)


def test_an_unknown_path_answers_404_in_json(client: TestClient) -> None:
    response = client.get("/nowhere")
    assert response.status_code == 404
    error_of(response)


def test_a_wrong_method_answers_405_in_json_naming_the_allowed_one(client: TestClient) -> None:
    response = client.get("/predictions")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    error_of(response)


# --- load and time bounds -------------------------------------------------------------------


def test_a_full_queue_answers_503_with_retry_after(model: LoadedModel, picture: bytes) -> None:
    blocking, entered, release = blocking_model(model)
    app = create_app(serve_settings(max_concurrency=1, max_queue=1), model=blocking)
    gate = app.state.service.gate
    with TestClient(app) as test_client, ThreadPoolExecutor(2) as pool:
        running = pool.submit(test_client.post, "/predictions", **upload(picture))
        assert entered.wait(30)
        queued = pool.submit(test_client.post, "/predictions", **upload(picture))
        wait_until(lambda: gate.admitted == 2)
        refused = test_client.post("/predictions", **upload(picture))
        release.set()
        assert (running.result().status_code, queued.result().status_code) == (200, 200)
    assert refused.status_code == 503
    assert int(refused.headers["retry-after"]) >= 1
    assert "busy" in error_of(refused)


def test_a_body_over_the_budget_is_refused_503_before_it_is_read(model: LoadedModel) -> None:
    app = create_app(serve_settings(body_budget_bytes=4_000), model=model)
    headers = {"content-type": "image/png", "content-length": "5000"}
    status, read = call_asgi(app, headers, [b"\0" * 5000])
    assert (status, read) == (503, 0)
    # within the budget the same body is read (and refused for what it is)
    assert call_asgi(app, {**headers, "content-length": "3000"}, [b"\0" * 3000]) == (400, 1)


def test_a_picture_too_large_to_decode_within_the_budget_is_refused_413(
    model: LoadedModel, picture: bytes
) -> None:
    app = create_app(serve_settings(decode_budget_bytes=100_000), model=model)
    with TestClient(app) as test_client:
        response = test_client.post("/predictions", **upload(picture))
    assert response.status_code == 413
    assert "serve.decode_budget_bytes allows 0.1 MB" in error_of(response)


def test_answers_name_the_model_without_the_servers_paths(
    client: TestClient, model: LoadedModel, picture: bytes
) -> None:
    assert str(Path(model.uri).parent) in model.uri  # a local file...
    answer = client.post("/predictions", **upload(picture)).json()
    assert answer["model"] == {"name": model.name, "version": model.version}  # ...not shown
    assert client.get("/ready").json()["model"] == answer["model"]


def test_out_of_memory_answers_503_not_400(model: LoadedModel, picture: bytes) -> None:
    def exhausted(crops: np.ndarray) -> np.ndarray:
        raise MemoryError

    with TestClient(
        create_app(serve_settings(), model=LoadedModel(exhausted, "oom", "test", "memory"))
    ) as test_client:
        response = test_client.post("/predictions", **upload(picture))
    assert response.status_code == 503
    assert "retry-after" in response.headers
    assert "memory" in error_of(response)


def test_a_picture_without_digits_is_held_to_the_deadline_too(model: LoadedModel) -> None:
    blank = png_bytes(np.full((2000, 2000, 3), 255, np.uint8))  # decoding alone takes > 1 ms
    with TestClient(create_app(serve_settings(timeout=0.001), model=model)) as test_client:
        response = test_client.post("/predictions", **upload(blank))
    assert response.status_code == 504


def test_a_deadline_passing_while_finding_stops_the_work_before_classifying(
    model: LoadedModel,
) -> None:
    batches = []

    def counting_classify(crops: np.ndarray) -> np.ndarray:
        batches.append(len(crops))
        return model.classify(crops)

    counting = LoadedModel(counting_classify, "counting", "test", "memory")
    page = png_bytes(cluttered_ruled_page(1))  # decoded in ~0.05 s, found in over a second
    settings = serve_settings(timeout=0.3, max_body_bytes=len(page) + 10_000)
    with TestClient(create_app(settings, model=counting)) as test_client:
        started = time.monotonic()
        response = test_client.post("/predictions", **upload(page))
        answered = time.monotonic() - started
    assert response.status_code == 504
    # The 504 waits for the work to stop (its thread holds a slot until then): stopped by the
    # finder's next check, before any crop reached the model.
    assert batches == []
    assert answered < 10


@pytest.mark.skipif(platform.system() != "Linux", reason="per-thread priorities are Linux's")
def test_pictures_are_read_on_threads_nicer_than_the_event_loop(
    model: LoadedModel, picture: bytes
) -> None:
    from digits_cli.admission import PICTURE_NICENESS

    niceness = []

    def recording(crops: np.ndarray) -> np.ndarray:
        niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return model.classify(crops)

    loop_niceness = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    app = create_app(serve_settings(), model=LoadedModel(recording, "nice", "test", "memory"))
    with TestClient(app) as test_client:
        assert test_client.post("/predictions", **upload(picture)).status_code == 200
    # Saturated cores go to /health and the 503s first: a liveness probe stays answered.
    assert niceness and set(niceness) == {min(19, loop_niceness + PICTURE_NICENESS)}


def test_a_request_over_the_timeout_answers_504(model: LoadedModel, picture: bytes) -> None:
    def slow_classify(crops: np.ndarray) -> np.ndarray:
        time.sleep(0.5)
        return model.classify(crops)

    slow = LoadedModel(slow_classify, "slow", "test", "memory")
    with TestClient(create_app(serve_settings(timeout=0.1), model=slow)) as test_client:
        response = test_client.post("/predictions", **upload(picture))
    assert response.status_code == 504
    error_of(response)


# --- lifecycle ------------------------------------------------------------------------------


def test_ready_answers_503_until_the_model_is_loaded(model: LoadedModel, picture: bytes) -> None:
    loaded = threading.Event()

    def loader() -> LoadedModel:
        loaded.wait(30)
        return model

    with TestClient(create_app(serve_settings(), model_loader=loader)) as test_client:
        assert test_client.get("/health").status_code == 200
        not_ready = test_client.get("/ready")
        too_early = test_client.post("/predictions", **upload(picture))
        loaded.set()
        wait_until(lambda: test_client.get("/ready").status_code == 200)
        assert test_client.get("/ready").json()["model"] == model.public()
    assert not_ready.status_code == 503
    assert too_early.status_code == 503
    assert "retry-after" in too_early.headers


def test_a_model_that_fails_to_load_is_reported_by_ready_and_to_the_server(
    model: LoadedModel,
) -> None:
    reported: list[str] = []

    def loader() -> LoadedModel:
        raise DigitsError("missing.pt: model checkpoint not found")

    app = create_app(serve_settings(), model_loader=loader, on_load_error=reported.append)
    with TestClient(app) as test_client:
        wait_until(lambda: bool(reported))
        response = test_client.get("/ready")
    assert reported == ["missing.pt: model checkpoint not found"]
    assert response.status_code == 503
    assert error_of(response) == "the model could not be loaded"  # the server's log says why


# --- metrics, description, page, CORS -------------------------------------------------------


def metric_samples(test_client: TestClient) -> dict[str, list[Any]]:
    response = test_client.get("/metrics")
    assert response.status_code == 200
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def test_metrics_count_requests_by_route_template_method_and_status(
    model: LoadedModel, picture: bytes
) -> None:
    with TestClient(create_app(serve_settings(), model=model)) as test_client:
        test_client.post("/predictions", **upload(picture))
        test_client.post("/predictions", **upload(b"junk"))
        test_client.get("/no/such/page/42")
        samples = metric_samples(test_client)
    counts = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in samples["digits_http_requests"]
    }
    assert counts == {
        ("/predictions", "POST", "200"): 1,
        ("/predictions", "POST", "400"): 1,
        ("unmatched", "GET", "404"): 1,
    }
    durations = [
        s for s in samples["digits_http_request_duration_seconds"] if s.name.endswith("_count")
    ]
    assert sum(s.value for s in durations) == 3


def test_metrics_describe_the_model_and_what_it_read(model: LoadedModel, picture: bytes) -> None:
    with TestClient(create_app(serve_settings(), model=model)) as test_client:
        body = test_client.post("/predictions", **upload(picture)).json()
        samples = metric_samples(test_client)

    def value(family: str, name: str) -> float:
        return sum(s.value for s in samples[family] if s.name == name)

    found = len(body["digits"])
    assert found > 0
    assert value("digits_digits_per_picture", "digits_digits_per_picture_sum") == found
    assert value("digits_prediction_confidence", "digits_prediction_confidence_count") == found
    assert value("digits_model_inference_seconds", "digits_model_inference_seconds_count") == 1
    labels = {s.labels["label"]: s.value for s in samples["digits_predicted_label"]}
    assert labels == {str(d): body["text"].count(str(d)) for d in set(body["text"]) - {" ", "\n"}}
    (info,) = samples["digits_model_info"]
    assert (info.labels, info.value) == ({"name": model.name, "version": model.version}, 1)
    assert value("digits_http_request_size_bytes", "digits_http_request_size_bytes_sum") > len(
        PICTURE.read_bytes()
    )
    assert value("digits_http_requests_in_flight", "digits_http_requests_in_flight") == 1


def test_each_app_owns_its_metrics(model: LoadedModel, picture: bytes) -> None:
    first = TestClient(create_app(serve_settings(), model=model))
    second = TestClient(create_app(serve_settings(), model=model))
    first.post("/predictions", **upload(picture))
    assert "/predictions" not in second.get("/metrics").text


def test_openapi_describes_every_endpoint(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path in ("/predictions", "/probabilities", "/annotations"):
        operation = document["paths"][path]["post"]
        assert set(operation["requestBody"]["content"]) == {"multipart/form-data", "image/*"}
        assert {"200", "400", "413", "415", "503", "504"} <= set(operation["responses"])
    assert {"/health", "/ready", "/metrics", "/"} <= set(document["paths"])


def test_the_page_and_its_assets_are_served_and_load_nothing_from_elsewhere(
    client: TestClient,
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert asset in page.text
        assert "http://" not in response.text and "https://" not in response.text
    assert "http://" not in page.text and "https://" not in page.text


def test_cors_headers_are_sent_only_to_configured_origins(model: LoadedModel) -> None:
    plain = TestClient(create_app(serve_settings(), model=model))
    allowed = TestClient(create_app(serve_settings(cors_origins=["http://app.test"]), model=model))
    origin = {"origin": "http://app.test"}
    assert "access-control-allow-origin" not in plain.get("/health", headers=origin).headers
    assert allowed.get("/health", headers=origin).headers["access-control-allow-origin"] == (
        "http://app.test"
    )
    other = allowed.get("/health", headers={"origin": "http://evil.test"})
    assert "access-control-allow-origin" not in other.headers


# --- fuzz -----------------------------------------------------------------------------------


def small_picture() -> bytes:
    """A 40x60 PNG holding two thick strokes: valid, and quick to read."""
    rgb = np.full((40, 60, 3), 255, np.uint8)
    rgb[8:32, 12:16] = 0
    rgb[8:32, 38:50] = 0
    return png_bytes(rgb)


VALID_PNG = small_picture()


@st.composite
def mutated_png(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID_PNG)
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[position : position + draw(st.integers(1, 16))]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[position:]
        if not data:
            break
    return bytes(data)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=st.one_of(st.binary(max_size=600), mutated_png()),
    path=st.sampled_from(["/predictions", "/probabilities", "/annotations"]),
    content_type=st.sampled_from(["multipart", "image/png", "image/jpeg", "application/json"]),
)
def test_any_body_gets_a_well_formed_answer(
    client: TestClient, body: bytes, path: str, content_type: str
) -> None:
    if content_type == "multipart":
        response = client.post(path, **upload(body))
    else:
        response = client.post(path, content=body, headers={"content-type": content_type})
    assert 200 <= response.status_code < 500 or response.status_code == 503
    if response.status_code == 200 and path == "/annotations":
        Image.open(io.BytesIO(response.content)).verify()
    else:
        assert isinstance(json.loads(response.content), dict)


# --- a real server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def digits_serve(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CODECARBON_LOG_LEVEL": "error", "DIGITS_SEGMENT__MIN_CONFIDENCE": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "digits_cli", "serve", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_ready(server: subprocess.Popen[str], base: str, answers: int = 1) -> None:
    """Until ``answers`` fresh connections in a row get 200 from /ready (one per worker, say)."""
    deadline = time.monotonic() + 90
    while True:
        assert server.poll() is None, server.communicate()[1]
        assert time.monotonic() < deadline, "the server never became ready"
        try:
            if all(
                httpx.get(f"{base}/ready", timeout=2).status_code == 200 for _ in range(answers)
            ):
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def stop(server: subprocess.Popen[str]) -> str:
    """Ctrl-C the server; what it wrote on stderr."""
    server.send_signal(signal.SIGINT)
    return server.communicate(timeout=30)[1]


def test_digits_serve_answers_on_loopback_and_stops_cleanly(
    small_onnx: Path, picture: bytes
) -> None:
    port = free_port()
    server = digits_serve("--port", str(port), "--model", str(small_onnx))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(server, base)
        response = httpx.post(f"{base}/predictions", **upload(picture), timeout=30)
        assert response.status_code == 200
        assert len(response.json()["digits"]) == 7
    finally:
        stderr = stop(server)
    assert server.returncode == 0, stderr
    assert "Traceback" not in stderr


@pytest.fixture(scope="module")
def two_workers(small_onnx: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A real `digits serve --workers 2`, ready, and its port."""
    port = free_port()
    server = digits_serve("--port", str(port), "--workers", "2", "--model", str(small_onnx))
    try:
        wait_until_ready(server, f"http://127.0.0.1:{port}", answers=20)
        yield server, port
    finally:
        stop(server)


def listening_pids(port: int) -> list[int]:
    """The process of each socket listening on ``port`` on IPv4 (from /proc, Linux)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(fields[9])
    pids = []
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:[") and target[8:-1] in inodes:
                pids.append(int(fd.parts[2]))
    return pids


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")
def test_each_worker_listens_on_its_own_socket_and_the_supervisor_on_none(
    two_workers: tuple[subprocess.Popen[str], int],
) -> None:
    server, port = two_workers
    pids = listening_pids(port)
    assert len(pids) == 2
    assert len(set(pids)) == 2
    assert server.pid not in pids


def test_metrics_count_the_requests_of_every_worker(
    two_workers: tuple[subprocess.Popen[str], int], picture: bytes
) -> None:
    _, port = two_workers
    base = f"http://127.0.0.1:{port}"
    for _ in range(12):  # each on a new connection, so both workers answer some
        assert httpx.post(f"{base}/predictions", **upload(picture), timeout=30).status_code == 200
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    counts = {
        s.labels["status"]: s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "digits_http_requests"
        for s in family.samples
        if s.labels["route"] == "/predictions"
    }
    assert counts == {"200": 12}


ALLOCATOR_PROBE = """
import ctypes, ctypes.util, json, sys
if sys.argv[1] == "serving":
    from digits_cli.serving import configure_process
    configure_process()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 8 << 20  # a picture's arrays: a few MB
before = libc.mallinfo2()
block = libc.malloc(SIZE)
held = libc.mallinfo2()
libc.free(block)
freed = libc.mallinfo2()
block = libc.malloc(SIZE)  # the next picture's
again = libc.mallinfo2()
print(json.dumps({
    "mapped": held.hblkhd - before.hblkhd >= SIZE,
    "kept": freed.fordblks - held.fordblks >= SIZE,
    "reused": again.arena == freed.arena and again.hblkhd == freed.hblkhd,
}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="sets glibc's allocator thresholds")
def test_serving_sets_the_allocator_to_keep_freed_memory_for_the_next_picture() -> None:
    """In a process configured for serving (configure_process), a picture-sized block freed stays
    in the heap and the next picture's comes from it; by default glibc maps and unmaps it."""

    def probe(kind: str) -> dict[str, bool]:
        result = subprocess.run(
            [sys.executable, "-c", ALLOCATOR_PROBE, kind],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return dict(json.loads(result.stdout))

    assert keep_freed_memory()
    assert probe("serving") == {"mapped": False, "kept": True, "reused": True}
    assert probe("default") == {"mapped": True, "kept": False, "reused": False}


def test_digits_serve_with_a_missing_model_ends_with_one_error_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    server = digits_serve("--port", str(free_port()), "--model", str(missing))
    _, stderr = server.communicate(timeout=60)
    assert server.returncode == 1
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith(f"digits: error: {missing}")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_digits_serve_on_a_busy_port_is_one_error_line(workers: str, small_onnx: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = digits_serve("--port", str(port), "--workers", workers, "--model", str(small_onnx))
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 1
    assert stderr.strip().splitlines() == [
        f"digits: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def raw_request(port: int, head: str, body: bytes) -> socket.socket:
    """A connection that sent ``head`` (request line and headers) and the first ``body`` bytes."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=30)
    connection.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return connection


def response_of(connection: socket.socket) -> str:
    """The whole HTTP response on a connection: its head and content-length bytes of body
    (which may arrive in a later packet than the head)."""
    received = b""
    while b"\r\n\r\n" not in received and (chunk := connection.recv(4096)):
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)[1])  # type: ignore[index]
    while len(body) < length and (chunk := connection.recv(4096)):
        body += chunk
    return (head + b"\r\n\r\n" + body).decode()


def test_slow_and_vanishing_uploads_are_answered_408_and_logged_not_500(
    small_onnx: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGITS_SERVE__BODY_TIMEOUT", "1")
    port = free_port()
    server = digits_serve("--port", str(port), "--model", str(small_onnx))
    base = f"http://127.0.0.1:{port}"
    head = "POST /predictions HTTP/1.1\nHost: x\nContent-Type: image/png\nContent-Length: 1000\n"
    try:
        wait_until_ready(server, base)
        with raw_request(port, head, b"\x89PNG") as slow:  # ...and nothing more
            start = time.monotonic()
            assert httpx.get(f"{base}/health", timeout=5).status_code == 200
            answer = response_of(slow)
            waited = time.monotonic() - start
        raw_request(port, head, b"\x89PNG").close()  # a client that gives up
        wait_until(lambda: 'status="499"' in httpx.get(f"{base}/metrics").text)
    finally:
        stderr = stop(server)
    assert answer.startswith("HTTP/1.1 408 ")
    assert '{"error":"the request body did not arrive within 1 s"}' in answer
    assert 0.9 < waited < 5
    assert "disconnected before its upload was complete" in stderr
    assert "Traceback" not in stderr and " 500 " not in stderr


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc (Linux)")
def test_requests_in_flight_of_a_killed_worker_are_not_counted_after_it_dies(
    two_workers: tuple[subprocess.Popen[str], int],
) -> None:
    _, port = two_workers
    base = f"http://127.0.0.1:{port}"
    head = "POST /predictions HTTP/1.1\nHost: x\nContent-Type: image/png\nContent-Length: 900\n"
    uploads = [raw_request(port, head, b"\x89PNG") for _ in range(4)]  # in flight, on both
    try:
        wait_until(lambda: in_flight(base) >= 3)  # at least 2 of the 4, and this scrape
        for pid in listening_pids(port):
            os.kill(pid, signal.SIGKILL)  # both workers, each in the middle of an upload
        wait_until_ready(two_workers[0], base, answers=20)  # both respawned
        # The supervisor marks a worker dead at its next check (every half second), which need
        # not come before the new workers answer: the scrape itself, nothing of the dead ones,
        # once it has.
        wait_until(lambda: in_flight(base) == 1, seconds=10)
    finally:
        for connection in uploads:
            connection.close()


def in_flight(base: str) -> float:
    """digits_http_requests_in_flight summed over the workers, as /metrics reports it."""
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "digits_http_requests_in_flight"
        for sample in family.samples
    )


def test_workers_serve_exactly_the_settings_the_parent_resolved(
    small_onnx: Path, tmp_path: Path
) -> None:
    """`digits --params x.yaml serve --workers 2`: the workers must not fall back to the
    folder's params.yaml for what x.yaml leaves unset (here serve.model)."""
    champion = tmp_path / "champion"
    champion.mkdir()
    shutil.copy(small_onnx, champion / "model.onnx")
    chosen = tmp_path / "chosen.yaml"
    chosen.write_text(yaml.safe_dump({"registry": {"champion_dir": str(champion)}}))
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "params.yaml").write_text(yaml.safe_dump({"serve": {"model": "/nowhere.onnx"}}))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "digits_cli", "--params", str(chosen), "serve",
         "--port", str(port), "--workers", "2"],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until_ready(server, f"http://127.0.0.1:{port}", answers=10)
    finally:
        stderr = stop(server)
    assert "nowhere.onnx" not in stderr


# Runs `digits serve --workers 2` in this interpreter's main thread, stops it with SIGINT once
# it answers, then serves /metrics from a new app in the same process.
SERVE_THEN_NEW_APP = """
import os, signal, sys, threading, time
import httpx
from starlette.testclient import TestClient
from digits_cli.config import load_settings
from digits_cli.inference import load_model
from digits_cli.server import create_app
from digits_cli.serving import run_server
port, model = int(sys.argv[1]), sys.argv[2]
settings = load_settings(overrides={"serve": {"port": port, "workers": 2, "model": model}})
def stop_when_ready():
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=stop_when_ready, daemon=True).start()
run_server(settings)
app = create_app(settings, model=load_model(model, settings))
with TestClient(app) as client:
    print(client.get("/metrics").status_code)
"""


def test_a_stopped_multi_worker_server_leaves_no_metrics_folder_behind_in_the_environment(
    small_onnx: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVE_THEN_NEW_APP, str(free_port()), str(small_onnx)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "200"
