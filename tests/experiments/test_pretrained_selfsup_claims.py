"""The claim rules of Sections 4.3 and 4.4 on synthetic tables whose verdicts are known."""
import itertools

import numpy as np
import pandas as pd
import pytest

from geed.experiments.pretrained import claims_43
from geed.experiments.selfsup import LABELS, claims_44, summary
from geed.report import claims as C


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


@pytest.mark.parametrize("n_seeds", [1, 2, 3])
def test_claims_44_follow_the_numbers(n_seeds):
    # DINO above the supervised model in both distances: the order does not depend on the distance
    assert _verdicts44(_table44(0.1, n_seeds)) == {"4.4-1": C.HOLDS, "4.4-2": C.HOLDS, "4.4-3": C.FAILS}
    assert _verdicts44(_table44(0.1, n_seeds, dino_cosine=0.2)) == {"4.4-1": C.HOLDS, "4.4-2": C.HOLDS, "4.4-3": C.HOLDS}
    v = _verdicts44(_table44(0.5, n_seeds))
    assert v["4.4-1"] == v["4.4-2"] == C.FAILS
    s = summary(_table44(0.1, n_seeds))
    assert set(s["interval"]) == {"across inputs" if n_seeds == 1 else "across models"}
    # the unit of the comparison: the shared inputs (paired) with one model each, else the models
    unit = "(paired)" if n_seeds == 1 else f"(n={n_seeds}/{n_seeds})"
    for _, _, _, verdict in claims_44(_table44(0.1, n_seeds)):
        assert verdict.figures.count(unit) == 2, verdict.figures


def test_claims_44_with_a_collapsed_model_are_not_tested():
    table = _table44(0.1, 3, rank={"dino": 1.2})
    assert _verdicts44(table) == {"4.4-1": C.HOLDS, "4.4-2": C.NOT_TESTED, "4.4-3": C.NOT_TESTED}
    verdict = {cid: v for cid, _, _, v in claims_44(table)}["4.4-2"]
    assert verdict.history.startswith("without the collapse check: holds")


def test_the_papers_published_models_are_judged_when_measured():
    from geed.experiments.selfsup import PUBLISHED

    ours = _table44(0.1, 1)
    assert not any(cid.endswith("-published") for cid in _verdicts44(ours))
    names = {LABELS["supervised"]: PUBLISHED["resnet50"], LABELS["simclr"]: PUBLISHED["resnet50.simclr"], LABELS["dino"]: PUBLISHED["resnet50.dino"]}
    published = ours.assign(model=ours["model"].map(names))
    v = _verdicts44(pd.concat([ours, published]))
    assert v["4.4-1-published"] == v["4.4-2-published"] == C.HOLDS and v["4.4-3-published"] == C.FAILS



def _default44(**changes) -> dict:
    params = dict(arch="efficientnet_lite0", init="imagenet", size=97, n_models=3, iterations=80, batch_size=32, lr=0.0005,
                  n_points=100, n_reference=100, include_published=True, weights_dir=None, seed=0)
    return {**params, **changes}


def test_the_earlier_protocol_is_shown_beside_runs_that_differ_from_it_in_budget_alone():
    from geed.experiments import section44 as s44

    earlier = s44.earlier_protocol(_default44())
    assert earlier is not None and earlier.changed == {"iterations": (150, 80)}
    assert set(earlier.table["model"]) >= {LABELS["supervised"], LABELS["simclr"], LABELS["dino"]}
    assert earlier.table.groupby("model")["seed"].nunique().min() >= 1
    for other in (_default44(iterations=150), _default44(n_models=1), _default44(arch="efficientnet_lite1"), _default44(init="scratch")):
        assert s44.earlier_protocol(other) is None
    # this run's verdicts and the earlier protocol's, by the same rules, in the history and side by side
    tables = {"table": _table44(0.1, 3)}
    got = {cid: v for cid, _, _, v, _ in s44.claims(tables, earlier)}
    before = {cid: v for cid, _, _, v in claims_44(earlier.table)}
    assert set(got) == set(before) == {"4.4-1", "4.4-2", "4.4-3"}
    for cid, v in got.items():
        assert v.verdict == _verdicts44(tables["table"])[cid]
        assert "at 150 training iterations per model" in v.history and f"{before[cid].verdict} ({before[cid].figures})" in v.history
    side = s44.protocol_comparison(tables, earlier)
    assert list(side["earlier protocol (150 iterations)"]) == [before[c].verdict for c in side["claim"]]
    assert list(side["this run (80 iterations)"]) == [got[c].verdict for c in side["claim"]]
    assert all(v.history.count("150 training iterations") == 0 for _, _, _, v, _ in s44.claims(tables))


