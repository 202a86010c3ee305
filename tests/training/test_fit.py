"""The training loop with each objective on image patches (supervised, SimCLR-style, DINO-style), and the augmentation."""
from dataclasses import replace

import pytest
import torch

from geed.data.patches import SIZE
from geed.training import FitConfig, augment, train
from tests.helpers import interrupt_before_saving


def test_augment_flips_about_half_crops_and_jitters_reproducibly():
    """On a left-to-right ramp, a flipped output is brighter on the left: about half of 400 images
    are (binomial, 4 SD), each output differs from its input, and a seed gives the same batch again."""
    n = 400
    ramp = torch.linspace(0.2, 0.8, SIZE).expand(n, 3, SIZE, SIZE).contiguous()
    out = augment(ramp, torch.Generator().manual_seed(0))
    assert out.shape == ramp.shape
    left, right = out[..., : SIZE // 3].mean(dim=(1, 2, 3)), out[..., -(SIZE // 3):].mean(dim=(1, 2, 3))
    flipped = int((left > right).sum())
    assert abs(flipped - n / 2) < 4 * (n / 4) ** 0.5, flipped
    assert bool(((out - ramp).abs().flatten(1).amax(1) > 1e-3).all())
    # the crop zooms in by a scale s uniform in [0.7, 1] and the contrast jitter multiplies by c uniform in
    # [0.8, 1.2], independently: a linear ramp's left-right difference becomes s c times the input's,
    # with mean 0.85 (1.0 without the crop; the mean of 400 has an SD of about 0.007)
    contrast = (left - right).abs() / (ramp[..., : SIZE // 3].mean() - ramp[..., -(SIZE // 3):].mean()).abs()
    assert abs(float(contrast.mean()) - 0.85) < 0.03 and 0.56 - 1e-3 <= float(contrast.min()) and float(contrast.max()) <= 1.2 + 1e-3
    # images stay in [0, 1]: a white image made brighter is clipped at 1
    bright = augment(torch.ones(50, 3, SIZE, SIZE), torch.Generator().manual_seed(0))
    assert float(bright.min()) >= 0.0 and float(bright.max()) == 1.0
    assert torch.equal(out, augment(ramp, torch.Generator().manual_seed(0)))
    assert not torch.equal(out, augment(ramp, torch.Generator().manual_seed(1)))


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["supervised", "simclr", "dino"])
def test_an_interrupted_fit_resumes_to_the_same_weights(tmp_path, objective):
    cfg = FitConfig(arch="resnet50-tiny", task="upright-photos", objective=objective, iterations=4, record_every=2, batch_size=4)
    full = train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False)
    folder = tmp_path / "b" / cfg.name()
    (folder / "step000004.pt").unlink()
    (folder / "result.json").unlink()
    resumed = train(cfg, tmp_path / "b", progress=False)
    a, b = full.model().state_dict(), resumed.model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], full.model(0).state_dict()[k]) for k in a)  # training changed something


def test_dino_keeps_the_teacher():
    cfg = FitConfig(arch="resnet50-tiny", task="upright-photos", objective="dino", iterations=2, record_every=2, batch_size=4)
    with pytest.raises(ValueError, match="objective"):
        FitConfig(objective="byol")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        res = train(cfg, d, progress=False)
        state = torch.load(res.checkpoints[2], weights_only=False)
    student = {k[5:]: v for k, v in state["model"].items() if k.startswith("body.")}
    teacher = {k[len("teacher_body."):]: v for k, v in state["objective"].items() if k.startswith("teacher_body.")}
    kept = {k[5:]: v for k, v in state["kept"].items() if k.startswith("body.")}
    assert all(torch.equal(kept[k], teacher[k]) for k in kept)
    assert not all(torch.equal(kept[k], student[k]) for k in kept)


def test_an_unknown_training_device_is_named(monkeypatch):
    from geed.training import training_device

    monkeypatch.setenv("GEED_DEVICE", "warp-drive")
    with pytest.raises(ValueError, match="GEED_DEVICE='warp-drive'"):
        training_device()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("objective", ["supervised", "simclr", "dino"])
