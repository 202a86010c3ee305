"""Cost of measuring: time as a ratio to the bare forward passes, and peak memory against N.

Time. For each model, group and N: *bare* is the model's forward pass over the |G| x N orbit
inputs in the same chunks, no hooks (building the orbit included); *geed* is ``geed.evaluate`` with
channelwise G-EED at every listed feature-map layer, latent (l2, cosine, cosine unnormalised),
softmax, DI and LI. Both use the chunk that ``geed.evaluate`` chooses. Three other ways of doing the
same job are timed beside them as reference rows: geed with its channelwise metric in tensor
operations (the *tensor path*, where the compiled pass -- ``geed._fused`` on a CPU, ``geed._fused_cuda`` on a GPU -- is not used), a *plain loop* (one forward pass per sample and
group element, then the same metrics) and, for the C8-CNN, *e2cnn's recipe* (``check_equivariance``:
per element, the outputs on x transformed against the outputs on g x). Rounds are interleaved in
one process, in an order reversed every other round; in each round every time is divided by that
round's bare time (paired), and the median and range of those ratios over rounds are reported (the
machines are noisy).

Threads. The number of intra-op threads is set explicitly (``--threads``, default 1, in this process
and in the memory subprocesses): under load an OpenMP team's spin-waiting inflates small parallel
work many times over, and with one thread a busy machine slows every method alike.

Allocator. Timings on a CPU are taken with glibc's heap kept, by default (``--malloc fixed``): the
mmap threshold fixed at 32 MiB and the trim threshold at 1 GiB (``mallopt``, in this process only), so
that the memory a forward pass frees is not handed back to the kernel and faulted in again by the next.
With glibc's adaptive defaults (``--malloc default``) whether it is depends on the process's history:
the same forward passes took 1.3 s with no page faults and 1.7 s with 237,000 in one process, and the
faults (a fifth of the time, in the kernel) made the paired ratios swing by several points from round
to round. Both methods are timed under the same setting; the provenance records which.

Memory. For each N and method (the bare forward passes, the orbit built block by block; geed; geed
with a fixed mmap threshold), a fresh subprocess loads the model and data, runs the method on one
block, resets the kernel's peak resident memory mark (``/proc/self/clear_refs``, Linux), runs it on
the N samples and reports its peak resident memory above the resident memory just before; with
streaming it should not grow with N. Where glibc places short-lived buffers varies from process to
process, so each is run in ``--memory-repeats`` subprocesses, interleaved, and the median is reported.

    python scripts/benchmark.py [--repeats 7] [--memory-repeats 3] [--threads 1] [--malloc fixed] [--quick] [--no-readme]
    python scripts/benchmark.py --breakdown cnn   # where geed's time goes beside the bare passes
    python scripts/benchmark.py --split cnn --repeats 41   # which part of an evaluation costs what
    python scripts/benchmark.py --pass-only       # the CPU's compiled channelwise pass alone, as it runs and three other ways
    python scripts/benchmark.py --widths --n 64   # the digit models at widths from the default to the paper's

The result is written between the benchmark markers of README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]


def _setup(name: str):
    """(model, channelwise layers, latent layer, input shape) of a benchmark model; a digit model
    may carry its width after an at sign (``c8cnn@1.0``: the paper's width), a ResNet its image
    size (``resnet50@224``: the paper's; 64 otherwise)."""
    from geed.models import create_model

    name, _, option = name.partition("@")
    if name in ("cnn", "c8cnn"):
        model = create_model(name, seed=0, **({"width": float(option)} if option else {})).eval()
        return model, None, model.latent_layer, (1, 29, 29)
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    size = int(option) if option else 64
    return model, ("layer1", "layer2", "layer3", "layer4"), "avgpool", (3, size, size)


def _digits(name: str) -> bool:
    return name.partition("@")[0] in ("cnn", "c8cnn")


def _inputs(name: str, shape, n: int) -> torch.Tensor:
    if _digits(name):
        from geed.data.digits import rotated_digits

        test = rotated_digits("test")
        # the test split holds 900 digits; a larger N is taken from the training split
        return (test if n <= len(test.x) else rotated_digits("train")).subset(n, seed=0).x
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))


def _channelwise(model, layers, group):
    from geed.actions import SpatialAction

    return model.layer_actions(group) if layers is None else {n: SpatialAction(group) for n in layers}


def plain_loop(model, x, group, cw, latent) -> None:
    """The reference a user writes first: for each sample and each group element, one forward pass
    of the transformed input (hooks capturing the same layers), then the same metrics per sample."""
    from geed.metrics import channelwise_eed, latent_eed, logit_invariance_error, prediction_invariance_error, softmax_eed
    from geed.orbit import _capture, _measuring

    with torch.no_grad(), _capture(model, list(cw) + [latent]) as store, _measuring(model):
        for s in range(x.shape[0]):
            logits = []
            for i in range(len(group)):
                logits.append(model(group.act(x[s : s + 1], i)))
            Y = {n: torch.stack(v) for n, v in store.items()}
            for v in store.values():
                v.clear()
            L = torch.stack(logits)
            for n, a in cw.items():
                channelwise_eed(Y[n], a)
            for dist in ("l2", "cosine"):
                latent_eed(Y[latent], group, dist, normalise=False)
            softmax_eed(L, group), prediction_invariance_error(L, group), logit_invariance_error(L, group)