def test_a_damaged_record_is_refused_before_any_work(tmp_path):
    import shutil

    from geed.experiments import section44 as s44

    for f in s44.RECORDS.iterdir():
        shutil.copy(f, tmp_path / f.name)
    csv = next(tmp_path.glob("*.csv"))
    csv.write_text(csv.read_text().replace("0.", "1.", 1))
    with pytest.raises(ValueError, match="does not match its checksum"):
        s44.earlier_protocol(_default44(), records=tmp_path)
    assert s44.earlier_protocol(_default44(iterations=150), records=tmp_path) is None  # not needed, not read
    csv.unlink()
    with pytest.raises(ValueError, match="missing"):
        s44.earlier_protocol(_default44(), records=tmp_path)
    next(tmp_path.glob("*.json")).write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        s44.earlier_protocol(_default44(), records=tmp_path)
    assert s44.earlier_protocol(_default44(), records=tmp_path / "none") is None


def test_section_44_divides_by_the_normaliser_of_its_reference_patches():
    """M of each model is the mean distance between its latent vectors on the reference patches (the
    test patches of the next seed), not on the measured ones."""
    from geed import orbit
    from geed.data.patches import get_task
    from geed.experiments import selfsup as S
    from geed.metrics import mean_pairwise
    from geed.models import create_model

    model = create_model("resnet50-tiny", n_classes=1, seed=0).eval()
    table = S.measure({"m": [model]}, n_points=3, n_reference=4, seed=2)
    x_ref, _ = get_task(S.TASK).fixed("test", 4, 3)
    Z = orbit.forward_outputs(model, x_ref, [model.latent_layer])[model.latent_layer]
    for dist in ("l2", "cosine"):
        M = float(table[table.metric == f"latent_{dist}"]["M"].iloc[0])
        assert M == pytest.approx(mean_pairwise(Z, dist), rel=1e-5), dist
    # the group is the left-right mirror: each input and its mirror image sit |z - z'| / 2 from their mean
    x, _ = get_task(S.TASK).fixed("test", 3, 2)
    z, zm = (orbit.forward_outputs(model, v, [model.latent_layer])[model.latent_layer].double() for v in (x, x.flip(-1)))
    by_hand = ((z - zm).norm(dim=1) / 2 / mean_pairwise(Z, "l2")).numpy()
    got = table[table.metric == "latent_l2"].sort_values("sample")["value"].to_numpy()
    assert got == pytest.approx(by_hand, rel=1e-4)


@pytest.mark.slow
def test_section_43_starts_the_pretrained_runs_from_the_pretrained_weights(tmp_path, monkeypatch):
    """Of the two initialisations, "pretrained" starts from the weights its loader writes and "from
    scratch" from the seeded random ones."""
    import torch

    from geed.experiments import pretrained as P

    monkeypatch.setenv("GEED_CACHE_DIR", str(tmp_path / "results"))

    def loader(model):
        with torch.no_grad():
            for p in model.body.parameters():
                p.fill_(0.5)

    runs = P.train_architecture("resnet50-tiny", [0], iterations=0, record_every=1, batch_size=2, lr=1e-3,
                                pretrained=("marked", loader), progress=False)
    start = {init: runs[init][0].model(0).body.state_dict() for init in P.INITS}
    weights = [k for k, v in start["pretrained"].items() if k.endswith("weight") and v.dim() > 1]
    assert weights and all(bool((start["pretrained"][k] == 0.5).all()) for k in weights)
    assert not any(bool((start["from scratch"][k] == 0.5).all()) for k in weights)


