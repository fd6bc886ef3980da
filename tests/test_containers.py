"""The container, monitoring and CI files, checked for structure and consistency.

No Docker engine runs here, so these tests read the Dockerfile, the compose file, the Prometheus
and Grafana configuration and the CI workflow, and check that everything they refer to (files,
ports, routes, metrics, versions) exists and agrees.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
GRAFANA = MONITORING / "grafana"

# The HTTP contract of `digits serve` (issue 5) that these files depend on.
CONTRACT_ROUTES = frozenset(
    {"/", "/health", "/ready", "/metrics", "/openapi.json", "/predictions", "/probabilities",
     "/annotations"}
)  # fmt: skip
CONTRACT_METRICS = {
    "digits_http_requests_total": "counter",
    "digits_http_request_duration_seconds": "histogram",
    "digits_http_requests_in_flight": "gauge",
    "digits_http_request_size_bytes": "histogram",
    "digits_http_response_size_bytes": "histogram",
    "digits_model_inference_seconds": "histogram",
    "digits_digits_per_picture": "histogram",
    "digits_prediction_confidence": "histogram",
    "digits_predicted_label_total": "counter",
    "digits_model_info": "gauge",
}
HISTOGRAM_SERIES_SUFFIXES = ("_bucket", "_sum", "_count")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


# --- Dockerfile parsing ---------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: upper-case keyword and its raw arguments."""

    keyword: str
    args: str


@dataclass(frozen=True)
class Stage:
    """A build stage: its base image, its ``AS`` name and its instructions after ``FROM``."""

    base: str
    name: str | None
    instructions: tuple[Instruction, ...]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, with line continuations joined and comment lines dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments may sit inside a continued instruction, as Docker allows
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        instructions.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def split_stages(instructions: list[Instruction]) -> list[Stage]:
    """Group instructions by ``FROM``; what precedes the first ``FROM`` (global ARGs) is dropped."""
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, ()))
        elif stages:
            last = stages[-1]
            stages[-1] = Stage(last.base, last.name, (*last.instructions, instruction))
    return stages


