"""The claim rules of Sections 4.1 and 4.2 on synthetic tables whose verdicts are known."""
import itertools

import numpy as np
import pandas as pd

import pytest

from geed.experiments import rotated_digits as rd
from geed.experiments.rotated_digits import claims_41, claims_42
from geed.report import claims as C


def _track(c8_better: bool) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for fam, seed, step in itertools.product(["CNN", "C8-CNN"], range(4), [0, 10, 20]):
        good = (fam == "C8-CNN") == c8_better
        for b in range(1, 7):
            base = (-0.95 if good else -0.5) + 0.01 * b * (2 if fam == "C8-CNN" else 1)
            rows.append({"family": fam, "seed": seed, "step": step, "metric": "channelwise", "layer": f"block{b}",
                         "value": base + 0.001 * rng.normal()})
        for metric, lvl in (("latent_l2", 0.2), ("softmax", 0.01), ("latent_cosine", -1.1), ("latent_cosine_unnormalised", -0.99)):
            v = lvl * (0.8 if good else 1.0) * (1.0 - 0.01 * step) + 0.0001 * rng.normal()
            rows.append({"family": fam, "seed": seed, "step": step, "metric": metric, "layer": "latent", "value": v})
    return pd.DataFrame(rows)


def test_claims_41_follow_the_numbers():
    acc = pd.DataFrame({"accuracy": [0.99] * 8})
    v = {cid: verdict.verdict for cid, _, _, verdict in claims_41(_track(True), acc)}
    assert v["4.1-1"] == C.HOLDS and v["4.1-2"] == C.HOLDS and v["4.1-6-latent_l2"] == C.HOLDS
    assert v["4.1-3-CNN"] == C.HOLDS and v["4.1-4"] == C.HOLDS
    assert v["4.1-8-CNN-softmax"] == C.HOLDS
    flipped = {cid: verdict.verdict for cid, _, _, verdict in claims_41(_track(False), pd.DataFrame({"accuracy": [0.5] * 8}))}
    assert flipped["4.1-1"] == C.FAILS and flipped["4.1-2"] == C.FAILS and flipped["4.1-6-latent_l2"] == C.FAILS


def _ood(levels: dict, seed: int = 1) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(seed)
    for (model, (lat, soft)), s, ds in itertools.product(levels.items(), range(4), ["a", "b"]):
        rows.append({"model": model, "seed": s, "dataset": ds, "metric": "latent_l2", "value": lat + 0.005 * rng.normal()})
        rows.append({"model": model, "seed": s, "dataset": ds, "metric": "softmax", "value": soft + 1e-4 * rng.normal()})
    return pd.DataFrame(rows)


def _verdicts_42(levels: dict) -> dict:
    v = {cid: verdict.verdict for cid, _, _, verdict in claims_42(_ood(levels))}
    assert v.pop("4.2-7") == C.NOT_TESTED  # no in-distribution set in these tables
    return v


def test_claims_42_follow_the_numbers():
    as_in_the_paper = {"untrained CNN": (0.8, 1e-8), "CNN": (0.3, 0.02), "C8-CNN": (0.25, 0.01)}
    v = _verdicts_42(as_in_the_paper)
    assert all(x == C.HOLDS for x in v.values()), v
    # every ordering reversed: the comparisons say "does not hold"
    reversed_ = {"untrained CNN": (0.2, 0.05), "CNN": (0.25, 0.01), "C8-CNN": (0.3, 0.02)}
    r = _verdicts_42(reversed_)
    assert {k: r[k] for k in ("4.2-2", "4.2-3", "4.2-5", "4.2-6")} == dict.fromkeys(("4.2-2", "4.2-3", "4.2-5", "4.2-6"), C.FAILS), r
    # no difference between the models: nothing can be decided
    same = _verdicts_42(dict.fromkeys(as_in_the_paper, (0.3, 0.01)))
    assert {k: same[k] for k in ("4.2-2", "4.2-3", "4.2-5", "4.2-6")} == dict.fromkeys(("4.2-2", "4.2-3", "4.2-5", "4.2-6"), C.INCONCLUSIVE), same



