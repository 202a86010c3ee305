"""Sections 4.1 and 4.2: conventional vs C8 steerable CNNs on rotated digits, in and out of distribution.

* :func:`train_family` trains (or reloads) the models of one family, one per seed.
* :func:`track_training` measures every checkpoint: channelwise C8-EED after each block, latent
  C8-EED (l2 and cosine normalised by M, cosine unnormalised) and softmax C8-EED.
* :func:`ood_measurements` measures final (and untrained) models on in- and out-of-distribution sets,
  with M computed on each set.

Tables are tidy: one row per (family, seed, step or data set, metric, layer) with ``value``.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from .. import orbit as ev
from ..data import load_digits, rotated_digits
from ..groups import get_group
from ..models import build_model
from ..ood import ood_set
from ..paths import cache_dir
from ..train import TrainConfig, TrainResult, load_checkpoint, train, training_device

__all__ = ["FAMILIES", "train_family", "track_training", "ood_measurements", "LATENT_METRICS"]

FAMILIES = {"cnn": "CNN", "c8cnn": "C8-CNN"}
LATENT_METRICS = ("latent_l2", "latent_cosine", "latent_cosine_unnormalised")


def checkpoint_dir() -> Path:
    return cache_dir().parent / "checkpoints"


def train_family(config: TrainConfig, seeds: list[int], progress: bool = True) -> list[TrainResult]:
    """Train (resuming or reloading what exists) one model per seed with ``config``."""
    tr, te = load_digits("train"), rotated_digits("test")
    out = []
    for k, seed in enumerate(seeds, 1):
        if progress:
            print(f"[{FAMILIES.get(config.family, config.family)}] model {k}/{len(seeds)} (seed {seed})", flush=True)
        out.append(train(replace(config, seed=seed), tr, te, checkpoint_dir(), progress=progress))
    return out


def _measure(model, x, x_ref, group, blocks=True) -> list[dict]:
    acts = model.layer_actions(group) if blocks else {}
    rep = ev.evaluate(model, x, group, channelwise=acts, latent=model.latent_layer, reference_points=x_ref, references=("orbit",))
    rows = []
    for (metric, layer), r in rep.results.items():
        if metric in ("DI", "LI"):
            continue
        rows.append({"metric": metric, "layer": layer, "value": r.value, "M": r.normaliser})
    return rows


def track_training(results: list[TrainResult], n_points: int, n_reference: int, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """G-EED of every checkpoint of every model, on ``n_points`` rotated test digits (M over ``n_reference``)."""
    data = rotated_digits("test")
    x = data.subset(n_points, seed).x
    x_ref = data.subset(n_reference, seed + 1).x
    group = get_group("C8", mask=True)
    rows = []
    t0 = time.time()
    for k, res in enumerate(results, 1):
        for step, path in sorted(res.checkpoints.items()):
            model = load_checkpoint(res.config, path).to(training_device())
            for r in _measure(model, x, x_ref, group):
                rows.append({"family": FAMILIES[res.config.family], "seed": res.config.seed, "step": step, **r})
        if progress:
            print(f"[measure] model {k}/{len(results)} done ({time.time() - t0:.0f} s)", flush=True)
    return pd.DataFrame(rows)


def ood_measurements(trained: dict[str, list[TrainResult]], untrained_seeds: list[int], width: float, sets: list[str],
                     n_points: int, n_reference: int, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Latent (l2, normalised by M on the same set) and softmax C8-EED of final models on each data set.

    ``trained`` maps a label to trained models; ``untrained_seeds`` adds randomly initialised CNNs."""
    group = get_group("C8", mask=True)
    models: list[tuple[str, int, torch.nn.Module]] = []
    for label, results in trained.items():
        for res in results:
            models.append((label, res.config.seed, res.model().to(training_device())))
    for s in untrained_seeds:
        models.append(("untrained CNN", s, build_model("cnn", width=width, seed=s).eval().to(training_device())))
    rows = []
    t0 = time.time()
    for k, name in enumerate(sets, 1):
        pool = ood_set(name, n_points + n_reference, seed)
        if pool.shape[0] < n_points + 2:
            raise ValueError(f"data set {name!r} has {pool.shape[0]} images; need at least {n_points + 2}")
        x, x_ref = pool[:n_points], pool[n_points:] if pool.shape[0] > n_points + 1 else pool
        for label, s, model in models:
            rep = ev.evaluate(model, x, group, latent=model.latent_layer, reference_points=x_ref)
            for metric, layer in (("latent_l2", "latent"), ("latent_cosine_unnormalised", "latent"), ("softmax", ev.OUTPUT)):
                r = rep[(metric, layer)]
                rows.append({"model": label, "seed": s, "dataset": name, "metric": metric, "value": r.value, "M": r.normaliser})
        if progress:
            print(f"[ood] data set {k}/{len(sets)} ({name}) done ({time.time() - t0:.0f} s)", flush=True)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- claims of 4.1 and 4.2
