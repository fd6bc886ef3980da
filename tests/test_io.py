"""Atomic artifacts (digits_cli.io): a failure while writing leaves the old file and no litter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digits_cli.io import atomic_open, atomic_path, write_json


def test_a_failure_in_the_middle_of_a_write_keeps_the_existing_file(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    write_json(metrics, {"accuracy": 0.9964})
    before = metrics.read_bytes()
    with pytest.raises(RuntimeError), atomic_open(metrics) as handle:
        handle.write('{"accuracy": 0.1')  # half a replacement...
        raise RuntimeError("killed mid-write")  # ...then the writer dies
    assert metrics.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_checkpoint_survives_a_failed_replacement_and_no_temporary_file_remains(
    tmp_path: Path,
) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"the good checkpoint")
    with pytest.raises(OSError), atomic_path(model) as tmp:
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert model.read_bytes() == b"the good checkpoint"
    assert list(tmp_path.iterdir()) == [model]


def test_a_failing_chmod_leaks_neither_the_descriptor_nor_the_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", refuse)
    open_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(PermissionError), atomic_path(tmp_path / "report.json"):
        pass
    assert len(os.listdir("/proc/self/fd")) == open_before
    assert list(tmp_path.iterdir()) == []
