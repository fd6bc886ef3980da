"""`digits validate`: every check passes on good data and names itself when its data is bad."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_BOUNDS
from typer.testing import CliRunner

from digits_cli.cli import app
from digits_cli.config import DataSettings, Settings, ValidateSettings
from digits_cli.data import Split, load_data, load_manifest, manifest_digest, write_splits
from digits_cli.validation import Check, validate, validate_data, validation_report

SETTINGS = ValidateSettings(**SAMPLE_BOUNDS)

Splits = dict[str, Split]


def copy_splits(splits: Splits) -> Splits:
    return {name: Split(s.images.copy(), s.labels.copy()) for name, s in splits.items()}


def write_variant(folder: Path, mnist_small: Splits, change: Callable[[Splits], None]) -> Path:
    """A processed folder holding the sample after ``change``, with a manifest matching it."""
    splits = copy_splits(mnist_small)
    change(splits)
    write_splits(folder, splits, source="test variant", raw_files={})
    return folder


def run_checks(folder: Path, settings: ValidateSettings = SETTINGS) -> list[Check]:
    return validate_data(load_data(folder), load_manifest(folder), settings)


def failed(checks: list[Check]) -> set[str]:
    return {check.name for check in checks if not check.passed}


def detail(checks: list[Check], name: str) -> str:
    return next(check.detail for check in checks if check.name == name)


def test_good_data_passes_every_check(processed_dir: Path) -> None:
    checks = run_checks(processed_dir)
    assert failed(checks) == set()
    assert len(checks) == 9


def test_label_of_11_fails_labels_in_range(tmp_path: Path, mnist_small: Splits) -> None:
    def relabel(splits: Splits) -> None:
        splits["train"].labels[7] = 11

    checks = run_checks(write_variant(tmp_path, mnist_small, relabel))
    assert failed(checks) == {"labels_in_range"}
    assert "train: 1 labels outside 0..9 (e.g. [11])" in detail(checks, "labels_in_range")


def test_wrong_image_shape_fails_shapes_and_skips_the_rest(
    tmp_path: Path, mnist_small: Splits
) -> None:
    def crop(splits: Splits) -> None:
        test = splits["test"]
        splits["test"] = Split(np.ascontiguousarray(test.images[:, :, :27]), test.labels)

    checks = run_checks(write_variant(tmp_path, mnist_small, crop))
    assert not checks[0].passed and checks[0].name == "shapes_and_dtypes"
    assert "test: images shape (1000, 28, 27)" in checks[0].detail
    assert all(check.detail.startswith("not run") for check in checks[1:])


def test_wrong_label_dtype_fails_shapes_and_dtypes(tmp_path: Path, mnist_small: Splits) -> None:
    def narrow(splits: Splits) -> None:
        val = splits["val"]
        splits["val"] = Split(val.images, val.labels.astype(np.int32))

    checks = run_checks(write_variant(tmp_path, mnist_small, narrow))
    assert "val: labels int32" in detail(checks, "shapes_and_dtypes")


def test_all_zero_image_fails_no_constant_images(tmp_path: Path, mnist_small: Splits) -> None:
    def blank(splits: Splits) -> None:
        splits["val"].images[3] = 0

    checks = run_checks(write_variant(tmp_path, mnist_small, blank))
    assert failed(checks) == {"no_constant_images"}
    assert "val: 1 empty or constant images (e.g. #[3])" in detail(checks, "no_constant_images")


def copy_test_into_train(count: int) -> Callable[[Splits], None]:
    def leak(splits: Splits) -> None:
        splits["train"].images[:count] = splits["test"].images[:count]
        splits["train"].labels[:count] = splits["test"].labels[:count]

    return leak


def test_train_test_duplicates_over_threshold_fail_cross_split_duplicates(
    tmp_path: Path, mnist_small: Splits
) -> None:
    checks = run_checks(write_variant(tmp_path, mnist_small, copy_test_into_train(3)))
    assert failed(checks) == {"cross_split_duplicates"}
    assert "train/test 3" in detail(checks, "cross_split_duplicates")


def test_train_test_duplicates_within_threshold_pass(tmp_path: Path, mnist_small: Splits) -> None:
    folder = write_variant(tmp_path, mnist_small, copy_test_into_train(3))
    tolerant = SETTINGS.model_copy(update={"max_cross_split_duplicates": 3})
    assert failed(run_checks(folder, tolerant)) == set()


def test_repeated_image_in_a_split_fails_duplicates_within_splits(
    tmp_path: Path, mnist_small: Splits
) -> None:
    def repeat(splits: Splits) -> None:
        splits["train"].images[1] = splits["train"].images[0]
        splits["train"].labels[1] = splits["train"].labels[0]

    checks = run_checks(write_variant(tmp_path, mnist_small, repeat))
    assert failed(checks) == {"duplicates_within_splits"}


def test_dim_pixels_fail_pixel_range(tmp_path: Path, mnist_small: Splits) -> None:
    def dim(splits: Splits) -> None:
        splits["val"].images[:] = splits["val"].images // 2

    checks = run_checks(write_variant(tmp_path, mnist_small, dim))
    assert "pixel_range" in failed(checks)
    assert "val: pixels span 0..127" in detail(checks, "pixel_range")


def test_rare_class_fails_class_balance(tmp_path: Path, mnist_small: Splits) -> None:
    def drop_zeros(splits: Splits) -> None:
        train = splits["train"]
        keep = np.flatnonzero(train.labels != 0)
        keep = np.concatenate([np.flatnonzero(train.labels == 0)[:30], keep])
        splits["train"] = Split(train.images[keep], train.labels[keep])

    checks = run_checks(write_variant(tmp_path, mnist_small, drop_zeros))
    assert failed(checks) == {"class_balance"}
    assert "train: outside [0.05, 0.15]: class 0" in detail(checks, "class_balance")


def test_thicker_test_strokes_fail_train_test_drift(tmp_path: Path, mnist_small: Splits) -> None:
    def thicken(splits: Splits) -> None:
        images = splits["test"].images
        images[:] = np.maximum(images, np.roll(images, 1, axis=2))

    checks = run_checks(write_variant(tmp_path, mnist_small, thicken))
    assert "train_test_drift" in failed(checks)


def test_manifest_mismatch_fails_counts_match_manifest(tmp_path: Path, mnist_small: Splits) -> None:
    folder = write_variant(tmp_path, mnist_small, lambda splits: None)
    manifest = load_manifest(folder)
    manifest["splits"]["val"]["count"] = 601
    (folder / "manifest.json").write_text(json.dumps(manifest))

    checks = run_checks(folder)
    assert failed(checks) == {"counts_match_manifest"}
    assert "val: 600 digits, manifest says 601" in detail(checks, "counts_match_manifest")


@pytest.fixture
def sample_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A params file with the sample's class bounds, and no DIGITS_* variables from the caller."""
    for name in list(os.environ):
        if name.startswith("DIGITS_"):
            monkeypatch.delenv(name)
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"validate": SAMPLE_BOUNDS}))  # JSON is YAML
    return params


