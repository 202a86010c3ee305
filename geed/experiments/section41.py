"""Section 4.1: augmentation-trained CNNs vs C8 steerable CNNs, tracked over training.

``run(params)`` trains (or reloads) ``n_models`` models per family and measures every checkpoint;
``claims(tables)`` gives the verdicts (rules in :func:`geed.experiments.rotated_digits.claims_41`).
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from geed.experiments import rotated_digits as rd
from geed.training import TrainConfig

__all__ = ["run", "claims", "trained_models"]


def trained_models(params: dict, families: dict[str, dict] | None = None) -> dict[str, list]:
    """The digit models of a chapter's shared parameters: label -> one :class:`TrainResult` per seed.
    ``families`` maps a label to the configuration fields that make it (default: the CNN and the C8-CNN)."""
    seeds = list(range(params["seed"], params["seed"] + params["n_models"]))
    base = TrainConfig(width=params["width"], iterations=params["iterations"], checkpoint_every=params["checkpoint_every"],
                       batch_size=params["batch_size"], lr=params["lr"])
    families = families or {label: {"family": fam} for fam, label in rd.FAMILIES.items()}
    return {label: rd.train_family(replace(base, **fields), seeds) for label, fields in families.items()}


def run(params: dict, cache=None, progress: bool = True) -> dict:
    """Tables of the chapter: ``accuracies``, ``track`` (every checkpoint), ``results`` (the runs)."""
    results = trained_models(params)
    accuracies = pd.DataFrame([{"family": label, "seed": r.config.seed, "accuracy": r.test_accuracy, "training time (s)": r.seconds}
                               for label, rs in results.items() for r in rs])
    runs = [r for rs in results.values() for r in rs]
    key = dict(configs=[r.config.name() for r in runs], n_points=params["n_points"], n_reference=params["n_reference"],
               seed=params["seed"], group=params["group"])
    compute = lambda: rd.track_training(runs, params["n_points"], params["n_reference"], params["seed"], progress, group=params["group"])  # noqa: E731
    track, cached = cache.get_or_compute("section41-track", key, compute) if cache is not None else (compute(), False)
    return {"results": results, "accuracies": accuracies, "track": track, "track_cached": cached, "group": params["group"]}


def claims(tables: dict) -> list[tuple]:
    """``(id, source, claim, verdict, key)`` for every claim of Section 4.1; 4.1-2 is the headline."""
    return [(cid, src, text, verdict, cid == "4.1-2")
            for cid, src, text, verdict in rd.claims_41(tables["track"], tables["accuracies"], group=tables["group"])]
