"""`digits emissions`: codecarbon's CSV summed per run kind, as a table, JSON or a bar chart."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from codecarbon.output_methods.emissions_data import EmissionsData
from typer.testing import CliRunner, Result

from digits_cli.cli import app
from digits_cli.config import EmissionsSettings
from digits_cli.emissions import track_emissions
from digits_cli.emissions_report import latest_per_kind, read_emissions
from digits_cli.errors import DigitsError

# The columns codecarbon writes, in its order.
HEADER = [field.name for field in dataclasses.fields(EmissionsData)]


def write_emissions(path: Path, rows: list[tuple[str, float, float, float]]) -> Path:
    """An emissions.csv with codecarbon's header; rows are (kind, seconds, kWh, kg CO2eq)."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, HEADER, restval="")
        writer.writeheader()
        for kind, duration, energy, emissions in rows:
            writer.writerow(
                {
                    "project_name": kind,
                    "duration": duration,
                    "energy_consumed": energy,
                    "emissions": emissions,
                }
            )
    return path


def params_for(folder: Path, emissions_csv: Path) -> Path:
    params = folder / "params.yaml"
    params.write_text(yaml.safe_dump({"emissions": {"output_file": str(emissions_csv)}}))
    return params


def run(params: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--params", str(params), "emissions", *args])


@pytest.fixture
def three_kinds(tmp_path: Path) -> Path:
    """Params pointing at two train runs, one evaluate run and one run another tracker
    wrote into the same file (kind "notebook")."""
    csv_path = write_emissions(
        tmp_path / "emissions.csv",
        [
            ("notebook", 100.0, 0.0005, 0.0002),
            ("train", 60.0, 0.002, 0.0008),
            ("evaluate", 5.0, 0.0001, 0.00004),
            ("train", 40.0, 0.001, 0.0004),
        ],
    )
    return params_for(tmp_path, csv_path)


def test_json_sums_runs_per_kind_in_lifecycle_order(three_kinds: Path) -> None:
    result = run(three_kinds, "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["kind"] for row in rows] == ["train", "evaluate", "notebook"]
    train = rows[0]
    assert train["runs"] == 2
    assert train["duration_s"] == pytest.approx(100.0)
    assert train["energy_kwh"] == pytest.approx(0.003)
    assert train["co2eq_kg"] == pytest.approx(0.0012)


def test_table_shows_each_kind_and_the_total(three_kinds: Path) -> None:
    result = run(three_kinds)
    assert result.exit_code == 0, result.stderr
    for text in ("train", "evaluate", "notebook", "all", "0.0036", "0.00144", "205.0"):
        assert text in result.stdout


def test_plot_writes_a_png(three_kinds: Path, tmp_path: Path) -> None:
    plot = tmp_path / "charts" / "emissions.png"
    result = run(three_kinds, "--plot", str(plot))
    assert result.exit_code == 0, result.stderr
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [p.name for p in plot.parent.iterdir()] == ["emissions.png"]  # no temporary left


def test_plot_to_another_format_is_refused(three_kinds: Path, tmp_path: Path) -> None:
    result = run(three_kinds, "--plot", str(tmp_path / "emissions.jpg"))
    assert result.exit_code == 1
    assert "FILE.png" in result.stderr
    assert not (tmp_path / "emissions.jpg").exists()


def test_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    result = run(params_for(tmp_path, tmp_path / "nowhere.csv"))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"digits: error: {tmp_path / 'nowhere.csv'}: no emissions recorded yet; "
        "run `digits train` or `digits evaluate` with emissions.enabled true"
    ]


def test_a_file_without_codecarbon_columns_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("name,value\ntrain,1\n")
    result = run(params_for(tmp_path, other))
    assert result.exit_code == 1
    assert "not a codecarbon file" in result.stderr


def test_reads_the_file_a_real_tracker_writes(tmp_path: Path) -> None:
    csv_path = tmp_path / "emissions.csv"
    with track_emissions(EmissionsSettings(output_file=csv_path), "evaluate") as measured:
        sum(range(100_000))
    result = run(params_for(tmp_path, csv_path), "--json")
    assert result.exit_code == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert row["kind"] == "evaluate"
    assert row["runs"] == 1
    assert row["energy_kwh"] == pytest.approx(measured.energy_kwh or 0.0)


# --- The one reader of codecarbon's CSV (also the model card's energy table) --------------------


def test_read_emissions_keeps_file_order_and_marks_unmeasured_figures(tmp_path: Path) -> None:
    path = tmp_path / "emissions.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, HEADER, restval="")
        writer.writeheader()
        writer.writerow({"project_name": "train", "timestamp": "t1", "duration": "60"})
        writer.writerow({"project_name": " ", "timestamp": "t2", "emissions": "inf"})
    first, second = read_emissions(path)
    assert (first.kind, first.timestamp, first.duration_s, first.energy_kwh) == (
        "train",
        "t1",
        60.0,
        None,
    )
    assert (second.kind, second.co2eq_kg) == ("unnamed", None)


def test_latest_per_kind_keeps_the_last_row_of_each_kind(tmp_path: Path) -> None:
    path = write_emissions(
        tmp_path / "emissions.csv",
        [
            ("train", 60.0, 0.002, 0.0008),
            ("evaluate", 5.0, 0.0001, 0.00004),
            ("train", 40.0, 0.001, 0.0004),
        ],
    )
    latest = latest_per_kind(read_emissions(path))
    assert sorted(latest) == ["evaluate", "train"]
    assert latest["train"].duration_s == 40.0 and latest["train"].energy_kwh == 0.001
    assert latest["evaluate"].co2eq_kg == 0.00004


def test_a_figure_that_is_not_a_number_names_its_line(tmp_path: Path) -> None:
    path = write_emissions(tmp_path / "emissions.csv", [("train", 1.0, 0.1, 0.1)])
    with open(path, "a", newline="") as handle:
        csv.DictWriter(handle, HEADER, restval="").writerow(
            {"project_name": "train", "duration": "abc"}
        )
    with pytest.raises(DigitsError, match=r"emissions.csv:3: duration is not a number \('abc'\)"):
        read_emissions(path)
