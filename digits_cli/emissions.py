"""Energy and CO2-equivalent estimates around a block of work, with codecarbon's offline tracker.

Containers often have no readable power counters: codecarbon then falls back to estimates or
fails quietly, and this wrapper never lets a measurement problem break the work it measures.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from digits_cli.config import EmissionsSettings

log = logging.getLogger(__name__)


@dataclass
class EmissionsResult:
    """What one tracked block cost; energy and emissions are None when unknown."""

    kind: str
    duration_s: float = 0.0
    energy_kwh: float | None = None
    emissions_kg: float | None = None

    def as_metrics(self) -> dict[str, float]:
        """MLflow metrics such as ``train_energy_kwh`` and ``train_co2eq_kg``, known values only."""
        metrics = {
            f"{self.kind}_energy_kwh": self.energy_kwh,
            f"{self.kind}_co2eq_kg": self.emissions_kg,
        }
        return {key: float(value) for key, value in metrics.items() if value is not None}


def _start_tracker(cfg: EmissionsSettings, kind: str) -> Any:
    """A started OfflineEmissionsTracker, or None when codecarbon cannot run here."""
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    try:
        from codecarbon import OfflineEmissionsTracker, OutputMethod

        cfg.output_file.parent.mkdir(parents=True, exist_ok=True)
        tracker = OfflineEmissionsTracker(
            country_iso_code=cfg.country_iso_code,
            project_name=kind,
            output_dir=str(cfg.output_file.parent),
            output_file=cfg.output_file.name,
            output_methods=[OutputMethod.CSV],
            log_level="error",
            # Its lock file would make a second concurrent command (e.g. tests) lose its figures.
            allow_multiple_runs=True,
        )
        tracker.start()
    except Exception as exc:  # codecarbon can fail in many ways; the work must go on
        log.debug("emissions tracking unavailable: %s", exc)
        return None
    return tracker


def _stop_tracker(tracker: Any, result: EmissionsResult) -> None:
    try:
        emissions = tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
        energy = getattr(data, "energy_consumed", None)
    except Exception as exc:
        log.debug("emissions tracking failed: %s", exc)
        return
    result.emissions_kg = float(emissions) if isinstance(emissions, int | float) else None
    result.energy_kwh = float(energy) if isinstance(energy, int | float) else None


@contextmanager
def track_emissions(cfg: EmissionsSettings, kind: str) -> Iterator[EmissionsResult]:
    """Measure the block: yields an :class:`EmissionsResult` filled in when the block exits.

    Appends one row (``project_name`` = ``kind``) to ``emissions.output_file``; with
    ``emissions.enabled`` false only the duration is measured. Never raises on its own account.
    """
    result = EmissionsResult(kind=kind)
    tracker = _start_tracker(cfg, kind) if cfg.enabled else None
    start = time.perf_counter()
    try:
        yield result
    finally:
        result.duration_s = time.perf_counter() - start
        if tracker is not None:
            _stop_tracker(tracker, result)
