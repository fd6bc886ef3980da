"""The networks, the classifier that carries its own normalisation, and checkpoints.

A :class:`Classifier` takes pixels scaled to [0, 1] as (N, 1, 28, 28) float tensors and returns
logits; the mean and standard deviation of the training split live inside it, so every caller
(evaluation, the digit reader, the server, MLflow) feeds the same input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from digits_cli.errors import DigitsError
from digits_cli.io import atomic_path

ARCHS = ("default", "small", "lenet")


def conv_block(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    """Convolution, batch norm, ReLU: same spatial size."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def build_cnn(widths: tuple[int, int, int], hidden: int = 0, dropout: float = 0.2) -> nn.Module:
    """Three conv-BN-ReLU blocks, each followed by 2x2 max pooling (28 -> 14 -> 7 -> 3), then a
    classifier with an optional hidden layer (cheap capacity: a few % of the multiply-adds)."""
    first, second, third = widths
    features = third * 3 * 3
    head: list[nn.Module] = []
    if hidden:
        head = [nn.Linear(features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(True)]
        features = hidden
    return nn.Sequential(
        conv_block(1, first, 5),
        nn.MaxPool2d(2),
        conv_block(first, second),
        nn.MaxPool2d(2),
        conv_block(second, third),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *head,
        nn.Dropout(dropout),
        nn.Linear(features, 10),
    )


def build_default() -> nn.Module:
    """The compact batch-norm CNN (8.2M MACs per image): 99.6% MNIST in ~7 min on 2 CPU cores."""
    return build_cnn((32, 64, 128), hidden=256)


def build_small() -> nn.Module:
    """Half the default's widths (~2.1M MACs per image), for the quick `fast` preset."""
    return build_cnn((16, 32, 64), dropout=0.1)


def build_lenet() -> nn.Module:
    """A LeNet-5-style baseline close to the reference project's model."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


BUILDERS = {"default": build_default, "small": build_small, "lenet": build_lenet}


def model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1], the Classifier's input."""
    return images.unsqueeze(1).float().div_(255.0)


class Classifier(nn.Module):
    """Normalises [0, 1] pixels with the training split's constants, then runs the network."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, arch: str = "default", mean: float = 0.1307, std: float = 0.3081) -> None:
        super().__init__()
        if arch not in BUILDERS:
            raise DigitsError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
        self.arch = arch
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))
        self.net = BUILDERS[arch]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module) -> int:
    """Multiply-accumulates of one forward pass on one 28x28 image (convolutions, linear layers)."""
    macs = 0

    def conv_hook(module: nn.Conv2d, _: Any, output: torch.Tensor) -> None:
        nonlocal macs
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        macs += output.numel() * kernel

    def linear_hook(module: nn.Linear, _: Any, output: torch.Tensor) -> None:
        nonlocal macs
        macs += output.numel() * module.in_features

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return macs


def save_checkpoint(path: Path, model: Classifier, meta: dict[str, Any]) -> None:
    """Write the model and its metadata atomically (tensors and plain values only)."""
    state = {
        "arch": model.arch,
        "mean": float(model.mean),
        "std": float(model.std),
        "state_dict": model.state_dict(),
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> tuple[Classifier, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise DigitsError(f"{path}: model checkpoint not found; run `digits train` first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise TypeError(f"holds a {type(state).__name__}")
        model = Classifier(state["arch"], state["mean"], state["std"])
        model.load_state_dict(state["state_dict"])
    except (MemoryError, DigitsError):
        raise
    except Exception as exc:  # unpickling arbitrary bytes fails in many ways (IndexError, ...)
        raise DigitsError(f"{path}: not a digits checkpoint ({exc.__class__.__name__})") from exc
    model.eval()
    return model, state.get("meta", {})
