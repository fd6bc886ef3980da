"""The light reader (issue 9): ONNX models, what the reading path imports, missing extras, --jobs.

The export is checked against torch on whole test splits; the import checks run the real
commands in fresh interpreters, the way `--help` is checked in test_cli.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REAL_IMAGES

from digits_cli.config import Settings
from digits_cli.data import Split, load_data
from digits_cli.inference import load_model
from digits_cli.runtime import OnnxClassifier, load_onnx_file, record_path

ROOT = Path(__file__).parents[1]
CHAMPION_ONNX = ROOT / "models/champion/model.onnx"
CHAMPION_CHECKPOINT = ROOT / "models/model.pt"
PICTURE = REAL_IMAGES / "seed-api-test.png"
LIFECYCLE = {"torch", "torchvision", "mlflow", "dvc", "matplotlib", "codecarbon", "onnx", "scipy"}


def torch_probabilities(checkpoint: Path, images: np.ndarray) -> np.ndarray:
    import torch

    from digits_cli.model import load_checkpoint, model_input

    model, _ = load_checkpoint(checkpoint)
    with torch.inference_mode():
        return torch.softmax(model(model_input(torch.from_numpy(images))), dim=1).numpy()


def assert_parity(onnx: OnnxClassifier, checkpoint: Path, split: Split) -> None:
    """Same label for at least 99.99% of the digits, probabilities within 1e-4."""
    expected = torch_probabilities(checkpoint, split.images)
    found = np.concatenate(
        [
            onnx(split.images[i : i + 500] / np.float32(255))
            for i in range(0, len(split.labels), 500)
        ]
    )
    agreement = float(np.mean(found.argmax(1) == expected.argmax(1)))
    largest = float(np.abs(found - expected).max())
    print(f"{len(split.labels)} digits: labels agree {agreement:.4%}, max |dp| {largest:.2e}")
    assert agreement >= 0.9999
    assert largest <= 1e-4


def test_onnx_export_matches_torch_on_the_test_split(
    small_checkpoint: Path, small_onnx: Path, mnist_small: dict[str, Split]
) -> None:
    assert_parity(load_onnx_file(small_onnx), small_checkpoint, mnist_small["test"])


@pytest.mark.champion
def test_the_champion_onnx_file_matches_its_checkpoint_on_the_whole_test_split() -> None:
    if not (CHAMPION_ONNX.is_file() and CHAMPION_CHECKPOINT.is_file()):
        pytest.skip("run `make run` to produce the champion")
    from digits_cli.model import load_checkpoint

    record = json.loads(record_path(CHAMPION_ONNX).read_text())
    _, meta = load_checkpoint(CHAMPION_CHECKPOINT)
    if record["run_id"] != meta.get("mlflow_run_id"):
        pytest.skip("models/model.pt is not the champion's checkpoint")
    test = load_data(ROOT / "data/processed")["test"]
    assert len(test.labels) == 10_000
    assert_parity(load_onnx_file(CHAMPION_ONNX), CHAMPION_CHECKPOINT, test)


def test_an_exported_file_carries_its_provenance_inside_and_in_its_record(
    small_onnx: Path,
) -> None:
    record = json.loads(record_path(small_onnx).read_text())
    inside = load_onnx_file(small_onnx).metadata
    assert {k: record[k] for k in inside} == inside
    assert inside["arch"] == "lenet"
    import hashlib

    assert record["sha256"] == hashlib.sha256(small_onnx.read_bytes()).hexdigest()
    assert record["bytes"] == small_onnx.stat().st_size


def test_exporting_on_one_thread_leaves_the_warning_filters_of_decoding_threads_in_place(
    small_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server loading a checkpoint exports it on a thread of its own while other threads
    decode pictures: the export started, a decode installed its filter, the export ended, then
    the picture's header was read (over 89.5 megapixels: Pillow warns, -W error makes it an
    error unless the filter is there)."""
    import threading
    import warnings

    import torch
    from conftest import png_header_claiming
    from PIL import Image

    from digits_cli.config import PILLOW_PIXEL_LIMIT
    from digits_cli.errors import DigitsError
    from digits_cli.export import onnx_bytes
    from digits_cli.images import open_picture
    from digits_cli.model import load_checkpoint

    model, _ = load_checkpoint(small_checkpoint)
    exporting, decoding, exported = threading.Event(), threading.Event(), threading.Event()
    real_export, real_open = torch.onnx.export, Image.open

    def sequenced_export(*args: Any, **kwargs: Any) -> Any:
        exporting.set()
        assert decoding.wait(10)
        return real_export(*args, **kwargs)

    def sequenced_open(*args: Any, **kwargs: Any) -> Image.Image:
        decoding.set()
        assert exported.wait(60)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", sequenced_export)
    monkeypatch.setattr(Image, "open", sequenced_open)
    answers: dict[str, object] = {}

    def export() -> None:
        answers["export"] = len(onnx_bytes(model, {})) > 0
        exported.set()

    def decode() -> None:
        try:
            data = png_header_claiming(10_000, 9_000)
            answers["decode"] = open_picture(data, "big.png", PILLOW_PIXEL_LIMIT).size
        except DigitsError as exc:
            answers["decode"] = exc

    with warnings.catch_warnings():
        # As when the server starts: no picture decoded yet, so no filter for Pillow's warning.
        bomb = Image.DecompressionBombWarning
        warnings.filters[:] = [entry for entry in warnings.filters if entry[2] is not bomb]
        warnings.filterwarnings("error", category=RuntimeWarning, append=True)  # like -W error
        # The legacy exporter's notice names its caller, here sequenced_export.
        warnings.filterwarnings("ignore", "You are using the legacy", DeprecationWarning)
        exporter = threading.Thread(target=export)
        exporter.start()
        assert exporting.wait(60)
        decoder = threading.Thread(target=decode)
        decoder.start()
        exporter.join(120)
        decoder.join(60)
    assert answers == {"export": True, "decode": (10_000, 9_000)}