def e2cnn_recipe(model, x, group, cw, chunk: int) -> None:
    """e2cnn's ``check_equivariance`` recipe on the same job: for each group element g, the model's
    outputs on x (transformed by g's action on each layer) against its outputs on g x, mean absolute
    error per layer; two forward passes per element, as e2cnn does."""
    from geed.orbit import _capture, _measuring

    with torch.no_grad(), _capture(model, list(cw)) as store, _measuring(model):
        for i in range(len(group)):
            for s in range(0, x.shape[0], chunk):
                xs = x[s : s + chunk]
                out1 = model(xs)
                f_x = {n: v[-1] for n, v in store.items()}
                out2 = model(group.act(xs, i))
                f_gx = {n: v[-1] for n, v in store.items()}
                for v in store.values():
                    v.clear()
                for n, a in cw.items():
                    (a.act(f_x[n], i) - f_gx[n]).abs().mean()
                (out1 - out2).abs().mean()


def _sync(device: str) -> None:
    """Wait for the device's queued work (a GPU runs asynchronously: a time taken without waiting
    measures the launches only)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _job(name: str, group_name: str, n: int, device: str = "cpu"):
    """One benchmark job: the model and its inputs on ``device``, the chunk ``geed.evaluate`` chooses,
    and the two ways of running it: the bare forward passes over the orbit inputs and geed's full
    evaluation. Both run in full float32 (geed measures so; ``geed.orbit.full_float32``) and end when
    the device has finished."""
    import geed
    from geed.orbit import auto_chunk_size, full_float32

    model, layers, latent, shape = _setup(name)
    model = model.to(device)
    group = geed.get_group(group_name, mask=_digits(name))
    x = _inputs(name, shape, n).to(device)
    cw = _channelwise(model, layers, group)
    chunk = auto_chunk_size(model, x[:1], list(cw))

    def bare():
        with torch.no_grad(), full_float32():
            flat = group.orbit(x).reshape(-1, *x.shape[1:])
            for s in range(0, flat.shape[0], chunk):
                model(flat[s : s + chunk])
        _sync(device)

    def measure(inputs: torch.Tensor) -> None:  # geed's full evaluation of some inputs, in the job's chunks
        geed.evaluate(model, inputs, group, channelwise=cw, latent=latent, chunk_size=chunk)

    def full():
        measure(x)
        _sync(device)

    return SimpleNamespace(model=model, x=x, group=group, cw=cw, latent=latent, chunk=chunk, bare=bare, full=full, measure=measure,
                           device=device)


def _interleaved(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each run in each of ``rounds`` interleaved rounds. The order is reversed every other
    round: a method run just after another does not always meet the same state of the caches, the
    allocator or a neighbour's load."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for i in range(rounds):
        for k, run in list(runs.items())[:: 1 if i % 2 == 0 else -1]:
            start = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - start)
    return times


def time_ratio(name: str, group_name: str, n: int, repeats: int, device: str = "cpu") -> dict:
    job = _job(name, group_name, n, device)
    model, x, group, cw, latent, chunk, bare, full = (job.model, job.x, job.group, job.cw, job.latent, job.chunk, job.bare, job.full)

    def tensor_path():  # the same, with the channelwise metric in tensor operations instead of the compiled pass
        from geed import _fused

        _fused.enabled = False
        try:
            full()
        finally:
            _fused.enabled = True

    def synced(run: Callable[[], None]) -> Callable[[], None]:
        return lambda: (run(), _sync(device))

    runs = {"bare": bare, "geed": full}
    if _fused_available(device):
        runs["geed, tensor path"] = tensor_path
    if n <= PLAIN_LOOP_MAX_N and "@" not in name:
        runs["plain loop"] = synced(lambda: plain_loop(model, x, group, cw, latent))
    if name == "c8cnn":
        runs["e2cnn recipe"] = synced(lambda: e2cnn_recipe(model, x, group, cw, chunk))
    return {"model": name, "group": group_name, "n": n, "chunk": chunk, "threads": torch.get_num_threads(), "device": device,
            **_paired(runs, repeats)}


def _paired(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict[str, float]]:
    """Each run (one of them ``bare``) once to warm up, then timed in ``rounds`` interleaved rounds: per run its
    median seconds and its time divided by the bare passes' of the same round (paired), median, smallest and largest."""
    for run in runs.values():  # warm-up
        run()
    times = _interleaved(runs, rounds)  # each ratio is taken within its round
    out = {}
    for k, ts in times.items():
        ratios = sorted(t / b for t, b in zip(ts, times["bare"]))
        out[k] = {"s": statistics.median(ts), "ratio": statistics.median(ratios), "lo": ratios[0], "hi": ratios[-1]}
    return out


FORWARD_OPS = ("conv2d", "batch_norm", "relu", "linear", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "grid_sampler_2d")


def breakdown(name: str, group_name: str = "C8", n: int = 256, rounds: int = 3) -> list[dict]:
    """Where geed's time goes beside the bare passes, from cProfile's per-function times in one process:
    the model's own operations (convolutions, norms, activations, pooling, the orbit's interpolation),
    the compiled channelwise pass, and everything else (the metrics' tensor operations and Python)."""
    import cProfile
    import pstats

    job = _job(name, group_name, n)

    def profiled(run) -> dict:
        prof = cProfile.Profile()
        start = time.perf_counter()
        prof.enable()
        run()
        prof.disable()
        wall = time.perf_counter() - start
        own: dict[str, float] = {}
        for (_, _, func), (_, _, tottime, _, _) in pstats.Stats(prof).stats.items():
            own[func] = own.get(func, 0.0) + tottime
        model_ops = sum(t for f, t in own.items() if any(f"torch.{op}>" in f or f"_nn.{op}>" in f for op in FORWARD_OPS))
        compiled = sum(t for f, t in own.items() if "_channelwise_pass" in f)
        return {"wall": wall, "model": model_ops, "compiled": compiled, "rest": wall - model_ops - compiled}

    job.bare(), job.full()  # warm-up
    rows = []
    for _ in range(rounds):
        b, g = profiled(job.bare), profiled(job.full)
        rows.append({"bare": b, "geed": g})
    return rows


