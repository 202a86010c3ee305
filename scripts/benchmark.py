"""Cost of computing every G-EED variant, as a ratio to the bare batched forward passes.

For a conventional CNN and a C8 steerable CNN (default widths), on N rotated digits under C8:

* bare: the model's forward pass over the |D| x |G| orbit inputs, in the same chunks, no hooks;
* full: ``geed.evaluate`` with channelwise G-EED after all six blocks, latent (l2, cosine, cosine
  unnormalised), softmax, DI and LI -- building the orbit included.

Timings are medians of interleaved repeats in one process (the machines are noisy). The result is
written between the benchmark markers of README.md.

    python scripts/benchmark.py [--n 50] [--repeats 7]
"""
from __future__ import annotations

import argparse
import platform
import re
import statistics
import time
from pathlib import Path

import torch

import geed
from geed.data import rotated_digits
from geed.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def _bare(model, x, group, chunk):
    with torch.no_grad():
        flat = group.orbit(x).reshape(-1, *x.shape[1:])
        for s in range(0, flat.shape[0], chunk):
            model(flat[s : s + chunk])


def _full(model, x, group, chunk):
    geed.evaluate(model, x, group, channelwise=model.layer_actions(group), latent=model.latent_layer, chunk_size=chunk)


def measure(n: int, repeats: int, chunk: int = 400) -> list[dict]:
    x = rotated_digits("test").subset(n).x
    group = geed.get_group("C8", mask=True)
    rows = []
    for family in ("cnn", "c8cnn"):
        model = build_model(family, seed=0).eval()
        _bare(model, x, group, chunk)
        _full(model, x, group, chunk)  # warm-up
        bare, full = [], []
        for _ in range(repeats):
            t = time.perf_counter(); _bare(model, x, group, chunk); bare.append(time.perf_counter() - t)
            t = time.perf_counter(); _full(model, x, group, chunk); full.append(time.perf_counter() - t)
        b, f = statistics.median(bare), statistics.median(full)
        rows.append({"model": family, "bare_s": b, "full_s": f, "ratio": f / b})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-readme", action="store_true")
    args = ap.parse_args()
    rows = measure(args.n, args.repeats)
    device = f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
    lines = [f"Measured on {device}: {args.n} digits x 8 rotations (C8, masked), default widths, "
             f"median of {args.repeats} interleaved repeats.", "",
             "| model | bare forward passes (s) | all G-EED variants (s) | ratio |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['bare_s']:.3f} | {r['full_s']:.3f} | {r['ratio']:.2f}x |")
    text = "\n".join(lines)
    print(text)
    if not args.no_readme:
        readme = ROOT / "README.md"
        src = readme.read_text()
        new = re.sub(r"(<!-- benchmark:start -->\n).*?(\n<!-- benchmark:end -->)", lambda m: m.group(1) + text + m.group(2), src, flags=re.S)
        readme.write_text(new)


if __name__ == "__main__":
    main()
