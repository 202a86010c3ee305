"""Section 3 of Kvinge et al.: the definitions, checked on examples with known answers.

Each measuring function returns a tidy DataFrame (one row per measured value); :func:`run` makes
every table of the chapter, :func:`claims` turns them into verdicts with rules fixed here,
and the ``*_sentence`` functions say in words what a table shows. Exactness is judged with the
tolerances of :data:`geed.testing.TOLERANCE` (round-off of the precision measured in).
"""
from __future__ import annotations

import copy

import time

import numpy as np
import pandas as pd
import torch

from geed import orbit as ev
from geed import stats
from geed.actions import SpatialAction
from geed.examples import EquivariantMap, hand_example, proposition_31_example
from geed.groups import get_group
from geed.metrics import latent_eed, softmax_eed
from geed.models import create_model
from geed.models.digits import GroupAveraged, InvariantFeatures
from geed.testing import TOLERANCE, equivariance_error

__all__ = [
    "run",
    "claims",
    "known_answers",
    "composition_error",
    "interpolation_floor",
    "normalisation_by_m",
    "reference_points",
    "figure1_orbit",
    "proposition_31_2",
]

F64 = torch.float64


def _sensitive_cnn(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 27 * 27, 9)
    ).to(F64).eval()


def known_answers(x: torch.Tensor) -> pd.DataFrame:
    """Measured vs exact values for maps whose G-EED is known (float64)."""
    rows = []
    x = x.to(F64)
    for g in ("C4", "D4", "flip"):
        grp = get_group(g)
        model = EquivariantMap().to(F64).eval()
        err = equivariance_error(model, x, grp, layers={"blur2": SpatialAction(grp)}, dtype=F64)["blur2"]
        rows.append(("exactly equivariant map: 1 + channelwise G-EED (geed.testing.equivariance_error)", g, err, 0.0))
    for g in ("C4", "D4"):
        rep = ev.evaluate(GroupAveraged(_sensitive_cnn(0), g).eval(), x, g)
        rows.append(("group-averaged model: softmax G-EED", g, rep[("softmax", ev.OUTPUT)].value, 0.0))
        rows.append(("group-averaged model: logit invariance error (LI)", g, rep[("LI", ev.OUTPUT)].value, 0.0))
    same = torch.randn(1, 5, 9, dtype=F64).expand(8, 5, 9).contiguous()
    rows.append(("identical predictions: softmax G-EED (KL)", "C8", softmax_eed(same, get_group("C8")).value, 0.0))
    for key, (measured, exact) in hand_example().items():
        rows.append((f"two-point example by hand: {key}", "flip", measured, exact))
    p = proposition_31_example()
    rows.append(("Prop. 3.1(1): f = f2 o f1", "flip", p.f, 0.0))
    df = pd.DataFrame(rows, columns=["check", "group", "measured", "exact"])
    df["abs_error"] = (df["measured"] - df["exact"]).abs()
    return df


def composition_error(x: torch.Tensor) -> pd.DataFrame:
    """Relative error of g_i (g_j x) against (g_i g_j) x, per pair of elements, on images ``x``."""
    rows = []
    x = x.to(F64)
    for name in ("C4", "D4", "C8", "D8"):
        for mask in (False, True):
            g = get_group(name, mask=mask)
            for i in range(len(g)):
                for j in range(len(g)):
                    a, b = g.act(g.act(x, j), i), g.act(x, g.compose(i, j))
                    err = ((a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1).clamp_min(1e-30)).numpy()
                    rows.append({"group": name, "mask": mask, "pair": f"{i},{j}", "error": float(err.mean())})
    return pd.DataFrame(rows)