SPLIT_METHODS = ("every G-EED variant", "every variant, no pixel moved (a floor: not G-EED)",
                 "channelwise layers captured, their metric not computed", "without channelwise", "softmax, DI and LI only",
                 "no metric (the streamed passes alone)")


def split(name: str, group_name: str = "C8", n: int = 32, rounds: int = 41) -> dict[str, dict[str, float]]:
    """Which part of an evaluation costs what, beside the bare passes, in interleaved rounds, each ratio
    paired with its round's bare passes (per method the median ratio and its quartiles):

    * geed with every variant;
    * the same with the compiled pass reading every element's targets as the identity's: each captured
      value and its reference read once and the three sums formed, channels still permuted, but no pixel
      moved. That is what is left if the group's spatial maps cost nothing, a floor for any way of forming
      the targets (its values are not G-EED);
    * the channelwise layers captured and handed over block by block as usual, but the compiled call
      replaced by one that returns zeros: what capturing the layers costs, apart from the pass;
    * without the channelwise metric; with the output metrics only; with no metric at all (the streamed
      forward passes with their hooks).

    On a CPU with numba (the compiled pass)."""
    import numpy as np

    import geed
    from geed import _fused

    job = _job(name, group_name, n)
    m, x, g, latent, chunk = job.model, job.x, job.group, job.latent, job.chunk
    if not _fused.available():
        raise SystemExit("--split times the CPU's compiled channelwise pass: numba is not installed here")
    planned = _fused._plan

    def not_computed(Y, ref, action):  # the pass's result, of the right shape, without the pass
        return np.zeros((Y.shape[1], Y.shape[0])), 0

    def unmoved_plan(action, C, H, W):  # every element's pixels read as the identity's (its channels still permuted)
        plan = dict(planned(action, C, H, W))
        identity = int(np.flatnonzero(plan["kind"] == _fused.IDENTITY)[0])
        plan["elements"] = np.full_like(plan["elements"], identity)
        return plan

    def lent(attr, replacement):  # geed's full evaluation with one function of geed._fused replaced
        original = getattr(_fused, attr)

        def method():
            setattr(_fused, attr, replacement)
            try:
                job.measure(x)
            finally:
                setattr(_fused, attr, original)
        return method

    runs = {"bare": job.bare,
            SPLIT_METHODS[0]: lambda: job.measure(x),
            SPLIT_METHODS[1]: lent("_plan", unmoved_plan),
            SPLIT_METHODS[2]: lent("channelwise", not_computed),
            SPLIT_METHODS[3]: lambda: geed.evaluate(m, x, g, latent=latent, chunk_size=chunk),
            SPLIT_METHODS[4]: lambda: geed.evaluate(m, x, g, chunk_size=chunk),
            SPLIT_METHODS[5]: lambda: geed.evaluate(m, x, g, logits=False, chunk_size=chunk)}
    for run in runs.values():  # warm-up
        run()
    times = _interleaved(runs, rounds)
    out = {}
    for method in SPLIT_METHODS:
        ratios = np.asarray(times[method]) / np.asarray(times["bare"])
        out[method] = {"median": float(np.median(ratios)), "q1": float(np.percentile(ratios, 25)), "q3": float(np.percentile(ratios, 75))}
    return out


WIDTHS = (0.125, 0.25, 0.5, 1.0)  # the digit models' default width (an eighth of the paper's) up to the paper's


def work_per_value(job) -> float:
    """A job's model's multiply-adds per value of the feature maps the channelwise metric reads, for one
    input (counted by ``torch.utils.flop_counter``: convolutions and matrix products): how much forward
    work there is for each value the compiled pass reads. A convolution's multiply-adds per output value
    grow with its input channels, so with a digit model's width."""
    from torch.utils.flop_counter import FlopCounterMode

    from geed.orbit import forward_outputs

    x = job.x[:1]
    values = sum(t[0].numel() for t in forward_outputs(job.model, x, list(job.cw)).values())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        job.model(x)
    return counter.get_total_flops() / 2 / values


