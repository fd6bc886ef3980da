"""Render a kustomization of deploy/k8s without kustomize: the subset these manifests use.

    python deploy/k8s/render.py deploy/k8s/overlays/example > rendered.yaml

Supported: ``resources`` (files, or folders holding a kustomization.yaml), ``namespace``,
``images`` (newName, newTag, digest) and ``patches`` that are JSON 6902 operation lists
(add, replace, remove) with a ``target`` kind and name. Anything else in a kustomization is
refused, so a manifest that kustomize would render differently cannot pass unnoticed;
tests/test_deploy.py compares the two where ``kubectl kustomize`` exists.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
# Kinds without a namespace (the ones a deployment of this kind could plausibly hold).
CLUSTER_KINDS = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}


class RenderError(Exception):
    """A kustomization this renderer does not understand."""


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources of the kustomization in ``folder``, transformed as kustomize would."""
    folder = Path(folder)
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text()) or {}
    unknown = set(spec) - SUPPORTED
    if unknown:
        raise RenderError(f"{folder}: unsupported kustomization fields {sorted(unknown)}")
    resources: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in spec.get("patches", []):
        apply_patch(resources, folder / patch["path"], patch.get("target", {}))
    for image in spec.get("images", []):
        set_image(resources, image)
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] not in CLUSTER_KINDS:
                resource.setdefault("metadata", {})["namespace"] = spec["namespace"]
    return resources


def apply_patch(resources: list[dict[str, Any]], path: Path, target: dict[str, str]) -> None:
    operations = yaml.safe_load(path.read_text())
    if not isinstance(operations, list):
        raise RenderError(f"{path}: only JSON 6902 patches (a list of operations) are supported")
    matched = [
        r
        for r in resources
        if r["kind"] == target.get("kind", r["kind"])
        and r["metadata"]["name"] == target.get("name", r["metadata"]["name"])
    ]
    if not matched:
        raise RenderError(f"{path}: no resource matches the target {target}")
    for resource in matched:
        for operation in operations:
            apply_operation(resource, operation)


def apply_operation(document: Any, operation: dict[str, Any]) -> None:
    """One JSON 6902 operation (add, replace, remove) applied in place."""
    *parents, last = [
        part.replace("~1", "/").replace("~0", "~") for part in operation["path"].split("/")[1:]
    ]
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if op not in {"add", "replace", "remove"}:
        raise RenderError(f"unsupported patch operation {op!r}")
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            node[index] = copy.deepcopy(operation["value"])
        else:
            del node[index]
        return
    if op != "add" and last not in node:
        raise RenderError(f"{operation['path']}: nothing there to {op}")
    if op == "remove":
        del node[last]
    else:
        node[last] = copy.deepcopy(operation["value"])


def pod_specs(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a resource (Pod, workload templates, CronJob's job template)."""
    spec = resource.get("spec", {})
    if resource["kind"] == "Pod":
        return [spec]
    if resource["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    template = spec.get("template", {}).get("spec")
    return [template] if template is not None else []


def image_name(image: str) -> str:
    """An image reference without its tag or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def set_image(resources: list[dict[str, Any]], image: dict[str, str]) -> None:
    for resource in resources:
        for pod in pod_specs(resource):
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                if image_name(container["image"]) != image["name"]:
                    continue
                reference = container["image"]
                tag = reference[len(image_name(reference)) :]
                name = image.get("newName", image["name"])
                if "digest" in image:
                    tag = "@" + image["digest"]
                elif "newTag" in image:
                    tag = ":" + str(image["newTag"])
                container["image"] = name + tag


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: render.py KUSTOMIZATION_FOLDER", file=sys.stderr)
        return 2
    try:
        documents = render(Path(argv[0]))
    except (RenderError, OSError, KeyError) as exc:
        print(f"render.py: error: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(yaml.safe_dump_all(documents, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
