"""The claims ledger: every rule that turns measured numbers into a verdict, and the records.

Verdicts
--------
``holds``, ``does not hold``, ``inconclusive`` and ``not tested``. *Not tested* means that the
experiment here cannot test the claim at all (too few models for a verdict, a representation that
failed the pre-declared collapse check, data or weights that stand in for the paper's and lack what
the claim is about); it is not a weak *inconclusive*.

Statistical rules (all fixed before results are seen; calibrated in ``tests/test_calibration.py``
and on the book's calibration page)
---------------------------------------------------------------------------------------------------
Every comparison is a :class:`Difference`: a Student-t statistic for a linear contrast of
independent groups of values (Welch-Satterthwaite degrees of freedom; two groups give Welch's
test) or for paired differences (the same model at two checkpoints, the same inputs under two
conditions). Models paired only by their seed number are *not* paired. Each side of a claim is
tested one-sided at ``ALPHA / 2``, so a rule says something other than *inconclusive* at most
``ALPHA`` of the time when there is no effect:

* :func:`greater` -- "A is larger than B": *holds* if A > B at ALPHA/2, *does not hold* if A < B at
  ALPHA/2, otherwise *inconclusive*.
* :func:`greater_for_all` -- "for every part" (an intersection): *holds* if every part is
  significant at ALPHA/2 (no correction is needed for an intersection); *does not hold* if some part
  is significant in the other direction after Holm's correction over the parts.
* :func:`greater_for_some` -- "for at least one part" (a union): *holds* if some part is significant
  after Holm's correction; *does not hold* if every part is significant in the other direction.
* :func:`no_decrease` -- "does not fall by more than a margin", an equivalence-type claim with a
  margin in ``MARGINS`` fixed in advance: *holds* if every part's difference is significantly above
  ``-margin``; *does not hold* if some part is significantly below ``-margin`` (Holm); otherwise
  *inconclusive*. Failing to find a change is never enough.
* :func:`opposite_orders` -- "the order of A and B depends on the metric": *holds* if two metrics
  order A and B in opposite directions, both significantly (for some part, Holm over the parts);
  *does not hold* if, for every part, both metrics agree significantly; otherwise *inconclusive*.

For Holm's procedure, "some hypothesis is rejected" happens exactly when the smallest p-value is
below level / k, which is how it is computed here.

Deterministic rules
-------------------
:func:`near_zero` and :func:`exceeds` check exact computations (known answers, float round-off) or
describe the trained models themselves against a stated bar; there is no sampling in them, so they
return *holds* or *does not hold*. :func:`all_of` joins parts of one claim.

Every :class:`Verdict` carries ``spec``, the shape of its rule (kind, number of parts, models per
side, pairing, margin in units of the measured spread), from which :mod:`geed.report.calibration`
simulates its false-verdict rate and power.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy import stats as _st

from geed.report import paths

__all__ = [
    "Verdict", "Difference", "difference", "contrast", "greater", "greater_for_all", "greater_for_some", "no_decrease",
    "opposite_orders", "not_tested", "compare", "near_zero", "exceeds", "all_of", "record", "load_all", "reset", "start", "annotate", "run_meta", "consistency",
    "HOLDS", "FAILS", "INCONCLUSIVE", "NOT_TESTED", "STATUSES", "BASELINE_FRACTION", "baseline_step", "ALPHA", "MARGINS", "COLLAPSE_MIN_EFFECTIVE_RANK",
    "effective_rank", "threshold", "decide",
]

HOLDS, FAILS, INCONCLUSIVE, NOT_TESTED = "holds", "does not hold", "inconclusive", "not tested"
# "Over training" claims compare the end of training with an early checkpoint: the one nearest to this
# fraction of the iterations (never step 0), so that the baseline does not depend on how often a
# profile records checkpoints. At `default` (1,500 iterations, every 250) it is step 250, as before.
BASELINE_FRACTION = 1 / 6
STATUSES = (HOLDS, FAILS, INCONCLUSIVE, NOT_TESTED)
_CODE = {0: INCONCLUSIVE, 1: HOLDS, 2: FAILS}

ALPHA = 0.05  # the largest share of verdicts other than inconclusive when there is no effect

# Margins of the claims of no change, in the units of the metric, fixed before any result was seen.
MARGINS = {
    # channelwise C8-EED lies in [-1, 1]; 0.05 is the order of the interpolation floor of 45-degree
    # rotations (Section 3), below which a change is not an equivariance that was learned
    "channelwise": 0.05,
}

# The collapse check (pre-declared, applied to every model): a latent space whose centred features
# on the reference inputs vary along fewer than this many effective directions (exp of the entropy
# of the normalised singular values) barely tells inputs apart; claims about it are not tested.
COLLAPSE_MIN_EFFECTIVE_RANK = 2.0


@dataclass
class Verdict:
    verdict: str
    figures: str
    rule: str
    spec: dict = field(default_factory=dict)
    history: str = ""  # the verdict under an earlier rule, where a rule changed after results were seen


def _fmt(x: float) -> str:
    return f"{x:.3g}"


# ----------------------------------------------------------------------------- differences
def _t_stats(groups: Sequence[np.ndarray], weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimate, standard error and Welch-Satterthwaite df of ``sum w_j mean(group_j)``, vectorised
    over leading axes (each group ``(..., n_j)``)."""
    est = sum(w * g.mean(axis=-1) for g, w in zip(groups, weights))
    parts = [w**2 * g.var(axis=-1, ddof=1) / g.shape[-1] for g, w in zip(groups, weights)]
    var = sum(parts)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = var**2 / sum(p**2 / (g.shape[-1] - 1) for p, g in zip(parts, groups))
    df = np.where(np.isfinite(df) & (df > 0), df, min(g.shape[-1] for g in groups) - 1)
    return est, np.sqrt(var), df


