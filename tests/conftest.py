"""Shared fixtures: a small real MNIST sample, splits made from it, one MLflow store per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from digits_cli.data import Split, write_splits

TEST_DATA = Path(__file__).parent / "data"
REAL_IMAGES = TEST_DATA / "real"

os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")


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
    return folder


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One SQLite MLflow store for the whole session: creating one takes seconds."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}"
