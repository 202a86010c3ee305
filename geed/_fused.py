"""The channelwise cosine sums in one pass over the feature maps (CPU, compiled with numba).

Channelwise G-EED compares each channel of ``f(g x)`` with the same channel of ``g . fhat(x)``.
Written with tensor operations, that builds the transformed targets for every element, masks both
sides and reads them again for two norms and a product: several passes over tensors the size of
the orbit's feature maps, which on a CPU cost about a quarter of the forward pass that made them.

Here every element's action on a feature map of a given size is written once as a sparse linear
map of its pixels (at most four input pixels per output pixel: bilinear interpolation, exact
permutations for quarter turns and flips; the group's input mask and the comparison region folded
into the weights; read off the group's own action on probe images and checked against it) and a
permutation of its channels. One compiled loop then reads each value of
``f(g x)`` once, forms the target pixel from ``fhat(x)`` as it goes, and accumulates the three
sums ``|a|^2``, ``|b|^2`` and ``a . b`` of every (element, sample, channel) in float64 (the
identity and one-pixel maps read the reference's rows directly; interpolated rotations build their
targets where the reads are contiguous and turn them, and one that is a one-pixel map after another,
as 135 degrees is a quarter turn after 45, reads the other's turned targets through an index row:
see ``_kinds`` and ``_channelwise_pass``). It takes the (sample, channel) rows a block at a time,
every element over one block before the next, so that what it builds from a block stays in the
processor's cache. The
cosine conventions (dead channels, the zero tolerance) are then applied to those sums as the
tensor path applies them, and the mean over channels taken, in the same compiled call; the tests
hold the two paths equal.

Used for actions whose elements are spatial maps of a standard group, optionally with channel
permutations (regular fields), on CPU tensors of float32 or float64; on a CUDA device the same
tables drive a Triton kernel (:mod:`geed._fused_cuda`); anything else (and any machine without
numba) takes the tensor path.
"""
from __future__ import annotations

import threading
import types
import weakref
from typing import Any

import numpy as np
import torch

try:  # an optional accelerator: without it the tensor path gives the same values
    import numba
except ImportError:  # pragma: no cover - numba is in the project's requirements
    numba = None

__all__ = ["available", "channelwise", "supports"]

enabled = True  # set to False to take the tensor path everywhere, on a GPU too (geed._fused_cuda); the tests compare them

_TABLES: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def available() -> bool:
    return enabled and numba is not None


def _plain_spatial(action) -> bool:
    from geed.actions import SpatialAction
    from geed.groups import Group

    group = action.group
    return (type(action).act is SpatialAction.act and type(action).act_all is SpatialAction.act_all
            and type(group).act is Group.act and type(group)._transform is Group._transform
            and (action.channel_maps is None or all(p is not None for p in action._perms)))


def _target(action):
    """(spatial action, the element of it each group element acts as) of an action the compiled
    pass takes, or None."""
    from geed.actions import InducedAction, SpatialAction

    if isinstance(action, SpatialAction) and _plain_spatial(action):
        return action, list(range(len(action.group)))
    if type(action) is InducedAction:
        inner = _target(action.target)
        if inner is not None:
            return inner[0], [inner[1][h] for h in action.hom]
    return None


_TARGETS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _target_of(action):
    if action not in _TARGETS:
        _TARGETS[action] = _target(action)
    return _TARGETS[action]


def supports(action, Y: torch.Tensor) -> bool:
    """Whether the fused loop computes channelwise G-EED of ``action`` on orbit outputs ``Y``."""
    return (available() and Y.device.type == "cpu" and Y.dtype in (torch.float32, torch.float64)
            and Y.dim() == 5 and not Y.requires_grad and _target_of(action) is not None)


