"""Pictures out of request bodies (digits_cli.uploads), through a bare Starlette app."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from digits_cli.uploads import uploaded_picture

LIMIT = 10_000
PICTURE = b"\x89PNG\r\n\x1a\n" + bytes(range(200))


async def echo(request: Request) -> JSONResponse:
    data, name = await uploaded_picture(request, LIMIT)
    return JSONResponse({"size": len(data), "name": name, "same": data == PICTURE})


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(Starlette(routes=[Route("/", echo, methods=["POST"])]))


def test_the_file_field_of_a_form_is_the_picture(client: TestClient) -> None:
    response = client.post("/", files={"file": ("digits.png", PICTURE, "image/png")})
    assert response.status_code == 200
    assert response.json() == {"size": len(PICTURE), "name": "digits.png", "same": True}


def test_a_raw_image_body_is_the_picture(client: TestClient) -> None:
    response = client.post("/", content=PICTURE, headers={"content-type": "image/png"})
    assert response.json() == {"size": len(PICTURE), "name": "upload", "same": True}


def test_a_form_cut_off_before_its_closing_boundary_holds_no_file(client: TestClient) -> None:
    part_header = b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    body = b"--b0\r\n" + part_header + PICTURE
    response = client.post(
        "/", content=body, headers={"content-type": "multipart/form-data; boundary=b0"}
    )
    assert response.status_code == 400
    assert response.text == "the multipart form has no `file` field holding a picture"


def test_a_form_without_a_boundary_is_malformed(client: TestClient) -> None:
    response = client.post("/", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert response.status_code == 400
    assert response.text == "malformed multipart form: Missing boundary in multipart."


def test_a_form_of_two_files_is_refused_as_malformed(client: TestClient) -> None:
    files = [("file", ("a.png", PICTURE, "image/png")), ("other", ("b.png", PICTURE, "image/png"))]
    response = client.post("/", files=files)
    assert response.status_code == 400
    assert response.text == (
        "malformed multipart form: Too many files. Maximum number of files is 1."
    )


def test_a_form_without_the_file_field_is_refused(client: TestClient) -> None:
    response = client.post("/", data={"name": "x"}, files={"other": ("a.png", PICTURE)})
    assert response.status_code == 400
    assert "no `file` field" in response.text


def test_a_file_declared_as_text_is_refused(client: TestClient) -> None:
    response = client.post("/", files={"file": ("a.txt", b"hello", "text/plain")})
    assert response.status_code == 415
