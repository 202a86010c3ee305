"""Where geed's time goes on a GPU beside the bare forward passes (the README's GPU breakdown).

For each job of ``scripts/benchmark.py`` listed below: the time from the end of the GPU's work on the
last block to the finished report (median of 5), then one run of each method under ``torch.profiler``
with its wall time, the GPU kernels' time, the counts of kernel launches, copies and host
synchronisations, and geed's operations by GPU time and by CPU time.

    python scripts/profile_gpu.py [--threads 8]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        ap.error("no CUDA device is available: this script profiles geed on a GPU")
    from torch.profiler import ProfilerActivity, profile

    import geed.orbit as orbit

    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.set_num_threads(args.threads)
    stamps: list[float] = []
    real_result = orbit._Collected.result

    def result(self):  # the first result read: the GPU has finished the last block
        if not stamps:
            torch.cuda.synchronize()
            stamps.append(time.perf_counter())
        return real_result(self)

    orbit._Collected.result = result
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
    orbit._Collected.result = real_result


if __name__ == "__main__":
    main()