def test_claim_42_7_places_the_trained_cnn_between_its_in_distribution_value_and_the_untrained_cnn():
    """Latent G-EED of the trained CNN out of distribution must lie above its own in-distribution value
    and below the untrained CNN's on the same set; the untrained CNN's in-distribution value plays no part."""
    def verdict(levels):  # (model, data set) -> latent l2 level
        rng = np.random.default_rng(3)
        rows = [{"model": m, "seed": s, "dataset": d, "metric": metric, "value": lv + 0.005 * rng.normal()}
                for (m, d), lv in levels.items() for s in range(4) for metric in ("latent_l2", "softmax")]
        return {cid: v.verdict for cid, _, _, v in claims_42(pd.DataFrame(rows))}["4.2-7"]

    between = {("CNN", "rotated-mnist"): 0.2, ("CNN", "noise"): 0.4, ("untrained CNN", "noise"): 0.8, ("untrained CNN", "rotated-mnist"): 0.6,
               ("C8-CNN", "rotated-mnist"): 0.1, ("C8-CNN", "noise"): 0.2}
    assert verdict(between) == C.HOLDS
    assert verdict({**between, ("CNN", "noise"): 0.1}) == C.FAILS  # more invariant out of distribution than in it
    assert verdict({**between, ("CNN", "noise"): 0.9}) == C.FAILS  # less invariant than the untrained CNN


def test_section3_sentences_follow_the_tables():
    import pandas as pd

    from geed.experiments import section3 as s3

    known = pd.DataFrame({"check": ["a", "b"], "abs_error": [1e-12, 3e-16]})
    assert "every check reproduces" in s3.known_answers_sentence(known)
    assert "checks off: b" in s3.known_answers_sentence(known.assign(abs_error=[1e-12, 0.2]))
    floor = pd.DataFrame({"model": "C8-CNN", "setting": ["C8, masked"] * 2 + ["C8, no mask"] * 2, "block": [1, 2, 1, 2], "mean": [0.1, 0.1, 0.15, 0.3]})
    assert s3.mask_sentence(floor).endswith("at 2 of 2 blocks, by 0.050 to 0.200, most at block 2")
    assert "at 0 of 2 blocks" in s3.mask_sentence(floor.assign(mean=[0.1, 0.1, 0.05, 0.0]))
    refs = pd.DataFrame({"model": ["A", "B"], "metric": "m", "orbit mean": [1.0, 2.0], "untransformed input": [3.0, 2.5]})
    assert "m: different orders (A < B against B < A)" == s3.orderings_sentence(refs)
    assert "the same order" in s3.orderings_sentence(refs.assign(**{"untransformed input": [1.0, 2.0]}))
    fig1 = pd.DataFrame({"model": ["X", "X"], "metric": ["channelwise (block 1)", "softmax (KL)"], "value": [-1.0, 0.0]})
    assert "exactly equivariant to 1e-6" in s3.figure1_sentence(fig1)
    assert "not exactly" in s3.figure1_sentence(fig1.assign(value=[-0.9, 0.0]))


@pytest.mark.slow
def test_long_measurements_report_progress(capsys):
    from geed.data.digits import rotated_digits
    from geed.experiments import section3 as s3

    x = rotated_digits("test").subset(2, seed=0).x
    floor = s3.interpolation_floor(x, 0.0417, [0])
    out = capsys.readouterr().out
    assert "[interpolation floor] c8cnn, model 1/1" in out and "[interpolation floor] cnn, model 1/1" in out
    # the settings are what their rows say: under C8, the corners that leave the frame count only without the mask
    c8 = floor[(floor.family == "c8cnn") & (floor.group == "C8")].pivot_table(index="block", columns="mask", values="deviation")
    assert not np.allclose(c8[True], c8[False])


def test_the_scale_table_scales_the_latent_space():
    """Section 3's table of scales: unnormalised latent G-EED is proportional to the scale of the latent
    space (the l2 distance is), and the value divided by M is the same at every scale."""
    from geed.data.digits import rotated_digits
    from geed.experiments import section3 as s3

    table = s3.normalisation_by_m(rotated_digits("test").subset(4, seed=0).x, 0.0417, 0, scales=(1.0, 10.0))
    raw = table[table.variant == "unnormalised"].set_index("scale")["mean"]
    normed = table[table.variant == "normalised by M"].set_index("scale")["mean"]
    assert raw[10.0] == pytest.approx(10 * raw[1.0], rel=1e-9) and normed[10.0] == pytest.approx(normed[1.0], rel=1e-9)


