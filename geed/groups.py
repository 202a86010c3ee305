"""Finite groups acting on images: rotations, reflections, dihedral groups, translations.

Every group here is a finite list of elements with an explicit composition law, and it acts on
tensors whose last two axes are spatial (``(..., H, W)``). Element 0 is always the identity.

Rotations by multiples of 90 degrees are exact permutations of pixels (``torch.rot90``). Other
angles are computed by bilinear interpolation (``torch.nn.functional.grid_sample``, zero padding,
``align_corners=False``), rotating about the centre of the grid; this is not exactly invertible,
and the resulting error is the *interpolation floor* that any measured equivariance must be read
against. With ``mask=True`` the group acts on images restricted to the inscribed disc, so that no
content leaves or enters the frame under rotation.

Rotation direction: element ``k`` of ``C_n`` rotates by ``360 k / n`` degrees counter-clockwise
as an image is displayed (row 0 at the top), which is the direction of ``torch.rot90(x, k)`` and
the convention of e2cnn's ``GeometricTensor.transform``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "Element",
    "Group",
    "CyclicGroup",
    "DihedralGroup",
    "ReflectionGroup",
    "TranslationGroup",
    "get_group",
    "available_groups",
    "disc_mask",
]


@dataclass(frozen=True)
class Element:
    """One group element: rotate by ``angle`` degrees after an optional left-right flip, then shift."""

    angle: float = 0.0
    flip: bool = False
    shift: int = 0

    @property
    def is_identity(self) -> bool:
        return self.angle % 360 == 0 and not self.flip and self.shift == 0

    def __str__(self) -> str:
        parts = []
        if self.flip:
            parts.append("flip")
        if self.angle % 360:
            parts.append(f"rot{self.angle:g}")
        if self.shift:
            parts.append(f"shift{self.shift}")
        return "+".join(parts) or "e"


@lru_cache(maxsize=64)
def _disc(size_h: int, size_w: int) -> torch.Tensor:
    ys = torch.arange(size_h, dtype=torch.float64) - (size_h - 1) / 2
    xs = torch.arange(size_w, dtype=torch.float64) - (size_w - 1) / 2
    radius = min(size_h, size_w) / 2
    return ((ys[:, None] ** 2 + xs[None, :] ** 2) <= radius**2).to(torch.float64)


@lru_cache(maxsize=64)
def _disc_as(size_h: int, size_w: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    return _disc(size_h, size_w).to(device=device, dtype=dtype)  # made once per device and dtype (no copy per block)


def disc_mask(height: int, width: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """A 0/1 mask of the disc inscribed in an ``height x width`` grid (shared: not to be changed in place)."""
    if like is not None:
        return _disc_as(int(height), int(width), str(like.device), like.dtype)
    return _disc(int(height), int(width))


@lru_cache(maxsize=256)
def _rotation_grid(angle: float, h: int, w: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    theta = math.radians(angle)
    c, s = math.cos(theta), math.sin(theta)
    # affine_grid maps output coordinates to input coordinates; (x, y) with y pointing down.
    # Rotating the image counter-clockwise on screen samples the input at R(+theta) applied
    # to the output coordinate in that frame.
    mat = torch.tensor([[[c, -s * h / w, 0.0], [s * w / h, c, 0.0]]], dtype=dtype, device=device)
    return F.affine_grid(mat, [1, 1, h, w], align_corners=False)


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate the last two axes of ``x`` by ``angle`` degrees counter-clockwise about the centre.

    Exact (a pixel permutation) for multiples of 90 degrees; bilinear interpolation otherwise
    (one sampling grid, cached, shared by every image and channel).
    """
    angle = angle % 360
    quarter = angle / 90
    if abs(quarter - round(quarter)) < 1e-12:
        return torch.rot90(x, int(round(quarter)) % 4, dims=(-2, -1))
    shape = x.shape
    h, w = shape[-2], shape[-1]
    grid = _rotation_grid(float(angle), int(h), int(w), x.dtype, str(x.device))
    if x.is_cuda:
        # a GPU runs one thread per output pixel of each image and loops over the channels inside it:
        # every map its own image (the grid expanded, not copied), else a few thousand threads do it all
        flat = x.reshape(-1, 1, h, w)
        grid = grid.expand(flat.shape[0], int(h), int(w), 2)
    else:
        flat = x.reshape(1, -1, h, w)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(shape)


