"""Section 4.3: pretrained vs from-scratch initialisation, tracked over fine-tuning.

``run(params)`` fine-tunes ``n_models`` models per architecture and initialisation (EfficientNet-Lite
from its ImageNet weights, the paper's four architectures from published weights or an offline
stand-in) and measures every recorded step of each run as soon as it is trained (cached per run);
with ``keep_checkpoints`` False only each run's last checkpoint is then kept; ``claims(tables)`` gives the verdicts (rules in
:func:`geed.experiments.pretrained.claims_43`), ``figures(tables)`` the numbers its text quotes.
"""
from __future__ import annotations

import pandas as pd

from geed.data.patches import get_task
from geed.experiments import pretrained as P
from geed.experiments.tracking import RunTracker
from geed.training import TrainResult, train

__all__ = ["run", "claims", "figures"]


def run(params: dict, cache=None, progress: bool = True) -> dict:
    """Tables of the chapter: ``sources`` (where each architecture's pretrained weights come from),
    ``sizes``, ``accuracies``, ``track`` (every recorded step), ``results``."""
    p = params
    seeds = list(range(p["seed"], p["seed"] + p["n_models"]))
    sources = {a: P.pretrained_source(a, p["weights_source"], p["pretrain_iterations"], p["batch_size"], p["lr"], p["weights_dir"]) for a in p["archs"]}
    sources.update({a: P.pretrained_source(a, "published", p["pretrain_iterations"], p["batch_size"], p["lr"], p["weights_dir"])
                    for a in p["imagenet_archs"]})
    sizes = {**{a: get_task(P.TARGET_TASK).size for a in p["archs"]}, **{a: p["imagenet_size"] for a in p["imagenet_archs"]}}
    archs = list(p["imagenet_archs"]) + [a for a in p["archs"] if a not in p["imagenet_archs"]]
    tracker = RunTracker("section43-run", cache, p.get("keep_checkpoints", True), progress)

    def measure(arch: str, pretrained: tuple):
        def after(init: str, res: TrainResult) -> TrainResult:
            key = dict(config=res.config.name(), n_points=p["n_points"], n_reference=p["n_reference"], seed=p["seed"])
            return tracker.measure(
                res, key, lambda run: P.track_run(run, arch, init, p["n_points"], p["n_reference"], p["seed"]),
                lambda: train(res.config, P.checkpoint_dir(), init_body=pretrained[1] if init == P.INITS[1] else None,
                              progress=progress, need_steps=True))

        return after

    results = {a: P.train_architecture(a, seeds, p["iterations"], p["record_every"], p["batch_size"], p["lr"], sources[a][:2], size=sizes[a],
                                       progress=progress, need_steps=False, after=measure(a, sources[a][:2])) for a in archs}
    accuracies = pd.DataFrame([{"arch": a, "init": i, "seed": r.config.seed, "accuracy": r.test_accuracy, "training time (s)": r.seconds}
                               for a, d in results.items() for i, rs in d.items() for r in rs])
    track, cached = tracker.table(), tracker.all_cached()
    stand_in = {a: info["weights"] for a, (label, _, info) in sources.items() if not label.startswith("published")}
    return {"sources": sources, "sizes": sizes, "archs": archs, "results": results, "accuracies": accuracies, "track": track,
            "track_cached": cached, "stand_in": stand_in}


def claims(tables: dict) -> list[tuple]:
    """``(id, source, claim, verdict, key)`` for every claim of Section 4.3; the first architecture's 4.3-1 is the headline."""
    headline = f"4.3-1-{tables['archs'][0]}"
    return [(cid, src, text, verdict, cid == headline)
            for cid, src, text, verdict in P.claims_43(tables["track"], tables["accuracies"], stand_in=tables["stand_in"])]


def figures(tables: dict) -> dict[str, str]:
    """The numbers the chapter's text quotes, by the name it glues them under: the range of the mean
    test accuracy over the (architecture, initialisation) arms (``acc_range``)."""
    means = tables["accuracies"].groupby(["arch", "init"])["accuracy"].mean()
    return {"acc_range": f"{means.min():.0%} to {means.max():.0%}"}
