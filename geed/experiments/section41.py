"""Section 4.1: augmentation-trained CNNs vs C8 steerable CNNs, tracked over training.

``run(params)`` trains (or reloads) ``n_models`` models per family and measures every recorded
checkpoint of each run as soon as it is trained (cached per run); with ``keep_checkpoints`` False
only each run's last checkpoint is then kept. ``claims(tables)`` gives the verdicts (rules in
:func:`geed.experiments.rotated_digits.claims_41`).
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from geed.experiments import rotated_digits as rd
from geed.experiments.tracking import RunTracker
from geed.training import TrainConfig, TrainResult, prune

__all__ = ["run", "claims", "trained_models"]


def _base(params: dict) -> TrainConfig:
    return TrainConfig(width=params["width"], iterations=params["iterations"], checkpoint_every=params["checkpoint_every"],
                       batch_size=params["batch_size"], lr=params["lr"])


def trained_models(params: dict, families: dict[str, dict] | None = None, after=None, need_steps: bool = False) -> dict[str, list]:
    """The digit models of a chapter's shared parameters: label -> one :class:`TrainResult` per seed.
    ``families`` maps a label to the configuration fields that make it (default: the CNN and the
    C8-CNN). Runs are reloaded with their last checkpoint alone unless ``need_steps``; with
    ``keep_checkpoints`` False, each run is pruned to its last checkpoint once ``after`` (if any) is done with it."""
    seeds = list(range(params["seed"], params["seed"] + params["n_models"]))
    families = families or {label: {"family": fam} for fam, label in rd.FAMILIES.items()}
    keep = params.get("keep_checkpoints", True)

    def finish(res: TrainResult) -> TrainResult:
        res = after(res) if after is not None else res
        return res if keep or len(res.checkpoints) == 1 else prune(res)

    return {label: rd.train_family(replace(_base(params), **fields), seeds, need_steps=need_steps, after=finish)
            for label, fields in families.items()}


def run(params: dict, cache=None, progress: bool = True) -> dict:
    """Tables of the chapter: ``accuracies``, ``track`` (every recorded checkpoint), ``results`` (the runs)."""
    x, x_ref = rd.evaluation_points(params["n_points"], params["n_reference"], params["seed"])
    tracker = RunTracker("section41-run", cache, params.get("keep_checkpoints", True), progress)

    def measure(res: TrainResult) -> TrainResult:
        key = dict(config=res.config.name(), n_points=params["n_points"], n_reference=params["n_reference"], seed=params["seed"],
                   group=params["group"])
        return tracker.measure(res, key, lambda run: rd.track_run(run, x, x_ref, params["group"]),
                               lambda: rd.train_family(res.config, [res.config.seed], progress, need_steps=True)[0])

    results = trained_models(params, after=measure)
    accuracies = pd.DataFrame([{"family": label, "seed": r.config.seed, "accuracy": r.test_accuracy, "training time (s)": r.seconds}
                               for label, rs in results.items() for r in rs])
    return {"results": results, "accuracies": accuracies, "track": tracker.table(), "track_cached": tracker.all_cached(),
            "group": params["group"]}


def claims(tables: dict) -> list[tuple]:
    """``(id, source, claim, verdict, key)`` for every claim of Section 4.1; 4.1-2 is the headline."""
    return [(cid, src, text, verdict, cid == "4.1-2")
            for cid, src, text, verdict in rd.claims_41(tables["track"], tables["accuracies"], group=tables["group"])]
