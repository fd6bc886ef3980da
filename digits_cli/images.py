"""Decoding pictures safely into RGB arrays, and encoding them back.

Pictures come from users and the network, so decoding refuses oversized pictures from the header
alone (before any pixel is decompressed) and turns every decoder failure into one clear error.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digits_cli.errors import DigitsError
from digits_cli.png_strips import reduced_png, strip_bytes, strippable
from digits_cli.png_whole import decode_whole

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage

# Only these decoders ever run: other PIL plugins (EPS calls Ghostscript, for one) widen the attack
# surface for pictures nobody needs to read here.
INPUT_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
OUTPUT_FORMATS = {
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "bmp": "BMP",
    "tif": "TIFF",
    "tiff": "TIFF",
    "webp": "WEBP",
}


EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = (5, 6, 7, 8)  # orientations whose upright picture swaps width and height
# Modes Image.reduce works on directly.
REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "RGBa", "La", "I", "F", "CMYK")
BAND_ROWS = 128  # rows converted to RGB at once
# The finder's arrays at their peak, in RGB copies of its working picture (measured).
FINDER_COPIES = 10


class ImageTooLarge(DigitsError):
    """The picture has more pixels than allowed (``segment.max_pixels``)."""


class UnreadableImage(DigitsError):
    """The bytes are not a picture that can be decoded: empty, truncated, corrupt or unsupported."""


class UnsupportedImageFormat(UnreadableImage):
    """The bytes are not in one of the supported formats (PNG, JPEG, BMP, TIFF, WebP)."""


def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Decode picture bytes into an RGB uint8 array (H, W, 3) at full size; see decode_scaled."""
    return decode_scaled(data, name, max_pixels)[0]


def ignore_decompression_bomb_warnings() -> None:
    """Silence Pillow's decompression-bomb warning in this process: our own limit (max_pixels,
    checked from the header) replaces it. ``Image.open`` issues it for pictures over 89.5
    megapixels, before that check; under ``-W error`` it would end as a bogus "corrupt picture".

    One filter, added if missing (a test's or a caller's catch_warnings may have dropped it).
    Not ``catch_warnings`` around each decode: that swaps the process's one filter list, so with
    pictures decoding on several threads one thread's exit removes the filter another is
    decoding under (tests/test_images.py).
    """
    from PIL import Image

    ignored = ("ignore", None, Image.DecompressionBombWarning, None, 0)
    if ignored not in warnings.filters:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def open_picture(data: bytes, name: str, max_pixels: int) -> PilImage:
    """The picture's decoder, its header read and checked (format, size, pixel limit), no pixel
    decoded yet."""
    from PIL import Image

    if not data:
        raise UnreadableImage(f"{name}: empty file (0 bytes)")
    ignore_decompression_bomb_warnings()
    try:
        picture = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            f"{name}: picture too large (over {max_pixels:,} pixels allowed)"
        ) from exc
    except Image.UnidentifiedImageError as exc:
        raise UnsupportedImageFormat(f"{name}: not a PNG, JPEG, BMP, TIFF or WebP picture") from exc
    except Exception as exc:  # decoders raise many types on malformed headers
        raise UnreadableImage(f"{name}: corrupt picture header ({_reason(exc)})") from exc
    width, height = picture.size
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{name}: picture too large ({width}x{height} = {width * height:,} pixels, "
            f"limit {max_pixels:,})"
        )
    if width == 0 or height == 0:
        raise UnreadableImage(f"{name}: picture has no pixels ({width}x{height})")
    return picture


def decoded_size(picture: PilImage, max_side: int | None) -> tuple[int, int]:
    """The size the decoder will produce: a JPEG's draft scale (1/2, 1/4, 1/8) keeping at least
    ``max_side`` pixels on its longer side, else the full size."""
    width, height = picture.size
    if max_side is None or max(width, height) <= max_side or picture.format != "JPEG":
        return width, height
    scale = 1
    while scale < 8 and max(width, height) / (scale * 2) >= max_side:
        scale *= 2
    return math.ceil(width / scale), math.ceil(height / scale)


