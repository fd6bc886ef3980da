"""Training across machines: two torchrun "nodes" on this machine, each its own process tree in
its own working folder, meeting through a c10d rendezvous as real nodes would (docs/deploy.md)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import validated


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_folder(root: Path, name: str, processed_dir: Path) -> Path:
    """A node's working folder with the same relative params file every node gets."""
    folder = root / name
    folder.mkdir()
    params = {
        "data": {"processed_dir": str(processed_dir)},  # on real nodes: the same path on each
        "validate": {"report": str(validated(processed_dir))},
        "train": {
            "arch": "lenet",
            "epochs": 1,
            "batch_size": 64,
            "lr": 0.05,
            "max_train_samples": 256,
            "threads": 1,
            "model_path": "models/model.pt",
            "report": "reports/train.json",
        },
        "tracking": {"experiment": "tests-multinode", "artifact_location": str(root / "mlruns")},
        "emissions": {"enabled": False},
    }
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    return folder


def test_two_nodes_train_one_model_through_a_c10d_rendezvous(
    processed_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc-per-node", "1",
        "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "digits-test",
        "-m", "digits_cli", "--params", "params.yaml", "train", "--json",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "OMP_NUM_THREADS": "1"}
    folders = [node_folder(tmp_path, name, processed_dir) for name in ("node-a", "node-b")]
    nodes = [
        subprocess.Popen(
            command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for folder in folders
    ]
    try:
        outputs = [node.communicate(timeout=240) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, stderr) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, stderr[-2000:]
    reports = [
        [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        for stdout, _ in outputs
    ]
    # One node got rank 0 (the rendezvous decides which): it alone reports and saves.
    assert sorted(len(r) for r in reports) == [0, 1]
    leader = 0 if reports[0] else 1
    [report] = reports[leader]
    assert report["processes"] == 2 and report["train_samples"] == 256
    assert (folders[leader] / "models/model.pt").is_file()
    assert json.loads((folders[leader] / "reports/train.json").read_text()) == report
    assert not (folders[1 - leader] / "models").exists()
