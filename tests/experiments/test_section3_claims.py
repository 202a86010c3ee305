"""Section 3's verdicts follow the numbers: synthetic tables of the five measurements the claims read
(Prop. 3.2, Prop. 3.1(1), Prop. 3.1(2), the interpolation floor, the normalisation by M), once as the
paper states each claim and once with each claim broken, one claim at a time."""
import numpy as np
import pandas as pd
import pytest

from geed.experiments import section3 as s3
from geed.report import claims as C

SEEDS = range(4)
SAMPLES = range(12)
BLOCKS = ("block1", "block2", "block3")


def _tables(rng_seed: int = 0) -> dict:
    """Tables as :func:`section3.run` makes them, with every claim true: exact zeros where the paper has
    them, clear gaps between models (four seeds each, small noise)."""
    rng = np.random.default_rng(rng_seed)
    p32 = pd.DataFrame([{"map": m, "group": g, "layer": lay, "G-EED (l2)": 0.0 if m == "equivariant" else 0.3 + 0.01 * rng.random()}
                        for m in ("equivariant", "asymmetric filter") for g in ("C4", "D4", "flip") for lay in ("blur1", "blur2")])
    p31 = pd.DataFrame({"map": ["f1 (feature extractor)", "f2 (head)", "f = f2 o f1"], "G-EED (l2)": [0.4, 0.7, 0.0]})
    p312 = pd.DataFrame([{"model": model, "metric": metric, "sample": n,
                          "value": 0.0 if model.startswith("features") else 0.5 + 0.05 * rng.normal()}
                         for model in ("features averaged over C4", "plain CNN") for metric in ("latent_l2", "softmax", "LI") for n in SAMPLES])
    # 1 + channelwise G-EED per block: the C8-CNN exact under C4 and small under C8; the CNN far from it.
    # Without the mask the order is reversed, so a rule that read the unmasked rows would not hold.
    level = {("C8-CNN", "C4", True): 0.0, ("C8-CNN", "C4", False): 0.0, ("C8-CNN", "C8", True): 0.05, ("C8-CNN", "C8", False): 0.9,
             ("CNN", "C4", True): 0.5, ("CNN", "C4", False): 0.5, ("CNN", "C8", True): 0.6, ("CNN", "C8", False): 0.4}
    floor = pd.DataFrame([{"family": "c8cnn" if model == "C8-CNN" else "cnn", "seed": seed, "group": g, "mask": mask, "block": b,
                           "deviation": v if v == 0.0 else v + 0.01 * rng.normal()}
                          for (model, g, mask), v in level.items() for seed in SEEDS for b in BLOCKS])
    floor["model"] = floor["family"].map({"c8cnn": "C8-CNN", "cnn": "CNN"})
    floor["setting"] = floor["group"] + floor["mask"].map({True: ", masked", False: ", no mask"})
    scales = (0.01, 1.0, 100.0)
    norm = pd.DataFrame([{"scale": c, "variant": v, "mean": 0.2 if v == "normalised by M" else 0.3 * c}
                         for c in scales for v in ("normalised by M", "unnormalised")])
    return {"p32": p32, "p31": p31, "p312": p312, "floor": floor, "normalisation": norm}


def _verdicts(t: dict) -> dict:
    return {cid: v.verdict for cid, _, _, v, _ in s3.claims(t)}


def _set(frame: pd.DataFrame, where, column: str, value) -> pd.DataFrame:
    out = frame.copy()
    out.loc[where(out), column] = value
    return out


def test_every_claim_holds_on_tables_as_the_paper_states_them():
    assert _verdicts(_tables()) == {f"S3-{i}": C.HOLDS for i in range(5)}


