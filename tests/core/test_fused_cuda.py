"""The Triton channelwise kernel (geed._fused_cuda) against the tensor path, run on a CPU through
Triton's interpreter (a subprocess: the interpreter is chosen when the kernel is defined). On a GPU,
tests/core/test_cuda.py runs the compiled kernel inside geed.evaluate."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytestmark = pytest.mark.slow  # a subprocess that starts Triton's interpreter: about a minute
ROOT = Path(__file__).resolve().parents[2]

# the cases of tests/core/test_fused.py's _orbit_like (dead channels, one side zero, a channel far
# below the zero tolerance), a diverged sample (NaN), channel permutations and an induced action;
# each compared with the tensor path, and one evaluation compared with evaluate_reference
SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch
    import geed
    from geed import _fused, _fused_cuda
    from geed.actions import InducedAction, SpatialAction
    from geed.metrics import _channelwise_values, _reference

    assert _fused_cuda.INTERPRETED
    sys.path.insert(0, {root!r})
    from tests.core.test_fused import ACTIONS, _orbit_like

    def permuting(group, C):
        rng = np.random.default_rng(1)
        return SpatialAction(group, [np.eye(C)] + [np.eye(C)[rng.permutation(C)] for _ in range(len(group) - 1)])

    cases = {{name: make for name, make in ACTIONS.items()}}
    cases["C8 masked, channels permuted"] = lambda: permuting(geed.get_group("C8", mask=True), 5)
    cases["D4, channels permuted"] = lambda: permuting(geed.get_group("D4"), 5)
    out = []
    for name, make in cases.items():
        action = make()
        for dtype in (torch.float32, torch.float64):
            for reference in ("orbit", "input"):
                for size in (13, 1):
                    Y = _orbit_like(action.group, 5, size, dtype, seed=len(name)) if size > 1 else torch.relu(
                        torch.randn(len(action.group), 4, 5, 1, 1, dtype=dtype, generator=torch.Generator().manual_seed(3)))
                    if name == "C8 masked" and size > 1:
                        Y[2:4, 2, 4] = float("nan")  # a diverged sample (with a channel below the tolerance): NaN in some maps
                    if name == "C4 masked" and size > 1:
                        Y[:, 3] = 0.0  # a sample whose maps are all zero: every pair undefined
                    got, dead = _fused_cuda.channelwise(Y, _reference(Y, action, reference), action)
                    _fused.enabled = False
                    want, want_dead, total = _channelwise_values(Y, action, reference)
                    _fused.enabled = True
                    g, w = got.numpy(), want.numpy()
                    same_nan = bool(np.array_equal(np.isnan(g), np.isnan(w)))
                    diff = float(np.nanmax(np.abs(g - w))) if np.isfinite(w).any() else 0.0
                    out.append(dict(case=name, dtype=str(dtype), reference=reference, size=size, same_nan=same_nan,
                                    diff=diff, dead=int(dead), want_dead=int(want_dead), total=total,
                                    nan=int(np.isnan(w).sum())))
    # geed.evaluate with the kernel (the CPU's compiled pass set aside) against evaluate_reference
    from geed.models import create_model
    from geed.data.digits import rotated_digits
    model = create_model("c8cnn", seed=0).eval()
    group = geed.get_group("C8", mask=True)
    x = rotated_digits("test").subset(5, seed=0).x
    cw = model.layer_actions(group)
    _fused.supports = lambda action, Y: False
    calls = []
    real = _fused_cuda.channelwise
    _fused_cuda.channelwise = lambda *a: calls.append(1) or real(*a)
    got = geed.evaluate(model, x, group, channelwise=cw, latent=model.latent_layer, chunk_size=16)
    _fused_cuda.channelwise = real
    _fused.enabled = False
    want = geed.orbit.evaluate_reference(model, x, group, channelwise=cw, latent=model.latent_layer)
    worst = max(float(np.nanmax(np.abs(got.results[k].per_pair - want.results[k].per_pair))) for k in want.results)
    dead = max(abs(got.results[k].meta.get("dead_fraction", 0) - want.results[k].meta.get("dead_fraction", 0)) for k in want.results)
    out.append(dict(case="evaluate", calls=len(calls), diff=worst, dead_diff=dead, keys=sorted(map(str, got.results)) == sorted(map(str, want.results))))
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def interpreted():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-c", SCRIPT.format(root=str(ROOT))], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_the_kernel_gives_the_tensor_paths_values_and_conventions(interpreted):
    cases = [c for c in interpreted if c["case"] != "evaluate"]
    assert len(cases) == 8 * 2 * 2 * 2
    for c in cases:
        tol = 2e-6 if c["dtype"] == "torch.float32" else 1e-12
        assert c["same_nan"] and c["diff"] <= tol, c
        assert c["dead"] == c["want_dead"], c
    # the conventions were exercised: dead channels left out, and a whole (sample, element) undefined
    assert any(0 < c["dead"] < c["total"] for c in cases) and any(c["nan"] > 0 for c in cases)


def test_evaluate_streams_through_the_kernel_to_the_reference_values(interpreted):
    (ev,) = [c for c in interpreted if c["case"] == "evaluate"]
    assert ev["calls"] > 0 and ev["keys"], ev
    assert ev["diff"] <= 2e-6 and ev["dead_diff"] <= 1e-12, ev
