"""Decoding a large PNG a strip of rows at a time, each strip box-reduced as soon as it is decoded.

PNG has no reduced decoding (JPEG's draft mode), so Pillow decodes a 6300x6300 RGBA PNG into
159 MB before anything can shrink it, however small the file. Here the compressed rows are
inflated a bounded piece at a time; each strip of rows is decoded by Pillow itself (as a small
PNG holding those rows, the row above them stored unfiltered so the strip's filters resolve)
and reduced by the same integer factor as :func:`images.reduced`, giving the same pixels with
only a strip and the reduced picture in memory.

Only 8-bit, non-interlaced PNGs are decoded this way (grey, grey+alpha, RGB, RGBA, palette:
:func:`strippable`); the caller decodes others whole.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Raw (filtered) bytes of one strip, and the most a piece of compressed data inflates to at once.
STRIP_BYTES = 1_000_000
INFLATE_STEP = 256_000
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # by PNG colour type, at 8 bits per sample
# Chunks a strip needs to decode as the picture does (palette, transparency).
STRIP_CHUNKS = (b"PLTE", b"tRNS")


class Header:
    """The PNG's IHDR fields that matter here."""

    def __init__(self, body: bytes) -> None:
        if len(body) != 13:
            raise ValueError("bad IHDR chunk")
        fields = struct.unpack(">IIBBBBB", body)
        self.width, self.height, self.depth, self.colour, _, _, self.interlace = fields

    @property
    def strippable(self) -> bool:
        return self.depth == 8 and self.interlace == 0 and self.colour in CHANNELS

    @property
    def row_bytes(self) -> int:
        return self.width * CHANNELS[self.colour]

    def with_height(self, height: int) -> bytes:
        fields = (self.width, height, self.depth, self.colour, 0, 0, 0)
        return struct.pack(">IIBBBBB", *fields)


