"""The G-EED metric family (Kvinge et al. 2022, Sec. 3.1) and the invariance errors of Moskalev et al. 2023.

All functions take *orbit outputs*: a tensor ``Y`` of shape ``(|G|, N, ...)`` with
``Y[i, n] = f(g_i x_n)`` (element 0 is the identity), as returned by :func:`geed.orbit_outputs`.
They return an :class:`EEDResult` holding the value of the distance for every (sample, element)
pair, so that per-sample values, intervals and outliers stay visible. Larger always means further
from invariant/equivariant (similarities enter with a minus sign, as in the paper).

General form (eq. 4)::

    E(f, G) = 1/(|D||G|) sum_x sum_g m( f(g x), g . fhat(x) ),   fhat(x) = mean_{k in ker} f(k x)   (eq. 2)

``reference="orbit"`` uses ``fhat`` as above (the paper's choice); ``reference="input"`` compares
with ``g . f(x)`` of the untransformed input instead (the choice of Moskalev et al. and many others).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch

from geed import _fused
from geed.actions import Action, TrivialAction
from geed.groups import Group, get_group
from geed.stats import bootstrap_ci

__all__ = [
    "EEDResult",
    "l2_distance",
    "neg_cosine",
    "channelwise_neg_cosine",
    "kl_divergence",
    "half_squared_l2",
    "orbit_mean",
    "geed",
    "channelwise_eed",
    "latent_eed",
    "softmax_eed",
    "mean_pairwise",
    "prediction_invariance_error",
    "logit_invariance_error",
    "DISTANCES",
]

Reference = Literal["orbit", "input"]


@dataclass
class EEDResult:
    """Per-pair values of one metric; ``per_sample`` and ``value`` include the normaliser.

    A pair whose distance is undefined (NaN: e.g. a cosine between two zero vectors) is left out
    of the means; ``undefined_fraction`` says how many pairs that was."""

    name: str
    per_pair: np.ndarray  # (N, |G|): m(f(g x_n), g . ref(x_n))
    normaliser: float = 1.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # own the values: a view (e.g. of a softmax over every class) would keep its whole buffer alive
        # for as long as the result is kept, which streaming keeps for every block
        if isinstance(self.per_pair, np.ndarray) and self.per_pair.base is not None:
            self.per_pair = self.per_pair.copy()

    @property
    def undefined_fraction(self) -> float:
        return float(np.isnan(self.per_pair).mean()) if self.per_pair.size else 0.0

    @property
    def per_sample(self) -> np.ndarray:
        return _nanmean(self.per_pair, axis=1) / self.normaliser

    @property
    def per_element(self) -> np.ndarray:
        return _nanmean(self.per_pair, axis=0) / self.normaliser

    @property
    def value(self) -> float:
        return float(_nanmean(self.per_sample, axis=0))

    def ci(self, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
        """Bootstrap confidence interval of ``value`` over samples (samples with a defined value)."""
        v = self.per_sample
        v = v[np.isfinite(v)]
        if v.size == 0:
            return float("nan"), float("nan")
        return bootstrap_ci(v, level=level, n_boot=n_boot, seed=seed)

    def __repr__(self) -> str:
        return f"EEDResult({self.name}: {self.value:.6g}, N={self.per_pair.shape[0]}, |G|={self.per_pair.shape[1]})"


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean over ``axis`` leaving out NaN; NaN (without a warning) where every value is NaN."""
    a = np.asarray(a, dtype=np.float64)
    count = np.sum(~np.isnan(a), axis=axis)
    total = np.nansum(a, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ---------------------------------------------------------------------------- distances
# Each distance maps two batches (N, ...) to N values.

def _flat(a: torch.Tensor) -> torch.Tensor:
    return a.reshape(a.shape[0], -1)


def l2_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(_flat(a) - _flat(b), dim=1)


def half_squared_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.5 * (_flat(a) - _flat(b)).pow(2).sum(dim=1)


ZERO_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def _cosine(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Cosine similarity along ``dim``, with a stated convention where it is undefined.

    A vector whose norm is below ``ZERO_TOL[dtype]`` times the largest norm in its sample (e.g. a
    channel switched off by a ReLU, up to rounding) counts as zero. Two zero vectors have no angle:
    the result is NaN, and callers leave such comparisons out (a channel that is dead in both maps
    says nothing about equivariance; scoring it as 1 would reward networks with many dead
    channels). A zero and a non-zero vector score 0 (unrelated), as ``torch.nn.functional.
    cosine_similarity`` does. Without the tolerance, rounding noise in a dead channel would make an
    exactly equivariant layer look partly non-equivariant. (The compiled channelwise pass of
    :mod:`geed._fused` applies the same conventions to its float64 sums.)
    """
    na = torch.linalg.vector_norm(a, dim=dim)
    nb = torch.linalg.vector_norm(b, dim=dim)
    dot = (a * b).sum(dim=dim)
    dtype = a.dtype
    tol = ZERO_TOL.get(dtype, 1e-5)
    scale = torch.maximum(na, nb)
    if scale.dim() > 1:  # per-sample scale over the remaining (channel) axes
        scale = scale.flatten(1).amax(dim=1).view(-1, *([1] * (scale.dim() - 1)))
    floor = (tol * scale).clamp_min(torch.finfo(dtype).tiny)
    za, zb = na <= floor, nb <= floor
    cos = dot / (na * nb).clamp_min(torch.finfo(dtype).tiny)
    cos = torch.where(za | zb, 0.0, cos)  # scalars, not filled tensors: the same values, fewer kernels on a GPU
    return torch.where(za & zb, float("nan"), cos)


def neg_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minus the cosine similarity of the flattened rows (NaN for two zero rows: see ``_cosine``)."""
    return -_cosine(_flat(a), _flat(b), dim=1)


def channelwise_neg_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minus the mean over channels of the cosine similarity of each channel's H x W map (eq. 5).

    Channels that are zero in both maps are left out of the mean (their cosine is undefined); a
    pair in which every channel is zero in both maps gets NaN and is left out by :class:`EEDResult`."""
    return -torch.nanmean(_channel_cosines(a, b), dim=1)


def _channel_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.dim() != 4:
        raise ValueError(f"channelwise G-EED needs (N, C, H, W) feature maps; got shape {tuple(a.shape)}")
    return _cosine(a.flatten(2), b.flatten(2), dim=2)


def kl_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-30) -> torch.Tensor:
    """KL(p || q) for rows of probabilities, with 0 log 0 = 0."""
    p, q = _flat(p), _flat(q)
    terms = torch.where(p > 0, p * (torch.log(p.clamp_min(eps)) - torch.log(q.clamp_min(eps))), 0.0)
    return terms.sum(dim=1)


DISTANCES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l2": l2_distance,
    "cosine": neg_cosine,
    "channelwise_cosine": channelwise_neg_cosine,
    "kl": kl_divergence,
    "half_squared_l2": half_squared_l2,
}


def _distance(m: str | Callable) -> Callable:
    if callable(m):
        return m
    try:
        return DISTANCES[m]
    except KeyError:
        raise ValueError(f"unknown distance {m!r}; known: {sorted(DISTANCES)}") from None


# ---------------------------------------------------------------------------- general G-EED

def _check_action(action: Action) -> None:
    if not isinstance(action, Action):
        raise TypeError(f"an action (geed.actions.Action, e.g. SpatialAction(group)) is needed; got {type(action).__name__}")


def _check_orbit(Y: torch.Tensor, group: Group) -> None:
    if not isinstance(Y, torch.Tensor):
        raise TypeError(f"orbit outputs must be a tensor (|G|, N, ...); got {type(Y).__name__}")
    if Y.dim() < 2 or Y.shape[0] != len(group):
        raise ValueError(
            f"orbit outputs must have shape (|G|, N, ...) with |G| = {len(group)} for {group.name}; got {tuple(Y.shape)}"
        )
    if Y.shape[1] == 0:
        raise ValueError("orbit outputs hold no samples (N = 0): G-EED of an empty data set is undefined")


def orbit_mean(Y: torch.Tensor, action: Action) -> torch.Tensor:
    """``fhat`` of eq. 2: the mean of ``f(k x)`` over the kernel of the output action."""
    ker = action.kernel(Y.shape[1:])
    if len(ker) == 1:  # the mean of one output is that output
        return Y[ker[0]]
    # shifted mean: exact (not merely close) when the outputs over the kernel are identical
    base = Y[ker[0]]
    # the kernel's outputs taken by a slice or a stack of slices, never by an index made on the host:
    # on a GPU that index's copy to the device would wait for all the work queued before it
    kernel = Y[ker[0] : ker[-1] + 1] if ker == list(range(ker[0], ker[-1] + 1)) else torch.stack([Y[k] for k in ker])
    return base + (kernel - base).mean(dim=0)


def _reference(Y: torch.Tensor, action: Action, reference: Reference) -> torch.Tensor:
    """The reference point of each sample: the orbit mean ``fhat`` or the untransformed ``f(x)``."""
    if reference == "orbit":
        return orbit_mean(Y, action)
    if reference == "input":
        return Y[0]
    raise ValueError(f"reference must be 'orbit' or 'input'; got {reference!r}")


def _pairs(Y: torch.Tensor, action: Action, reference: Reference) -> tuple[torch.Tensor, torch.Tensor]:
    """The compared batches ``f(g x)`` and ``g . ref(x)``, flattened to ``(|G| N, ...)`` (element-major)."""
    _check_action(action)
    group = action.group
    _check_orbit(Y, group)
    ref = _reference(Y, action, reference)
    region = action.region(Y[0])
    targets = action.act_all(ref)  # (|G|, N, ...)
    out = Y
    if region is not None:
        out, targets = out * region, targets * region
    return out.reshape(-1, *Y.shape[2:]), targets.reshape(-1, *Y.shape[2:])


def _on_host(values: np.ndarray | torch.Tensor) -> np.ndarray:
    """Per-pair values as a float64 array (copied from the device where they are on one)."""
    if isinstance(values, np.ndarray):
        return values
    return values.detach().double().cpu().numpy()


def _pair_values(Y: torch.Tensor, action: Action, distance: str | Callable, reference: Reference) -> torch.Tensor:
    """``(N, |G|)`` float64 values of ``distance`` between ``f(g x)`` and ``g . ref(x)``, left on ``Y``'s
    device: a streamed evaluation gathers them there and copies them to the host once, at its end."""
    m = _distance(distance)
    out, targets = _pairs(Y, action, reference)
    # one call of the distance over all |G| x N pairs (distances compare row by row)
    return m(out, targets).reshape(len(action.group), -1).t().detach().double()


def geed(
    Y: torch.Tensor,
    action: Action,
    distance: str | Callable = "l2",
    reference: Reference = "orbit",
    name: str | None = None,
) -> EEDResult:
    """G-EED of eq. 4 for orbit outputs ``Y`` (``(|G|, N, ...)``), output action and distance."""
    per_pair = _on_host(_pair_values(Y, action, distance, reference))
    label = name or (distance if isinstance(distance, str) else getattr(distance, "__name__", "m"))
    return EEDResult(label, per_pair, meta={"group": action.group.name, "reference": reference})


def channelwise_eed(Y: torch.Tensor, action: Action, reference: Reference = "orbit") -> EEDResult:
    """Channelwise G-EED (eq. 5) of a feature map under ``action`` (spatial, maybe permuting channels).

    Convention for dead channels (the same for every model): a channel that is zero in both
    compared maps is left out of that pair's mean over channels; ``meta["dead_fraction"]`` is the
    share of (sample, element, channel) comparisons left out, and belongs beside the value: a
    layer with many dead channels is measured on fewer channels.

    For spatial actions with or without channel permutations, the norms and products are taken in
    one compiled pass that forms each target pixel as it is compared: with numba on a CPU
    (:mod:`geed._fused`), with Triton on a CUDA device (:mod:`geed._fused_cuda`). Other actions,
    dtypes and devices use tensor operations. Every path gives the same values to rounding (tested),
    with the same conventions."""
    per_pair, dead, total = _channelwise_values(Y, action, reference)
    return _channelwise_result(per_pair, action.group, reference, dead, total)


# Each metric's result is named and described in one place, whether its values come from one call of
# the public function or block by block from a streamed evaluation (geed.orbit.evaluate).

def _channelwise_result(per_pair: np.ndarray | torch.Tensor, group: Group, reference: Reference, dead: int | torch.Tensor,
                        total: int) -> EEDResult:
    meta = {"group": group.name, "reference": reference, "dead_fraction": int(dead) / max(total, 1)}
    return EEDResult("channelwise", _on_host(per_pair), meta=meta)


def _latent_result(per_pair: np.ndarray | torch.Tensor, group: Group, distance: str, reference: Reference,
                   M: float | None = None) -> EEDResult:
    """Latent G-EED from its per-pair distances: divided by the normaliser ``M`` (see :func:`_normaliser`)
    where one is given, and named ``..._normalised`` then."""
    name = f"latent_{distance}" + ("" if M is None else "_normalised")
    M = 1.0 if M is None else M
    return EEDResult(name, _on_host(per_pair), normaliser=M, meta={"group": group.name, "reference": reference, "M": M})


def _softmax_result(per_pair: np.ndarray | torch.Tensor, group: Group, reference: Reference) -> EEDResult:
    return EEDResult("softmax", _on_host(per_pair), meta={"group": group.name, "reference": reference})


def _di_result(per_pair: np.ndarray | torch.Tensor, group: Group) -> EEDResult:
    return EEDResult("DI", _on_host(per_pair), meta={"group": group.name})


def _li_result(per_pair: np.ndarray | torch.Tensor, group: Group) -> EEDResult:
    return EEDResult("LI", _on_host(per_pair), meta={"group": group.name, "reference": "input"})


def _channelwise_values(Y: torch.Tensor, action: Action, reference: Reference = "orbit"
                        ) -> tuple[np.ndarray | torch.Tensor, int | torch.Tensor, int]:
    """``(per_pair, dead, total)`` of channelwise G-EED: the ``(N, |G|)`` float64 values (an array from
    the CPU's compiled pass, else a tensor left on ``Y``'s device), the number of (element, sample,
    channel) comparisons left out as dead (an int, or a 0-d tensor on the device), and of all of them.
    Nothing here waits for a GPU: a streamed evaluation copies the values to the host once, at its end."""
    _check_action(action)
    group = action.group
    _check_orbit(Y, group)
    if Y.dim() != 5:
        raise ValueError(f"channelwise G-EED needs (N, C, H, W) feature maps; got shape {tuple(Y.shape[1:])}")
    ref = _reference(Y, action, reference)
    n_el, n = Y.shape[0], Y.shape[1]
    total = n_el * n * Y.shape[2]
    if _fused.supports(action, Y):
        # one compiled pass: each target pixel is formed from ref as it is compared (see geed._fused)
        return (*_fused.channelwise(Y, ref, action), total)
    from geed import _fused_cuda  # imports Triton where it is installed: only when the CPU's pass is not taken

    if _fused_cuda.supports(action, Y):
        done = _fused_cuda.channelwise(Y, ref, action)  # None where the kernel cannot be built here
        if done is not None:
            return (*done, total)
    region = action.region(Y[0])
    # every element at once: per-pair values and conventions are per (sample, element) row, so they
    # are those of one element at a time; the stacked targets are the size of Y (a streamed block)
    out, targets = Y, action.act_all(ref)
    if region is not None:
        out, targets = out * region, targets.mul_(region)  # act_all's targets are new: masked in place
    cos = _channel_cosines(out.reshape(n_el * n, *Y.shape[2:]), targets.reshape(n_el * n, *Y.shape[2:]))
    nan = torch.isnan(cos)  # (|G| N, C): NaN where both maps are zero
    per_pair = (-torch.nanmean(cos, dim=1)).reshape(n_el, n).t().detach().double()
    return per_pair, nan.sum(), total


PAIR_BLOCK = 256  # rows of a tile of pairs in mean_pairwise


def mean_pairwise(Z: torch.Tensor, distance: Literal["l2", "cosine"], block: int = PAIR_BLOCK) -> float:
    """Mean l2 distance (or mean cosine *similarity*) between distinct points of ``Z`` (n, k): the M of eq. 6.

    Computed in float64. The mean l2 distance takes ``block`` x ``block`` tiles of pairs, so that memory
    beyond a float64 copy of ``Z`` does not grow with n (its time grows as n^2); the mean cosine
    similarity is formed from the sum of the unit vectors, ``block`` rows at a time, in time linear in n."""
    n, total = _pairwise_total(Z, distance, block)
    return float(total) / (n * (n - 1))


def _pairwise_total(Z: torch.Tensor, distance: Literal["l2", "cosine"], block: int = PAIR_BLOCK) -> tuple[int, torch.Tensor]:
    """``(n, total)``: the number of points and the sum of :func:`mean_pairwise`'s distances (or
    similarities) over ordered pairs of distinct points, a 0-d float64 tensor left on ``Z``'s device."""
    Z = _flat(Z)
    n = Z.shape[0]
    if n < 2:
        raise ValueError(f"the normaliser M needs at least 2 reference points; got {n}")
    if distance not in ("l2", "cosine"):
        raise ValueError(f"latent distance must be 'l2' or 'cosine'; got {distance!r}")

    def rows(s: int) -> torch.Tensor:
        z = Z[s : s + block].double()
        return z / torch.linalg.vector_norm(z, dim=1, keepdim=True).clamp_min(1e-30) if distance == "cosine" else z

    if distance == "cosine":
        # the similarities of all ordered pairs sum to |sum of the unit vectors|^2, less each vector's
        # similarity with itself: time linear in n, where the pairs' tiles take time growing as n^2
        # (in float64; tested against the pairs one by one)
        s = torch.zeros(Z.shape[1], dtype=torch.float64, device=Z.device)
        sq = torch.zeros((), dtype=torch.float64, device=Z.device)
        for i in range(0, n, block):
            z = rows(i)
            s = s + z.sum(dim=0)
            sq = sq + (z * z).sum()
        return n, s @ s - sq
    blocks = [rows(i) for i in range(0, n, block)]  # each block of rows prepared once (a float64 copy of Z)
    # the tiles' sums are added on Z's device and read once: on a GPU a read per tile would wait for the device each time
    total = torch.zeros((), dtype=torch.float64, device=Z.device)
    for i, a in enumerate(blocks):
        for j, b in enumerate(blocks):
            d = torch.cdist(a, b)
            total = total + (d.sum() - d.diagonal().sum() if j == i else d.sum())  # the pairs of distinct points only
    return n, total


def latent_eed(
    Z: torch.Tensor,
    group: Group | str,
    distance: Literal["l2", "cosine"] = "l2",
    normalise: bool = True,
    reference_points: torch.Tensor | None = None,
    reference: Reference = "orbit",
) -> EEDResult:
    """Latent-space G-EED (eq. 6): trivial action on the latent vectors.

    With ``normalise=True`` the mean distance is divided by M, the mean l2 distance (``l2``) or
    mean cosine similarity (``cosine``) between distinct points of ``reference_points`` (latent
    vectors of a reference set; the identity slice of ``Z`` when None). A non-positive M for
    cosine would flip the order of the metric and is refused.
    """
    group = get_group(group)
    if distance not in ("l2", "cosine"):
        raise ValueError(f"latent distance must be 'l2' or 'cosine'; got {distance!r}")
    if not isinstance(normalise, (bool, np.bool_)):
        raise TypeError(f"normalise must be True or False; got {normalise!r}")
    _check_orbit(Z, group)
    if reference_points is not None:
        if not normalise:
            raise ValueError("reference_points give the normaliser M, which normalise=False does not use")
        if not isinstance(reference_points, torch.Tensor) or tuple(reference_points.shape[1:]) != tuple(Z.shape[2:]):
            raise ValueError(f"reference_points must be latent vectors of the same shape as Z's, (n, "
                             f"{', '.join(map(str, Z.shape[2:]))}); got "
                             f"{tuple(reference_points.shape) if isinstance(reference_points, torch.Tensor) else type(reference_points).__name__}")
    per_pair = _pair_values(Z, TrivialAction(group), distance, reference)
    M = _normaliser(Z[0] if reference_points is None else reference_points, distance) if normalise else None
    return _latent_result(per_pair, group, distance, reference, M)


def _normaliser(points: torch.Tensor, distance: Literal["l2", "cosine"], block: int = PAIR_BLOCK,
                layer: str | None = None) -> float:
    """M of eq. 6 over ``points``: their mean l2 distance (``l2``) or mean cosine similarity (``cosine``),
    by :func:`mean_pairwise` over tiles of ``block`` rows. A non-positive M would flip
    the order of the metric (or divide by zero): it is refused, or, for a ``layer`` of an evaluation
    (which keeps its other results), NaN with a warning; ``per_pair`` then holds the unnormalised values."""
    return _checked_normaliser(mean_pairwise(points, distance, block=block), distance, layer, stacklevel=4)


def _checked_normaliser(M: float, distance: Literal["l2", "cosine"], layer: str | None = None, stacklevel: int = 3) -> float:
    """``M`` as :func:`_normaliser` gives it: refused, or NaN with a warning for a ``layer``, where it is
    not positive (the warning names the line ``stacklevel`` frames up: the evaluation's)."""
    if M <= 0:
        what = "distance" if distance == "l2" else "cosine similarity"
        if layer is None:
            raise ValueError(f"the normaliser M (mean {what} between reference points) is {M:.3g} <= 0: "
                             "the normalised metric is undefined; use normalise=False")
        warnings.warn(f"latent {distance} G-EED of {layer!r} cannot be normalised: M, the mean {what} between reference points, "
                      f"is {M:.3g} <= 0; its normalised values are NaN (per_pair keeps the unnormalised ones)", RuntimeWarning, stacklevel=stacklevel)
        return float("nan")
    return M


def _probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)


