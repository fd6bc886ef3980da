"""Request bodies for `digits serve`: capped, reserved before reading, pictures out of forms."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Message

if TYPE_CHECKING:
    pass


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

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    # The capped body, read already, handed to Starlette's public form parsing as a request of
    # its own; inside an app Starlette answers a malformed form with HTTPException(400).
    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=10)
    except HTTPException as exc:
        raise HTTPException(400, f"malformed multipart form: {exc.detail}") from None
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
