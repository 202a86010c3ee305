import numpy as np
import pandas as pd
import pytest
from scipy import stats

from geed.stats import bootstrap_ci, summarise, t_interval


def test_t_interval_matches_scipy():
    x = np.array([1.0, 2.0, 4.0, 3.0, 5.5])
    lo, hi = t_interval(x)
    ref = stats.t.interval(0.95, df=4, loc=x.mean(), scale=stats.sem(x))
    assert (lo, hi) == pytest.approx(ref)


def test_bootstrap_contains_mean_and_narrows_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(size=20), rng.normal(size=2000)
    ls, hs = bootstrap_ci(small)
    ll, hl = bootstrap_ci(large)
    assert ls < small.mean() < hs and ll < large.mean() < hl
    assert (hl - ll) < (hs - ls)
    assert bootstrap_ci(small, seed=3) == bootstrap_ci(small, seed=3)


def test_bootstrap_interval_has_the_requested_level():
    """On a large normal sample the percentile bootstrap agrees with the normal-theory interval of the
    same level (about +-1.96 standard errors at 95%, +-1.64 at 90%), centred on the mean."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=4000)
    se = x.std(ddof=1) / np.sqrt(x.size)
    for level in (0.95, 0.9):
        lo, hi = bootstrap_ci(x, level=level, n_boot=4000)
        z = stats.norm.ppf(0.5 + level / 2)
        assert (hi - lo) / (2 * z * se) == pytest.approx(1.0, abs=0.06)
        assert (lo + hi) / 2 == pytest.approx(x.mean(), abs=0.1 * se)


def test_interval_errors():
    with pytest.raises(ValueError, match="at least one"):
        t_interval([])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)
    with pytest.raises(ValueError, match="finite"):
        t_interval([1.0, np.nan])
    with pytest.raises(TypeError, match="confidence level must be a number.*'95'"):
        t_interval([1.0, 2.0], level="95")
    with pytest.raises(ValueError, match="n_boot must be a positive whole number of resamples; got 0"):
        bootstrap_ci([1.0, 2.0], n_boot=0)


def test_summarise_groups():
    df = pd.DataFrame({"model": ["a"] * 3 + ["b"] * 3, "v": [1.0, 2.0, 3.0, 5.0, 5.0, 5.0]})
    s = summarise(df, "v", ["model"]).set_index("model")
    assert s.loc["a", "mean"] == 2.0 and s.loc["b", "lo"] == s.loc["b", "hi"] == 5.0


def test_summarise_gives_each_groups_mean_and_the_interval_its_sampling_unit_calls_for():
    """Per group (in order of first appearance): the mean (not a median), a t interval across models, a
    bootstrap interval across samples, and the number of values."""
    rng = np.random.default_rng(3)
    v = np.concatenate([[0.0, 0.0, 0.0, 10.0], rng.exponential(size=30)])
    df = pd.DataFrame({"model": ["z"] * 4 + ["a"] * 30, "block": 1, "v": v})
    for across, interval in (("models", t_interval), ("samples", bootstrap_ci)):
        s = summarise(df, "v", ["model", "block"], across=across)
        assert list(s["model"]) == ["z", "a"] and list(s["n"]) == [4, 30]
        for model, vals in (("z", v[:4]), ("a", v[4:])):
            row = s[s.model == model].iloc[0]
            assert row["mean"] == pytest.approx(vals.mean()) and (row["lo"], row["hi"]) == pytest.approx(interval(vals))
    # the two intervals differ on these values, so each unit's is the one given
    assert t_interval(v[4:]) != pytest.approx(bootstrap_ci(v[4:]))
