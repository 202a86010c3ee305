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
    assert row["device"] == "cuda" and "geed, tensor path" not in row and row["geed"]["s"] > 0
    mem = bench.gpu_peak_memory("c8cnn", "C8", 4)
    assert mem["geed"]["above"] > 0 and mem["bare"]["above"] > 0
    agree = bench.gpu_agreement("c8cnn", "C8", 2)
    assert agree["GPU, full float32"]["mean"] < 1e-4 and agree["CPU, float64"]["max"] > 0