def interpolation_floor(x: torch.Tensor, width: float, seeds: list[int], progress: bool = True) -> pd.DataFrame:
    """Per-model deviation from exact equivariance, ``1 + channelwise G-EED``, after each block of an
    untrained C8 steerable CNN and a conventional CNN, under C4 (exact) and C8 (interpolated),
    with and without the circular mask. One row per (model seed, block, group, mask)."""
    rows, t0 = [], time.time()
    for i, seed in enumerate(seeds, 1):
        for family in ("c8cnn", "cnn"):
            if progress:
                print(f"[interpolation floor] {family}, model {i}/{len(seeds)} ({time.time() - t0:.0f} s)", flush=True)
            model = create_model(family, width=width, seed=seed).eval()
            for gname in ("C4", "C8"):
                for mask in (True, False):
                    g = get_group(gname, mask=mask)
                    rep = ev.evaluate(model, x, g, channelwise=model.layer_actions(g), logits=False)
                    for b in model.blocks:
                        r = rep[("channelwise", b)]
                        rows.append({"family": family, "seed": seed, "group": gname, "mask": mask, "block": b,
                                     "deviation": 1.0 + r.value})
    return pd.DataFrame(rows)


def normalisation_by_m(x: torch.Tensor, width: float, seed: int, scales=(0.01, 0.1, 1.0, 10.0, 100.0)) -> pd.DataFrame:
    """Latent l2 G-EED of a CNN whose latent space is multiplied by a constant: normalised vs not."""
    model = create_model("cnn", width=width, seed=seed).eval()
    g = get_group("C8", mask=True)
    Z = ev.orbit_outputs(model, x, g, ["latent"])["latent"].to(F64)
    rows = []
    for c in scales:
        for normalise in (True, False):
            r = latent_eed(c * Z, g, "l2", normalise=normalise)
            lo, hi = r.ci()
            rows.append({"scale": c, "variant": "normalised by M" if normalise else "unnormalised",
                         "mean": r.value, "lo": lo, "hi": hi, "n": len(r.per_sample)})
    return pd.DataFrame(rows)


def reference_points(x: torch.Tensor, width: float, seed: int) -> pd.DataFrame:
    """Per-sample latent (l2) and softmax C8-EED measured against the orbit mean (the paper's fhat)
    and against the untransformed input's output, for three untrained models."""
    g = get_group("C8", mask=True)
    models = {
        "CNN": create_model("cnn", width=width, seed=seed).eval(),
        "C8-CNN": create_model("c8cnn", width=width, seed=seed).eval(),
        "sensitive toy CNN": _sensitive_cnn(seed),
    }
    rows = []
    for label, model in models.items():
        latent = "latent" if hasattr(model, "latent_layer") else None
        rep = ev.evaluate(model, x, g, latent=latent, references=("orbit", "input"))
        for metric in (["latent_l2"] if latent else []) + ["softmax"]:
            layer = "latent" if metric.startswith("latent") else ev.OUTPUT
            a, b = rep[(metric, layer)], rep[(metric + "@input", layer)]
            for n, (va, vb) in enumerate(zip(a.per_sample, b.per_sample)):
                rows.append({"model": label, "metric": metric, "sample": n, "orbit mean": va, "untransformed input": vb})
    return pd.DataFrame(rows)


