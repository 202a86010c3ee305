"""Known-answer constructions: maps whose G-EED is known exactly, used by the tests and by the book.

* :class:`EquivariantMap` -- 1x1 convolutions, ReLUs and a D4-symmetric blur: exactly equivariant to
  D4 (and so C4, flip) under the plain spatial action on every layer.
* :func:`proposition_31_example` -- Proposition 3.1(1) of Kvinge et al.: ``f = f2 o f1`` invariant
  although neither ``f1`` nor ``f2`` is.
* :func:`hand_example` -- two 1x2 "images" under the flip group, with every metric worked by hand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from geed.groups import get_group
from geed.metrics import geed, latent_eed, softmax_eed
from geed.actions import TrivialAction, SpatialAction

__all__ = ["EquivariantMap", "proposition_31_example", "hand_example", "Prop31Result"]


class EquivariantMap(nn.Module):
    """``x -> blur(relu(conv1x1(x)))`` twice: exactly D4-equivariant (spatial action, no channel mixing).

    The 3x3 blur kernel is invariant under the 8 symmetries of the square and is applied per channel
    with zero padding on a square grid, so it commutes with rot90 and flips exactly.
    """

    def __init__(self, in_channels: int = 1, channels: int = 4) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU())
        self.blur1 = _SymmetricBlur(channels)
        self.layer2 = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU())
        self.blur2 = _SymmetricBlur(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur2(self.layer2(self.blur1(self.layer1(x))))


class _SymmetricBlur(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
        self.register_buffer("kernel", k.expand(channels, 1, 3, 3).clone())
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.kernel.to(x.dtype), padding=1, groups=self.channels)


@dataclass
class Prop31Result:
    """G-EED (l2, orbit-mean reference) of f1, f2 and f = f2 o f1 on the same sample."""

    f1: float
    f2: float
    f: float


def proposition_31_example(n: int = 64, seed: int = 0) -> Prop31Result:
    """G = flip group acting on 1x2 images ``(u, v) -> (v, u)``.

    ``f1(x) = (s, a) = (u + v, u - v)`` in Z = R^2; G acts on Z by negating both coordinates.
    ``f2(s, a) = s + a^2`` in Y = R with the trivial action. Then:

    * f1 is not invariant: ``f1(flip x) = (s, -a)``;
    * f2 is not invariant for the action on Z: ``f2(-s, -a) = -s + a^2``;
    * ``f(x) = (u + v) + (u - v)^2`` is invariant.
    """
    g = get_group("flip")
    x = torch.randn(n, 1, 1, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    orbit = g.orbit(x)  # (2, n, 1, 1, 2)

    def f1(t: torch.Tensor) -> torch.Tensor:
        u, v = t[..., 0, 0, 0], t[..., 0, 0, 1]
        return torch.stack([u + v, u - v], dim=-1)

    def f2(z: torch.Tensor) -> torch.Tensor:
        return (z[..., 0] + z[..., 1] ** 2)[..., None]

    z = f1(x)  # (n, 2)
    z_orbit = torch.stack([z, -z])  # G acting on Z by negation
    f1_val = latent_eed(f1(orbit), g, "l2", normalise=False).value
    f2_val = geed(f2(z_orbit), TrivialAction(g), "l2").value
    f_val = geed(f2(f1(orbit)), TrivialAction(g), "l2").value
    return Prop31Result(f1=f1_val, f2=f2_val, f=f_val)


def hand_example() -> dict[str, tuple[float, float]]:
    """Measured value and hand-computed value of several metrics on a two-point example.

    Inputs are the 1x2 images ``x1 = (1, 3)`` and ``x2 = (2, 2)`` under the flip group; the feature
    map is the identity and the logits are ``(0, log 3)`` for x1 (then flipped) and ``(0, 0)`` for x2.
    """
    g = get_group("flip")
    x = torch.tensor([[[[1.0, 3.0]]], [[[2.0, 2.0]]]], dtype=torch.float64)
    orbit = g.orbit(x)  # (2, 2, 1, 1, 2)
    Z = orbit.flatten(2)
    l2 = latent_eed(Z, g, "l2", normalise=True)
    # x1: ||(1,3) - (2,2)|| = sqrt(2) for both elements; x2: 0.  Mean sqrt(2)/2; M = sqrt(2) -> 0.5
    logits = torch.log(torch.tensor([[1.0, 3.0], [1.0, 1.0]], dtype=torch.float64))
    L = torch.stack([logits, logits.flip(-1)])
    sm = softmax_eed(L, g)
    # x1: p = (1/4, 3/4) and its flip, mean (1/2, 1/2): KL = 1/4 log(1/2) + 3/4 log(3/2) each; x2: 0
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    ch = geed(orbit[:, :, :, :, :], SpatialAction(g), "channelwise_cosine")
    # channel of x1 is (1,3); g f(x) = flip((1,3)) = (3,1) for g = flip, compared with f(gx) = (3,1): equal
    return {
        "latent_l2_normalised": (l2.value, 0.5),
        "M_l2": (l2.normaliser, math.sqrt(2)),
        "latent_l2_unnormalised": (latent_eed(Z, g, "l2", normalise=False).value, math.sqrt(2) / 2),
        "softmax": (sm.value, kl / 2),
        "channelwise_identity_map": (ch.value, -1.0),
    }