def _final(track: pd.DataFrame) -> pd.DataFrame:
    last = track.groupby(["family", "seed"])["step"].transform("max")
    return track[track["step"] == last]


def _values(df: pd.DataFrame, **where) -> pd.Series:
    sel = df
    for k, v in where.items():
        sel = sel[sel[k] == v]
    return sel.sort_values("seed")["value"]


def claims_41(track: pd.DataFrame, accuracies: pd.DataFrame, accuracy_bar: float = 0.98) -> list[tuple]:
    """Verdicts on the claims of Section 4.1 from the tracking table (see the chapter for the wording)."""
    from .. import claims as C

    fin = _final(track)
    blocks = sorted(fin[fin.metric == "channelwise"]["layer"].unique())
    steps = sorted(track["step"].unique())
    first_trained = steps[1] if len(steps) > 1 else steps[0]
    out = []
    out.append(("4.1-1", "Sec. 4.1", "Both families reach high test accuracy on rotated digits (the paper: over 98%).",
                C.exceeds(accuracies["accuracy"], accuracy_bar, "test accuracy of every model")))
    out.append(("4.1-2", "Sec. 4.1, Fig. 7", "After every block, the C8-CNN is more C8-equivariant (lower channelwise C8-EED) than the CNN.",
                C.all_of(C.compare(_values(fin, family="CNN", metric="channelwise", layer=b), _values(fin, family="C8-CNN", metric="channelwise", layer=b),
                                   f"CNN {b}", "C8-CNN") for b in blocks)))
    for fam in FAMILIES.values():
        out.append((f"4.1-3-{fam}", "Sec. 4.1, Fig. 7", f"Equivariance decays with depth: channelwise C8-EED of the {fam} is higher after block 6 than after block 1.",
                    C.compare(_values(fin, family=fam, metric="channelwise", layer=blocks[-1]), _values(fin, family=fam, metric="channelwise", layer=blocks[0]),
                              f"{fam} {blocks[-1]}", blocks[0], across="paired")))
    growth = {fam: _values(fin, family=fam, metric="channelwise", layer=blocks[-1]).to_numpy() - _values(fin, family=fam, metric="channelwise", layer=blocks[0]).to_numpy()
              for fam in FAMILIES.values()}
    out.append(("4.1-4", "Sec. 4.1", "The decay with depth is larger for the C8-CNN than for the CNN.",
                C.compare(growth["C8-CNN"], growth["CNN"], "C8-CNN increase block 1 -> 6", "CNN increase")))
    parts = []
    for fam in FAMILIES.values():
        for b in blocks:
            early = _values(track, family=fam, metric="channelwise", layer=b, step=first_trained)
            late = _values(fin, family=fam, metric="channelwise", layer=b)
            parts.append(C.compare(late, early, f"{fam} {b} final", f"step {first_trained}", across="paired"))
    decreased = [p for p in parts if p.verdict == C.FAILS]  # final significantly below early = more equivariant
    out.append(("4.1-5", "Sec. 4.1, Fig. 7", f"After an initial jump, no block of either family becomes more C8-equivariant with training (channelwise C8-EED does not fall between step {first_trained} and the end).",
                C.Verdict(C.FAILS if decreased else C.HOLDS,
                          f"{len(decreased)} of {len(parts)} (family, block) pairs fall significantly: " + "; ".join(p.figures for p in decreased[:4]),
                          "does not hold if any pair's paired bootstrap interval of (final - early) lies below 0")))
    for metric, label in (("latent_l2", "latent C8-EED (l2, normalised)"), ("softmax", "softmax C8-EED")):
        out.append((f"4.1-6-{metric}", "Sec. 4.1, Fig. 2", f"The C8-CNN is more invariant than the CNN in {label}.",
                    C.compare(_values(fin, family="CNN", metric=metric), _values(fin, family="C8-CNN", metric=metric), "CNN", "C8-CNN")))
    import numpy as np

    def log_ratio(metric, layer=None, shift=0.0):
        sel = dict(metric=metric) if layer is None else dict(metric=metric, layer=layer)
        return np.log((_values(fin, family="CNN", **sel).to_numpy() + shift) / (_values(fin, family="C8-CNN", **sel).to_numpy() + shift))

    chan = np.mean([log_ratio("channelwise", b, shift=1.0) for b in blocks], axis=0)
    out.append(("4.1-7", "Sec. 4.1", "The CNN/C8-CNN gap is smaller for latent (l2) C8-EED than for channelwise C8-EED.",
                C.compare(chan, log_ratio("latent_l2"), "log(CNN/C8-CNN) of 1 + channelwise C8-EED (mean over blocks)", "log(CNN/C8-CNN) of latent C8-EED", across="paired")))
    for fam in FAMILIES.values():
        for metric in ("latent_l2", "softmax"):
            out.append((f"4.1-8-{fam}-{metric}", "Sec. 4.1, Fig. 2", f"{metric.replace('_', ' ')} C8-EED of the {fam} decreases over training (from the first checkpoint after step 0).",
                        C.compare(_values(track, family=fam, metric=metric, step=first_trained), _values(fin, family=fam, metric=metric),
                                  f"step {first_trained}", "final", across="paired")))
    out.append(("4.1-9", "Sec. 4.1, Fig. 8 (left)", "With the cosine version of normalised latent C8-EED, the C8-CNN is less invariant than the CNN.",
                C.compare(_values(fin, family="C8-CNN", metric="latent_cosine"), _values(fin, family="CNN", metric="latent_cosine"), "C8-CNN", "CNN")))
    out.append(("4.1-10", "Sec. 4.1, Fig. 8 (right)", "Without the normalisation by M, the cosine version says the opposite: the C8-CNN is more invariant.",
                C.compare(_values(fin, family="CNN", metric="latent_cosine_unnormalised"), _values(fin, family="C8-CNN", metric="latent_cosine_unnormalised"), "CNN", "C8-CNN")))
    return out


