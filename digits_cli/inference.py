"""Choosing the model a reading uses, loading it once, and reading pictures with it.

A model spec is one of:

- ``None``: the champion. The file `digits register` wrote (``registry.champion_dir``) when it is
  there, else ``models:/<registry.model_name>@champion`` from the registry.
- a file ``*.onnx``: run by ONNX Runtime, named by the metadata inside it;
- ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID[/...]``: resolved through MLflow
  (the 'registry' extra), which downloads the run's ONNX file;
- a ``.pt`` checkpoint: exported to ONNX in memory first, so it needs torch (the 'train' extra).

Every path ends in the same ONNX Runtime classifier; torch and MLflow are imported only by the
branches that need them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digits_cli.config import SegmentSettings, Settings
from digits_cli.errors import DigitsError, missing_extra
from digits_cli.runtime import Classify, OnnxClassifier, load_onnx_file
from digits_cli.tracking import CHECKPOINT_ARTIFACT, ONNX_ARTIFACT, tracking_uri

if TYPE_CHECKING:
    import numpy as np

    from digits_cli.finder import Reading
    from digits_cli.finder.results import Check

CHAMPION_FILE = "model.onnx"  # inside registry.champion_dir, with its record model.json


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to classify 28x28 crops, with where it came from."""

    classify: Classify
    name: str
    version: str
    uri: str

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "uri": self.uri}

    def public(self) -> dict[str, str]:
        """What HTTP clients are told: name and version, the URI only when it is a registry's
        (a local path tells them about the server's disk, not about the model)."""
        shown = {"name": self.name, "version": self.version}
        return {**shown, "uri": self.uri} if is_registry_uri(self.uri) else shown


def default_model_uri(settings: Settings) -> str:
    """The registry's champion: ``models:/<registry.model_name>@champion``."""
    return f"models:/{settings.registry.model_name}@champion"


def champion_file(settings: Settings) -> Path:
    """Where `digits register` writes the champion's ONNX file."""
    return settings.registry.champion_dir / CHAMPION_FILE


def model_spec(spec: str | None, settings: Settings) -> str:
    """The model a spec names: itself, else the champion's file if present, else the registry."""
    if spec:
        return spec
    local = champion_file(settings)
    return str(local) if local.is_file() else default_model_uri(settings)


def is_registry_uri(spec: str) -> bool:
    return spec.startswith(("models:/", "runs:/"))


def load_model(spec: str | None, settings: Settings) -> LoadedModel:
    """Load the model ``spec`` names (see the module docstring) once, ready to classify."""
    uri = model_spec(spec, settings)
    try:
        if is_registry_uri(uri):
            data, found = download_onnx(uri, settings)
            classifier = OnnxClassifier(data, uri)
            # What the registry knows (version, test accuracy) beside what the file carries.
            classifier.metadata = {**classifier.metadata, **found}
            return LoadedModel(classifier, found["name"], found["version"], uri)
        path = Path(uri)
        if path.suffix == ".pt":
            data, meta = checkpoint_onnx(path)
            classifier = OnnxClassifier(data, uri)
        else:
            classifier = load_onnx_file(path)
            meta = classifier.metadata
    except ModuleNotFoundError as exc:
        raise missing_extra(exc) from exc
    return LoadedModel(
        classifier, meta.get("name", path.stem), str(meta.get("version", "local")), uri
    )


def checkpoint_onnx(path: Path) -> tuple[bytes, dict[str, Any]]:
    """A torch checkpoint as ONNX bytes and its provenance (needs torch and onnx)."""
    from digits_cli.export import onnx_bytes
    from digits_cli.model import load_checkpoint

    model, meta = load_checkpoint(path)
    exported = meta.get("exported_from", {})  # checkpoints exported by earlier releases
    provenance = {
        "name": exported.get("name"),
        "version": exported.get("version"),
        "run_id": meta.get("mlflow_run_id"),
        "data_manifest_sha256": meta.get("data_manifest_sha256"),
        "arch": model.arch,
    }
    provenance = {key: value for key, value in provenance.items() if value is not None}
    return onnx_bytes(model, provenance), provenance


