"""The Deployment's pod for real: deploy/k8s/base rendered, run with `podman kube play`, ready
within 10 s of start with the baked-in model (goal), answering a picture; then torn down.

The pod runs as the manifest says (its ConfigMap, user, read-only root, /tmp emptyDir, no
privilege escalation, dropped capabilities, CPU and memory limits); the script checks podman
applied each of those. Only what a single machine needs is changed in its copy: one replica,
the local image, and a host port on 127.0.0.1 to reach it. Podman 4.3 runs neither the
readiness probe nor (without curl in the image, and with a named port) the liveness probe, so
the script performs both probes itself, as the kubelet would: an HTTP GET of the manifest's path
and port, 2xx-3xx meaning success.

It also reads a picture of segment.max_pixels (39.6 megapixels) and reports the pod's peak
memory against its limit: the measurement the memory limit is sized from.

    eval "$(bash ../shared/tools/container-engine env)"   # podman, from the repository root
    python bench/k8s_pod.py [--image localhost/digits:latest] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "tests/data/real/seed-api-test.png"
GOAL_SECONDS = 10.0
HOST_PORT = 18321


def load_renderer() -> Any:
    spec = importlib.util.spec_from_file_location("k8s_render", ROOT / "deploy/k8s/render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    """podman's output; a failure ends the bench with its message (unless ``check`` is off)."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        sys.exit(f"FAIL: podman {' '.join(args)}: {done.stderr.strip()[-800:]}")
    return done.stdout


def local_image(requested: str | None) -> str:
    candidates = (
        [requested] if requested else ["localhost/digits:latest", "docker.io/library/digits:latest"]
    )
    for image in candidates:
        if subprocess.run(["podman", "image", "exists", image]).returncode == 0:
            return image
    sys.exit(f"FAIL: no image {' or '.join(candidates)}: run `make image` first")


