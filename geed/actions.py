"""How a group acts on the output of a layer.

An :class:`Action` is data about a layer (in the spirit of e2cnn's ``FieldType``): it transforms a
batch of that layer's outputs by a group element and says which elements act as the identity
(the kernel of the action, over which eq. 2 of Kvinge et al. averages).

* :class:`TrivialAction` -- vectors (latent space, logits, probabilities): every element acts as
  the identity, so the kernel is the whole group.
* :class:`SpatialAction` -- feature maps ``(N, C, H, W)``: the group's spatial action at the
  layer's own resolution, optionally followed by a linear map of the channels for each element
  (a permutation for the regular fields of a steerable CNN, read with :func:`field_type_action`).
* :class:`InducedAction` -- a group acting through a homomorphism onto another group's action,
  e.g. C8 acting on the output through C4 (its kernel is then {0, 180} degrees).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from geed.groups import Element, Group, get_group

__all__ = ["Action", "TrivialAction", "SpatialAction", "InducedAction", "field_type_action"]


class Action:
    """Base class: the action of ``group`` on one layer's outputs (batch axis first)."""

    def __init__(self, group: Group | str) -> None:
        self.group = get_group(group)  # a Group, or its name

    def act(self, y: torch.Tensor, i: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def act_all(self, y: torch.Tensor) -> torch.Tensor:
        """Every element's action on ``y`` at once: ``(|G|, *y.shape)``, entry ``i`` equal to ``act(y, i)``;
        a new tensor (never a view of ``y``), which the caller may change in place."""
        return torch.stack([self.act(y, i) for i in range(len(self.group))])

    def kernel(self, shape: Sequence[int] | None = None) -> list[int]:
        """Indices of the elements acting as the identity on outputs of this ``shape`` (batch first)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def region(self, y: torch.Tensor) -> torch.Tensor | None:
        """A spatial 0/1 mask to compare within, or None to compare everywhere."""
        return None


class TrivialAction(Action):
    """Every element acts as the identity (invariance)."""

    def act(self, y: torch.Tensor, i: int) -> torch.Tensor:
        return y

    def act_all(self, y: torch.Tensor) -> torch.Tensor:
        return y.unsqueeze(0).expand(len(self.group), *y.shape).clone()

    def kernel(self, shape: Sequence[int] | None = None) -> list[int]:
        return list(range(len(self.group)))

    def __repr__(self) -> str:
        return f"TrivialAction({self.group.name})"


class SpatialAction(Action):
    """The group's spatial action on ``(N, C, H, W)``, then an optional per-element channel map.

    ``channel_maps[i]`` is a ``(C, C)`` matrix ``R`` with ``out[:, c] = sum_d R[c, d] in[:, d]``.
    Permutation matrices are detected and applied as an index (no matrix product).
    """

    def __init__(self, group: Group | str, channel_maps: Sequence[np.ndarray] | None = None) -> None:
        super().__init__(group)
        group = self.group
        self.channel_maps = None
        self._perms: list[torch.Tensor | None] = []
        self._mats: list[torch.Tensor | None] = []
        self._perms_by_device: dict[str, list[torch.Tensor | None]] = {}
        if channel_maps is not None:
            if len(channel_maps) != len(group):
                raise ValueError(
                    f"channel_maps needs one matrix per element of {group.name} ({len(group)}); got {len(channel_maps)}"
                )
            self.channel_maps = [np.asarray(m, dtype=np.float64) for m in channel_maps]
            for m in self.channel_maps:
                if m.ndim != 2 or m.shape[0] != m.shape[1]:
                    raise ValueError(f"a channel map must be a square matrix; got shape {m.shape}")
                perm = _as_permutation(m)
                self._perms.append(None if perm is None else torch.as_tensor(perm))
                self._mats.append(None if perm is not None else torch.as_tensor(m))
            self._trivial = [bool(np.allclose(m, np.eye(m.shape[0]))) for m in self.channel_maps]  # checked once

    @property
    def n_channels(self) -> int | None:
        return None if self.channel_maps is None else self.channel_maps[0].shape[0]

    def _check(self, y: torch.Tensor) -> None:
        if y.dim() != 4:
            raise ValueError(f"SpatialAction acts on (N, C, H, W) feature maps; got shape {tuple(y.shape)}")
        if self.channel_maps is not None and y.shape[1] != self.n_channels:
            raise ValueError(f"this action permutes {self.n_channels} channels but the layer has {y.shape[1]}")

    def _perms_on(self, device: torch.device) -> list[torch.Tensor | None]:
        """The channel permutations on ``device``, copied there once (not once per block)."""
        key = str(device)
        if key not in self._perms_by_device:
            self._perms_by_device[key] = [None if p is None else p.to(device) for p in self._perms]
        return self._perms_by_device[key]

    def _map_channels(self, out: torch.Tensor, i: int) -> torch.Tensor:
        if self.channel_maps is None:
            return out
        perm = self._perms_on(out.device)[i]
        if perm is not None:
            return out.index_select(1, perm)
        mat = self._mats[i].to(device=out.device, dtype=out.dtype)  # type: ignore[union-attr]
        return torch.einsum("cd,ndhw->nchw", mat, out)

    def act(self, y: torch.Tensor, i: int) -> torch.Tensor:
        self._check(y)
        return self._map_channels(self.group.act(y, i), i)

    def act_all(self, y: torch.Tensor) -> torch.Tensor:
        """The spatial orbit in one pass (:meth:`Group.orbit`), then each element's channel map."""
        self._check(y)
        if self.channel_maps is None:
            return self.group.orbit(y)
        if all(p is not None for p in self._perms):  # permutations: taken in the same copy as the spatial action
            return self.group.orbit(y, channels=self._perms_on(y.device))  # type: ignore[arg-type]
        out = self.group.orbit(y)
        return torch.stack([self._map_channels(out[i], i) for i in range(len(self.group))])

    def _channels_trivial(self, i: int) -> bool:
        if self.channel_maps is None:
            return True
        return self._trivial[i]

    def kernel(self, shape: Sequence[int] | None = None) -> list[int]:
        spatial_trivial_everywhere = shape is not None and int(shape[-1]) == 1 and int(shape[-2]) == 1
        out = []
        for i, e in enumerate(self.group.elements):
            spatial_trivial = e.is_identity or (spatial_trivial_everywhere and not e.shift)
            if spatial_trivial and self._channels_trivial(i):
                out.append(i)
        return out

    def region(self, y: torch.Tensor) -> torch.Tensor | None:
        if not self.group.mask:
            return None
        from geed.groups import disc_mask

        return disc_mask(y.shape[-2], y.shape[-1], like=y)

    def __repr__(self) -> str:
        chan = "" if self.channel_maps is None else f", {self.n_channels} channels mapped"
        return f"SpatialAction({self.group.name}{chan})"


class InducedAction(Action):
    """``group`` acts through a homomorphism ``hom`` (element index -> index in ``target.group``)."""

    def __init__(self, group: Group | str, target: Action, hom: Sequence[int]) -> None:
        super().__init__(group)
        group = self.group
        if len(hom) != len(group):
            raise ValueError(f"hom needs one image per element of {group.name}; got {len(hom)}")
        for i in range(len(group)):
            for j in range(len(group)):
                if hom[group.compose(i, j)] != target.group.compose(hom[i], hom[j]):
                    raise ValueError("hom is not a group homomorphism")
        self.target, self.hom = target, list(hom)

    @classmethod
    def by_angle(cls, group: Group, target: Action) -> "InducedAction":
        """The natural map sending each rotation/flip to the element of ``target.group`` that shares it,
        with rotations taken modulo the target's rotation step (e.g. C8 -> C4: 45 -> 90 degrees, k -> k mod 4)."""
        tg = target.group
        step_src = 360.0 / max(1, sum(1 for e in group.elements if not e.flip))
        step_tgt = 360.0 / max(1, sum(1 for e in tg.elements if not e.flip))
        hom = []
        for e in group.elements:
            k = round(e.angle / step_src)
            hom.append(tg.index(Element(angle=(k * step_tgt) % 360, flip=e.flip)))
        return cls(group, target, hom)

    def act(self, y: torch.Tensor, i: int) -> torch.Tensor:
        return self.target.act(y, self.hom[i])

    def act_all(self, y: torch.Tensor) -> torch.Tensor:
        return self.target.act_all(y)[self.hom]

    def kernel(self, shape: Sequence[int] | None = None) -> list[int]:
        inner = set(self.target.kernel(shape))
        return [i for i in range(len(self.group)) if self.hom[i] in inner]

    def region(self, y: torch.Tensor) -> torch.Tensor | None:
        return self.target.region(y)


def _as_permutation(m: np.ndarray) -> np.ndarray | None:
    """If ``m`` is a permutation matrix, the index ``p`` with ``(m @ v)[c] = v[p[c]]``; else None."""
    rounded = np.round(m)
    if not np.allclose(m, rounded, atol=1e-6):
        return None
    if not (np.all((rounded == 0) | (rounded == 1)) and np.all(rounded.sum(0) == 1) and np.all(rounded.sum(1) == 1)):
        return None
    return rounded.argmax(axis=1)


def field_type_action(group: Group, field_type) -> SpatialAction:
    """The action of ``group`` on an e2cnn feature map of type ``field_type``.

    For each element of ``group`` the e2cnn group element with the same rotation (and flip) is
    looked up and its representation matrix on ``field_type`` (block diagonal over fields; a
    permutation for regular fields) is used as the channel map. A rotation the model's group does
    not contain is a clear error.
    """
    group = get_group(group)
    if not (hasattr(field_type, "gspace") and hasattr(field_type, "representation")):
        raise TypeError(f"field_type must be an e2cnn FieldType (e.g. a layer's out_type); got {type(field_type).__name__}")
    gspace = field_type.gspace
    fib = gspace.fibergroup
    n_rot = int(getattr(fib, "rotation_order", getattr(fib, "order", lambda: 1)()))
    dihedral = "flip" in type(fib).__name__.lower() or "dihedral" in type(fib).__name__.lower()
    maps = []
    for e in group.elements:
        k = e.angle / (360.0 / n_rot) if n_rot > 0 else 0.0
        if abs(k - round(k)) > 1e-9:
            raise ValueError(
                f"{group.name} contains a rotation by {e.angle:g} degrees, which the model's group "
                f"({fib.name}) does not: its hidden action is undefined"
            )
        if e.shift:
            raise ValueError("translations have no e2cnn field action here")
        k = int(round(k)) % n_rot
        if dihedral:
            g = (int(e.flip), k)
        elif e.flip:
            raise ValueError(f"{group.name} contains a flip but the model's group ({fib.name}) has none")
        else:
            g = k
        maps.append(np.asarray(field_type.representation(g), dtype=np.float64))
    return SpatialAction(group, channel_maps=maps)