def figure1_orbit(x_one: torch.Tensor, width: float, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """The C4 orbit of one digit and the three metric types (channelwise after block 1, latent, softmax)
    for an untrained CNN and C8-CNN, measured on that single orbit."""
    g = get_group("C4")
    images = g.orbit(x_one[:1])[:, 0, 0].numpy()
    rows = []
    for label, family in (("CNN", "cnn"), ("C8-CNN", "c8cnn")):
        model = create_model(family, width=width, seed=seed).eval()
        rep = ev.evaluate(model, x_one[:1], g, channelwise={"block1": model.layer_actions(g)["block1"]}, latent=None)
        Z = ev.orbit_outputs(model, x_one[:1], g, ["latent"])["latent"]
        rep.results[("latent_cosine_unnormalised", "latent")] = latent_eed(Z, g, "cosine", normalise=False)
        # (latent l2 divided by M needs at least two data points; one orbit has one)
        for metric, layer, label_m in (("channelwise", "block1", "channelwise (block 1)"),
                                       ("latent_cosine_unnormalised", "latent", "latent (-cosine)"), ("softmax", ev.OUTPUT, "softmax (KL)")):
            rows.append({"model": label, "metric": label_m, "value": rep[(metric, layer)].value})
    return images, pd.DataFrame(rows)


def proposition_31_2(x: torch.Tensor, width: float, seed: int) -> pd.DataFrame:
    """Prop. 3.1(2): a CNN whose feature extractor is made exactly C4-invariant (averaged over the
    orbit) is invariant; the same CNN without it is not. Per-sample softmax and LI values."""
    base = create_model("cnn", width=width, seed=seed).to(F64).eval()
    rows = []
    for label, model in (("features averaged over C4", InvariantFeatures(base, "C4").eval()), ("plain CNN", base)):
        rep = ev.evaluate(model, x.to(F64), "C4", latent="latent", logits=True)
        for metric, layer in (("latent_l2", "latent"), ("softmax", ev.OUTPUT), ("LI", ev.OUTPUT)):
            for n, v in enumerate(rep[(metric, layer)].per_sample):
                rows.append({"model": label, "metric": metric, "sample": n, "value": v})
    return pd.DataFrame(rows)


def proposition_32(x: torch.Tensor, seed: int = 0) -> pd.DataFrame:
    """G-EED (l2, spatial action, float64) after each layer of the exactly D4-equivariant example map,
    and of the same map with its first blur filter made asymmetric (in every channel), under C4, D4 and the flip."""
    from geed.actions import SpatialAction
    from geed.examples import EquivariantMap
    from geed.metrics import geed as geed_metric

    torch.manual_seed(seed)
    base = EquivariantMap(in_channels=x.shape[1]).double().eval()
    broken = copy.deepcopy(base)
    with torch.no_grad():
        broken.blur1.kernel[:, 0].copy_(torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64))
    rows = []
    for label, model in (("equivariant", base), ("asymmetric filter", broken)):
        for gname in ("C4", "D4", "flip"):
            g = get_group(gname)
            Y = ev.orbit_outputs(model, x.double(), g, ["blur1", "blur2"], dtype=torch.float64)
            for layer in ("blur1", "blur2"):
                rows.append({"map": label, "group": gname, "layer": layer, "G-EED (l2)": geed_metric(Y[layer], SpatialAction(g), "l2").value})
    return pd.DataFrame(rows)


# --- sentences computed from the tables (a profile can change every one of them) ----------------------


EXACT64, EXACT32 = TOLERANCE[torch.float64], TOLERANCE[torch.float32]


def known_answers_sentence(known: pd.DataFrame, tol: float = EXACT64) -> str:
    """Whether every known answer was reproduced to float64 round-off, and which failed if not."""
    worst = float(known["abs_error"].max())
    if worst <= tol:
        return f"{worst:.1e}: every check reproduces its exact value to float64 round-off"
    bad = known.loc[known["abs_error"] > tol, "check"].unique() if "check" in known else []
    return f"{worst:.1e}, above float64 round-off ({tol:g}); checks off: {', '.join(map(str, bad)) or 'see table'}"


def mask_sentence(floor_sum: pd.DataFrame, model: str = "C8-CNN") -> str:
    """How the unmasked C8 deviation of ``model`` compares with the masked one, block by block."""
    sel = floor_sum[floor_sum.model == model]
    masked = sel[sel.setting == "C8, masked"].set_index("block")["mean"]
    bare = sel[sel.setting == "C8, no mask"].set_index("block")["mean"]
    gap = (bare - masked).dropna()
    if gap.empty:
        return "no unmasked C8 measurement was made"
    grows = int((gap > 0).sum())
    top = str(gap.idxmax())
    return (f"the {model}'s mean deviation is larger without the mask at {grows} of {len(gap)} blocks, "
            f"by {gap.min():.3f} to {gap.max():.3f}, most at {top if top.startswith('block') else 'block ' + top}")


