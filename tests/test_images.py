"""Decoding pictures: every supported format and mode, orientation, and every kind of bad input."""

from __future__ import annotations

import io
import os
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import png_header_claiming
from PIL import Image

from digits_cli.config import PILLOW_PIXEL_LIMIT, Settings
from digits_cli.errors import DigitsError
from digits_cli.images import (
    ImageTooLarge,
    UnreadableImage,
    UnsupportedImageFormat,
    decode_image,
    encode_image,
    read_image_file,
)

FILE_LIMIT = 10_000_000
LIMIT = 40_000_000
LOSSY = {"JPEG": 12, "WEBP": 12}


def picture() -> np.ndarray:
    """A 24x32 RGB test card: a dark left half, a red square, a light background."""
    rgb = np.full((24, 32, 3), 230, np.uint8)
    rgb[:, :16] = 20
    rgb[4:12, 20:28] = (200, 30, 30)
    return rgb


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


FORMAT_MODES = [
    ("PNG", "RGB"),
    ("PNG", "L"),
    ("PNG", "P"),
    ("PNG", "RGBA"),
    ("PNG", "LA"),
    ("JPEG", "RGB"),
    ("JPEG", "L"),
    ("BMP", "RGB"),
    ("BMP", "L"),
    ("BMP", "P"),
    ("TIFF", "RGB"),
    ("TIFF", "L"),
    ("TIFF", "RGBA"),
    ("TIFF", "CMYK"),
    ("WEBP", "RGB"),
    ("WEBP", "RGBA"),
]


@pytest.mark.parametrize(("fmt", "mode"), FORMAT_MODES)
def test_every_format_and_mode_decodes_to_rgb_uint8(fmt: str, mode: str) -> None:
    source = Image.fromarray(picture()).convert(mode)
    expected = np.asarray(source.convert("RGB"), dtype=np.int16)
    rgb = decode_image(encoded(source, fmt), f"card.{fmt.lower()}", LIMIT)
    assert rgb.shape == (24, 32, 3)
    assert rgb.dtype == np.uint8
    tolerance = LOSSY.get(fmt, 1)
    assert np.abs(rgb.astype(np.int16) - expected).mean() <= tolerance


def test_transparent_pixels_are_composited_on_white() -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)  # black everywhere
    rgba[:, :4, 3] = 0  # left half fully transparent
    rgba[:, 4:, 3] = 128  # right half half-transparent black
    rgb = decode_image(encoded(Image.fromarray(rgba, "RGBA"), "PNG"), "alpha.png", LIMIT)
    assert (rgb[:, :4] == 255).all()
    assert np.abs(rgb[:, 4:].astype(int) - 127).max() <= 1


