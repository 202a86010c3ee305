"""Section 4.3: pretrained vs from-scratch initialisation, tracked over fine-tuning.

``run(params)`` fine-tunes ``n_models`` models per architecture and initialisation (EfficientNet-Lite
from its ImageNet weights, the paper's four architectures from published weights or an offline
stand-in) and measures every recorded step of each run as soon as it is trained (cached per run);
with ``keep_checkpoints`` False only each run's last checkpoint is then kept; ``claims(tables)`` gives the verdicts (rules in
:func:`geed.experiments.pretrained.claims_43`).
"""
from __future__ import annotations

import time

import pandas as pd

from geed.data.patches import get_task
from geed.experiments import pretrained as P
from geed.training import TrainResult, prune, train

__all__ = ["run", "claims"]


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
    keep = p.get("keep_checkpoints", True)
    rows, cached, t0 = [], [], time.time()

    def measure(arch: str, pretrained: tuple):
        def after(init: str, res: TrainResult) -> TrainResult:
            key = dict(config=res.config.name(), n_points=p["n_points"], n_reference=p["n_reference"], seed=p["seed"])

            def compute():  # a pruned run is trained again (identically) when its checkpoints must be measured again
                if len(res.checkpoints) > 1 or res.config.iterations == 0:
                    return P.track_run(res, arch, init, p["n_points"], p["n_reference"], p["seed"])
                full = train(res.config, P.checkpoint_dir(), init_body=pretrained[1] if init == P.INITS[1] else None,
                             progress=progress, need_steps=True)
                out = P.track_run(full, arch, init, p["n_points"], p["n_reference"], p["seed"])
                if not keep:
                    prune(full)
                return out

            run_rows, hit = cache.get_or_compute("section43-run", key, compute) if cache is not None else (compute(), False)
            rows.extend(run_rows)
            cached.append(hit)
            if progress:
                print(f"[measure] {res.config.name()} {'reused' if hit else 'done'} ({time.time() - t0:.0f} s)", flush=True)
            return res if keep or len(res.checkpoints) == 1 else prune(res)

        return after

    results = {a: P.train_architecture(a, seeds, p["iterations"], p["record_every"], p["batch_size"], p["lr"], sources[a][:2], size=sizes[a],
                                       progress=progress, need_steps=False, after=measure(a, sources[a][:2])) for a in archs}
    accuracies = pd.DataFrame([{"arch": a, "init": i, "seed": r.config.seed, "accuracy": r.test_accuracy, "training time (s)": r.seconds}
                               for a, d in results.items() for i, rs in d.items() for r in rs])
    track, cached = pd.DataFrame(rows), all(cached)
    stand_in = {a: info["weights"] for a, (label, _, info) in sources.items() if not label.startswith("published")}
    return {"sources": sources, "sizes": sizes, "archs": archs, "results": results, "accuracies": accuracies, "track": track,
            "track_cached": cached, "stand_in": stand_in}


def claims(tables: dict) -> list[tuple]:
    """``(id, source, claim, verdict, key)`` for every claim of Section 4.3; the first architecture's 4.3-1 is the headline."""
    headline = f"4.3-1-{tables['archs'][0]}"
    return [(cid, src, text, verdict, cid == headline)
            for cid, src, text, verdict in P.claims_43(tables["track"], tables["accuracies"], stand_in=tables["stand_in"])]