def pod_manifest(image: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The base's ConfigMap and Deployment, adapted to one machine; and the container spec."""
    resources = {r["kind"]: r for r in load_renderer().render(ROOT / "deploy/k8s/base")}
    deployment = resources["Deployment"]
    deployment["spec"]["replicas"] = 1
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = image
    container["ports"][0].update(hostPort=HOST_PORT, hostIP="127.0.0.1")
    return [resources["ConfigMap"], deployment], container


def get(path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{HOST_PORT}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def post(path: str, data: bytes, timeout: float = 60.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{HOST_PORT}{path}", data=data, headers={"Content-Type": "image/png"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def probe(spec: dict[str, Any]) -> bool:
    """An httpGet probe as the kubelet runs it (the port is the manifest's, published)."""
    status, _ = get(spec["httpGet"]["path"], timeout=spec.get("timeoutSeconds", 1))
    return 200 <= status < 400


def container_name(pod: str) -> str:
    names = podman("pod", "inspect", pod, "--format", "{{range .Containers}}{{.Name}} {{end}}")
    [name] = [n for n in names.split() if not n.endswith("-infra")]
    return name


def memory_peak(cgroup: str) -> int | None:
    """The container's peak memory from its cgroup (v1 max_usage, v2 memory.peak)."""
    for path in (
        Path("/sys/fs/cgroup/memory") / cgroup.lstrip("/") / "memory.max_usage_in_bytes",
        Path("/sys/fs/cgroup") / cgroup.lstrip("/") / "memory.peak",
    ):
        if path.exists():
            return int(path.read_text())
    return None


def big_picture() -> bytes:
    """A 6000x6600 picture (39.6 megapixels, under segment.max_pixels) with a few dark marks."""
    page = np.full((6600, 6000), 255, np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(12):
        y, x = int(rng.integers(0, 6400)), int(rng.integers(0, 5900))
        page[y : y + 150, x : x + 20] = 0
    buffer = io.BytesIO()
    Image.fromarray(page).convert("RGB").save(buffer, "PNG")
    return buffer.getvalue()


def one_round(manifest_file: Path, container: dict[str, Any], measure_memory: bool) -> dict:
    podman("kube", "down", str(manifest_file), check=False)
    start = time.perf_counter()
    podman("kube", "play", str(manifest_file))
    played = time.perf_counter() - start
    ready_at = None
    while time.perf_counter() - start < 60:
        if probe(container["readinessProbe"]):
            ready_at = time.perf_counter() - start
            break
        time.sleep(0.05)
    figures: dict[str, Any] = {"played": played, "ready": ready_at}
    pod = podman("pod", "ps", "--format", "{{.Name}}", "--filter", "name=digits").split()[0]
    name = container_name(pod)
    figures["container"] = name
    if ready_at is None:
        figures["logs"] = podman("logs", name, check=False)[-1500:]
        return figures
    figures["liveness"] = probe(container["livenessProbe"])
    status, body = post("/predictions", PICTURE.read_bytes())
    figures["answer"] = (status, json.loads(body) if status == 200 else body[:300])
    inspect = json.loads(podman("inspect", name))[0]
    figures["inspect"] = inspect
    if measure_memory:
        figures["idle_memory"] = podman("stats", "--no-stream", "--format", "{{.MemUsage}}", name)
        started = time.perf_counter()
        status, _ = post("/predictions", big_picture(), timeout=120)
        figures["big"] = (status, time.perf_counter() - started)
        figures["peak"] = memory_peak(inspect["State"]["CgroupPath"])
        status_lines = podman("exec", name, "cat", "/proc/1/status").splitlines()
        [hwm] = [line.split()[1] for line in status_lines if line.startswith("VmHWM:")]
        figures["rss_peak"] = int(hwm) * 1024  # the server's own peak resident memory
    started = time.perf_counter()
    podman("kube", "down", str(manifest_file))
    figures["down"] = time.perf_counter() - started
    return figures


def describe_security(inspect: dict[str, Any]) -> list[str]:
    host = inspect["HostConfig"]
    quota, period = host.get("CpuQuota", 0), host.get("CpuPeriod", 0) or 100_000
    return [
        f"user {inspect['Config']['User']}",
        f"read-only root {host['ReadonlyRootfs']}",
        f"no-new-privileges {'no-new-privileges' in host.get('SecurityOpt', [])}",
        f"capabilities added {host.get('CapAdd') or 'none'}",
        f"CPU limit {quota / period:g}",
        f"memory limit {host['Memory'] / 2**20:.0f} MiB",
        "mounts " + ", ".join(f"{m['Destination']} ({m['Type']})" for m in inspect["Mounts"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--image", help="local image (default: localhost/digits, docker.io/library/digits)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    image = local_image(args.image)
    documents, container = pod_manifest(image)
    with tempfile.TemporaryDirectory() as scratch:
        manifest_file = Path(scratch) / "digits-pod.yaml"
        manifest_file.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        try:
            rounds = [one_round(manifest_file, container, i == 0) for i in range(args.rounds)]
        finally:  # a round that stopped early leaves its pod: take it down
            podman("kube", "down", str(manifest_file), check=False)
    failed = [r for r in rounds if r["ready"] is None]
    if failed:
        sys.exit(f"FAIL: the pod never became ready:\n{failed[0].get('logs', '')}")
    ready = [r["ready"] for r in rounds]
    first = rounds[0]
    status, answer = first["answer"]
    limit = first["inspect"]["HostConfig"]["Memory"]
    print(
        f"podman kube play of deploy/k8s/base's Deployment (image {image}), {args.rounds} rounds:"
    )
    print(f"  ready (readiness probe GET /ready 200) after {statistics.median(ready):.2f} s "
          f"median from `podman kube play` (each: {', '.join(f'{s:.2f}' for s in ready)}; "
          f"{'meets' if max(ready) <= GOAL_SECONDS else 'misses'} the {GOAL_SECONDS:g} s goal); "
          f"kube play itself {statistics.median(r['played'] for r in rounds):.2f} s")  # fmt: skip
    alive = all(r["liveness"] for r in rounds)
    print(f"  liveness probe GET /health: {'passes' if alive else 'FAILS'}")
    if status == 200:
        print(f"  POST /predictions {PICTURE.name}: 200, read {answer['text']!r} with model "
              f"{answer['model']['name']} version {answer['model']['version']}")  # fmt: skip
    else:
        print(f"  POST /predictions {PICTURE.name}: FAILED {status} {answer!r}")
    print("  as the manifest says: " + "; ".join(describe_security(first["inspect"])))
    big_status, big_seconds = first["big"]
    print(f"  memory: {first['idle_memory'].split('/')[0].strip()} (cgroup) after one small "
          f"picture; after a 39.6-megapixel picture (answer {big_status} in {big_seconds:.1f} s) "
          f"the server's peak resident memory was {first['rss_peak'] / 2**20:.0f} MiB and the "
          f"cgroup's peak (page cache included) {first['peak'] / 2**20:.0f} MiB, of the "
          f"{limit / 2**20:.0f} MiB limit")  # fmt: skip
    print(f"  torn down (podman kube down) in {statistics.median(r['down'] for r in rounds):.2f} s")
    ok = status == 200 and max(ready) <= GOAL_SECONDS and alive
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
