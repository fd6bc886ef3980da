"""Small plain PNGs decoded whole by libspng (png_whole): Pillow's pixels, or left to Pillow."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from digits_cli import images
from digits_cli.images import UnreadableImage, decode_image
from digits_cli.png_whole import MAX_PIXELS, decode_whole

LIMIT = 40_000_000


def page(size: tuple[int, int] = (173, 91), seed: int = 0) -> np.ndarray:
    """RGB paper with noise and dark scribbles, so every PNG filter type gets used."""
    rng = np.random.default_rng(seed)
    width, height = size
    rgb = np.clip(rng.normal(225, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    for _ in range(12):
        y, x = int(rng.integers(height - 8)), int(rng.integers(width - 8))
        rgb[y : y + 8, x : x + 3] = rng.integers(0, 80, 3)
    return rgb


def png(picture: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG", **options)
    return buffer.getvalue()


def pillows(data: bytes, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    """The picture as the Pillow path alone decodes it."""
    with monkeypatch.context() as patched:
        patched.setattr(images, "decode_whole", lambda data, max_pixels: None)
        return decode_image(data, "a.png", LIMIT)


def split_idat(data: bytes, pieces: int) -> bytes:
    """The same PNG with its pixel stream spread over ``pieces`` IDAT chunks."""
    from digits_cli.png_strips import SIGNATURE, chunk, chunks

    parts = [SIGNATURE]
    for kind, body in chunks(data):
        if kind == b"IDAT":
            step = -(-len(body) // pieces)
            parts += [chunk(b"IDAT", body[at : at + step]) for at in range(0, len(body), step)]
        else:
            parts.append(chunk(kind, body))
    return b"".join(parts)


PLAIN = {
    "RGB": lambda: png(Image.fromarray(page())),
    "grey": lambda: png(Image.fromarray(page()).convert("L")),
    "RGB with gamma and text": lambda: png(
        Image.fromarray(page()), pnginfo=text_info("Software", "a scanner")
    ),
    "pixel stream over many chunks": lambda: split_idat(png(Image.fromarray(page())), 7),
}


def text_info(key: str, value: str) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    info.add(b"gAMA", (45455).to_bytes(4, "big"))
    return info


@pytest.mark.parametrize("kind", PLAIN)
def test_a_small_plain_png_is_decoded_whole_into_pillows_pixels(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = PLAIN[kind]()
    whole = decode_whole(data, LIMIT)
    assert whole is not None
    assert whole.dtype == np.uint8 and whole.shape == (91, 173, 3)
    np.testing.assert_array_equal(whole, pillows(data, monkeypatch))
    np.testing.assert_array_equal(decode_image(data, "a.png", LIMIT), whole)


def exif_as_text() -> PngImagePlugin.PngInfo:
    """turned_exif() as ImageMagick writes EXIF in PNGs: hex in a text chunk, which Pillow
    reads too."""
    raw = b"Exif\x00\x00" + turned_exif().tobytes()
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(raw):8d}\n{raw.hex()}\n")
    return info


def turned_exif() -> Image.Exif:
    """EXIF saying the stored picture is turned a quarter (orientation 6)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif


LEFT_TO_PILLOW = {
    "transparent colour": lambda: png(Image.fromarray(page()), transparency=(225, 225, 225)),
    "EXIF chunk": lambda: png(Image.fromarray(page()), exif=turned_exif()),
    "EXIF in a text chunk": lambda: png(Image.fromarray(page()), pnginfo=exif_as_text()),
    "palette": lambda: png(Image.fromarray(page()).quantize(16)),
    "alpha": lambda: png(Image.fromarray(page()).convert("RGBA")),
    "16-bit grey": lambda: png(Image.fromarray(page()[:, :, 0].astype(np.uint16) * 257)),
    "animated": lambda: png(
        Image.fromarray(page()), save_all=True, append_images=[Image.fromarray(page(seed=1))]
    ),
}


@pytest.mark.parametrize("kind", LEFT_TO_PILLOW)
def test_pngs_whose_picture_is_more_than_their_pixels_are_left_to_pillow(kind: str) -> None:
    data = LEFT_TO_PILLOW[kind]()
    assert decode_whole(data, LIMIT) is None
    decode_image(data, "a.png", LIMIT)  # and Pillow reads them


def test_png_exif_orientation_in_either_chunk_is_still_applied() -> None:
    for data in (LEFT_TO_PILLOW["EXIF chunk"](), LEFT_TO_PILLOW["EXIF in a text chunk"]()):
        assert decode_image(data, "turned.png", LIMIT).shape == (173, 91, 3)


def test_a_png_over_the_pixel_cap_is_left_to_pillow() -> None:
    # pyspng holds the GIL while it decodes: large pictures decode where Pillow releases it.
    side = int(MAX_PIXELS**0.5) + 1
    data = png(Image.new("RGB", (side, side), (240, 240, 240)))
    assert decode_whole(data, LIMIT) is None


@pytest.mark.parametrize("damage", ["cut short", "broken pixel stream", "broken chunk"])
def test_a_damaged_small_png_is_one_error_from_pillow(damage: str) -> None:
    data = bytearray(png(Image.fromarray(page()), pnginfo=text_info("Title", "x")))
    start = data.index(b"IDAT") + 4
    if damage == "cut short":
        data = data[: len(data) // 2]
    elif damage == "broken pixel stream":
        data[start + 50 : start + 300] = bytes(250)
    else:
        data[data.index(b"tEXt") + 5] ^= 0xFF  # its CRC no longer matches
    assert decode_whole(bytes(data), LIMIT) is None
    # Pillow's own verdict (a broken chunk before the pixels: "not a PNG ... picture").
    with pytest.raises(UnreadableImage, match=r"^a\.png: ") as caught:
        decode_image(bytes(data), "a.png", LIMIT)
    assert "\n" not in str(caught.value)
