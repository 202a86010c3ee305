"""Equivariance checks for tests, after e3nn's ``equivariance_error`` / ``assert_equivariant``.

:func:`equivariance_error` measures: for each named layer, how far the model is from exact
equivariance there (``1 + channelwise G-EED`` for feature maps, latent G-EED in l2 for invariant
layers; 0 means exact). :func:`assert_equivariant` compares those numbers with a tolerance that
depends on the precision the model was measured in (:data:`TOLERANCE`), and fails with every layer
that is off, not just the first.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from geed.actions import Action
from geed.groups import Group, get_group

__all__ = ["TOLERANCE", "equivariance_error", "assert_equivariant"]

# What counts as exact: round-off of a deep network's forward pass in each precision.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def equivariance_error(model: nn.Module, x: torch.Tensor, group: Group | str, layers: Mapping[str, Action | None] | None = None,
                       invariant: Sequence[str] = (), dtype: torch.dtype | None = None) -> dict[str, float]:
    """Deviation from exact equivariance per layer: ``1 + channelwise G-EED`` for each feature-map
    layer of ``layers`` (its action, or the plain spatial one), latent G-EED (l2, unnormalised) for
    each layer of ``invariant``. 0 means exact."""
    from geed.orbit import evaluate

    group = get_group(group)
    rep = evaluate(model, x, group, channelwise=dict(layers or {}), latent=list(invariant) or None, logits=False, dtype=dtype)
    out = {name: 1.0 + rep[("channelwise", name)].value for name in (layers or {})}
    for name in invariant:
        r = rep[("latent_l2", name)]
        out[name] = r.value * r.normaliser  # unnormalised: an absolute distance
    return out


def assert_equivariant(model: nn.Module, x: torch.Tensor, group: Group | str, layers: Mapping[str, Action | None] | None = None,
                       invariant: Sequence[str] = (), dtype: torch.dtype | None = None, atol: float | None = None) -> dict[str, float]:
    """Fail unless every layer is exactly equivariant (or invariant) up to ``atol`` (by default the
    round-off of the precision measured in, :data:`TOLERANCE`); returns the errors."""
    errors = equivariance_error(model, x, group, layers, invariant, dtype)
    if dtype is None:
        first = next(iter(model.parameters()), None)
        dtype = first.dtype if first is not None else torch.float32
    tol = TOLERANCE.get(dtype, 1e-5) if atol is None else atol
    off = {name: e for name, e in errors.items() if not abs(e) <= tol}
    if off:
        name = get_group(group).name
        raise AssertionError(f"not {name}-equivariant to {tol:g} ({dtype}): " + ", ".join(f"{k}: {v:.3g}" for k, v in off.items()))
    return errors
