"""Models by name, each declaring the group action on its hidden layers.

Two families share one skeleton, after the rotated-MNIST model of e2cnn's examples (Weiler and
Cesa 2019) used by Kvinge et al. (Sec. 4.1):

``input mask -> block1 .. block6 -> spatial pooling -> invariant pooling -> latent -> head``

* ``cnn``: conventional convolutions; blocks act on by the plain spatial action; the invariant
  pooling is a global average over space.
* ``c8cnn``: C8 steerable convolutions on regular fields (e2cnn); each block's output transforms
  by the spatial action composed with the cyclic permutation inside every regular field; group
  pooling (max over each field) makes the latent vector invariant up to interpolation.

The two families are built on equal terms: they differ only in their convolutions. Both use
the same input mask, convolutions without bias (a batch normalisation follows), the same stride-2
antialiased (Gaussian) average pooling after blocks 2 and 4 as in e2cnn's example -- centred on
the grid, so that rotating a map about its centre is the action the input rotation induces --
and the same invariant pooling: a max over each group of 8 consecutive channels (a regular field
of the C8-CNN; any 8 channels of the CNN), then a global average over space. Their latent vectors
therefore have the same dimension (the number of fields). The CNN also exposes ``latent_wide``,
the global average of its last block before the channel max (8 times wider), so that a latent
comparison can be checked for its dependence on the dimension.

``width`` scales the channel counts of e2cnn's example (24, 48, 48, 96, 96, 64 fields).
Every model exposes ``blocks`` (module names of the six blocks), ``latent_layer`` and
``layer_actions(group)``.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Callable

import torch
from torch import nn

from geed.actions import Action, SpatialAction, field_type_action
from geed.groups import Group, disc_mask, get_group

__all__ = ["build", "names", "ConvNet", "SteerableCNN", "GroupAveraged", "InvariantFeatures", "register_model",
           "BASE_WIDTHS", "GaussianPool2d", "RegularGroupPooling", "ARCHITECTURE_REVISION"]

# e2cnn 0.2.3 indexes with a uint8 mask when building its bases: a harmless deprecation notice of torch
warnings.filterwarnings("ignore", message="indexing with dtype torch.uint8", category=UserWarning)

BASE_WIDTHS = (24, 48, 48, 96, 96, 64)
KERNELS = ((7, 1), (5, 2), (5, 2), (5, 2), (5, 2), (5, 1))  # (kernel size, padding) per block
POOL_AFTER = (2, 4)
INPUT_SIZE = 29
POOL_SIGMA = 0.66  # e2cnn example's antialiased pooling
FIELD_SIZE = 8  # channels per regular field of the C8-CNN, and per channel-max group of the CNN

# Bumped when a family's architecture changes, so that checkpoints of the old one are never reused
ARCHITECTURE_REVISION = {"cnn": 2, "cnn-tiny": 2}

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


def names() -> list[str]:
    return sorted(_REGISTRY)


def build(name: str, **kwargs) -> nn.Module:
    """Build a registered model: ``cnn``, ``c8cnn``, ``cnn-tiny``, ``c8cnn-tiny`` (kwargs: width, n_classes, seed)."""
    try:
        fn = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {names()}") from None
    seed = kwargs.pop("seed", None)
    if seed is not None:
        torch.manual_seed(int(seed))
    return fn(**kwargs)


def _widths(width: float) -> list[int]:
    if not (isinstance(width, (int, float)) and width > 0):
        raise ValueError(f"width must be a positive number; got {width!r}")
    return [max(1, int(round(c * width))) for c in BASE_WIDTHS]


class _InputMask(nn.Module):
    """Zero everything outside the disc inscribed in the input (as e2cnn's MaskModule, hard edge)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("mask", disc_mask(size, size).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(x.dtype)


class GaussianPool2d(nn.Module):
    """Antialiased average pooling: a depthwise convolution with a normalised Gaussian of standard
    deviation ``sigma`` (support 2 round(3 sigma) + 1), zero padding of half the support, ``stride``.

    The same operator as e2cnn's ``PointwiseAvgPoolAntialiased``, for plain tensors. On an odd-sized
    map the output grid is centred on the input grid (output pixel j sits on input pixel
    ``stride * j``), and the filter is symmetric under the dihedral group of the square, so the
    pooling commutes with 90-degree rotations and flips about the centre."""

    def __init__(self, sigma: float = POOL_SIGMA, stride: int = 2) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma must be positive; got {sigma}")
        size = 2 * int(round(3 * sigma)) + 1
        r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
        self.register_buffer("kernel", (g / g.sum()).float()[None, None], persistent=False)
        self.stride, self.padding = int(stride), (size - 1) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel.to(x.dtype).expand(x.shape[1], 1, -1, -1)
        return nn.functional.conv2d(x, k, stride=self.stride, padding=self.padding, groups=x.shape[1])


class ConvNet(nn.Module):
    """Conventional CNN with the six-block skeleton and the C8-CNN's pooling (see the module text).

    Channel counts are ``width * BASE_WIDTHS`` times ``channel_factor`` (8 gives the C8 model's
    channel counts); the invariant pooling takes the max over groups of ``FIELD_SIZE`` channels."""

    def __init__(self, width: float = 0.125, n_classes: int = 9, channel_factor: int = FIELD_SIZE, in_channels: int = 1) -> None:
        super().__init__()
        if not (isinstance(channel_factor, int) and channel_factor >= 1):
            raise ValueError(f"channel_factor must be a positive integer; got {channel_factor!r}")
        chans = [c * channel_factor for c in _widths(width)]
        self.input_mask = _InputMask(INPUT_SIZE)
        prev = in_channels
        self.blocks = []
        for i, (c, (k, p)) in enumerate(zip(chans, KERNELS), start=1):
            layers: list[nn.Module] = [nn.Conv2d(prev, c, k, padding=p, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=False)]
            if i in POOL_AFTER:
                layers.append(GaussianPool2d(POOL_SIGMA, stride=2))
            setattr(self, f"block{i}", nn.Sequential(*layers))
            self.blocks.append(f"block{i}")
            prev = c
        if prev % FIELD_SIZE:
            raise ValueError(f"the last block has {prev} channels, not a whole number of groups of {FIELD_SIZE}")
        self.gpool = RegularGroupPooling(FIELD_SIZE)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.latent = nn.Flatten()
        self.latent_wide = nn.Identity()
        c = prev // FIELD_SIZE
        self.head = nn.Sequential(nn.Linear(c, 64), nn.BatchNorm1d(64), nn.ELU(), nn.Linear(64, n_classes))
        self.latent_layer = "latent"
        self.latent_dim = c

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature extractor f1: input -> latent vector."""
        x = self.input_mask(x)
        for name in self.blocks:
            x = getattr(self, name)(x)
        self.latent_wide(x.mean(dim=(2, 3)))  # a readout for measurement only: the head does not see it
        return self.latent(self.pool(self.gpool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def layer_actions(self, group: Group | str) -> dict[str, Action]:
        group = get_group(group)
        return {name: SpatialAction(group) for name in self.blocks}


class SteerableCNN(nn.Module):
    """C_N steerable CNN on regular fields (e2cnn), six blocks, group pooling before the classifier."""

    def __init__(self, width: float = 0.125, n_classes: int = 9, n_rotations: int = 8, in_channels: int = 1) -> None:
        super().__init__()
        from e2cnn import gspaces
        from e2cnn import nn as enn

        self.gspace = gspaces.Rot2dOnR2(N=n_rotations)
        self.in_type = enn.FieldType(self.gspace, [self.gspace.trivial_repr] * in_channels)
        self.input_mask = _InputMask(INPUT_SIZE)
        prev = self.in_type
        self.blocks = []
        self.block_types = {}
        for i, (c, (k, p)) in enumerate(zip(_widths(width), KERNELS), start=1):
            out = enn.FieldType(self.gspace, [self.gspace.regular_repr] * c)
            layers = [enn.R2Conv(prev, out, kernel_size=k, padding=p, bias=False), enn.InnerBatchNorm(out), enn.ReLU(out, inplace=True)]
            if i in POOL_AFTER:
                layers.append(enn.PointwiseAvgPoolAntialiased(out, sigma=POOL_SIGMA, stride=2))
            setattr(self, f"block{i}", enn.SequentialModule(*layers))
            self.blocks.append(f"block{i}")
            self.block_types[f"block{i}"] = out
            prev = out
        self.gpool = RegularGroupPooling(n_rotations)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.latent = nn.Flatten()
        c = len(prev)
        self.head = nn.Sequential(nn.Linear(c, 64), nn.BatchNorm1d(64), nn.ELU(), nn.Linear(64, n_classes))
        self.latent_layer = "latent"
        self.latent_dim = c
        _own_bases(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The feature extractor f1: input -> latent vector (invariant up to interpolation)."""
        from e2cnn import nn as enn

        h = enn.GeometricTensor(self.input_mask(x), self.in_type)
        for name in self.blocks:
            h = getattr(self, name)(h)
        return self.latent(self.pool(self.gpool(h.tensor)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def layer_actions(self, group: Group | str) -> dict[str, Action]:
        """Spatial action composed with each regular field's permutation, read from the field types."""
        group = get_group(group)
        key = (repr(group), group.order)
        cache = self.__dict__.setdefault("_action_cache", {})
        if key not in cache:
            cache[key] = {name: field_type_action(group, self.block_types[name]) for name in self.blocks}
        return dict(cache[key])


def _own_bases(model: nn.Module) -> None:
    """Give ``model`` its own copy of each sampled kernel basis. e2cnn caches the basis of a layer type
    and hands the same module to every layer of that type in the process, in every model, so moving
    one model (to a GPU, to float64) moved the bases of all the others with it, which then failed."""
    from e2cnn.nn.modules.r2_conv.basisexpansion_singleblock import SingleBlockBasisExpansion

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SingleBlockBasisExpansion):
                setattr(parent, name, copy.deepcopy(child))


class RegularGroupPooling(nn.Module):
    """Max over the ``order`` channels of each regular field: ``(N, F*order, H, W) -> (N, F, H, W)``.

    Equal to e2cnn's ``GroupPooling`` on regular fields, but keeps the input's dtype (e2cnn's
    casts to float32, which breaks float64 known-answer checks)."""

    def __init__(self, order: int) -> None:
        super().__init__()
        self.order = int(order)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c % self.order:
            raise ValueError(f"{c} channels are not a whole number of regular fields of size {self.order}")
        return x.view(b, c // self.order, self.order, h, w).amax(dim=2)


class GroupAveraged(nn.Module):
    """``x -> mean_g model(g x)``: exactly G-invariant when G acts exactly (known-answer model)."""

    def __init__(self, model: nn.Module, group: Group | str) -> None:
        super().__init__()
        self.model, self.group = model, get_group(group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(self.group.act(x, i)) for i in range(len(self.group))]).mean(0)


class InvariantFeatures(nn.Module):
    """``head(mean_g features(g x))``: the feature extractor is made exactly invariant (Prop. 3.1(2))."""

    def __init__(self, model: nn.Module, group: Group | str) -> None:
        super().__init__()
        self.model, self.group = model, get_group(group)
        self.latent = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.stack([self.model.features(self.group.act(x, i)) for i in range(len(self.group))]).mean(0)
        return self.model.head(self.latent(z))


@register_model("cnn")
def _cnn(width: float = 0.125, n_classes: int = 9, **kw) -> nn.Module:
    return ConvNet(width=width, n_classes=n_classes, **kw)


@register_model("c8cnn")
def _c8cnn(width: float = 0.125, n_classes: int = 9, **kw) -> nn.Module:
    return SteerableCNN(width=width, n_classes=n_classes, n_rotations=8, **kw)


@register_model("cnn-tiny")
def _cnn_tiny(width: float = 1 / 24, n_classes: int = 9, **kw) -> nn.Module:
    return ConvNet(width=width, n_classes=n_classes, **kw)


@register_model("c8cnn-tiny")
def _c8cnn_tiny(width: float = 1 / 24, n_classes: int = 9, **kw) -> nn.Module:
    return SteerableCNN(width=width, n_classes=n_classes, n_rotations=8, **kw)


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def output_size(size: int = INPUT_SIZE) -> int:
    """Spatial size after the six blocks for an input of ``size`` (for documentation and checks)."""
    for i, (k, p) in enumerate(KERNELS, start=1):
        size = size + 2 * p - k + 1
        if i in POOL_AFTER:
            support = 2 * int(round(3 * POOL_SIGMA)) + 1
            size = math.floor((size + (support - 1) - support) / 2) + 1
    return size