def command_words(args: str) -> list[str]:
    """The words of an exec-form (JSON array) or shell-form command."""
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def split_flags(args: str) -> tuple[dict[str, str], list[str]]:
    """Leading ``--flag=value`` options of an instruction, and the remaining words."""
    words = command_words(args)
    flags = {}
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        flags[key] = value
    if len(words) == 1 and words[0].startswith("["):
        words = json.loads(words[0])
    return flags, words


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` (or a folder holding it) out of the build context."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.removeprefix("!").strip("/")
        for candidate in candidates:
            name = candidate.rsplit("/", 1)[-1]
            if fnmatch.fnmatch(candidate, pattern) or (
                pattern.startswith("**/") and fnmatch.fnmatch(name, pattern.removeprefix("**/"))
            ):
                excluded = not negate
    return excluded


def first_url(words: list[str] | str) -> tuple[str, int | None, str]:
    """Host, port and path of the first http URL in a command."""
    text = words if isinstance(words, str) else " ".join(words)
    match = re.search(r"https?://([^/:\s'\"]+)(?::(\d+))?(/[^\s'\"]*)?", text)
    assert match, f"no URL in {text!r}"
    host, port, path = match.groups()
    return host, int(port) if port else None, path or "/"


# --- PromQL ---------------------------------------------------------------------------------

PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
     "unless", "offset", "inf", "nan"}
)  # fmt: skip


def promql_series(expr: str) -> set[str]:
    """Names of the series a PromQL (or Grafana ``label_values``) expression selects."""
    text = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery durations
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\blabel_values\s*\(\s*([^,)]*?)\s*(?:,[^)]*)?\)", r"\1", text)
    # an identifier not followed by "(" (a function) nor glued to a number or a $variable
    names = re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {name for name in names if name not in PROMQL_KEYWORDS}


def contract_metric(series: str) -> str | None:
    """The contract metric a series belongs to: counters and gauges by name, histograms by the
    ``_bucket``/``_sum``/``_count`` series they expose (a histogram's bare name selects nothing)."""
    if CONTRACT_METRICS.get(series) in ("counter", "gauge"):
        return series
    for suffix in HISTOGRAM_SERIES_SUFFIXES:
        base = series.removesuffix(suffix)
        if base != series and CONTRACT_METRICS.get(base) == "histogram":
            return base
    return None


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a JSON document, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def dashboard_queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and templating variables."""
    queries = [value for key, value in walk(dashboard.get("panels", [])) if key == "expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        queries.append(query.get("query", "") if isinstance(query, dict) else query or "")
    return [q for q in queries if q]


# --- Compose helpers ------------------------------------------------------------------------


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {key: str(value) for key, value in env.items()}


def bind_mounts(service: dict) -> list[tuple[str, str]]:
    """(host source, container target) of the service's bind mounts."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
        elif volume.startswith((".", "/", "~")):
            source, target = volume.split(":")[:2]
            mounts.append((source, target))
    return mounts


def container_ports(service: dict) -> list[int]:
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append(int(port["target"]))
        else:
            ports.append(int(str(port).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def healthcheck_words(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, list) else ["CMD-SHELL", test]


def service_by_image(compose: dict, image: str) -> tuple[str, dict]:
    matches = [
        (name, svc)
        for name, svc in compose["services"].items()
        if svc.get("image", "").split(":")[0] == image
    ]
    assert len(matches) == 1, f"expected one {image} service, found {len(matches)}"
    return matches[0]


# --- Fixtures -------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return split_stages(parse_dockerfile((ROOT / "Dockerfile").read_text()))


@pytest.fixture(scope="module")
def final_stage(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def exposed_port(final_stage: Stage) -> int:
    (expose,) = final_stage.all("EXPOSE")
    return int(expose.args.split("/")[0])


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def torch_pins() -> dict[str, str]:
    """The torch version pyproject.toml's `train` extra pins."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = dict(
        dep.replace(" ", "").split("==")
        for dep in project["optional-dependencies"]["train"]
        if dep.replace(" ", "").startswith("torch==")
    )
    assert set(pins) == {"torch"}, "pyproject.toml must pin torch"
    return pins


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_yaml(ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def app(compose: dict) -> dict:
    built = [svc for svc in compose["services"].values() if "build" in svc]
    assert len(built) == 1, "expected one service built from this repository"
    return built[0]


@pytest.fixture(scope="module")
def prometheus_config() -> dict:
    return load_yaml(MONITORING / "prometheus" / "prometheus.yml")


@pytest.fixture(scope="module")
def datasource() -> dict:
    files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
    sources = [ds for path in files for ds in load_yaml(path)["datasources"]]
    (prometheus,) = [ds for ds in sources if ds["type"] == "prometheus"]
    return prometheus


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboards" / "digits.json").read_text())


@pytest.fixture(scope="module")
def dashboard_series(dashboard: dict) -> set[str]:
    series = set().union(*(promql_series(q) for q in dashboard_queries(dashboard)))
    assert series, "the dashboard queries no metric"
    return series


@pytest.fixture(scope="module")
def workflow() -> dict:
    return load_yaml(ROOT / ".github" / "workflows" / "ci.yml")


@pytest.fixture(scope="module")
def ci_steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_builds_in_stages_from_a_pinned_slim_python_311(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    earlier: set[str] = set()
    for stage in stages:
        if stage.base not in earlier:
            assert re.fullmatch(
                r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?", stage.base
            )
        earlier.add(stage.name or "")


def test_dockerfile_final_stage_runs_as_a_created_non_root_user(final_stage: Stage) -> None:
    users = final_stage.all("USER")
    assert users, "the final stage never sets USER"
    user = users[-1].args.split(":")[0]
    assert user not in {"root", "0"}
    created = any(
        re.search(rf"\b(useradd|adduser)\b.*\b{re.escape(user)}\b", run.args)
        for run in final_stage.all("RUN")
    )
    assert created or user.isdigit(), f"user {user} is never created"


def test_dockerfile_installs_the_base_package_alone_by_default(
    stages: list[Stage], torch_pins: dict[str, str]
) -> None:
    """The image reads and serves with the base install: no torch, no PyTorch index; the
    registry client only when built with EXTRAS=registry. Both from their hash-checked locks,
    then the project alone."""
    (builder,) = [s for s in stages if any("pip install" in run.args for run in s.all("RUN"))]
    locked, project = [run.args for run in builder.all("RUN") if "pip install" in run.args]
    assert re.search(
        r'pip install --no-deps --require-hashes -r "requirements/\$\{EXTRAS:-base\}\.txt"$', locked
    )
    assert re.search(r"pip install --no-deps --no-build-isolation \. && pip check$", project)
    assert [a.args for a in builder.all("ARG")] == ['EXTRAS=""']
    for mode in ("base", "registry"):
        assert (ROOT / f"requirements/{mode}.txt").is_file()
    everything = " ".join(i.args for stage in stages for i in stage.instructions)
    assert CPU_INDEX not in everything
    assert not set(torch_pins) & set(re.findall(r"[\w-]+", everything))


def test_dockerfile_copies_only_existing_files_the_context_keeps(
    stages: list[Stage], dockerignore: list[str]
) -> None:
    copies = 0
    for index, stage in enumerate(stages):
        for copy in stage.all("COPY") + stage.all("ADD"):
            flags, words = split_flags(copy.args)
            if "from" in flags:
                assert flags["from"] in {s.name for s in stages[:index]}
                continue
            for source in words[:-1]:
                copies += 1
                if source.endswith("*"):  # optional: may match nothing, but must not be ignored
                    source = source.rstrip("*")
                else:
                    assert (ROOT / source).exists(), f"COPY source {source} does not exist"
                assert not dockerignore_excludes(source, dockerignore), f"{source} is dockerignored"
    assert copies


def test_dockerignore_keeps_data_models_caches_and_secrets_out(dockerignore: list[str]) -> None:
    kept_out = [
        ".venv", "data", "mlruns", "mlflow.db", ".git", "reports", "models", ".env",
        "digits_cli/__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache",
    ]  # fmt: skip
    assert [p for p in kept_out if not dockerignore_excludes(p, dockerignore)] == []


def test_dockerfile_healthcheck_requests_health_on_the_exposed_port(
    final_stage: Stage, exposed_port: int
) -> None:
    (healthcheck,) = final_stage.all("HEALTHCHECK")
    _, command = re.split(r"\bCMD\b", healthcheck.args, maxsplit=1)
    words = command_words(command.strip())
    assert "curl" not in words[0], "slim images carry no curl"
    _, port, path = first_url(words)
    assert (port, path) == (exposed_port, "/health")
    assert path in CONTRACT_ROUTES


def test_dockerfile_command_serves_on_all_interfaces(final_stage: Stage) -> None:
    words = command_words(final_stage.all("CMD")[-1].args)
    assert words[:2] == ["digits", "serve"]
    assert words[words.index("--host") + 1] == "0.0.0.0"


def test_dockerfile_port_setting_matches_expose(final_stage: Stage, exposed_port: int) -> None:
    env = " ".join(i.args for i in final_stage.all("ENV"))
    match = re.search(r"\bDIGITS_SERVE__PORT=(\d+)", env)
    assert match and int(match.group(1)) == exposed_port


def test_the_baked_model_is_exported_copied_and_served_from_one_path(
    final_stage: Stage, app: dict
) -> None:
    (optional,) = [
        word.rstrip("*")
        for copy in final_stage.all("COPY")
        for word in split_flags(copy.args)[1][:-1]
        if word.endswith("*")
    ]
    (workdir,) = final_stage.all("WORKDIR")
    served = f"{workdir.args}/{Path(optional).name}"
    assert re.search(
        r"\bDIGITS_SERVE__MODEL=\$\{MODEL\}", " ".join(i.args for i in final_stage.all("ENV"))
    )
    assert app["build"]["args"]["MODEL"] == f"${{MODEL:-{served}}}"
    image = re.search(r"^image:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert image, "the Makefile has no image target"
    assert f"digits export {optional}" in image.group(1)
    assert f"--build-arg MODEL={served}" in image.group(1)


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_refers_only_to_existing_files_and_declared_volumes(compose: dict) -> None:
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert (context / dockerfile).is_file(), f"{name}: no {dockerfile} in {context}"
        for source, _ in bind_mounts(service):
            assert (ROOT / source).exists(), f"{name}: mounted {source} does not exist"
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (ROOT / path).is_file(), f"{name}: env_file {path} does not exist"
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and not volume.startswith((".", "/", "~")):
                assert volume.split(":")[0] in (compose.get("volumes") or {})


def test_compose_images_are_pinned(compose: dict) -> None:
    for name, service in compose["services"].items():
        if "image" in service:
            image = service["image"].split("@")[0]
            repository, _, tag = image.rpartition(":")
            assert repository and "/" not in tag, f"{name}: image {image} has no tag"
            assert tag != "latest", f"{name}: image {image} is not pinned"
        else:
            assert "build" in service, f"{name}: neither image nor build"


def test_compose_app_port_matches_expose_and_the_prometheus_target(
    app: dict, exposed_port: int, prometheus_config: dict, compose: dict
) -> None:
    assert container_ports(app) == [exposed_port]
    app_name = next(name for name, svc in compose["services"].items() if svc is app)
    targets = [
        target
        for job in prometheus_config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    assert f"{app_name}:{exposed_port}" in targets


def test_compose_health_checks_request_real_routes_on_service_ports(
    compose: dict, app: dict
) -> None:
    expected = {"/health": app, "/-/healthy": service_by_image(compose, "prom/prometheus")[1]}
    expected["/api/health"] = service_by_image(compose, "grafana/grafana")[1]
    assert "/health" in CONTRACT_ROUTES
    for route, service in expected.items():
        words = healthcheck_words(service)
        assert words[0] in {"CMD", "CMD-SHELL"}
        host, port, path = first_url(words)
        assert (host, path) in {("127.0.0.1", route), ("localhost", route)}
        assert port in container_ports(service)


def test_compose_grafana_admin_password_comes_from_the_environment(compose: dict) -> None:
    _, grafana = service_by_image(compose, "grafana/grafana")
    password = environment(grafana)["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", password), password


def test_env_example_documents_every_variable_compose_reads() -> None:
    used = set(re.findall(r"\$\{(\w+)", (ROOT / "docker-compose.yml").read_text()))
    documented = set(
        re.findall(r"^#?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    )
    assert used - documented == set()


def test_env_example_holds_no_password() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    assert "GRAFANA_ADMIN_PASSWORD=" in lines


def test_env_file_is_kept_out_of_git_and_the_image(dockerignore: list[str]) -> None:
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert dockerignore_excludes(".env", dockerignore)


# --- Prometheus and Grafana -----------------------------------------------------------------


def test_prometheus_scrapes_the_metrics_route_of_compose_services(
    prometheus_config: dict, compose: dict
) -> None:
    for job in prometheus_config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") in CONTRACT_ROUTES
        for static in job["static_configs"]:
            for target in static["targets"]:
                host, port = target.split(":")
                assert host in compose["services"], f"{target}: not a compose service"
                assert int(port) in container_ports(compose["services"][host])


def test_compose_mounts_the_prometheus_config_it_names(compose: dict) -> None:
    _, prometheus = service_by_image(compose, "prom/prometheus")
    config = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    mounts = dict((target, source) for source, target in bind_mounts(prometheus))
    source = mounts[config.partition("=")[2]]
    assert (ROOT / source).resolve() == MONITORING / "prometheus" / "prometheus.yml"


def test_grafana_datasource_points_at_the_compose_prometheus(
    datasource: dict, compose: dict
) -> None:
    name, prometheus = service_by_image(compose, "prom/prometheus")
    host, port, _ = first_url(datasource["url"])
    assert host == name
    assert port in container_ports(prometheus)


def test_grafana_mounts_its_provisioning_and_the_dashboards_the_provider_loads(
    compose: dict,
) -> None:
    _, grafana = service_by_image(compose, "grafana/grafana")
    mounts = {target: (ROOT / source).resolve() for source, target in bind_mounts(grafana)}
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    files = sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
    providers = [p for path in files for p in load_yaml(path)["providers"]]
    assert providers
    for provider in providers:
        folder = mounts[provider["options"]["path"]]
        assert (folder / "digits.json").is_file()


def test_dashboard_uses_the_provisioned_datasource(dashboard: dict, datasource: dict) -> None:
    references = [value for key, value in walk(dashboard) if key == "datasource"]
    assert references
    assert {ref["uid"] for ref in references} == {datasource["uid"]}


def test_metric_extraction_finds_series_not_functions_labels_or_durations() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, route) (rate(digits_http_request_duration_seconds_"
        'bucket{route=~"/pred.*", status!="500"}[$__rate_interval]))) / on() group_left '
        "sum(rate(digits_http_requests_total[5m] offset 1h)) > bool 1e-9"
    )
    assert promql_series(expr) == {
        "digits_http_request_duration_seconds_bucket",
        "digits_http_requests_total",
    }
    assert promql_series("label_values(digits_http_requests_total, route)") == {
        "digits_http_requests_total"
    }


def test_metric_resolution_strips_only_the_series_suffixes_of_histograms() -> None:
    assert (
        contract_metric("digits_http_request_size_bytes_count") == "digits_http_request_size_bytes"
    )
    assert (
        contract_metric("digits_model_inference_seconds_bucket") == "digits_model_inference_seconds"
    )
    assert contract_metric("digits_http_requests_total") == "digits_http_requests_total"
    assert contract_metric("digits_http_request_duration_seconds") is None  # no bare series
    assert (
        contract_metric("digits_http_requests_in_flight_count") is None
    )  # a gauge, not a histogram
    assert contract_metric("digits_made_up_seconds_bucket") is None


def test_dashboard_queries_only_metrics_of_the_contract(dashboard_series: set[str]) -> None:
    assert {s for s in dashboard_series if contract_metric(s) is None} == set()


def test_dashboard_shows_traffic_latency_errors_and_model_behaviour(dashboard: dict) -> None:
    queries = dashboard_queries(dashboard)

    def quantiles_of(series: str) -> set[str]:
        pattern = rf"histogram_quantile\(\s*([\d.]+)\s*,.*\b{series}\b"
        return {m.group(1) for q in queries if (m := re.search(pattern, q))}

    assert quantiles_of("digits_http_request_duration_seconds_bucket") >= {"0.5", "0.9", "0.99"}
    assert quantiles_of("digits_model_inference_seconds_bucket") >= {"0.5", "0.9", "0.99"}
    assert any("by (route)" in q and "digits_http_requests_total" in q for q in queries)
    for status_class in ('"4.."', '"5.."'):
        assert any(status_class in q and " / " in q for q in queries), status_class
    shown = {contract_metric(s) for q in queries for s in promql_series(q)}
    assert shown >= {
        "digits_http_requests_in_flight",
        "digits_digits_per_picture",
        "digits_prediction_confidence",
    }


def test_dashboard_metrics_are_exported_by_the_server(dashboard_series: set[str]) -> None:
    if not (ROOT / "digits_cli" / "server.py").is_file():
        pytest.skip("digits_cli/server.py does not exist yet (issue 5): no /metrics to check")
    from prometheus_client.parser import text_string_to_metric_families
    from starlette.testclient import TestClient

    from digits_cli import server
    from digits_cli.config import load_settings

    client = TestClient(server.create_app(load_settings(ROOT / "params.yaml")))
    client.get("/health")
    response = client.get("/metrics")
    assert response.status_code == 200
    exported = {
        family.name: family.type for family in text_string_to_metric_families(response.text)
    }
    metrics = {contract_metric(series) for series in dashboard_series} - {None}
    # the exposition parser names counter families without their "_total"
    expected = {
        m.removesuffix("_total") if CONTRACT_METRICS[m] == "counter" else m: CONTRACT_METRICS[m]
        for m in metrics
        if m is not None
    }
    assert {name: exported.get(name) for name in expected} == expected


# --- CI workflow ----------------------------------------------------------------------------


def test_ci_runs_on_push_and_pull_request(workflow: dict) -> None:
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)


def test_ci_sets_up_python_311_with_a_pip_cache(ci_steps: list[dict]) -> None:
    setups = [s for s in ci_steps if s.get("uses", "").startswith("actions/setup-python@")]
    assert setups
    for setup in setups:
        assert str(setup["with"]["python-version"]) == "3.11"
        assert setup["with"]["cache"] == "pip"


def test_ci_runs_lint_tests_and_a_dvc_dry_run(ci_steps: list[dict]) -> None:
    commands = [line.strip() for s in ci_steps for line in s.get("run", "").splitlines()]
    assert "make lint" in commands
    assert "make test" in commands
    assert any(re.fullmatch(r"(\.venv/bin/)?dvc repro --dry( --force)?", c) for c in commands)


def test_ci_installs_cpu_torch_with_the_pyproject_pins(
    ci_steps: list[dict], torch_pins: dict[str, str]
) -> None:
    installs = [
        line for s in ci_steps for line in s.get("run", "").splitlines() if CPU_INDEX in line
    ]
    assert installs
    for package, version in torch_pins.items():
        assert f"{package}=={version}" in installs[0].split()


def test_the_app_runs_bounded_unprivileged_and_read_only(app: dict) -> None:
    """It parses pictures from anyone: a memory and CPU cap, no capabilities, no privilege
    gained through setuid, and a root filesystem it cannot write (only a tmpfs /tmp)."""
    assert app["read_only"] is True
    assert app["tmpfs"] == ["/tmp"]
    assert app["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in app["security_opt"]
    assert app["mem_limit"] and app["cpus"] and app["pids_limit"]
