"""Hidden channel permutations (the question of Kvinge et al.'s Appendix A.4).

Channelwise G-EED assumes that G acts on a feature map by moving each channel spatially and leaving
channel indices alone. A network might instead learn an equivariance in which a rotation also
*permutes* channels, as a steerable CNN does by construction. :func:`match_permutations` looks for
that permutation: for each group element g it compares every channel of f(gx) with every spatially
transformed channel of f(x) on held-out points (mean cosine similarity) and solves the assignment
problem (Hungarian algorithm) for the best one-to-one matching. :func:`matched_action` turns the
matches into a layer action, so that channelwise G-EED can be measured "up to a permutation" on
other points. :func:`permutation_agreement` compares a matching with a known permutation.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from geed.actions import SpatialAction, _as_permutation
from geed.groups import Group
from geed.metrics import _cosine

__all__ = ["similarity_matrix", "match_permutations", "matched_action", "permutation_agreement"]


def similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """``S[i, j]`` = mean over samples of cos(channel i of ``a``, channel j of ``b``); a, b: (N, C, H, W)."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"need two (N, C, H, W) tensors of one shape; got {tuple(a.shape)} and {tuple(b.shape)}")
    A, B = a.flatten(2), b.flatten(2)  # (N, C, HW)
    C = A.shape[1]
    # a pair of channels that are both zero on an input has no cosine (NaN): it is left out of the mean
    # over inputs; a pair dead on every input carries no evidence for a match and scores 0
    S = torch.stack([torch.nanmean(_cosine(A[:, i : i + 1, :].expand(-1, C, -1), B, dim=2), dim=0) for i in range(C)])
    return torch.nan_to_num(S.double(), nan=0.0).cpu().numpy()


def match_permutations(Y: torch.Tensor, group: Group) -> list[np.ndarray]:
    """For orbit outputs ``Y`` (|G|, N, C, H, W) of one layer, the best channel permutation per element:
    ``perm[g][c]`` is the channel of ``g . f(x)`` (spatial action only) matched to channel c of ``f(gx)``."""
    if Y.dim() != 5 or Y.shape[0] != len(group):
        raise ValueError(f"need orbit outputs of shape (|G|, N, C, H, W) with |G| = {len(group)}; got {tuple(Y.shape)}")
    spatial = SpatialAction(group)
    perms = []
    for i in range(len(group)):
        S = similarity_matrix(Y[i], spatial.act(Y[0], i))
        rows, cols = linear_sum_assignment(-S)
        perm = np.empty(S.shape[0], dtype=np.int64)
        perm[rows] = cols
        perms.append(perm)
    return perms


def matched_action(group: Group, perms: list[np.ndarray]) -> SpatialAction:
    """The spatial action followed, for each element, by its matched channel permutation."""
    maps = []
    for p in perms:
        m = np.zeros((len(p), len(p)))
        m[np.arange(len(p)), p] = 1.0
        maps.append(m)
    return SpatialAction(group, channel_maps=maps)


def permutation_agreement(perms: list[np.ndarray], action: SpatialAction) -> float:
    """Fraction of (element, channel) pairs where ``perms`` agrees with the permutations of ``action``."""
    if action.channel_maps is None:
        raise ValueError("the reference action has no channel permutation")
    agree, total = 0, 0
    for p, m in zip(perms, action.channel_maps):
        true = _as_permutation(m)
        if true is None:
            raise ValueError("the reference action's channel maps are not permutations")
        agree += int((p == true).sum())
        total += len(p)
    return agree / total
