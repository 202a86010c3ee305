"""Section 4.2: the models of Section 4.1 and untrained CNNs, in and out of distribution.

``run(params)`` reloads the trained models (the parameters they share with Section 4.1 retrain
nothing) and measures each on every data set; ``claims(tables)`` gives the verdicts (rules in
:func:`geed.experiments.rotated_digits.claims_42`).
"""
from __future__ import annotations

import os

from geed.data.ood import EXTERNAL_SETS
from geed.experiments import rotated_digits as rd
from geed.experiments.section41 import trained_models

__all__ = ["run", "claims"]


def run(params: dict, cache=None, progress: bool = True) -> dict:
    """Tables of the chapter: ``ood`` (latent and softmax G-EED per model and data set), ``results``."""
    external = [d for d in params["datasets"] if d in EXTERNAL_SETS]
    if external and not os.environ.get("GEED_DATA_ROOT"):
        raise FileNotFoundError(f"data sets {external} need local files: set GEED_DATA_ROOT (see geed.data.ood.load_external)")
    seeds = list(range(params["seed"], params["seed"] + params["n_models"]))
    results = trained_models(params)
    key = dict(configs=[r.config.name() for rs in results.values() for r in rs], n_points=params["n_points"], n_reference=params["n_reference"],
               seed=params["seed"], datasets=params["datasets"], untrained=seeds, group=params["group"])
    compute = lambda: rd.ood_measurements(results, seeds, params["width"], params["datasets"], params["n_points"],  # noqa: E731
                                          params["n_reference"], params["seed"], progress, group=params["group"])
    ood, cached = cache.get_or_compute("section42-ood", key, compute) if cache is not None else (compute(), False)
    return {"results": results, "ood": ood, "ood_cached": cached, "group": params["group"]}


def claims(tables: dict) -> list[tuple]:
    """``(id, source, claim, verdict, key)`` for every claim of Section 4.2; 4.2-1 is the headline."""
    return [(cid, src, text, verdict, cid == "4.2-1") for cid, src, text, verdict in rd.claims_42(tables["ood"], group=tables["group"])]