def softmax_eed(logits: torch.Tensor, group: Group | str, reference: Reference = "orbit") -> EEDResult:
    """Softmax G-EED: KL( p(g x) || phat(x) ), phat the mean prediction over the orbit."""
    group = get_group(group)
    _check_orbit(logits, group)
    return _softmax_result(_pair_values(_probs(logits), TrivialAction(group), kl_divergence, reference), group, reference)


def prediction_invariance_error(logits: torch.Tensor, group: Group | str) -> EEDResult:
    """DI of Moskalev et al.: KL( p(x) || p(g x) ), averaged over samples and all elements (identity included)."""
    group = get_group(group)
    _check_orbit(logits, group)
    return _di_result(_di_values(logits), group)


def _di_values(logits: torch.Tensor) -> torch.Tensor:
    """``(N, |G|)`` float64 values of DI, left on the logits' device."""
    P = _probs(logits)
    G, N = P.shape[:2]
    first = P[0].unsqueeze(0).expand_as(P)  # p(x) beside every p(g x): one call for every element
    return kl_divergence(first.reshape(G * N, -1), P.reshape(G * N, -1)).reshape(G, N).t().detach().double()


def logit_invariance_error(logits: torch.Tensor, group: Group | str) -> EEDResult:
    """LI of Moskalev et al.: 1/2 ||f(x) - f(g x)||^2, averaged over samples and all elements."""
    group = get_group(group)
    _check_orbit(logits, group)
    return _li_result(_li_values(logits, group), group)


def _li_values(logits: torch.Tensor, group: Group) -> torch.Tensor:
    """``(N, |G|)`` float64 values of LI, left on the logits' device."""
    return _pair_values(logits, TrivialAction(group), half_squared_l2, "input")
