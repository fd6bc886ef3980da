"""The batch Job's pods for real: deploy/k8s/batch's Indexed Job run as its `completions` pods
under `podman kube play` (podman runs no Jobs: each pod is the Job's pod template with the
`JOB_COMPLETION_INDEX` Kubernetes would set), over a folder of pictures standing in for the
volume; their result files must hold exactly the lines of one unsharded `digits predict`.

Only what a single machine needs is changed: the local image, and the volume claim replaced by
a host folder (its ``pictures/`` and ``results/`` mounted where the manifest's subPaths go).
The image must hold this tree's `digits predict --shard` (build it from this checkout:
``docker build --build-arg MODEL=/app/serving.onnx -t digits .``).

    eval "$(bash ../shared/tools/container-engine env)"
    python bench/k8s_job.py [--image localhost/digits:latest] [--count 200] [--set form]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_pod import load_renderer, local_image, podman
from predict_shards import write_set
from synthetic import DEFAULT_DIGITS

ROOT = Path(__file__).resolve().parents[1]


def index_pods(job: dict[str, Any], image: str, data: Path, count: int) -> list[dict[str, Any]]:
    """The Job's pods for ``count`` completions, as Kubernetes would create them."""
    pods = []
    for index in range(count):
        template = copy.deepcopy(job["spec"]["template"])
        spec = template["spec"]
        [container] = spec["containers"]
        container["image"] = image
        command = container["command"]
        command[command.index("--shard") + 1] = str(count)
        container.setdefault("env", []).append(
            {"name": "JOB_COMPLETION_INDEX", "value": str(index)}
        )
        # The claim becomes a host folder. Podman 4.3 ignores subPath on a hostPath volume (it
        # mounts the whole folder), so each subPath mount gets a volume of its own subfolder.
        claims = {v["name"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        spec["volumes"] = [v for v in spec["volumes"] if v["name"] not in claims]
        for mount in container["volumeMounts"]:
            if mount["name"] in claims:
                sub = mount.pop("subPath", "")
                mount["name"] = f"{mount['name']}-{sub}".rstrip("-")
                path = data / sub
                spec["volumes"].append(
                    {"name": mount["name"], "hostPath": {"path": str(path), "type": "Directory"}}
                )
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"digits-read-{index}",
                    "labels": template["metadata"]["labels"],
                },
                "spec": spec,
            }
        )
    return pods


def run_pods(documents: list[dict[str, Any]], scratch: Path, name: str) -> float:
    """Play the pods, wait for every container to exit 0; the seconds it took."""
    manifest = scratch / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    start = time.perf_counter()
    try:
        # Inside: a play that fails half-way leaves pods behind that the next run would meet.
        podman("kube", "play", str(manifest))
        containers = [f"{d['metadata']['name']}-digits" for d in documents if d["kind"] == "Pod"]
        codes = podman("wait", *containers, timeout=600).split()
        seconds = time.perf_counter() - start
        for container, code in zip(containers, codes, strict=True):
            if code != "0":
                logs = subprocess.run(
                    ["podman", "logs", container], capture_output=True, text=True
                ).stderr  # the container's stderr
                sys.exit(f"FAIL: {container} exited {code}:\n{logs[-1500:]}")
    finally:
        podman("kube", "down", str(manifest), check=False)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", help="default: the `make image` image, as bench/k8s_pod.py")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument(
        "--set", choices=["form", "small"], default="form", help="as bench/predict_shards.py"
    )
    parser.add_argument("--digits", type=Path, default=DEFAULT_DIGITS, help="MNIST test split")
    args = parser.parse_args()
    args.image = local_image(args.image)
    resources = {r["kind"]: r for r in load_renderer().render(ROOT / "deploy/k8s/base")}
    resources.update({r["kind"]: r for r in load_renderer().render(ROOT / "deploy/k8s/batch")})
    job = resources["Job"]
    completions = job["spec"]["completions"]
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        data = scratch / "data"
        (data / "pictures").mkdir(parents=True)
        (data / "results").mkdir()
        write_set(args.set, data / "pictures", args.count, args.digits)
        uid = job["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
        os.chown(data / "results", uid, uid)  # fsGroup's part: podman does not apply it
        config = resources["ConfigMap"]
        sharded = run_pods(
            [config, *index_pods(job, args.image, data, completions)], scratch, "sharded"
        )
        parts = sorted((data / "results").glob("part-*.jsonl"))
        lines = [json.loads(line) for p in parts for line in p.read_text().splitlines()]
        for part in parts:
            part.unlink()
        single = run_pods([config, *index_pods(job, args.image, data, 1)], scratch, "single")
        whole = [
            json.loads(line) for line in (data / "results/part-0.jsonl").read_text().splitlines()
        ]
    names = [line["image"] for line in lines]
    key = lambda line: line["image"]  # noqa: E731
    same = sorted(lines, key=key) == sorted(whole, key=key)
    print(f"deploy/k8s/batch's Job as {completions} pods under podman kube play "
          f"(image {args.image}), {args.count} pictures ({args.set} set of "
          "bench/predict_shards.py), "
          "1 CPU limit each, 2 cores:")  # fmt: skip
    print(f"  {completions} index pods at once: {sharded:.2f} s from kube play to the last "
          f"exit; {len(parts)} result files, {len(lines)} lines, "
          f"{len(set(names))} distinct pictures")  # fmt: skip
    print(f"  1 pod (--shard 1, the same template): {single:.2f} s; the {completions} pods "
          f"together read at {single / sharded:.2f}x its rate")  # fmt: skip
    print(f"  the pods' lines are {'exactly' if same else 'NOT'} the one pod's {len(whole)} lines")
    sys.exit(0 if same and len(set(names)) == len(names) == args.count else 1)


if __name__ == "__main__":
    main()
