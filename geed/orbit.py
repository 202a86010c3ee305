"""One batched pass over the orbit of a data set, capturing any layers by module name.

:func:`orbit_outputs` builds the |D| x |G| transformed inputs, runs them through the model in
chunks under ``torch.no_grad`` and returns, for each requested module name (and ``"output"``), a
tensor ``(|G|, N, ...)``. :func:`evaluate` turns that into every G-EED variant at once and returns
a :class:`Report` with per-sample values and intervals.
"""
from __future__ import annotations

import copy
import difflib
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from geed._checks import is_whole
from geed.actions import Action, SpatialAction, TrivialAction
from geed.groups import Group, get_group
from geed.metrics import (
    EEDResult,
    _channelwise_result,
    _channelwise_values,
    _di_result,
    _di_values,
    _latent_result,
    _li_result,
    _li_values,
    PAIR_BLOCK,
    _checked_normaliser,
    _normaliser,
    _on_host,
    _pair_values,
    _pairwise_total,
    _probs,
    _softmax_result,
    channelwise_eed,
    kl_divergence,
    latent_eed,
    logit_invariance_error,
    prediction_invariance_error,
    softmax_eed,
)

__all__ = ["layer_names", "check_layers", "check_inputs", "UnknownLayer", "ModuleRunError", "orbit_outputs", "forward_outputs", "evaluate", "evaluate_reference", "auto_chunk_size", "full_float32", "Report", "Progress", "OUTPUT"]

OUTPUT = "output"
PROGRESS_EVERY_S = 5.0  # seconds between two progress lines of a long evaluation


def _named_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every submodule by its name, the model itself under ``""``: the names and order of
    ``model.named_modules()``, a module reached twice kept under its first name. Modules are told apart
    by identity, not by hashing: ``named_modules`` keeps a set of the modules it has seen, and e2cnn's
    basis expansions hash their whole bases (about 2.5 ms per walk of the C8-CNN at the default width,
    a few percent of the forward passes of 16 samples)."""
    found: dict[str, nn.Module] = {}
    seen: set[int] = set()

    def walk(module: nn.Module, prefix: str) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        found[prefix] = module
        for name, child in module._modules.items():
            if child is not None:
                walk(child, f"{prefix}.{name}" if prefix else name)

    walk(model, "")
    return found


def layer_names(model: nn.Module) -> list[str]:
    """Names accepted for capture: every named submodule (as in ``model.named_modules()``)."""
    return [name for name in _named_modules(model) if name]


def _tensor_of(out) -> torch.Tensor:
    """The tensor inside a module's output (plain tensor, e2cnn GeometricTensor, or first of a tuple)."""
    if isinstance(out, torch.Tensor):
        return out
    inner = getattr(out, "tensor", None)
    if isinstance(inner, torch.Tensor):
        return inner
    if isinstance(out, (tuple, list)) and out:
        return _tensor_of(out[0])
    raise TypeError(f"cannot read a tensor from a module output of type {type(out).__name__}")


def _tensor_of_or_none(x) -> torch.Tensor | None:
    try:
        return _tensor_of(x)
    except TypeError:
        return None


class UnknownLayer(KeyError):
    """A requested layer name that is not a submodule of the model."""

    def __str__(self) -> str:
        return str(self.args[0])