def strippable(data: bytes) -> bool:
    """Whether the PNG's header (its first chunk) is one :func:`reduced_png` decodes."""
    if not data.startswith(SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 29:
        return False
    return Header(data[16:29]).strippable


def strip_rows(row_bytes: int, factor: int) -> int:
    """Rows decoded at once: about STRIP_BYTES of them, a multiple of the reduction ``factor``
    (at least one such block, however wide a row is)."""
    return max(factor, STRIP_BYTES // row_bytes // factor * factor)


def strip_bytes(data: bytes, factor: int) -> int:
    """The raw bytes of one strip of the PNG ``data`` (see :func:`strippable`)."""
    header = Header(data[16:29])
    row = header.row_bytes + 1
    return min(strip_rows(row, factor), header.height) * row


def chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The PNG's chunks (type, body) up to IEND, their CRCs checked (but IDAT's)."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    at = len(SIGNATURE)
    while at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind = data[at + 4 : at + 8]
        end = at + 12 + length
        if end > len(data):
            raise ValueError(f"truncated {kind!r} chunk")
        body = data[at + 8 : at + 8 + length]
        # As Pillow does: the pixel data's integrity is zlib's own checksum, not the CRC.
        if kind != b"IDAT" and chunk_crc(kind, body) != struct.unpack(">I", data[end - 4 : end])[0]:
            raise ValueError(f"broken {kind!r} chunk (CRC)")
        yield kind, body
        if kind == b"IEND":
            return
        at = end
    raise ValueError("truncated PNG (no IEND)")


def chunk(kind: bytes, body: bytes) -> bytes:
    return b"".join(chunk_parts(kind, body))


def chunk_parts(kind: bytes, body: bytes) -> list[bytes]:
    """A PNG chunk as its length, type, body and CRC, for a join to copy ``body`` only once."""
    return [struct.pack(">I", len(body)), kind, body, struct.pack(">I", chunk_crc(kind, body))]


def chunk_crc(kind: bytes, body: bytes) -> int:
    """A chunk's CRC (over its type and body), without joining them into a copy."""
    return zlib.crc32(body, zlib.crc32(kind))


def inflated(pieces: list[bytes]) -> Iterator[bytes]:
    """The zlib stream split over ``pieces`` (the IDAT bodies), inflated at most INFLATE_STEP
    bytes at a time: a few hundred kB may hold a gigabyte of rows."""
    inflater = zlib.decompressobj()
    for piece in pieces:
        while piece:
            yield inflater.decompress(piece, INFLATE_STEP)
            piece = inflater.unconsumed_tail
    yield inflater.flush()


def reduced_png(data: bytes, factor: int) -> PilImage:
    """The PNG box-reduced by ``factor`` (as images.reduced would, from the whole picture),
    decoded a strip at a time (see :func:`strippable`); its EXIF, if any, in its info as
    Pillow keeps it."""
    from PIL import Image

    header: Header | None = None
    extra: list[bytes] = []
    pieces: list[bytes] = []
    exif: bytes | None = None
    for kind, body in chunks(data):
        if kind == b"IHDR":
            header = Header(body)
            if not header.strippable:
                raise ValueError("not an 8-bit, non-interlaced PNG")
        elif kind in STRIP_CHUNKS and not pieces:
            extra.append(chunk(kind, body))
        elif kind == b"eXIf":
            exif = body
        elif kind == b"IDAT":
            pieces.append(body)
    if header is None or not pieces:
        raise ValueError("no IHDR or IDAT chunk")
    row = header.row_bytes + 1  # each row starts with its filter type
    rows_per_strip = strip_rows(row, factor)
    out: PilImage | None = None
    # The rows not decoded yet, after the row above them (unfiltered, filter type 0) once there
    # is one: each strip is compressed straight from this buffer.
    pending = bytearray()
    lead = 0  # bytes of that row in front
    done = 0
    for piece in inflated(pieces):
        if done == header.height:
            break  # the rows are all there: what else the stream holds is never inflated
        pending += piece
        while done < header.height:
            rows = min(rows_per_strip, header.height - done)
            if len(pending) < lead + rows * row:
                break
            with memoryview(pending) as view:
                stored = zlib.compress(view[: lead + rows * row], 0)
            strip, last = decode_strip(header, extra, stored, rows, lead > 0, factor)
            pending[: lead + rows * row] = b"\x00" + last
            lead = len(last) + 1
            if out is None:
                size = (-(-header.width // factor), -(-header.height // factor))
                out = Image.new(strip.mode, size)
                if "transparency" in strip.info:  # grey or RGB with one transparent colour
                    out.info["transparency"] = strip.info["transparency"]
            out.paste(strip, (0, done // factor))
            done += rows
    if out is None or done < header.height:
        raise ValueError(f"truncated PNG ({done} of {header.height} rows)")
    if exif is not None:
        out.info["exif"] = exif
    return out


def decode_strip(
    header: Header, extra: list[bytes], stored: bytes, rows: int, above: bool, factor: int
) -> tuple[PilImage, bytes]:
    """``rows`` rows (after the row above them, if ``above``), their zlib stream ``stored``,
    decoded by Pillow as a small PNG and reduced by ``factor``; and their last row unfiltered
    (for the next strip). The strip's bytes are copied once, into that PNG."""
    from PIL import Image

    from digits_cli.images import REDUCIBLE_MODES

    height = rows + above
    png = b"".join(
        [
            SIGNATURE,
            chunk(b"IHDR", header.with_height(height)),
            *extra,
            *chunk_parts(b"IDAT", stored),
            chunk(b"IEND", b""),
        ]
    )
    del stored
    strip: PilImage = Image.open(io.BytesIO(png), formats=["PNG"])
    strip.load()
    del png
    last = strip.crop((0, height - 1, strip.width, height)).tobytes()
    if strip.mode not in REDUCIBLE_MODES:  # palette: into a mode reduce takes, as images.reduced
        strip = strip.convert("RGBA" if "transparency" in strip.info else "RGB")
    # Without the row above, which belongs to the strip before.
    return strip.reduce(factor, box=(0, int(above), strip.width, height)), last