def download_onnx(uri: str, settings: Settings) -> tuple[bytes, dict[str, Any]]:
    """The ONNX bytes of the model a registry or run URI names, and its provenance (name,
    version, run id; for a registered version also its test accuracy and data manifest).

    A run logged before ONNX export existed has only its checkpoint: it is exported here.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    # Progress bars for artifact downloads would be noise on a command's stderr.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri(settings.tracking))
    try:
        facts = resolve_version(client, uri)
        run_id = facts["run_id"]
        folders = {item.path for item in client.list_artifacts(run_id)}
        if ONNX_ARTIFACT in folders:
            folder = Path(client.download_artifacts(run_id, ONNX_ARTIFACT))
            files = sorted(folder.glob("*.onnx"))
            if files:
                return files[0].read_bytes(), facts
        if CHECKPOINT_ARTIFACT in folders:
            folder = Path(client.download_artifacts(run_id, CHECKPOINT_ARTIFACT))
            checkpoints = sorted(folder.glob("*.pt"))
            if checkpoints:
                data, _ = checkpoint_onnx(checkpoints[0])
                return data, facts
    except MlflowException as exc:
        raise DigitsError(
            f"cannot load {uri}: {_first_line(exc.message)}; "
            "run `make run` (or digits train, evaluate, register) first"
        ) from exc
    raise DigitsError(f"{uri}: the run holds no ONNX model or checkpoint")


def resolve_version(client: Any, uri: str) -> dict[str, Any]:
    """Name, version and run id of ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or
    ``runs:/ID``; a registered version adds its registry URI, test accuracy and data manifest."""
    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").split("/", 1)[0]
        client.get_run(run_id)  # a missing run is an MlflowException naming it
        return {"name": "run", "version": run_id, "run_id": run_id}
    name, _, ref = uri.removeprefix("models:/").partition("@")
    if ref:
        found = client.get_model_version_by_alias(name, ref)
    else:
        name, _, number = name.partition("/")
        found = client.get_model_version(name, number)
    if found.run_id is None:
        raise DigitsError(f"{uri}: the model version has no source run")
    accuracy = found.tags.get("test_accuracy")
    return {
        "name": name,
        "version": str(found.version),
        "registry_uri": f"models:/{name}/{found.version}",
        "run_id": found.run_id,
        "test_accuracy": float(accuracy) if accuracy else None,
        "data_manifest_sha256": found.tags.get("data_manifest_sha256") or None,
    }


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown MLflow error"


class DigitReader:
    """Reads every digit in pictures with one loaded model."""

    def __init__(self, model: LoadedModel, segment: SegmentSettings) -> None:
        self.model = model
        self.segment = segment

    def read(self, image: np.ndarray, check: Check | None = None) -> Reading:
        """Find and classify every digit of a decoded picture; ``check`` (see read_digits) may
        stop the work."""
        from digits_cli.finder import read_digits
        from digits_cli.finder.results import no_check

        return read_digits(image, self.model.classify, self.segment, check or no_check)

    def read_bytes(
        self, data: bytes, name: str, check: Check | None = None
    ) -> tuple[np.ndarray, Reading]:
        """Decode a picture (refusing oversized ones from the header) and read it, calling
        ``check`` after decoding and while reading.

        A picture larger than the finder's working size (``segment.max_side``) is decoded
        smaller: the picture answered is that copy, while the reading's size and boxes are the
        full-size picture's (``at_size`` maps them onto the copy, say to draw on it).
        """
        from digits_cli.images import decode_scaled

        picture, size = decode_scaled(data, name, self.segment.max_pixels, self.segment.max_side)
        if check is not None:
            check()  # a picture with no digits never reaches the finder's checks
        return picture, at_size(self.read(picture, check), *size)

    def read_file(self, path: Path) -> tuple[np.ndarray, Reading]:
        """Read a picture file (see read_bytes)."""
        from digits_cli.images import read_picture_bytes

        return self.read_bytes(read_picture_bytes(path, self.segment.max_file_bytes), str(path))


def at_size(reading: Reading, width: int, height: int) -> Reading:
    """``reading`` of a picture, for the same picture at ``width`` x ``height`` pixels."""
    import dataclasses
    import math

    if (reading.width, reading.height) == (width, height) or not reading.width:
        return dataclasses.replace(reading, width=width, height=height)
    sx, sy = width / reading.width, height / reading.height

    def box(x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
        left, top = math.floor(x * sx), math.floor(y * sy)
        right, bottom = min(width, math.ceil((x + w) * sx)), min(height, math.ceil((y + h) * sy))
        return left, top, right - left, bottom - top

    digits = [dataclasses.replace(d, box=box(*d.box)) for d in reading.digits]
    return dataclasses.replace(reading, width=width, height=height, digits=digits)