def test_claims_measured_under_another_group_say_so():
    acc = pd.DataFrame({"accuracy": [0.99] * 8})
    paper = {cid: (text, verdict.verdict) for cid, _, text, verdict in claims_41(_track(True), acc)}
    c4 = {cid: (text, verdict.verdict) for cid, _, text, verdict in claims_41(_track(True), acc, group="C4")}
    assert {k: v[1] for k, v in paper.items()} == {k: v[1] for k, v in c4.items()}  # the rules do not depend on the name
    assert "channelwise C8-EED" in paper["4.1-2"][0] and "C4" not in paper["4.1-2"][0]
    assert "channelwise C4-EED" in c4["4.1-2"][0] and c4["4.1-2"][0].endswith("(measured under C4; the paper measures under C8)")
    assert "C8-CNN" in c4["4.1-2"][0]  # the model keeps its name
    text42 = {cid: text for cid, _, text, _ in claims_42(_ood({"untrained CNN": (0.8, 1e-8), "CNN": (0.3, 0.02), "C8-CNN": (0.25, 0.01)}), group="D4")}
    assert "softmax D4-EED" in text42["4.2-5"] and "measured under D4" in text42["4.2-5"]


def test_out_of_distribution_the_normaliser_is_computed_on_each_data_set():
    """Section 4.2 divides latent G-EED on each data set by M of that data set's own reference points
    (the points after the measured ones), not by the in-distribution M."""
    from geed import orbit
    from geed.data.ood import ood_set
    from geed.metrics import mean_pairwise
    from geed.models import create_model

    sets = ["rotated-mnist", "uniform-noise"]
    table = rd.ood_measurements({}, [0], 0.0417, sets, n_points=3, n_reference=4, progress=False)
    model = create_model("cnn", width=0.0417, seed=0).eval()
    for name in sets:
        x_ref = ood_set(name, 7, 0)[3:]
        Z = orbit.forward_outputs(model, x_ref, [model.latent_layer])[model.latent_layer]
        row = table[(table.dataset == name) & (table.metric == "latent_l2")]
        assert float(row["M"].iloc[0]) == pytest.approx(mean_pairwise(Z, "l2"), rel=1e-5), name


def test_section_41_quotes_the_numbers_of_its_tables():
    """What the chapter's text quotes (``section41.figures``): each family's mean accuracy, the largest
    dead share of a block in the final models and where, the dimension check, and softmax at step 0."""
    from geed.experiments import section41 as s41

    track = _track(c8_better=True)
    track["dead_fraction"] = 0.0
    track.loc[(track.family == "C8-CNN") & (track.layer == "block3") & (track.step == 20), "dead_fraction"] = 0.25
    track.loc[(track.family == "CNN") & (track.layer == "block5") & (track.step == 10), "dead_fraction"] = 0.5  # not a final model
    first = (track.metric == "softmax") & (track.step == 0)
    track.loc[first & (track.family == "CNN"), "value"] = 0.002
    track.loc[first & (track.family == "C8-CNN"), "value"] = 0.004
    acc = pd.DataFrame({"family": ["CNN"] * 4 + ["C8-CNN"] * 4, "seed": list(range(4)) * 2,
                        "accuracy": [0.98] * 4 + [0.96, 0.94, 0.96, 0.94]})
    got = s41.figures({"track": track, "accuracies": acc})
    assert {k: got[k] for k in ("acc_cnn", "acc_c8", "dead_max", "dead_max_where", "soft0_cnn", "soft0_c8")} == {
        "acc_cnn": "98.0%", "acc_c8": "95.0%", "dead_max": "25.0%", "dead_max_where": "C8-CNN, block3", "soft0_cnn": "0.002",
        "soft0_c8": "0.004"}
    assert got["dim_sentence"].startswith("The dimension check was not run")  # no wider readout in this table
    latent = track[(track.family == "CNN") & track.metric.str.startswith("latent")]
    same = pd.concat([track, latent.assign(layer=rd.WIDE_LATENT)], ignore_index=True)
    assert s41.figures({"track": same, "accuracies": acc})["dim_sentence"].startswith("The latent verdicts do not depend on the dimension")
    # the CNN's wider readout far more invariant: some latent verdicts turn
    wider = latent.assign(layer=rd.WIDE_LATENT, value=latent["value"] * 0.1)
    sentence = s41.figures({"track": pd.concat([track, wider], ignore_index=True), "accuracies": acc})["dim_sentence"]
    assert " of 4 latent verdicts change with the wider readout" in sentence and not sentence.startswith("0 of")