def check_layers(model: nn.Module, names: Sequence[str]) -> None:
    """One error naming every unknown layer, its closest matches and every name the model has."""
    modules = _named_modules(model)
    missing = [n for n in names if n not in modules or not n]
    if not missing:
        return
    available = layer_names(model)
    hints = []
    for n in missing:
        close = difflib.get_close_matches(str(n), available, n=3, cutoff=0.5)
        hints.append(f"{n!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
    raise UnknownLayer(f"no module named {', '.join(hints)} in {type(model).__name__}; "
                       f"its {len(available)} module names: {', '.join(available)}")


@contextmanager
def _capture(model: nn.Module, names: Sequence[str],
             on_output: Callable[[str, torch.Tensor], None] | None = None) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks on the named modules: each output is appended to its list in the yielded store,
    or handed to ``on_output(name, tensor)`` when that is given.

    Every forward pass of ``model`` must run each named module exactly once, with one output row per
    input (batch first): the values are grouped by input and by group element on that assumption. A
    module used twice (a shared activation), one the forward skips, or one whose output is not batch
    first is refused with its name, before its output is handed on."""
    check_layers(model, names)
    modules = _named_modules(model)
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    sink = on_output if on_output is not None else (lambda n, t: store[n].append(t))
    calls = dict.fromkeys(names, 0)
    rows: list[int | None] = [None]  # inputs of the forward pass under way (None: not known)

    def started(_m, args):
        first = _tensor_of_or_none(args[0]) if args else None
        rows[0] = first.shape[0] if first is not None and first.dim() > 0 else None
        for n in calls:
            calls[n] = 0

    def finished(_m, _inp, _out):
        skipped = [n for n, k in calls.items() if k == 0]
        if skipped:
            raise ModuleRunError(skipped, "did not run in the forward pass")

    handles = [model.register_forward_pre_hook(started), model.register_forward_hook(finished)]
    for n in names:
        def hook(_m, _inp, out, n=n):
            t = _tensor_of(out).detach()
            calls[n] += 1
            if calls[n] > 1:
                raise ModuleRunError([n], "ran more than once in one forward pass")
            if rows[0] is not None and (t.dim() == 0 or t.shape[0] != rows[0]):
                raise ModuleRunError([n], f"gave an output of shape {tuple(t.shape)} for a forward pass over {rows[0]} inputs "
                                          "(not one row per input, batch first)")
            sink(n, t)
        handles.append(modules[n].register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


class ModuleRunError(ValueError):
    """A captured module that does not give exactly one output row per input in each forward pass."""

    def __init__(self, names: Sequence[str], what: str) -> None:
        super().__init__(f"module(s) {', '.join(map(repr, names))} {what}; a captured module must run exactly once per "
                         "forward pass, with one output row per input (batch first). A module used twice (e.g. a ReLU "
                         "shared within a block) or skipped cannot be measured on its own: capture a module that runs "
                         "once, such as the block that contains it")


def _copy_as(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` in ``dtype``, leaving the original untouched. e2cnn modules in eval mode
    hold cached filters that cannot be deep-copied: copy them in train mode, then restore the mode."""
    try:
        return copy.deepcopy(model).to(dtype)
    except RuntimeError:
        was_training = model.training
        model.train()
        try:
            clone = copy.deepcopy(model)
        finally:
            model.train(was_training)
        return clone.to(dtype).train(was_training)


def _precision_flags() -> list[tuple[object, str]]:
    """The switches by which PyTorch may compute float32 convolutions and matrix products in a reduced
    precision (TF32 on NVIDIA GPUs, bfloat16 on some CPUs), as (holder, attribute): the global one
    first, then those of cuDNN, CUDA and oneDNN."""
    backends = torch.backends
    holders = [backends, getattr(getattr(backends, "cudnn", None), "conv", None), getattr(getattr(backends, "cuda", None), "matmul", None),
               getattr(getattr(backends, "mkldnn", None), "conv", None), getattr(getattr(backends, "mkldnn", None), "matmul", None)]
    flags = [(h, "fp32_precision") for h in holders if h is not None and isinstance(getattr(h, "fp32_precision", None), str)]
    if len(flags) <= 1:  # torch before the fp32_precision switches
        flags = [(backends.cudnn, "allow_tf32"), (backends.cuda.matmul, "allow_tf32")]
    return flags


FULL_PRECISION = ("ieee", "none", False)  # a switch at one of these leaves float32 whole ("none": as the global switch)


@contextmanager
def full_float32() -> Iterator[None]:
    """Float32 convolutions and matrix products in full precision, the switches restored afterwards.

    PyTorch lets cuDNN compute float32 convolutions in TF32 by default (a 10-bit mantissa): on the
    benchmark's models that moved per-(sample, element) values by up to about 1e-2 and means by up
    to about 1e-4 against the CPU's, where full float32 stays within float32's own rounding (the
    README's GPU table). Measuring is done in full float32 on every device. Only a switch set to a
    reduced precision is changed (to "ieee", or False): one left at PyTorch's default is left alone."""
    changed = [(holder, name, getattr(holder, name)) for holder, name in _precision_flags() if getattr(holder, name) not in FULL_PRECISION]
    try:
        for holder, name, _ in changed:
            setattr(holder, name, False if name == "allow_tf32" else "ieee")
        yield
    finally:
        for holder, name, value in changed:
            setattr(holder, name, value)


@contextmanager
def _measuring(model: nn.Module) -> Iterator[None]:
    """Measure in evaluation mode (BatchNorm running statistics, no dropout) and in full float32
    (:func:`full_float32`), and restore the model's mode and the precision switches afterwards, so
    that measuring never changes a model or the caller's settings. An e2cnn model (an
    ``EquivariantModule`` with an ``in_type``) gets its plain tensor inputs wrapped in a
    ``GeometricTensor`` of that type."""
    handle = None
    e2 = sys.modules.get("e2cnn.nn")  # an e2cnn model means e2cnn is imported already
    if e2 is not None and isinstance(model, e2.EquivariantModule):
        GeometricTensor, in_type = e2.GeometricTensor, model.in_type

        def wrap(_m, args):
            if args and isinstance(args[0], torch.Tensor):
                return (GeometricTensor(args[0], in_type),) + tuple(args[1:])
            return None

        handle = model.register_forward_pre_hook(wrap)
    # a model already in evaluation mode is left alone: switching modes is not free (e2cnn rebuilds
    # its filters when it enters evaluation mode)
    modes = [(m, m.training) for m in _named_modules(model).values()]  # not a dict: no module is hashed
    switch = any(mode for _, mode in modes)
    if switch:
        model.eval()
    try:
        with full_float32():
            yield
    finally:
        if switch:  # every module back to its own mode (parents first, so that children end as they were)
            for m, mode in modes:
                m.train(mode)
        if handle is not None:
            handle.remove()


def _prepare(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None, device) -> tuple[nn.Module, torch.Tensor]:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"inputs must be a tensor (N, C, H, W); got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"inputs must have shape (N, C, H, W); got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no inputs (N = 0): nothing to measure")
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = x.device
    first = next(iter(model.parameters()), None)
    if dtype is not None:
        if first is not None and first.dtype != dtype:
            model = _copy_as(model, dtype)
        x = x.to(dtype)
    elif first is not None and first.is_floating_point():
        x = x.to(first.dtype)  # inputs follow the model's precision
    return model, x.to(device)


def check_inputs(x: torch.Tensor, group: Group) -> None:
    """Inputs a group can act on: (N, C, H, W) with N >= 1 and finite values, and square when the group
    rotates by 90 degrees."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"inputs must be a tensor (N, C, H, W); got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"inputs must have shape (N, C, H, W); got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("no inputs (N = 0): nothing to measure")
    h, w = x.shape[-2:]
    quarter = any(e.angle % 180 == 90 for e in group.elements)
    if h != w and quarter:
        raise ValueError(f"{group.name} rotates by 90 degrees, which maps an H x W grid onto itself only when it is square; "
                         f"got inputs of {h} x {w} (crop or pad them to a square first)")
    _check_finite(x, "inputs")


FINITE_BLOCK = 2**20  # values whose finiteness is checked at a time


def _check_finite(x: torch.Tensor, what: str) -> None:
    """Refuse points with NaN or infinite values: every value measured on them would be undefined.

    Checked a block of samples (about ``FINITE_BLOCK`` values) at a time: ``torch.isfinite`` makes
    temporaries several times the size of what it checks (its absolute values among them), which on
    all the inputs at once would make the peak memory of an evaluation grow with N."""
    if not (x.is_floating_point() or x.is_complex()) or not x.numel():
        return
    rows = max(1, FINITE_BLOCK // max(1, x[0].numel()))
    finite = torch.empty(x.shape[0], dtype=torch.bool, device=x.device)  # one flag per sample
    for start in range(0, x.shape[0], rows):
        part = x[start : start + rows]
        finite[start : start + part.shape[0]] = torch.isfinite(part.reshape(part.shape[0], -1)).all(dim=1)
    bad = (~finite).nonzero().flatten().tolist()  # one read of the flags (one wait for a GPU)
    if bad:
        raise ValueError(f"{what} hold NaN or infinite values in {len(bad)} of {x.shape[0]} samples "
                         f"(indices {', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''})")


def _check_chunk_size(chunk_size, optional: bool = False) -> None:
    if chunk_size is None and optional:
        return
    if not is_whole(chunk_size):
        raise TypeError(f"chunk_size must be a whole number of orbit inputs{' or None (chosen from the memory budget)' if optional else ''}; "
                        f"got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive; got {chunk_size}")


def _check_dtype(dtype) -> None:
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be None (the model's own) or a real floating-point dtype such as torch.float32 or "
                        f"torch.float64; got {dtype!r}")


@torch.no_grad()
def forward_outputs(
    model: nn.Module,
    x: torch.Tensor,
    layers: Sequence[str] = (),
    chunk_size: int = 512,
    dtype: torch.dtype | None = None,
    device=None,
) -> dict[str, torch.Tensor]:
    """Plain forward pass (no group) capturing ``layers``; returns name -> ``(N, ...)`` plus ``"output"``."""
    _check_chunk_size(chunk_size)
    _check_dtype(dtype)
    model, x = _prepare(model, x, dtype, device)
    layers = [n for n in dict.fromkeys(layers) if n != OUTPUT]
    outs: list[torch.Tensor] = []
    with _capture(model, layers) as store, _measuring(model):
        for start in range(0, x.shape[0], chunk_size):
            outs.append(_tensor_of(model(x[start : start + chunk_size])).detach())
    result = {n: _join(v) for n, v in store.items()}
    result[OUTPUT] = _join(outs)
    return result


def orbit_outputs(
    model: nn.Module,
    x: torch.Tensor,
    group: Group | str,
    layers: Sequence[str] = (),
    chunk_size: int = 512,
    dtype: torch.dtype | None = None,
    device=None,
) -> dict[str, torch.Tensor]:
    """Run ``model`` on every ``g x`` (all g in G, all x) in chunks of ``chunk_size`` inputs.

    Returns name -> tensor ``(|G|, N, ...)`` for each requested layer and for ``"output"``.
    The model is measured in evaluation mode and left in the mode it was in.
    """
    group = get_group(group)
    check_inputs(x, group)
    _check_chunk_size(chunk_size)
    _check_dtype(dtype)
    model, x = _prepare(model, x, dtype, device)
    orbit = group.orbit(x)  # (|G|, N, C, H, W)
    flat = orbit.reshape(-1, *x.shape[1:])
    out = forward_outputs(model, flat, layers, chunk_size=chunk_size, device=x.device)
    return {n: t.reshape(len(group), x.shape[0], *t.shape[1:]) for n, t in out.items()}


@dataclass
class Report:
    """Every metric of one evaluation: per-sample values, means and bootstrap intervals."""

    group: str
    results: dict[tuple[str, str], EEDResult] = field(default_factory=dict)  # (metric, layer) -> result

    def table(self) -> pd.DataFrame:
        """Tidy per-sample table: metric, layer, sample, value (NaN where undefined, e.g. every channel dead)."""
        frames = [
            pd.DataFrame({"metric": m, "layer": layer, "sample": np.arange(len(r.per_sample)), "value": r.per_sample})
            for (m, layer), r in self.results.items()
        ]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["metric", "layer", "sample", "value"])

    def summary(self, level: float = 0.95) -> pd.DataFrame:
        rows = []
        for (m, layer), r in self.results.items():
            lo, hi = r.ci(level)
            rows.append({"metric": m, "layer": layer, "value": r.value, "lo": lo, "hi": hi, "n": len(r.per_sample), "M": r.normaliser,
                         "dead_fraction": r.meta.get("dead_fraction", float("nan"))})
        return pd.DataFrame(rows)

    def __getitem__(self, key: tuple[str, str]) -> EEDResult:
        if key not in self.results:
            raise KeyError(f"no result {key!r}; a result is named (metric, layer), and this report has: "
                           + ", ".join(map(repr, self.results)))
        return self.results[key]


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    group: Group | str,
    channelwise: Mapping[str, Action] | None = None,
    latent: str | Sequence[str] | None = None,
    logits: bool = True,
    reference_points: torch.Tensor | None = None,
    references: Sequence[str] = ("orbit",),
    chunk_size: int | None = None,
    dtype: torch.dtype | None = None,
    memory_budget: int | None = None,
    progress: bool | Callable[[str], None] = False,
) -> Report:
    """All G-EED variants, streamed over blocks of samples.

    ``channelwise`` maps module names of feature-map layers to their actions (``None`` values
    mean the plain spatial action; see :func:`geed.metrics.channelwise_eed` for dead channels,
    whose share is ``dead_fraction`` in the summary); ``latent`` names the feature extractor's
    output module, or several modules (trivial action; l2 and cosine, normalised by M over the
    latent vectors of ``reference_points`` -- the evaluated points themselves when None -- and
    unnormalised);
    ``logits=True`` adds softmax G-EED and the DI/LI errors of Moskalev et al. on the model output.
    ``references`` chooses the reference point(s): ``"orbit"`` (the paper's fhat) and/or ``"input"``.

    Every argument is checked before the first forward pass, and a wrong one gets one error that
    names it: the types and ranges of the parameters, inputs with NaN or infinite values, reference
    points of another shape than the inputs or fewer than two (or, without them, fewer than two
    inputs when a latent layer is requested). The reference points' latent vectors, and M, come
    first. Where M is not positive (latent vectors that all coincide, for l2; a mean cosine
    similarity at or below 0, for cosine) the normalised metric is undefined: its values are NaN,
    with a ``RuntimeWarning``, and the evaluation's other results are returned as usual.

    Memory does not grow with the feature maps of N samples: the samples are taken in blocks whose
    whole orbit is one forward chunk (``chunk_size`` orbit inputs; by default as many as fit
    ``memory_budget`` bytes of captured feature maps, by default 256 MiB on a CPU and a sixteenth of
    a GPU's memory; at most 64 on a CPU and 4,096 on a GPU: :func:`auto_chunk_size`). Each
    feature map is reduced to per-(sample, element) values as soon as the block's orbit has passed
    its layer (inside the forward pass, while it is still in the processor's caches) and is not
    kept. The latent vectors and logits of a few blocks (at most ``SMALL_SAMPLES`` samples and about
    ``SMALL_BYTES`` bytes; on a GPU ``GPU_SMALL_SAMPLES`` and ``GPU_SMALL_BYTES``) are scored together. Only the untransformed latent vectors f(x) are kept
    (the normaliser M needs them all when no ``reference_points`` are given), so memory does not grow
    with N beyond N latent vectors, and every value is the same as :func:`evaluate_reference`'s. A
    captured module must give one output row per input in each forward pass (one used twice, one
    the forward skips or one whose output is not batch first is refused with its name:
    :class:`ModuleRunError`). The model is measured in evaluation mode and left as it was.

    ``progress=True`` prints the samples done, the rate and the time left to stderr every few seconds
    (or passes each line to ``progress`` when it is a callable); off by default.
    """
    group, actions, latents, references = _requests(model, x, group, channelwise, latent, references, logits, reference_points,
                                                    chunk_size, dtype)
    _check_budget(memory_budget)  # refused even where chunk_size makes it unused
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be True, False or a callable taking a line; got {type(progress).__name__}")
    model, x = _prepare(model, x, dtype, None)
    hidden = [n for n in actions if n not in latents]
    n_el, N = len(group), x.shape[0]
    if chunk_size is None:
        chunk_size = auto_chunk_size(model, x[:1], hidden, memory_budget)
    # the reference points' M first: a model that cannot take them fails before the orbit's work
    M: dict[tuple[str, str], float] = {}
    if latents and reference_points is not None:
        given = forward_outputs(model, reference_points, latents, chunk_size=chunk_size, dtype=dtype)
        M = {(lat, dist): _normaliser(given[lat], dist, block=_m_block(given[lat]), layer=lat)
             for lat in latents for dist in ("l2", "cosine")}
        del given
    block = max(1, chunk_size // n_el)  # samples per block: their whole orbit is one forward chunk
    suffixes = {ref: "" if ref == "orbit" else "@input" for ref in references}
    # everything kept across blocks is allocated before the first block (see _Collected)
    keys = [("channelwise" + sfx, n) for sfx in suffixes.values() for n in actions]
    keys += [(f"latent_{dist}" + sfx, lat) for sfx in suffixes.values() for lat in latents for dist in ("l2", "cosine")]
    if logits:
        keys += [("softmax" + sfx, OUTPUT) for sfx in suffixes.values()] + [("DI", OUTPUT), ("LI", OUTPUT)]
    on_device = x.device.type != "cpu" if _SHARED_STORE is None else _SHARED_STORE
    # on a GPU every metric's values and dead count live in one device array each, copied to the host once
    store = torch.empty((len(keys), N, n_el), dtype=torch.float64, device=x.device) if on_device else None
    dead_store = torch.zeros(len(keys), dtype=torch.int64, device=x.device) if on_device else None
    parts = {key: _Collected(N, n_el) if store is None else _Collected(N, n_el, store[i], dead_store[i])
             for i, key in enumerate(keys)}  # (metric, layer) -> its values, block by block
    identity: dict[str, torch.Tensor] = {}  # f(x) of latent layers (M needs them all), allocated on the first block
    small_done = 0  # samples whose latent vectors and logits have been scored
    small_samples, small_bytes = (GPU_SMALL_SAMPLES, GPU_SMALL_BYTES) if on_device else (SMALL_SAMPLES, SMALL_BYTES)
    report_progress = Progress(N, "samples", progress, every=PROGRESS_EVERY_S) if progress else None

    def add(key, values, size: int, dead=None, total: int = 0) -> None:
        parts[key].add(values, size, dead, total)

    trivial = TrivialAction(group)

    # the small outputs (latent vectors, logits) of several blocks are scored together: fewer,
    # larger calls of the same per-sample metrics, within a fixed number of bytes
    pending: dict[str, list[torch.Tensor]] = {n: [] for n in [*latents, OUTPUT]}

    def score_small() -> None:
        nonlocal small_done
        if not pending[OUTPUT]:
            return
        joined = {n: torch.cat(v, dim=1) if len(v) > 1 else v[0] for n, v in pending.items()}
        b = joined[OUTPUT].shape[1]
        # the values of latent_eed (unnormalised), softmax_eed, prediction_ and logit_invariance_error,
        # left on the device until the end
        probs = _probs(joined[OUTPUT]) if logits else None
        for ref, sfx in suffixes.items():
            for lat in latents:
                for dist in ("l2", "cosine"):
                    add((f"latent_{dist}" + sfx, lat), _pair_values(joined[lat], trivial, dist, ref), b)
            if logits:
                add(("softmax" + sfx, OUTPUT), _pair_values(probs, trivial, kl_divergence, ref), b)
        if logits:
            add(("DI", OUTPUT), _di_values(joined[OUTPUT]), b)
            add(("LI", OUTPUT), _li_values(joined[OUTPUT], group), b)
        for lat in latents:
            identity[lat][small_done : small_done + b] = joined[lat][0]
        small_done += b
        for v in pending.values():
            v.clear()

    # each feature map is scored as soon as its block's orbit has passed the layer, while it is still
    # in the processor's caches, and not kept: what is captured of a block never outlives the block
    b = 0  # samples in the block being run (read by on_output)
    arrived: dict[str, list[torch.Tensor]] = {n: [] for n in dict.fromkeys([*actions, *latents])}

    def on_output(name: str, t: torch.Tensor) -> None:
        got = arrived[name]
        got.append(t)
        if sum(part.shape[0] for part in got) < n_el * b:  # rows of the block's orbit so far
            return
        Yb = _join(got).reshape(n_el, b, *t.shape[1:])
        got.clear()
        if name in actions:
            for ref, sfx in suffixes.items():
                try:
                    values, dead, total = _channelwise_values(Yb, actions[name], reference=ref)
                except ValueError as exc:  # e.g. a layer whose outputs are not feature maps: said with its name
                    raise ValueError(f"channelwise G-EED of layer {name!r}: {exc}") from exc
                add(("channelwise" + sfx, name), values, b, dead, total)
        if name in pending:
            pending[name].append(Yb)
        if name in latents and name not in identity:
            identity[name] = torch.empty((N, *Yb.shape[2:]), dtype=Yb.dtype, device=Yb.device)

    with torch.no_grad(), _capture(model, list(arrived), on_output), _measuring(model):
        for start in range(0, N, block):
            xb = x[start : start + block]
            b = xb.shape[0]
            flat = group.orbit(xb).reshape(-1, *x.shape[1:])
            outs = [_tensor_of(model(flat[c : c + chunk_size])).detach() for c in range(0, flat.shape[0], chunk_size)]
            logits_b = _join(outs).reshape(n_el, b, *outs[0].shape[1:])
            pending[OUTPUT].append(logits_b)
            del outs, flat, logits_b
            held = sum(t.numel() * t.element_size() for v in pending.values() for t in v)
            if held >= small_bytes or sum(t.shape[1] for t in pending[OUTPUT]) >= small_samples:
                score_small()
            if report_progress is not None:
                report_progress.update(start + b)
        score_small()
    # M over the evaluated points' own latent vectors (the same for either reference point), its sums
    # queued before any value is read, so that on a GPU they run behind the blocks' work
    sums = {(lat, dist): _pairwise_total(identity[lat], dist, _m_block(identity[lat]))
            for lat in latents for dist in ("l2", "cosine")} if reference_points is None else {}
    if store is not None:
        for part, values, dead in zip(parts.values(), store.cpu().numpy(), dead_store.tolist()):
            part.on_host(values, dead)
    # each result named and described by geed.metrics, as its public function names it
    values = {key: part.done() for key, part in parts.items()}
    if sums:
        totals = torch.stack([t for _, t in sums.values()]).tolist()  # one read
        M = {(lat, dist): _checked_normaliser(total / (points * (points - 1)), dist, layer=lat)
             for ((lat, dist), (points, _)), total in zip(sums.items(), totals)}  # the logits have no M
    report = Report(group.name)
    for ref, sfx in suffixes.items():
        for n in actions:
            part = parts[("channelwise" + sfx, n)]
            report.results[("channelwise" + sfx, n)] = _channelwise_result(values[("channelwise" + sfx, n)], group, ref, part.dead,
                                                                           part.total)
        for lat in latents:
            for dist in ("l2", "cosine"):
                report.results[(f"latent_{dist}" + sfx, lat)] = _latent_result(values[(f"latent_{dist}" + sfx, lat)], group, dist, ref,
                                                                               M[(lat, dist)])
            report.results[("latent_cosine_unnormalised" + sfx, lat)] = _latent_result(values[("latent_cosine" + sfx, lat)], group,
                                                                                        "cosine", ref)
        if logits:
            report.results[("softmax" + sfx, OUTPUT)] = _softmax_result(values[("softmax" + sfx, OUTPUT)], group, ref)
    if logits:
        report.results[("DI", OUTPUT)] = _di_result(values[("DI", OUTPUT)], group)
        report.results[("LI", OUTPUT)] = _li_result(values[("LI", OUTPUT)], group)
    return report


_SHARED_STORE: bool | None = None  # None: one device array for every metric's values on a GPU only (True: also on a CPU, for the tests)
SMALL_SAMPLES = 256  # latent vectors and logits of at most this many samples are scored together ...
SMALL_BYTES = 2**20  # ... and of at most about this many bytes
# on a GPU each scoring costs its kernel launches whatever its size: larger groups, and M over larger tiles
GPU_SMALL_SAMPLES, GPU_SMALL_BYTES, GPU_M_BLOCK = 4096, 2**26, 2048


class Progress:
    """Done, rate and time left of a long loop, reported at most every ``every`` seconds (and at the end).

    ``out`` is True (print to stderr) or a callable taking each line."""

    def __init__(self, total: int, unit: str, out: bool | Callable[[str], None] = True, every: float = 5.0,
                 label: str = "geed.evaluate") -> None:
        self.total, self.unit, self.every, self.label = int(total), unit, float(every), label
        self.out = out if callable(out) else (lambda line: print(line, file=sys.stderr, flush=True))
        self.start = self.last = time.perf_counter()

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if done < self.total and now - self.last < self.every:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = done / elapsed
        left = (self.total - done) / rate if rate > 0 else float("inf")
        self.out(f"[{self.label}] {done}/{self.total} {self.unit}, {rate:.1f} {self.unit}/s, "
                 + (f"done in {elapsed:.1f} s" if done >= self.total else f"about {left:.0f} s left"))


class _Collected:
    """One metric's per-(sample, element) values over a whole evaluation, written block by block into
    one array allocated before the first block. Keeping each block's small result instead would
    interleave long-lived allocations with the blocks' transient ones, and the heap, unable to give
    back the memory between them, would grow with N. On a GPU the array (``values``) and the dead
    count (``dead``, a 0-d int64 tensor) are slices of device arrays shared by every metric, so that
    no block waits for the device: they come to the host once, at the end (:meth:`on_host`).
    Its dead count and number of comparisons (``total``) give the dead-channel share; names and other
    metadata come from ``geed.metrics``, as for the public functions."""

    def __init__(self, n: int, n_el: int, values: torch.Tensor | None = None, dead: torch.Tensor | None = None) -> None:
        self.values: np.ndarray | torch.Tensor = np.empty((n, n_el), dtype=np.float64) if values is None else values
        self.dead: int | torch.Tensor = 0 if dead is None else dead
        self.filled = 0
        self.total = 0

    def add(self, values: np.ndarray | torch.Tensor, size: int, dead: int | torch.Tensor | None = None, total: int = 0) -> None:
        if isinstance(self.values, torch.Tensor):
            self.values[self.filled : self.filled + size] = torch.as_tensor(values, device=self.values.device)
            if dead is not None:
                self.dead.add_(dead)  # type: ignore[union-attr]
        else:
            self.values[self.filled : self.filled + size] = _on_host(values)
            if dead is not None:
                self.dead = self.dead + int(dead)
        self.filled += size
        if dead is not None:
            self.total += total

    def on_host(self, values: np.ndarray, dead: int) -> None:
        """The device's values and dead count, as copied to the host at the end of the evaluation."""
        self.values, self.dead = values, int(dead)

    def done(self) -> np.ndarray:
        """The values of every sample, on the host (after :meth:`on_host` where they were on a device)."""
        if self.filled != self.values.shape[0]:
            raise RuntimeError(f"{self.filled} of {self.values.shape[0]} samples were scored")  # a bug, not bad input
        return _on_host(self.values)


def _requests(model: nn.Module, x: torch.Tensor, group: Group | str, channelwise: Mapping[str, Action] | None,
              latent: str | Sequence[str] | None, references: str | Sequence[str], logits: bool = True,
              reference_points: torch.Tensor | None = None, chunk_size: int | None = None, dtype: torch.dtype | None = None,
              ) -> tuple[Group, dict[str, Action], list[str], tuple[str, ...]]:
    """The group, the action per feature-map layer, the latent layers and the reference points of an
    evaluation, every argument checked before any work: a wrong one gets one error that names it."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (its layers are found by module name); got {type(model).__name__}")
    group = get_group(group)
    check_inputs(x, group)
    if not isinstance(logits, (bool, np.bool_)):
        raise TypeError(f"logits must be True or False; got {logits!r}")
    _check_chunk_size(chunk_size, optional=True)
    _check_dtype(dtype)
    if not isinstance(references, (str, Sequence)):
        raise TypeError(f"references must be 'orbit', 'input' or a list of them; got {references!r}")
    refs = (references,) if isinstance(references, str) else tuple(dict.fromkeys(references))
    if not refs:
        raise ValueError("references must name at least one reference point: 'orbit' and/or 'input'")
    for ref in refs:
        if ref not in ("orbit", "input"):
            raise ValueError(f"references must be 'orbit' and/or 'input'; got {ref!r}")
    if channelwise is not None and not isinstance(channelwise, Mapping):
        raise TypeError(f"channelwise must map layer names to actions (None for the plain spatial action); got {type(channelwise).__name__}")
    for n, a in (channelwise or {}).items():
        if a is not None and not isinstance(a, Action):
            raise TypeError(f"channelwise[{n!r}] must be an action (geed.actions.Action) or None; got {type(a).__name__}")
    actions = {n: (a if a is not None else SpatialAction(group)) for n, a in (channelwise or {}).items()}
    for n, a in actions.items():
        if a.group.order != group.order or a.group.name != group.name:
            raise ValueError(f"the action given for {n!r} is of {a.group.name}, but the evaluation group is {group.name}")
    if latent is not None and not isinstance(latent, (str, Sequence)):
        raise TypeError(f"latent must be a module name or a list of them; got {latent!r}")
    latents = [latent] if isinstance(latent, str) else list(dict.fromkeys(latent or []))
    for lat in latents:
        if not isinstance(lat, str):
            raise TypeError(f"latent must be a module name or a list of them; got {lat!r} among them")
    check_layers(model, list(actions) + latents)
    if reference_points is not None:
        if not latents:
            raise ValueError("reference_points give the latent metrics their normaliser M, but no latent layer was requested")
        if not isinstance(reference_points, torch.Tensor):
            raise TypeError(f"reference_points must be a tensor of inputs (n, C, H, W); got {type(reference_points).__name__}")
        if reference_points.dim() != 4 or reference_points.shape[1:] != x.shape[1:]:
            raise ValueError(f"reference_points must be inputs of the same shape as the evaluated ones, (n, {', '.join(map(str, x.shape[1:]))}); "
                             f"got {tuple(reference_points.shape)}")
        if reference_points.shape[0] < 2:
            raise ValueError(f"the normaliser M needs at least 2 reference points; got {reference_points.shape[0]}")
        _check_finite(reference_points, "reference_points")
    elif latents and x.shape[0] < 2:
        raise ValueError("the normaliser M needs at least 2 reference points: with reference_points=None it is taken over the "
                         f"evaluated inputs, and there is {x.shape[0]}; give reference_points")
    return group, actions, latents, refs


def _m_block(points: torch.Tensor) -> int:
    return PAIR_BLOCK if points.device.type == "cpu" else GPU_M_BLOCK


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _per_input_bytes(model: nn.Module, probe: torch.Tensor, layers: Sequence[str]) -> int:
    """Bytes of the captured outputs (``layers``, ``"output"`` for the model output) of one input."""
    out = forward_outputs(model, probe, [n for n in layers if n != OUTPUT], chunk_size=1)
    return sum(t.numel() * t.element_size() for n, t in out.items() if n in layers)


CPU_BUDGET, CPU_CAP = 256 * 2**20, 64  # a CPU: smaller batches are faster
GPU_BUDGET_SHARE, GPU_CAP = 1 / 16, 4096  # a GPU: large chunks, each launch and synchronisation paid once per block


def default_budget(device: torch.device) -> int:
    """Bytes of captured feature maps per chunk: 256 MiB on a CPU, a sixteenth of the memory of a GPU
    (5 GB on an 80 GB card)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * GPU_BUDGET_SHARE)
    return CPU_BUDGET


def _check_budget(budget: int | None) -> None:
    if budget is not None and (not is_whole(budget) or budget < 1):
        raise ValueError(f"the memory budget must be a positive whole number of bytes; got {budget!r}")


def auto_chunk_size(model: nn.Module, probe: torch.Tensor, layers: Sequence[str], budget: int | None = None) -> int:
    """Orbit inputs per forward chunk: as many as keep the captured feature maps of one chunk within
    ``budget`` bytes (:func:`default_budget` when None; measured on one probe input), at most 64 on a
    CPU (where smaller batches are faster) and 4,096 on a GPU (where every block costs its kernel
    launches and synchronisations whatever its size)."""
    _check_budget(budget)
    cap = GPU_CAP if probe.device.type == "cuda" else CPU_CAP
    if not layers:
        return cap
    budget = default_budget(probe.device) if budget is None else budget
    per_input = _per_input_bytes(model, probe, list(layers))
    return int(max(1, min(cap, budget // max(per_input, 1))))


def evaluate_reference(
    model: nn.Module,
    x: torch.Tensor,
    group: Group | str,
    channelwise: Mapping[str, Action] | None = None,
    latent: str | Sequence[str] | None = None,
    logits: bool = True,
    reference_points: torch.Tensor | None = None,
    references: Sequence[str] = ("orbit",),
    chunk_size: int = 512,
    dtype: torch.dtype | None = None,
) -> Report:
    """The whole-orbit path of :func:`evaluate`, kept as its reference: every requested layer's
    outputs for all |G| x N orbit inputs are held at once. Same arguments and results.

    ``channelwise`` maps module names of feature-map layers to their actions (``None`` values
    mean the plain spatial action; see :func:`geed.metrics.channelwise_eed` for dead channels,
    whose share is ``dead_fraction`` in the summary); ``latent`` names the feature extractor's
    output module, or several modules (trivial action; l2 and cosine, normalised by M over the
    latent vectors of ``reference_points`` -- the evaluated points themselves when None -- and
    unnormalised);
    ``logits=True`` adds softmax G-EED and the DI/LI errors of Moskalev et al. on the model output.
    ``references`` chooses the reference point(s): ``"orbit"`` (the paper's fhat) and/or ``"input"``.
    Arguments are checked, and a normaliser M that is not positive handled, as in :func:`evaluate`.
    """
    _check_chunk_size(chunk_size)  # no automatic chunk here
    group, actions, latents, references = _requests(model, x, group, channelwise, latent, references, logits, reference_points,
                                                    chunk_size, dtype)
    names = list(actions) + latents
    given = forward_outputs(model, reference_points, latents, chunk_size=chunk_size, dtype=dtype) if latents and reference_points is not None else {}
    Y = orbit_outputs(model, x, group, names, chunk_size=chunk_size, dtype=dtype)
    M = {(lat, dist): _normaliser(given[lat] if lat in given else Y[lat][0], dist, layer=lat)
         for lat in latents for dist in ("l2", "cosine")}
    report = Report(group.name)
    for ref in references:
        sfx = "" if ref == "orbit" else "@input"
        for n, a in actions.items():
            report.results[("channelwise" + sfx, n)] = channelwise_eed(Y[n], a, reference=ref)
        for lat in latents:
            raw = {dist: latent_eed(Y[lat], group, dist, normalise=False, reference=ref) for dist in ("l2", "cosine")}
            for dist, r in raw.items():
                report.results[(f"latent_{dist}" + sfx, lat)] = _latent_result(r.per_pair, group, dist, ref, M[(lat, dist)])
            report.results[("latent_cosine_unnormalised" + sfx, lat)] = raw["cosine"]
        if logits:
            report.results[("softmax" + sfx, OUTPUT)] = softmax_eed(Y[OUTPUT], group, reference=ref)
    if logits:
        report.results[("DI", OUTPUT)] = prediction_invariance_error(Y[OUTPUT], group)
        report.results[("LI", OUTPUT)] = logit_invariance_error(Y[OUTPUT], group)
    return report
