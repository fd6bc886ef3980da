"""Running an exported classifier with ONNX Runtime: the reading path's only model code.

No torch here: a digits ONNX file (digits_cli.export) takes (N, 1, 28, 28) pixels in [0, 1] and
answers (N, 10) probabilities, and carries where it came from as JSON metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from digits_cli.errors import DigitsError

INPUT_NAME = "pixels"
OUTPUT_NAME = "probabilities"
METADATA_KEY = "digits"  # the ONNX metadata entry holding the model's provenance (JSON)
ONNX_SUFFIX = ".onnx"

Classify = Callable[[np.ndarray], np.ndarray]
# ONNX Runtime 1.29+ sends usage telemetry to Microsoft from Linux too (its 1DS uploader), keeping
# a device id and an event database under ~/.cache/Microsoft (a read-only root filesystem has
# no such place); a reader of people's pictures sends nothing anywhere. Read when ONNX Runtime
# first starts, so set before any session; an explicit value is kept.
TELEMETRY_OPT_OUT = ("ORT_DISABLE_TELEMETRY", "1")


def record_path(model_file: Path) -> Path:
    """The JSON record written beside an exported model: ``model.onnx`` -> ``model.json``."""
    return Path(model_file).with_suffix(".json")


class OnnxClassifier:
    """An ONNX Runtime session classifying 28x28 crops, on one CPU thread.

    A picture's crops are a small batch: one thread per call is fastest per core, and the CLI's
    ``--jobs`` and the server's concurrent requests give the parallelism instead.
    """

    def __init__(self, data: bytes, name: str) -> None:
        os.environ.setdefault(*TELEMETRY_OPT_OUT)
        import onnxruntime as ort

        self.data, self.name = data, name
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        try:
            self.session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types on bad files
            raise DigitsError(f"{name}: not an ONNX model ({_reason(exc)})") from exc
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise DigitsError(f"{name}: not a digits ONNX model (no {INPUT_NAME} -> {OUTPUT_NAME})")
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            found = json.loads(meta.get(METADATA_KEY, "{}"))
        except json.JSONDecodeError:
            found = {}
        self.metadata: dict[str, Any] = found if isinstance(found, dict) else {}

    def __reduce__(self) -> tuple[type, tuple[bytes, str]]:
        # A session cannot be pickled; worker processes (batch.read_files) rebuild it.
        return OnnxClassifier, (self.data, self.name)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """(N, 28, 28) float32 crops in [0, 1] -> (N, 10) probabilities."""
        batch = np.ascontiguousarray(crops, dtype=np.float32).reshape(-1, 1, 28, 28)
        if not len(batch):
            return np.zeros((0, 10), np.float32)
        (probabilities,) = self.session.run(None, {INPUT_NAME: batch})
        return np.asarray(probabilities)


def load_onnx_file(path: Path) -> OnnxClassifier:
    """Load an ONNX file; a missing or unreadable one is a DigitsError naming it."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DigitsError(f"{path}: model file not found") from None
    except OSError as exc:
        raise DigitsError(f"{path}: cannot read ({exc.strerror})") from exc
    return OnnxClassifier(data, str(path))


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else exc.__class__.__name__