def floor_figures(t: dict, model: str = "C8-CNN") -> dict[str, str]:
    """What the chapter's text quotes of the interpolation floor, by the name it glues them under: the
    smallest and largest mean deviation over blocks of ``model`` under masked C8 (``s3_floor_min``,
    ``s3_floor_max``), how the mask changes it (``s3_mask_sentence``), and its largest deviation of a
    single model and block under C4, whose quarter turns are exact (``s3_c8_c4_max``)."""
    floor, floor_sum = t["floor"], t["floor_summary"]
    masked = floor_sum[(floor_sum.model == model) & (floor_sum.setting == "C8, masked")]["mean"]
    c4 = floor[(floor.model == model) & (floor.group == "C4")]["deviation"]
    return {"s3_floor_min": f"{masked.min():.3f}", "s3_floor_max": f"{masked.max():.3f}", "s3_mask_sentence": mask_sentence(floor_sum, model),
            "s3_c8_c4_max": f"{c4.abs().max():.1e}"}


def orderings_sentence(refs: pd.DataFrame) -> str:
    """Whether the two reference points order the models the same way, per metric (by mean value)."""
    parts = []
    for metric, g in refs.groupby("metric", sort=True):
        means = g.groupby("model")[["orbit mean", "untransformed input"]].mean()
        a = list(means["orbit mean"].sort_values().index)
        b = list(means["untransformed input"].sort_values().index)
        parts.append(f"{metric}: {'the same order' if a == b else 'different orders'} ({' < '.join(a)}"
                     + ("" if a == b else f" against {' < '.join(b)}") + ")")
    return "; ".join(parts)


def figure1_sentence(fig1: pd.DataFrame) -> str:
    """The three measurements of the single-orbit example, per model, in words."""
    v = fig1.set_index(["model", "metric"])["value"]
    out = []
    for model in dict.fromkeys(fig1["model"]):
        ch = v[(model, "channelwise (block 1)")]
        out.append(f"the {model} reads {ch:.3f} channelwise at block 1 "
                   f"({'exactly equivariant to 1e-6' if abs(ch + 1) < 1e-6 else 'not exactly equivariant'}) "
                   f"and softmax KL {v[(model, 'softmax (KL)')]:.1e}")
    return "; ".join(out)


# ----------------------------------------------------------------------------- the chapter
def run(x: torch.Tensor, width: float, seeds: list[int], seed: int, cache=None, progress: bool = True) -> dict:
    """Every table of the chapter from the evaluation digits ``x``; the interpolation floor (the only
    long part) is cached when a :class:`~geed.report.cache.ResultCache` is given."""
    few = x[: min(8, len(x))]
    t: dict = {"known": known_answers(few), "p32": proposition_32(few, seed)}
    p31 = proposition_31_example()
    t["p31"] = pd.DataFrame({"map": ["f1 (feature extractor)", "f2 (head)", "f = f2 o f1"], "G-EED (l2)": [p31.f1, p31.f2, p31.f]})
    t["p312"] = proposition_31_2(x, width, seed)
    comp = composition_error(x[: min(16, len(x))])
    t["composition"] = comp.groupby(["group", "mask"], as_index=False)["error"].agg(["mean", "max"]).reset_index()
    params = dict(n_points=len(x), width=width, seeds=list(seeds))
    compute = lambda: interpolation_floor(x, width, list(seeds), progress=progress)  # noqa: E731
    floor, t["floor_cached"] = cache.get_or_compute("section3-floor", params, compute, data=x) if cache is not None else (compute(), False)
    floor["model"] = floor["family"].map({"c8cnn": "C8-CNN", "cnn": "CNN"})
    floor["setting"] = floor["group"] + floor["mask"].map({True: ", masked", False: ", no mask"})
    t["floor"] = floor
    t["floor_summary"] = stats.summarise(floor, "deviation", ["model", "setting", "block"], across="models")
    t["normalisation"] = normalisation_by_m(x, width, seed)
    t["references"] = reference_points(x, width, seed)
    t["figure1_images"], t["figure1"] = figure1_orbit(x, width, seed)
    return t


