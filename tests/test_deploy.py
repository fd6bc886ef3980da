"""deploy/k8s: every rendered manifest validates against the Kubernetes schemas (offline, from the
kubernetes-validate package), and the manifests agree with the code and the image they run."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from conftest import REAL_IMAGES
from typer.testing import CliRunner

from digits_cli.cli import app
from digits_cli.config import load_settings

ROOT = Path(__file__).parents[1]
K8S = ROOT / "deploy/k8s"
KUSTOMIZATIONS = [K8S / "base", K8S / "batch", K8S / "overlays/example"]
OVERLAY = K8S / "overlays/example"
# The oldest Kubernetes the manifests need (the preStop sleep action and a Job's
# backoffLimitPerIndex are on by default from 1.30) and the newest the package knows.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
SERVICE_MONITOR_SCHEMA = Path(__file__).parent / "data/servicemonitor.schema.json"


def load_renderer() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_render", K8S / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = load_renderer().render


def by_kind(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = [r["kind"] for r in resources]
    assert len(kinds) == len(set(kinds)), "one of each kind here"
    return {r["kind"]: r for r in resources}


@pytest.fixture(scope="module")
def overlay() -> dict[str, dict[str, Any]]:
    return by_kind(render(OVERLAY))


def key(resource: dict[str, Any]) -> tuple[str, str]:
    return resource["kind"], resource["metadata"]["name"]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(folder: Path) -> None:
    resources = render(folder)
    assert resources
    for resource in resources:
        if resource["kind"] == "ServiceMonitor":  # a CRD: the package holds core kinds only
            schema = json.loads(SERVICE_MONITOR_SCHEMA.read_text())
            jsonschema.validate(resource, schema)
            continue
        for version in KUBERNETES_VERSIONS:
            # strict: a field the schema does not know (a typo, a wrong level) is an error
            kubernetes_validate.validate(resource, version, strict=True)


def test_a_misplaced_field_fails_validation() -> None:
    """The check can fail: a probe one level too high in the container is refused."""
    deployment = by_kind(render(K8S / "base"))["Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    deployment["spec"]["template"]["spec"]["readinessProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)))
def test_the_renderer_gives_what_kustomize_gives(folder: Path) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    theirs = {key(r): r for r in yaml.safe_load_all(result.stdout) if r}
    mine = {key(r): r for r in render(folder)}
    assert mine == theirs


def test_the_overlay_names_a_namespace_and_the_pushed_image(
    overlay: dict[str, dict[str, Any]],
) -> None:
    assert {r["metadata"].get("namespace") for r in overlay.values()} == {"digits"}
    for kind in ("Deployment", "Job"):
        [container] = overlay[kind]["spec"]["template"]["spec"]["containers"]
        assert container["image"] == "registry.example.com/ml/digits:champion-v7"
    assert overlay["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 20


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return resource["spec"]["template"]["spec"]["containers"]


def environment(overlay: dict[str, dict[str, Any]]) -> dict[str, str]:
    return overlay["ConfigMap"]["data"]


def test_the_configmap_holds_real_settings(
    overlay: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key is a DIGITS_<SECTION>__<KEY> setting the code accepts (unknown keys fail)."""
    env = environment(overlay)
    assert all(re.fullmatch(r"DIGITS_[A-Z]+__[A-Z_]+", name) for name in env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(ROOT / "params.yaml")
    for name, value in env.items():
        section, field = name.removeprefix("DIGITS_").lower().split("__")
        assert str(getattr(getattr(settings, section), field)) in {value, f"{value}.0"}


def cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_workers_and_concurrency_match_the_cpu_limit(overlay: dict[str, dict[str, Any]]) -> None:
    env = environment(overlay)
    [server] = containers(overlay["Deployment"])
    limit = cpus(server["resources"]["limits"]["cpu"])
    assert int(env["DIGITS_SERVE__WORKERS"]) * int(env["DIGITS_SERVE__MAX_CONCURRENCY"]) == limit
    [reader] = containers(overlay["Job"])
    assert int(env["DIGITS_PREDICT__JOBS"]) == cpus(reader["resources"]["limits"]["cpu"])
    for container in (server, reader):  # Guaranteed QoS
        assert container["resources"]["requests"] == container["resources"]["limits"]


def test_every_container_is_locked_down_with_a_writable_tmp(
    overlay: dict[str, dict[str, Any]],
) -> None:
    uid = int(re.search(r"useradd .*--uid (\d+)", (ROOT / "Dockerfile").read_text())[1])
    for kind in ("Deployment", "Job"):
        pod = overlay[kind]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid  # the image's own user
        assert pod["automountServiceAccountToken"] is False
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] in empty_dirs


