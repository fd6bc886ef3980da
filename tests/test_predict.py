"""`digits predict` and `digits annotate` on the shared pictures, with every kind of model URI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import REAL_IMAGES, RunCli
from PIL import Image

from digits_cli.config import Settings
from digits_cli.inference import load_model

PICTURE = REAL_IMAGES / "seed-api-test.png"
DIGIT_KEYS = {"label", "confidence", "box", "probabilities"}
EVERY = ("--min-confidence", "0")  # every digit found answered, however unsure the model is


@pytest.fixture(scope="session")
def champion(good_model: Path, run_cli: RunCli) -> str:
    """The good model registered as champion of its own registered model."""
    result = run_cli(good_model, "register", "--name", "predict-test", "--force")
    assert result.exit_code == 0, result.stderr
    return "models:/predict-test@champion"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def found_boxes(digits: list[dict], truth: list[dict]) -> list[list[int]]:
    """The true digits' boxes a found digit is centred in (ground-truth.json's rule: the box
    grown by 20% each side), one found digit to each, in the truth's order."""
    matched, left = [], list(digits)
    for true in truth:
        x, y, w, h = true["box"]
        for digit in left:
            fx, fy, fw, fh = digit["box"]
            cx, cy = fx + fw / 2, fy + fh / 2
            if x - 0.2 * w <= cx <= x + 1.2 * w and y - 0.2 * h <= cy <= y + 1.2 * h:
                matched.append(true["box"])
                left.remove(digit)
                break
    return matched


def test_predict_json_is_one_object_per_picture_in_the_documented_shape(
    good_model: Path, run_cli: RunCli, champion: str
) -> None:
    result = run_cli(good_model, "predict", str(PICTURE), "--model", champion, *EVERY, "--json")
    assert result.exit_code == 0, result.stderr
    [reading] = json_lines(result.stdout)
    assert set(reading) == {"image", "model", "width", "height", "text", "digits"}
    assert reading["image"] == str(PICTURE)
    assert reading["model"]["name"] == "predict-test" and reading["model"]["uri"] == champion
    assert (reading["width"], reading["height"]) == Image.open(PICTURE).size
    truth = json.loads((REAL_IMAGES / "ground-truth.json").read_text())["images"][PICTURE.name]
    assert len(truth) == 7
    assert len(reading["digits"]) == 7, "the picture holds seven digits"
    assert found_boxes(reading["digits"], truth) == [digit["box"] for digit in truth]
    for digit in reading["digits"]:
        assert set(digit) == DIGIT_KEYS
        x, y, w, h = digit["box"]
        assert x >= 0 and y >= 0 and x + w <= reading["width"] and y + h <= reading["height"]
        assert len(digit["probabilities"]) == 10
        assert digit["label"] == max(range(10), key=digit["probabilities"].__getitem__)
    assert reading["text"].replace(" ", "").replace("\n", "") == "".join(
        str(d["label"]) for d in reading["digits"]
    )


@pytest.mark.parametrize("form", ["alias", "version", "run"])
def test_predict_loads_the_model_by_alias_version_or_run(
    form: str, good_model: Path, run_cli: RunCli, champion: str, tracking_uri: str
) -> None:
    import mlflow

    version = mlflow.MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(
        "predict-test", "champion"
    )
    uri = {
        "alias": champion,
        "version": f"models:/predict-test/{version.version}",
        "run": f"runs:/{version.run_id}/model",
    }[form]
    result = run_cli(good_model, "predict", str(PICTURE), "--model", uri, *EVERY, "--json")
    assert result.exit_code == 0, result.stderr
    [reading] = json_lines(result.stdout)
    by_alias = run_cli(good_model, "predict", str(PICTURE), "--model", champion, *EVERY, "--json")
    [expected] = json_lines(by_alias.stdout)
    assert len(reading["digits"]) == 7
    assert (reading["text"], reading["digits"]) == (expected["text"], expected["digits"])


