"""`digits validate`: checks on the processed data (shape, labels, pixels, counts, balance,
duplicates, drift) and their report, ``validate.report``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from digits_cli.config import Settings, ValidateSettings
from digits_cli.data import (
    Split,
    class_counts,
    load_data,
    load_manifest,
    manifest_digest,
    split_digest,
)
from digits_cli.errors import DigitsError
from digits_cli.io import write_json


@dataclass(frozen=True)
class Check:
    """The outcome of one validation check."""

    name: str
    passed: bool
    detail: str


def _per_split(
    splits: dict[str, Split], test: Callable[[str, Split], str | None]
) -> tuple[bool, str]:
    problems = [f"{name}: {msg}" for name, split in splits.items() if (msg := test(name, split))]
    return not problems, "; ".join(problems) or "ok in " + ", ".join(splits)


def check_shapes(splits: dict[str, Split]) -> Check:
    def test(_: str, s: Split) -> str | None:
        if s.images.ndim != 3 or s.images.shape[1:] != (28, 28):
            return f"images shape {s.images.shape}, expected (N, 28, 28)"
        if s.images.dtype != np.uint8:
            return f"images dtype {s.images.dtype}, expected uint8"
        if s.labels.ndim != 1 or s.labels.dtype != np.int64:
            return f"labels {s.labels.dtype}{s.labels.shape}, expected int64 (N,)"
        if len(s.labels) != len(s.images):
            return f"{len(s.images)} images but {len(s.labels)} labels"
        return None

    return Check("shapes_and_dtypes", *_per_split(splits, test))


def check_labels(splits: dict[str, Split]) -> Check:
    def test(_: str, s: Split) -> str | None:
        bad = (s.labels < 0) | (s.labels > 9)
        return (
            f"{int(bad.sum())} labels outside 0..9 (e.g. {s.labels[bad][:3].tolist()})"
            if bad.any()
            else None
        )

    return Check("labels_in_range", *_per_split(splits, test))


def check_pixels(splits: dict[str, Split]) -> Check:
    def test(_: str, s: Split) -> str | None:
        low, high = int(s.images.min()), int(s.images.max())
        if low != 0 or high != 255:
            return f"pixels span {low}..{high}, expected 0..255"
        return None

    return Check("pixel_range", *_per_split(splits, test))


def check_manifest(splits: dict[str, Split], manifest: dict) -> Check:
    recorded = manifest.get("splits", {})

    def test(name: str, s: Split) -> str | None:
        entry = recorded.get(name)
        if entry is None:
            return "missing from manifest"
        if entry.get("count") != len(s.labels):
            return f"{len(s.labels)} digits, manifest says {entry.get('count')}"
        if entry.get("class_counts") != class_counts(s.labels):
            return "class counts differ from manifest"
        if entry.get("sha256") != split_digest(s):
            return "content hash differs from manifest"
        return None

    return Check("counts_match_manifest", *_per_split(splits, test))


def check_balance(splits: dict[str, Split], cfg: ValidateSettings) -> Check:
    def test(_: str, s: Split) -> str | None:
        fractions = np.bincount(s.labels.clip(0, 9), minlength=10) / max(len(s.labels), 1)
        bad = [
            f"class {c} {f:.3f}"
            for c, f in enumerate(fractions)
            if not cfg.min_class_fraction <= f <= cfg.max_class_fraction
        ]
        if bad:
            bounds = f"[{cfg.min_class_fraction}, {cfg.max_class_fraction}]"
            return "outside " + bounds + ": " + ", ".join(bad)
        return None

    return Check("class_balance", *_per_split(splits, test))


def check_constant_images(splits: dict[str, Split]) -> Check:
    def test(_: str, s: Split) -> str | None:
        flat = s.images.reshape(len(s.images), -1)
        constant = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))
        return (
            f"{len(constant)} empty or constant images (e.g. #{constant[:3].tolist()})"
            if len(constant)
            else None
        )

    return Check("no_constant_images", *_per_split(splits, test))


def _image_keys(images: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    return flat.view(np.dtype((np.void, flat.shape[1]))).ravel()


def count_duplicates_within(images: np.ndarray) -> int:
    """Images that repeat an earlier image of the same array exactly."""
    return len(images) - len(np.unique(_image_keys(images)))


def count_shared(a: np.ndarray, b: np.ndarray) -> int:
    """Images of ``b`` that also appear exactly in ``a``."""
    return int(np.isin(_image_keys(b), np.unique(_image_keys(a))).sum())


def check_duplicates_within(splits: dict[str, Split], cfg: ValidateSettings) -> Check:
    def test(_: str, s: Split) -> str | None:
        n = count_duplicates_within(s.images)
        if n > cfg.max_within_split_duplicates:
            return f"{n} duplicate images (limit {cfg.max_within_split_duplicates})"
        return None

    return Check("duplicates_within_splits", *_per_split(splits, test))


def check_leakage(splits: dict[str, Split], cfg: ValidateSettings) -> Check:
    pairs = [("train", "val"), ("train", "test"), ("val", "test")]
    shared = {f"{a}/{b}": count_shared(splits[a].images, splits[b].images) for a, b in pairs}
    total = sum(shared.values())
    detail = ", ".join(f"{k} {v}" for k, v in shared.items())
    return Check(
        "cross_split_duplicates",
        total <= cfg.max_cross_split_duplicates,
        f"{detail} (limit {cfg.max_cross_split_duplicates} in all)",
    )


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image mean intensity (0..1) and ink area (share of pixels above half intensity)."""
    flat = images.reshape(len(images), -1)
    return {"mean_intensity": flat.mean(axis=1) / 255.0, "ink_area": (flat > 127).mean(axis=1)}


