"""Section 4.1: augmentation-trained CNNs vs C8 steerable CNNs, tracked over training.

``run(params)`` trains (or reloads) ``n_models`` models per family and measures every recorded
checkpoint of each run as soon as it is trained (cached per run); with ``keep_checkpoints`` False
only each run's last checkpoint is then kept. ``claims(tables)`` gives the verdicts (rules in
:func:`geed.experiments.rotated_digits.claims_41`), ``figures(tables)`` the numbers its text quotes.
"""
from __future__ import annotations

from dataclasses import replace

import pandas as pd

from geed.experiments import rotated_digits as rd
from geed.experiments.tracking import RunTracker
from geed.training import TrainConfig, TrainResult, prune

__all__ = ["run", "claims", "figures", "trained_models"]


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


def figures(tables: dict) -> dict[str, str]:
    """The numbers and sentences the chapter's text quotes, by the name it glues them under: each
    family's mean test accuracy (``acc_cnn``, ``acc_c8``), the largest share of channel comparisons of a
    block left out as dead in the final models and where (``dead_max``, ``dead_max_where``: family,
    block), whether the latent verdicts change with the CNN's 8x wider readout (``dim_sentence``), and
    each family's mean softmax G-EED at the first recorded step (``soft0_cnn``, ``soft0_c8``)."""
    track, accuracies = tables["track"], tables["accuracies"]
    acc = accuracies.groupby("family")["accuracy"].mean()
    final = rd._final(track)
    dead = final[final.metric == "channelwise"].pivot_table(index="layer", columns="family", values="dead_fraction", aggfunc="mean")
    check = rd.latent_dimension_check(track, accuracies)
    n_disagree = int((~check["agree"].astype(bool)).sum())
    if check.empty:
        dim = "The dimension check was not run: no wider readout of the CNN was measured."
    elif n_disagree == 0:
        dim = "The latent verdicts do not depend on the dimension: each is the same with the wider readout."
    else:
        dim = (f"{n_disagree} of {len(check)} latent verdicts change with the wider readout: they hinge on the latent dimension, and the "
               "matched-dimension verdicts are the ones the ledger records.")
    first = track[(track.step == track.step.min()) & (track.metric == "softmax")].groupby("family")["value"].mean()
    return {"acc_cnn": f"{acc['CNN']:.1%}", "acc_c8": f"{acc['C8-CNN']:.1%}",
            "dead_max": f"{dead.max().max():.1%}", "dead_max_where": f"{dead.max().idxmax()}, {dead.max(axis=1).idxmax()}",
            "dim_sentence": dim, "soft0_cnn": f"{first['CNN']:.3g}", "soft0_c8": f"{first['C8-CNN']:.3g}"}
