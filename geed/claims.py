"""The claims ledger: each chapter registers the claims it checks; verdicts come from numbers.

A verdict is one of ``holds``, ``does not hold`` or ``inconclusive`` and is computed by one of the
rules below from measured values and their 95% intervals; the rule and the figures are stored
beside it. Chapters call :func:`record`; the ledger page reads every record with :func:`load_all`.

Rules (fixed in code before any result is seen):

* :func:`compare` -- "A is larger than B": the 95% interval of the difference of means (Welch t
  across models, or a bootstrap across samples) lies above 0 -> holds; below 0 -> does not hold;
  contains 0 -> inconclusive.
* :func:`near_zero` -- "X is zero": every value within an absolute tolerance stated with the claim.
* :func:`exceeds` -- "X is clearly non-zero": every value above a stated threshold.
* :func:`all_of` -- a conjunction: holds when every part holds, does not hold when any part does
  not, otherwise inconclusive.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy import stats as _st

from . import paths
from .stats import bootstrap_ci

__all__ = ["Verdict", "compare", "near_zero", "exceeds", "all_of", "record", "load_all", "HOLDS", "FAILS", "INCONCLUSIVE"]

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"


@dataclass
class Verdict:
    verdict: str
    figures: str
    rule: str


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def difference_interval(a: Sequence[float], b: Sequence[float], across: str = "models", level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` (means) and its interval: Welch t (``across='models'``) or a paired/unpaired bootstrap."""
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("a comparison needs values on both sides")
    diff = float(a.mean() - b.mean())
    if across == "models":
        if a.size < 2 or b.size < 2:
            return diff, float("-inf"), float("inf")  # no spread to estimate: cannot decide
        va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
        se = np.sqrt(va + vb)
        if se == 0:
            return diff, diff, diff
        dof = (va + vb) ** 2 / ((va**2) / (a.size - 1) + (vb**2) / (b.size - 1))
        half = float(_st.t.ppf(0.5 + level / 2, dof) * se)
        return diff, diff - half, diff + half
    if across == "paired":
        if a.size != b.size:
            raise ValueError("a paired comparison needs the same number of values on both sides")
        lo, hi = bootstrap_ci(a - b, level=level)
        return diff, lo, hi
    if across == "samples":
        rng = np.random.default_rng(0)
        boots = rng.choice(a, (2000, a.size)).mean(1) - rng.choice(b, (2000, b.size)).mean(1)
        lo, hi = np.quantile(boots, [0.5 - level / 2, 0.5 + level / 2])
        return diff, float(lo), float(hi)
    raise ValueError(f"across must be 'models', 'samples' or 'paired'; got {across!r}")


def compare(a: Sequence[float], b: Sequence[float], label_a: str, label_b: str, across: str = "models") -> Verdict:
    """Verdict on "mean of ``a`` is larger than mean of ``b``"."""
    diff, lo, hi = difference_interval(a, b, across)
    verdict = HOLDS if lo > 0 else FAILS if hi < 0 else INCONCLUSIVE
    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    figures = (
        f"{label_a}: {_fmt(a_.mean())} (n={a_.size}); {label_b}: {_fmt(b_.mean())} (n={b_.size}); "
        f"difference {_fmt(diff)}, 95% CI [{_fmt(lo)}, {_fmt(hi)}]"
    )
    rule = {"models": "Welch t-interval of the difference across models",
            "samples": "bootstrap interval of the difference across samples",
            "paired": "bootstrap interval of the paired differences"}[across] + " excludes 0"
    return Verdict(verdict, figures, rule)


def near_zero(values: Sequence[float], tol: float, label: str) -> Verdict:
    """Verdict on "``label`` is zero" to an absolute tolerance ``tol`` (e.g. float round-off)."""
    v = np.abs(np.asarray(values, float).ravel())
    worst = float(v.max())
    verdict = HOLDS if worst <= tol else FAILS
    return Verdict(verdict, f"{label}: largest |value| {_fmt(worst)} (n={v.size}); tolerance {_fmt(tol)}", f"every value within {tol:g} of 0")


def exceeds(values: Sequence[float], threshold: float, label: str) -> Verdict:
    """Verdict on "``label`` is clearly non-zero": every value above ``threshold``."""
    v = np.asarray(values, float).ravel()
    least = float(v.min())
    verdict = HOLDS if least > threshold else FAILS
    return Verdict(verdict, f"{label}: smallest value {_fmt(least)} (n={v.size}); threshold {_fmt(threshold)}", f"every value above {threshold:g}")


def all_of(parts: Iterable[Verdict]) -> Verdict:
    parts = list(parts)
    verdicts = [p.verdict for p in parts]
    verdict = FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE
    return Verdict(verdict, "; ".join(p.figures for p in parts), " and ".join(sorted({p.rule for p in parts})))


def record(chapter: str, claim_id: str, source: str, claim: str, verdict: Verdict, note: str = "") -> dict:
    """Store one claim's verdict for the ledger (replacing an earlier record of the same id)."""
    if verdict.verdict not in (HOLDS, FAILS, INCONCLUSIVE):
        raise ValueError(f"unknown verdict {verdict.verdict!r}")
    d = paths.claims_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{chapter}.json"
    records = json.loads(path.read_text()) if path.exists() else {}
    entry = {"chapter": chapter, "id": claim_id, "source": source, "claim": claim, **asdict(verdict), "note": note}
    records[claim_id] = entry
    path.write_text(json.dumps(records, indent=1))
    return entry


def reset(chapter: str) -> None:
    """Forget a chapter's records (called at the start of its execution)."""
    (paths.claims_dir() / f"{chapter}.json").unlink(missing_ok=True)


def load_all(chapters: Sequence[str] | None = None):
    """Every recorded claim as a DataFrame, in chapter order (``chapters``) then id order."""
    import pandas as pd

    rows = []
    d = paths.claims_dir()
    files = [d / f"{c}.json" for c in chapters] if chapters else sorted(Path(d).glob("*.json"))
    for f in files:
        if f.exists():
            rows.extend(json.loads(f.read_text()).values())
    cols = ["chapter", "id", "source", "claim", "verdict", "figures", "rule", "note"]
    return pd.DataFrame(rows, columns=cols)