def test_palette_transparency_is_composited_on_white() -> None:
    palette = Image.new("P", (6, 6), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putpixel((0, 0), 1)
    data = encoded(palette, "PNG", transparency=0)
    rgb = decode_image(data, "palette.png", LIMIT)
    assert tuple(rgb[0, 0]) == (255, 0, 0)
    assert tuple(rgb[3, 3]) == (255, 255, 255)


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    grey = np.array([[0, 32768, 65535]], dtype=np.uint16)
    data = encoded(Image.fromarray(grey), "PNG")
    rgb = decode_image(data, "deep.png", LIMIT)
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied() -> None:
    rgb = np.full((20, 40, 3), 255, np.uint8)
    rgb[:5, :5] = 0  # dark mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # stored picture must be rotated 90 degrees clockwise to display
    data = encoded(Image.fromarray(rgb), "JPEG", exif=exif.tobytes(), quality=95)
    upright = decode_image(data, "phone.jpg", LIMIT)
    assert upright.shape == (40, 20, 3)
    assert upright[:5, -5:].mean() < 60  # the mark is now top-right
    assert upright[:5, :5].mean() > 200


def test_empty_file_is_unreadable_and_named() -> None:
    with pytest.raises(UnreadableImage, match=r"empty\.png: empty file"):
        decode_image(b"", "empty.png", LIMIT)


def test_truncated_picture_is_unreadable_and_named() -> None:
    noisy = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = encoded(Image.fromarray(noisy), "PNG")
    with pytest.raises(UnreadableImage, match=r"cut\.png: truncated or corrupt") as caught:
        decode_image(data[: len(data) // 2], "cut.png", LIMIT)
    assert "\n" not in str(caught.value)


def test_text_is_not_a_picture() -> None:
    with pytest.raises(UnsupportedImageFormat, match=r"notes\.txt: not a PNG, JPEG"):
        decode_image(b"just some words\n", "notes.txt", LIMIT)


def test_formats_outside_the_supported_list_are_refused() -> None:
    gif = encoded(Image.fromarray(picture()), "GIF")
    with pytest.raises(UnsupportedImageFormat, match=r"anim\.gif"):
        decode_image(gif, "anim.gif", LIMIT)


@pytest.mark.parametrize(("width", "height"), [(8_000, 6_000), (100_000, 100_000)])
def test_oversized_picture_is_refused_from_its_header_without_allocating(
    width: int, height: int
) -> None:
    data = png_header_claiming(width, height)
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLarge, match=r"bomb\.png: picture too large"):
            decode_image(data, "bomb.png", LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # decoding 48 megapixels would need over 100 MB


def test_pixel_limit_counts_width_times_height() -> None:
    data = encoded(Image.fromarray(picture()), "PNG")
    assert decode_image(data, "card.png", 24 * 32).shape == (24, 32, 3)
    with pytest.raises(ImageTooLarge, match="768 pixels, limit 767"):
        decode_image(data, "card.png", 24 * 32 - 1)


def test_missing_file_is_unreadable_and_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.png"
    with pytest.raises(UnreadableImage, match=r"nowhere\.png: cannot read"):
        read_image_file(missing, LIMIT, FILE_LIMIT)


def test_folder_is_unreadable_and_named(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImage, match=f"{tmp_path.name}: not a regular file"):
        read_image_file(tmp_path, LIMIT, FILE_LIMIT)


def test_reads_a_picture_file(tmp_path: Path) -> None:
    path = tmp_path / "card.png"
    Image.fromarray(picture()).save(path)
    assert (read_image_file(path, LIMIT, FILE_LIMIT) == picture()).all()


def test_a_fifo_named_like_a_picture_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block for ever
    with pytest.raises(UnreadableImage, match=r"photo\.png: not a regular file"):
        read_image_file(fifo, LIMIT, FILE_LIMIT)


def test_a_device_named_like_a_picture_is_refused(tmp_path: Path) -> None:
    device = tmp_path / "zero.png"
    device.symlink_to("/dev/zero")  # endless bytes
    with pytest.raises(UnreadableImage, match=r"zero\.png: not a regular file"):
        read_image_file(device, LIMIT, FILE_LIMIT)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    Image.fromarray(picture()).save(path)
    with pytest.raises(ImageTooLarge, match=r"huge\.png: file too large"):
        read_image_file(path, LIMIT, path.stat().st_size - 1)


@pytest.mark.parametrize("extension", ["png", ".PNG", "bmp", "tiff"])
def test_lossless_encoding_round_trips(extension: str) -> None:
    data = encode_image(picture(), extension)
    assert (decode_image(data, "again", LIMIT) == picture()).all()


@pytest.mark.parametrize("extension", ["jpg", "jpeg", "webp"])
def test_lossy_encoding_stays_close(extension: str) -> None:
    data = encode_image(picture(), extension)
    decoded = decode_image(data, "again", LIMIT).astype(int)
    assert np.abs(decoded - picture()).mean() < 6


def test_unknown_output_format_is_a_user_error() -> None:
    with pytest.raises(DigitsError, match=r"cannot write pictures as '\.xyz'"):
        encode_image(picture(), ".xyz")


def test_the_pixel_limit_setting_stays_within_what_pillow_can_decode() -> None:
    assert 2 * Image.MAX_IMAGE_PIXELS == PILLOW_PIXEL_LIMIT
    with pytest.raises(ValueError, match="max_pixels"):
        Settings(segment={"max_pixels": PILLOW_PIXEL_LIMIT + 1})


def test_a_large_jpeg_is_decoded_at_a_draft_scale_keeping_the_working_size() -> None:
    from digits_cli.images import decode_scaled

    data = encoded(Image.new("RGB", (9000, 6000), (200, 180, 160)), "JPEG")
    rgb, size = decode_scaled(data, "photo.jpg", LIMIT * 2, max_side=2000)
    assert size == (9000, 6000)
    assert rgb.shape == (1500, 2250, 3)  # 1/4 scale: 1/8 would leave fewer than 2000 px
    assert np.abs(rgb.astype(int) - (200, 180, 160)).max() <= 3


def test_a_large_transparent_png_is_reduced_before_it_is_flattened_on_white() -> None:
    from digits_cli.images import decode_scaled

    rgba = np.zeros((4100, 6100, 4), np.uint8)
    rgba[:100, :100] = (0, 0, 0, 255)  # opaque black corner, the rest transparent
    rgb, size = decode_scaled(encoded(Image.fromarray(rgba, "RGBA"), "PNG"), "a.png", LIMIT, 2000)
    assert size == (6100, 4100)
    assert rgb.shape == (1367, 2034, 3)  # reduced by 3: the largest keeping 2000 px
    assert (rgb[:30, :30] == 0).all() and (rgb[-10:, -10:] == 255).all()


def test_a_large_rotated_photo_reports_its_upright_size() -> None:
    from digits_cli.images import decode_scaled

    source = Image.new("RGB", (8000, 4000), "white")
    exif = source.getexif()
    exif[0x0112] = 6  # stored sideways: upright it is 4000 wide and 8000 tall
    buffer = io.BytesIO()
    source.save(buffer, "JPEG", exif=exif)
    rgb, size = decode_scaled(buffer.getvalue(), "phone.jpg", LIMIT, 2000)
    assert size == (4000, 8000)
    assert rgb.shape[:2] == (2000, 1000)  # 1/4 scale, then turned upright


def scribbled(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A picture in ``mode`` with noise (so every PNG row filter is used) and thick strokes."""
    rng = np.random.default_rng(seed)
    width, height = size
    rgba = rng.integers(200, 256, (height, width, 4), dtype=np.uint8)
    rgba[..., 3] = rng.choice(np.array([0, 90, 255], np.uint8), (height, width))
    for _ in range(30):
        x, y = rng.integers(0, width - 40), rng.integers(0, height - 40)
        rgba[y : y + 40, x : x + 8] = (20, 20, 60, 255)
    picture = Image.fromarray(rgba, "RGBA")
    if mode == "P":
        return picture.convert("RGB").quantize(32)
    if mode == "PA":  # a palette with a transparent entry
        palette = picture.convert("RGB").quantize(32)
        palette.info["transparency"] = 0
        return palette
    return picture.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "RGB", "L", "LA", "P", "PA"])
def test_a_large_png_decoded_strip_by_strip_gives_the_pixels_of_a_whole_decode(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from digits_cli import images, png_strips

    data = encoded(scribbled(mode, (701, 433)), "PNG")
    assert png_strips.strippable(data)
    monkeypatch.setattr(png_strips, "STRIP_BYTES", 9_000)  # many strips, a row above each
    monkeypatch.setattr(png_strips, "INFLATE_STEP", 1_000)
    stripped, size = images.decode_scaled(data, "a.png", LIMIT, max_side=200)
    monkeypatch.setattr(images, "strippable", lambda data: False)
    whole, whole_size = images.decode_scaled(data, "a.png", LIMIT, max_side=200)
    assert size == whole_size == (701, 433)
    assert stripped.shape == whole.shape == (145, 234, 3)  # reduced by 3
    np.testing.assert_array_equal(stripped, whole)


def test_a_large_png_read_strip_by_strip_keeps_its_exif_orientation() -> None:
    from digits_cli.images import decode_scaled

    source = scribbled("RGB", (900, 300))
    exif = source.getexif()
    exif[0x0112] = 6  # stored sideways
    buffer = io.BytesIO()
    source.save(buffer, "PNG", exif=exif)
    rgb, size = decode_scaled(buffer.getvalue(), "turned.png", LIMIT, max_side=300)
    assert size == (300, 900)
    assert rgb.shape == (300, 100, 3)


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.999])
def test_a_large_png_cut_short_is_one_unreadable_error(cut: float) -> None:
    from digits_cli.images import decode_scaled

    data = encoded(scribbled("RGB", (1200, 900)), "PNG")
    with pytest.raises(UnreadableImage, match=r"^a\.png: (truncated or corrupt|corrupt picture)"):
        decode_scaled(data[: int(cut * len(data))], "a.png", LIMIT, max_side=300)


def test_a_large_png_with_broken_pixel_data_is_one_unreadable_error() -> None:
    from digits_cli.images import decode_scaled

    data = bytearray(encoded(scribbled("RGB", (1200, 900)), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 100 : start + 400] = bytes(300)  # the zlib stream no longer inflates
    with pytest.raises(UnreadableImage, match=r"^a\.png: truncated or corrupt picture"):
        decode_scaled(bytes(data), "a.png", LIMIT, max_side=300)


# Measures, in a fresh interpreter, how far reading a picture file raises the peak memory.
PEAK_OF_READING = """
import sys
import numpy as np
from digits_cli.config import SegmentSettings
from digits_cli.finder import find_digits
from digits_cli.images import decode_scaled, reading_bytes
from digits_cli.serving import configure_process

def peak():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024

configure_process()
segment = SegmentSettings()
find_digits(np.full((300, 300, 3), 250, np.uint8), segment)  # libraries warmed up
data = open(sys.argv[1], "rb").read()
before = peak()
picture, _ = decode_scaled(data, "x", segment.max_pixels, segment.max_side)
find_digits(picture, segment)
print(peak() - before, reading_bytes(data, "x", segment.max_pixels, segment.max_side))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize(
    ("name", "mode", "size", "fmt"),
    [
        ("rgba.png", "RGBA", (6300, 6300), "PNG"),  # the picture: strip by strip
        ("photo.jpg", "RGB", (6000, 4500), "JPEG"),  # at 1/2 scale, draft mode
        ("sixteen.png", "I;16", (4000, 3000), "PNG"),  # 16-bit: decoded whole
        ("banner.png", "RGB", (120_000, 100), "PNG"),  # so wide that one strip is 36 MB
    ],
)
def test_the_memory_reading_takes_stays_within_its_estimate(
    name: str, mode: str, size: tuple[int, int], fmt: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from PIL import ImageDraw

    canvas = Image.new("RGBA" if mode == "RGBA" else "L", size, 0 if mode == "RGBA" else 235)
    draw = ImageDraw.Draw(canvas)
    for k in range(40):  # digit-sized rings
        x, y = 150 * (k % 8) + 100, 800 * (k // 8) + 100
        draw.ellipse(
            (x, y, x + 200, y + 300), outline=(20, 20, 20, 255) if mode == "RGBA" else 20, width=24
        )
    if mode == "I;16":
        canvas = Image.fromarray(np.asarray(canvas).astype(np.uint16) * 257)
    elif mode == "RGB":
        canvas = canvas.convert("RGB")
    path = tmp_path / name
    canvas.save(path, fmt)
    result = subprocess.run(
        [sys.executable, "-c", PEAK_OF_READING, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    measured, estimated = (int(v) for v in result.stdout.split())
    assert measured <= estimated  # what serve.decode_budget_bytes holds back covers it
    assert estimated <= 2 * measured + 20_000_000  # and it is an estimate, not a refusal
    if name == "rgba.png":  # 159 MB decoded whole: read here without ever holding that
        assert measured < 150_000_000


def test_pictures_decode_right_on_several_threads_at_once_whatever_the_warning_filters() -> None:
    """The server decodes on several threads; a picture over Pillow's warning threshold (89.5
    megapixels) must give the same answer on each, even under ``python -W error``."""
    import sys
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from digits_cli.images import open_picture

    over_warning = png_header_claiming(10_000, 9_000)  # 90 megapixels, by its header
    card = encoded(Image.fromarray(picture()), "PNG")

    def read(index: int) -> str:
        try:
            if index % 3 == 0:
                width, height = open_picture(over_warning, "big", PILLOW_PIXEL_LIMIT).size
                return f"{width}x{height}"
            if index % 3 == 1:
                decode_image(over_warning, "big", LIMIT)
            return "card" if np.array_equal(decode_image(card, "card", LIMIT), picture()) else "?"
        except DigitsError as exc:
            return type(exc).__name__

    interval = sys.getswitchinterval()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=RuntimeWarning, append=True)  # like -W error
        sys.setswitchinterval(1e-6)  # switch threads as often as possible
        try:
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(read, range(3000)))
        finally:
            sys.setswitchinterval(interval)
    expected = ["10000x9000", "ImageTooLarge", "card"]
    assert answers == [expected[index % 3] for index in range(3000)]


def test_a_decode_ending_on_one_thread_leaves_anothers_warning_filter_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interleaving that made a picture over the warning threshold "corrupt" under -W error:
    A starts decoding, B starts decoding, A finishes, then B's header is read."""
    import threading
    import warnings

    from digits_cli.images import open_picture

    real_open = Image.open
    a_inside, b_inside, a_done = threading.Event(), threading.Event(), threading.Event()

    def sequenced_open(*args: Any, **kwargs: Any) -> Image.Image:
        if threading.current_thread().name == "A":
            a_inside.set()
            assert b_inside.wait(10)
        else:
            b_inside.set()
            assert a_done.wait(10)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", sequenced_open)
    over_warning = png_header_claiming(10_000, 9_000)
    answers: dict[str, object] = {}

    def read(name: str) -> None:
        try:
            answers[name] = open_picture(over_warning, name, PILLOW_PIXEL_LIMIT).size
        except DigitsError as exc:
            answers[name] = exc
        if name == "A":
            a_done.set()

    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=RuntimeWarning, append=True)  # like -W error
        a = threading.Thread(target=read, args=("A",), name="A")
        b = threading.Thread(target=read, args=("B",), name="B")
        a.start()
        assert a_inside.wait(10)
        b.start()
        a.join(20)
        b.join(20)
    assert answers == {"A": (10_000, 9_000), "B": (10_000, 9_000)}


def test_a_png_whose_pixel_stream_runs_on_past_its_rows_is_not_inflated_further() -> None:
    import struct
    import zlib

    from digits_cli.images import decode_scaled

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    width, height = 3000, 40
    rows = (b"\x00" + b"\xff" * 3 * width) * height
    # A few hundred kB that would inflate to 400 MB more after the picture's own rows.
    compressor = zlib.compressobj(9)
    stream = compressor.compress(rows)
    for _ in range(400):
        stream += compressor.compress(bytes(1_000_000))
    stream += compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")
    )
    assert len(data) < 1_000_000
    tracemalloc.start()
    try:
        rgb, size = decode_scaled(data, "long.png", LIMIT, max_side=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == (width, height) and rgb.shape == (14, 1000, 3) and (rgb == 255).all()
    assert peak < 30_000_000


def test_compositing_on_white_rounds_as_pillow_does() -> None:
    from digits_cli.images import on_white

    rgba = np.random.default_rng(3).integers(0, 256, (64, 97, 4), dtype=np.uint8)
    rgba[:8, :, 3] = 0
    rgba[8:16, :, 3] = 255
    white = Image.new("RGBA", (97, 64), (255, 255, 255, 255))
    expected = np.asarray(
        Image.alpha_composite(white, Image.fromarray(rgba, "RGBA")).convert("RGB")
    )
    np.testing.assert_array_equal(on_white(rgba), expected)