def rotate_batch(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each image ``x[n]`` (``(N, C, H, W)``) by its own angle ``angles[n]`` (degrees), bilinear."""
    theta = torch.deg2rad(angles.to(torch.float64)).to(x.dtype)
    c, s = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(c)
    h, w = x.shape[-2], x.shape[-1]
    mat = torch.stack([torch.stack([c, -s * h / w, zero], 1), torch.stack([s * w / h, c, zero], 1)], 1)
    grid = F.affine_grid(mat.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class Group:
    """A finite group of image transformations.

    Subclasses define ``elements`` (a list of :class:`Element`, identity first) and ``_compose``.
    """

    name: str
    elements: list[Element]

    def __init__(self, mask: bool = False) -> None:
        self.mask = bool(mask)

    # ----------------------------------------------------------------- structure
    def __len__(self) -> int:
        return len(self.elements)

    def __repr__(self) -> str:
        extra = ", mask=True" if self.mask else ""
        return f"{type(self).__name__}({self.name!r}{extra})"

    @property
    def order(self) -> int:
        return len(self.elements)

    @property
    def is_exact(self) -> bool:
        """True when every element acts on a square pixel grid as an exact permutation."""
        return all(abs((e.angle / 90) - round(e.angle / 90)) < 1e-12 for e in self.elements)

    def index(self, element: Element) -> int:
        for i, e in enumerate(self.elements):
            if (
                math.isclose((e.angle - element.angle) % 360, 0, abs_tol=1e-9)
                or math.isclose((e.angle - element.angle) % 360, 360, abs_tol=1e-9)
            ) and e.flip == element.flip and e.shift == element.shift:
                return i
        raise ValueError(f"{element} is not an element of {self.name}")

    def compose(self, i: int, j: int) -> int:
        """Index of ``g_i g_j`` (apply ``g_j`` first, then ``g_i``)."""
        return self.index(self._compose(self.elements[i], self.elements[j]))

    def inverse(self, i: int) -> int:
        for j in range(len(self)):
            if self.compose(i, j) == 0:
                return j
        raise RuntimeError(f"element {i} of {self.name} has no inverse")  # pragma: no cover

    def _compose(self, a: Element, b: Element) -> Element:  # pragma: no cover - abstract
        raise NotImplementedError

    def element_index_for_angle(self, angle: float) -> int:
        """Index of the pure rotation by ``angle`` degrees; a clear error when it is not in the group."""
        try:
            return self.index(Element(angle=angle % 360))
        except ValueError:
            angles = sorted({e.angle for e in self.elements if not e.flip and not e.shift})
            raise ValueError(
                f"rotation by {angle} degrees is not in {self.name}; its rotations are {angles}"
            ) from None

    # ----------------------------------------------------------------- action
    def act(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Apply element ``i`` to the last two (spatial) axes of ``x``."""
        if not 0 <= i < len(self):
            raise IndexError(f"{self.name} has {len(self)} elements; got index {i}")
        return self._transform(self._masked(x), i)

    def _masked(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` checked for its spatial axes, with the input mask applied when the group has one."""
        if x.dim() < 2:
            raise ValueError(f"a group acts on tensors of shape (..., H, W); got shape {tuple(x.shape)}")
        return x * disc_mask(x.shape[-2], x.shape[-1], like=x) if self.mask else x

    def _transform(self, out: torch.Tensor, i: int) -> torch.Tensor:
        """Element ``i`` without the input mask: flip, then rotate, then shift."""
        e = self.elements[i]
        if e.flip:
            out = torch.flip(out, dims=(-1,))
        if e.angle % 360:
            out = rotate(out, e.angle)
        if e.shift:
            out = torch.roll(out, shifts=e.shift, dims=-1)
        return out

    def orbit(self, x: torch.Tensor, channels: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """All transformed copies of a batch: shape ``(|G|, *x.shape)``, entry ``i`` equal to ``act(x, i)``.

        ``channels[i]``, when given, is an index into axis -3 (channels) taken from element ``i``'s
        copy, e.g. the permutation of a regular field; it is applied in the same copy. The input
        mask, when the group has one, is applied once."""
        if channels is not None and len(channels) != len(self):
            raise ValueError(f"channels needs one index per element of {self.name} ({len(self)}); got {len(channels)}")
        if type(self).act is not Group.act:  # a subclass with its own action: element by element
            copies = [self.act(x, i) for i in range(len(self))]
            if channels is not None:
                copies = [c.index_select(-3, channels[i].to(c.device)) for i, c in enumerate(copies)]
            return torch.stack(copies)
        base = self._masked(x)
        out = torch.empty((len(self), *x.shape), dtype=x.dtype, device=x.device)
        for i in range(len(self)):
            moved = self._transform(base, i)
            if channels is None:
                out[i].copy_(moved)
            else:
                torch.index_select(moved, -3, channels[i].to(moved.device), out=out[i])
        return out


class CyclicGroup(Group):
    """C_n: rotations by multiples of 360/n degrees."""

    def __init__(self, n: int, mask: bool = False) -> None:
        super().__init__(mask)
        if int(n) != n or n < 1:
            raise ValueError(f"C_n needs a positive integer n; got {n!r}")
        self.n = int(n)
        self.name = f"C{self.n}"
        self.elements = [Element(angle=360.0 * k / self.n) for k in range(self.n)]

    def _compose(self, a: Element, b: Element) -> Element:
        return Element(angle=(a.angle + b.angle) % 360)


class DihedralGroup(Group):
    """D_n (order 2n): rotations by multiples of 360/n and reflections. ``D_1`` is the flip group."""

    def __init__(self, n: int, mask: bool = False) -> None:
        super().__init__(mask)
        if int(n) != n or n < 1:
            raise ValueError(f"D_n needs a positive integer n; got {n!r}")
        self.n = int(n)
        self.name = f"D{self.n}"
        self.elements = [Element(angle=360.0 * k / self.n, flip=f) for f in (False, True) for k in range(self.n)]

    def _compose(self, a: Element, b: Element) -> Element:
        # g = r^k s^f acts as "flip (if f), then rotate by k".  r^a s^fa r^b s^fb = r^(a +- b) s^(fa^fb)
        angle = a.angle - b.angle if a.flip else a.angle + b.angle
        return Element(angle=angle % 360, flip=a.flip != b.flip)


class ReflectionGroup(DihedralGroup):
    """The order-2 group {identity, flip across the vertical axis (left-right mirror)}."""

    def __init__(self, mask: bool = False) -> None:
        super().__init__(1, mask)
        self.name = "flip"


class TranslationGroup(Group):
    """Z_n acting by cyclic horizontal shifts of ``step`` pixels (exact, wraps around).

    On a hidden layer whose width is the input width divided by s, a shift of ``step`` input pixels
    is a shift of ``step / s`` pixels; it is only defined when that is an integer.
    """

    def __init__(self, n: int, step: int = 3, input_width: int | None = None) -> None:
        super().__init__(False)
        if int(n) != n or n < 1:
            raise ValueError(f"T_n needs a positive integer n; got {n!r}")
        self.n, self.step, self.input_width = int(n), int(step), input_width
        self.name = f"T{self.n}"
        self.elements = [Element(shift=self.step * k) for k in range(self.n)]

    def _compose(self, a: Element, b: Element) -> Element:
        return Element(shift=(a.shift + b.shift) % (self.step * self.n) if self.n > 1 else 0)

    def index(self, element: Element) -> int:
        return super().index(Element(shift=element.shift % (self.step * self.n)))

    def act(self, x: torch.Tensor, i: int) -> torch.Tensor:
        if self.input_width is None and (self.n * self.step) % x.shape[-1]:
            raise ValueError(
                f"{self.n} shifts of {self.step} px do not wrap around a width of {x.shape[-1]}: "
                f"{self.name} does not act as a group there (n * step must be a multiple of the width)"
            )
        if self.input_width is not None and x.shape[-1] != self.input_width:
            ratio = self.input_width / x.shape[-1]
            shift = self.elements[i].shift / ratio
            if abs(shift - round(shift)) > 1e-9:
                raise ValueError(
                    f"a shift of {self.elements[i].shift} input pixels is {shift:g} pixels on a layer of "
                    f"width {x.shape[-1]}: translations act only where that is a whole number"
                )
            return torch.roll(x, shifts=int(round(shift)), dims=-1)
        return super().act(x, i)


_NAME = re.compile(r"^(C|D|T)(\d+)$")


def available_groups() -> list[str]:
    return ["C<n> (e.g. C4, C8)", "D<n> (e.g. D4, D8)", "flip", "T<n> (cyclic x-shifts of 3 px)"]


def get_group(name: str | Group, mask: bool = False) -> Group:
    """Build a group from its name: ``C4``, ``C8``, ``D4``, ``D8``, ``flip``, ``T3``, ..."""
    if not isinstance(mask, bool):
        raise TypeError(f"mask must be True or False; got {mask!r}")
    if isinstance(name, Group):
        if mask and not name.mask:  # a Group is returned as it is: it cannot take the mask asked for
            raise ValueError(f"mask=True, but the group given ({name!r}) acts without the input mask; "
                             f"pass its name, or build it with mask=True")
        return name
    if not isinstance(name, str):
        raise TypeError(f"a group is given by name (str) or as a Group; got {type(name).__name__}")
    key = name.strip()
    if key.lower() in {"flip", "reflection", "mirror"}:
        return ReflectionGroup(mask=mask)
    m = _NAME.match(key.upper())
    if m and int(m.group(2)) >= 1:
        kind, n = m.group(1), int(m.group(2))
        if kind == "C":
            return CyclicGroup(n, mask=mask)
        if kind == "D":
            return DihedralGroup(n, mask=mask)
        if mask:  # a disc is not mapped onto itself by a shift
            raise ValueError(f"{key.upper()} shifts images, which the disc of the input mask is not invariant under; use mask=False")
        return TranslationGroup(n)
    raise ValueError(f"unknown group {name!r}; known groups: {', '.join(available_groups())}")
