"""Shared fixtures: a small real MNIST sample, splits made from it, one MLflow store per session."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner, Result

from digits_cli.cli import app
from digits_cli.data import Split, write_splits

TEST_DATA = Path(__file__).parent / "data"
REAL_IMAGES = TEST_DATA / "real"

os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")


def cluttered_ruled_page(seed: int, side: int = 2000, marks: int = 8000) -> np.ndarray:
    """A ruled page (rules joined by a margin line: one ink component across the page) under
    thousands of small marks: the slowest kind of page to find digits in (seconds)."""
    import cv2

    rng = np.random.default_rng(seed)
    page = np.full((side, side, 3), 245, np.uint8)
    pitch = int(rng.integers(25, 50))
    for y in range(pitch, side, pitch):
        cv2.line(page, (0, y), (side - 1, y + int(rng.integers(-20, 20))), (150, 150, 190), 1)
    margin = int(rng.integers(side // 20, side // 6))
    cv2.line(page, (margin, 0), (margin, side - 1), (150, 150, 190), 2)
    for x, y, dx, dy, thickness in zip(
        *(rng.integers(0, side, (2, marks))),
        *(rng.integers(-20, 21, (2, marks))),
        rng.integers(1, 4, marks),
        strict=True,
    ):
        cv2.line(page, (int(x), int(y)), (int(x + dx), int(y + dy)), (40, 40, 60), int(thickness))
    return page


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="session")
def mnist_small() -> dict[str, Split]:
    """3,000 train, 600 val and 1,000 test digits drawn from MNIST (tests/data/mnist_small.npz)."""
    with np.load(TEST_DATA / "mnist_small.npz") as npz:
        return {
            name: Split(npz[f"{name}_images"], npz[f"{name}_labels"])
            for name in ("train", "val", "test")
        }


@pytest.fixture(scope="session")
def processed_dir(mnist_small: dict[str, Split], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A processed-data folder (splits and manifest) holding the small MNIST sample. Read-only."""
    folder = tmp_path_factory.mktemp("processed")
    write_splits(folder, mnist_small, source="tests/data/mnist_small.npz", raw_files={})
    validated(folder)
    return folder


# The random 3,000/600/1,000 sample's classes are less even than full MNIST's.
SAMPLE_BOUNDS = {"min_class_fraction": 0.05, "max_class_fraction": 0.15}


def validated(processed_dir: Path) -> Path:
    """The passing validation report of ``processed_dir`` (written beside it once), which
    `digits train` requires: params files point ``validate.report`` at it."""
    from digits_cli.config import Settings
    from digits_cli.validation import validate

    report = processed_dir.with_name(f"{processed_dir.name}-validation.json")
    if not report.is_file():
        settings = Settings.model_validate(
            {
                "data": {"processed_dir": processed_dir},
                "validate": {"report": report, **SAMPLE_BOUNDS},
            }
        )
        assert not validate(settings).failed, "the test sample must pass validation"
    return report


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the whole session: creating one takes seconds."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="session")
def small_checkpoint(
    mnist_small: dict[str, Split], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A LeNet checkpoint trained one epoch on the small sample (seconds): usable as `--model`."""
    import torch

    from digits_cli.model import Classifier, save_checkpoint

    torch.manual_seed(0)
    model = Classifier("lenet")
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    train = mnist_small["train"]
    images = torch.from_numpy(train.images).float().div(255).unsqueeze(1)
    labels = torch.from_numpy(train.labels)
    for start in range(0, len(labels), 64):
        batch = slice(start, start + 64)
        loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    path = tmp_path_factory.mktemp("small-model") / "model.pt"
    save_checkpoint(path, model.eval(), {"train": {"arch": "lenet", "epochs": 1}})  # as training
    return path


@pytest.fixture(scope="session")
def small_onnx(small_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small checkpoint exported to ONNX (with its record): what read and serve tests load."""
    from digits_cli.config import Settings
    from digits_cli.export import export_model

    path = tmp_path_factory.mktemp("small-onnx") / "model.onnx"
    export_model(str(small_checkpoint), Settings(), path)
    return path


RunCli = Callable[..., Result]
EvaluatedModel = Callable[..., Path]


@pytest.fixture(scope="session")
def run_cli(tracking_uri: str) -> RunCli:
    """Run `digits --params PARAMS ARGS...` in-process against the session's MLflow store."""

    def run(params: Path, *args: str) -> Result:
        return CliRunner().invoke(
            app, ["--params", str(params), *args], env={"MLFLOW_TRACKING_URI": tracking_uri}
        )

    return run


def write_pipeline_params(folder: Path, processed_dir: Path, **train: object) -> Path:
    """A params file sending every artifact of train -> evaluate -> register into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.pt"
    params = {
        "data": {"processed_dir": str(processed_dir)},
        "validate": {"report": str(validated(processed_dir))},
        "train": {
            "arch": "lenet",
            "epochs": 1,
            "batch_size": 32,
            "lr": 0.05,
            "model_path": str(model),
            "report": str(folder / "train.json"),
            **train,
        },
        "evaluate": {
            "model_path": str(model),
            "metrics": str(folder / "metrics.json"),
            "plots_dir": str(folder / "plots"),
            "model_card": str(folder / "model_card.md"),
        },
        "registry": {
            "report": str(folder / "registry.json"),
            "champion_dir": str(folder / "champion"),
        },
        "tracking": {"artifact_location": str(folder.parent / "mlruns")},
        "emissions": {"enabled": False},
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="session")
def evaluated_model(
    tmp_path_factory: pytest.TempPathFactory, processed_dir: Path, run_cli: RunCli
) -> EvaluatedModel:
    """Factory: train (LeNet, one epoch on the small sample) and evaluate; gives the params file."""
    root = tmp_path_factory.mktemp("pipeline")

    def make(name: str, **train: object) -> Path:
        params = write_pipeline_params(root / name, processed_dir, **train)
        for step in ("train", "evaluate"):
            result = run_cli(params, step)
            assert result.exit_code == 0, result.stderr
        return params

    return make


@pytest.fixture(scope="session")
def good_model(evaluated_model: EvaluatedModel) -> Path:
    """Params of a LeNet trained one epoch on the 3,000-digit sample and evaluated (~84%)."""
    return evaluated_model("good")