def _broken(claim: str) -> dict:
    """Tables on which ``claim`` (alone) is false."""
    t = _tables()
    if claim == "S3-0 equivariant map not exact":
        t["p32"] = _set(t["p32"], lambda f: (f["map"] == "equivariant") & (f.layer == "blur2"), "G-EED (l2)", 1e-9)
    elif claim == "S3-0 asymmetric map exact":
        t["p32"] = _set(t["p32"], lambda f: (f["map"] == "asymmetric filter") & (f.group == "flip"), "G-EED (l2)", 0.0)
    elif claim == "S3-1 composite not invariant":
        t["p31"] = _set(t["p31"], lambda f: f["map"] == "f = f2 o f1", "G-EED (l2)", 1e-6)
    elif claim == "S3-1 feature extractor invariant":
        t["p31"] = _set(t["p31"], lambda f: f["map"] == "f1 (feature extractor)", "G-EED (l2)", 0.0)
    elif claim == "S3-1 head invariant":
        t["p31"] = _set(t["p31"], lambda f: f["map"] == "f2 (head)", "G-EED (l2)", 0.0)
    elif claim == "S3-2 averaged extractor not invariant":
        t["p312"] = _set(t["p312"], lambda f: (f.model == "features averaged over C4") & (f.metric == "latent_l2") & (f["sample"] == 3),
                         "value", 1e-6)
    elif claim == "S3-2 model not invariant":
        t["p312"] = _set(t["p312"], lambda f: (f.model == "features averaged over C4") & (f.metric == "softmax") & (f["sample"] == 0),
                         "value", 1e-6)
    elif claim == "S3-3 C8-CNN not exact under C4":
        t["floor"] = _set(t["floor"], lambda f: (f.model == "C8-CNN") & (f.group == "C4") & f["mask"] & (f.block == "block3"),
                          "deviation", 1e-3)
    elif claim == "S3-3 CNN as equivariant as the C8-CNN":
        t["floor"] = _set(t["floor"], lambda f: (f.model == "CNN") & (f.setting == "C8, masked"), "deviation", 0.01)
    elif claim == "S3-4 normalised value moves with the scale":
        t["normalisation"] = _set(t["normalisation"], lambda f: (f.variant == "normalised by M") & (f.scale == 100.0), "mean", 0.21)
    elif claim == "S3-4 unnormalised value not proportional":
        t["normalisation"] = _set(t["normalisation"], lambda f: (f.variant == "unnormalised") & (f.scale == 100.0), "mean", 0.3)
    return t


BREAKS = ["S3-0 equivariant map not exact", "S3-0 asymmetric map exact", "S3-1 composite not invariant", "S3-1 feature extractor invariant",
          "S3-1 head invariant", "S3-2 averaged extractor not invariant", "S3-2 model not invariant", "S3-3 C8-CNN not exact under C4",
          "S3-3 CNN as equivariant as the C8-CNN", "S3-4 normalised value moves with the scale", "S3-4 unnormalised value not proportional"]


@pytest.mark.parametrize("break_", BREAKS)
def test_each_claim_fails_when_its_part_is_false_and_only_it(break_):
    claim = break_.split()[0]
    got = _verdicts(_broken(break_))
    assert got[claim] == C.FAILS, got
    assert {k: v for k, v in got.items() if k != claim} == {k: C.HOLDS for k in got if k != claim}


def test_s3_3_compares_the_models_on_the_masked_c8_rows():
    """S3-3 reads the masked C8 setting: the unmasked rows (where, in these tables, the C8-CNN deviates
    more than the CNN) do not change it, and the masked rows alone decide it."""
    t = _tables()
    assert _verdicts(t)["S3-3"] == C.HOLDS  # the unmasked rows, where the C8-CNN deviates more, are not read
    unmasked = (t["floor"].group == "C8") & ~t["floor"]["mask"]
    swapped = t["floor"].copy()
    swapped.loc[unmasked & (swapped.model == "C8-CNN"), "deviation"] = 0.01
    swapped.loc[unmasked & (swapped.model == "CNN"), "deviation"] = 0.95
    assert _verdicts({**t, "floor": swapped})["S3-3"] == C.HOLDS
    assert _verdicts({**t, "floor": _set(t["floor"], lambda f: f.setting == "C8, masked", "deviation", 0.3)})["S3-3"] != C.HOLDS


def test_s3_3_is_inconclusive_when_the_models_do_not_differ():
    """Both models' masked C8 deviations drawn from one distribution: no difference to find, so S3-3
    neither holds nor fails."""
    t = _tables()
    rng = np.random.default_rng(1)
    floor = t["floor"].copy()
    masked = floor.setting == "C8, masked"
    floor.loc[masked, "deviation"] = 0.3 + 0.2 * rng.normal(size=int(masked.sum()))
    assert _verdicts({**t, "floor": floor})["S3-3"] == C.INCONCLUSIVE
