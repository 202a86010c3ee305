"""Patch tasks, resumable training with each objective, and the claim rules of Sections 4.3 and 4.4."""
import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from geed.report import claims as C
from geed.experiments.pretrained import claims_43
from geed.experiments.selfsup import LABELS, claims_44, summary
from geed.training import FitConfig, augment, train
from tests.helpers import interrupt_before_saving
from geed.groups import disc_mask
from geed.data.patches import SIZE, get_task


@pytest.mark.parametrize("name", ["orientation-free", "upright-photos"])
def test_patch_tasks_are_masked_reproducible_and_labelled(name):
    task = get_task(name)
    x, y = task.fixed("test", 40, seed=3)
    assert x.shape == (40, 3, SIZE, SIZE) and y.min() >= 0 and y.max() < task.n_classes == 9
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert float((x * (1 - disc_mask(SIZE, SIZE))).abs().max()) == 0  # nothing outside the disc
    x2, _ = task.fixed("test", 40, seed=3)
    assert torch.equal(x, x2)
    xt, _ = task.fixed("train", 40, seed=3)
    assert not torch.equal(x, xt)


def test_patch_task_errors():
    with pytest.raises(ValueError, match="unknown patch task"):
        get_task("imagenet")
    with pytest.raises(ValueError, match="split"):
        get_task("upright-photos").sample("val", 3, torch.Generator())


def test_augment_keeps_shape_and_range():
    x = torch.rand(6, 3, SIZE, SIZE)
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1


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


def _track43(scratch_better: bool, reverse: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A synthetic tracking table; the metrics in ``reverse`` order the initialisations the other way."""
    rng = np.random.default_rng(0)
    rows, acc = [], []
    for arch, init, seed, step in itertools.product(["a", "b"], ["from scratch", "pretrained"], range(4), [0, 10, 20]):
        trend = 1 + (0.002 if init == "from scratch" else -0.002) * step
        for metric, group in (("latent_l2", "C8"), ("latent_l2", "D8"), ("latent_cosine", "C8"), ("softmax", "C8")):
            low = ((init == "from scratch") == scratch_better) != (metric in reverse)
            v = (0.2 if low else 0.3) * trend + 1e-4 * rng.normal()
            rows.append({"arch": arch, "init": init, "seed": seed, "step": step, "metric": metric, "group": group, "value": v})
        if step == 20:
            acc.append({"arch": arch, "init": init, "seed": seed, "accuracy": (0.9 if init == "pretrained" else 0.8) + 1e-3 * rng.normal()})
    return pd.DataFrame(rows), pd.DataFrame(acc)


def _verdicts43(*args, **kw) -> dict[str, str]:
    return {cid: verdict.verdict for cid, _, _, verdict in claims_43(*args, **kw)}


def test_claims_43_follow_the_numbers():
    v = _verdicts43(*_track43(True))
    assert v["4.3-1-a"] == v["4.3-1-b"] == v["4.3-1-D8-a"] == C.HOLDS
    assert v["4.3-2-a"] == v["4.3-3-b"] == v["4.3-4-a"] == C.HOLDS
    # every metric orders the initialisations the same way: neither "depends on the metric" claim holds
    assert v["4.3-5-a"] == v["4.3-5-b"] == v["4.3-6"] == C.FAILS
    flipped = _verdicts43(*_track43(False))
    assert flipped["4.3-1-a"] == flipped["4.3-1-D8-b"] == C.FAILS
    reversed_ = _verdicts43(*_track43(True, reverse=("softmax", "latent_cosine")))
    assert reversed_["4.3-5-a"] == reversed_["4.3-5-b"] == reversed_["4.3-6"] == C.HOLDS


def test_claims_43_on_stand_in_weights_are_not_tested():
    v = _verdicts43(*_track43(True), stand_in={"a": "120 iterations on nine photographs"})
    assert v["4.3-1-a"] == v["4.3-3-a"] == v["4.3-4-a"] == v["4.3-5-a"] == C.NOT_TESTED
    assert v["4.3-2-a"] == C.HOLDS  # a claim about training from scratch needs no pretrained weights
    assert v["4.3-1-b"] == C.HOLDS and v["4.3-6"] == C.FAILS  # judged on the genuine architecture alone
    both = _verdicts43(*_track43(True), stand_in={"a": "x", "b": "y"})
    assert both["4.3-6"] == C.NOT_TESTED
    details = {cid: verdict for cid, _, _, verdict in claims_43(*_track43(True), stand_in={"a": "x"})}
    assert "on the stand-in the rule gives: holds" in details["4.3-1-a"].figures


def _table44(simclr_level: float, n_seeds: int = 1, dino_cosine: float = 0.4, rank: dict | None = None) -> pd.DataFrame:
    rank = rank or {}
    rng = np.random.default_rng(0)
    levels = {"supervised": 0.3, "simclr": simclr_level, "dino": 0.4}
    rows = []
    for (kind, lvl), seed, metric, i in itertools.product(levels.items(), range(n_seeds), ["latent_l2", "latent_cosine"], range(50)):
        if kind == "dino" and metric == "latent_cosine":
            lvl = dino_cosine
        rows.append({"model": LABELS[kind], "seed": seed, "metric": metric, "sample": i, "value": lvl + 0.01 * rng.normal(),
                     "M": 10.0 if metric == "latent_l2" else 0.7, "effective_rank": rank.get(kind, 5.0)})
    return pd.DataFrame(rows)


def _verdicts44(table: pd.DataFrame) -> dict[str, str]:
    return {cid: verdict.verdict for cid, _, _, verdict in claims_44(table)}


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_claims_44_follow_the_numbers(n_seeds):
    # DINO above the supervised model in both distances: the order does not depend on the distance
    assert _verdicts44(_table44(0.1, n_seeds)) == {"4.4-1": C.HOLDS, "4.4-2": C.HOLDS, "4.4-3": C.FAILS}
    assert _verdicts44(_table44(0.1, n_seeds, dino_cosine=0.2)) == {"4.4-1": C.HOLDS, "4.4-2": C.HOLDS, "4.4-3": C.HOLDS}
    v = _verdicts44(_table44(0.5, n_seeds))
    assert v["4.4-1"] == v["4.4-2"] == C.FAILS
    s = summary(_table44(0.1, n_seeds))
    assert set(s["interval"]) == {"across inputs" if n_seeds == 1 else "across models"}


def test_claims_44_with_a_collapsed_model_are_not_tested():
    table = _table44(0.1, 3, rank={"dino": 1.2})
    assert _verdicts44(table) == {"4.4-1": C.HOLDS, "4.4-2": C.NOT_TESTED, "4.4-3": C.NOT_TESTED}
    verdict = {cid: v for cid, _, _, v in claims_44(table)}["4.4-2"]
    assert verdict.history.startswith("without the collapse check: holds")


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


def test_the_papers_published_models_are_judged_when_measured():
    from geed.experiments.selfsup import PUBLISHED

    ours = _table44(0.1, 1)
    assert not any(cid.endswith("-published") for cid in _verdicts44(ours))
    names = {LABELS["supervised"]: PUBLISHED["resnet50"], LABELS["simclr"]: PUBLISHED["resnet50.simclr"], LABELS["dino"]: PUBLISHED["resnet50.dino"]}
    published = ours.assign(model=ours["model"].map(names))
    v = _verdicts44(pd.concat([ours, published]))
    assert v["4.4-1-published"] == v["4.4-2-published"] == C.HOLDS and v["4.4-3-published"] == C.FAILS


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