def test_predict_with_nothing_registered_says_what_to_run(
    good_model: Path, run_cli: RunCli, tmp_path: Path
) -> None:
    params = yaml.safe_load(good_model.read_text())
    params["registry"]["champion_dir"] = str(tmp_path / "no-champion-here")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_cli(tmp_path / "params.yaml", "predict", str(PICTURE))
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "make run" in result.stderr


def test_predict_reports_bad_files_and_still_reads_the_others(
    tmp_path: Path, good_model: Path, run_cli: RunCli, small_onnx: Path
) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    missing = tmp_path / "missing.png"
    args = [str(empty), str(PICTURE), str(text), str(missing)]
    result = run_cli(good_model, "predict", *args, "--model", str(small_onnx), "--json")
    assert result.exit_code == 1
    assert [r["image"] for r in json_lines(result.stdout)] == [str(PICTURE)]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 3
    for path, line in zip((empty, text, missing), errors, strict=True):
        assert str(path) in line


def test_predict_reads_every_picture_in_a_folder(
    good_model: Path, run_cli: RunCli, small_onnx: Path
) -> None:
    result = run_cli(good_model, "predict", str(REAL_IMAGES), "--model", str(small_onnx), "--json")
    assert result.exit_code == 0, result.stderr
    assert sorted(Path(r["image"]).name for r in json_lines(result.stdout)) == sorted(
        p.name for p in REAL_IMAGES.glob("*.png")
    )


def test_predict_prints_a_table_for_people(
    good_model: Path, run_cli: RunCli, small_onnx: Path, tmp_path: Path
) -> None:
    # A path longer than any terminal must still come out whole on one line.
    picture = tmp_path / ("a-folder-with-a-long-name-" * 4) / PICTURE.name
    picture.parent.mkdir()
    shutil.copy(PICTURE, picture)
    result = run_cli(good_model, "predict", str(picture), "--model", str(small_onnx))
    assert result.exit_code == 0, result.stderr
    first, second = result.stdout.splitlines()[:2]
    assert first == f"model model version local ({small_onnx})"
    assert f"{picture} (300x400)" in second
    assert "confidence" in result.stdout


@pytest.fixture
def export(tmp_path: Path, good_model: Path, run_cli: RunCli, champion: str) -> tuple[Path, str]:
    """The champion exported to a file by `digits export`, and what the command printed."""
    exported = tmp_path / "serving.onnx"
    result = run_cli(good_model, "export", str(exported), "--model", champion)
    assert result.exit_code == 0, result.stderr
    return exported, result.stdout


def test_export_writes_an_onnx_file_that_reads_pictures_as_the_registry_model_does(
    export: tuple[Path, str], good_model: Path, run_cli: RunCli, champion: str
) -> None:
    exported, _ = export
    readings = [
        run_cli(good_model, "predict", str(REAL_IMAGES), "--json", "--model", model).stdout
        for model in (champion, str(exported))
    ]
    without_model = [
        [{k: v for k, v in line.items() if k != "model"} for line in json_lines(text)]
        for text in readings
    ]
    assert without_model[0] == without_model[1]
    assert len(without_model[0]) == len(list(REAL_IMAGES.glob("*.png")))
    named = {(line["model"]["name"], line["model"]["version"]) for line in json_lines(readings[1])}
    assert named == {("predict-test", json_lines(readings[0])[0]["model"]["version"])}


def test_an_exported_file_keeps_the_registry_name_and_version(
    export: tuple[Path, str], champion: str
) -> None:
    exported, printed = export
    loaded = load_model(str(exported), Settings())
    assert loaded.name == "predict-test"
    assert loaded.version.isdigit()
    assert printed == f"{exported}: predict-test version {loaded.version} from {champion}\n"


