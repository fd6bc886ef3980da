"""`digits predict --shard INDEX/COUNT --output FILE`: disjoint shares of a large input for the
pods of an Indexed Job, each written whole and atomically to its own JSON Lines file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import REAL_IMAGES
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from digits_cli.batch import (
    Shard,
    available_cores,
    cgroup_cpu_quota,
    parse_shard,
    shard_output_path,
)
from digits_cli.cli import app

BAD_PICTURE = "07b.png"
# The shard holding it: its place in the sorted listing (after 07.png) modulo the count, 4.
BAD_SHARD = sorted([f"{i:02d}.png" for i in range(14)] + [BAD_PICTURE]).index(BAD_PICTURE) % 4


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """A folder of 14 pictures (copies of the real ones under other names) and one bad file."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    real = sorted(REAL_IMAGES.glob("*.png"))
    for i in range(14):
        shutil.copy(real[i % len(real)], folder / f"{i:02d}.png")
    (folder / BAD_PICTURE).write_bytes(b"not a picture")
    (folder / "notes.txt").write_text("not listed: not a picture extension")
    return folder


def predict(model: Path, *args: str, env: dict[str, str] | None = None, **kw: str) -> Result:
    """`digits predict ARGS --model MODEL --jobs 1` in this process."""
    return CliRunner().invoke(
        app,
        ["--params", os.devnull, "predict", *args, "--model", str(model), "--jobs", "1"],
        env={"JOB_COMPLETION_INDEX": None, **(env or {})},  # None: unset for the run
        **kw,
    )


def json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def shard_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.jsonl"))


# --- the share each process takes -----------------------------------------------------------


