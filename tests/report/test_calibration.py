"""Calibration of the ledger's rules: with no effect, a rule gives a verdict other than *inconclusive*
at most 5% of the time (plus Monte-Carlo slack); with a planted effect it finds it; every rule can
return every outcome; and every claim of every chapter, as applied to tables of the profiles' shapes,
meets the same bound."""
import itertools

import numpy as np
import pandas as pd
import pytest

from geed.experiments import pretrained as P
from geed.experiments import rotated_digits as rd
from geed.experiments import selfsup as S
from geed.report import calibration as K
from geed.report import claims as C

N_SIMS = 4000
SLACK = 3 * np.sqrt(0.05 * 0.95 / N_SIMS)  # three Monte-Carlo standard errors at the nominal rate
NOMINAL = C.ALPHA


def _diffs(n, k, paired=False, rng=None, shift=0.0):
    rng = rng or np.random.default_rng(0)
    return [C.difference(rng.normal(shift, 1, n), rng.normal(0, 1, n), f"part {j}", paired=paired) for j in range(k)]


RULES = {
    "greater": lambda n, k, paired: C.greater_for_all(_diffs(n, 1, paired)),
    "for_all": lambda n, k, paired: C.greater_for_all(_diffs(n, k, paired)),
    "for_some": lambda n, k, paired: C.greater_for_some(_diffs(n, k, paired)),
    "no_decrease": lambda n, k, paired: C.no_decrease(_diffs(n, k, paired), margin=0.5),
    "opposite": lambda n, k, paired: C.opposite_orders(list(zip(_diffs(n, k, paired), _diffs(n, k, paired, np.random.default_rng(1))))),
}


@pytest.mark.parametrize("kind,n,k,paired", [(kind, n, k, paired) for kind in RULES for n in (2, 3, 5, 10) for k in (1, 6)
                                            for paired in (False, True)])
def test_false_verdict_rate_is_at_most_nominal(kind, n, k, paired):
    spec = RULES[kind](n, k, paired).spec
    assert K.false_verdict_rate(spec, n_sims=N_SIMS) <= NOMINAL + SLACK


def _rate_at(spec, shifts, verdict, n_sims=N_SIMS, seed=11):
    """Share of ``verdict`` with the true contrasts ``shifts``, decided by the ledger's own rule."""
    p_hi, p_lo = K._draw(spec, np.asarray(shifts, float), n_sims, np.random.default_rng(seed))
    code = {C.HOLDS: 1, C.FAILS: 2}[verdict]
    return float(np.mean(C.decide(spec["kind"], p_hi, p_lo) == code))


@pytest.mark.parametrize("k", [1, 3])
def test_the_reported_rate_covers_the_boundaries_where_a_wrong_verdict_is_likeliest(k):
    """With no effect anywhere, a rule of opposite orders almost never says anything (both metrics
    must be significant), so the null case alone understated its false verdicts tenfold or more. Its
    worst cases are at the edge of the claim: one metric of one comparison without an effect, the
    others large and agreeing (a *holds* there is false; a *does not hold* just inside the claim is
    false). For a claim about some part, a false *does not hold* is likeliest with one part at zero
    and the others far against the claim. The reported rate covers them, within the bound."""
    opposite = RULES["opposite"](3, k, False).spec
    edge = np.full(2 * k, 50.0)
    edge[1] = 0.0
    null_rate = K.simulate(opposite, "null", n_sims=N_SIMS)
    reported = K.false_verdict_rate(opposite, n_sims=N_SIMS)
    at_edge = max(_rate_at(opposite, edge, C.HOLDS), _rate_at(opposite, edge, C.FAILS))
    assert null_rate["holds"] + null_rate["does not hold"] < 0.005 < 0.01 < at_edge  # the null case alone misses it
    assert reported >= at_edge - SLACK and reported <= NOMINAL + SLACK
    some = RULES["for_some"](3, k, False).spec
    against = np.full(k, -50.0)
    against[0] = 0.0
    assert K.false_verdict_rate(some, n_sims=N_SIMS) >= _rate_at(some, against, C.FAILS) - SLACK
    no_change = RULES["no_decrease"](10, k, False).spec  # a does not hold just within the margin is wrong too
    at_margin = np.full(k, -no_change["margin_sd"])
    assert K.false_verdict_rate(no_change, n_sims=N_SIMS) >= _rate_at(no_change, at_margin, C.FAILS) - SLACK


