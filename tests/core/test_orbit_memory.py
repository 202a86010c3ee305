"""Streaming evaluation holds its peak memory flat in the number of samples (each size measured in a
fresh subprocess, as the benchmark does)."""
import json
import os
import subprocess
import sys

import pytest

CHILD = r"""
import json, resource, sys
import torch, torchvision
import geed
torch.manual_seed(0)
torch.set_num_threads(1)
model = torchvision.models.resnet18(weights=None).eval()
n = int(sys.argv[1])
x = torch.rand(n, 3, 48, 48, generator=torch.Generator().manual_seed(0))
layers = {name: None for name in ("layer1", "layer2", "layer3", "layer4")}
g = geed.get_group("C4")
geed.evaluate(model, x[:4], g, channelwise=layers, latent="avgpool", chunk_size=32)  # warm-up: allocator and kernels
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
geed.evaluate(model, x, g, channelwise=layers, latent="avgpool", chunk_size=32)
print(json.dumps({"above_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}))
"""


# glibc's malloc raises its mmap threshold after large frees and then serves large blocks from a
# heap; where a run's short-lived buffers land there varies from process to process by tens of MB
# (the bare forward passes too), which would make the test flaky. A fixed threshold takes the
# allocator's placement out, so the test sees what the evaluation keeps.
ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}


def _peak_above_baseline(n: int) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, str(n)], capture_output=True, text=True, check=True, timeout=600, env=ENV)
    return json.loads(out.stdout.strip().splitlines()[-1])["above_mb"]


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_samples():
    """16x the samples (64 -> 1,024; 4,096 orbit inputs) with the same chunk: the peak above the
    warm-up stays within 10%, plus 8 MB for what must grow with N (the N latent vectors the
    normaliser M needs, the per-pair values). Measured: 9.8 -> 12.4 MB with feature maps scored inside
    the forward pass (10.7 -> 14.8 MB when they were kept to the end of each block; 11.2 -> 52 MB
    before the normaliser was computed in tiles and per-pair values were copied out of their block's buffers)."""
    small, large = _peak_above_baseline(64), _peak_above_baseline(1024)
    assert large <= 1.1 * small + 8, (small, large)