def _pixel_maps(spatial, h: int, w: int) -> dict:
    """Every element's pixel map on an h x w grid (input mask and comparison region folded in),
    read off the group's own action on probe images, and checked against it."""
    per_action = _TABLES.setdefault(spatial, {})
    if (h, w) not in per_action:
        group, S = spatial.group, h * w
        region = spatial.region(torch.zeros(1, 1, h, w, dtype=torch.float64))
        r = np.ones(S) if region is None else region.reshape(S).numpy().astype(np.float64)
        maps = [_probed(group, i, h, w) for i in range(len(group))]
        K = max(1, max(int(np.bincount(rows, minlength=S).max()) if rows.size else 0 for rows, _, _ in maps))
        idx = np.zeros((len(group), S, K), dtype=np.int64)
        wts = np.zeros((len(group), S, K), dtype=np.float64)
        nk = np.zeros(len(group), dtype=np.int64)
        for i, (rows, cols, vals) in enumerate(maps):
            order = np.argsort(rows, kind="stable")
            rows, cols, vals = rows[order], cols[order], vals[order]
            counts = np.bincount(rows, minlength=S)
            pos = np.arange(rows.size) - np.concatenate([[0], np.cumsum(counts)[:-1]])[rows]
            idx[i, rows, pos], wts[i, rows, pos] = cols, vals * r[rows]
            nk[i] = int(counts.max()) if rows.size else 0
        per_action[(h, w)] = {"idx": idx, "wts": wts, "nk": nk, "region": r, **_kinds(idx, wts, nk)}
    return per_action[(h, w)]


GATHERED, IDENTITY, ONE_PIXEL, DERIVED = 0, 1, 2, 3  # how the pass forms an element's targets (see _channelwise_pass)
direct_reads = True  # set to False to build and turn every element's targets, as an interpolated rotation's (the tests compare them)
# an interpolated map counts as a one-pixel map after another element's map when their weights agree to
# this (they are at most 1; the compositions of the standard groups' rotations agree to about 1e-14)
COMPOSE_TOL = 1e-12


def _sparse(idx: np.ndarray, wts: np.ndarray, e: int):
    import scipy.sparse

    S, K = idx.shape[1:]
    return scipy.sparse.csr_matrix((wts[e].ravel(), (np.repeat(np.arange(S), K), idx[e].ravel())), shape=(S, S))


def _kinds(idx: np.ndarray, wts: np.ndarray, nk: np.ndarray) -> dict:
    """How the pass forms each element's targets (``kind``): the identity map, one input pixel per
    output pixel, interpolated (built and turned), or *derived*: an interpolated map that is a one-pixel
    map after another interpolated element's map (a rotation by 135 degrees is a quarter turn after one
    by 45 degrees), whose targets it then reads through that one-pixel map's index row (``base``: the
    element whose targets it reads; -1 for the others). ``w1`` and ``i1`` hold the contiguous rows of
    weights and indices that the identity, one-pixel and derived elements read through: each one's
    own first column, and for a derived element the one-pixel map's."""
    S = idx.shape[1]
    live = wts[:, :, 0] != 0
    kind = np.full(len(nk), GATHERED, dtype=np.int64)
    base = np.full(len(nk), -1, dtype=np.int64)
    w1, i1 = np.ascontiguousarray(wts[:, :, 0]), np.ascontiguousarray(idx[:, :, 0])
    if direct_reads:
        for e in range(len(nk)):
            if nk[e] <= 1:
                if np.array_equal(idx[e, live[e], 0], np.arange(S)[live[e]]):
                    kind[e] = IDENTITY
                else:  # through an index row on maps of any size (3 x 3 to 6 x 6: as fast or up to 3x faster than building)
                    kind[e] = ONE_PIXEL
        maps = {e: _sparse(idx, wts, e) for e in range(len(nk))}
        one_pixel = [h for h in range(len(nk)) if nk[h] <= 1]
        built: list[int] = []  # interpolated elements built and turned, in order
        for e in range(len(nk)):
            if nk[e] <= 1:
                continue
            found = next(((b, h) for b in built for h in one_pixel if abs(maps[h] @ maps[b] - maps[e]).max() <= COMPOSE_TOL), None)
            if found is None:
                built.append(e)
            else:
                kind[e], base[e] = DERIVED, found[0]
                w1[e], i1[e] = wts[found[1], :, 0], idx[found[1], :, 0]
    return {"kind": kind, "base": base, "w1": w1, "i1": i1}