def _without_correction(kind, p_hi, p_lo, alpha=C.ALPHA):
    """The ledger's decision with its correction over parts taken out: a broken rule the calibration must flag."""
    c = alpha / 2
    p_hi, p_lo = np.asarray(p_hi, float), np.asarray(p_lo, float)
    if kind == "for_all":
        holds, fails = np.all(p_hi < c, axis=-1), np.min(p_lo, axis=-1) < c
    elif kind == "for_some":
        holds, fails = np.min(p_hi, axis=-1) < c, np.all(p_lo < c, axis=-1)
    else:
        h1, h2, l1, l2 = p_hi[..., 0::2], p_hi[..., 1::2], p_lo[..., 0::2], p_lo[..., 1::2]
        holds = np.min(np.minimum(np.maximum(h1, l2), np.maximum(l1, h2)), axis=-1) < c
        fails = np.all(np.minimum(np.maximum(h1, h2), np.maximum(l1, l2)) < c, axis=-1)
    return np.where(holds & ~fails, 1, np.where(fails & ~holds, 2, 0))


@pytest.mark.parametrize("kind", ["for_all", "for_some", "opposite"])
def test_a_rule_that_lost_its_correction_over_parts_is_flagged(kind, monkeypatch):
    """Six parts without the correction give a wrong verdict about 1 - 0.975^6 = 14% of the time at
    the configuration where each rule errs most: with no effect (every part, some part), and for
    opposite orders with every comparison at the edge of the claim (one metric large, the other
    without effect), which the null case and a single comparison at the edge both miss."""
    spec = RULES[kind](5, 6, False).spec
    assert K.false_verdict_rate(spec, n_sims=N_SIMS) <= NOMINAL + SLACK
    monkeypatch.setattr(K, "decide", _without_correction)
    assert K.false_verdict_rate(spec, n_sims=N_SIMS) > 0.1


def test_a_claim_of_no_decrease_is_tested_against_minus_its_margin():
    """A fall smaller than the margin is no decrease, a rise is none, a fall beyond the margin is one;
    the ledger's verdict and its simulation read the same threshold."""
    rng = np.random.default_rng(0)
    change = lambda mean: [C.difference(mean + 0.01 * rng.normal(size=5), np.zeros(5), "d", paired=True)]  # noqa: E731
    assert C.no_decrease(change(-0.3), margin=0.5).verdict == C.HOLDS
    assert C.no_decrease(change(0.3), margin=0.5).verdict == C.HOLDS
    assert C.no_decrease(change(-0.8), margin=0.5).verdict == C.FAILS
    assert C.threshold("no_decrease", 0.5) == -0.5 and C.threshold("for_all", 0.5) == 0.0


@pytest.mark.parametrize("kind", list(RULES))
def test_a_planted_effect_is_found(kind):
    """Stated size: 4 standard deviations of single values with 10 models per side (paired: 10 pairs)."""
    spec = RULES[kind](10, 3, False).spec
    if kind == "no_decrease":  # power of a no-change claim: nothing changes, margin 2 SD
        spec = dict(spec, margin_sd=2.0)
        assert K.simulate(spec, "null", n_sims=2000)["holds"] >= 0.8
    else:
        assert K.power(spec, 4.0, n_sims=2000) >= 0.8


