"""The networks: they learn, they carry their normalisation, they round-trip through checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from digits_cli.data import Split
from digits_cli.errors import DigitsError
from digits_cli.model import (
    ARCHS,
    Classifier,
    count_macs,
    count_parameters,
    load_checkpoint,
    save_checkpoint,
)


def pixels(split: Split, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.from_numpy(split.images[:count]).unsqueeze(1).float() / 255
    return images, torch.from_numpy(split.labels[:count])


@pytest.mark.parametrize("arch", ARCHS)
def test_one_optimisation_step_lowers_the_loss_on_a_tiny_batch(
    arch: str, mnist_small: dict[str, Split]
) -> None:
    torch.manual_seed(0)
    model = Classifier(arch).eval()  # eval: dropout off, so the two losses are comparable
    images, labels = pixels(mnist_small["train"], 32)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    before = F.cross_entropy(model(images), labels)
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = F.cross_entropy(model(images), labels)
    assert float(after) < float(before.detach())


def test_the_default_network_overfits_64_examples(mnist_small: dict[str, Split]) -> None:
    torch.manual_seed(0)
    model = Classifier("default")
    images, labels = pixels(mnist_small["train"], 64)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        loss = F.cross_entropy(model(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean())
    assert accuracy == 1.0


def test_the_classifier_normalises_with_the_constants_it_carries() -> None:
    model = Classifier("lenet", mean=0.25, std=0.5)
    state = model.state_dict()
    assert float(state["mean"]) == 0.25 and float(state["std"]) == 0.5
    seen = []
    model.net.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    model(torch.full((1, 1, 28, 28), 0.75))
    assert torch.allclose(seen[0], torch.ones(1, 1, 28, 28))


def test_lenet_macs_match_a_count_by_hand() -> None:
    conv1, conv2 = 28 * 28 * 6 * 25, 10 * 10 * 16 * 6 * 25
    dense = 400 * 120 + 120 * 84 + 84 * 10
    assert count_macs(Classifier("lenet")) == conv1 + conv2 + dense


def test_the_small_network_is_cheaper_than_the_default() -> None:
    default, small = Classifier("default"), Classifier("small")
    assert count_macs(small) < count_macs(default)
    assert count_parameters(small) < count_parameters(default)


def test_a_checkpoint_reloads_to_the_same_predictions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Classifier("default", mean=0.13, std=0.31).eval()
    images = torch.rand(4, 1, 28, 28)
    save_checkpoint(tmp_path / "model.pt", model, {"epoch": 3})
    loaded, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta == {"epoch": 3}
    assert not loaded.training
    with torch.no_grad():
        np.testing.assert_allclose(loaded(images).numpy(), model(images).numpy(), rtol=1e-6)


def test_an_unknown_architecture_is_a_user_error() -> None:
    with pytest.raises(DigitsError, match="unknown architecture 'resnet'"):
        Classifier("resnet")


@pytest.mark.parametrize(
    "content",
    [b"", b"root:x:0:0:root:/root:/bin/bash\n", bytes(range(256)) * 4, b"PK\x03\x04" + b"\0" * 60],
    ids=["empty", "text", "binary", "zip-header"],
)
def test_a_file_that_is_no_checkpoint_is_a_user_error_naming_it(
    content: bytes, tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(DigitsError, match=f"{path}: not a digits checkpoint"):
        load_checkpoint(path)


def test_a_torch_file_of_something_else_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)
    with pytest.raises(DigitsError, match="not a digits checkpoint"):
        load_checkpoint(path)
