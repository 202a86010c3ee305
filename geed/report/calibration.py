"""False-verdict rates and power of the ledger's rules, by simulation.

Each recorded :class:`geed.report.claims.Verdict` carries the shape of its rule (``spec``: the kind of
rule, and for every part the sizes and weights of the groups it contrasts). :func:`simulate`
draws thousands of tables of that shape from normal distributions and applies the *same*
decision function the ledger uses (:func:`geed.report.claims.decide`):

* **false-verdict rate**: with no effect in any part, the share of verdicts other than
  *inconclusive*; for a claim about every part, also the share of *holds* when one part has no
  effect and every other a large one; for a claim about some part, also the share of *does not
  hold* when one part has no effect and every other a large one against the claim; for a claim
  that two metrics order two sides oppositely, the shares of *holds* and of *does not hold* when
  one metric of one comparison has no effect and every other effect is large and agrees across
  the metrics (the claim is false just on one side of that point and true just on the other), and
  with several comparisons also the share of *holds* when every comparison has one metric without
  effect and the other large (a false *holds* may come from any of them); for
  a claim of no decrease beyond a margin, the shares of *holds* and of *does not hold* at the
  margin and of *does not hold* when nothing changes (the largest is reported);
* **power**: the share of *holds* when an effect of ``effect`` standard deviations (of single
  values) is planted in the claimed direction -- in every part for "for every" rules, in one part
  for "for some" rules; for a no-decrease claim, when nothing changes.
"""
from __future__ import annotations

import numpy as np

from geed.report.claims import ALPHA, _p_above, _p_below, _t_stats, decide, threshold

__all__ = ["simulate", "false_verdict_rate", "power", "detectable_effect", "rates"]