def test_probes_ports_and_scraping_point_at_what_the_server_serves(
    overlay: dict[str, dict[str, Any]],
) -> None:
    from digits_cli.config import Settings
    from digits_cli.server import create_app

    routes = {getattr(route, "path", None) for route in create_app(Settings()).routes}
    deployment = overlay["Deployment"]
    [server] = containers(deployment)
    [port] = server["ports"]
    assert port["containerPort"] == int(environment(overlay)["DIGITS_SERVE__PORT"])
    assert server["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert server["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    monitor = overlay["ServiceMonitor"]["spec"]["endpoints"]
    assert {"/ready", "/health", annotations["prometheus.io/path"]} <= routes
    assert {e["path"] for e in monitor} <= routes
    service = overlay["Service"]
    assert {e["port"] for e in monitor} <= {p["name"] for p in service["spec"]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]


def test_selectors_find_the_serving_pods(overlay: dict[str, dict[str, Any]]) -> None:
    deployment = overlay["Deployment"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        overlay["Service"]["spec"]["selector"],
        overlay["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    monitor = overlay["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    assert monitor.items() <= overlay["Service"]["metadata"]["labels"].items()
    target = overlay["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == key(deployment)
    [claim] = [
        v
        for v in overlay["Job"]["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claim["persistentVolumeClaim"]["claimName"] == key(overlay["PersistentVolumeClaim"])[1]


def test_the_jobs_pods_read_disjoint_shares_into_one_file_each(
    overlay: dict[str, dict[str, Any]], small_onnx: Path, tmp_path: Path
) -> None:
    """Run the Job's own command as each of its pods would (its /data on a temporary folder)."""
    job = overlay["Job"]["spec"]
    assert job["completionMode"] == "Indexed"
    [reader] = containers(overlay["Job"])
    command = reader["command"]
    assert command[:2] == ["digits", "predict"]
    mounts = {m["mountPath"]: m for m in reader["volumeMounts"]}
    pictures_dir, output = command[2], command[command.index("--output") + 1]
    assert mounts[pictures_dir]["readOnly"] is True
    assert not mounts[str(Path(output).parent)].get("readOnly", False)
    data = tmp_path / "data"
    (data / "pictures").mkdir(parents=True)
    real = sorted(REAL_IMAGES.glob("*.png"))
    for i in range(9):
        shutil.copy(real[i % len(real)], data / "pictures" / f"scan-{i}.png")
    # The model is the one baked into the image (no registry in a batch pod); here the test's.
    model = command.index("--model") + 1
    baked = re.search(r"ARG MODEL=(\S+)", (ROOT / "Dockerfile").read_text())[1]
    assert command[model] == baked
    command[model] = str(small_onnx)
    args = [arg.replace("/data", str(data)) for arg in command[2:]]
    for index in range(job["completions"]):
        result = CliRunner().invoke(
            app,
            ["predict", *args, "--jobs", "1"],
            env={"JOB_COMPLETION_INDEX": str(index)},
        )
        assert result.exit_code == 0, result.stderr
    parts = sorted((data / "results").iterdir())
    assert len(parts) == job["completions"] == job["parallelism"]
    read = [json.loads(line)["image"] for part in parts for line in part.read_text().splitlines()]
    assert sorted(read) == sorted(str(p) for p in (data / "pictures").iterdir())
