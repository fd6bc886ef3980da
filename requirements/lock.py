"""Write the lock files: every package of an install pinned, with the sha256 of each file pip may
pick for it, so `pip install --require-hashes` installs exactly what was tested.

    .venv/bin/python requirements/lock.py [--upgrade] [--pins FILE]

- ``requirements/base.txt``: pyproject.toml's dependencies (the image, `bench/base_install.py`);
- ``requirements/registry.txt``: the base and the ``registry`` extra (the image built with
  ``EXTRAS=registry``);
- ``requirements/full.txt``: the base and every extra (`make install`, CI).

pip resolves the versions (``pip install --dry-run --ignore-installed --report``) with this
machine's pip configuration, whose local indexes hold torch. The pins of ``--pins`` (default: the
current full.txt) are kept unless ``--upgrade`` is given, so a regeneration after a change to
pyproject.toml moves only what it must; the base and registry locks take full.txt's versions, so
the image runs the versions the tests ran. An entry's hashes are those of the file pip picks here
and, for the base and registry locks, of the file pip picks from PyPI alone on the image's
platform (Debian bookworm's glibc 2.36, CPython 3.11, x86_64); no source distribution is
allowed where a wheel exists. The build backend (build-system.requires) is locked too, so the
project itself installs with ``--no-deps --no-build-isolation`` and nothing is fetched unchecked.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlparse

from packaging.utils import canonicalize_name

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYPI = "https://pypi.org/simple"
# The image's platform: python:3.11-slim-bookworm (and the stand-in base) have glibc 2.36.
IMAGE_GLIBC_MINOR = 36
IMAGE_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(IMAGE_GLIBC_MINOR, 4, -1)]
IMAGE_PLATFORMS += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
IMAGE_PLATFORMS += ["linux_x86_64"]
# What each lock holds: its extras, and whether the image installs it (then PyPI's files count).
LOCKS = {"base": ((), True), "registry": (("registry",), True), "full": (None, False)}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)
HEADER = """\
# requirements/{name}.txt: {what}.
# Every package pinned, with the sha256 of each file pip may pick (linux x86_64, CPython 3.11):
# {where}.
# Generated from pyproject.toml by requirements/lock.py, do not edit. Regenerate with
#     .venv/bin/python requirements/lock.py  (keeps the pins; --upgrade: the newest allowed)
# Install: pip install --no-deps --require-hashes -r requirements/{name}.txt
#          pip install --no-deps --no-build-isolation {project}
"""
WHAT = {
    "base": "the base install, pyproject.toml's dependencies (the image)",
    "registry": "the base install and the registry extra (the image built with EXTRAS=registry)",
    "full": "the base install and the train, registry and dev extras (make install, CI)",
}


Pins = dict[str, str]
Hashes = dict[str, set[str]]


def roots(extras: tuple[str, ...] | None) -> list[str]:
    """pyproject.toml's requirements for these extras (None: all), with the build backend's."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    chosen = optional if extras is None else {name: optional[name] for name in extras}
    requirements = list(project["dependencies"]) + [r for group in chosen.values() for r in group]
    return requirements + list(pyproject["build-system"]["requires"])


def read_pins(path: Path) -> Pins:
    """``name==version`` lines of a requirements or `pip freeze` file."""
    text = path.read_text() if path.exists() else ""
    return {canonicalize_name(name): version for name, version in PIN.findall(text)}


def file_sha256(url: str) -> str:
    digest = hashlib.sha256()
    with open(unquote(urlparse(url).path), "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve(requirements: list[str], pins: Pins, image: bool) -> tuple[Pins, Hashes, set[str]]:
    """What pip would install for ``requirements`` within ``pins``: versions, file hashes, and
    the packages that come as source distributions (no wheel).

    ``image``: resolve from PyPI alone for the image's platform (wheels only), ignoring this
    machine's pip configuration; otherwise as pip installs here.
    """
    env = dict(os.environ)
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
    command += ["--quiet", "--disable-pip-version-check"]
    if image:
        env = {k: v for k, v in env.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
        env["PIP_CONFIG_FILE"] = os.devnull
        command += ["--index-url", PYPI, "--only-binary", ":all:", "--implementation", "cp"]
        command += ["--python-version", "3.11", "--abi", "cp311"]
        command += [f"--platform={platform}" for platform in IMAGE_PLATFORMS]
    with tempfile.TemporaryDirectory() as scratch:
        constraints, report = Path(scratch) / "constraints.txt", Path(scratch) / "report.json"
        constraints.write_text("".join(f"{name}=={v}\n" for name, v in sorted(pins.items())))
        if image:  # pip refuses platform options outside a --target install, dry or not
            command += ["--target", str(Path(scratch) / "target")]
        command += ["-c", str(constraints), "--report", str(report), *requirements]
        # stderr is kept for failures: pip warns of every package the local indexes lack.
        done = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise SystemExit(f"lock: pip failed:\n{done.stderr[-3000:]}")
        installs = json.loads(report.read_text())["install"]
    versions: Pins = {}
    hashes: Hashes = {}
    sources: set[str] = set()
    for item in installs:
        name = canonicalize_name(item["metadata"]["name"])
        info = item["download_info"]
        url = info["url"]
        if url.endswith((".tar.gz", ".zip")):
            sources.add(name)
        sha256 = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        if sha256 is None and url.startswith("file:"):
            sha256 = file_sha256(url)
        if sha256 is None:
            raise SystemExit(f"lock: pip reported no sha256 for {name} ({url})")
        versions[name] = item["metadata"]["version"]
        hashes.setdefault(name, set()).add(sha256)
    return versions, hashes, sources


def render(name: str, versions: Pins, hashes: Hashes, sources: set[str]) -> str:
    where = "the files pip picks on this machine"
    if LOCKS[name][1]:
        where += " and from PyPI alone for the image"
    project = "-e ." if name == "full" else "."
    lines = [HEADER.format(what=WHAT[name], where=where, name=name, project=project)]
    for package in sorted(versions):
        if package in sources:
            lines.append("# no wheel: pip builds this one, its build backend fetched unchecked\n")
        entry = [f"{package}=={versions[package]}"]
        entry += [f"    --hash=sha256:{digest}" for digest in sorted(hashes[package])]
        lines.append(" \\\n".join(entry) + "\n")
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="drop the pins: newest allowed")
    parser.add_argument(
        "--pins", type=Path, default=HERE / "full.txt", help="versions to keep (default full.txt)"
    )
    args = parser.parse_args()
    pins = {} if args.upgrade else read_pins(args.pins)

    # full first: its versions are the ones the other two locks take.
    results = {"full": resolve(roots(None), pins, image=False)}
    for name, (extras, for_image) in LOCKS.items():
        if extras is None:
            continue
        versions, hashes, sources = resolve(roots(extras), results["full"][0], image=False)
        if for_image:
            image_versions, image_hashes, _ = resolve(roots(extras), versions, image=True)
            if image_versions != versions:
                differ = sorted(set(image_versions.items()) ^ set(versions.items()))
                raise SystemExit(f"lock: the image would install other versions: {differ}")
            for package, digests in image_hashes.items():
                hashes[package] |= digests
        results[name] = (versions, hashes, sources)
    for name, (versions, hashes, sources) in results.items():
        (HERE / f"{name}.txt").write_text(render(name, versions, hashes, sources))
        count = sum(len(h) for h in hashes.values())
        print(f"requirements/{name}.txt: {len(versions)} packages, {count} hashes")


if __name__ == "__main__":
    main()
