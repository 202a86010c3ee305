import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("SE_AVOID_STATS", "true")
warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield


def smooth_images(n: int = 8, size: int = 29, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Smooth random images (low-pass noise), so that interpolated rotations are accurate."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g, dtype=dtype)
    k = torch.ones(1, 1, 5, 5, dtype=dtype) / 25
    for _ in range(3):
        x = torch.nn.functional.conv2d(x, k, padding=2)
    return x / x.flatten(1).std(dim=1).view(-1, 1, 1, 1)  # unit scale per image


@pytest.fixture
def images():
    return smooth_images()