def test_section3_quotes_the_floor_of_the_c8_cnn_under_masked_c8_and_its_c4_deviation():
    """``section3.floor_figures``: the range over blocks of the C8-CNN's mean deviation under masked C8
    (not the CNN's, not unmasked, not C4), and its largest C4 deviation of any single model."""
    from geed import stats
    from geed.experiments import section3 as s3

    level = {("C8-CNN", "C8", True): [0.01, 0.03, 0.05], ("C8-CNN", "C8", False): [0.2, 0.3, 0.4], ("CNN", "C8", True): [0.002, 0.6, 0.7]}
    rows = []
    for model, seed, b, group, mask in itertools.product(["C8-CNN", "CNN"], range(2), range(3), ["C4", "C8"], [True, False]):
        if group == "C4":
            dev = (-3e-7 if seed == 1 and b == 2 else 1e-8) if model == "C8-CNN" else 0.5
        else:
            dev = level.get((model, group, mask), [0.9] * 3)[b] + (0.001 if seed else -0.001)
        rows.append({"model": model, "seed": seed, "block": f"block{b + 1}", "group": group, "mask": mask, "deviation": dev,
                     "setting": group + (", masked" if mask else ", no mask")})
    floor = pd.DataFrame(rows)
    t = {"floor": floor, "floor_summary": stats.summarise(floor, "deviation", ["model", "setting", "block"], across="models")}
    got = s3.floor_figures(t)
    assert {k: got[k] for k in ("s3_floor_min", "s3_floor_max", "s3_c8_c4_max")} == {"s3_floor_min": "0.010", "s3_floor_max": "0.050",
                                                                                   "s3_c8_c4_max": "3.0e-07"}
    assert got["s3_mask_sentence"] == s3.mask_sentence(t["floor_summary"])


def test_every_recorded_checkpoint_is_measured_under_the_masked_group_on_points_apart_from_m(monkeypatch, tmp_path):
    """4.1 and 4.2 measure each run at every recorded step, under the group with its input mask, and take
    M over rotated test digits drawn apart from the measured ones (another seed: the overlap of two
    independent draws of 10 and 20 of 900 digits is 0.2 digits on average)."""
    from pathlib import Path

    import torch

    from geed.training import TrainConfig, TrainResult

    x, x_ref = rd.evaluation_points(10, 20, seed=0)
    shared = sum(bool((x_ref == row).flatten(1).all(1).any()) for row in x)
    assert x.shape[0] == 10 and x_ref.shape[0] == 20 and shared <= 3
    seen = []
    monkeypatch.setattr(rd, "load_checkpoint", lambda config, path: torch.nn.Identity())
    monkeypatch.setattr(rd, "_measure", lambda model, x, x_ref, g: seen.append(g) or [{"metric": "m", "value": 0.0}])
    res = TrainResult(TrainConfig(family="cnn", seed=3), {step: Path(tmp_path / f"{step}.pt") for step in (40, 0, 20)})
    rows = rd.track_run(res, x, x_ref, "C8")
    assert [r["step"] for r in rows] == [0, 20, 40] and all(r["seed"] == 3 and r["family"] == "CNN" for r in rows)
    assert all(g.name == "C8" and g.mask for g in seen)


def test_the_verdicts_of_41_do_not_depend_on_the_order_of_the_tables_rows():
    """Paired comparisons (one model over training or depth) pair each model with itself by its seed,
    whatever order the runs' rows arrive in (a cache may return them in any order)."""
    track, acc = _track(c8_better=True), pd.DataFrame({"accuracy": [0.99] * 8})
    rng = np.random.default_rng(0)
    track["value"] += rng.normal(0, 0.01, len(track))  # seeds that differ, so that a wrong pairing shows
    want = {cid: (v.verdict, v.figures) for cid, _, _, v in claims_41(track, acc)}
    shuffled = track.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert {cid: (v.verdict, v.figures) for cid, _, _, v in claims_41(shuffled, acc)} == want
