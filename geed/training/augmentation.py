"""Training augmentations, drawn from a seeded generator on the CPU.

* :func:`random_rotation`: each image rotated by its own angle, uniform in [0, 360) (the digits).
* :func:`augment`: random horizontal flip, random resized crop and brightness/contrast jitter (the
  image patches; the flip is among them, as in all three of the paper's training recipes).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

from geed.data.digits import random_rotation

__all__ = ["augment", "random_rotation"]


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip, random resized crop (70-100% of the side) and brightness/contrast jitter (on the CPU)."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    scale = 0.7 + 0.3 * torch.rand(n, generator=gen)
    shift = (1 - scale)[:, None] * (2 * torch.rand(n, 2, generator=gen) - 1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale, scale, shift
    x = F.grid_sample(x, F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False), align_corners=False)
    bright = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    contrast = 0.8 + 0.4 * torch.rand(n, 1, 1, 1, generator=gen)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean * bright).clamp(0, 1)