def test_export_of_an_unknown_model_is_one_error_line_and_writes_nothing(
    tmp_path: Path, good_model: Path, run_cli: RunCli
) -> None:
    exported = tmp_path / "serving.onnx"
    result = run_cli(good_model, "export", str(exported), "--model", "models:/no-such@champion")
    assert result.exit_code == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no-such" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("suffix", "pil_format"), [(".png", "PNG"), (".jpg", "JPEG")])
def test_annotate_writes_the_format_of_the_output_extension(
    suffix: str,
    pil_format: str,
    tmp_path: Path,
    good_model: Path,
    run_cli: RunCli,
    small_onnx: Path,
) -> None:
    output = tmp_path / f"annotated{suffix}"
    result = run_cli(good_model, "annotate", str(PICTURE), str(output), "--model", str(small_onnx))
    assert result.exit_code == 0, result.stderr
    with Image.open(output) as picture:
        assert picture.format == pil_format
        assert picture.size == Image.open(PICTURE).size


def test_annotate_refuses_an_unknown_format_and_writes_nothing(
    tmp_path: Path, good_model: Path, run_cli: RunCli, small_onnx: Path
) -> None:
    output = tmp_path / "annotated.xyz"
    result = run_cli(good_model, "annotate", str(PICTURE), str(output), "--model", str(small_onnx))
    assert result.exit_code == 1
    assert "xyz" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_annotate_onto_a_folder_is_one_error_line_and_leaves_no_temporary_file(
    tmp_path: Path, good_model: Path, run_cli: RunCli, small_onnx: Path
) -> None:
    output = tmp_path / "taken.png"
    output.mkdir()
    result = run_cli(good_model, "annotate", str(PICTURE), str(output), "--model", str(small_onnx))
    assert result.exit_code == 1
    assert result.stderr == f"digits: error: cannot write {output}: Is a directory\n"
    assert [p.name for p in tmp_path.iterdir()] == ["taken.png"]


def test_annotate_of_an_unreadable_picture_writes_nothing(
    tmp_path: Path, good_model: Path, run_cli: RunCli, small_onnx: Path
) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(PICTURE.read_bytes()[:100])
    output = tmp_path / "out.png"
    result = run_cli(good_model, "annotate", str(broken), str(output), "--model", str(small_onnx))
    assert result.exit_code == 1
    assert str(broken) in result.stderr
    assert not output.exists()


def test_export_refuses_an_output_that_is_not_onnx(
    tmp_path: Path, good_model: Path, run_cli: RunCli, small_onnx: Path
) -> None:
    output = tmp_path / "serving.pt"
    result = run_cli(good_model, "export", str(output), "--model", str(small_onnx))
    assert result.exit_code == 1
    assert (
        result.stderr
        == f"digits: error: {output}: digits export writes ONNX files; name it *.onnx\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_huge_picture_is_read_small_and_answered_in_its_own_pixels(
    good_model: Path, run_cli: RunCli, small_onnx: Path, tmp_path: Path
) -> None:
    """A 4500x6000 picture is decoded at a third (1500x2000, segment.max_side) and read there;
    the answer gives its full size and boxes in its own pixels."""
    small = Image.open(PICTURE).convert("RGB")
    pictures = {}
    for times in (5, 15):  # reducing the x15 copy by 3 gives exactly the x5 copy
        pictures[times] = tmp_path / f"x{times}.png"
        small.resize((small.width * times, small.height * times), Image.NEAREST).save(
            pictures[times]
        )
    near, far = (
        json.loads(
            run_cli(good_model, "predict", str(p), "--model", str(small_onnx), "--json").stdout
        )
        for p in pictures.values()
    )
    assert (far["width"], far["height"]) == (4500, 6000)
    assert far["text"] == near["text"] and near["digits"]
    for one, other in zip(near["digits"], far["digits"], strict=True):
        assert one["label"] == other["label"]
        assert all(abs(3 * a - b) <= 3 for a, b in zip(one["box"], other["box"], strict=True))
