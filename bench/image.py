"""The serving image for real: its size, how soon a container is ready, and that it reads.

Runs the image (default ``digits``, built by `make image`) with the docker client (here podman
through its docker-compatible socket: ``eval "$(../shared/tools/container-engine env)"``),
publishes it on a free loopback port, times the start until ``/ready`` answers 200, reads
``--picture`` through ``/predictions``, asks the image's HEALTHCHECK once, lists the Python
distributions inside (no torch, no MLflow), and removes the container.

    python bench/image.py [--image digits] [--picture tests/data/real/seed-api-test.png]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

SIZE_GOAL_MB = 650
LIFECYCLE = ("torch", "torchvision", "mlflow", "dvc", "matplotlib", "codecarbon", "onnx", "scipy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def post_picture(url: str, picture: Path) -> dict:
    request = urllib.request.Request(
        url, data=picture.read_bytes(), headers={"Content-Type": "image/png"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return dict(json.load(answer))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="digits")
    parser.add_argument("--picture", type=Path, default=Path("tests/data/real/seed-api-test.png"))
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    if shutil.which("docker") is None:
        sys.exit("no docker client on PATH")

    size_mb = int(docker("image", "inspect", args.image, "--format", "{{.Size}}")) / 1e6
    packages = docker("run", "--rm", "--entrypoint", "pip", args.image, "list", "--format=json")
    names = {p["name"].lower() for p in json.loads(packages)}
    port, name = free_port(), f"digits-bench-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    docker("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", args.image)
    try:
        ready = None
        while time.perf_counter() - start < args.timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - start
                        break
            except OSError:
                time.sleep(0.05)
        if ready is None:
            sys.exit(f"FAIL: not ready within {args.timeout} s:\n{docker('logs', name)}")
        reading = post_picture(f"http://127.0.0.1:{port}/predictions", args.picture)
        health = subprocess.run(["podman", "healthcheck", "run", name], capture_output=True)
        memory = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", name).strip()
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    heavy = sorted(names & set(LIFECYCLE))
    print(f"image {args.image}: {size_mb:.0f} MB (goal at most {SIZE_GOAL_MB} MB), "
          f"{len(names)} Python distributions, lifecycle libraries: {heavy or 'none'}")  # fmt: skip
    print(f"  container ready {ready:.2f} s after `docker run` (docker run included)")
    print(f"  read {args.picture.name} as {reading['text']!r} with {reading['model']}")
    print(f"  HEALTHCHECK: {'healthy' if health.returncode == 0 else 'unhealthy'}; memory {memory}")
    if size_mb > SIZE_GOAL_MB or heavy or health.returncode != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