@given(
    names=st.lists(st.text("abc/0123", min_size=1, max_size=6), max_size=40),
    count=st.integers(1, 9),
    seed=st.randoms(),
)
def test_shards_are_disjoint_cover_the_listing_and_ignore_its_order(
    names: list[str], count: int, seed: object
) -> None:
    files = [Path(name) for name in names]
    shuffled = list(files)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    shares = [Shard(i, count).take(files) for i in range(count)]
    assert sorted(p for share in shares for p in share) == sorted(files)
    assert [Shard(i, count).take(shuffled) for i in range(count)] == shares
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("0/1", {}, Shard(0, 1)),
        ("3/4", {}, Shard(3, 4)),
        ("4", {"JOB_COMPLETION_INDEX": "2"}, Shard(2, 4)),
        ("1/4", {"JOB_COMPLETION_INDEX": "2"}, Shard(1, 4)),  # given explicitly, it wins
    ],
)
def test_parse_shard(text: str, environ: dict[str, str], expected: Shard) -> None:
    assert parse_shard(text, environ) == expected


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("4/4", {}, "index 4 is outside 0..3 (shard 4/4)"),
        ("-1/4", {}, "index -1 is outside 0..3 (shard -1/4)"),
        ("0/0", {}, "'0/0': the count must be at least 1"),
        ("a/4", {}, "'a/4' is not INDEX/COUNT (or COUNT) in whole numbers"),
        ("1/2/3", {}, "'1/2/3' is not INDEX/COUNT (or COUNT) in whole numbers"),
        ("", {}, "'' gives no index"),
        ("4", {}, "'4' gives no index: use INDEX/COUNT, or COUNT with $JOB_COMPLETION_INDEX set"),
        ("4", {"JOB_COMPLETION_INDEX": "x"}, "$JOB_COMPLETION_INDEX='x' is not a whole number"),
        ("4", {"JOB_COMPLETION_INDEX": "4"}, "index 4 is outside 0..3"),
    ],
)
def test_parse_shard_refuses_bad_values(text: str, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_shard(text, environ)
    assert str(raised.value).startswith(message)


def test_output_names_are_filled_in_and_sort_in_shard_order() -> None:
    names = [
        shard_output_path(Path("r/part-{index}-of-{count}.jsonl"), Shard(i, 12)) for i in (2, 11)
    ]
    assert names == [Path("r/part-02-of-12.jsonl"), Path("r/part-11-of-12.jsonl")]
    assert shard_output_path(Path("all.jsonl"), None) == Path("all.jsonl")
    with pytest.raises(ValueError, match="no --shard"):
        shard_output_path(Path("part-{index}.jsonl"), None)


def test_a_cgroup_cpu_quota_narrows_the_cores(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(v2) == 1.5
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1.parent) == 0.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(v1.parent) is None
    assert cgroup_cpu_quota(tmp_path / "nowhere") is None


@pytest.mark.parametrize(
    ("cpu_max", "cores"), [("50000 100000", 1), ("100000 100000", 1), ("250000 100000", 3)]
)
def test_predicts_default_jobs_follow_a_containers_cpu_limit(
    cpu_max: str, cores: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container limited to one CPU sees every core of its node in its affinity."""
    import digits_cli.batch

    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    monkeypatch.setattr(digits_cli.batch, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert available_cores() == cores
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cores() == 64


# --- the command ------------------------------------------------------------------------------


def test_four_shards_give_exactly_the_lines_of_one_unsharded_run(
    small_onnx: Path, pictures: Path, tmp_path: Path
) -> None:
    whole = predict(small_onnx, str(pictures), "--output", str(tmp_path / "all.jsonl"))
    assert whole.exit_code == 1  # the bad file
    expected = json_lines(tmp_path / "all.jsonl")
    assert len(expected) == 15
    results = tmp_path / "results"
    for index in range(4):
        result = predict(
            small_onnx,
            str(pictures),
            "--shard",
            f"{index}/4",
            "-o",
            f"{results}/part-{{index}}.jsonl",
        )
        assert result.exit_code == (1 if index == BAD_SHARD else 0), result.stderr
    shards = [json_lines(path) for path in shard_files(results)]
    assert [path.name for path in shard_files(results)] == [f"part-{i}.jsonl" for i in range(4)]
    found = [line for shard in shards for line in shard]
    key = lambda line: line["image"]  # noqa: E731
    assert sorted(found, key=key) == sorted(expected, key=key)
    assert len({line["image"] for line in found}) == len(found)  # no picture twice
    assert [len(shard) for shard in shards] == [4, 4, 4, 3]


def test_a_failed_picture_is_a_line_of_its_shard_and_one_error_line(
    small_onnx: Path, pictures: Path, tmp_path: Path
) -> None:
    output = tmp_path / "part.jsonl"
    result = predict(small_onnx, str(pictures), "--shard", f"{BAD_SHARD}/4", "-o", str(output))
    assert result.exit_code == 1
    bad = str(pictures / BAD_PICTURE)
    assert result.stderr.splitlines() == [
        f"digits: error: {bad}: not a PNG, JPEG, BMP, TIFF or WebP picture"
    ]
    lines = json_lines(output)
    assert {"image": bad, "error": f"{bad}: not a PNG, JPEG, BMP, TIFF or WebP picture"} in lines
    assert all("digits" in line for line in lines if line["image"] != bad)
    assert result.stdout.startswith(f"shard {BAD_SHARD}/4: {len(lines)} pictures, 1 failed -> ")


def test_a_rerun_of_one_shard_replaces_only_its_own_output(
    small_onnx: Path, pictures: Path, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    template = f"{results}/part-{{index}}.jsonl"
    for index in range(4):
        predict(small_onnx, str(pictures), "--shard", f"{index}/4", "-o", template)
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in shard_files(results)}
    rerun = results / "part-2.jsonl"
    rerun.write_text('{"stale": true}\n' * 50)  # e.g. from an older listing
    result = predict(small_onnx, str(pictures), "--json", "--shard", "2/4", "-o", template)
    assert result.exit_code == (1 if BAD_SHARD == 2 else 0)
    summary = json.loads(result.stdout)
    assert summary["output"] == str(rerun) and summary["shard"] == "2/4"
    assert rerun.read_bytes() == before[rerun][0]
    for path, (content, mtime) in before.items():
        if path != rerun:
            assert (path.read_bytes(), path.stat().st_mtime_ns) == (content, mtime)
    assert sorted(p.name for p in results.iterdir()) == [f"part-{i}.jsonl" for i in range(4)]


def test_a_run_that_fails_before_its_end_leaves_the_previous_output(
    small_onnx: Path, pictures: Path, tmp_path: Path
) -> None:
    output = tmp_path / "part.jsonl"
    output.write_text("previous\n")
    result = predict(tmp_path / "missing.onnx", str(pictures), "--shard", "0/2", "-o", str(output))
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1
    assert output.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_output_that_cannot_be_written_is_one_error_line(
    small_onnx: Path, pictures: Path, tmp_path: Path
) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    (tmp_path / "folder").mkdir()
    for output, reason in [("taken/out.jsonl", "File exists"), ("folder", "Is a directory")]:
        result = predict(small_onnx, str(pictures), "-o", str(tmp_path / output))
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            f"digits: error: cannot write {tmp_path / output}: {reason}"
        ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "pictures", "taken"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_the_index_comes_from_an_indexed_jobs_environment(
    small_onnx: Path, pictures: Path, tmp_path: Path
) -> None:
    template = str(tmp_path / "part-{index}.jsonl")
    predict(small_onnx, str(pictures), "--shard", "1/3", "-o", template)
    explicit = (tmp_path / "part-1.jsonl").read_text()
    (tmp_path / "part-1.jsonl").unlink()
    result = predict(
        small_onnx, str(pictures), "--shard", "3", "-o", template, env={"JOB_COMPLETION_INDEX": "1"}
    )
    assert result.stderr == "" or BAD_SHARD % 3 == 1
    assert (tmp_path / "part-1.jsonl").read_text() == explicit


def test_files_from_a_list_or_stdin_shard_like_the_folder(
    small_onnx: Path, pictures: Path, tmp_path: Path
) -> None:
    listing = tmp_path / "listing.txt"
    paths = sorted(str(p) for p in pictures.glob("*.png"))
    listing.write_text("\n".join(reversed(paths)) + "\n\n")  # order and blank lines do not matter
    outputs = {}
    for name, args, stdin in [
        ("folder", [str(pictures)], None),
        ("list", ["--files-from", str(listing)], None),
        ("stdin", ["--files-from", "-"], "\n".join(paths)),
    ]:
        output = tmp_path / f"{name}.jsonl"
        predict(small_onnx, *args, "--shard", "1/4", "-o", str(output), input=stdin)
        outputs[name] = json_lines(output)
    assert outputs["folder"] == outputs["list"] == outputs["stdin"]
    assert len(outputs["folder"]) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "4/4"], "Invalid value for '--shard': index 4 is outside 0..3 (shard 4/4)"),
        (["--shard", "two/4"], "Invalid value for '--shard': 'two/4' is not INDEX/COUNT"),
        (["--shard", "4"], "Invalid value for '--shard': '4' gives no index"),
        (["-o", "part-{index}.jsonl"], "Invalid value for '--output': 'part-{index}.jsonl' names"),
    ],
)
def test_bad_values_are_one_usage_line_with_status_2(
    small_onnx: Path, pictures: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = predict(small_onnx, str(pictures), *args)
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"digits: error: {message}")
    assert line.endswith("(see 'digits predict --help')")
    assert not list(tmp_path.glob("*.jsonl"))


def test_nothing_to_read_is_one_usage_line(small_onnx: Path, tmp_path: Path) -> None:
    result = predict(small_onnx)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "digits: error: Missing argument 'images' (see 'digits predict --help')"
    ]
    missing = predict(small_onnx, "--files-from", str(tmp_path / "none.txt"))
    assert missing.exit_code == 1
    assert missing.stderr.splitlines() == [
        f"digits: error: {tmp_path / 'none.txt'}: cannot read (No such file or directory)"
    ]


def test_a_shard_with_nothing_to_read_writes_an_empty_file(
    small_onnx: Path, pictures: Path, tmp_path: Path
) -> None:
    one = pictures / "00.png"
    output = tmp_path / "part-{index}.jsonl"
    for index in range(3):
        result = predict(small_onnx, str(one), "--shard", f"{index}/3", "-o", str(output))
        assert result.exit_code == 0, result.stderr
    assert [len(json_lines(tmp_path / f"part-{i}.jsonl")) for i in range(3)] == [1, 0, 0]
