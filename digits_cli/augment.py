"""Training-time augmentation: one batched random warp per batch (affine, optionally elastic),
and a share of each batch seen at a lower resolution."""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from digits_cli.config import TrainSettings

if TYPE_CHECKING:
    import torch


def random_affine(
    batch: torch.Tensor, cfg: TrainSettings, generator: torch.Generator
) -> torch.Tensor:
    """Warp each image by its own random rotation, scale and shift (one batched grid sample);
    with ``cfg.elastic`` the first ``elastic_fraction`` of the batch is also elastically
    distorted (Simard et al. 2003) in the same sample."""
    import torch
    import torch.nn.functional as F

    n = batch.shape[0]
    u = (torch.rand(n, 4, generator=generator) * 2 - 1).to(batch.device)
    angle = u[:, 0] * math.radians(cfg.rotation)
    zoom = 1 + u[:, 1] * cfg.scale
    # affine_grid maps output to input coordinates in [-1, 1]: a shift of f image widths is 2f.
    shift_x, shift_y = u[:, 2] * 2 * cfg.shift, u[:, 3] * 2 * cfg.shift
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    distorted = round(n * cfg.elastic_fraction) if cfg.elastic > 0 else 0
    if distorted:
        field = elastic_field(
            distorted, batch.shape[-2:], cfg.elastic, cfg.elastic_sigma, generator
        )
        grid = torch.cat([grid[:distorted] + field.to(batch.device), grid[distorted:]])
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def low_resolution(
    batch: torch.Tensor, cfg: TrainSettings, generator: torch.Generator
) -> torch.Tensor:
    """The first ``cfg.low_resolution`` of the batch shrunk to a random side (from
    ``cfg.low_resolution_side`` to 27 pixels of 28, one per batch) and enlarged back: what a
    digit 10-16 pixels tall looks like once the finder has scaled its crop up to MNIST's size."""
    import torch
    import torch.nn.functional as F

    n = round(batch.shape[0] * cfg.low_resolution)
    if n == 0:
        return batch
    side = int(torch.randint(cfg.low_resolution_side, 28, (1,), generator=generator))
    shrunk = F.interpolate(batch[:n], size=(side, side), mode="area")
    enlarged = F.interpolate(shrunk, size=batch.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([enlarged, batch[n:]])


def elastic_field(
    n: int, size: Any, alpha: float, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    """``n`` smooth random displacement fields (n, H, W, 2) in grid_sample's [-1, 1] units:
    uniform noise blurred by a Gaussian of ``sigma`` pixels (zero beyond the border), scaled to
    ``alpha`` pixels."""
    import torch

    height, width = int(size[0]), int(size[1])
    noise = torch.rand(n * 2, height, width, generator=generator) * 2 - 1
    # The separable blur as two small matrix products: a 1-channel conv2d with a 25-tap kernel
    # cost as much as the warp and the network's step together.
    blurred = blur_matrix(height, sigma) @ noise @ blur_matrix(width, sigma)
    pixels = blurred.view(n, 2, height, width).permute(0, 2, 3, 1) * alpha
    # One pixel is 2/W of grid_sample's x range and 2/H of its y range.
    return pixels * torch.tensor([2 / width, 2 / height])


@functools.lru_cache(maxsize=8)
def blur_matrix(size: int, sigma: float) -> torch.Tensor:
    """The (size, size) symmetric matrix of a normalised Gaussian blur of ``sigma`` pixels
    truncated at 3 sigma, as a zero-padded 1-D convolution along one axis."""
    import torch

    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(size).view(-1, 1) - torch.arange(size).view(1, -1)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    weights = torch.exp(-0.5 * (offsets.to(torch.float32) / sigma) ** 2) / taps.sum()
    return torch.where(offsets.abs() <= radius, weights, torch.zeros(()))