def test_fit_on_cuda_saves_checkpoints_that_load_on_the_cpu(tmp_path, objective):
    cfg = FitConfig(arch="resnet50-tiny", task="upright-photos", objective=objective, iterations=2, record_every=1, batch_size=4)
    res = train(cfg, tmp_path, progress=False)
    assert all(p.device.type == "cpu" for p in res.model().parameters())


def test_a_resumed_fit_with_dropout_ends_where_an_uninterrupted_one_does(tmp_path, monkeypatch, capsys):
    cfg = FitConfig(arch="alexnet-tiny", task="upright-photos", objective="supervised", iterations=4, record_every=2, batch_size=4)
    full = train(cfg, tmp_path / "a", progress=False)
    interrupt_before_saving(monkeypatch, "step000004.pt", lambda: train(cfg, tmp_path / "b", progress=False))
    torch.manual_seed(12345)  # whatever the global generator holds when the run resumes
    resumed = train(cfg, tmp_path / "b", progress=True)
    assert "resuming from step 2" in capsys.readouterr().out
    a, b = full.model().state_dict(), resumed.model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_only_the_newest_checkpoint_keeps_the_training_state(tmp_path):
    cfg = FitConfig(arch="resnet50-tiny", task="upright-photos", objective="supervised", iterations=6, record_every=2, batch_size=4)
    res = train(cfg, tmp_path, progress=False)
    states = {s: torch.load(p, weights_only=False) for s, p in res.checkpoints.items()}
    assert set(states[6]) >= {"model", "optimizer", "generator", "kept"}
    assert all(set(states[s]) == {"kept", "step"} for s in (0, 2, 4))
    assert all(torch.equal(res.model(s).state_dict()[k], v) for s in (0, 6) for k, v in res.model(s).state_dict().items())


def test_a_run_interrupted_between_checkpoints_resumes_to_the_same_weights(tmp_path, monkeypatch, capsys):
    cfg = FitConfig(arch="alexnet-tiny", task="upright-photos", objective="supervised", iterations=6, record_every=2, batch_size=4)
    full = train(cfg, tmp_path / "a", progress=False)
    interrupt_before_saving(monkeypatch, "step000006.pt", lambda: train(cfg, tmp_path / "b", progress=False))
    resumed = train(cfg, tmp_path / "b", progress=True)
    assert "resuming from step 4" in capsys.readouterr().out
    a, b = full.model().state_dict(), resumed.model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)



@pytest.mark.slow
@pytest.mark.parametrize("augment", [True, False])
def test_a_supervised_patch_run_is_augmented_as_configured(tmp_path, monkeypatch, augment):
    from geed.training import loop

    calls = []
    monkeypatch.setattr(loop, "augment", lambda x, gen: calls.append(x.shape[0]) or x)
    cfg = FitConfig(arch="resnet50-tiny", task="upright-photos", objective="supervised", iterations=2, record_every=2, batch_size=4,
                    augment=augment)
    train(cfg, tmp_path, progress=False)
    assert calls == ([4, 4] if augment else [])


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["simclr", "dino"])
def test_the_self_supervised_heads_are_trained(tmp_path, objective):
    """The projection head of SimCLR and DINO's student head are optimised with the backbone: their
    weights after two steps differ from the same run's before any step."""
    cfg = FitConfig(arch="resnet50-tiny", task="upright-photos", objective=objective, iterations=0, record_every=2, batch_size=4)
    before = torch.load(train(cfg, tmp_path, progress=False).checkpoints[0], weights_only=False)["objective"]
    trained = train(replace(cfg, iterations=2), tmp_path, progress=False)
    after = torch.load(trained.checkpoints[2], weights_only=False)["objective"]
    key = "proj.0.weight" if objective == "simclr" else "head.0.weight"
    assert not torch.equal(before[key], after[key])
