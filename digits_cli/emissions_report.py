"""`digits emissions`: what the tracked runs cost, summed per run kind from codecarbon's CSV.

Each tracked block (:func:`digits_cli.emissions.track_emissions`) appends one row whose
``project_name`` is its kind (train or evaluate; rows of other kinds, written by other
trackers into the same file, are summed too); ``duration`` is in seconds,
``energy_consumed`` in kWh and ``emissions`` in kg CO2-equivalent. :func:`read_emissions` is
the one reader of that file (this command and the model card's energy table).
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from digits_cli.errors import DigitsError
from digits_cli.io import atomic_path

KIND_ORDER = ("train", "evaluate")  # the kinds digits records, in lifecycle order
COLUMNS = ("project_name", "duration", "energy_consumed", "emissions")


@dataclass
class KindTotal:
    """The runs of one kind and what they cost together."""

    kind: str
    runs: int = 0
    duration_s: float = 0.0
    energy_kwh: float = 0.0
    co2eq_kg: float = 0.0


@dataclass(frozen=True)
class EmissionsRow:
    """One tracked run as codecarbon recorded it; a figure it could not measure is None."""

    kind: str
    timestamp: str
    duration_s: float | None
    energy_kwh: float | None
    co2eq_kg: float | None


def _number(value: str | None, path: Path, line: int, column: str) -> float | None:
    # codecarbon leaves a figure empty when it could not measure it.
    if value is None or not value.strip():
        return None
    try:
        number = float(value)
    except ValueError:
        raise DigitsError(f"{path}:{line}: {column} is not a number ({value!r})") from None
    return number if math.isfinite(number) else None


def read_emissions(path: Path) -> list[EmissionsRow]:
    """The rows of codecarbon's CSV in file order, each run kind from its ``project_name``.

    Raises DigitsError when the file cannot be read, is not codecarbon's, or holds a figure
    that is not a number.
    """
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
            header = rows[0].keys() if rows else []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DigitsError(f"{path}: cannot read ({exc.__class__.__name__})") from exc
    missing = [column for column in COLUMNS if column not in header]
    if rows and missing:
        raise DigitsError(f"{path}: not a codecarbon file (no {', '.join(missing)} column)")
    return [
        EmissionsRow(
            kind=(row["project_name"] or "").strip() or "unnamed",
            timestamp=(row.get("timestamp") or "").strip(),
            duration_s=_number(row["duration"], path, line, "duration"),
            energy_kwh=_number(row["energy_consumed"], path, line, "energy_consumed"),
            co2eq_kg=_number(row["emissions"], path, line, "emissions"),
        )
        for line, row in enumerate(rows, start=2)
    ]


def latest_per_kind(rows: list[EmissionsRow]) -> dict[str, EmissionsRow]:
    """The last row of each run kind (codecarbon appends, so the last is the latest)."""
    return {row.kind: row for row in rows}


def summarise_emissions(path: Path) -> list[KindTotal]:
    """Totals per run kind (train, evaluate first, then any other kind by name)."""
    if not path.is_file():
        raise DigitsError(
            f"{path}: no emissions recorded yet; run `digits train` or `digits evaluate` "
            "with emissions.enabled true"
        )
    totals: dict[str, KindTotal] = {}
    for row in read_emissions(path):
        total = totals.setdefault(row.kind, KindTotal(row.kind))
        total.runs += 1
        # A figure codecarbon could not measure adds nothing.
        total.duration_s += row.duration_s or 0.0
        total.energy_kwh += row.energy_kwh or 0.0
        total.co2eq_kg += row.co2eq_kg or 0.0

    def order(total: KindTotal) -> tuple[int, str]:
        rank = KIND_ORDER.index(total.kind) if total.kind in KIND_ORDER else len(KIND_ORDER)
        return rank, total.kind

    return sorted(totals.values(), key=order)


def emissions_json(totals: list[KindTotal]) -> list[dict[str, Any]]:
    """JSON-ready rows: kind, runs, duration_s, energy_kwh, co2eq_kg."""
    return [asdict(total) for total in totals]


def print_emissions(totals: list[KindTotal], path: Path) -> None:
    """A rich table of the totals, one row per kind and an overall row."""
    from rich.table import Table

    from digits_cli.reporting import console, print_heading

    print_heading(f"Emissions by run kind ({path})")
    table = Table()
    for name in ("kind", "runs", "duration (s)", "energy (kWh)", "CO2eq (kg)"):
        table.add_column(name, justify="left" if name == "kind" else "right")
    for total in totals:
        table.add_row(*_cells(total))
    if len(totals) > 1:
        overall = KindTotal(
            "all",
            sum(t.runs for t in totals),
            sum(t.duration_s for t in totals),
            sum(t.energy_kwh for t in totals),
            sum(t.co2eq_kg for t in totals),
        )
        table.add_section()
        table.add_row(*_cells(overall), style="bold")
    console.print(table)


def _cells(total: KindTotal) -> list[str]:
    return [
        total.kind,
        f"{total.runs:,}",
        f"{total.duration_s:,.1f}",
        f"{total.energy_kwh:.4g}",
        f"{total.co2eq_kg:.4g}",
    ]


def plot_emissions(totals: list[KindTotal], path: Path) -> None:
    """Bar charts of energy and CO2eq per kind, written atomically as a PNG."""
    from matplotlib.figure import Figure  # the object API renders with Agg, no pyplot state

    if path.suffix.lower() != ".png":
        raise DigitsError(f"{path}: the plot is a PNG; name it FILE.png")
    kinds = [total.kind for total in totals]
    figure = Figure(figsize=(8, 3.5))
    energy_axes, co2_axes = figure.subplots(1, 2)
    energy_axes.bar(kinds, [total.energy_kwh for total in totals], color="tab:blue")
    energy_axes.set(title="Energy", ylabel="kWh")
    co2_axes.bar(kinds, [total.co2eq_kg for total in totals], color="tab:green")
    co2_axes.set(title="Emissions", ylabel="kg CO2eq")
    figure.suptitle("Tracked runs by kind")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
