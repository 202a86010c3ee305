"""Section 4.3: models trained from scratch vs from pretrained weights, on a task with no preferred orientation.

* :func:`pretrained_source` decides, per architecture, where the "pretrained" weights come from:
  the published ImageNet weights when a local file exists (:func:`geed.models.zoo.find_weights`), or an
  offline pretraining on the upright-photo task (:func:`offline_pretraining`), which stands in for
  ImageNet: natural images with a preferred orientation, learned without rotations.
* :func:`train_architecture` fine-tunes ``seeds`` models from each initialisation on the
  orientation-free task, keeping a checkpoint every ``record_every`` iterations.
* :func:`track_run` measures every recorded checkpoint of one run with one D8 orbit pass: latent C8- and D8-EED (l2 and
  cosine, normalised by M on the test patches) and softmax C8-EED. C8 is the rotation half of D8,
  so its values come from the same pass.

Tables are tidy: one row per (arch, init, seed, step, metric) with ``value``.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Callable

import pandas as pd
import torch

from geed import orbit as ev
from geed.report.cache import fingerprint
from geed.training import FitConfig, TrainResult, train, training_device
from geed.groups import get_group
from geed.metrics import latent_eed, softmax_eed
from geed.data.patches import SIZE, get_task
from geed.models.zoo import WeightsNotFound, find_weights, load_pretrained
from geed.experiments.rotated_digits import _values, checkpoint_dir

__all__ = ["pretrained_source", "offline_pretraining", "train_architecture", "track_run", "claims_43", "INITS", "SOURCE_TASK", "TARGET_TASK"]

SOURCE_TASK, TARGET_TASK = "upright-photos", "orientation-free"
INITS = ("from scratch", "pretrained")
SOURCES = ("auto", "published", "offline")


def offline_pretraining(arch: str, iterations: int, batch_size: int, lr: float, progress: bool = True) -> TrainResult:
    """Supervised training on upright photographs (no rotations): the offline stand-in for ImageNet weights."""
    config = FitConfig(arch=arch, task=SOURCE_TASK, objective="supervised", seed=0, iterations=iterations,
                       record_every=max(1, iterations), batch_size=batch_size, lr=lr)
    return train(config, checkpoint_dir(), progress=progress)


def pretrained_source(arch: str, source: str, pretrain_iterations: int, batch_size: int, lr: float,
                      weights_dir=None, progress: bool = True) -> tuple[str, Callable, dict]:
    """``(label, init_body, info)`` for the pretrained initialisation of ``arch``.

    ``source``: ``published`` (a local file of the published weights, an error when there is none),
    ``offline`` (pretrain on upright photographs), ``auto`` (published when found, else offline)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
    if source in ("auto", "published"):
        try:
            path = find_weights(arch, weights_dir)
            return f"published:{path.name}", (lambda m: load_pretrained(m, path)), {"arch": arch, "weights": f"published ({path})"}
        except WeightsNotFound:
            if source == "published":
                raise
    res = offline_pretraining(arch, pretrain_iterations, batch_size, lr, progress)
    body = res.model().body.state_dict()  # the kept model of the last checkpoint
    info = {"arch": arch, "weights": f"offline pretraining on {SOURCE_TASK} ({pretrain_iterations} iterations)",
            "source-task accuracy": res.test_accuracy}
    tag = f"offline-{res.config.task}-it{res.config.iterations}-{fingerprint(asdict(res.config))[:8]}"
    return tag, (lambda m: load_pretrained(m, dict(body))), info


