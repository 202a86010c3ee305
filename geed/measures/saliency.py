"""Saliency invariance similarity (SI) of Moskalev et al. (2023) and the invariance regulariser.

SI asks whether a model is right *for the same reasons* on every element of an orbit: the saliency
map of ``g x``, brought back to the frame of ``x`` with ``g^-1``, should match the map of ``x``.

``m(x)``: absolute integrated gradients of the target logit (zero baseline, ``steps`` points of the
Riemann midpoint rule), values below 0.9 x the map's maximum set to 0, then a Gaussian filter
(kernel 3, sigma 1). ``SI = mean over x, g of cos( m(x), g^-1 m(g x) )``; 1 for a weight-tied
model on exact groups, higher = more genuinely invariant.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geed.groups import Group, get_group
from geed.metrics import EEDResult, _cosine

__all__ = ["integrated_gradients", "saliency_map", "saliency_invariance", "logit_invariance_penalty"]


def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int = 32) -> torch.Tensor:
    """Integrated gradients of logit ``target[n]`` for each ``x[n]`` from a zero baseline."""
    if steps < 1:
        raise ValueError(f"steps must be positive; got {steps}")
    total = torch.zeros_like(x)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        xa = (alpha * x).detach().requires_grad_(True)
        with torch.enable_grad():
            out = model(xa)
            sel = out.gather(1, target.view(-1, 1)).sum()
            (g,) = torch.autograd.grad(sel, xa)
        total += g
    return x * total / steps


def _gaussian3(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    r = torch.arange(-1, 2, dtype=x.dtype, device=x.device)
    k1 = torch.exp(-(r**2) / (2 * sigma**2))
    k = (k1[:, None] * k1[None, :]) / k1.sum() ** 2
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, 3, 3), padding=1, groups=c)


def saliency_map(model: nn.Module, x: torch.Tensor, target: torch.Tensor, steps: int = 32, keep: float = 0.9) -> torch.Tensor:
    """Thresholded, smoothed absolute integrated gradients (the saliency map of Moskalev et al.)."""
    ig = integrated_gradients(model, x, target, steps).abs()
    peak = ig.flatten(1).amax(1).view(-1, 1, 1, 1)
    ig = torch.where(ig >= keep * peak, ig, torch.zeros_like(ig))
    return _gaussian3(ig)


def saliency_invariance(model: nn.Module, x: torch.Tensor, target: torch.Tensor, group: Group | str, steps: int = 32) -> EEDResult:
    """SI per (sample, element); ``value`` is the mean (a similarity: higher = more genuine)."""
    group = get_group(group)
    model.eval()
    m0 = saliency_map(model, x, target, steps)
    cols = []
    for i in range(len(group)):
        back = group.act(saliency_map(model, group.act(x, i), target, steps), group.inverse(i))
        cols.append(_cosine(m0.flatten(1), back.flatten(1), dim=1))
    per_pair = torch.stack(cols, 1).detach().double().cpu().numpy()
    return EEDResult("SI", per_pair, meta={"group": group.name})


def logit_invariance_penalty(model: nn.Module, x: torch.Tensor, logits: torch.Tensor, group: Group,
                             generator: torch.Generator | None = None) -> torch.Tensor:
    """Training penalty: 1/2 ||f(x) - f(g x)||^2 averaged over the batch, one random non-identity g per sample
    (the LI error of Moskalev et al. as a regulariser)."""
    idx = torch.randint(1, len(group), (x.shape[0],), generator=generator)
    gx = torch.empty_like(x)
    for i in idx.unique().tolist():
        sel = idx == i
        gx[sel] = group.act(x[sel], i)
    return 0.5 * (logits - model(gx)).pow(2).sum(1).mean()
