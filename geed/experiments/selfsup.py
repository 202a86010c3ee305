"""Section 4.4: supervised vs self-supervised models under the order-2 reflection group.

* :func:`train_models` trains one backbone with each objective of :mod:`geed.finetune` --
  ``supervised``, ``simclr`` (contrastive), ``dino`` (self-distillation) -- on the same upright
  photographs, ``seeds`` models each.
* :func:`published_models` adds the paper's own models (torchvision ResNet50, BiT, DINO and SimCLR
  ResNet50) for each of them whose weights are on disk.
* :func:`measure` gives each model's per-sample latent flip-EED (l2 and cosine, normalised by M)
  on the same held-out photo patches.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd
import torch

from .. import orbit as ev
from ..finetune import FitConfig, FitResult, fit
from ..train import training_device
from ..groups import get_group
from ..metrics import latent_eed
from ..patches import get_task
from ..zoo import WeightsNotFound, build_zoo_model, find_weights, load_pretrained
from .rotated_digits import checkpoint_dir

__all__ = ["LABELS", "PUBLISHED", "train_models", "published_models", "measure", "summary", "spread", "claims_44", "TASK", "PARALLEL"]

TASK = "upright-photos"
LABELS = {"supervised": "supervised", "simclr": "SimCLR-style (contrastive)", "dino": "DINO-style (self-distillation)"}
PUBLISHED = {"resnet50": "published ResNet50 (supervised)", "bit_resnetv2_50x1": "published BiT (supervised)",
             "dino_resnet50": "published DINO", "simclr_resnet50": "published SimCLR"}


def train_models(arch: str, seeds: list[int], iterations: int, batch_size: int, lr: float, progress: bool = True) -> dict[str, list[FitResult]]:
    """``seeds`` models per objective; the supervised models see the same augmentations (flip included)."""
    base = FitConfig(arch=arch, task=TASK, iterations=iterations, record_every=max(1, iterations), batch_size=batch_size, lr=lr, augment=True)
    out: dict[str, list[FitResult]] = {}
    for objective, label in LABELS.items():
        out[label] = []
        for k, s in enumerate(seeds, 1):
            if progress:
                print(f"[{label}] model {k}/{len(seeds)} (seed {s})", flush=True)
            out[label].append(fit(replace(base, objective=objective, seed=s), checkpoint_dir(), progress=progress))
    return out


def published_models(weights_dir=None) -> tuple[dict[str, torch.nn.Module], dict[str, str]]:
    """The paper's models whose published weights are on disk, and for each the reason it is absent or its file."""
    found, status = {}, {}
    for name, label in PUBLISHED.items():
        try:
            path = find_weights(name, weights_dir)
        except WeightsNotFound:
            status[label] = "weights not on disk"
            continue
        model = build_zoo_model(name, n_classes=1)
        load_pretrained(model, path)
        found[label], status[label] = model.eval(), str(path)
    return found, status


def measure(models: dict[str, list[torch.nn.Module]], n_points: int, n_reference: int, seed: int = 0) -> pd.DataFrame:
    """Per-sample latent flip-EED (l2, cosine; M over ``n_reference`` other test patches) of every model."""
    task = get_task(TASK)
    x, _ = task.fixed("test", n_points, seed)
    x_ref, _ = task.fixed("test", n_reference, seed + 1)
    flip = get_group("flip")
    rows = []
    for label, ms in models.items():
        for k, model in enumerate(ms):
            model = model.eval().to(training_device())
            Z = ev.orbit_outputs(model, x, flip, [model.latent_layer])[model.latent_layer]
            Z_ref = ev.forward_outputs(model, x_ref, [model.latent_layer])[model.latent_layer]
            for dist in ("l2", "cosine"):
                r = latent_eed(Z, flip, dist, normalise=True, reference_points=Z_ref)
                rows += [{"model": label, "seed": k, "metric": f"latent_{dist}", "sample": i, "value": float(v), "M": r.normaliser}
                         for i, v in enumerate(r.per_sample)]
    return pd.DataFrame(rows)


PARALLEL = 0.95  # mean pairwise cosine of latent vectors above which a representation barely separates inputs


