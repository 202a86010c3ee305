"""Where geed's time goes on a GPU beside the bare forward passes (the README's GPU breakdown).

For each job of ``scripts/benchmark.py`` listed below: the time from the end of the GPU's work on the
last block to the finished report (median of 5), then one run of each method under ``torch.profiler``
with its wall time, the GPU kernels' time, the counts of kernel launches, copies and host
synchronisations, and geed's operations by GPU time and by CPU time.

    python scripts/profile_gpu.py [--threads 8]

``--count-ops`` needs no GPU: it counts the operations that launch GPU kernels (PyTorch's top-level
operations less views and allocations) in one evaluation of the CNN (C8, N = 1,024 unless ``--n`` says
otherwise, one block as on a GPU) run on the CPU with the GPU's bookkeeping; the Triton kernel's
launch is stood in for by its output tensors, the channelwise metric is not computed.

    python scripts/profile_gpu.py --count-ops [--n 1024]
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
JOBS = (("cnn", 1024), ("c8cnn", 1024), ("cnn", 256), ("resnet18", 256))


VIEWS = {"view", "_unsafe_view", "t", "transpose", "expand", "select", "slice", "unsqueeze", "squeeze", "permute", "as_strided",
         "detach", "alias", "reshape", "_reshape_alias", "empty", "empty_strided", "empty_like", "unbind", "split", "diagonal",
         "lift_fresh"}


def _benchmark():
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def count_ops(n: int = 1024) -> Counter:
    """Operations (less views and allocations) of one evaluation of the CNN on the CPU, as a GPU would
    launch them: the GPU's bookkeeping, the channelwise kernel's launch stood in for by its outputs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import geed
    from geed import _fused, _fused_cuda, orbit

    def stand_in(Y, ref, action):  # the kernel's outputs and the dead count's sum; no values computed
        G, N = Y.shape[:2]
        return torch.empty((N, G), dtype=torch.float64), torch.empty(G * N, dtype=torch.int32).sum()

    saved = (_fused.supports, _fused_cuda.supports, _fused_cuda.channelwise, orbit._SHARED_STORE)
    _fused.supports, _fused_cuda.supports, _fused_cuda.channelwise = (lambda *a: False), (lambda *a: True), stand_in
    orbit._SHARED_STORE = True
    ops: Counter = Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket.__name__)
            if name not in VIEWS:
                ops[name] += 1
            return func(*args, **(kwargs or {}))

    try:
        job = _benchmark()._job("cnn", "C8", n)
        run = lambda: geed.evaluate(job.model, job.x, job.group, channelwise=job.cw, latent=job.latent, chunk_size=4096)  # noqa: E731
        run()
        with torch.no_grad(), Count():
            run()
    finally:
        _fused.supports, _fused_cuda.supports, _fused_cuda.channelwise, orbit._SHARED_STORE = saved
    return ops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--count-ops", action="store_true", help="count the operations a GPU would launch, on the CPU")
    ap.add_argument("--n", type=int, default=1024, help="samples for --count-ops (default 1,024)")
    args = ap.parse_args()
    if args.count_ops:
        if args.n < 1:
            ap.error(f"--n must be at least 1; got {args.n}")
        ops = count_ops(args.n)
        print(f"cnn C8 N={args.n}: {sum(ops.values())} operations; the most frequent: {ops.most_common(12)}")
        return
    if not torch.cuda.is_available():
        ap.error("no CUDA device is available: this script profiles geed on a GPU")
    from torch.profiler import ProfilerActivity, profile

    import geed.orbit as orbit

    bench = _benchmark()
    torch.set_num_threads(args.threads)
    stamps: list[float] = []
    real_done = orbit._Collected.done

    def done(self):  # the first values read: the GPU has finished the last block
        if not stamps:
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())
        return real_done(self)

    orbit._Collected.done = done
    for name, n in JOBS:
        job = bench._job(name, "C8", n, "cuda")
        tails = []
        for _ in range(5):
            stamps.clear()
            job.full()
            tails.append(time.perf_counter() - stamps[0])
        print(f"{name} N={n}: from the GPU's last block to the report {1e3 * sorted(tails)[2]:.2f} ms (median of 5)", flush=True)
        for run in (job.bare, job.full):
            run()
            run()
        for label, run in (("bare", job.bare), ("geed", job.full)):
            t = time.perf_counter()
            run()
            wall = time.perf_counter() - t
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
                run()
            events = p.key_averages()
            gpu = sum(e.self_device_time_total for e in events) / 1e3
            calls = Counter({e.key: e.count for e in events if e.key.startswith("cuda")
                             and any(k in e.key for k in ("Sync", "Memcpy", "Launch"))})
            print(f"{name} N={n} {label}: wall {1e3 * wall:.1f} ms, GPU time (operations and kernels) {gpu:.1f} ms, {dict(calls)}",
                  flush=True)
            if label == "geed":
                print(events.table(sort_by="self_device_time_total", row_limit=22, max_name_column_width=60), flush=True)
                print(events.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=60), flush=True)
    orbit._Collected.done = real_done


if __name__ == "__main__":
    main()