def _draw(spec: dict, shift: np.ndarray, n_sims: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """p-values (claimed side, opposite side) of every part for ``n_sims`` simulated tables.

    ``shift[j]`` is the true value of part j's contrast, in standard deviations of single values."""
    kind, margin = spec["kind"], spec.get("margin_sd", 0.0)
    p_hi, p_lo = [], []
    for j, part in enumerate(spec["parts"]):
        groups = [rng.standard_normal((n_sims, n)) for n in part["n"]]
        w = part["weights"]
        groups[0] = groups[0] + shift[j] / w[0]
        est, se, df = _t_stats(groups, w)
        delta = threshold(kind, margin)
        p_hi.append(_p_above(est, se, df, delta))
        p_lo.append(_p_below(est, se, df, delta))
    return np.stack(p_hi, axis=-1), np.stack(p_lo, axis=-1)


def _codes(spec: dict, shift, n_sims: int, rng) -> np.ndarray:
    if spec["kind"] == "composite":
        codes = np.stack([_codes(s, shift_s, n_sims, rng) for s, shift_s in zip(spec["parts"], shift)], axis=-1)
        fails = np.any(codes == 2, axis=-1)
        holds = np.all(codes == 1, axis=-1)
        return np.where(fails, 2, np.where(holds, 1, 0))
    p_hi, p_lo = _draw(spec, np.asarray(shift, float), n_sims, rng)
    return decide(spec["kind"], p_hi, p_lo, ALPHA)


WHERE = ("null", "margin", "least favourable", "every edge", "effect")  # the configurations simulate() can place


def _shift(spec: dict, effect: float, where: str) -> list:
    """True contrasts of every part: ``where`` is one of ``WHERE``."""
    if where not in WHERE:
        raise ValueError(f"where must be one of {WHERE}; got {where!r}")
    if spec["kind"] == "composite":
        return [_shift(s, effect, where) for s in spec["parts"]]
    k, kind = len(spec["parts"]), spec["kind"]
    out = np.zeros(k)
    if where == "margin":
        out[:] = -spec.get("margin_sd", 0.0)
    elif where == "least favourable":  # one part exactly at the null, every other far from it
        if kind == "for_some":  # ... against the claim: a false "does not hold" is likeliest there
            out[:] = -50.0
            out[0] = 0.0
        elif kind == "opposite":  # ... every comparison ordered alike by both metrics but one metric of the first
            out[:] = 50.0
            out[1] = 0.0
        else:  # ... on the claimed side: a false "holds" is likeliest there
            out[:] = 50.0
            out[0] = -spec.get("margin_sd", 0.0) if kind == "no_decrease" else 0.0
    elif where == "every edge":  # opposite orders: in every comparison one metric large, the other without effect
        out[:] = 50.0
        out[1::2] = 0.0
    elif where == "effect":
        if kind == "for_some":
            out[0] = effect
        elif kind == "opposite":
            out[0], out[1] = effect, -effect
        elif kind != "no_decrease":
            out[:] = effect
    return list(out)


def simulate(spec: dict, where: str = "null", effect: float = 0.0, n_sims: int = 4000, seed: int = 0) -> dict[str, float]:
    """Shares of holds / does not hold / inconclusive over ``n_sims`` simulated tables."""
    rng = np.random.default_rng(seed)
    codes = _codes(spec, _shift(spec, effect, where), n_sims, rng)
    return {"holds": float(np.mean(codes == 1)), "does not hold": float(np.mean(codes == 2)), "inconclusive": float(np.mean(codes == 0))}


def _has(spec: dict, kind: str) -> bool:
    return spec["kind"] == kind or (spec["kind"] == "composite" and any(_has(s, kind) for s in spec["parts"]))


def false_verdict_rate(spec: dict, n_sims: int = 4000, seed: int = 0) -> float:
    """Share of wrong verdicts other than *inconclusive* where the claim is false at its boundary.

    For comparisons: with no effect anywhere. For a claim about every part, also where a single
    part has no effect and all others a large one (the case in which a false *holds* is likeliest);
    for a claim about some part, where a single part has no effect and all others a large one
    against the claim (a false *does not hold*); for a claim of opposite orders, where one metric
    of one comparison has no effect and every other effect is large and agrees across the metrics
    (a false *holds* just outside the claim, a false *does not hold* just inside it, which with no
    effect anywhere are both rare), and with several comparisons a false *holds* where every
    comparison is at that edge (without the correction over comparisons it would be k times likelier);
    for a no-decrease claim, at the margin (either wrong verdict) and with no change.
    The largest of these is returned."""
    null = simulate(spec, "null", n_sims=n_sims, seed=seed)
    cases = [null["holds"] + null["does not hold"]]
    if _has(spec, "no_decrease"):  # at the margin a holds just beyond it, and a does not hold just within it, are wrong
        margin = simulate(spec, "margin", n_sims=n_sims, seed=seed + 1)
        cases = [margin["holds"], margin["does not hold"], null["does not hold"]]
    kind, k = spec["kind"], len(spec["parts"])
    if kind in ("for_all", "no_decrease") and k > 1:
        cases.append(simulate(spec, "least favourable", n_sims=n_sims, seed=seed + 2)["holds"])
    if kind == "for_some" and k > 1:
        cases.append(simulate(spec, "least favourable", n_sims=n_sims, seed=seed + 2)["does not hold"])
    if kind == "opposite":
        edge = simulate(spec, "least favourable", n_sims=n_sims, seed=seed + 2)
        cases += [edge["holds"], edge["does not hold"]]
        if k > 2:  # several comparisons: a false holds is likeliest with every one of them at the edge
            cases.append(simulate(spec, "every edge", n_sims=n_sims, seed=seed + 3)["holds"])
    return max(cases)


def power(spec: dict, effect: float, n_sims: int = 4000, seed: int = 0) -> float:
    """Share of *holds* with an effect of ``effect`` standard deviations in the claimed direction."""
    return simulate(spec, "effect", effect, n_sims=n_sims, seed=seed)["holds"]


def detectable_effect(spec: dict, target: float = 0.8, n_sims: int = 2000, seed: int = 0,
                      grid=(0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16)) -> float:
    """Smallest effect on ``grid`` (standard deviations) found with probability ``target`` (inf if none)."""
    if _has(spec, "no_decrease") and not _has(spec, "greater") and spec["kind"] != "composite":
        return float("nan")  # power is at zero change, not at an effect
    for e in grid:
        if power(spec, e, n_sims=n_sims, seed=seed) >= target:
            return float(e)
    return float("inf")


def rates(spec: dict, effect: float = 2.0, n_sims: int = 4000, seed: int = 0) -> dict[str, float]:
    """False-verdict rate, power at ``effect`` SD (at zero change for no-decrease rules) and the
    effect detected with 80% power."""
    if spec.get("kind") in (None, "deterministic", "not_tested"):
        return {"false verdicts": float("nan"), "power": float("nan"), "80% power at (SD)": float("nan")}
    no_dec = spec["kind"] == "no_decrease"
    pw = simulate(spec, "null", n_sims=n_sims, seed=seed)["holds"] if no_dec else power(spec, effect, n_sims, seed)
    return {"false verdicts": false_verdict_rate(spec, n_sims, seed), "power": pw,
            "80% power at (SD)": detectable_effect(spec, n_sims=max(500, n_sims // 2), seed=seed)}