def test_simulation_uses_the_ledgers_own_decision():
    """One simulated table decided by the ledger's rule and by the calibration gives the same verdict."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        a, b = rng.normal(0.3, 1, 4), rng.normal(0, 1, 4)
        v = C.greater(a, b, "a", "b")
        d = C.difference(a, b, "a - b")
        code = C.decide("greater", np.array([d.p_above()]), np.array([d.p_below()]))
        assert v.verdict == {0: C.INCONCLUSIVE, 1: C.HOLDS, 2: C.FAILS}[int(code)]


def test_the_intervals_shown_beside_a_verdict_are_95_percent_t_intervals():
    """The interval in a claim's figures: Student's t for a paired difference, Welch's for two groups
    (as scipy computes them), and values that are not finite are refused, not judged."""
    from scipy import stats

    rng = np.random.default_rng(4)
    a, b = rng.normal(1.0, 1.0, 6), rng.normal(0.0, 2.0, 5)
    paired = C.difference(a[:5], b, "d", paired=True)
    d = a[:5] - b
    assert paired.interval == pytest.approx(stats.t.interval(0.95, d.size - 1, loc=d.mean(), scale=stats.sem(d)), rel=1e-12)
    welch = C.difference(a, b, "d")
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert welch.interval == pytest.approx((ci.low, ci.high), rel=1e-12)
    with pytest.raises(ValueError, match="finite"):
        C.difference([1.0, np.nan, 2.0], [0.0, 1.0, 2.0], "d")
    with pytest.raises(ValueError, match="finite"):
        C.greater([1.0, 2.0], [0.0, np.inf], "a", "b")


def test_every_rule_can_return_every_outcome():
    rng = np.random.default_rng(0)
    up = lambda k: [C.difference(rng.normal(5, 0.1, 5), rng.normal(0, 0.1, 5), "d") for _ in range(k)]  # noqa: E731
    down = lambda k: [C.difference(rng.normal(-5, 0.1, 5), rng.normal(0, 0.1, 5), "d") for _ in range(k)]  # noqa: E731
    null = lambda k: [C.difference(rng.normal(0, 1, 5), rng.normal(0, 1, 5), "d") for _ in range(k)]  # noqa: E731
    for rule in (C.greater_for_all, C.greater_for_some):
        assert {rule(up(3)).verdict, rule(down(3)).verdict, rule(null(3)).verdict} == {C.HOLDS, C.FAILS, C.INCONCLUSIVE}
    assert C.no_decrease(up(3), 0.5).verdict == C.HOLDS
    assert C.no_decrease(down(3), 0.5).verdict == C.FAILS
    assert C.no_decrease([C.difference(rng.normal(0, 3, 3), rng.normal(0, 3, 3), "d")], 0.5).verdict == C.INCONCLUSIVE
    assert C.opposite_orders([(up(1)[0], down(1)[0])]).verdict == C.HOLDS
    assert C.opposite_orders([(up(1)[0], up(1)[0])]).verdict == C.FAILS
    assert C.opposite_orders([(up(1)[0], null(1)[0])]).verdict == C.INCONCLUSIVE
    assert C.greater([1.0], [0.0], "a", "b").verdict == C.NOT_TESTED


def test_no_change_is_never_enough_for_a_claim_of_no_change():
    """Noisy data with no change: the no-decrease rule must not say *holds* for lack of a significant fall."""
    rng = np.random.default_rng(0)
    verdicts = [C.no_decrease([C.difference(rng.normal(0, 1, 3), rng.normal(0, 1, 3), "d", paired=True)], margin=0.05).verdict
                for _ in range(200)]
    assert verdicts.count(C.HOLDS) <= 0.05 * 200


# ----------------------------------------------------------------------------- every claim of every chapter
def _track(n_models: int, rng, effect: float = 0.0) -> pd.DataFrame:
    rows = []
    for fam, seed, step in itertools.product(["CNN", "C8-CNN"], range(n_models), [0, 250, 500]):
        good = effect * (fam == "C8-CNN")
        for b in range(1, 7):
            rows.append({"family": fam, "seed": seed, "step": step, "metric": "channelwise", "layer": f"block{b}",
                         "value": -0.5 - good + 0.05 * rng.normal(), "dead_fraction": 0.0})
        for layer in ("latent", "latent_wide"):
            for metric, lvl in (("latent_l2", 0.3), ("softmax", 0.05), ("latent_cosine", 0.1), ("latent_cosine_unnormalised", -0.9)):
                rows.append({"family": fam, "seed": seed, "step": step, "metric": metric, "layer": layer if metric != "softmax" else "output",
                             "value": lvl + 0.02 * rng.normal()})
    return pd.DataFrame(rows).drop_duplicates(["family", "seed", "step", "metric", "layer"])


def _ood(n_models, rng):
    rows = []
    for model, seed, ds in itertools.product(["untrained CNN", "CNN", "C8-CNN"], range(n_models), ["rotated-mnist", "font-glyphs", "uniform-noise"]):
        for metric in ("latent_l2", "softmax", "latent_cosine_unnormalised"):
            rows.append({"model": model, "seed": seed, "dataset": ds, "metric": metric, "value": 0.3 + 0.02 * rng.normal()})
    return pd.DataFrame(rows)


def _pretrained_track(n_models, rng):
    rows = []
    for arch, init, seed, step in itertools.product(["resnet50-tiny", "alexnet-tiny"], P.INITS, range(n_models), [0, 25, 50]):
        for group in ("C8", "D8"):
            for metric in ("latent_l2", "latent_cosine"):
                rows.append({"arch": arch, "init": init, "seed": seed, "step": step, "metric": metric, "group": group, "value": 0.2 + 0.02 * rng.normal()})
        rows.append({"arch": arch, "init": init, "seed": seed, "step": step, "metric": "softmax", "group": "C8", "value": 0.01 + 0.002 * rng.normal()})
    acc = pd.DataFrame([{"arch": a, "init": i, "seed": s, "accuracy": 0.5 + 0.02 * rng.normal()}
                        for a, i, s in itertools.product(["resnet50-tiny", "alexnet-tiny"], P.INITS, range(n_models))])
    return pd.DataFrame(rows), acc


def _selfsup(n_points, rng):
    rows = []
    for label in S.LABELS.values():
        for metric in ("latent_l2", "latent_cosine"):
            rows += [{"model": label, "seed": 0, "metric": metric, "sample": i, "value": 0.2 + 0.05 * rng.normal(), "M": 1.0, "effective_rank": 5.0}
                     for i in range(n_points)]
    return pd.DataFrame(rows)


def _chapter_claims(n_models: int) -> list[tuple]:
    rng = np.random.default_rng(n_models)
    track = _track(n_models, rng)
    acc = pd.DataFrame({"accuracy": [0.99] * (2 * n_models)})
    tr, acc43 = _pretrained_track(n_models, rng)
    return (rd.claims_41(track, acc) + rd.claims_42(_ood(n_models, rng)) + P.claims_43(tr, acc43) + S.claims_44(_selfsup(20, rng)))


@pytest.mark.parametrize("n_models", [2, 3, 5])  # smoke, default and more
def test_every_claim_of_every_chapter_is_calibrated(n_models):
    specs = [(cid, v.spec) for cid, _, _, v in _chapter_claims(n_models) if v.spec.get("kind") not in (None, "deterministic", "not_tested")]
    assert len(specs) > 20
    seen = {}
    for cid, spec in specs:
        key = repr(spec)
        if key not in seen:
            seen[key] = K.false_verdict_rate(spec, n_sims=2000)
        assert seen[key] <= NOMINAL + 3 * np.sqrt(0.05 * 0.95 / 2000), (cid, spec, seen[key])


def test_chapter_rules_find_a_planted_effect():
    rng = np.random.default_rng(0)
    track = _track(5, rng, effect=0.4)  # the C8-CNN 8 standard deviations more equivariant at every block
    v = {cid: verdict.verdict for cid, _, _, verdict in rd.claims_41(track, pd.DataFrame({"accuracy": [0.99] * 10}))}
    assert v["4.1-2"] == C.HOLDS
    null = {cid: verdict.verdict for cid, _, _, verdict in rd.claims_41(_track(5, rng), pd.DataFrame({"accuracy": [0.99] * 10}))}
    assert null["4.1-2"] == C.INCONCLUSIVE


def test_latent_dimension_check_uses_the_wider_readout_of_the_cnn_only():
    rng = np.random.default_rng(0)
    track = _track(3, rng)
    track = track[~((track.family == "C8-CNN") & (track.layer == "latent_wide"))]
    track.loc[(track.family == "CNN") & (track.layer == "latent_wide") & (track.metric == "latent_cosine"), "value"] += 5.0
    check = rd.latent_dimension_check(track, pd.DataFrame({"accuracy": [0.99] * 6}))
    assert list(check["id"]) == list(rd.LATENT_CLAIMS)
    row = check.set_index("id").loc["4.1-9"]
    assert row["CNN 8x wider"] == C.FAILS and not row["agree"]  # the wider CNN readout is far less cosine-invariant


def test_the_over_training_baseline_does_not_depend_on_the_checkpoint_spacing():
    from geed.report.claims import baseline_step

    assert baseline_step(range(0, 1501, 250)) == 250  # default: as before
    assert baseline_step(range(0, 2001, 40)) == 320  # paper spacing: one sixth of 2,000 is 333 -> 320
    assert baseline_step(range(0, 2001, 500)) == 500
    assert baseline_step([0, 10, 20]) == 10 and baseline_step([0, 20, 40]) == 20
    assert baseline_step([0]) == 0


@pytest.mark.parametrize("k", [2, 3])
def test_a_claim_about_some_part_is_simulated_where_its_documentation_says(k):
    """For a claim about some part, the power is that of an effect in one part only (an effect in every
    part would be found more often, and overstate it), and the false *does not hold* is simulated with
    one part at zero and every other far against the claim (with the others far for it, a *does not
    hold* could not happen at all, and the reported rate would fall back on the null case)."""
    some = RULES["for_some"](5, k, False).spec
    one = np.zeros(k)
    one[0] = 2.0
    assert K.power(some, 2.0, n_sims=N_SIMS) == pytest.approx(_rate_at(some, one, C.HOLDS), abs=2 * SLACK)
    assert K.power(some, 2.0, n_sims=N_SIMS) < _rate_at(some, np.full(k, 2.0), C.HOLDS) - 2 * SLACK
    against = np.full(k, -50.0)
    against[0] = 0.0
    assert K.simulate(some, "least favourable", n_sims=N_SIMS)["does not hold"] == pytest.approx(_rate_at(some, against, C.FAILS), abs=2 * SLACK)


def test_a_simulated_contrast_has_the_true_value_it_is_given(monkeypatch):
    """The simulation plants a part's true contrast ``sum w_j mu_j`` at the shift asked for, whatever the
    weights: with weights (2, -1) a shift of 1.5 standard deviations gives contrasts that average 1.5."""
    seen = []
    t_stats = K._t_stats

    def recording(groups, weights):
        out = t_stats(groups, weights)
        seen.append(out[0])
        return out

    monkeypatch.setattr(K, "_t_stats", recording)
    spec = {"kind": "greater", "parts": [{"n": [20, 20], "weights": [2.0, -1.0]}]}
    K._draw(spec, np.array([1.5]), 4000, np.random.default_rng(0))
    # the SD of one simulated contrast is sqrt(4/20 + 1/20) = 0.5, so the mean of 4000 is within 0.008 (1 SD)
    assert float(np.mean(seen[0])) == pytest.approx(1.5, abs=0.04)


def test_a_claim_made_of_parts_is_simulated_as_the_ledger_combines_them():
    """A claim of several parts (``claims.all_of``) does not hold when any part does not, and holds when
    every part holds; its simulation combines the simulated parts in the same way."""
    rng = np.random.default_rng(5)
    far = {"for": 50.0, "against": -50.0}
    for a, b in itertools.product(far, far):
        parts = [C.greater_for_all(_diffs(5, 1, rng=rng, shift=far[side] / 10)) for side in (a, b)]
        combined = C.all_of(parts)
        assert combined.spec["kind"] == "composite"
        codes = K._codes(combined.spec, [[far[a]], [far[b]]], 500, np.random.default_rng(0))
        want = {C.HOLDS: 1, C.FAILS: 2}[combined.verdict]
        assert combined.verdict == (C.HOLDS if (a, b) == ("for", "for") else C.FAILS) and bool(np.all(codes == want)), (a, b)


def test_the_detectable_effect_is_the_smallest_on_the_grid_found_80_percent_of_the_time():
    grid = (0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16)
    for kind, n in (("greater", 5), ("for_all", 10)):
        spec = RULES[kind](n, 3, False).spec
        e = K.detectable_effect(spec, n_sims=2000, seed=0)
        smaller = [g for g in grid if g < e]
        assert K.power(spec, e, n_sims=2000, seed=0) >= 0.8, (kind, e)
        assert smaller and K.power(spec, smaller[-1], n_sims=2000, seed=0) < 0.8, (kind, e)
