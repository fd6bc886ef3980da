"""Monitoring for real: Debian's Prometheus scrapes a real `digits serve`, and every query of the
Grafana dashboard must return series once good and bad pictures have been sent."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REAL_IMAGES
from test_containers import GRAFANA, dashboard_queries
from test_server import digits_serve, free_port, stop, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="needs Debian's prometheus (`make browser` installs it with chromium)",
)
# Grafana's variables, as the dashboard's defaults resolve them over a short test.
GRAFANA_VARIABLES = {"$__rate_interval": "20s", "$__range": "2m", "$route": ".*"}


@needs_prometheus
def test_promtool_accepts_the_shipped_configuration() -> None:
    config = ROOT / "monitoring/prometheus/prometheus.yml"
    result = subprocess.run([str(PROMTOOL), "check", "config", str(config)], capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def scraped_server(
    tmp_path_factory: pytest.TempPathFactory, small_onnx: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[str, str]]:
    """A `digits serve` and a Prometheus scraping it every second: (service URL, Prometheus URL).

    The body budget is small so that one oversized declaration gets a 503, and the error-rate
    panels have 5xx answers to show.
    """
    folder = tmp_path_factory.mktemp("prometheus")
    app_port, prometheus_port = free_port(), free_port()
    monkeypatch = pytest.MonkeyPatch()
    request.addfinalizer(monkeypatch.undo)
    monkeypatch.setenv("DIGITS_SERVE__BODY_BUDGET_BYTES", "3000000")
    server = digits_serve("--port", str(app_port), "--model", str(small_onnx))
    config = folder / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: digits\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{app_port}']\n"
    )
    prometheus = subprocess.Popen(
        [str(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{app_port}"
        wait_until_ready(server, base)
        yield base, f"http://127.0.0.1:{prometheus_port}"
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        stop(server)


def query(prometheus: str, expression: str) -> list:
    """The series (or, for Grafana's ``label_values(metric, label)``, the values) it returns."""
    if found := re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", expression.strip()):
        metric, label = found.groups()
        url, params = f"{prometheus}/api/v1/label/{label}/values", {"match[]": metric}
    else:
        url, params = f"{prometheus}/api/v1/query", {"query": expression}
    answer = httpx.get(url, params=params, timeout=10)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    return list(data["result"] if isinstance(data, dict) else data)


@needs_prometheus
def test_every_dashboard_query_returns_series_from_a_real_scrape(
    scraped_server: tuple[str, str],
) -> None:
    base, prometheus = scraped_server
    deadline = time.monotonic() + 60
    while not query(prometheus, 'up{job="digits"} == 1'):  # the first scrape has happened
        assert time.monotonic() < deadline, "Prometheus never scraped the service"
        time.sleep(0.5)
    for picture in sorted(REAL_IMAGES.glob("*.png")):
        files = {"file": (picture.name, picture.read_bytes(), "image/png")}
        for route in ("/predictions", "/probabilities", "/annotations"):
            assert httpx.post(base + route, files=files, timeout=30).status_code == 200
    bad = httpx.post(
        base + "/predictions", content=b"no picture", headers={"content-type": "image/png"}
    )
    assert bad.status_code == 400
    busy = httpx.post(
        base + "/predictions",
        content=b"\0" * 4_000_000,  # within the body limit, over the body budget: 503
        headers={"content-type": "image/png"},
        timeout=30,
    )
    assert busy.status_code == 503
    dashboard = json.loads((GRAFANA / "dashboards/digits.json").read_text())
    expressions = dashboard_queries(dashboard)
    assert len(expressions) >= 16
    time.sleep(3)  # two more scrapes, so that every rate has two samples after the traffic
    empty = []
    for expression in expressions:
        resolved = expression
        for variable, value in GRAFANA_VARIABLES.items():
            resolved = resolved.replace(variable, value)
        assert not re.search(r"\$\w+", resolved), f"unresolved variable in {expression}"
        if not query(prometheus, resolved):
            empty.append(expression)
    assert empty == []