def train_architecture(arch: str, seeds: list[int], iterations: int, record_every: int, batch_size: int, lr: float,
                       pretrained: tuple[str, Callable], progress: bool = True, size: int = SIZE, need_steps: bool = True,
                       after: Callable[[str, TrainResult], TrainResult] | None = None) -> dict[str, list[TrainResult]]:
    """``seeds`` models per initialisation, fine-tuned on the orientation-free task (patches of ``size``
    pixels); ``after(init, run)`` is applied to each run as soon as it is trained."""
    base = FitConfig(arch=arch, task=TARGET_TASK, iterations=iterations, record_every=record_every, batch_size=batch_size, lr=lr,
                     size=size)
    label, init_body = pretrained
    out: dict[str, list[TrainResult]] = {}
    for init, (tag, fn) in zip(INITS, (("scratch", None), (label, init_body))):
        out[init] = []
        for k, s in enumerate(seeds, 1):
            if progress:
                print(f"[{arch}, {init}] model {k}/{len(seeds)} (seed {s})", flush=True)
            res = train(replace(base, init=tag, seed=s), checkpoint_dir(), init_body=fn, progress=progress, need_steps=need_steps)
            out[init].append(after(init, res) if after is not None else res)
    return out


def measure(model: torch.nn.Module, x: torch.Tensor, x_ref: torch.Tensor) -> list[dict]:
    """Latent C8/D8-EED (l2, cosine; normalised by M over ``x_ref``) and softmax C8-EED from one D8 pass."""
    d8, c8 = get_group("D8", mask=True), get_group("C8", mask=True)
    Y = ev.orbit_outputs(model, x, d8, [model.latent_layer])
    Z_ref = ev.forward_outputs(model, x_ref, [model.latent_layer])[model.latent_layer]
    Z, logits = Y[model.latent_layer], Y[ev.OUTPUT]
    rows = []
    for group, sl in ((c8, slice(0, 8)), (d8, slice(None))):
        for dist in ("l2", "cosine"):
            r = latent_eed(Z[sl], group, dist, normalise=True, reference_points=Z_ref)
            rows.append({"metric": f"latent_{dist}", "group": group.name, "value": r.value, "M": r.normaliser})
    rows.append({"metric": "softmax", "group": "C8", "value": softmax_eed(logits[:8], c8).value, "M": float("nan")})
    return rows


def track_run(res: TrainResult, arch: str, init: str, n_points: int, n_reference: int, seed: int = 0) -> list[dict]:
    """Every recorded checkpoint of one run, measured on test patches of the target task of its size."""
    task = get_task(TARGET_TASK, res.config.size)
    x, _ = task.fixed("test", n_points, seed)
    x_ref, _ = task.fixed("test", n_reference, seed + 1)
    rows = []
    for step in sorted(res.checkpoints):
        for r in measure(res.model(step).to(training_device()), x, x_ref):
            rows.append({"arch": arch, "init": init, "seed": res.config.seed, "step": step, "size": res.config.size, **r})
    return rows


