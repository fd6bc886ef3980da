"""Exporting a trained Classifier to ONNX, the file the light reader runs (lifecycle side: torch).

The ONNX graph takes (N, 1, 28, 28) float pixels in [0, 1] and answers (N, 10) probabilities: the
training split's normalisation and the softmax are inside it, so the reader feeds raw crops.
Where a model came from (registry name and version, run, test accuracy, data manifest) travels
inside the file as metadata (``runtime.METADATA_KEY``) and beside it as a JSON record.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from digits_cli.config import Settings
from digits_cli.errors import DigitsError
from digits_cli.io import atomic_path, write_json
from digits_cli.model import Classifier
from digits_cli.runtime import INPUT_NAME, METADATA_KEY, OUTPUT_NAME, record_path

ONNX_OPSET = 17


def quiet_legacy_exporter() -> None:
    """Silence the TorchScript exporter's deprecation notices, in this process.

    The exporter (dynamo=False) handles this network exactly (ONNX Runtime matches torch within
    3e-6) and needs no onnxscript; its notices that it is legacy are noise here. Filters put
    first at each export, not catch_warnings around it: that swaps the process's one filter list,
    and a server exporting a checkpoint on its loading thread would drop the filters of the
    threads decoding pictures meanwhile (images.ignore_decompression_bomb_warnings).
    """
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
    warnings.filterwarnings(  # torch.onnx.export warns as its caller (stacklevel=2): this module
        "ignore",
        message="You are using the legacy TorchScript-based ONNX export",
        category=DeprecationWarning,
        module=r"digits_cli\.export$",
    )


class WithSoftmax(nn.Module):
    """The classifier's logits turned into probabilities, so the file answers what readers use."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


def onnx_bytes(model: Classifier, metadata: dict[str, Any]) -> bytes:
    """The eval-mode ``model`` as an ONNX model (dynamic batch) carrying ``metadata``."""
    import tempfile

    import onnx

    was_training = model.training
    model.eval()
    folder = tempfile.TemporaryDirectory()
    path = Path(folder.name) / "model.onnx"
    quiet_legacy_exporter()
    try:
        torch.onnx.export(
            WithSoftmax(model),
            (torch.zeros(2, 1, 28, 28),),
            path,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
        proto = onnx.load(path)
    finally:
        model.train(was_training)
        folder.cleanup()
    return with_metadata(proto, metadata)


def with_metadata(proto: Any, metadata: dict[str, Any]) -> bytes:
    """Serialise the ONNX ``proto`` with ``metadata`` as its one digits metadata entry."""
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, sort_keys=True)
    proto.producer_name = "digits"
    return bytes(proto.SerializeToString())


def write_onnx(path: Path, data: bytes, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write an ONNX file and its JSON record (metadata, sha256, size, time) atomically.

    The model is written first and the record last, so a record always describes the file beside
    it; the answer is the record.
    """
    record = {
        **metadata,
        "file": Path(path).name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    write_json(record_path(path), record)
    return record


def relabel(data: bytes, metadata: dict[str, Any]) -> bytes:
    """An ONNX model's bytes with its digits metadata replaced by ``metadata``."""
    import onnx

    return with_metadata(onnx.load_from_string(data), metadata)


def export_model(spec: str | None, settings: Settings, output: Path) -> dict[str, Any]:
    """Write the model ``spec`` names (as for `digits predict --model`) to ``output`` (*.onnx)
    with its record beside it; it then serves without the registry and still names the registry
    model and version it came from. The answer is the record."""
    from digits_cli.inference import load_model
    from digits_cli.runtime import ONNX_SUFFIX, OnnxClassifier

    if Path(output).suffix != ONNX_SUFFIX:
        raise DigitsError(f"{output}: digits export writes ONNX files; name it *{ONNX_SUFFIX}")
    loaded = load_model(spec, settings)  # one way to find a model, whatever its source
    assert isinstance(loaded.classify, OnnxClassifier), "load_model answers ONNX classifiers"
    metadata = {
        **loaded.classify.metadata,
        "name": loaded.name,
        "version": loaded.version,
        "exported_from": loaded.uri,
    }
    return write_onnx(output, relabel(loaded.classify.data, metadata), metadata)
