"""Audit installed dependencies for published vulnerabilities (pip-audit), never silently.

Runs pip-audit over an environment's site-packages (default: this interpreter's) and

- exits 1 naming every vulnerable package, its version, the advisories and their fixed versions;
- when the vulnerability database cannot be reached (this machine reaches the package index but
  not PyPI's JSON API or OSV), says so, with how many packages went unchecked, and exits 0 unless
  ``--strict``: an audit that could not look is reported as such, not as a pass;
- otherwise prints how many packages were checked and found clean.

    python bench/dependency_audit.py [--path SITE_PACKAGES] [--service pypi|osv] [--strict]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
from pathlib import Path

OWN_PACKAGE = "digits-cli"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    parser.add_argument("--service", default="pypi", choices=("pypi", "osv"))
    parser.add_argument("--strict", action="store_true", help="fail when the audit cannot look")
    args = parser.parse_args()

    command = [sys.executable, "-m", "pip_audit", "-f", "json", "--progress-spinner", "off"]
    command += ["-s", args.service, "--path", str(args.path)]
    result = subprocess.run(command, capture_output=True, text=True)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(f"dependency audit UNAVAILABLE: pip-audit failed: {result.stderr.strip()[-400:]}")
        sys.exit(1 if args.strict else 0)
    found = [d for d in report["dependencies"] if d["name"] != OWN_PACKAGE]
    unchecked = [d for d in found if "skip_reason" in d]
    vulnerable = [d for d in found if d.get("vulns")]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
            print(f"VULNERABLE {dependency['name']} {dependency['version']}: {vuln['id']} "
                  f"(fixed in {fixed})")  # fmt: skip
    if vulnerable:
        sys.exit(1)
    if unchecked:
        print(f"dependency audit UNAVAILABLE: {len(unchecked)} of {len(found)} packages could "
              f"not be checked against {args.service} (e.g. {unchecked[0]['skip_reason']}); "
              "nothing is known about them")  # fmt: skip
        sys.exit(1 if args.strict else 0)
    print(
        f"dependency audit: {len(found)} packages checked against {args.service}, none vulnerable"
    )


if __name__ == "__main__":
    main()
