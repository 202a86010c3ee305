"""The channelwise cosine sums in one pass over the feature maps on a CUDA device (Triton).

The GPU counterpart of :mod:`geed._fused`, with the same tables: every element's action on a feature
map of a given size is a sparse linear map of its pixels (at most four input pixels per output
pixel, the group's input mask and the comparison region folded into the weights) and a
permutation of its channels. One kernel launch per feature map then gives each (element, sample)
pair a program that reads ``f(g x)`` once, forms each target pixel from ``fhat(x)`` as it goes,
accumulates ``|a|^2``, ``|b|^2`` and ``a . b`` of every channel in float64, applies the cosine
conventions of :func:`geed.metrics._cosine` to those sums (dead channels, the zero tolerance, NaN)
and writes the pair's mean over channels. Written with tensor operations, the same metric takes
about a dozen passes over tensors the size of the orbit's feature maps, and a kernel launch each.

Used for the actions :mod:`geed._fused` takes, on CUDA tensors of float32 or float64, where Triton
is installed; anything else takes the tensor path, which gives the same values to rounding (tested,
on a GPU and, through Triton's interpreter, on a CPU).
"""
from __future__ import annotations

import contextlib
import os
import warnings
import weakref
from typing import Any

import numpy as np
import torch

from geed import _fused

try:  # an optional accelerator: without it the tensor path gives the same values
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = None

__all__ = ["available", "channelwise", "supports"]

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's interpreter: the kernel runs on CPU tensors (tests)
_BROKEN: list[str] = []  # why the kernel could not be built here, once it failed: the tensor path from then on
_DEVICE_TABLES: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def available() -> bool:
    return _fused.enabled and triton is not None and not _BROKEN


def supports(action, Y: torch.Tensor) -> bool:
    """Whether the kernel computes channelwise G-EED of ``action`` on orbit outputs ``Y``."""
    return (available() and (Y.is_cuda or INTERPRETED) and Y.dtype in (torch.float32, torch.float64)
            and Y.dim() == 5 and not Y.requires_grad and _fused._target_of(action) is not None)


if triton is not None:

    @triton.jit
    def _kernel(Y, REF, IDX, WTS, NK, PERM, ELEM, REGION, SUMS, PER_PAIR, DEAD, N, G, C, S, tol, tiny, nan,
                BC: tl.constexpr, BS: tl.constexpr, K: tl.constexpr):  # pragma: no cover - compiled
        """One program per (sample n, element g), a sample's elements side by side (they read the same
        reference maps, which then come from the cache): Y is (G, N, C, S), REF (N, C, S), the tables
        IDX/WTS (elements, S, K), SUMS (N G, 3, C) scratch; writes PER_PAIR[n, g] and DEAD[n G + g]."""
        pid = tl.program_id(0)
        n = pid // G
        g = pid % G
        e = tl.load(ELEM + g)
        ke = tl.load(NK + e)
        cs = tl.arange(0, BC)
        ss = tl.arange(0, BS)
        scale = tl.zeros([BC], dtype=tl.float64)
        nans = tl.zeros([BC], dtype=tl.int32)
        for c0 in range(0, C, BC):
            c = c0 + cs
            cm = c < C
            pc = tl.load(PERM + g * C + c, mask=cm, other=0)  # the reference channel compared with channel c of f(g x)
            y_row = ((g.to(tl.int64) * N + n) * C + c) * S
            r_row = (n.to(tl.int64) * C + pc) * S
            sa = tl.zeros([BC], dtype=tl.float64)
            sb = tl.zeros([BC], dtype=tl.float64)
            sd = tl.zeros([BC], dtype=tl.float64)
            for s0 in range(0, S, BS):
                s = s0 + ss
                sm = s < S
                m2 = cm[:, None] & sm[None, :]
                a = tl.load(Y + y_row[:, None] + s[None, :], mask=m2, other=0.0).to(tl.float64)
                r = tl.load(REGION + s, mask=sm, other=0.0)
                tab = (e * S + s) * K
                t = tl.zeros([BC, BS], dtype=REF.dtype.element_ty)
                for k in range(0, ke):
                    src = tl.load(IDX + tab + k, mask=sm, other=0)
                    w = tl.load(WTS + tab + k, mask=sm, other=0.0)
                    t += w[None, :] * tl.load(REF + r_row[:, None] + src[None, :], mask=m2, other=0.0)
                b = t.to(tl.float64)
                sa += tl.sum(a * a * r[None, :], axis=1)
                sb += tl.sum(b * b, axis=1)
                sd += tl.sum(a * b, axis=1)
            na = tl.sqrt(sa)
            nb = tl.sqrt(sb)
            out = SUMS + pid.to(tl.int64) * 3 * C + c
            tl.store(out, na, mask=cm)
            tl.store(out + C, nb, mask=cm)
            tl.store(out + 2 * C, sd, mask=cm)
            nans += ((na != na) | (nb != nb)).to(tl.int32)
            scale = tl.maximum(scale, tl.where(cm, tl.maximum(na, nb), 0.0))
        # a NaN among the sample's norms switches the zero tolerance off, as in geed.metrics._cosine
        tolerant = tl.sum(nans, axis=0) == 0
        floor = tl.maximum(tol * tl.max(scale, axis=0), tiny)
        total = tl.zeros([BC], dtype=tl.float64)
        count = tl.zeros([BC], dtype=tl.int32)
        for c0 in range(0, C, BC):
            c = c0 + cs
            cm = c < C
            src = SUMS + pid.to(tl.int64) * 3 * C + c
            na = tl.load(src, mask=cm, other=1.0)
            nb = tl.load(src + C, mask=cm, other=1.0)
            sd = tl.load(src + 2 * C, mask=cm, other=0.0)
            za = (na <= floor) & tolerant
            zb = (nb <= floor) & tolerant
            prod = na * nb
            prod = tl.where(prod < tiny, tiny, prod)
            cos = tl.where(za | zb, 0.0, sd / prod)
            defined = cm & ~(za & zb) & (cos == cos)
            total += tl.where(defined, cos, 0.0)
            count += defined.to(tl.int32)
        total_all = tl.sum(total, axis=0)
        count_all = tl.sum(count, axis=0)
        value = tl.where(count_all > 0, -total_all / tl.maximum(count_all, 1).to(tl.float64), nan)
        tl.store(PER_PAIR + n.to(tl.int64) * G + g, value)
        tl.store(DEAD + pid, C - count_all)


