"""On a GPU geed gives the CPU's values (it measures in full float32 on every device), and the
benchmark's GPU rows run. Skipped without CUDA."""
import importlib.util
from pathlib import Path

import pytest
import torch

import geed

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
ROOT = Path(__file__).resolve().parents[2]


def _values(model, x, group, cw, latent) -> dict:
    report = geed.evaluate(model, x, group, channelwise=cw, latent=latent, references=("orbit", "input"))
    return {key: r.per_pair for key, r in report.results.items()}


@pytest.mark.parametrize("family", ["cnn", "c8cnn", "resnet18"])
def test_evaluate_on_a_gpu_gives_the_cpus_values(family):
    from geed.actions import SpatialAction
    from geed.models import create_model

    group = geed.get_group("C8", mask=family != "resnet18")
    if family == "resnet18":
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet18(weights=None).eval()
        cw, latent, x = {n: SpatialAction(group) for n in ("layer1", "layer2", "layer3", "layer4")}, "avgpool", torch.rand(6, 3, 32, 32)
    else:
        from geed.data.digits import rotated_digits

        model = create_model(family, seed=0).eval()
        cw, latent, x = model.layer_actions(group), model.latent_layer, rotated_digits("test").subset(6, seed=0).x
    cpu = _values(model, x, group, cw, latent)
    gpu = _values(model.cuda(), x.cuda(), group, cw, latent)
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # the caller's switch is handed back
    assert set(gpu) == set(cpu)
    for key in cpu:
        assert gpu[key] == pytest.approx(cpu[key], abs=1e-4, nan_ok=True), key


def test_the_benchmarks_gpu_rows_run(tmp_path):
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.time_ratio("c8cnn", "C8", 2, repeats=1, device="cuda")
    from geed import _fused_cuda

    assert row["device"] == "cuda" and row["geed"]["s"] > 0
    assert ("geed, tensor path" in row) == _fused_cuda.available()  # the tensor path is timed beside the kernel
    mem = bench.gpu_peak_memory("c8cnn", "C8", 4)
    assert mem["geed"]["above"] > 0 and mem["bare"]["above"] > 0
    agree = bench.gpu_agreement("c8cnn", "C8", 2)
    assert agree["GPU, full float32"]["mean"] < 1e-4 and agree["CPU, float64"]["max"] > 0


@pytest.mark.parametrize("name", ["C8 masked", "D4", "C8 -> C4"])
def test_the_triton_kernel_gives_the_tensor_paths_values_on_the_gpu(name, monkeypatch):
    pytest.importorskip("triton")
    import numpy as np

    from geed import _fused, _fused_cuda
    from geed.metrics import _channelwise_values, channelwise_eed
    from tests.core.test_fused import ACTIONS, _orbit_like

    action = ACTIONS[name]()
    calls = []
    real = _fused_cuda.channelwise
    monkeypatch.setattr(_fused_cuda, "channelwise", lambda *a: calls.append(1) or real(*a))
    for dtype, tol in ((torch.float32, 2e-6), (torch.float64, 1e-12)):
        Y = _orbit_like(action.group, 6, 13, dtype, seed=1).cuda()
        assert _fused_cuda.supports(action, Y)
        calls.clear()
        values, dead, _ = _channelwise_values(Y, action)
        assert calls and isinstance(values, torch.Tensor) and values.is_cuda and not _fused_cuda._BROKEN
        kernel = channelwise_eed(Y, action)
        monkeypatch.setattr(_fused, "enabled", False)
        tensor = channelwise_eed(Y, action)
        monkeypatch.setattr(_fused, "enabled", True)
        assert np.array_equal(np.isnan(kernel.per_pair), np.isnan(tensor.per_pair))
        np.testing.assert_allclose(kernel.per_pair, tensor.per_pair, rtol=tol, atol=tol)
        assert kernel.meta == tensor.meta and 0 < kernel.meta["dead_fraction"] < 1