def check_drift(splits: dict[str, Split], cfg: ValidateSettings, seed: int = 0) -> Check:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(seed)

    def sample(images: np.ndarray) -> np.ndarray:
        n = min(cfg.drift_sample, len(images))
        return images[rng.choice(len(images), n, replace=False)]

    train = image_statistics(sample(splits["train"].images))
    test = image_statistics(sample(splits["test"].images))
    results = {name: ks_2samp(train[name], test[name]).pvalue for name in train}
    passed = all(p >= cfg.drift_p_value for p in results.values())
    detail = ", ".join(f"{k} KS p={p:.3g}" for k, p in results.items())
    return Check("train_test_drift", passed, f"{detail} (threshold {cfg.drift_p_value:g})")


def validate_data(splits: dict[str, Split], manifest: dict, cfg: ValidateSettings) -> list[Check]:
    """Run every check; later checks are skipped (and fail) when shapes or dtypes are wrong."""
    shapes = check_shapes(splits)
    if not shapes.passed:
        return [shapes] + [
            Check(name, False, "not run: shapes_and_dtypes failed")
            for name in (
                "labels_in_range",
                "pixel_range",
                "counts_match_manifest",
                "class_balance",
                "no_constant_images",
                "duplicates_within_splits",
                "cross_split_duplicates",
                "train_test_drift",
            )
        ]
    return [
        shapes,
        check_labels(splits),
        check_pixels(splits),
        check_manifest(splits, manifest),
        check_balance(splits, cfg),
        check_constant_images(splits),
        check_duplicates_within(splits, cfg),
        check_leakage(splits, cfg),
        check_drift(splits, cfg),
    ]


def validation_report(checks: list[Check]) -> dict:
    """The JSON report: overall verdict and every check."""
    return {"passed": all(c.passed for c in checks), "checks": [asdict(c) for c in checks]}


@dataclass(frozen=True)
class Validation:
    """What `digits validate` found: every check, and the report it wrote."""

    checks: list[Check]
    report: dict

    @property
    def failed(self) -> list[str]:
        """The names of the checks that failed."""
        return [check.name for check in self.checks if not check.passed]


def validate(settings: Settings) -> Validation:
    """Check the prepared splits and write the report to ``validate.report`` (atomically)."""
    folder = settings.data.processed_dir
    checks = validate_data(load_data(folder), load_manifest(folder), settings.validate)
    # The manifest's digest names the data this verdict is about, so train can tell.
    report = {**validation_report(checks), "data_manifest_sha256": manifest_digest(folder)}
    write_json(settings.validate.report, report)
    return Validation(checks=checks, report=report)


def require_passed(report_path: Path, data_digest: str) -> None:
    """Refuse (DigitsError) data that `digits validate` has not passed: no report, a failed one,
    or one about other data than the manifest with digest ``data_digest``."""
    rerun = "run `digits validate` first"
    try:
        report = json.loads(report_path.read_text())
    except FileNotFoundError:
        raise DigitsError(f"{report_path}: not found; {rerun}") from None
    except (OSError, ValueError) as error:
        raise DigitsError(
            f"{report_path}: unreadable validation report ({error}); {rerun}"
        ) from None
    if not isinstance(report, dict) or report.get("data_manifest_sha256") != data_digest:
        raise DigitsError(f"{report_path}: validates other data than these splits; {rerun}")
    if report.get("passed") is not True:
        failed = [c.get("name") for c in report.get("checks", []) if not c.get("passed")]
        raise DigitsError(
            f"{report_path}: the data failed validation ({', '.join(map(str, failed))}); "
            "training refuses it"
        )