def test_cli_on_bad_data_exits_non_zero_and_reports_the_failed_check(
    tmp_path: Path, mnist_small: Splits, sample_params: Path
) -> None:
    def blank(splits: Splits) -> None:
        splits["train"].images[0] = 0

    folder = write_variant(tmp_path / "processed", mnist_small, blank)
    report = tmp_path / "reports" / "validation.json"

    result = CliRunner().invoke(
        app,
        [
            *("--params", str(sample_params), "validate"),
            *("--processed-dir", str(folder), "--report", str(report)),
        ],
    )

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"digits: error: validation failed: no_constant_images (see {report})"
    ]
    written = json.loads(report.read_text())
    assert written["passed"] is False
    assert [c["name"] for c in written["checks"] if not c["passed"]] == ["no_constant_images"]


def test_cli_on_good_data_prints_and_writes_a_passing_report(
    tmp_path: Path, processed_dir: Path, sample_params: Path
) -> None:
    report = tmp_path / "validation.json"

    result = CliRunner().invoke(
        app,
        [
            *("--params", str(sample_params), "validate", "--processed-dir", str(processed_dir)),
            *("--report", str(report), "--json"),
        ],
    )

    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == json.loads(report.read_text())
    assert json.loads(report.read_text())["passed"] is True


def test_cli_on_a_missing_split_file_gives_one_error_line(
    tmp_path: Path, mnist_small: Splits, sample_params: Path
) -> None:
    folder = write_variant(tmp_path / "processed", mnist_small, lambda splits: None)
    (folder / "val.npz").unlink()
    result = CliRunner().invoke(
        app, ["--params", str(sample_params), "validate", "--processed-dir", str(folder)]
    )
    assert result.exit_code == 1
    assert result.stderr == (
        f"digits: error: {folder / 'val.npz'}: not found; run `digits prepare` first\n"
    )


def test_validate_writes_its_own_report_and_names_the_failed_checks(
    tmp_path: Path, mnist_small: Splits
) -> None:
    def blank(splits: Splits) -> None:
        splits["test"].images[3] = 0

    folder = write_variant(tmp_path / "processed", mnist_small, blank)
    report = tmp_path / "reports" / "validation.json"
    settings = Settings(
        data=DataSettings(processed_dir=folder),
        validate=ValidateSettings(**SAMPLE_BOUNDS, report=report),
    )
    result = validate(settings)
    assert result.failed == ["no_constant_images"]
    assert json.loads(report.read_text()) == result.report
    assert result.report == {
        **validation_report(result.checks),
        "data_manifest_sha256": manifest_digest(folder),  # what train checks the verdict is about
    }
    assert [p.name for p in report.parent.iterdir()] == ["validation.json"]  # no temporary left