def _p_above(est, se, df, delta=0.0):
    """One-sided p-value for "the true value exceeds ``delta``" (0 or 1 when there is no spread)."""
    est, se = np.asarray(est, float), np.asarray(se, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (est - delta) / se
    p = _st.t.sf(t, df)
    return np.where(se > 0, p, np.where(est > delta, 0.0, 1.0))


def _p_below(est, se, df, delta=0.0):
    return _p_above(-np.asarray(est, float), se, df, -delta)


@dataclass(frozen=True)
class Difference:
    """One estimated difference with its t-statistic ingredients and 95% interval."""

    label: str
    estimate: float
    se: float
    df: float
    n: tuple[int, ...]
    paired: bool
    spread: float  # pooled standard deviation of single values (for the calibration's effect sizes)
    weights: tuple[float, ...] = (1.0,)  # of the contrast's groups (paired: one group of differences)

    @property
    def interval(self) -> tuple[float, float]:
        if self.se == 0:
            return self.estimate, self.estimate
        half = float(_st.t.ppf(1 - ALPHA / 2, self.df) * self.se)
        return self.estimate - half, self.estimate + half

    def p_above(self, delta: float = 0.0) -> float:
        return float(_p_above(self.estimate, self.se, self.df, delta))

    def p_below(self, delta: float = 0.0) -> float:
        return float(_p_below(self.estimate, self.se, self.df, delta))

    @property
    def figures(self) -> str:
        lo, hi = self.interval
        how = "paired" if self.paired else "n=" + "/".join(map(str, self.n))
        return f"{self.label}: {_fmt(self.estimate)}, 95% CI [{_fmt(lo)}, {_fmt(hi)}] ({how})"


class TooFew(ValueError):
    """Fewer than two values on a side: no spread to estimate, so no verdict."""


def _clean(x, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: values must be finite; got {arr}")
    if arr.size < 2:
        raise TooFew(f"{what}: {arr.size} value(s); a verdict needs at least 2")
    return arr


def contrast(groups: Sequence, weights: Sequence[float], label: str) -> Difference:
    """``sum_j w_j mean(group_j)`` for independent groups (e.g. ``[a, b]``, ``[1, -1]``: Welch)."""
    arrs = [_clean(g, f"{label}, group {j + 1}") for j, g in enumerate(groups)]
    est, se, df = _t_stats(arrs, weights)
    spread = float(np.sqrt(np.mean([a.var(ddof=1) for a in arrs])))
    return Difference(label, float(est), float(se), float(df), tuple(a.size for a in arrs), False, spread, tuple(map(float, weights)))


def difference(a: Sequence[float], b: Sequence[float], label: str, paired: bool = False) -> Difference:
    """``mean(a) - mean(b)``: paired t on ``a - b`` (same units, matched one to one) or Welch's t."""
    if not paired:
        return contrast([a, b], [1.0, -1.0], label)
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.size != b.size:
        raise ValueError(f"{label}: a paired difference needs the same number of values on both sides ({a.size} vs {b.size})")
    d = _clean(a - b, label)
    est, se, df = _t_stats([d], [1.0])
    return Difference(label, float(est), float(se), float(df), (d.size,), True, float(d.std(ddof=1)))


# ----------------------------------------------------------------------------- decisions
def decide(kind: str, p_hi: np.ndarray, p_lo: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The decision of a rule from its parts' one-sided p-values, vectorised over leading axes.

    ``p_hi[..., j]``: p-value of part j in the claimed direction (for ``no_decrease``: above
    ``-margin``); ``p_lo``: in the opposite direction (below 0, or below ``-margin``). For
    ``opposite`` the last axis holds (metric 1, metric 2) for each part, flattened pairwise.
    Returns codes 1 (holds), 2 (does not hold), 0 (inconclusive)."""
    c = alpha / 2
    p_hi, p_lo = np.asarray(p_hi, float), np.asarray(p_lo, float)
    k = p_hi.shape[-1]
    if kind in ("greater", "for_all", "no_decrease"):
        holds = np.all(p_hi < c, axis=-1)
        fails = np.min(p_lo, axis=-1) < c / k
    elif kind == "for_some":
        holds = np.min(p_hi, axis=-1) < c / k
        fails = np.all(p_lo < c, axis=-1)
    elif kind == "opposite":
        h1, h2 = p_hi[..., 0::2], p_hi[..., 1::2]
        l1, l2 = p_lo[..., 0::2], p_lo[..., 1::2]
        parts = k // 2
        opp = np.minimum(np.maximum(h1, l2), np.maximum(l1, h2))  # both significant, opposite ways
        same = np.minimum(np.maximum(h1, h2), np.maximum(l1, l2))  # both significant, the same way
        holds = np.min(opp, axis=-1) < c / parts
        fails = np.all(same < c, axis=-1)
    else:
        raise ValueError(f"unknown rule kind {kind!r}")
    return np.where(holds & ~fails, 1, np.where(fails & ~holds, 2, 0))


def threshold(kind: str, margin: float = 0.0) -> float:
    """The value every part of a rule is tested against: 0, or ``-margin`` for a claim of no decrease
    beyond a margin (the ledger's verdicts and their simulation both read it here)."""
    return -margin if kind == "no_decrease" else 0.0


def _spec(kind: str, diffs: Sequence[Difference], margin: float = 0.0) -> dict:
    """The shape of a rule as applied: what the calibration needs to simulate it."""
    spread = float(np.mean([d.spread for d in diffs])) or 1.0
    return {"kind": kind, "parts": [{"n": list(d.n), "weights": list(d.weights)} for d in diffs],
            "margin_sd": margin / spread if margin else 0.0}


def _verdict(kind: str, diffs: Sequence[Difference], rule: str, margin: float = 0.0) -> Verdict:
    delta = threshold(kind, margin)
    p_hi = [d.p_above(delta) for d in diffs]
    p_lo = [d.p_below(delta) for d in diffs]
    code = int(decide(kind, np.array(p_hi), np.array(p_lo)))
    return Verdict(_CODE[code], "; ".join(d.figures for d in diffs), rule, _spec(kind, diffs, margin))


def _guard(build):
    """Run a rule; too few values for a verdict -> *not tested*, saying why."""
    try:
        return build()
    except TooFew as exc:
        return not_tested(f"too few values for a verdict ({exc})")


def greater(a, b, label_a: str, label_b: str, paired: bool = False) -> Verdict:
    """Verdict on "mean of ``a`` is larger than mean of ``b``" (Welch's t, or paired t)."""
    return _guard(lambda: _verdict("greater", [difference(a, b, f"{label_a} - {label_b}", paired)],
                                   f"{'paired' if paired else 'Welch'} t, each direction at {ALPHA / 2:g}"))


def _applied(kind: str, source, rule: Callable[[int], str], margin: float = 0.0) -> Verdict:
    """Apply a rule to differences given as a list or a function returning them (so that too few
    values, raised while building them, give *not tested*); ``rule(k)`` states it for k parts."""
    def build():
        ds = list(source() if callable(source) else source)
        return _verdict(kind, ds, rule(len(ds)), margin)
    return _guard(build)


def greater_for_all(diffs: Iterable[Difference] | Callable, what: str = "part") -> Verdict:
    """Every difference is positive (intersection: each at ALPHA/2; the opposite side Holm-corrected)."""
    return _applied("for_all", diffs, lambda k: f"holds if every {what} is significantly positive (t, one-sided {ALPHA / 2:g}); "
                                                f"does not hold if some {what} is significantly negative (Holm over {k})")


def greater_for_some(diffs: Iterable[Difference] | Callable, what: str = "part") -> Verdict:
    """Some difference is positive (union: Holm-corrected); does not hold if every one is negative."""
    return _applied("for_some", diffs, lambda k: f"holds if some {what} is significantly positive (t, Holm over {k} at {ALPHA / 2:g}); "
                                                 f"does not hold if every {what} is significantly negative")


def no_decrease(diffs: Iterable[Difference] | Callable, margin: float, what: str = "part") -> Verdict:
    """No difference falls below ``-margin`` (a claim of no decrease, tested against a fixed margin)."""
    return _applied("no_decrease", diffs, lambda k: f"holds if every {what} is significantly above -{margin:g} (t, one-sided {ALPHA / 2:g}); "
                                                    f"does not hold if some {what} is significantly below -{margin:g} (Holm over {k}); "
                                                    f"margin {margin:g} fixed in advance", margin)


def opposite_orders(pairs: Iterable[tuple[Difference, Difference]] | Callable, what: str = "comparison") -> Verdict:
    """The two metrics of some pair order their sides in opposite directions, both significantly."""
    flat = (lambda: [d for p in pairs() for d in p]) if callable(pairs) else [d for p in pairs for d in p]
    return _applied("opposite", flat, lambda k: f"holds if, for some {what}, the two metrics differ significantly in opposite directions "
                                                f"(t, one-sided {ALPHA / 2:g}, Holm over {k // 2}); does not hold if for every {what} "
                                                f"both metrics differ significantly in the same direction")


def not_tested(reason: str, figures: str = "") -> Verdict:
    return Verdict(NOT_TESTED, figures, f"not tested: {reason}", {"kind": "not_tested"})


def compare(a, b, label_a: str, label_b: str, across: str = "models") -> Verdict:
    """``greater`` with the sampling unit named: ``models`` or ``samples`` (independent, Welch) or ``paired``."""
    if across not in ("models", "samples", "paired"):
        raise ValueError(f"across must be 'models', 'samples' or 'paired'; got {across!r}")
    return greater(a, b, label_a, label_b, paired=across == "paired")


# ----------------------------------------------------------------------------- deterministic rules
def near_zero(values: Sequence[float], tol: float, label: str) -> Verdict:
    """Verdict on "``label`` is zero" to an absolute tolerance ``tol`` (e.g. float round-off)."""
    v = np.abs(np.asarray(values, float).ravel())
    worst = float(v.max())
    verdict = HOLDS if worst <= tol else FAILS
    return Verdict(verdict, f"{label}: largest |value| {_fmt(worst)} (n={v.size}); tolerance {_fmt(tol)}",
                   f"every value within {tol:g} of 0 (exact computation)", {"kind": "deterministic"})


def exceeds(values: Sequence[float], threshold: float, label: str) -> Verdict:
    """Verdict on "``label`` is above ``threshold``" for every value (a description of these models)."""
    v = np.asarray(values, float).ravel()
    least = float(v.min())
    verdict = HOLDS if least > threshold else FAILS
    return Verdict(verdict, f"{label}: smallest value {_fmt(least)} (n={v.size}); threshold {_fmt(threshold)}",
                   f"every value above {threshold:g} (no sampling: a description of the measured models)", {"kind": "deterministic"})


def all_of(parts: Iterable[Verdict]) -> Verdict:
    """Parts of one claim: not tested if any part is; otherwise does not hold if any part does not,
    holds if every part holds, else inconclusive."""
    parts = list(parts)
    verdicts = [p.verdict for p in parts]
    if NOT_TESTED in verdicts:
        verdict = NOT_TESTED
    else:
        verdict = FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE
    specs = [p.spec for p in parts if p.spec.get("kind") not in (None, "deterministic", "not_tested")]
    spec = specs[0] if len(specs) == 1 else ({"kind": "composite", "parts": specs} if specs else {"kind": "deterministic"})
    return Verdict(verdict, "; ".join(p.figures for p in parts if p.figures), " and ".join(dict.fromkeys(p.rule for p in parts)), spec)


def effective_rank(features) -> float:
    """exp(entropy of the normalised singular values) of centred features ``(n, d)``: the number of
    directions along which they vary (1 for points along a single line, 0 for identical points)."""
    z = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    s = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def baseline_step(steps: Iterable[int], fraction: float = BASELINE_FRACTION) -> int:
    """The early checkpoint of an "over training" comparison: the recorded step nearest to
    ``fraction`` of the last step, excluding step 0 (the earlier one on a tie)."""
    steps = sorted(set(int(s) for s in steps))
    later = [s for s in steps if s > 0] or steps
    target = fraction * steps[-1]
    return min(later, key=lambda s: (abs(s - target), s))


# ----------------------------------------------------------------------------- records
# A chapter records its claims in a *staging* folder (``paths.staging_claims_dir()``): the book driver
# points it at a folder of its own for each run and publishes the file together with the executed
# notebook only when the run succeeded; a notebook run any other way (papermill by hand, Jupyter)
# writes to ``build/claims-scratch`` and never touches the published claims. Each file carries the
# run's metadata (chapter, profile, parameters, code version, run id) beside its claims.
def _read(path: Path) -> dict:
    data = json.loads(path.read_text())
    if "claims" not in data:  # a file from before the metadata: claims only
        return {"meta": {}, "claims": data}
    return data


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def start(chapter: str, meta: dict) -> Path:
    """Begin a chapter's records in the staging folder: no claims yet, the run's metadata."""
    path = paths.staging_claims_dir() / f"{chapter}.json"
    _write(path, {"meta": {"chapter": chapter, "run_id": os.environ.get("GEED_RUN_ID", ""), **meta}, "claims": {}})
    return path


def record(chapter: str, claim_id: str, source: str, claim: str, verdict: Verdict, note: str = "", key: bool = False) -> dict:
    """Store one claim's verdict in the chapter's staged records (replacing an earlier record of the same id)."""
    if verdict.verdict not in STATUSES:
        raise ValueError(f"unknown verdict {verdict.verdict!r}; known: {STATUSES}")
    path = paths.staging_claims_dir() / f"{chapter}.json"
    data = _read(path) if path.exists() else {"meta": {"chapter": chapter}, "claims": {}}
    entry = {"chapter": chapter, "id": claim_id, "source": source, "claim": claim, **asdict(verdict), "note": note, "key": bool(key)}
    data["claims"][claim_id] = entry
    _write(path, data)
    return entry


def annotate(chapter: str, key: str, value) -> None:
    """Add an item to the metadata of a chapter's staged run (the ledger notes which runs it read)."""
    path = paths.staging_claims_dir() / f"{chapter}.json"
    data = _read(path) if path.exists() else {"meta": {"chapter": chapter}, "claims": {}}
    data["meta"][key] = value
    _write(path, data)


def reset(chapter: str) -> None:
    """Forget a chapter's staged records."""
    (paths.staging_claims_dir() / f"{chapter}.json").unlink(missing_ok=True)


COLUMNS = ["chapter", "id", "source", "claim", "verdict", "figures", "rule", "spec", "history", "note", "key"]


def load_all(chapters: Sequence[str] | None = None, directory: Path | None = None):
    """Every recorded claim as a DataFrame, in chapter order (``chapters``) then id order.

    ``directory``: the published claims (default) or a staging folder (a chapter's own table)."""
    import pandas as pd

    rows = []
    d = Path(directory) if directory is not None else paths.claims_dir()
    files = [d / f"{c}.json" for c in chapters] if chapters else sorted(d.glob("*.json"))
    for f in files:
        if f.exists():
            rows.extend(_read(f)["claims"].values())
    df = pd.DataFrame(rows, columns=COLUMNS)
    for text in ("history", "note"):
        df[text] = df[text].astype(object).where(df[text].notna(), "")
    df["key"] = df["key"].astype(object).where(df["key"].notna(), False).astype(bool)  # files from before the headline mark
    return df


def run_meta(chapter: str, directory: Path | None = None) -> dict:
    """The metadata of the run whose claims of ``chapter`` are published (empty if none are)."""
    f = (Path(directory) if directory is not None else paths.claims_dir()) / f"{chapter}.json"
    return _read(f)["meta"] if f.exists() else {}


def consistency(chapters: Sequence[str], pages: Path, directory: Path | None = None) -> list[str]:
    """Problems that make published claims and pages disagree: a page without claims, claims without
    a page, a page from another run than its claims, or chapters executed under different profiles
    or code versions. ``pages`` is the folder of executed chapter notebooks."""
    import nbformat

    problems, profiles, versions = [], {}, {}
    for c in chapters:
        page = Path(pages) / f"{c}.ipynb"
        meta = run_meta(c, directory)
        if not page.exists() and not meta:
            continue
        if not page.exists():
            problems.append(f"{c}: claims are published but the chapter's page is not")
            continue
        page_meta = nbformat.read(page, as_version=4).metadata.get("geed", {})
        if not meta:
            problems.append(f"{c}: the page is published but its claims are not")
            continue
        if not meta.get("run_id") or page_meta.get("run_id") != meta.get("run_id"):
            problems.append(f"{c}: the page and the claims come from different runs "
                            f"(page {page_meta.get('run_id') or 'unknown'}, claims {meta.get('run_id') or 'unknown'})")
        profiles.setdefault(meta.get("profile", "unknown"), []).append(c)
        versions.setdefault(meta.get("code_version", "unknown"), []).append(c)
    if len(profiles) > 1:
        problems.append("chapters were executed under different profiles: " + "; ".join(f"{p}: {', '.join(cs)}" for p, cs in profiles.items()))
    if len(versions) > 1:
        problems.append("chapters were executed with different versions of geed: " + "; ".join(f"{v}: {', '.join(cs)}" for v, cs in versions.items()))
    return problems