def claims_42(ood: pd.DataFrame) -> list[tuple]:
    """Verdicts on the claims of Section 4.2, each checked on every data set (all must agree)."""
    from .. import claims as C

    sets = list(dict.fromkeys(ood["dataset"]))

    def v(model, metric, ds):
        return ood[(ood.model == model) & (ood.metric == metric) & (ood.dataset == ds)].sort_values("seed")["value"]

    out = []
    out.append(("4.2-1", "Sec. 4.2, Fig. 3 (left)", "Untrained CNNs have less invariant latent spaces than augmentation-trained CNNs, on every data set.",
                C.all_of(C.compare(v("untrained CNN", "latent_l2", d), v("CNN", "latent_l2", d), f"untrained [{d}]", "trained CNN") for d in sets)))
    out.append(("4.2-2", "Sec. 4.2, Fig. 3 (left)", "Untrained CNNs have less invariant latent spaces than C8-CNNs, on every data set.",
                C.all_of(C.compare(v("untrained CNN", "latent_l2", d), v("C8-CNN", "latent_l2", d), f"untrained [{d}]", "C8-CNN") for d in sets)))
    out.append(("4.2-3", "Sec. 4.2, Fig. 3 (left)", "C8-CNNs have more invariant latent spaces than augmentation-trained CNNs, on every data set.",
                C.all_of(C.compare(v("CNN", "latent_l2", d), v("C8-CNN", "latent_l2", d), f"CNN [{d}]", "C8-CNN") for d in sets)))
    parts = []
    for d in sets:
        gap_untrained = v("untrained CNN", "latent_l2", d).mean() - v("CNN", "latent_l2", d).to_numpy()
        gap_c8 = v("CNN", "latent_l2", d).to_numpy() - v("C8-CNN", "latent_l2", d).mean()
        parts.append(C.compare(gap_untrained, gap_c8, f"untrained - CNN [{d}]", "CNN - C8-CNN", across="paired"))
    out.append(("4.2-4", "Sec. 4.2", "The latent gap between C8-CNNs and trained CNNs is small next to the gap between trained and untrained CNNs, on every data set.",
                C.all_of(parts)))
    out.append(("4.2-5", "Sec. 4.2, Fig. 3 (right)", "In softmax C8-EED, untrained CNNs are more invariant than C8-CNNs, on every data set.",
                C.all_of(C.compare(v("C8-CNN", "softmax", d), v("untrained CNN", "softmax", d), f"C8-CNN [{d}]", "untrained") for d in sets)))
    out.append(("4.2-6", "Sec. 4.2, Fig. 3 (right)", "In softmax C8-EED, C8-CNNs are more invariant than augmentation-trained CNNs, on every data set.",
                C.all_of(C.compare(v("CNN", "softmax", d), v("C8-CNN", "softmax", d), f"CNN [{d}]", "C8-CNN") for d in sets)))
    return out
