"""Confidence intervals used by every table and chart: across models (t) and across samples (bootstrap)."""
from __future__ import annotations

import numpy as np
from scipy import stats as _st

from geed._checks import is_whole

__all__ = ["t_interval", "bootstrap_ci", "summarise"]


def _values(x) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("an interval needs at least one value; got none")
    if not np.all(np.isfinite(arr)):
        raise ValueError("an interval needs finite values; got NaN or infinity")
    return arr


def _check_level(level: float) -> None:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.integer, np.floating)):
        raise TypeError(f"confidence level must be a number between 0 and 1; got {level!r}")
    if not 0 < level < 1:
        raise ValueError(f"confidence level must lie strictly between 0 and 1; got {level}")


def t_interval(x, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean (e.g. across independently trained models).

    One value gives a degenerate interval (the value itself): there is no spread to estimate.
    """
    arr = _values(x)
    _check_level(level)
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean
    half = float(_st.t.ppf(0.5 + level / 2, df=arr.size - 1) * arr.std(ddof=1) / np.sqrt(arr.size))
    return mean - half, mean + half


def bootstrap_ci(x, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over samples (seeded, so reproducible)."""
    arr = _values(x)
    _check_level(level)
    if not is_whole(n_boot) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive whole number of resamples; got {n_boot!r}")
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))
    means = arr[idx].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def summarise(df, value: str, by: list[str], across: str = "models", level: float = 0.95):
    """Mean and interval of ``value`` for each group of ``by``: ``across='models'`` uses the
    t-interval over rows, ``across='samples'`` the bootstrap. Returns a DataFrame with
    ``mean, lo, hi, n``."""
    import pandas as pd

    if across not in ("models", "samples"):
        raise ValueError(f"across must be 'models' or 'samples'; got {across!r}")
    rows = []
    for key, g in df.groupby(by, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        vals = g[value].to_numpy()
        lo, hi = t_interval(vals, level) if across == "models" else bootstrap_ci(vals, level)
        rows.append({**dict(zip(by, key)), "mean": float(np.mean(vals)), "lo": lo, "hi": hi, "n": len(vals)})
    return pd.DataFrame(rows)