# ----------------------------------------------------------------------------- claims of 4.3
def claims_43(tr: pd.DataFrame, accuracies: pd.DataFrame, stand_in: dict[str, str] | None = None) -> list[tuple]:
    """Verdicts on the claims of Section 4.3 (per architecture), from the tracking table and the accuracies.

    Initialisations are compared with Welch's t across models at the last checkpoint; changes over
    training with paired t (each model's checkpoint nearest to ``claims.BASELINE_FRACTION`` of training,
    never step 0, against its last).
    ``stand_in`` maps an architecture to a description of its "pretrained" weights when they stand in
    for ImageNet weights: its claims about pretraining are then *not tested* (the stand-in lacks the
    ImageNet features the claims are about), and the figures say what the rule gives on the stand-in."""
    from geed.report import claims as C

    stand_in = stand_in or {}
    archs = list(dict.fromkeys(tr["arch"]))
    steps = sorted(tr["step"].unique())
    first = C.baseline_step(steps)
    last = steps[-1]
    fin = tr[tr.step == last]
    out = []

    def judged(arch, verdict: C.Verdict) -> C.Verdict:
        if arch not in stand_in:
            return verdict
        return C.not_tested(f"the pretrained weights of {arch} stand in for ImageNet weights ({stand_in[arch]})",
                            f"on the stand-in the rule gives: {verdict.verdict}; {verdict.figures}")

    def scratch_vs_pre(arch, metric, group, df=fin):
        return C.difference(_values(df, arch=arch, init="pretrained", metric=metric, group=group),
                            _values(df, arch=arch, init="from scratch", metric=metric, group=group), f"{arch} pretrained - from scratch")

    def over_training(arch, init, group):
        return C.difference(_values(fin, arch=arch, init=init, metric="latent_l2", group=group),
                            _values(tr, arch=arch, init=init, metric="latent_l2", group=group, step=first),
                            f"{arch} {init}: final - step {first}", paired=True)

    for group, src in (("C8", "Sec. 4.3, Fig. 4"), ("D8", "Sec. 4.3, Fig. 10")):
        sfx = "" if group == "C8" else "-D8"
        for arch in archs:
            out.append((f"4.3-1{sfx}-{arch}", src, f"{arch}: trained from scratch, the latent space is more {group}-invariant (lower latent {group}-EED, l2) "
                        "than when starting from pretrained weights.", judged(arch, C.greater_for_all(lambda: [scratch_vs_pre(arch, "latent_l2", group)]))))
        for arch in archs:
            out.append((f"4.3-2{sfx}-{arch}", src, f"{arch}: from scratch, latent {group}-EED rises over training (from step {first} to step {last}).",
                        C.greater_for_all(lambda: [over_training(arch, "from scratch", group)])))
            out.append((f"4.3-3{sfx}-{arch}", src, f"{arch}: from pretrained weights, latent {group}-EED falls over training (from step {first} to step {last}).",
                        judged(arch, C.greater_for_all(lambda: [C.difference(_values(tr, arch=arch, init="pretrained", metric="latent_l2", group=group, step=first),
                                                                              _values(fin, arch=arch, init="pretrained", metric="latent_l2", group=group),
                                                                              f"{arch} pretrained: step {first} - final", paired=True)]))))
    for arch in archs:
        acc = accuracies[accuracies.arch == arch]
        out.append((f"4.3-4-{arch}", "Sec. 4.3", f"{arch}: models started from pretrained weights reach a higher test accuracy.",
                    judged(arch, C.greater(acc[acc.init == "pretrained"].sort_values("seed")["accuracy"], acc[acc.init == "from scratch"].sort_values("seed")["accuracy"],
                                           "pretrained", "from scratch"))))
    for arch in archs:
        def parts(arch=arch):
            lat = scratch_vs_pre(arch, "latent_l2", "C8")
            soft = scratch_vs_pre(arch, "softmax", "C8")
            return lat, soft
        # the paper: the latent comparison is clear (pretrained less invariant), the softmax one "more ambiguous".
        # Stated testably: the latent difference is positive, and the softmax difference is not (it is
        # significantly negative, i.e. the order reverses). Holds if both; does not hold if the softmax
        # difference is significantly positive too (as clear as the latent one); otherwise inconclusive.
        out.append((f"4.3-5-{arch}", "Sec. 4.3, Fig. 16", f"{arch}: the softmax comparison of the initialisations does not repeat the latent one "
                    "(our testable reading of 'more ambiguous': latent and softmax C8-EED order them in opposite directions).",
                    judged(arch, C.opposite_orders(lambda arch=arch: [parts(arch)], "architecture"))))
    out.append(("4.3-6", "this report (question from Sec. 1, finding 4)", "Whether pretrained models are judged more invariant depends on the distance: "
                "l2 and cosine latent C8-EED order the initialisations in opposite directions for some architecture.",
                _joint([a for a in archs], stand_in, lambda: C.opposite_orders(
                    [(scratch_vs_pre(a, "latent_l2", "C8"), scratch_vs_pre(a, "latent_cosine", "C8")) for a in archs if a not in stand_in], "architecture"))))
    return out


def _joint(archs, stand_in, build):
    """A claim over several architectures: not tested when none has genuine pretrained weights."""
    from geed.report import claims as C

    if all(a in stand_in for a in archs):
        return C.not_tested("every architecture's pretrained weights stand in for ImageNet weights")
    return build()
