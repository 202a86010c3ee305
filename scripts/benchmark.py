"""Cost of measuring: time as a ratio to the bare forward passes, and peak memory against N.

Time. For each model, group and N: *bare* is the model's forward pass over the |G| x N orbit
inputs in the same chunks, no hooks (building the orbit included); *full* is ``geed.evaluate`` with
channelwise G-EED at every listed feature-map layer, latent (l2, cosine, cosine unnormalised),
softmax, DI and LI. Both use the chunk that ``geed.evaluate`` chooses. Rounds are interleaved in
one process and the ratio is the median over rounds of full / bare of the same round (the
machines are noisy).

Memory. For each N, a fresh subprocess runs ``geed.evaluate`` once and reports its peak resident
memory above the memory after loading the model; with streaming it should not grow with N.

    python scripts/benchmark.py [--repeats 7] [--quick] [--no-readme]

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

import torch

ROOT = Path(__file__).resolve().parents[1]


def _setup(name: str):
    """(model, channelwise layers, latent layer, input shape) of a benchmark model."""
    from geed.models import create_model

    if name in ("cnn", "c8cnn"):
        model = create_model(name, seed=0).eval()
        return model, None, model.latent_layer, (1, 29, 29)
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    return model, ("layer1", "layer2", "layer3", "layer4"), "avgpool", (3, 64, 64)


def _inputs(name: str, shape, n: int) -> torch.Tensor:
    if name in ("cnn", "c8cnn"):
        from geed.data.digits import rotated_digits

        return rotated_digits("test").subset(n, seed=0).x
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0))


def _channelwise(model, layers, group):
    return model.layer_actions(group) if layers is None else {n: None for n in layers}


def time_ratio(name: str, group_name: str, n: int, repeats: int) -> dict:
    import geed
    from geed.orbit import auto_chunk_size

    model, layers, latent, shape = _setup(name)
    group = geed.get_group(group_name, mask=name in ("cnn", "c8cnn"))
    x = _inputs(name, shape, n)
    cw = _channelwise(model, layers, group)
    chunk = auto_chunk_size(model, x[:1], list(cw))

    def bare():
        with torch.no_grad():
            flat = group.orbit(x).reshape(-1, *x.shape[1:])
            for s in range(0, flat.shape[0], chunk):
                model(flat[s : s + chunk])

    def full():
        geed.evaluate(model, x, group, channelwise=cw, latent=latent, chunk_size=chunk)

    bare(), full()  # warm-up
    ratios, b_s, f_s = [], [], []
    for _ in range(repeats):
        t = time.perf_counter(); bare(); b = time.perf_counter() - t
        t = time.perf_counter(); full(); f = time.perf_counter() - t
        ratios.append(f / b), b_s.append(b), f_s.append(f)
    return {"model": name, "group": group_name, "n": n, "chunk": chunk, "bare_s": statistics.median(b_s),
            "full_s": statistics.median(f_s), "ratio": statistics.median(ratios)}


def _peak_child(name: str, group_name: str, n: int) -> None:
    """Run in a subprocess: print the peak resident memory of one evaluation above the baseline."""
    import resource

    import geed

    model, layers, latent, shape = _setup(name)
    group = geed.get_group(group_name, mask=name in ("cnn", "c8cnn"))
    x = _inputs(name, shape, n)
    cw = _channelwise(model, layers, group)
    geed.evaluate(model, x[:2], group, channelwise=cw, latent=latent)  # warm-up: allocator and kernels
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    geed.evaluate(model, x, group, channelwise=cw, latent=latent)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"above_mb": (peak - base) / 1024, "peak_mb": peak / 1024}))


def peak_memory(name: str, group_name: str, n: int) -> dict:
    """Peak above the warm-up with glibc's default allocator, and with a fixed mmap threshold (which
    takes out the heap fragmentation that grows with the number of allocations, whatever is kept)."""
    out = {"model": name, "group": group_name, "n": n}
    for label, extra in (("above_mb", {}), ("fixed_threshold_mb", {"MALLOC_MMAP_THRESHOLD_": "65536"})):
        run = subprocess.run([sys.executable, __file__, "--child", name, group_name, str(n)], capture_output=True, text=True, check=True,
                             env={**os.environ, **extra})
        out[label] = json.loads(run.stdout.strip().splitlines()[-1])["above_mb"]
    return out


CONFIGS = [("cnn", "C8", (16, 256, 896)), ("c8cnn", "C8", (16, 256, 896)),  # the digits' test split holds 900
           ("resnet18", "C8", (16, 256)),
           ("resnet18", "D4", (16, 256)), ("resnet50", "C4", (16, 64))]
QUICK = [("cnn", "C8", (16, 64)), ("c8cnn", "C8", (16, 64)), ("resnet18", "D4", (16,))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="fewer, smaller configurations")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _peak_child(args.child[0], args.child[1], int(args.child[2]))
        return
    configs = QUICK if args.quick else CONFIGS
    rows = []
    for name, g, ns in configs:
        for n in ns:
            rows.append(time_ratio(name, g, n, args.repeats))
            print(rows[-1], flush=True)
    # the digits' test split holds about 900 digits: 512 is the largest power of two below it
    mem = [peak_memory(name, g, n) for name, g, ns in (("resnet18", "C8", (64, 1024)), ("c8cnn", "C8", (64, 512))) for n in ns]
    for m in mem:
        print(m, flush=True)
    device = f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [f"Measured on {device}; medians over {args.repeats} interleaved rounds of the ratio within each round. "
             "Digit models: rotated digits, default widths; ResNets: random weights, 64 x 64 random images, channelwise at layer1-4, "
             "latent at avgpool. Command: `python scripts/benchmark.py`.", "",
             "| model | group | N | chunk | bare forward passes (s) | all G-EED variants (s) | ratio |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['group']} | {r['n']} | {r['chunk']} | {r['bare_s']:.3f} | {r['full_s']:.3f} | {r['ratio']:.2f}x |" for r in rows]
    lines += ["", "Peak resident memory of one evaluation above the memory after a warm-up (a subprocess per row), with glibc's "
              "default allocator and with a fixed mmap threshold (`MALLOC_MMAP_THRESHOLD_=65536`, which takes out heap fragmentation):", "",
              "| model | group | N | above baseline (MB) | with a fixed mmap threshold (MB) |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {m['model']} | {m['group']} | {m['n']} | {m['above_mb']:.0f} | {m['fixed_threshold_mb']:.0f} |" for m in mem]
    text = "\n".join(lines)
    print(text)
    if not args.no_readme:
        readme = ROOT / "README.md"
        src = readme.read_text()
        new = re.sub(r"(<!-- benchmark:start -->\n).*?(\n<!-- benchmark:end -->)", lambda m: m.group(1) + text + m.group(2), src, flags=re.S)
        readme.write_text(new)


if __name__ == "__main__":
    main()
