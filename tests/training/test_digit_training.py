"""Seeded, resumable training of the digit models: resume, reload, corrupt checkpoints, progress lines."""
import math

import pytest
import torch

from geed.data import digits as data
from geed.training import TrainConfig, accuracy, load_checkpoint, train
from geed.training.checkpoints import kept_state
from tests.helpers import interrupt_before_saving


def test_training_is_seeded_resumable_and_reloadable(tmp_path, monkeypatch):
    tr, te = data.load_digits("train"), data.rotated_digits("test").subset(60)
    cfg = TrainConfig(family="cnn-tiny", width=1 / 24, iterations=6, checkpoint_every=2, batch_size=8)
    a = train(cfg, tmp_path / "a", tr, te, progress=False)
    assert sorted(a.checkpoints) == [0, 2, 4, 6]
    # interrupted run: delete the last checkpoints and the result, train again -> resumes from step 2
    run_b = tmp_path / "b"
    interrupt_before_saving(monkeypatch, "step000004.pt", lambda: train(cfg, run_b, tr, te, progress=False))
    folder = run_b / cfg.name()
    (folder / "step000004.pt").write_bytes(b"half-written")  # a corrupt checkpoint is skipped with a warning
    with pytest.warns(UserWarning, match="unreadable"):
        b = train(cfg, run_b, tr, te, progress=False)
    assert b.resumed_from == 2
    wa, wb = load_checkpoint(cfg, a.checkpoints[6]).state_dict(), load_checkpoint(cfg, b.checkpoints[6]).state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # identical to the uninterrupted run
    c = train(cfg, tmp_path / "a", tr, te, progress=False)  # finished: reloaded, not retrained
    assert c.resumed_from == cfg.iterations and c.test_accuracy == a.test_accuracy
    assert 0.0 <= accuracy(c.model(), te) <= 1.0
    assert a.test_accuracy == accuracy(a.model(), te)  # the accuracy reported is the test set's


@pytest.mark.parametrize("family", ["c8cnn-tiny", "cnn-tiny"])
def test_a_saved_model_loads_back_to_the_same_function(tmp_path, family):
    """The live model (weights moved away from their seeded initialisation, batch-norm statistics
    set) and the model read back from its checkpoint give the same outputs; a loader that rebuilt
    the seeded model without reading the weights would fail."""
    from geed.training.checkpoints import cpu_state, save

    cfg = TrainConfig(family=family, width=1 / 24, iterations=2, checkpoint_every=1, batch_size=4)
    live = cfg.new_model(cfg.seed)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in live.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    live.train()
    live(data.load_digits("train").x[:16])  # moves the batch-norm running statistics
    live.eval()
    save({"kept": cpu_state(live), "step": 2}, tmp_path / "step000002.pt")
    loaded = load_checkpoint(cfg, tmp_path / "step000002.pt")
    fresh = cfg.new_model(cfg.seed).eval()
    x = data.rotated_digits("test").x[:5]
    with torch.no_grad():
        assert torch.allclose(loaded(x), live(x), atol=1e-6)
        assert not torch.allclose(fresh(x), live(x), atol=1e-3)


def test_train_config_errors():
    with pytest.raises(ValueError, match="iterations"):
        TrainConfig(iterations=-1)
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_corrupt_checkpoint_of_a_finished_training_is_named_and_retrained(tmp_path, capsys, damage):
    tr = data.load_digits("train")
    cfg = TrainConfig(family="cnn-tiny", width=1 / 24, iterations=6, checkpoint_every=2, batch_size=8)
    first = train(cfg, tmp_path, tr, None, progress=False)
    reference = {s: kept_state(torch.load(p, weights_only=False)) for s, p in first.checkpoints.items()}
    bad = first.checkpoints[2]
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"\0" * len(raw))
    with pytest.raises(RuntimeError, match="step000002.pt cannot be read"):
        first.model(2)
    with pytest.warns(UserWarning, match=r"corrupt checkpoint\(s\) \['step000002.pt'\]"):
        again = train(cfg, tmp_path, tr, None, progress=False)
    for s, p in again.checkpoints.items():  # rewritten from the last good checkpoint, identically
        state = kept_state(torch.load(p, weights_only=False))
        assert all(torch.equal(state[k], reference[s][k]) for k in state)


