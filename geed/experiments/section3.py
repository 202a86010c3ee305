"""Section 3 of Kvinge et al.: the definitions, checked on examples with known answers.

Each function returns a tidy DataFrame (one row per measured value) that the chapter charts.
"""
from __future__ import annotations

import copy

import time

import numpy as np
import pandas as pd
import torch

from geed import orbit as ev
from geed.actions import SpatialAction
from geed.examples import EquivariantMap, hand_example, proposition_31_example
from geed.groups import get_group
from geed.metrics import latent_eed, softmax_eed
from geed.models import create_model
from geed.models.digits import GroupAveraged, InvariantFeatures

__all__ = [
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
        rep = ev.evaluate(model, x, grp, channelwise={"blur2": SpatialAction(grp)}, logits=False)
        rows.append(("exactly equivariant map: channelwise G-EED", g, rep[("channelwise", "blur2")].value, -1.0))
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


def known_answers_sentence(known: pd.DataFrame, tol: float = 1e-9) -> str:
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
