"""Helpers shared by the tests (importable from any directory: ``from tests.helpers import ...``)."""
from __future__ import annotations

import pytest
import torch


def smooth_images(n: int = 8, size: int = 29, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Smooth random images (low-pass noise), so that interpolated rotations are accurate."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g, dtype=dtype)
    k = torch.ones(1, 1, 5, 5, dtype=dtype) / 25
    for _ in range(3):
        x = torch.nn.functional.conv2d(x, k, padding=2)
    return x / x.flatten(1).std(dim=1).view(-1, 1, 1, 1)  # unit scale per image


def interrupt_before_saving(monkeypatch, name: str, run) -> None:
    """Call ``run()`` (a training run) until it is about to save the checkpoint file ``name``, and
    stop it there as a crash would."""
    from geed.training import checkpoints

    real_save = checkpoints.save

    def crash(state, path):
        if path.name == name:
            raise KeyboardInterrupt("interrupted")
        real_save(state, path)

    with monkeypatch.context() as m:
        m.setattr(checkpoints, "save", crash)
        with pytest.raises(KeyboardInterrupt):
            run()


class RecordingCache:
    """A result cache for tests: records each ``(name, key)`` a chapter asks for in ``asked``, and either
    computes every value (nothing is reused) or, with ``compute=False``, computes nothing and answers
    with an empty result, as if it had been cached."""

    def __init__(self, compute: bool = True) -> None:
        self.compute = compute
        self.asked: list[tuple[str, dict]] = []

    def get_or_compute(self, name, key, compute, data=None):
        self.asked.append((name, key))
        return (compute(), False) if self.compute else ([], True)