def test_a_file_that_is_not_an_onnx_model_is_one_error_naming_it(tmp_path: Path) -> None:
    from digits_cli.errors import DigitsError

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(DigitsError, match=r"junk\.onnx: not an ONNX model"):
        load_model(str(junk), Settings())
    with pytest.raises(DigitsError, match=r"missing\.onnx: model file not found"):
        load_model(str(tmp_path / "missing.onnx"), Settings())


# --- what the reading path imports ---------------------------------------------------------

# Runs a digits command in this fresh interpreter, then prints the top-level modules it imported.
IMPORTS_AFTER_COMMAND = """
import json, sys
from digits_cli.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""

SERVE_AND_READ = """
import json, sys, time
from pathlib import Path
from starlette.testclient import TestClient
from digits_cli.config import load_settings
from digits_cli.server import create_app
from digits_cli.serving import configure_process
configure_process()
settings = load_settings(overrides={"serve": {"model": sys.argv[1]}})
with TestClient(create_app(settings)) as client:
    deadline = time.monotonic() + 60
    while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)  # the model loads in the background
    picture = Path(sys.argv[2]).read_bytes()
    answer = client.post("/predictions", content=picture, headers={"content-type": "image/png"})
modules = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps({"code": answer.status_code, "modules": modules}))
"""


def run_fresh(script: str, args: list[str], cwd: Path) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", ["predict", "annotate"])
def test_reading_with_an_onnx_model_imports_nothing_of_the_lifecycle(
    command: str, small_onnx: Path, tmp_path: Path
) -> None:
    args = [command, str(PICTURE)]
    args += [str(tmp_path / "out.png")] if command == "annotate" else ["--json"]
    found = run_fresh(IMPORTS_AFTER_COMMAND, [*args, "--model", str(small_onnx)], tmp_path)
    assert found["code"] in (0, None)
    assert LIFECYCLE & set(found["modules"]) == set()
    assert "onnxruntime" in found["modules"]  # the command really ran the model


def test_serving_with_an_onnx_model_imports_nothing_of_the_lifecycle(
    small_onnx: Path, tmp_path: Path
) -> None:
    found = run_fresh(SERVE_AND_READ, [str(small_onnx), str(PICTURE)], tmp_path)
    assert found["code"] == 200
    assert LIFECYCLE & set(found["modules"]) == set()


def test_reading_the_default_champion_file_imports_nothing_of_the_lifecycle(
    small_onnx: Path, tmp_path: Path
) -> None:
    champion = tmp_path / "models/champion"
    champion.mkdir(parents=True)
    shutil.copy(small_onnx, champion / "model.onnx")
    found = run_fresh(IMPORTS_AFTER_COMMAND, ["predict", str(PICTURE), "--json"], tmp_path)
    assert found["code"] in (0, None)
    assert LIFECYCLE & set(found["modules"]) == set()


# --- a base install: extras that are missing ------------------------------------------------

# Hides the modules of the extras, as a base install (`pip install digits-cli`) lacks them.
WITHOUT_EXTRAS = """
import sys
LIFECYCLE = {"torch", "mlflow", "onnx", "dvc", "codecarbon", "matplotlib", "scipy"}
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in LIFECYCLE:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Missing())
from digits_cli.cli import app
app(sys.argv[1:])
"""


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (["predict", str(PICTURE), "--model", "MODEL.pt"], "train"),
        (["predict", str(PICTURE), "--model", "models:/digits-classifier@champion"], "registry"),
        (["predict", str(PICTURE)], "registry"),  # no champion file: the registry's champion
        (["train"], "train"),
        (["evaluate"], "train"),
        (["export", "out.onnx", "--model", "MODEL.pt"], "train"),
    ],
)
def test_a_command_needing_a_missing_extra_says_which_in_one_line(
    args: list[str], extra: str, small_checkpoint: Path, tmp_path: Path
) -> None:
    args = [str(small_checkpoint) if a == "MODEL.pt" else a for a in args]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"needs the '{extra}' extra" in result.stderr
    assert f"pip install 'digits-cli[{extra}]'" in result.stderr
    assert not (tmp_path / "out.onnx").exists()


# --- many files at once ---------------------------------------------------------------------


def test_predict_with_jobs_answers_in_order_with_one_line_per_bad_file(
    small_onnx: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "pictures"
    folder.mkdir()
    pictures = sorted(REAL_IMAGES.glob("*.png"))
    for i in range(12):
        shutil.copy(pictures[i % len(pictures)], folder / f"{i:02d}.png")
    (folder / "05b.png").write_bytes(b"not a picture")
    outputs = {}
    for jobs in ("1", "2"):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "digits_cli",
                "predict",
                str(folder),
                "--json",
                "--model",
                str(small_onnx),
                "--jobs",
                jobs,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"digits: error: {folder / '05b.png'}: not a PNG, JPEG, BMP, TIFF or WebP picture"
        ]
        outputs[jobs] = [json.loads(line) for line in result.stdout.splitlines()]
    assert outputs["1"] == outputs["2"]
    assert [Path(r["image"]).name for r in outputs["2"]] == [f"{i:02d}.png" for i in range(12)]


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_reading_and_serving_send_and_keep_no_runtime_telemetry(
    command: str, small_onnx: Path, tmp_path: Path
) -> None:
    # ONNX Runtime's telemetry keeps a device id and an event store under $HOME/.cache when it
    # is on (and uploads from there); the reader turns it off before the runtime starts.
    home = tmp_path / "home"
    home.mkdir()
    env = {
        k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")
    }
    env["HOME"] = str(home)
    if command == "predict":
        args = ["-m", "digits_cli", "predict", str(PICTURE), "--json", "--model", str(small_onnx)]
    else:
        args = ["-c", SERVE_AND_READ, str(small_onnx), str(PICTURE)]
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["code"] == 200 if command == "serve" else answer["digits"]  # it really read
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