def _tables(action, C: int, H: int, W: int, device: torch.device, dtype: torch.dtype) -> dict:
    """:func:`geed._fused._plan`'s tables on ``device``, copied there once per action, shape and dtype."""
    per_action = _DEVICE_TABLES.setdefault(action, {})
    key = (C, H, W, str(device), dtype)
    if key not in per_action:
        plan = _fused._plan(action, C, H, W)
        to = lambda a, t: torch.as_tensor(np.ascontiguousarray(a)).to(device=device, dtype=t)  # noqa: E731
        per_action[key] = {"idx": to(plan["idx"], torch.int32), "wts": to(plan["wts"], dtype), "nk": to(plan["nk"], torch.int32),
                           "perm": to(plan["perm"], torch.int32), "elements": to(plan["elements"], torch.int32),
                           "region": to(plan["region"], torch.float64), "K": int(plan["idx"].shape[2])}
    return per_action[key]


def _blocks(C: int, S: int) -> tuple[int, int, int]:
    """Channels and pixels per tile, and warps per program: whole rows of small maps, 256-pixel
    stretches of large ones, about 2,048 values in all; two warps where a tile row holds 64 pixels or
    more, four on smaller maps. Chosen from per-call timings on an H200 over tiles of 1,024 to 4,096
    values and 2 to 8 warps (``benchmarks/gpu-h200-kernel-tiles.json``): two warps took 0.78-0.90x the
    time of four at 7 x 7 to 56 x 56, and 1.34x at 5 x 5."""
    bs = min(triton.next_power_of_2(S), 256)
    bc = max(1, min(triton.next_power_of_2(C), 2048 // bs))
    return bc, bs, 2 if bs >= 64 else 4


def channelwise(Y: torch.Tensor, ref: torch.Tensor, action) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(per_pair, dead)``: channelwise G-EED per (sample, element) as an ``(N, |G|)`` float64 tensor
    on ``Y``'s device, and the number of (element, sample, channel) comparisons left out as dead as a
    0-d tensor there; nothing waits for the device. ``Y`` is ``(|G|, N, C, H, W)``, ``ref``
    ``(N, C, H, W)``. The same values and conventions as the tensor path of
    :func:`geed.metrics.channelwise_eed`. None (after one warning) where the kernel cannot be built
    on this installation: the caller then takes the tensor path."""
    from geed.metrics import ZERO_TOL

    G, N, C, H, W = Y.shape
    _fused._target_of(action)[0]._check(ref)  # the action's own check of the layer's shape (e.g. its number of channels)
    tables = _tables(action, C, H, W, Y.device, Y.dtype)
    Yc = Y.detach().contiguous()
    refc = ref.detach().to(Y.dtype).contiguous()
    sums = torch.empty((G * N, 3, C), dtype=torch.float64, device=Y.device)
    per_pair = torch.empty((N, G), dtype=torch.float64, device=Y.device)
    dead = torch.empty(G * N, dtype=torch.int32, device=Y.device)
    bc, bs, warps = _blocks(C, H * W)
    try:
        with torch.cuda.device(Y.device) if Y.is_cuda else contextlib.nullcontext():  # Triton launches on the current device
            _kernel[(G * N,)](Yc, refc, tables["idx"], tables["wts"], tables["nk"], tables["perm"], tables["elements"],
                              tables["region"], sums, per_pair, dead, N, G, C, H * W, ZERO_TOL[Y.dtype],
                              float(torch.finfo(Y.dtype).tiny), float("nan"), BC=bc, BS=bs, K=tables["K"], num_warps=warps)
    except Exception as err:  # noqa: BLE001 - a compiler or driver that cannot build the kernel: the tensor path instead
        _BROKEN.append(f"{type(err).__name__}: {err}")
        warnings.warn(f"geed: the Triton channelwise kernel could not be built here ({_BROKEN[-1][:300]}); "
                      "the channelwise metric takes the tensor path, with the same values", RuntimeWarning, stacklevel=3)
        return None
    return per_pair, dead.sum()