def reading_bytes(data: bytes, name: str, max_pixels: int, max_side: int) -> int:
    """About how many bytes reading the picture holds at its peak, from its header alone: the
    decoder's output (a large 8-bit PNG: a strip and the reduced picture, see png_strips), the
    RGB copy handed to the finder, and the finder's arrays (FINDER_COPIES RGB copies at its
    working size). tests/test_images.py checks the estimate against the memory reading really takes.
    """
    picture = open_picture(data, name, max_pixels)
    width, height = decoded_size(picture, max_side)
    bands = len(picture.getbands())
    sample = 2 if picture.mode.startswith("I;16") else 4 if picture.mode in ("I", "F") else 1
    factor = reduction((width, height), max_side)
    reduced_pixels = math.ceil(width / factor) * math.ceil(height / factor)
    if in_strips(picture, data, factor):
        # The compressed bytes; a strip inflated, stored, in its PNG, decoded (and a palette's
        # converted to RGBA); the reduced picture.
        decoded = len(data) + 8 * strip_bytes(data, factor) + bands * reduced_pixels
    else:
        decoded = width * height * bands * sample
    shrink = min(1.0, max_side / max(width, height))
    working_pixels = math.ceil(width * shrink) * math.ceil(height * shrink)
    return decoded + 3 * reduced_pixels + FINDER_COPIES * 3 * working_pixels


def decode_scaled(
    data: bytes, name: str, max_pixels: int, max_side: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode picture bytes into an RGB uint8 array (H, W, 3; perhaps read-only), upright as EXIF
    orientation says, and the upright picture's full size (width, height), which the array may
    be smaller than.

    With ``max_side`` a larger picture is decoded no larger than needed to keep at least that
    many pixels on its longer side: a JPEG by decoding at 1/2, 1/4 or 1/8 scale (draft mode), any
    other by an integer box reduction right after decoding, before alpha, colour and EXIF work,
    so no full-size copy is made beyond the decoder's own. A small plain PNG is decoded by libspng
    (png_whole), the rest by Pillow. Transparent pixels are composited on white, 16-bit pictures
    scaled to 8 bits. Pictures with more than ``max_pixels`` pixels are refused from the header
    before their pixels are decoded.
    """
    # A small plain PNG needs no Pillow at all: its import is 40 ms of a cold `digits predict`.
    if (whole := decode_whole(data, max_pixels)) is not None:
        size = (whole.shape[1], whole.shape[0])
        if reduction(size, max_side) == 1:
            return whole, size
    from PIL import Image

    picture = open_picture(data, name, max_pixels)  # its filter covers load() (TIFF tiles) too
    width, height = picture.size
    try:
        factor = reduction(picture.size, max_side)
        if in_strips(picture, data, factor):
            small = reduced_png(data, factor)  # never the whole picture in memory
            turned = small.getexif().get(EXIF_ORIENTATION, 1) in QUARTER_TURNS
            return _to_rgb(small), (height, width) if turned else (width, height)
        if decoded_size(picture, max_side) != picture.size:
            picture.draft(picture.mode, decoded_size(picture, max_side))
        turned = picture.getexif().get(EXIF_ORIENTATION, 1) in QUARTER_TURNS
        picture.load()
        if max_side is not None:
            picture = reduced(picture, max_side)  # the full-size decode is freed here
        return _to_rgb(picture), (height, width) if turned else (width, height)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: picture too large (over {max_pixels:,} pixels)") from exc
    except MemoryError:
        raise
    except Exception as exc:  # truncated or corrupt pixel data surfaces in many types
        raise UnreadableImage(f"{name}: truncated or corrupt picture ({_reason(exc)})") from exc


def in_strips(picture: PilImage, data: bytes, factor: int) -> bool:
    """Whether the picture is decoded a strip at a time (png_strips): a PNG it handles, to be
    reduced by ``factor``."""
    return picture.format == "PNG" and factor >= 2 and strippable(data)


def reduction(size: tuple[int, int], max_side: int | None) -> int:
    """The largest integer factor that keeps ``max_side`` pixels on the longer side (1: none)."""
    return max(1, max(size) // max_side) if max_side else 1


def reduced(picture: PilImage, max_side: int) -> PilImage:
    """``picture`` box-reduced by the largest integer factor that keeps ``max_side`` pixels on
    its longer side (itself when there is none)."""
    factor = reduction(picture.size, max_side)
    if factor < 2:
        return picture
    if picture.mode.startswith("I;16"):  # 16-bit: into 32-bit, values kept
        picture = picture.convert("I")
    elif picture.mode not in REDUCIBLE_MODES:  # palette, 1-bit: into a mode reduce takes
        picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
    return picture.reduce(factor)


def read_picture_bytes(path: Path, max_bytes: int) -> bytes:
    """A picture file's bytes: a regular file of at most ``max_bytes`` only.

    A FIFO, a device or a socket named ``*.png`` would block or never end; it is opened without
    blocking and refused from its type, and a file is read no further than the limit.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableImage(f"{path}: not a regular file")
        if info.st_size > max_bytes:
            raise ImageTooLarge(
                f"{path}: file too large ({info.st_size:,} bytes, limit {max_bytes:,})"
            )
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot read ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew while being read
        raise ImageTooLarge(f"{path}: file too large (over {max_bytes:,} bytes)")
    return data


def read_image_file(path: Path, max_pixels: int, max_bytes: int) -> np.ndarray:
    """Read (see :func:`read_picture_bytes`) and decode a picture file (:func:`decode_image`)."""
    return decode_image(read_picture_bytes(path, max_bytes), str(path), max_pixels)


def output_format(fmt: str) -> str:
    """The PIL format for ``fmt``, a format or extension such as ``png`` or ``.jpg``."""
    key = fmt.lower().lstrip(".")
    if key not in OUTPUT_FORMATS:
        raise DigitsError(
            f"cannot write pictures as {fmt!r}; use one of {', '.join(sorted(OUTPUT_FORMATS))}"
        )
    return OUTPUT_FORMATS[key]


def encode_image(rgb: np.ndarray, fmt: str) -> bytes:
    """Encode an RGB uint8 array as ``fmt``, a format or extension such as ``png`` or ``.jpg``."""
    from PIL import Image

    pil_format = output_format(fmt)
    buffer = io.BytesIO()
    options = {"quality": 92} if pil_format in ("JPEG", "WEBP") else {}
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").save(
        buffer, pil_format, **options
    )
    return buffer.getvalue()


