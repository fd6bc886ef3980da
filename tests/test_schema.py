"""One schema for a reading: real answers of every endpoint and real `digits predict --json`
lines validate against the schemas that /openapi.json publishes; /docs shows them, offline."""

from __future__ import annotations

import copy
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from conftest import REAL_IMAGES, RunCli
from PIL import Image
from starlette.testclient import TestClient

from digits_cli.config import Settings
from digits_cli.finder import Digit, Reading
from digits_cli.inference import LoadedModel, load_model
from digits_cli.schema import ReadingLine, answer_of
from digits_cli.server import create_app

PICTURE = REAL_IMAGES / "seed-api-test.png"
LIMIT = 50_000


def serve_settings(**serve: Any) -> Settings:
    return Settings(segment={"min_confidence": 0.0}, serve={"max_body_bytes": LIMIT, **serve})


def blank_png() -> bytes:
    """A white picture: no digit in it."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((120, 160, 3), 255, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def upload(data: bytes, name: str = "picture.png", content_type: str = "image/png") -> dict:
    return {"files": {"file": (name, data, content_type)}}


@pytest.fixture(scope="module")
def model(small_onnx: Path) -> LoadedModel:
    return load_model(str(small_onnx), Settings())


@pytest.fixture(scope="module")
def client(model: LoadedModel) -> Iterator[TestClient]:
    with TestClient(create_app(serve_settings(), model=model)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    """The published OpenAPI document."""
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def strict(components: dict[str, Any]) -> dict[str, Any]:
    """The components with every object closed to undocumented fields, so that an answer with
    a field the schema does not name fails too (the published schema stays open). An ``allOf``
    is closed as a whole: its parts each name only some of the fields."""
    closed = copy.deepcopy(components)

    def close(node: Any, part: bool = False) -> None:
        if isinstance(node, dict):
            if ("properties" in node and not part) or "allOf" in node:
                node.setdefault("unevaluatedProperties", False)
            for key, value in node.items():
                close(value, part=key == "allOf")
        elif isinstance(node, list):
            for value in node:
                close(value, part)

    close(closed["schemas"])
    return closed


def check(document: dict[str, Any], schema: dict[str, Any], answer: Any) -> None:
    """Validate ``answer`` against ``schema`` (refs into the document's components)."""
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    root["components"] = strict(document["components"])
    jsonschema.Draft202012Validator.check_schema(root)
    jsonschema.Draft202012Validator(root).validate(answer)


def described(document: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    """The JSON schema the document gives for ``method path``'s ``status`` answer."""
    response = document["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return dict(response["content"]["application/json"]["schema"])


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def check_answer(document: dict[str, Any], response: httpx.Response, path: str) -> Any:
    """The answer's JSON, checked against what the document describes for its status."""
    assert response.headers["content-type"] == "application/json"
    answer = response.json()
    method = response.request.method.lower()
    check(document, described(document, path, method, response.status_code), answer)
    return answer


# --- the service ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predictions", "/probabilities"])
def test_readings_match_the_published_schema(
    client: TestClient, document: dict[str, Any], path: str
) -> None:
    response = client.post(path, **upload(PICTURE.read_bytes()))
    assert response.status_code == 200
    answer = check_answer(document, response, path)
    assert answer["digits"], "the picture holds seven digits"
    empty = check_answer(document, client.post(path, **upload(blank_png())), path)
    assert empty["digits"] == []


def test_a_registry_model_named_in_an_answer_matches_the_schema(
    model: LoadedModel, document: dict[str, Any]
) -> None:
    registered = LoadedModel(model.classify, "digits", "7", "models:/digits@champion")
    with TestClient(create_app(serve_settings(), model=registered)) as test_client:
        answer = check_answer(
            document,
            test_client.post("/predictions", **upload(PICTURE.read_bytes())),
            "/predictions",
        )
        ready = check_answer(document, test_client.get("/ready"), "/ready")
    assert answer["model"] == ready["model"] == registered.public()
    assert answer["model"]["uri"] == "models:/digits@champion"


def test_health_and_ready_match_the_published_schema(
    client: TestClient, document: dict[str, Any]
) -> None:
    assert check_answer(document, client.get("/health"), "/health") == {"status": "ok"}
    assert "uri" not in check_answer(document, client.get("/ready"), "/ready")["model"]
    for path in ("/health", "/ready"):  # the schemas say something: not every answer passes
        with pytest.raises(jsonschema.ValidationError):
            check(document, described(document, path, "get", 200), {"status": "busy"})


@pytest.mark.parametrize(
    ("status", "request_args"),
    [
        (400, upload(b"hello, world")),
        (413, upload(b"\0" * (LIMIT + 1))),
        (415, upload(b"12345", "notes.txt", "text/plain")),
    ],
)
def test_refusals_match_the_published_schema(
    client: TestClient, document: dict[str, Any], status: int, request_args: dict
) -> None:
    for path in ("/predictions", "/probabilities", "/annotations"):
        response = client.post(path, **request_args)
        assert response.status_code == status
        check_answer(document, response, path)


def test_unavailable_and_timed_out_answers_match_the_published_schema(
    model: LoadedModel, document: dict[str, Any]
) -> None:
    loaded = threading.Event()

    def loader() -> LoadedModel:
        loaded.wait(30)
        return model

    with TestClient(create_app(serve_settings(), model_loader=loader)) as test_client:
        for response, path in (
            (test_client.get("/ready"), "/ready"),
            (test_client.post("/predictions", **upload(PICTURE.read_bytes())), "/predictions"),
        ):
            assert response.status_code == 503
            check_answer(document, response, path)
        loaded.set()

    def slow_classify(crops: np.ndarray) -> np.ndarray:
        time.sleep(0.3)
        return model.classify(crops)

    slow = LoadedModel(slow_classify, "slow", "test", "memory")
    with TestClient(create_app(serve_settings(timeout=0.05), model=slow)) as test_client:
        response = test_client.post("/probabilities", **upload(PICTURE.read_bytes()))
    assert response.status_code == 504
    check_answer(document, response, "/probabilities")


def test_the_published_schema_requires_every_field_of_a_reading(
    client: TestClient, document: dict[str, Any]
) -> None:
    answer = client.post("/predictions", **upload(PICTURE.read_bytes())).json()
    schema = described(document, "/predictions", "post", 200)
    check(document, schema, answer)
    for field in answer["digits"][0]:
        broken = copy.deepcopy(answer)
        del broken["digits"][0][field]
        with pytest.raises(jsonschema.ValidationError, match="required"):
            check(document, schema, broken)
    for field in answer:
        broken = {k: v for k, v in answer.items() if k != field}
        with pytest.raises(jsonschema.ValidationError, match="required"):
            check(document, schema, broken)
    with pytest.raises(jsonschema.ValidationError):  # a box has 4 numbers
        check(document, schema, {**answer, "digits": [{**answer["digits"][0], "box": [1, 2]}]})


def test_answers_keep_exactly_their_fields_in_their_order() -> None:
    probabilities = [0.0] * 9 + [1.0]
    reading = Reading(64, 48, "9", [Digit(9, 1.0, (1, 2, 3, 4), probabilities)])
    line = answer_of(ReadingLine, reading, image="a.png", model={"name": "m", "version": "1"})
    assert json.dumps(line.model_dump()) == json.dumps(
        {
            "image": "a.png",
            "model": {"name": "m", "version": "1"},
            "width": 64,
            "height": 48,
            "text": "9",
            "digits": [
                {"label": 9, "confidence": 1.0, "box": [1, 2, 3, 4], "probabilities": probabilities}
            ],
        }
    )


# --- the command line -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema-params") / "params.yaml"
    path.write_text("segment:\n  min_confidence: 0.0\n")
    return path


def test_predict_json_lines_match_the_published_schema(
    run_cli: RunCli, params: Path, small_onnx: Path, document: dict[str, Any]
) -> None:
    pictures = sorted(REAL_IMAGES.glob("*.png"))
    model = ["--model", str(small_onnx)]
    result = run_cli(params, "predict", *map(str, pictures), *model, "--json", "--jobs", "2")
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == list(map(str, pictures))
    for line in lines:
        check(document, component("ReadingLine"), line)
        assert line["model"]["uri"] == str(small_onnx)


def test_predict_output_file_lines_and_summary_match_the_published_schema(
    run_cli: RunCli, params: Path, small_onnx: Path, document: dict[str, Any], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture")
    output = tmp_path / "readings.jsonl"
    args = [str(PICTURE), str(bad), "--model", str(small_onnx), "-o", str(output), "--json"]
    result = run_cli(params, "predict", *args)
    assert result.exit_code == 1
    check(document, component("OutputSummary"), json.loads(result.stdout))
    read, failed = (json.loads(line) for line in output.read_text().splitlines())
    check(document, component("ReadingLine"), read)
    check(document, component("FailedLine"), failed)
    assert failed["image"] == str(bad)


# --- /docs ----------------------------------------------------------------------------------


def test_docs_is_a_page_of_local_assets_that_are_served(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert (
        page.headers["content-security-policy"]
        == client.get("/").headers["content-security-policy"]
    )
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/static/swagger-ui/swagger-ui-bundle.js" in assets
    assert "/static/swagger-ui/swagger-ui.css" in assets
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        assert client.get(asset).status_code == 200, asset
    initializer = client.get("/static/docs.js").text
    assert '"/openapi.json"' in initializer and "validatorUrl: null" in initializer
    assert 'href="/docs"' in client.get("/").text  # the web page links to it
