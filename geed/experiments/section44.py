"""Section 4.4: one backbone trained supervised, SimCLR-style and DINO-style, measured under the mirror.

``run(params)`` trains ``n_models`` models per objective from the same start (EfficientNet-Lite's
ImageNet weights by default), adds the starting point and any published model on disk, and measures
latent flip-EED; ``claims(tables)`` gives the verdicts (rules in :func:`geed.experiments.selfsup.claims_44`).
"""
from __future__ import annotations

from geed.experiments import selfsup as S

__all__ = ["run", "claims"]


def run(params: dict, cache=None, progress: bool = True) -> dict:
    """Tables of the chapter: ``table`` (per-sample latent flip-EED of every model), ``results``,
    ``published_status`` (the models measured beside the trained ones, and where they come from)."""
    p = params
    seeds = list(range(p["seed"], p["seed"] + p["n_models"]))
    results = S.train_models(p["arch"], seeds, p["iterations"], p["batch_size"], p["lr"], progress=progress, init=p["init"], size=p["size"],
                             weights_dir=p["weights_dir"])
    published, status = S.published_models(p["weights_dir"]) if p["include_published"] else ({}, {})
    if p["init"] == "imagenet":  # the starting point itself: the ImageNet-supervised model, before any training here
        label, model = S.imagenet_model(p["arch"], p["weights_dir"])
        published, status = {label: model, **published}, {label: "the starting point of every objective", **status}
    key = dict(configs=[r.config.name() for rs in results.values() for r in rs], published=sorted(status.items()),
               size=p["size"], n_points=p["n_points"], n_reference=p["n_reference"], seed=p["seed"])
    compute = lambda: S.measure({**{k: [r.model() for r in rs] for k, rs in results.items()}, **{k: [m] for k, m in published.items()}},  # noqa: E731
                                p["n_points"], p["n_reference"], p["seed"], p["size"])
    table, cached = cache.get_or_compute("section44-flip", key, compute) if cache is not None else (compute(), False)
    return {"results": results, "published_status": status, "table": table, "table_cached": cached}


def claims(tables: dict) -> list[tuple]:
    """``(id, source, claim, verdict, key)`` for every claim of Section 4.4; 4.4-1 is the headline."""
    return [(cid, src, text, verdict, cid == "4.4-1") for cid, src, text, verdict in S.claims_44(tables["table"])]