def spread(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: M of both distances (mean pairwise l2 distance and cosine similarity of its latent
    vectors on the reference inputs) and whether its latent vectors are nearly parallel."""
    m = table.groupby(["model", "seed", "metric"], sort=False)["M"].first().unstack("metric")
    out = m.groupby(level="model", sort=False).mean().rename(columns={"latent_l2": "M (l2)", "latent_cosine": "M (cosine)"})
    out["nearly parallel"] = out["M (cosine)"] >= PARALLEL
    return out


def claims_44(table: pd.DataFrame) -> list[tuple]:
    """Verdicts on the claims of Section 4.4, for both distances.

    With several models per objective the comparison is across models (Welch t on each model's mean);
    with one model each, across the shared test inputs (paired bootstrap), as the paper's error bars.
    A model whose latent vectors are nearly parallel (mean pairwise cosine >= ``PARALLEL``: a
    representation that has barely learned to tell inputs apart, as at random initialisation, or has
    collapsed) says little about its objective: a claim that involves it is *inconclusive*."""
    from .. import claims as C

    flat = spread(table)["nearly parallel"]

    def values(kind: str, metric: str):
        label = LABELS[kind]
        sel = table[(table.model == label) & (table.metric == metric)]
        if sel["seed"].nunique() > 1:
            return sel.groupby("seed")["value"].mean().sort_index(), "models"
        return sel.sort_values("sample")["value"], "paired"

    def cmp(a: str, b: str, metric: str) -> C.Verdict:
        (va, how), (vb, _) = values(a, metric), values(b, metric)
        v = C.compare(va, vb, f"{LABELS[a]} [{metric}]", LABELS[b], across=how)
        degenerate = [LABELS[k] for k in (a, b) if flat.get(LABELS[k], False)]
        if degenerate:
            return C.Verdict(C.INCONCLUSIVE, v.figures + f"; latent vectors of {degenerate} nearly parallel (mean pairwise cosine >= {PARALLEL})",
                             v.rule + ", unless a model's latent vectors are nearly parallel")
        return v

    out = []
    metrics = ("latent_l2", "latent_cosine")
    out.append(("4.4-1", "Sec. 4.4, Fig. 5", "The contrastive (SimCLR-style) model is more flip-invariant than the supervised one, in both l2 and cosine latent G-EED.",
                C.all_of(cmp("supervised", "simclr", m) for m in metrics)))
    out.append(("4.4-2", "Sec. 4.4, Fig. 5", "The contrastive model is more flip-invariant than the self-distillation (DINO-style) model, in both distances.",
                C.all_of(cmp("dino", "simclr", m) for m in metrics)))
    parts = [cmp("supervised", "dino", m) for m in metrics]
    better = [m for m, p in zip(metrics, parts) if p.verdict == C.HOLDS]
    out.append(("4.4-3", "Sec. 4.4", "Self-supervision without a contrastive loss (DINO-style) does not make the model more flip-invariant than supervised training.",
                C.Verdict(C.INCONCLUSIVE if any(flat.get(LABELS[k], False) for k in ("supervised", "dino")) else C.FAILS if better else C.HOLDS,
                          "; ".join(p.figures for p in parts),
                          "does not hold if, in either distance, the interval of (supervised - DINO-style) lies above 0 (DINO-style significantly more invariant); "
                          "inconclusive if either model's latent vectors are nearly parallel; holds otherwise")))
    return out


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% interval per (model, metric): across models when several were trained, else
    a bootstrap across the test inputs (the paper's error bars)."""
    from ..stats import summarise

    parts = []
    for (label, metric), g in table.groupby(["model", "metric"], sort=False):
        if g["seed"].nunique() > 1:
            per_model = g.groupby("seed", as_index=False)["value"].mean().assign(model=label, metric=metric)
            parts.append(summarise(per_model, "value", ["model", "metric"], across="models").assign(interval="across models"))
        else:
            parts.append(summarise(g, "value", ["model", "metric"], across="samples").assign(interval="across inputs"))
    return pd.concat(parts, ignore_index=True)