def test_section_43_measures_c8_on_the_rotations_of_its_d8_orbit():
    """C8-EED taken from the rotation half of the D8 orbit equals C8-EED from an orbit of C8 alone."""
    import geed
    from geed import orbit
    from geed.data.patches import get_task
    from geed.experiments import pretrained as P
    from geed.metrics import latent_eed
    from geed.models import create_model

    model = create_model("resnet50-tiny", n_classes=9, seed=0).eval()
    x, _ = get_task(P.TARGET_TASK).fixed("test", 3, 0)
    x_ref, _ = get_task(P.TARGET_TASK).fixed("test", 4, 1)
    rows = {(r["metric"], r["group"]): r["value"] for r in P.measure(model, x, x_ref)}
    c8 = geed.get_group("C8", mask=True)
    Z = orbit.orbit_outputs(model, x, c8, [model.latent_layer])[model.latent_layer]
    Z_ref = orbit.forward_outputs(model, x_ref, [model.latent_layer])[model.latent_layer]
    for dist in ("l2", "cosine"):
        want = latent_eed(Z, c8, dist, normalise=True, reference_points=Z_ref).value
        assert rows[(f"latent_{dist}", "C8")] == pytest.approx(want, rel=1e-5), dist


def test_section_43_takes_published_weights_when_a_file_is_there(tmp_path, monkeypatch):
    """``auto`` and ``published`` use a published file when one is found (nothing is trained then);
    ``published`` without one is an error, not a silent stand-in."""
    from geed.experiments import pretrained as P
    from geed.models.zoo import WeightsNotFound

    monkeypatch.setattr(P, "offline_pretraining", lambda *a, **k: pytest.fail("trained although a published file was found"))
    (tmp_path / "resnet50-11ad3fa6.pth").write_bytes(b"x")
    for source in ("auto", "published"):
        label, _, info = P.pretrained_source("resnet50", source, 1, 2, 1e-3, weights_dir=tmp_path, progress=False)
        assert label == "published:resnet50-11ad3fa6.pth" and info["weights"].startswith("published")
    with pytest.raises(WeightsNotFound):
        P.pretrained_source("resnet50-tiny", "published", 1, 2, 1e-3, weights_dir=tmp_path, progress=False)


def test_section_43_normalises_by_the_test_patches_of_the_next_seed(monkeypatch):
    """Each checkpoint is measured on the fixed test patches of ``seed`` and divided by M over those of
    ``seed + 1``: reference points apart from the measured ones."""
    from types import SimpleNamespace

    import torch

    from geed.data.patches import get_task
    from geed.experiments import pretrained as P

    seen = []
    monkeypatch.setattr(P, "measure", lambda model, x, x_ref: seen.append((x, x_ref)) or [{"metric": "m", "group": "C8", "value": 0.0}])
    res = SimpleNamespace(config=SimpleNamespace(size=17, seed=5), checkpoints={0: None, 3: None},
                          model=lambda step: torch.nn.Identity())
    rows = P.track_run(res, "arch", "pretrained", n_points=3, n_reference=4, seed=7)
    assert [r["step"] for r in rows] == [0, 3] and len(seen) == 2
    task = get_task(P.TARGET_TASK, 17)
    x, x_ref = task.fixed("test", 3, 7)[0], task.fixed("test", 4, 8)[0]
    for got_x, got_ref in seen:
        assert torch.equal(got_x, x) and torch.equal(got_ref, x_ref)


def test_claims_43_compare_with_a_checkpoint_after_the_start_of_training():
    """The changes over training are measured from the checkpoint nearest a sixth of training, never
    from step 0 (where a pretrained model has not yet met the task)."""
    texts = {cid: text for cid, _, text, _ in claims_43(*_track43(True))}
    assert "from step 10 to step 20" in texts["4.3-2-a"] and "from step 10 to step 20" in texts["4.3-3-b"]


def test_section_43_quotes_the_range_of_its_arms_mean_accuracies():
    import pandas as pd

    from geed.experiments import section43 as s43

    acc = pd.DataFrame({"arch": ["a", "a", "a", "a", "b", "b"], "init": ["scratch", "scratch", "pretrained", "pretrained", "scratch", "scratch"],
                        "seed": [0, 1, 0, 1, 0, 1], "accuracy": [0.50, 0.70, 0.90, 0.94, 0.30, 0.32]})
    assert s43.figures({"accuracies": acc}) == {"acc_range": "31% to 92%"}  # the arms' means, not single models (30% to 94%)