def width_ratios(widths=WIDTHS, n: int = 64, rounds: int = 5, models=("cnn", "c8cnn"), group_name: str = "C8") -> list[dict]:
    """geed against the bare passes for the digit models at several widths (C8, N samples, interleaved rounds,
    each ratio paired with its round's bare passes, as ``time_ratio``; geed and the bare passes only), with
    the forward's multiply-adds per value the pass reads (``work_per_value``). The pass's cost grows with
    the maps, the forward's with the maps times the width: the ratio falls towards 1 as the width grows."""
    rows = []
    for name in models:
        for w in widths:
            job = _job(f"{name}@{w:g}", group_name, n)
            cells = _paired({"bare": job.bare, "geed": job.full}, rounds)
            geed = cells["geed"]
            rows.append({"model": name, "width": w, "group": group_name, "n": n, "chunk": job.chunk, "threads": torch.get_num_threads(),
                         "macs_per_value": work_per_value(job), "bare_s": cells["bare"]["s"], "geed_s": geed["s"],
                         "ratio": geed["ratio"], "lo": geed["lo"], "hi": geed["hi"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def widths_lines(rows: list[dict], prov: dict, repeats: int) -> list[str]:
    """The README's widths table from ``width_ratios``'s rows and their provenance."""
    lines = [f"Measured on {prov['device']}, {rows[0]['threads']} thread{'s' if rows[0]['threads'] > 1 else ''}, torch {prov['torch']}, "
             f"{_sources(prov)}, timings with {prov['allocator']}; C8, N = {rows[0]['n']} rotated digits, geed with every G-EED variant "
             f"against the bare passes, paired within each of {repeats} interleaved rounds: the median ratio and, in brackets, "
             "the smallest and largest. *multiply-adds per value*: the forward's multiply-adds per value of the feature maps "
             f"the channelwise metric reads. Command: `{prov['command']}`.", "",
             "| model | width | multiply-adds per value | bare forward passes (s) | geed (s) | geed / bare |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['width']:g} | {r['macs_per_value']:.0f} | {r['bare_s']:.3f} | {r['geed_s']:.3f} | "
              f"{r['ratio']:.2f}x ({r['lo']:.2f}-{r['hi']:.2f}) |" for r in rows]
    return lines


PASS_JOBS = [("C8", 33, 48), ("C4", 33, 48), ("D4", 16, 64), ("C8", 25, 24), ("C8", 13, 48), ("C8", 7, 96)]  # group, side, channels


def pass_timings(rounds: int = 31, samples: int = 64) -> list[dict]:
    """The CPU's compiled channelwise pass alone (``geed._fused.channelwise``), on random maps of ``samples``
    orbit inputs (|G| x N = 64: a block of the default chunk), in milliseconds: as it forms each element's
    targets (the identity from the reference itself, one-pixel maps through an index row, interpolated
    rotations built along the (sample, channel) axis and turned, those that are a one-pixel map after
    another read from its turned targets through an index row, a block of rows at a time) against no
    interpolated map derived from another, against every element built and turned, and against every
    (sample, channel) row in one block (each element over the whole maps before the next). Medians over
    interleaved rounds (in an order reversed every other round); the values of the four are checked equal
    first (to 1e-12: the same sums, maybe added in another order)."""
    from unittest import mock

    import numpy as np

    import geed
    from geed import _fused
    from geed.actions import SpatialAction

    rows = []
    for group_name, side, channels in PASS_JOBS:
        group = geed.get_group(group_name)
        gen = torch.Generator().manual_seed(0)
        n = max(1, samples // len(group))
        Y, ref = torch.rand(len(group), n, channels, side, side, generator=gen), torch.rand(n, channels, side, side, generator=gen)
        ways = {"as formed": SpatialAction(group)}
        for label, switch, value in [("none derived", "COMPOSE_TOL", -1.0),  # no map counts as derived from another
                                     ("all built and turned", "direct_reads", False),  # every element the interpolated way
                                     ("one block", "_rows_per_block", lambda S, itemsize: 1 << 30)]:  # every row at once
            with mock.patch.object(_fused, switch, value):
                ways[label] = SpatialAction(group)
                _fused._plan(ways[label], channels, side, side)  # its tables, built now
        values = {label: _fused.channelwise(Y, ref, action) for label, action in ways.items()}
        first = values["as formed"]
        for label, other in values.items():
            # equal to rounding: a derived element's sums may be vectorised in another order than a built one's
            if not (np.allclose(first[0], other[0], rtol=0, atol=1e-12, equal_nan=True) and first[1] == other[1]):
                raise SystemExit(f"{group_name} {side} x {side}: the pass as formed and {label!r} disagree")
        times = _interleaved({label: lambda action=action: _fused.channelwise(Y, ref, action) for label, action in ways.items()}, rounds)
        kind_names = {_fused.IDENTITY: "identity", _fused.ONE_PIXEL: "one pixel", _fused.GATHERED: "interpolated",
                      _fused.DERIVED: "derived"}
        plan = _fused._plan(ways["as formed"], channels, side, side)
        rows.append({"group": group_name, "maps": f"{n} x {channels} x {side} x {side}",
                     "elements": ", ".join(kind_names[int(k)] for k in plan["kind"][plan["elements"]]),
                     **{label: 1e3 * float(np.median(t)) for label, t in times.items()}})
    return rows


def _fused_available(device: str = "cpu") -> bool:
    """Whether geed has a compiled channelwise pass on ``device`` (numba on a CPU, Triton on a GPU)."""
    from geed import _fused, _fused_cuda

    return _fused.available() if device == "cpu" else _fused_cuda.available()


def _vm(key: str) -> float:
    """A field of /proc/self/status in MB (VmRSS: resident now; VmHWM: the peak since the last reset)."""
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def _block(job) -> int:
    """Samples per block: their whole orbit is one forward chunk, as in ``geed.evaluate``."""
    return max(1, job.chunk // len(job.group))


def _chunked_bare(job) -> Callable[[torch.Tensor], None]:
    """The bare forward passes with the orbit built block by block, as ``geed.evaluate`` builds it
    (the timed ``bare`` builds the whole orbit at once, which costs the same time but not the same memory)."""
    block = _block(job)

    def run(x: torch.Tensor) -> None:
        with torch.no_grad():
            for s in range(0, x.shape[0], block):
                job.model(job.group.orbit(x[s : s + block]).reshape(-1, *x.shape[1:]))

    return run


def _peak_child(name: str, group_name: str, n: int, method: str) -> None:
    """Run in a subprocess: print the peak resident memory of one run of ``method`` (``geed``: one
    evaluation; ``bare``: the bare forward passes over the orbit, block by block) above the resident
    memory just before it, and the peak in all. The same method first runs on one block (allocator and
    kernels warm), and the peak mark is reset, so loading the model and data does not count."""
    import gc

    job = _job(name, group_name, n)
    run = job.measure if method == "geed" else _chunked_bare(job)
    run(job.x[: max(2, _block(job))])  # one block (at least the 2 points the normaliser M needs)
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the resident memory now
    except OSError as err:
        print(f"cannot reset the peak memory mark ({err}): the peak includes loading the model and data", file=sys.stderr)
    base = _vm("VmRSS")
    run(job.x)
    peak = _vm("VmHWM")
    print(json.dumps({"above_mb": peak - base, "peak_mb": peak}))


MEMORY_RUNS = (("bare", {}), ("geed", {}), ("geed, fixed mmap threshold", {"MALLOC_MMAP_THRESHOLD_": "65536"}))


def peak_memory(name: str, group_name: str, n: int, threads: int, repeats: int) -> dict:
    """Peak memory of the bare forward passes and of geed (with glibc's default allocator, and with a fixed
    mmap threshold, which takes out heap fragmentation), a fresh subprocess per run, ``repeats`` rounds
    interleaved: where glibc places a run's short-lived buffers varies from process to process by tens of MB."""
    out: dict = {"model": name, "group": group_name, "n": n, "runs": {label: [] for label, _ in MEMORY_RUNS}}
    for _ in range(repeats):
        for label, extra in MEMORY_RUNS:
            method = label.partition(",")[0]
            run = subprocess.run([sys.executable, __file__, "--threads", str(threads), "--child", name, group_name, str(n), method],
                                 capture_output=True, text=True, check=True, env={**os.environ, **extra})
            out["runs"][label].append(json.loads(run.stdout.strip().splitlines()[-1]))
    for label, runs in out["runs"].items():
        above, peak = sorted(r["above_mb"] for r in runs), sorted(r["peak_mb"] for r in runs)
        out[label] = {"above": statistics.median(above), "lo": above[0], "hi": above[-1], "peak": statistics.median(peak)}
    return out


def gpu_peak_memory(name: str, group_name: str, n: int, device: str = "cuda") -> dict:
    """Peak GPU memory of the bare forward passes (the orbit built block by block) and of geed, above
    the memory allocated just before each run, from PyTorch's allocator (exact, unlike a process's
    resident memory: no subprocesses needed). Each method first runs on one block."""
    job = _job(name, group_name, n, device)
    runs = {"bare": _chunked_bare(job), "geed": job.measure}
    out: dict = {"model": name, "group": group_name, "n": n, "chunk": job.chunk, "device": device}
    for label, run in runs.items():
        run(job.x[: max(2, _block(job))])
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run(job.x)
        _sync(device)
        out[label] = {"above": (torch.cuda.max_memory_allocated(device) - base) / 2**20, "base": base / 2**20}
    return out


def _gap(a, b) -> float:
    """The largest |a - b| over the defined values; infinite where one is undefined and the other not."""
    import numpy as np

    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    defined = ~np.isnan(a)
    return float(np.abs(a[defined] - b[defined]).max()) if defined.any() else 0.0


AGREEMENT = ("GPU, full float32", "GPU, TF32 convolutions", "CPU, float64")


def gpu_agreement(name: str, group_name: str, n: int, device: str = "cuda") -> dict:
    """How far geed's values on the GPU are from the CPU's (float32): measured in full float32 (as geed
    measures) and with cuDNN's TF32 convolutions (PyTorch's default), beside the CPU's own float64
    values, which show the size of float32 rounding itself. For each: the largest difference of a
    per-(sample, element) value and where, and the largest difference of a metric's mean."""
    from contextlib import contextmanager

    import geed
    import geed.orbit as orbit

    job = _job(name, group_name, n, "cpu")

    def values(model, x, dtype=None) -> dict:
        report = geed.evaluate(model, x, job.group, channelwise=job.cw, latent=job.latent, chunk_size=job.chunk, dtype=dtype)
        return {f"{metric} {layer}": r for (metric, layer), r in report.results.items()}

    @contextmanager
    def tf32():
        conv = torch.backends.cudnn.conv
        old, conv.fp32_precision = conv.fp32_precision, "tf32"
        try:
            yield
        finally:
            conv.fp32_precision = old

    def on_device(precision) -> dict:
        saved, orbit.full_float32 = orbit.full_float32, precision
        try:
            return values(job.model, job.x.to(device))
        finally:
            orbit.full_float32 = saved

    cpu = values(job.model, job.x)
    other = {"CPU, float64": values(job.model, job.x, torch.float64)}
    job.model.to(device)
    other["GPU, full float32"] = on_device(orbit.full_float32)
    other["GPU, TF32 convolutions"] = on_device(tf32)
    out: dict = {"model": name, "group": group_name, "n": n}
    for label in AGREEMENT:
        pairs = {k: _gap(other[label][k].per_pair, cpu[k].per_pair) for k in cpu}
        worst = max(pairs, key=pairs.get)
        out[label] = {"max": pairs[worst], "where": worst, "mean": max(abs(other[label][k].value - cpu[k].value) for k in cpu)}
    return out


PLAIN_LOOP_MAX_N = 16  # the plain loop runs one input per forward pass: timed on the smallest N only
CONFIGS = [("cnn", "C8", (16, 256, 1024)), ("c8cnn", "C8", (16, 256, 1024)),
           ("resnet18", "C8", (16, 256, 1024)),
           ("resnet18", "D4", (16, 256)), ("resnet50", "C4", (16, 64, 256)),
           # the digit models at the paper's width (8 times the default): the forward grows with the
           # square of the width, the metric with the width
           ("cnn@1.0", "C8", (16,)), ("c8cnn@1.0", "C8", (16,))]
MEMORY_CONFIGS = [("resnet18", "C8", (64, 1024)), ("c8cnn", "C8", (64, 1024))]
QUICK_MEMORY = [("c8cnn", "C8", (64, 256))]
QUICK = [("cnn", "C8", (16, 64)), ("c8cnn", "C8", (16, 64)), ("resnet18", "D4", (16,))]
# on a GPU: the same configurations and, at the paper's scale, ResNet50 on 224 x 224 images, 100 inputs x C8
GPU_CONFIGS = CONFIGS + [("resnet50@224", "C8", (16, 100))]
# memory on a GPU in whole blocks (N = 1 and 4 times the samples of one block, which follows the card's memory):
# the peak follows the block, and should not grow with the number of blocks
GPU_MEMORY_BLOCKS = [("resnet18", "C8", (1, 4)), ("c8cnn", "C8", (1, 4)), ("resnet50@224", "C8", (1, 4))]
GPU_AGREEMENT = [("c8cnn", "C8", 64), ("cnn", "C8", 64), ("resnet18", "C8", 64)]


def _mb(cell: dict) -> str:
    return f"{cell['above']:.0f} ({cell['lo']:.0f}-{cell['hi']:.0f})"


def _ratio(cell: dict | None) -> str:
    if cell is None:
        return "-"
    return f"{cell['ratio']:.2f}x ({cell['lo']:.2f}-{cell['hi']:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1,
                    help="intra-op threads (default 1: an OpenMP team spin-waits under load, which inflates small parallel work)")
    ap.add_argument("--quick", action="store_true", help="fewer, smaller configurations")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--breakdown", metavar="MODEL", help="profile where geed's time goes beside the bare passes for one model "
                    "(C8, N = 256; cnn, c8cnn, resnet18, ...), print it and stop")
    ap.add_argument("--split", metavar="MODEL", help="time geed with every variant, with the channelwise layers captured but their "
                    "metric not computed, without channelwise, with the output metrics only and with no metric, against the bare "
                    "passes (C8, N = 32, --repeats rounds), print it and stop")
    ap.add_argument("--pass-only", action="store_true", help="time the CPU's compiled channelwise pass alone, as it forms each "
                    "element's targets against none derived from another, every element built and turned, and every row in one "
                    "block (printed, not written to the README)")
    ap.add_argument("--widths", action="store_true", help="time geed against the bare passes for the digit models at widths "
                    f"{', '.join(f'{w:g}' for w in WIDTHS)} (C8, N = --n, --repeats rounds), with the forward's multiply-adds per "
                    "value the pass reads, written to the README's widths block")
    ap.add_argument("--n", type=int, default=64, help="samples for --widths (default 64)")
    ap.add_argument("--memory-repeats", type=int, default=3, help="subprocesses per memory configuration and method (default 3)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or a CUDA device (cuda, cuda:1): on a GPU, absolute times, "
                    "the allocator's peak memory and the values' agreement with the CPU, written to the README's GPU block")
    ap.add_argument("--malloc", choices=("fixed", "default"), default="fixed",
                    help="CPU timings with glibc's heap kept (fixed mmap and trim thresholds; default) or with its adaptive defaults")
    ap.add_argument("--json", metavar="PATH", help="also write every row and the provenance to PATH (JSON)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads < 1:
        ap.error(f"--threads must be at least 1; got {args.threads}")
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1; got {args.repeats}")
    if args.n < 1:
        ap.error(f"--n must be at least 1; got {args.n}")
    if args.widths and args.device != "cpu":
        ap.error("--widths times the CPU")
    if args.memory_repeats < 1:
        ap.error(f"--memory-repeats must be at least 1; got {args.memory_repeats}")
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        ap.error(f"--device {args.device!r}: " + ("no CUDA device is available" if args.device.startswith("cuda") else "expected cpu or cuda[:index]"))
    torch.set_num_threads(args.threads)  # the thread policy is explicit, in this process and in the memory subprocesses
    writes = not (args.child or args.no_readme or args.breakdown or args.split or args.pass_only)
    if writes:  # the block a result goes to is found before the work, not after it
        marker = "benchmark-widths" if args.widths else "benchmark" if args.device == "cpu" else "benchmark-gpu"
        if not _block_pattern(marker).search((ROOT / "README.md").read_text()):
            ap.error(f"README.md has no <!-- {marker}:start --> ... <!-- {marker}:end --> block to write the result into "
                     "(add it, or pass --no-readme)")
    if args.child:
        _peak_child(args.child[0], args.child[1], int(args.child[2]), args.child[3])
        return
    args.allocator = fix_allocator(args.malloc) if args.device == "cpu" else None
    if args.breakdown:
        for r in breakdown(args.breakdown):
            b, g = r["bare"], r["geed"]
            print(f"{args.breakdown} C8 N=256, {args.threads} thread(s), seconds under cProfile: bare {b['wall']:.3f} "
                  f"(model ops {b['model']:.3f}, rest {b['rest']:.3f}); geed {g['wall']:.3f} (model ops {g['model']:.3f}, "
                  f"compiled pass {g['compiled']:.3f}, rest {g['rest']:.3f}); as shares of the bare model ops: compiled "
                  f"{g['compiled'] / b['model']:.1%}, extra rest {(g['rest'] - b['rest']) / b['model']:.1%}, "
                  f"model ops {g['model'] / b['model'] - 1:+.1%}", flush=True)
        return
    if args.split:
        for method, r in split(args.split, rounds=args.repeats).items():
            print(f"{args.split} C8 N=32, {args.threads} thread(s), {args.allocator}, {args.repeats} rounds: {method}: {r['median']:.3f}x the bare passes "
                  f"(quartiles {r['q1']:.3f}-{r['q3']:.3f})", flush=True)
        return
    if args.pass_only:
        for r in pass_timings():
            print(f"{r['group']} on {r['maps']} maps ({r['elements']}): the pass {r['as formed']:.2f} ms; "
                  f"none derived {r['none derived']:.2f} ms; every element built and turned {r['all built and turned']:.2f} ms; "
                  f"every row in one block {r['one block']:.2f} ms", flush=True)
        return
    if args.widths:
        rows = width_ratios(WIDTHS, n=args.n, rounds=args.repeats)
        prov = provenance(args)
        _publish(args, "benchmark-widths", widths_lines(rows, prov, args.repeats), {"widths": rows}, prov)
        return
    if args.device != "cpu":
        gpu_main(args)
        return
    configs = QUICK if args.quick else CONFIGS
    rows = []
    for name, g, ns in configs:
        for n in ns:
            rows.append(time_ratio(name, g, n, args.repeats))
            print(json.dumps(rows[-1]), flush=True)
    mem = [peak_memory(name, g, n, args.threads, args.memory_repeats) for name, g, ns in (QUICK_MEMORY if args.quick else MEMORY_CONFIGS) for n in ns]
    for m in mem:
        print(json.dumps({k: v for k, v in m.items() if k != "runs"}), flush=True)
    prov = provenance(args)
    device = (f"{prov['device']}, {args.threads} thread{'s' if args.threads > 1 else ''}, torch {prov['torch']}, {_sources(prov)}, "
              f"timings with {args.allocator}")
    command = prov["command"]
    lines = [f"Measured on {device}; in each of {args.repeats} interleaved rounds (the order of the methods reversed every other round) every method's time is divided by the bare "
             "forward passes' time of the same round; the table gives the median ratio over rounds and, in brackets, the "
             "smallest and largest. Digit models: rotated digits, default widths; ResNets: random weights, 64 x 64 random images, "
             "channelwise at layer1-4, latent at avgpool; digits beyond the 900 of the test split come from the training split. *plain loop*: one forward pass per sample and element, the same "
             "metrics per sample (smallest N, default widths only); *e2cnn recipe*: `check_equivariance`'s two forward passes per element "
             "(C8-CNN at its default width only); *tensor path*: geed with its channelwise metric in tensor operations instead of "
             f"the compiled pass. `@1.0`: the paper profile's width (8 times the default). Command: `{command}`.", "",
             "| model | group | N | chunk | bare forward passes (s) | geed, all G-EED variants (s) | geed / bare | geed, tensor path / bare "
             "| plain loop / bare | e2cnn recipe / bare |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['group']} | {r['n']} | {r['chunk']} | {r['bare']['s']:.3f} | {r['geed']['s']:.3f} | {_ratio(r['geed'])} | "
              f"{_ratio(r.get('geed, tensor path'))} | {_ratio(r.get('plain loop'))} | {_ratio(r.get('e2cnn recipe'))} |" for r in rows]
    lines += ["", f"Peak resident memory above the resident memory just before the run (the same method first ran on one block; "
              f"the peak mark reset before the run), the median over {args.memory_repeats} fresh subprocesses per method and, in brackets, "
              "the smallest and largest: where glibc places a run's short-lived buffers varies from process to process. *bare*: the "
              "forward passes over the orbit, built block by block; *fixed mmap threshold*: geed with `MALLOC_MMAP_THRESHOLD_=65536`, "
              "which takes out heap fragmentation.", "",
              "| model | group | N | bare (MB) | geed (MB) | geed, fixed mmap threshold (MB) | peak in all, bare / geed (MB) |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {m['model']} | {m['group']} | {m['n']} | " + " | ".join(_mb(m[label]) for label, _ in MEMORY_RUNS)
              + f" | {m['bare']['peak']:.0f} / {m['geed']['peak']:.0f} |" for m in mem]
    _publish(args, "benchmark", lines, {"time": rows, "memory": mem}, prov)


def _command(args) -> str:
    """The command line that reproduces a result, options at their defaults left out."""
    return "python scripts/benchmark.py" + (f" --device {args.device}" if args.device != "cpu" else "") + (
        f" --repeats {args.repeats}" if args.repeats != 7 else "") + (f" --threads {args.threads}" if args.threads != 1 else "") + (
        f" --memory-repeats {args.memory_repeats}" if args.memory_repeats != 3 and args.device == "cpu" else "") + (
        f" --malloc {args.malloc}" if args.malloc != "fixed" and args.device == "cpu" else "") + (
        " --quick" if args.quick else "") + (" --widths" + (f" --n {args.n}" if args.n != 64 else "") if getattr(args, "widths", False) else "")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
FIXED_MMAP, FIXED_TRIM = 32 * 2**20, 2**30  # glibc's largest mmap threshold on 64-bit; a trim threshold no run reaches


def fix_allocator(policy: str) -> str:
    """Keep glibc's heap for the timings of this process (``policy="fixed"``: see the module's note on
    the allocator) or leave it adaptive (``"default"``); returns what the timings ran under, for the
    provenance. Subprocesses are not affected (``mallopt`` acts on this process only)."""
    if policy not in ("fixed", "default"):
        raise ValueError(f"the allocator policy must be 'fixed' or 'default'; got {policy!r}")
    if policy == "default":
        return "glibc's adaptive defaults"
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "the platform's allocator (no glibc mallopt here)"
    if not (mallopt(M_MMAP_THRESHOLD, FIXED_MMAP) and mallopt(M_TRIM_THRESHOLD, FIXED_TRIM)):
        raise RuntimeError("glibc refused the fixed mmap and trim thresholds")
    return f"glibc mmap threshold {FIXED_MMAP >> 20} MiB, trim threshold {FIXED_TRIM >> 30} GiB"


def provenance(args) -> dict:
    """Where and from what a result comes: the machine, torch, the geed sources (a hash, as the book's
    cache keys use; the commit too where git is at hand), the date and the command."""
    from datetime import datetime, timezone

    from geed.report.cache import code_version

    try:
        git = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()  # noqa: E731
        commit = git("rev-parse", "--short", "HEAD")
        if git("status", "--porcelain", "--untracked-files=no"):  # the sources are not those of the commit
            commit += " with uncommitted changes"
    except (OSError, subprocess.CalledProcessError):
        commit = None
    gpu = args.device.startswith("cuda")
    return {"device": torch.cuda.get_device_name(args.device) if gpu else f"{platform.machine()} CPU",
            "threads": args.threads, "torch": torch.__version__, "cuda": torch.version.cuda if gpu else None,
            "geed_sources": code_version(), "commit": commit,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "command": _command(args),
            "allocator": args.allocator}


def _sources(prov: dict) -> str:
    """What a table timed, as its first line names it: the geed sources' hash, the commit where known, the date."""
    return f"geed sources {prov['geed_sources']}" + (f" (commit {prov['commit']})" if prov["commit"] else "") + f", {prov['date']}"


def _block_pattern(marker: str) -> "re.Pattern[str]":
    """The README's block for ``marker``: its start line, what it holds (possibly nothing) and its end line."""
    return re.compile(rf"(<!-- {marker}:start -->\n)(?:.*?\n)?(<!-- {marker}:end -->)", flags=re.S)


def _publish(args, marker: str, lines: list[str], rows: dict, prov: dict) -> None:
    """Print the result, write it between the README's ``marker`` comments and, with --json, to a file
    with its provenance."""
    text = "\n".join(lines)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"provenance": prov, **rows}, indent=1) + "\n")
    if not args.no_readme:
        readme = ROOT / "README.md"
        src = readme.read_text()
        new, found = _block_pattern(marker).subn(lambda m: m.group(1) + text + "\n" + m.group(2), src)
        if not found:
            raise SystemExit(f"README.md has no <!-- {marker}:start --> ... <!-- {marker}:end --> block to write the result into")
        readme.write_text(new)


def gpu_main(args) -> None:
    """The benchmark on a GPU: absolute times and ratios, the allocator's peak memory, and the
    agreement of the values with the CPU's, in full float32 and with TF32 convolutions."""
    rows = []
    for name, g, ns in (QUICK if args.quick else GPU_CONFIGS):
        for n in ns:
            rows.append(time_ratio(name, g, n, args.repeats, args.device))
            print(json.dumps(rows[-1]), flush=True)
    mem = []
    for name, g, blocks in ([("c8cnn", "C8", (1, 2))] if args.quick else GPU_MEMORY_BLOCKS):
        block = _block(_job(name, g, 1, args.device))
        mem += [{**gpu_peak_memory(name, g, k * block, args.device), "blocks": k} for k in blocks]
    for m in mem:
        print(json.dumps(m), flush=True)
    agree = [gpu_agreement(name, g, n, args.device) for name, g, n in (GPU_AGREEMENT[:1] if args.quick else GPU_AGREEMENT)]
    for a in agree:
        print(json.dumps(a), flush=True)
    prov = provenance(args)
    lines = [f"Measured on {prov['device']}, torch {prov['torch']} (CUDA {prov['cuda']}), {_sources(prov)}; times are medians over "
             f"{args.repeats} interleaved rounds, each ended when the GPU had finished; ratios are paired within rounds, as above. "
             "Both methods run in full float32 (geed measures so; see below). Digit models and ResNets as above; "
             "`resnet50@224`: ResNet50 on 224 x 224 random images, the paper's scale. On a GPU the channelwise metric is one Triton "
             "kernel per feature map (`geed._fused_cuda`); *tensor path*: the same metric in tensor operations instead. "
             f"Command: `{prov['command']}`.", "",
             "| model | group | N | chunk | bare forward passes (ms) | geed, all G-EED variants (ms) | geed / bare | geed, tensor path / bare "
             "| plain loop / bare | e2cnn recipe / bare |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['group']} | {r['n']} | {r['chunk']} | {1e3 * r['bare']['s']:.1f} | {1e3 * r['geed']['s']:.1f} | "
              f"{_ratio(r['geed'])} | {_ratio(r.get('geed, tensor path'))} | {_ratio(r.get('plain loop'))} | "
              f"{_ratio(r.get('e2cnn recipe'))} |" for r in rows]
    lines += ["", "Peak GPU memory above the memory allocated just before the run (PyTorch's allocator; the same method "
              "first ran on one block), for N of one and of four whole blocks (a block is as many samples as the chunk "
              "holds orbits, and the chunk follows the card's memory): the peak follows the block, not N. *bare*: the "
              "forward passes over the orbit, built block by block.", "",
              "| model | group | blocks | N | chunk | bare (MB) | geed (MB) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {m['model']} | {m['group']} | {m.get('blocks', '-')} | {m['n']} | {m['chunk']} | {m['bare']['above']:.0f} | "
              f"{m['geed']['above']:.0f} |" for m in mem]
    lines += ["", "How far the values are from the CPU's in float32, over every metric (N samples, all G-EED variants): the "
              "largest difference of a per-(sample, element) value (and where), and the largest difference of a metric's "
              "mean. *GPU, full float32*: as geed measures; *GPU, TF32 convolutions*: cuDNN's reduced-precision float32 "
              "convolutions, PyTorch's default on this GPU, which geed switches off while it measures; *CPU, float64*: "
              "the model copied to float64 on the CPU, the size of float32 rounding itself.", "",
              "| model | group | N | " + " | ".join(f"{label}: largest (where) | {label}: mean" for label in AGREEMENT) + " |",
              "| --- | --- | --- | " + " | ".join("--- | ---" for _ in AGREEMENT) + " |"]
    lines += [f"| {a['model']} | {a['group']} | {a['n']} | " + " | ".join(
              f"{a[label]['max']:.1e} ({a[label]['where']}) | {a[label]['mean']:.1e}" for label in AGREEMENT) + " |" for a in agree]
    _publish(args, "benchmark-gpu", lines, {"time": rows, "memory": mem, "agreement": agree}, prov)


if __name__ == "__main__":
    main()