def _reason(exc: Exception) -> str:
    """The first line of an exception's message, or its type when it has none."""
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def _to_rgb(picture: PilImage) -> np.ndarray:
    """Convert a loaded PIL picture of any mode into RGB uint8, upright and flattened on white
    (read-only when the picture was RGB already)."""
    from PIL import ImageOps

    ImageOps.exif_transpose(picture, in_place=True)  # no copy: the picture is ours
    mode = picture.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # PIL's convert("L") clips 16-bit and float values instead of scaling them.
        grey = np.asarray(picture, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or grey.max(initial=0) > 255 else 255.0
        if mode == "F" and grey.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(grey / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode in ("P", "L", "RGB", "1") and "transparency" in picture.info
    )
    if mode == "RGB" and not has_alpha:
        # Its bytes as they are, one copy (read-only: they are a bytes object). Banded, the
        # crops and their bytes cost three copies: 0.8 ms of a 640x480 read.
        return np.asarray(picture)
    # A band of rows at a time, into the one result: no full-size converted copies (RGBA, a
    # white canvas, the composite, its RGB copy, the bytes numpy reads them from).
    width, height = picture.size
    rgb = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, BAND_ROWS):
        band = picture.crop((0, top, width, min(height, top + BAND_ROWS)))
        if has_alpha:
            rgb[top : top + BAND_ROWS] = on_white(np.asarray(band.convert("RGBA")))
        else:
            rgb[top : top + BAND_ROWS] = np.asarray(band.convert("RGB"))
    return rgb


def on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA pixels composited on opaque white into RGB, rounded as Pillow's alpha_composite
    rounds."""
    pixels = rgba.astype(np.uint32)
    alpha = pixels[..., 3:]
    # Pillow's integer blend (AlphaComposite.c) over a = 255: 7 bits of precision.
    blended = 128 * (pixels[..., :3] * alpha + 255 * (255 - alpha)) + (0x80 << 7)
    return ((((blended >> 8) + blended) >> 8) >> 7).astype(np.uint8)