_PROBE_STRIDE = 3  # lit pixels of one probe lie this far apart: no output pixel reads two of them


def _probed(group, i: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output pixel, input pixel, weight) of every non-zero entry of element ``i``'s linear map of an
    h x w image, in O(h w): each output pixel of a flip, shift or (bilinear) rotation reads a 2 x 2
    block of input pixels at most, so on probe images whose lit pixels are ``_PROBE_STRIDE`` apart it
    reads at most one lit pixel; a probe lit with ones gives that pixel's weight, and one lit with
    the pixels' indices plus one tells which pixel it was. The result is checked against the group's
    action on random images; a map that is not of this kind is an error, not a wrong value."""
    S, k = h * w, _PROBE_STRIDE
    ii, jj = np.divmod(np.arange(S), w)
    cls = (ii % k) * k + (jj % k)  # the probe that lights each input pixel
    probes = torch.zeros(2 * k * k, S, dtype=torch.float64)
    probes[cls, np.arange(S)] = 1.0
    probes[k * k + cls, np.arange(S)] = torch.arange(1, S + 1, dtype=torch.float64)
    moved = group.act(probes.reshape(-1, 1, h, w), i).reshape(2 * k * k, S).numpy()
    weight, tagged = moved[: k * k], moved[k * k :]
    c, out = np.nonzero(weight)
    src = np.rint(tagged[c, out] / weight[c, out]).astype(np.int64) - 1
    vals = weight[c, out]
    check = torch.randn(3, 1, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want = group.act(check, i).reshape(3, S).numpy()
    got = np.zeros((3, S))
    np.add.at(got, (slice(None), out), check.reshape(3, S).numpy()[:, src] * vals)
    valid = src.size == 0 or (src.min() >= 0 and src.max() < S)
    if not valid or not np.allclose(got, want, rtol=1e-9, atol=1e-9 * max(1.0, float(np.abs(want).max()))):
        raise ValueError(f"element {i} of {group.name} is not a map that reads at most a 2 x 2 block of pixels per output pixel "
                         "on an h x w grid; the compiled pass cannot take it")
    return out, src, vals


def _channel_perms(spatial, elements: list[int], C: int) -> np.ndarray:
    if spatial.channel_maps is None:
        return np.tile(np.arange(C, dtype=np.int64), (len(elements), 1))
    return np.stack([spatial._perms[e].numpy().astype(np.int64) for e in elements])


_BLOCK = 8  # the transposes move 8 x 8 blocks in fixed-size loops: about twice as fast as 16-pixel tiles on a CPU core


# sums may be reordered (vectorised), but NaN and infinity keep their meaning: a diverged model's
# outputs give the same undefined values as on the tensor path
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


def _compiled(fn, parallel: bool):
    """``fn`` compiled (for parallel loops or not), its machine code cached on disk where a cache can
    be written (compiling takes a few seconds once); without a writable cache it is compiled per process.

    numba keys its disk cache by the function's name and the argument types, not by the compiler's
    options (numba issue 6845): a serial and a parallel build of one function would share an entry,
    and whichever was compiled first would run as both (the parallel code, on numba's own thread
    count, where one thread was asked for). So each build compiles a copy of ``fn`` named after it."""
    options = dict(parallel=parallel, fastmath=_FASTMATH, nogil=True)
    build = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    build.__qualname__ = f"{fn.__qualname__}_{'parallel' if parallel else 'serial'}"
    try:
        return numba.njit(cache=True, **options)(build)
    except RuntimeError:  # no writable place for the cache (e.g. a read-only installation)
        return numba.njit(**options)(build)


def _transpose(A, B):  # pragma: no cover - compiled
    """B[q, r] = A[r, q] for a (R, Q) array A, in 8 x 8 blocks (in the parallel build, bands of 8 rows run in parallel)."""
    R, Q = A.shape
    R8 = R - R % _BLOCK
    Q8 = Q - Q % _BLOCK
    for rb in numba.prange(R8 // _BLOCK):
        r0 = rb * _BLOCK
        for q0 in range(0, Q8, _BLOCK):
            for i in range(_BLOCK):
                for j in range(_BLOCK):
                    B[q0 + j, r0 + i] = A[r0 + i, q0 + j]
        for q in range(Q8, Q):
            for i in range(_BLOCK):
                B[q, r0 + i] = A[r0 + i, q]
    for r in range(R8, R):
        for q in range(Q):
            B[q, r] = A[r, q]


def _build(refT, idx, wts, K, e, T):  # pragma: no cover - compiled
    """T[s, p] = sum_k wts[e, s, k] refT[idx[e, s, k], p]: element ``e``'s targets along the (sample,
    channel) axis p, where the reads are contiguous (the first term written, the others added; a weight
    of zero reads nothing)."""
    S, P = T.shape
    for s in numba.prange(S):
        w = wts[e, s, 0]  # the tables have at least one column: an element with no entries has weight 0 there
        if w != 0.0:  # the first term is written, not added: no pass to clear the row
            src = idx[e, s, 0]
            for p in range(P):
                T[s, p] = w * refT[src, p]
        else:
            for p in range(P):
                T[s, p] = 0.0
        for k in range(1, K):
            w = wts[e, s, k]
            if w != 0.0:
                src = idx[e, s, k]
                for p in range(P):
                    T[s, p] += w * refT[src, p]


def _channelwise_pass(Y, ref, idx, wts, nk, elem, inv, r, tol, tiny, per_pair, kind, base, w1, i1, block):  # pragma: no cover - compiled
    """Channelwise G-EED of orbit outputs ``Y`` (G, N, C, S) against ``ref`` (N, C, S), written into
    ``per_pair`` (N, G); returns the number of undefined (dead) channel comparisons.

    The (sample, channel) rows p of the reference are taken ``block`` rows at a time (in the parallel
    build, blocks run in parallel), and every element's sums over a block are formed before the next
    block is read: the block's reference, and the targets built and turned from it, stay in the
    processor's cache (see ``_rows_per_block``), where a pass over whole maps, one element after another,
    reads each of them back from memory.

    Each element's target row b = g . ref[p] of a row p is formed as the sums run, in one of four ways
    (``kind``, per element): the identity map reads ref[p] itself, weighted (``w1``, the element's weights
    in one contiguous row); a map with one input pixel per output pixel (quarter turns, flips) reads ref[p]
    through its index row ``i1``; an interpolated map (a rotation by 45 degrees) has its targets built
    first, as T[s, p] = sum_k wts[s, k] refT[idx[s, k], p] along the block's rows p, where the reads are
    contiguous (the first term written, the others added), and turned block by block into rows of pixels;
    an interpolated map that is a one-pixel map after one of those (``base``) reads the base's turned
    targets through that one-pixel map's row (``w1``, ``i1``). A weight of zero gives a target of zero
    whatever it would read (NaN included), in every way. One contiguous pass with f(g x) then accumulates
    |a|^2, |b|^2 and a . b in float64.
    The cosine conventions of ``geed.metrics._cosine`` follow on those sums: a channel below
    ``tol`` times the sample's largest norm counts as zero, one zero side gives 0, two give NaN
    (left out of the mean over channels), NaN in a sample's norms switches the tolerance off."""
    G, N, C, S = Y.shape
    P = N * C
    ref2 = ref.reshape(P, S)
    # turned targets are kept, within a block, for the elements that derived ones read (built on first
    # use); any other interpolated element builds its own into one shared slot just before it is read
    keep = np.zeros(kind.shape[0], dtype=np.bool_)
    interpolated = 0
    for g in range(G):
        e = elem[g]
        if kind[e] == DERIVED:
            keep[base[e]] = True
        if kind[e] == GATHERED or kind[e] == DERIVED:
            interpolated += 1
    slot = np.cumsum(keep) - 1  # the kept elements' slots; the shared one is the last
    slots = keep.sum() + 1 if interpolated > 0 else 0
    pixels = S if interpolated > 0 else 0  # the turned reference and targets only where an element needs them
    sums = np.empty((3, G, N, C), dtype=np.float64)
    for blk in numba.prange((P + block - 1) // block):
        p0 = blk * block
        rows = min(P, p0 + block) - p0
        refb = ref2[p0 : p0 + rows]
        refT = np.empty((pixels, rows), dtype=ref.dtype)
        if pixels > 0:
            _transpose(refb, refT)
        T = np.empty((pixels, rows), dtype=ref.dtype)
        TT = np.empty((slots, rows, S), dtype=ref.dtype)
        built = np.zeros(kind.shape[0], dtype=np.bool_)
        for g in range(G):
            e = elem[g]
            how = kind[e]
            src = refb  # what the element's target rows are read from: the reference, or turned targets
            if how == GATHERED or how == DERIVED:
                owner = e if how == GATHERED else base[e]  # the element whose turned targets are read
                src = TT[slot[owner] if keep[owner] else slots - 1]
                if not built[owner]:
                    _build(refT, idx, wts, nk[owner], owner, T)
                    _transpose(T, src)
                    built[owner] = keep[owner]
            for q in range(rows):
                p = p0 + q
                n = p // C
                c = inv[g, p % C]  # the channel of f(g x) compared with channel p % C of the reference
                sa = 0.0
                sb = 0.0
                sd = 0.0
                # one loop per way of reading src (as it is, weighted, through an index row), each with a
                # branch-free body that vectorises (the identity's contiguous reads are faster than the same
                # reads through an index row)
                if how == GATHERED:
                    for s in range(S):
                        a = np.float64(Y[g, n, c, s])
                        b = np.float64(src[q, s])
                        sa += a * a * r[s]
                        sb += b * b
                        sd += a * b
                elif how == IDENTITY:
                    for s in range(S):
                        a = np.float64(Y[g, n, c, s])
                        b = np.float64(w1[e, s] * src[q, s]) if w1[e, s] != 0.0 else 0.0
                        sa += a * a * r[s]
                        sb += b * b
                        sd += a * b
                else:  # one pixel (from the reference) or derived (from a base's turned targets), through an index row
                    for s in range(S):
                        a = np.float64(Y[g, n, c, s])
                        b = np.float64(w1[e, s] * src[q, i1[e, s]]) if w1[e, s] != 0.0 else 0.0
                        sa += a * a * r[s]
                        sb += b * b
                        sd += a * b
                sums[0, g, n, p % C] = np.sqrt(sa)
                sums[1, g, n, p % C] = np.sqrt(sb)
                sums[2, g, n, p % C] = sd
    dead = 0
    for n in numba.prange(N):
        for g in range(G):
            scale = 0.0
            for c in range(C):
                na = sums[0, g, n, c]
                nb = sums[1, g, n, c]
                if np.isnan(na) or np.isnan(nb) or np.isnan(scale):
                    scale = np.nan
                else:
                    scale = max(scale, na, nb)
            floor = tol * scale
            if floor < tiny:  # NaN stays NaN: no norm counts as zero then
                floor = tiny
            total = 0.0
            count = 0
            for c in range(C):
                na = sums[0, g, n, c]
                nb = sums[1, g, n, c]
                za = na <= floor
                zb = nb <= floor
                prod = na * nb
                if prod < tiny:
                    prod = tiny
                cos = sums[2, g, n, c] / prod
                if za or zb:
                    cos = 0.0
                if za and zb:
                    cos = np.nan
                if np.isnan(cos):
                    dead += 1
                else:
                    total += cos
                    count += 1
            per_pair[n, g] = -(total / count) if count > 0 else np.nan
    return dead


# a block of (sample, channel) rows holds about this many bytes of each map it builds (the reference
# block, its turned copy, the built and turned targets: a few such buffers, within a core's 1-2 MB
# cache); 32 KB was the fastest budget on the digit CNN's maps (5 x 5 to 25 x 25) and on 33 x 33 and
# 56 x 56 maps, in float32 (the blocks take 0.4-0.9x the time of one pass over whole maps under C8)
_BLOCK_BYTES = 32 * 1024


def _rows_per_block(S: int, itemsize: int) -> int:
    """How many (sample, channel) rows of S pixels the pass takes at a time: about ``_BLOCK_BYTES`` of
    each map, a multiple of 8 (the transposes' blocks) from 32 to 128 rows."""
    rows = _BLOCK_BYTES // max(1, S * itemsize)
    return int(min(128, max(32, rows - rows % 8)))


if numba is not None:
    # inlined into the pass, so that the parallel build runs its bands of rows in parallel and the serial one does not
    _transpose = numba.njit(inline="always", fastmath=_FASTMATH, nogil=True)(_transpose)
    _build = numba.njit(inline="always", fastmath=_FASTMATH, nogil=True)(_build)
    _PASSES = {True: _compiled(_channelwise_pass, parallel=True), False: _compiled(_channelwise_pass, parallel=False)}


def _plan(action, C: int, H: int, W: int) -> dict:
    """Everything the loop needs for ``action`` on (C, H, W) maps, built once: pixel maps, the
    element each group element acts as, and the channel permutations with their inverses."""
    plans = _TABLES.setdefault(action, {})
    key = ("plan", C, H, W)
    if key not in plans:
        spatial, elements = _target_of(action)
        tables = _pixel_maps(spatial, H, W)
        perm = _channel_perms(spatial, elements, C)
        plans[key] = {**tables, "wts32": tables["wts"].astype(np.float32), "w132": tables["w1"].astype(np.float32), "elements": np.asarray(elements, dtype=np.int64),
                      "perm": perm, "inv": np.ascontiguousarray(np.argsort(perm, axis=1)),  # target channel c is reference channel perm[c]
                      "rows": {size: _rows_per_block(H * W, size) for size in (4, 8)}}  # per block, by bytes per value
    return plans[key]


def channelwise(Y: torch.Tensor, ref: torch.Tensor, action) -> tuple[np.ndarray, int]:
    """``(per_pair, dead)``: channelwise G-EED per (sample, element) as an ``(N, |G|)`` float64 array,
    comparing ``f(g x)`` with ``g . ref(x)`` within the action's region, and the number of (element,
    sample, channel) comparisons left out as undefined; ``Y`` is ``(|G|, N, C, H, W)``, ``ref``
    ``(N, C, H, W)``. The same values and conventions as the tensor path of
    :func:`geed.metrics.channelwise_eed`."""
    from geed.metrics import ZERO_TOL

    G, N, C, H, W = Y.shape
    _target_of(action)[0]._check(ref)  # the action's own check of the layer's shape (e.g. its number of channels)
    plan = _plan(action, C, H, W)
    Yn = Y.detach().contiguous().reshape(G, N, C, H * W).numpy()
    refn = ref.detach().to(Y.dtype).contiguous().reshape(N, C, H * W).numpy()
    per_pair = np.empty((N, G), dtype=np.float64)
    args = (Yn, refn, plan["idx"], plan["wts"] if Y.dtype == torch.float64 else plan["wts32"], plan["nk"], plan["elements"],
            plan["inv"], plan["region"], ZERO_TOL[Y.dtype], float(torch.finfo(Y.dtype).tiny), per_pair, plan["kind"],
            plan["base"], plan["w1"] if Y.dtype == torch.float64 else plan["w132"], plan["i1"], plan["rows"][Yn.itemsize])
    torch_threads = torch.get_num_threads()
    threads = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS))  # torch's thread setting rules
    try:
        if threads == 1:  # no thread team to start: the serial build of the same loop
            dead = _PASSES[False](*args)
        else:
            with _LOCK:  # numba's default thread pool takes one parallel call at a time
                previous = numba.get_num_threads()
                if threads != previous:
                    numba.set_num_threads(threads)
                try:
                    dead = _PASSES[True](*args)
                finally:
                    if threads != previous:
                        numba.set_num_threads(previous)
    finally:
        # numba's OpenMP layer shares OpenMP's setting with torch: setting numba's count, or starting
        # the layer (on a first call), can change torch's
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    return per_pair, int(dead)