def claims(t: dict) -> list[tuple]:
    """Verdicts on the claims of Section 3 from the tables of :func:`run`: ``(id, source, claim, verdict, key)``.
    Exact values are judged against round-off (:data:`geed.testing.TOLERANCE`), differences between
    models with the rules of :mod:`geed.report.claims`."""
    from geed.report import claims as C

    p32, p31, p312, floor, norm = t["p32"], t["p31"].set_index("map")["G-EED (l2)"], t["p312"], t["floor"], t["normalisation"]
    out = []
    out.append(("S3-0", "Sec. 3, Prop. 3.2", "G-EED (with a metric) is 0 for a map that is equivariant on the data, and above 0 for one that is not.",
                C.all_of([C.near_zero(p32[p32["map"] == "equivariant"]["G-EED (l2)"], EXACT64 / 1000, "G-EED of the equivariant map"),
                          C.exceeds(p32[p32["map"] == "asymmetric filter"]["G-EED (l2)"], 1e-6, "G-EED of the map with an asymmetric filter")]), False))
    out.append(("S3-1", "Sec. 3, Prop. 3.1(1)", "A composite f = f2 o f1 can be G-invariant although neither f1 nor f2 is.",
                C.all_of([C.near_zero([p31["f = f2 o f1"]], EXACT64 / 1000, "G-EED of f"),
                          C.exceeds([p31["f1 (feature extractor)"], p31["f2 (head)"]], 1e-6, "G-EED of f1 and of f2")]), False))
    inv = p312[p312.model == "features averaged over C4"]
    plain = p312[(p312.model == "plain CNN") & (p312.metric == "latent_l2")]
    out.append(("S3-2", "Sec. 3, Prop. 3.1(2)", "If the feature extractor f1 is G-invariant, the whole model f is G-invariant.",
                C.all_of([C.near_zero(inv[inv.metric == "latent_l2"].value, EXACT64 / 10, "latent C4-EED of the averaged extractor"),
                          C.near_zero(inv[inv.metric == "softmax"].value, EXACT64 / 10, "softmax C4-EED of the model"),
                          C.compare(plain.value, inv[inv.metric == "latent_l2"].value, "plain CNN latent C4-EED", "averaged", across="samples")]), False))
    per_model = floor.groupby(["model", "setting", "seed"], as_index=False)["deviation"].mean()
    c8_c4 = floor[(floor.model == "C8-CNN") & (floor.group == "C4")]["deviation"]
    out.append(("S3-3", "Sec. 4.1 (premise)",
                "A C8 steerable CNN is equivariant at every block, up to the interpolation of 45-degree rotations: exactly so under C4, "
                "and under C8 far more so than a conventional CNN of the same skeleton.",
                C.all_of([C.near_zero(c8_c4, EXACT32, "C8-CNN, 1 + channelwise C4-EED per block (float32)"),
                          C.compare(per_model[(per_model.model == "CNN") & (per_model.setting == "C8, masked")].deviation,
                                    per_model[(per_model.model == "C8-CNN") & (per_model.setting == "C8, masked")].deviation,
                                    "CNN mean deviation over blocks (C8, masked)", "C8-CNN")]), True))
    normed = norm[norm.variant == "normalised by M"]["mean"].to_numpy()
    raw = norm[norm.variant == "unnormalised"].set_index("scale")["mean"]
    out.append(("S3-4", "Sec. 3.1, eq. 6 (normalisation by M)",
                "Dividing latent G-EED by M makes it independent of the scale of the latent space, while the unnormalised value scales with it.",
                C.all_of([C.near_zero((normed - normed[0]) / normed[0], EXACT64, "relative change of the normalised value across scales"),
                          C.near_zero([raw[100.0] / raw[1.0] / 100.0 - 1.0], EXACT64, "unnormalised(x100) / (100 x unnormalised) - 1")]), False))
    return out