def test_the_first_loss_line_after_a_resume_averages_the_steps_it_covers(tmp_path, capsys, monkeypatch):
    tr = data.load_digits("train")
    cfg = TrainConfig(family="cnn-tiny", width=1 / 24, iterations=6, checkpoint_every=3, batch_size=8)
    train(cfg, tmp_path / "a", tr, None, progress=True, log_every=2)
    full = capsys.readouterr().out
    interrupt_before_saving(monkeypatch, "step000006.pt", lambda: train(cfg, tmp_path / "b", tr, None, progress=False))
    train(cfg, tmp_path / "b", tr, None, progress=True, log_every=2)
    resumed = capsys.readouterr().out
    line = [ln for ln in resumed.splitlines() if "step 4/6" in ln][0]
    assert "mean of the last 1 steps" in line  # only step 4 was run since the resume from step 3
    full_line = [ln for ln in full.splitlines() if "step 6/6" in ln][0]
    resumed_line = [ln for ln in resumed.splitlines() if "step 6/6" in ln][0]
    assert full_line.split("loss ")[1].split(" ")[0] == resumed_line.split("loss ")[1].split(" ")[0]



def test_a_pruned_run_reloads_its_last_checkpoint_and_retrains_identically_when_its_steps_are_needed(tmp_path, capsys):
    from geed.training import prune

    tr = data.load_digits("train")
    cfg = TrainConfig(family="cnn-tiny", width=1 / 24, iterations=6, checkpoint_every=2, batch_size=8)
    first = train(cfg, tmp_path, tr, None, progress=False)
    before = {s: kept_state(torch.load(p, weights_only=False)) for s, p in first.checkpoints.items()}
    prune(first)
    assert sorted(first.checkpoints) == [6] and sorted(q.name for q in (tmp_path / cfg.name()).glob("step*.pt")) == ["step000006.pt"]
    again = train(cfg, tmp_path, tr, None, progress=False, need_steps=False)  # reloaded: the last checkpoint is enough
    assert sorted(again.checkpoints) == [6] and again.resumed_from == cfg.iterations
    assert all(torch.equal(again.model().state_dict()[k], first.model().state_dict()[k]) for k in before[6])
    full = train(cfg, tmp_path, tr, None, progress=True, need_steps=True)  # the recorded steps are needed: trained again
    assert "pruned; training it again" in capsys.readouterr().out
    assert sorted(full.checkpoints) == [0, 2, 4, 6]
    for s, p in full.checkpoints.items():
        state = kept_state(torch.load(p, weights_only=False))
        assert all(torch.equal(state[k], before[s][k]) for k in state), s


@pytest.mark.parametrize("augment", [True, False])
def test_a_digit_run_trains_on_randomly_rotated_batches_when_augmented(tmp_path, monkeypatch, augment):
    """Every training batch of an augmented digit run passes through the random rotation, and no batch
    of an unaugmented one does (the CNN of Sections 4.1-4.2 learns its invariance from them)."""
    from geed.training import loop

    calls = []
    monkeypatch.setattr(loop, "random_rotation", lambda x, gen: calls.append(x.shape[0]) or x)
    cfg = TrainConfig(family="cnn-tiny", width=1 / 24, iterations=3, checkpoint_every=3, batch_size=4, augment=augment)
    train(cfg, tmp_path, data.load_digits("train"), None, progress=False)
    assert calls == ([4, 4, 4] if augment else [])


def test_the_cosine_schedule_starts_at_the_rate_and_decays_to_zero():
    cfg = TrainConfig(iterations=100, lr=2e-3)
    assert cfg.lr_at(1) == pytest.approx(2e-3, rel=1e-12)
    assert cfg.lr_at(51) == pytest.approx(1e-3, rel=1e-12)  # half way: cos(pi / 2) = 0
    assert cfg.lr_at(100) == pytest.approx(0.5 * 2e-3 * (1 + math.cos(math.pi * 0.99)), rel=1e-12) and cfg.lr_at(100) < 1e-6
    assert all(cfg.lr_at(i + 1) < cfg.lr_at(i) for i in range(1, 100))
    assert TrainConfig(iterations=100, lr=2e-3, schedule="constant").lr_at(100) == 2e-3


def test_accuracy_is_measured_in_evaluation_mode_and_changes_no_statistics():
    """A batch-norm model that is right on both points with its running statistics and wrong on one with
    the batch's own (training mode): accuracy 1, and the running statistics are left as they were."""
    from torch import nn

    from geed.training import accuracy_of

    model = nn.Sequential(nn.BatchNorm1d(2))
    model[0].running_mean.zero_(), model[0].running_var.fill_(1.0)
    x, y = torch.tensor([[10.0, 0.0], [10.0, 1.0]]), torch.tensor([0, 0])
    assert accuracy_of(model, x, y) == 1.0
    assert torch.equal(model[0].running_mean, torch.zeros(2)) and torch.equal(model[0].running_var, torch.ones(2))
