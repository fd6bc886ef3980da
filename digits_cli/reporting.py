"""Rich tables for people; commands print JSON instead when asked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from digits_cli.finder import Reading
    from digits_cli.validation import Check

console = Console()


def print_heading(text: str) -> None:
    """One line above a table; never wrapped, so a long path stays whole and searchable."""
    console.print(text, soft_wrap=True, highlight=False, markup=False)


def print_manifest(manifest: dict, processed_dir: Path) -> None:
    """The splits written by `digits prepare`."""
    print_heading(f"MNIST splits in {processed_dir} (source: {manifest['source']})")
    table = Table()
    table.add_column("split")
    table.add_column("digits", justify="right")
    table.add_column("per class", justify="left")
    for name, entry in manifest["splits"].items():
        table.add_row(name, f"{entry['count']:,}", " ".join(str(c) for c in entry["class_counts"]))
    console.print(table)


def print_checks(checks: list[Check]) -> None:
    """The validation checks with their verdicts."""
    table = Table(title="Data validation")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for check in checks:
        verdict = "[green]pass[/green]" if check.passed else "[bold red]FAIL[/bold red]"
        table.add_row(check.name, verdict, check.detail)
    console.print(table)


def print_reading(name: str, reading: Reading) -> None:
    """The digits read in one picture, in reading order."""
    print_heading(f"{name} ({reading.width}x{reading.height}): {reading.text!r}")
    table = Table()
    for column in ("#", "label", "confidence", "box (x, y, w, h)"):
        table.add_column(column, justify="right")
    for i, digit in enumerate(reading.digits, 1):
        table.add_row(
            str(i), str(digit.label), f"{digit.confidence:.3f}", ", ".join(map(str, digit.box))
        )
    console.print(table)
